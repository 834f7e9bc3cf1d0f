"""Item 7: how many concurrent streams at 20 tokens/s one core relays, gateway against bare
aiohttp, with the time to first token (TTFT) they add at the 99th percentile under 10 ms.

Two servers run at once, each in its own process on :data:`~benchmarks.common.SERVER_CORE`:
the gateway with one streaming provider (first token after exactly :data:`TTFT` seconds,
then :data:`DECODE_RATE` tokens per second, :data:`OUTPUT_TOKENS` tokens, no errors; every
policy on: bucket too large to reject, breaker, metrics), and :mod:`benchmarks.bare_sse`,
bare aiohttp writing the same frames at the same pace. A trial loads one of them with ``N``
closed-loop streaming clients (:mod:`benchmarks.streamload`, one process on
:data:`~benchmarks.common.LOAD_CORE`) and counts TTFT client-side over a window; the trial
passes when the TTFT's 99th percentile exceeds the configured :data:`TTFT` by less than
:data:`ADDED_TTFT_BUDGET`, every answer was a 200 and no connection was lost.

For each server a search finds the largest passing ``N``: doubling from :data:`START` until
a trial fails (at most :data:`MAX_STREAMS`), then halving the interval between the largest
``N`` passed and the smallest failed until it is within :data:`PRECISION` of the former (or
halving down from a failed :data:`START`, to :data:`MIN_STREAMS` at the least). The two
searches take their trials in turn, so that a change in the machine falls on both; each has
at most :data:`MAX_TRIALS` trials and both together :data:`TIME_BUDGET` seconds, after which
the searches stop where they are (``search_complete`` false). A failed trial during which
other processes took at least :data:`DISTURBED` of the server core is repeated once.

The ratio gateway/bare of the two ``N`` is the number with a target (>= 0.8). Beside it, in
the detail, each server's CPU time per stream (median over its trials) and their ratio, a
comparison less sensitive to how much of the core a server got. Trials alternate, so the
servers still see the machine at different moments; ``streams_cpu_ratio_same_core`` compares
them a second way, as ``throughput_ratio_same_core`` does for requests: both loaded at the
same time on the one server core, each with half the smaller ``N`` found (at least
:data:`MIN_STREAMS`), :data:`SAME_CORE_ROUNDS` rounds; bare's CPU time per stream over the
gateway's, the median of the rounds. The load
generator counts as the bottleneck of a trial when it used :data:`~benchmarks.common.CPU_BOUND`
of its core or its event loop ran :data:`LATE` late at the 99th percentile. The ratio is valid
when both searches reached their resolution, and in the trials that decided them (the largest
``N`` passed, the smallest failed) the load generator was not the bottleneck and other
processes took less than :data:`DISTURBED` of the server core.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from benchmarks.common import CPU_BOUND, LOAD_CORE, ROOT, Row, Server, pin, run_json
from gwlab.config import FD_RESERVE

TTFT, DECODE_RATE, OUTPUT_TOKENS = 0.05, 20.0, 40
"""The provider both servers imitate: a 2 s stream of 40 tokens at 20 tokens/s."""
SMOKE_OUTPUT_TOKENS = 10
"""Smoke mode's streams: 0.5 s."""
ADDED_TTFT_BUDGET = 0.010
"""A trial passes when the TTFT's 99th percentile exceeds :data:`TTFT` by less than this."""
TARGET = 0.8
"""The gateway should sustain this fraction of the streams bare aiohttp sustains."""
START, MIN_STREAMS, MAX_STREAMS = 128, 16, 8192
SMOKE_STREAMS = 16
"""Smoke mode: one trial per server, at this ``N``."""
PRECISION = 1 / 16
"""Bisection stops when the largest ``N`` passed is within this fraction of the smallest failed."""
MAX_TRIALS = 12
"""Trials per server at most."""
TIME_BUDGET = 300.0
"""Seconds both searches together may take; they stop where they are after it."""
SETTLE, WINDOW = 0.5, 3.0
"""Seconds after the clients' first requests have spread over one stream's duration, and
seconds measured."""
SMOKE_SETTLE, SMOKE_WINDOW = 0.1, 0.5
SAME_CORE_ROUNDS = 3
"""Rounds with both servers loaded at once (``streams_cpu_ratio_same_core``); the median counts."""
SMOKE_SAME_CORE_STREAMS = 8
DISTURBED = 0.2
"""A failed trial during which other processes took this share of the server core is repeated
once."""
LATE = 0.002
"""The load generator's loop running this late (99th percentile of a 10 ms ticker) marks it
as the bottleneck: its own delay in reading a frame would count as TTFT."""
LOAD_GENERATOR = "benchmarks.streamload closed loop (1 process)"


