"""The core stays pure: no I/O frameworks imported, no clock read, no global random state,
and one seed gives one run.

A clock can be read without a call to ``time.monotonic`` in sight: ``from time import
monotonic`` binds the function when the module loads, so patching ``time`` afterwards misses
it. Two checks cover the ways: the source of every core module is scanned for anything that
reaches a clock, and a run of the router happens in an interpreter whose clocks were trapped
before gwlab was imported."""

from __future__ import annotations

import ast
import heapq
import importlib
import os
import random
import subprocess
import sys
import textwrap

import pytest

from gwlab.config import Scenario, merge
from gwlab.router import Rejected, Router
from gwlab.streams import stream
from tests.support import handle

CORE = ["config", "limiter", "admission", "balancer", "breaker", "providers", "upstream", "observe", "retry", "router", "fleet",
        "streams", "stats", "workload"]
PURE = [*CORE, "wire"]
"""The modules that do no I/O: the core, and the OpenAI wire format the server speaks."""
SHELL_ONLY = ("asyncio", "aiohttp", "prometheus_client")

PROBE = """
import sys
import gwlab.{module}
print(",".join(sorted(m for m in {shell_only!r} if m in sys.modules)))
"""


@pytest.fixture(scope="module")
def imports() -> dict[str, str]:
    """For every pure module, the shell-only packages a fresh interpreter has loaded after
    importing it (all interpreters run at once, to keep the test fast)."""
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-c", PROBE.format(module=module, shell_only=SHELL_ONLY)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for module in PURE
    }
    results = {}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results[module] = out.strip()
    return results


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_framework(imports, module):
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
            router.complete(route, end, route.call.outcome)
        decision = handle(router, now)
        if isinstance(decision, Rejected):
            decisions.append(("429", decision.retry_after))
        else:
            decisions.append((decision.provider, decision.fallback, decision.call))
            heapq.heappush(pending, (now + decision.call.duration, i, decision))
    while pending:
        end, _, route = heapq.heappop(pending)
        router.complete(route, end, route.call.outcome)
    return decisions


def test_router_leaves_global_random_state_alone():
    random.seed(12345)
    before = random.getstate()
    drive(seed=1)
    assert random.getstate() == before


CLOCKS = ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns",
          "process_time", "process_time_ns", "thread_time", "thread_time_ns")
CLOCK_MODULES = frozenset({
    "time", "datetime", "os", "uuid", "secrets", "threading", "sched", "signal", "select",
    "selectors", "socket", "ssl", "subprocess", "multiprocessing", "concurrent", "importlib",
    *SHELL_ONLY,
})
"""Modules that read a clock, draw from the system's randomness or do I/O, or can load any
module by name: none has a place in the core."""
CLOCK_NAMES = frozenset({*CLOCKS, "clock_gettime", "clock_gettime_ns", "utcnow", "urandom",
                         "getrandom", "__import__"})
"""Names of functions that read a clock or the system's randomness, however they were bound."""


