"""Item 1: the gateway's throughput against bare aiohttp, under ``wrk``.

Three servers run at once, each in its own process on :data:`~benchmarks.common.SERVER_CORE`:
bare aiohttp as an application with one route (the reference of the target), the same
handler on aiohttp's low-level server (the floor of aiohttp's own cost, which the gateway
is built on), and the gateway. One ``wrk`` thread on the other core loads them in turn,
round after round, so a drift in the machine hits all alike; the median of the rounds
counts. Rounds are short and many because this shared machine's speed wanders by tens of
percent within seconds. A ratio is valid only when the servers used at least
:data:`~benchmarks.common.CPU_BOUND` of their core: otherwise something else (a busy
machine, the load generator) set the pace. The CPU time per request is reported too, as it
does not depend on how much of the core a server got; and the ratio of the fastest rounds,
the one least disturbed by other tenants of the machine (a disturbance adds time to every
request alike, which weighs more on the faster server and pulls the ratio of medians up).

Alternating rounds still see the machine at different moments. So the ratio is measured a
second way as well (``throughput_ratio_same_core_*``): bare aiohttp and the gateway served
at the same time, sharing the server core, each loaded by its own wrk. The scheduler splits
the core between them, and whatever slows the machine slows both in the same instant; each
one's CPU time per request then gives the ratio they would have with a core each. The
rounds come in pairs, one with bare's wrk started first and one with the gateway's: the
server whose wrk starts first is loaded differently (its connections are open first), which
moves its CPU time per request by several percent on uvloop, and the pair's geometric mean
cancels that as a fixed order cannot.
"""

from __future__ import annotations

import math
import statistics

from benchmarks import common
from benchmarks.bare import PATH
from benchmarks.common import CPU_BOUND, Row, Server, WrkResult
from benchmarks.serving import has_uvloop
from gwlab.clients import BODY

TARGET = 0.8
"""The gateway should reach this fraction of bare aiohttp's throughput."""
CONNECTIONS = 64
ROUNDS, SECONDS = 9, 2.0
SMOKE_ROUNDS, SMOKE_SECONDS, SMOKE_CONNECTIONS = 1, 1.0, 8
SAME_CORE_PAIRS, SMOKE_SAME_CORE_PAIRS = 5, 1
"""Pairs of same-core rounds (each pair one round in each starting order)."""


def loops() -> list[str]:
    """The event loops measured: asyncio (what a notebook runs), and uvloop when installed."""
    return ["asyncio", "uvloop"] if has_uvloop() else ["asyncio"]


def measure(smoke: bool = False) -> list[Row]:
    rows: list[Row] = []
    for loop in loops():
        rows += _measure(loop, smoke)
    return rows


def _measure(loop: str, smoke: bool) -> list[Row]:
    rounds, seconds = (SMOKE_ROUNDS, SMOKE_SECONDS) if smoke else (ROUNDS, SECONDS)
    connections = SMOKE_CONNECTIONS if smoke else CONNECTIONS
    extra = ["--uvloop"] if loop == "uvloop" else []
    with Server("benchmarks.gateway_server", "--zero-latency", *extra) as gateway:
        size = len(common.post(gateway.url + PATH, BODY))
        with Server("benchmarks.bare", "--body-size", str(size), *extra) as bare, \
                Server("benchmarks.bare", "--body-size", str(size), "--low-level", *extra) as low_level:
            servers = {"bare": bare, "bare_low_level": low_level, "gateway": gateway}
            runs: dict[str, list[WrkResult]] = {name: [] for name in servers}
            if not smoke:
                for server in servers.values():
                    common.wrk(server.url + PATH, BODY, 1, connections, server.pid)
            for _ in range(rounds):
                for name, server in servers.items():
                    runs[name].append(common.wrk(server.url + PATH, BODY, seconds, connections, server.pid))
            pairs = SMOKE_SAME_CORE_PAIRS if smoke else SAME_CORE_PAIRS
            together = [at_once((bare, gateway), seconds, connections, reverse=i % 2 == 1)
                        for i in range(2 * pairs)]
    rates = {name: statistics.median(r.rate for r in results) for name, results in runs.items()}
    cpu = {name: statistics.median(r.server_cpu for r in results) for name, results in runs.items()}
    cpu_per_request = {name: statistics.median(r.server_cpu / r.rate for r in results)
                       for name, results in runs.items()}
    every = [r for results in runs.values() for r in results]
    valid = min(r.server_cpu for r in every) >= CPU_BOUND
    wrk_bound = max(r.wrk_cpu for r in every) >= CPU_BOUND
    common_fields = dict(load_generator="wrk (1 thread)", connections=connections,
                         limited_by_load_generator=wrk_bound)
    rows = [
        Row(f"throughput_{name}_{loop}", rates[name], "requests/s", achieved_rate=rates[name], server_cpu=cpu[name],
            detail={"rounds": [round(r.rate, 1) for r in runs[name]],
                    "server_cpu_rounds": [round(r.server_cpu, 3) for r in runs[name]],
                    "wrk_cpu_rounds": [round(r.wrk_cpu, 3) for r in runs[name]],
                    "cpu_us_per_request": cpu_per_request[name] * 1e6,
                    "p50_ms": statistics.median(r.p50 for r in runs[name]) * 1e3,
                    "p99_ms": statistics.median(r.p99 for r in runs[name]) * 1e3,
                    "non_2xx": sum(r.non_2xx for r in runs[name]),
                    "socket_errors": sum(r.socket_errors for r in runs[name]),
                    "response_bytes": size},
            **common_fields)
        for name in servers
    ]
    for reference, suffix, target in (("bare", "", TARGET), ("bare_low_level", "_low_level", None)):
        ratio = rates["gateway"] / rates[reference]
        rows.append(Row(
            f"throughput_ratio{suffix}_{loop}", ratio, f"gateway/{reference}",
            target=None if target is None else f">= {target:g} (valid only if server CPU >= {CPU_BOUND:g})",
            met=(ratio >= target) if target is not None and valid and not wrk_bound else None,
            achieved_rate=rates["gateway"], server_cpu=min(cpu["gateway"], cpu[reference]),
            detail={"valid": valid and not wrk_bound,
                    "cpu_normalised_ratio": cpu_per_request[reference] / cpu_per_request["gateway"],
                    "fastest_rounds_ratio": max(r.rate for r in runs["gateway"]) / max(r.rate for r in runs[reference]),
                    "rounds": rounds, "seconds_per_round": seconds},
            **common_fields,
        ))
    rows.append(_same_core_row(together, loop, connections, seconds))
    return rows