def stream_seconds(output_tokens: int) -> float:
    """How long a stream lasts: the first token after :data:`TTFT`, the rest at the decode rate."""
    return TTFT + (output_tokens - 1) / DECODE_RATE


@dataclass
class Search:
    """The search for the largest passing ``N`` (see the module's docstring): :meth:`next`
    says the ``N`` to try (``None`` when done), :meth:`record` takes its verdict."""

    start: int = START
    least: int = MIN_STREAMS
    most: int = MAX_STREAMS
    max_trials: int = MAX_TRIALS
    passed: int = 0
    """The largest ``N`` passed (0: none yet)."""
    failed: int | None = None
    """The smallest ``N`` failed."""
    trials: int = 0

    def next(self) -> int | None:
        if self.complete or self.trials >= self.max_trials:
            return None
        if self.failed is None:
            return min(self.start, self.most) if self.trials == 0 else min(2 * self.passed, self.most)
        if self.passed == 0:
            return self.failed // 2
        return (self.passed + self.failed) // 2

    def record(self, n: int, ok: bool) -> None:
        self.trials += 1
        if ok:
            self.passed = max(self.passed, n)
        else:
            self.failed = n if self.failed is None else min(self.failed, n)

    @property
    def complete(self) -> bool:
        """Whether the search has reached its resolution (not merely run out of trials)."""
        if self.failed is None:
            return self.passed >= self.most
        if self.passed == 0:
            return self.failed // 2 < self.least
        return self.failed - self.passed <= max(1, self.passed * PRECISION)


@dataclass
class Trial:
    """One trial's numbers as :mod:`benchmarks.streamload` printed them."""

    n: int
    out: dict[str, Any]
    added: float | None = field(init=False)
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        p99 = self.out["ttft_p99_with_missing"]
        self.added = None if p99 is None else p99 - TTFT
        self.ok = (self.added is not None and self.added < ADDED_TTFT_BUDGET and not self.out["failed"]
                   and self.out["lost_connections"] == 0 and self.out["sent"] > 0)

    @property
    def load_generator_bound(self) -> bool:
        late = self.out["lateness"]["p99"]
        return self.out["load_generator_cpu"] >= CPU_BOUND or (late is not None and late >= LATE)

    def summary(self) -> dict[str, Any]:
        out = self.out
        return {"streams": self.n, "passed": self.ok,
                "added_ttft_p99_ms": None if self.added is None else round(self.added * 1e3, 3),
                "sent": out["sent"], "server_cpu": round(out["server_cpu"], 3),
                "others_on_server_core": round(out["others_on_server_core"], 3),
                "load_generator_cpu": round(out["load_generator_cpu"], 3),
                "others_on_load_core": round(out["others_on_load_core"], 3),
                "load_generator_late_p99_ms": _ms(out["lateness"]["p99"])}


