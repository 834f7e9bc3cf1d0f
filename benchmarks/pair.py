"""Two servers compared side by side: a reference and one that adds something to it.

Throughput: one ``wrk -t1`` on :data:`~benchmarks.common.LOAD_CORE` loads each in turn, round
after round, so that a drift of the machine hits both alike; medians, and their ratio.
Added latency: open-loop Poisson arrivals at a set rate (:mod:`benchmarks.openloop`) to each,
one after the other; the client-side p50 and p99 of the second less the first's. The servers
may be placed otherwise for it (``between``). The CPU of each server's processes is measured
over every run (``server_cpu``, in cores).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

from benchmarks import common, openloop
from benchmarks.bare import PATH
from benchmarks.common import CPU_BOUND, Row, cpu_seconds
from gwlab.clients import BODY


@dataclass(frozen=True)
class Side:
    """One of the two: its base URL and the processes that do its work."""

    url: str
    pids: tuple[int, ...]

    def cpu(self) -> float:
        return sum(map(cpu_seconds, self.pids))


@dataclass(frozen=True)
class Sizes:
    """How long and how hard each comparison runs."""

    rounds: int
    seconds: float
    connections: int
    rate: float
    latency_seconds: float


def compare(prefix: str, names: tuple[str, str], sides: tuple[Side, Side], sizes: Sizes,
            target_added_p99: float | None = None, note: str = "", between: Callable[[], None] | None = None,
            latency_note: str = "") -> list[Row]:
    """Rows ``{prefix}_throughput_{name}`` for both, ``{prefix}_throughput_ratio`` (the
    second's over the first's, ``note`` in its detail) and ``{prefix}_added_latency_p{50,99}``
    (the second's less the first's, in ms; the p99 against ``target_added_p99`` seconds when
    given; ``latency_note`` in their detail). ``between`` runs after the throughput rounds
    and before the latency runs: to place the servers otherwise for those."""
    runs: dict[str, list[common.WrkResult]] = {name: [] for name in names}
    cores: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(sizes.rounds):
        for name, side in zip(names, sides):
            cpu, started = side.cpu(), time.monotonic()
            runs[name].append(common.wrk(side.url + PATH, BODY, sizes.seconds, sizes.connections, side.pids[0]))
            cores[name].append((side.cpu() - cpu) / (time.monotonic() - started))
    if between is not None:
        between()
    opened, open_cpu = {}, {}
    for name, side in zip(names, sides):
        cpu, started = side.cpu(), time.monotonic()
        opened[name] = openloop.drive(side.url, sizes.rate, sizes.latency_seconds)
        open_cpu[name] = (side.cpu() - cpu) / (time.monotonic() - started)
    reference, other = names
    throughput = {name: statistics.median(r.rate for r in results) for name, results in runs.items()}
    cpu = {name: statistics.median(c) for name, c in cores.items()}
    wrk_bound = max(r.wrk_cpu for results in runs.values() for r in results) >= CPU_BOUND
    wrk_fields = dict(load_generator="wrk (1 thread)", connections=sizes.connections,
                      limited_by_load_generator=wrk_bound)
    rows = [
        Row(f"{prefix}_throughput_{name}", throughput[name], "requests/s", achieved_rate=throughput[name],
            server_cpu=cpu[name], detail={"rounds": [round(r.rate) for r in runs[name]],
                                          "non_2xx": sum(r.non_2xx for r in runs[name]),
                                          "socket_errors": sum(r.socket_errors for r in runs[name])}, **wrk_fields)
        for name in names
    ]
    rows.append(Row(f"{prefix}_throughput_ratio", throughput[other] / throughput[reference], "ratio",
                    achieved_rate=throughput[other], server_cpu=cpu[other], detail={"note": note}, **wrk_fields))
    quantiles = {name: {q: run.tally.latency.quantile(q) for q in (0.5, 0.99)} for name, run in opened.items()}
    open_fields = dict(offered_rate=sizes.rate, achieved_rate=opened[other].achieved_rate,
                       load_generator=opened[other].generator,
                       limited_by_load_generator=any(run.limited for run in opened.values()))
    detail = {name: {f"p{round(q * 100)}_ms": value * 1e3 for q, value in quantiles[name].items()} for name in names}
    if latency_note:
        detail["note"] = latency_note
    for q in (0.5, 0.99):
        added = quantiles[other][q] - quantiles[reference][q]
        target = {}
        if q == 0.99 and target_added_p99 is not None:
            target = dict(target=f"< {target_added_p99 * 1e3:g} ms", met=added < target_added_p99)
        rows.append(Row(f"{prefix}_added_latency_p{round(q * 100)}", added * 1e3, "ms", server_cpu=open_cpu[other],
                        detail={**detail, "seconds": sizes.latency_seconds}, **target, **open_fields))
    return rows