def at_once(servers: tuple[Server, ...], seconds: float, connections: int, reverse: bool) -> list[WrkResult]:
    """Load every server at the same time, each with its own wrk, started in the order of
    ``servers`` (the reverse order when ``reverse``) and waited for in that order; the
    results in the order of ``servers``."""
    order = servers[::-1] if reverse else servers
    started = [common.WrkRun(s.url + PATH, BODY, seconds, connections, s.pid) for s in order]
    results = [run.result() for run in started]
    return results[::-1] if reverse else results


def paired_ratios(together: list[list[WrkResult]]) -> tuple[list[float], list[float]]:
    """For rounds of two servers loaded at once (:func:`at_once`), in pairs of the two
    starting orders: each round's first server's CPU time per request over the second's,
    and each pair's geometric mean of its two rounds."""
    ratios = [(a.server_cpu / a.rate) / (b.server_cpu / b.rate) for a, b in together]
    return ratios, geometric_pairs(ratios)


def geometric_pairs(ratios: list[float]) -> list[float]:
    """The geometric mean of each two ``ratios`` in turn (the first and second, the third and
    fourth, ...): measured in the two orders of something, a factor the order puts on one
    of a two and takes off the other cancels."""
    return [math.sqrt(first * second) for first, second in zip(ratios[::2], ratios[1::2])]


def _same_core_row(together: list[list[WrkResult]], loop: str, connections: int, seconds: float) -> Row:
    """The ratio measured with bare aiohttp and the gateway served at the same time on the
    one server core, each loaded by its own wrk: every disturbance of the machine then falls
    on both in the same instant. Each round gives bare's CPU time per request over the
    gateway's, which is the ratio of their throughputs with a core each. ``together`` holds
    pairs of rounds, bare's wrk started first in the first of each and the gateway's in the
    second: a pair gives the geometric mean of its two rounds, in which a factor the starting
    order puts on one round and takes off the other cancels; the median of the pairs counts.
    Valid when the two servers kept the core busy between them."""
    ratios, pairs = paired_ratios(together)
    ratio = statistics.median(pairs)
    busy = min(b.server_cpu + g.server_cpu for b, g in together)
    wrk_bound = max(b.wrk_cpu + g.wrk_cpu for b, g in together) >= CPU_BOUND
    valid = busy >= CPU_BOUND and not wrk_bound
    return Row(
        f"throughput_ratio_same_core_{loop}", ratio, "gateway/bare",
        target=f">= {TARGET:g} (valid only if the two servers' CPU >= {CPU_BOUND:g})",
        met=(ratio >= TARGET) if valid else None,
        achieved_rate=statistics.median(g.rate for _, g in together), server_cpu=busy,
        detail={"valid": valid, "pair_ratios": [round(r, 3) for r in pairs],
                "bare_first_ratios": [round(r, 3) for r in ratios[::2]],
                "gateway_first_ratios": [round(r, 3) for r in ratios[1::2]],
                "bare_rounds": [round(b.rate, 1) for b, _ in together],
                "gateway_rounds": [round(g.rate, 1) for _, g in together],
                "bare_cpu_rounds": [round(b.server_cpu, 3) for b, _ in together],
                "gateway_cpu_rounds": [round(g.server_cpu, 3) for _, g in together],
                "wrk_cpu_rounds": [round(b.wrk_cpu + g.wrk_cpu, 3) for b, g in together],
                "non_2xx": sum(b.non_2xx + g.non_2xx for b, g in together),
                "socket_errors": sum(b.socket_errors + g.socket_errors for b, g in together),
                "rounds": len(together), "seconds_per_round": seconds},
        load_generator="wrk (1 thread per server)", connections=connections, limited_by_load_generator=wrk_bound,
    )