def measure(smoke: bool = False) -> list[Row]:
    tokens = SMOKE_OUTPUT_TOKENS if smoke else OUTPUT_TOKENS
    settle, window = (SMOKE_SETTLE, SMOKE_WINDOW) if smoke else (SETTLE, WINDOW)
    timing = ["--ttft", str(TTFT), "--decode-rate", str(DECODE_RATE), "--output-tokens", str(tokens)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    descriptors = raise_descriptor_limit(MAX_STREAMS + 2 * FD_RESERVE)  # the servers inherit it
    most = SMOKE_STREAMS if smoke else min(MAX_STREAMS, descriptors - 2 * FD_RESERVE)
    if smoke:
        searches = {name: Search(SMOKE_STREAMS, SMOKE_STREAMS, SMOKE_STREAMS) for name in ("bare", "gateway")}
    else:
        searches = {name: Search(most=most) for name in ("bare", "gateway")}
    try:
        with Server("benchmarks.gateway_server", *timing, wait=False) as gateway, \
                Server("benchmarks.bare_sse", *timing, wait=False) as bare:
            gateway.wait()
            bare.wait()
            servers = {"bare": bare, "gateway": gateway}
            trials = _search(searches, lambda name, n: _trial(servers[name], n, tokens, settle, window),
                             time.monotonic() + TIME_BUDGET)
            together_n = SMOKE_SAME_CORE_STREAMS if smoke else max(
                MIN_STREAMS, min(s.passed for s in searches.values()) // 2)
            together = [_at_once(servers, together_n, tokens, settle, window)
                        for _ in range(1 if smoke else SAME_CORE_ROUNDS)]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    period = stream_seconds(tokens)
    rows = [_row(name, searches[name], trials[name], period, tokens, window) for name in ("bare", "gateway")]
    bare_row, gateway_row = rows
    valid = (all(s.complete for s in searches.values()) and bare_row.value > 0
             and not any(row.limited_by_load_generator or row.detail["disturbed"] for row in rows))
    ratio = gateway_row.value / bare_row.value if bare_row.value > 0 else 0.0
    rows.append(Row(
        "streams_at_20tps_ratio", ratio, "gateway/bare",
        target=f">= {TARGET:g} (valid only if both searches completed undisturbed)",
        met=(ratio >= TARGET) if valid else None,
        offered_rate=gateway_row.offered_rate, achieved_rate=gateway_row.achieved_rate,
        server_cpu=gateway_row.server_cpu, load_generator=LOAD_GENERATOR, connections=gateway_row.connections,
        limited_by_load_generator=bare_row.limited_by_load_generator or gateway_row.limited_by_load_generator,
        detail={"valid": valid, "bare_streams": bare_row.value, "gateway_streams": gateway_row.value,
                "cpu_normalised_ratio": bare_row.detail["cpu_ms_per_stream"] / gateway_row.detail["cpu_ms_per_stream"],
                "resolution": None if smoke else PRECISION},
    ))
    rows.append(_same_core_row(together, together_n, period))
    return rows


def raise_descriptor_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (a stream holds a
    descriptor in the server and one in the client), as far as the hard limit allows; the
    limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return wanted if soft == resource.RLIM_INFINITY else soft


def _search(searches: dict[str, Search], trial: Callable[[str, int], Trial], deadline: float
            ) -> dict[str, list[Trial]]:
    """Run the searches, a trial of each in turn, until both are done or ``deadline`` passes."""
    trials: dict[str, list[Trial]] = {name: [] for name in searches}
    while time.monotonic() < deadline:
        progressed = False
        for name, search in searches.items():
            n = search.next()
            if n is None or time.monotonic() >= deadline:
                continue
            result = trial(name, n)
            if not result.ok and result.out["others_on_server_core"] >= DISTURBED:
                trials[name].append(result)  # kept in the detail, not counted
                result = trial(name, n)
            trials[name].append(result)
            search.record(n, result.ok)
            progressed = True
        if not progressed:
            break
    return trials


def _trial(server: Server, n: int, tokens: int, settle: float, window: float) -> Trial:
    out = run_json("benchmarks.streamload", "--port", str(server.port), "--streams", str(n),
                   "--period", str(stream_seconds(tokens)), "--settle", str(settle), "--window", str(window),
                   "--server-pid", str(server.pid), core=LOAD_CORE)
    return Trial(n, out)


def _at_once(servers: dict[str, Server], n: int, tokens: int, settle: float, window: float) -> dict[str, Trial]:
    """Load every server at the same time with ``n`` streams each, each from its own client
    process on the load core."""
    args = ["--streams", str(n), "--period", str(stream_seconds(tokens)), "--settle", str(settle),
            "--window", str(window)]
    started = {name: subprocess.Popen(
        [sys.executable, "-m", "benchmarks.streamload", "--port", str(server.port), "--server-pid", str(server.pid),
         *args], cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: pin(LOAD_CORE))
        for name, server in servers.items()}
    results = {}
    for name, process in started.items():
        out, _ = process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"benchmarks.streamload failed (exit code {process.returncode})")
        results[name] = Trial(n, json.loads(out.strip().splitlines()[-1]))
    return results


def _same_core_row(rounds: list[dict[str, Trial]], n: int, period: float) -> Row:
    """Bare's CPU time per stream over the gateway's, both served at once on the one server
    core with ``n`` streams each: whatever slows the machine slows both in the same instant.
    The median of the rounds counts."""
    def per_stream(trial: Trial) -> float:
        return trial.out["server_cpu"] / (trial.out["sent"] / trial.out["window_s"])

    ratios = [per_stream(r["bare"]) / per_stream(r["gateway"]) for r in rounds]
    # Each client counts the other server as another process on the core: take it out.
    others = [max(0.0, r["bare"].out["others_on_server_core"] - r["gateway"].out["server_cpu"]) for r in rounds]
    bound = any(r["bare"].out["load_generator_cpu"] + r["gateway"].out["load_generator_cpu"] >= CPU_BOUND
                or any(t.load_generator_bound for t in r.values()) for r in rounds)
    return Row(
        "streams_cpu_ratio_same_core", statistics.median(ratios), "bare/gateway CPU per stream",
        offered_rate=2 * n / period, achieved_rate=statistics.median(
            sum(t.out["sent"] / t.out["window_s"] for t in r.values()) for r in rounds),
        server_cpu=statistics.median(sum(t.out["server_cpu"] for t in r.values()) for r in rounds),
        load_generator=f"{LOAD_GENERATOR} per server", connections=n, limited_by_load_generator=bound,
        detail={"round_ratios": [round(x, 3) for x in ratios], "streams_each": n,
                "cpu_ms_per_stream": {name: [round(per_stream(r[name]) * 1e3, 3) for r in rounds]
                                      for name in ("bare", "gateway")},
                "added_ttft_p99_ms": {name: [_ms(r[name].added) for r in rounds] for name in ("bare", "gateway")},
                "passed": {name: [r[name].ok for r in rounds] for name in ("bare", "gateway")},
                "failed": {name: [r[name].out["failed"] for r in rounds] for name in ("bare", "gateway")},
                "lost_connections": sum(t.out["lost_connections"] for r in rounds for t in r.values()),
                "bytes_per_stream": {name: sorted({b for r in rounds for b in r[name].out["bytes_per_stream"]})
                                     for name in ("bare", "gateway")},
                "others_on_server_core": [round(x, 3) for x in others], "rounds": len(rounds)},
    )


def _row(name: str, search: Search, trials: list[Trial], period: float, tokens: int, window: float) -> Row:
    """The row of one server: the largest ``N`` passed, with the numbers of its trial (or of the
    smallest failed, when none passed)."""
    counted = [t for t in trials if search.passed and t.n == search.passed and t.ok]
    failing = [t for t in trials if search.failed is not None and t.n == search.failed and not t.ok]
    shown = (counted or failing or trials)[-1]
    out = shown.out
    deciding = counted[-1:] + failing[-1:]
    bound = any(t.load_generator_bound for t in deciding)
    disturbed = any(t.out["others_on_server_core"] >= DISTURBED for t in deciding)
    return Row(
        f"streams_at_20tps_{name}", float(search.passed), "streams",
        offered_rate=shown.n / period, achieved_rate=out["sent"] / out["window_s"], server_cpu=out["server_cpu"],
        load_generator=f"{LOAD_GENERATOR}, {out['event_loop']}", connections=shown.n,
        limited_by_load_generator=bound,
        detail={
            "streams_failed": search.failed, "search_complete": search.complete, "trials": len(trials),
            "disturbed": disturbed,
            "trial_of_the_row": shown.n,
            "added_ttft_p99_ms": None if shown.added is None else shown.added * 1e3,
            "ttft_ms": {k: _ms(v) for k, v in out["ttft"].items()},
            "stream_seconds": {"configured": period, "p50": out["duration"]["p50"], "p99": out["duration"]["p99"]},
            "streams_sent_in_window": out["sent"], "streams_completed": out["completed"],
            "missing_first_frames": out["missing_first_frames"], "failed": out["failed"],
            "lost_connections": out["lost_connections"], "unfinished_at_end": out["unfinished_at_end"],
            "bytes_per_stream": out["bytes_per_stream"],
            "others_on_server_core": out["others_on_server_core"],
            "load_generator_cpu": out["load_generator_cpu"],
            "others_on_load_core": out["others_on_load_core"],
            "load_generator_late_p99_ms": _ms(out["lateness"]["p99"]),
            "ttft_s": TTFT, "decode_rate": DECODE_RATE, "output_tokens": tokens, "window_s": window,
            "budget_ms": ADDED_TTFT_BUDGET * 1e3,
            "server_cpu_median_of_trials": statistics.median(t.out["server_cpu"] for t in trials),
            "cpu_ms_per_stream": cpu_per_stream(trials) * 1e3,
            "all_trials": [t.summary() for t in trials],
        },
    )


def cpu_per_stream(trials: list[Trial]) -> float:
    """The server's CPU seconds per stream sent, median over ``trials``: what a stream costs
    it, whatever share of the core it got."""
    return statistics.median(t.out["server_cpu"] / (t.out["sent"] / t.out["window_s"]) for t in trials)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3