def clock_reads(source: str) -> list[str]:
    """Every place in ``source`` that reaches a clock, the global random state or a seed the
    caller did not give: a clock module imported (any spelling, any scope), a clock function
    named, ``random`` used other than as the type ``Random``, ``Random()`` without a seed, a
    gwlab module outside the core imported. Empty for a pure module."""
    found = []

    def reach(line: int, module: str, names: list[str] | None = None) -> None:
        top, _, rest = module.partition(".")
        if top in CLOCK_MODULES:
            found.append(f"line {line}: imports {module}")
        elif top == "random" and (names is None or set(names) - {"Random"}):
            found.append(f"line {line}: uses random's global state ({module} {names or ''})")
        elif top == "gwlab":
            # `import gwlab` alone loads the package, and with it the simulator.
            parts = [rest.partition(".")[0]] if rest else names or []
            outside = [part for part in parts if part not in CORE]
            if outside or not parts:
                found.append(f"line {line}: imports gwlab outside the core ({module} {outside})")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                reach(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(filter(None, ["gwlab" if node.level else None, node.module]))
            reach(node.lineno, module, [alias.name for alias in node.names])
        elif isinstance(node, ast.Name) and node.id in CLOCK_NAMES:
            found.append(f"line {node.lineno}: names {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in CLOCK_NAMES:
            found.append(f"line {node.lineno}: names .{node.attr}")
        elif isinstance(node, ast.Call) and not node.args and not node.keywords and (
                getattr(node.func, "id", None) == "Random" or getattr(node.func, "attr", None) == "Random"):
            found.append(f"line {node.lineno}: Random() seeded by the system, not by the caller")
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_source_reaches_no_clock(module):
    path = importlib.import_module(f"gwlab.{module}").__file__
    with open(path, encoding="utf-8") as f:
        assert clock_reads(f.read()) == []


@pytest.mark.parametrize("fault", [
    "from time import monotonic\ndef handle():\n    return monotonic()",
    "import time as clock\nclock.perf_counter()",
    "def handle():\n    import time\n    return time.time()",
    "from datetime import datetime\ndatetime.now()",
    "import os\nos.times()",
    "import asyncio",
    "import random\nrandom.random()",
    "from random import random",
    "from random import Random\nRandom()",
    "__import__('time')",
    "import importlib\nimportlib.import_module('time')",
    "def handle(clock):\n    return clock.monotonic()",
    "from gwlab import sim",
    "from gwlab.sim import simulate",
    "from . import sim",
    "import gwlab.sim",
])
def test_source_scan_finds_each_way_to_a_clock(fault):
    assert clock_reads(fault)


def test_source_scan_accepts_what_the_core_does():
    pure = """
        from random import Random
        from gwlab import balancer
        from gwlab.config import Scenario
        from .limiter import TokenBucket
        import math
        def handle(now, rng: Random):
            return Random("gwlab/1/pick").random() + rng.random() + math.floor(now)
    """
    assert clock_reads(textwrap.dedent(pure)) == []


TRAPPED_RUN = """
import datetime, sys, time

CORE = {core!r}
reads = set()

def in_core():
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__") in CORE:
            return True
        frame = frame.f_back
    return False

def trap(name, real):
    def read(*args, **kwargs):
        if in_core():
            reads.add(name)
        return real(*args, **kwargs)
    return read

for name in {clocks!r}:
    setattr(time, name, trap(name, getattr(time, name)))

def trap_method(name, real):
    def read(cls, *args, **kwargs):
        if in_core():
            reads.add(name)
        return real(*args, **kwargs)
    return classmethod(read)

class Datetime(datetime.datetime):
    now = trap_method("datetime.now", datetime.datetime.now)
    utcnow = trap_method("datetime.utcnow", datetime.datetime.utcnow)
    today = trap_method("datetime.today", datetime.datetime.today)

class Date(datetime.date):
    today = trap_method("date.today", datetime.date.today)

datetime.datetime, datetime.date = Datetime, Date

{body}
print(",".join(sorted(reads)))
"""
"""A script that traps every clock before anything binds it, runs ``body`` and prints the
clocks read from a core module's code (its own frames or anything they called)."""


def trapped_run(body: str) -> str:
    script = TRAPPED_RUN.format(core=[f"gwlab.{m}" for m in CORE], clocks=CLOCKS, body=body)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_router_reads_no_clock():
    assert trapped_run("from tests.test_purity import drive\ndrive(seed=1, requests=3000)") == ""


def test_trap_sees_a_clock_bound_at_import():
    fault = "from time import monotonic\nfrom datetime import datetime\ndef handle():\n    return monotonic(), datetime.now()"
    body = f"space = {{'__name__': 'gwlab.router'}}\nexec({fault!r}, space)\nspace['handle']()"
    assert trapped_run(body) == "datetime.now,monotonic"


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
