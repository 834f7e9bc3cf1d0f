"""The core stays pure: no I/O frameworks imported, no clock read, no global random state,
and one seed gives one run."""

from __future__ import annotations

import heapq
import os
import random
import subprocess
import sys
import time

import pytest

from gwlab.config import Scenario, merge
from gwlab.router import Rejected, Router
from gwlab.streams import stream

CORE = ["config", "limiter", "balancer", "breaker", "providers", "router", "streams", "stats", "workload"]
SHELL_ONLY = ("asyncio", "aiohttp", "prometheus_client")

PROBE = """
import sys
import gwlab.{module}
print(",".join(sorted(m for m in {shell_only!r} if m in sys.modules)))
"""


@pytest.fixture(scope="module")
def imports() -> dict[str, str]:
    """For every core module, the shell-only packages a fresh interpreter has loaded after
    importing it (all interpreters run at once, to keep the test fast)."""
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-c", PROBE.format(module=module, shell_only=SHELL_ONLY)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for module in CORE
    }
    results = {}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results[module] = out.strip()
    return results


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io_framework(imports, module):
    assert imports[module] == ""


def test_probe_detects_an_io_import():
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module="limiter", shell_only=SHELL_ONLY).replace(
            "import gwlab.limiter", "import gwlab.limiter, asyncio")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out == "asyncio"


def drive(seed: int, requests: int = 10_000, scenario: Scenario | None = None) -> list[tuple]:
    """Offer a request every 0.5 ms, twice the bucket's rate, so that both admissions and
    429s occur, and complete each call when its duration has passed in virtual time.
    Returns every decision in order."""
    router = Router(scenario or Scenario(), seed)
    pending: list[tuple[float, int, object]] = []
    decisions: list[tuple] = []
    for i in range(requests):
        now = i * 0.0005
        while pending and pending[0][0] <= now:
            end, _, route = heapq.heappop(pending)
            router.complete(route, end)
        decision = router.handle(now)
        if isinstance(decision, Rejected):
            decisions.append(("429", decision.retry_after))
        else:
            decisions.append((decision.provider, decision.fallback, decision.call))
            heapq.heappush(pending, (now + decision.call.duration, i, decision))
    while pending:
        end, _, route = heapq.heappop(pending)
        router.complete(route, end)
    return decisions


def test_router_leaves_global_random_state_alone():
    random.seed(12345)
    before = random.getstate()
    drive(seed=1)
    assert random.getstate() == before


CLOCKS = ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "process_time")


def test_router_reads_no_clock(monkeypatch):
    def refuse(*_args):
        raise AssertionError("the core read a clock")

    for name in CLOCKS:
        monkeypatch.setattr(time, name, refuse)
    with pytest.raises(AssertionError, match="read a clock"):
        time.monotonic()  # the trap is set
    drive(seed=1, requests=3000)


def test_same_seed_same_run_different_seed_different_run():
    first = drive(seed=1)
    assert drive(seed=1) == first
    other = drive(seed=2)
    assert other != first
    assert {d[0] for d in first} == {"p1", "p2", "p3", "429"}  # every path was taken


def test_changing_one_provider_leaves_the_pick_sequence_alone():
    # With breakers off, picks depend only on the pick stream: slowing p3 down changes p3's
    # calls and nothing about who gets which request.
    off = merge(Scenario(), {"breaker": {"enabled": False}})
    slow = merge(off, {"providers": {"p3": {"latency": 4.0}}})
    a, b = drive(seed=3, requests=3000, scenario=off), drive(seed=3, requests=3000, scenario=slow)
    assert [d[0] for d in a] == [d[0] for d in b]
    assert [d for d in a if d[0] in ("p1", "p2")] == [d for d in b if d[0] in ("p1", "p2")]
    assert [d for d in a if d[0] == "p3"] != [d for d in b if d[0] == "p3"]


def first_draws(rng: random.Random, n: int = 3) -> list[float]:
    return [rng.random() for _ in range(n)]


def test_streams_differ_by_name_and_seed_and_repeat_exactly():
    keys = [(seed, name) for seed in (1, 2) for name in ("pick", "arrivals", "p1/latency", "p1/errors")]
    draws = {key: first_draws(stream(*key)) for key in keys}
    assert len({tuple(d) for d in draws.values()}) == len(keys)
    assert all(first_draws(stream(*key)) == draws[key] for key in keys)


def test_streams_are_the_same_in_every_process():
    code = "from gwlab.streams import stream; print(repr(stream(7, 'p2/errors').random()))"
    env = {**os.environ, "PYTHONHASHSEED": "977"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert float(out.stdout) == stream(7, "p2/errors").random()
