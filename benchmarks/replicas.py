"""Replicas: the throughput of ``gwlab serve --replicas N`` against one gateway, under ``wrk``.

Both run as a user would start them (``gwlab serve``, with the seed's providers answering at
once and never failing and a limiter too wide to refuse anything), unpinned, so that the
replicas may use every core of the machine; one ``wrk`` thread on
:data:`~benchmarks.common.LOAD_CORE` loads them in turn, round after round, and the median of
the rounds counts. On a machine with few cores the load generator takes part of what the
replicas could use: the CPU the servers used (summed over the replicas, as a number of
cores) says how much they had.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import common
from benchmarks.bare import PATH
from benchmarks.common import CPU_BOUND, GwlabServe, Row, WrkResult
from gwlab.clients import BODY

CONNECTIONS = 64
ROUNDS, SECONDS = 7, 2.0
SMOKE_ROUNDS, SMOKE_SECONDS, SMOKE_CONNECTIONS = 1, 1.0, 8
WIDE_OPEN = "".join(f"[providers.{name}]\nlatency = 0.0\nerror_rate = 0.0\n" for name in ("p1", "p2", "p3")) + \
    "[limiter]\nrate = 1e6\nburst = 1e6\n"
"""The scenario served: the seed's providers answering at once and never failing, and a
limiter that refuses nothing."""


def counts() -> list[int]:
    """The replica counts compared: one, and one per core (at least two)."""
    return [1, max(2, os.cpu_count() or 1)]


def measure(smoke: bool = False) -> list[Row]:
    rounds, seconds = (SMOKE_ROUNDS, SMOKE_SECONDS) if smoke else (ROUNDS, SECONDS)
    connections = SMOKE_CONNECTIONS if smoke else CONNECTIONS
    with tempfile.TemporaryDirectory() as folder:
        scenario = Path(folder) / "wide_open.toml"
        scenario.write_text(WIDE_OPEN)
        servers = {n: GwlabServe("--replicas", str(n), "--config", str(scenario), "--scrape-config",
                                 str(Path(folder) / f"scrape-{n}.yml"), pinned=False) for n in counts()}
        try:
            runs: dict[int, list[WrkResult]] = {n: [] for n in servers}
            cores: dict[int, list[float]] = {n: [] for n in servers}
            for _ in range(rounds):
                for n, server in servers.items():
                    cpu, started = server.cpu(), time.monotonic()
                    runs[n].append(common.wrk(server.url + PATH, BODY, seconds, connections, server.process.pid))
                    cores[n].append((server.cpu() - cpu) / (time.monotonic() - started))
        finally:
            for server in servers.values():
                server.close()
    one, many = counts()
    rate = {n: statistics.median(r.rate for r in results) for n, results in runs.items()}
    cpu = {n: statistics.median(c) for n, c in cores.items()}
    wrk_bound = max(r.wrk_cpu for results in runs.values() for r in results) >= CPU_BOUND
    fields = dict(load_generator="wrk (1 thread)", connections=connections, limited_by_load_generator=wrk_bound)
    rows = [
        Row(f"replicas_{name}_throughput", rate[n], "requests/s", achieved_rate=rate[n], server_cpu=cpu[n],
            detail={"replicas": n, "rounds": [round(r.rate) for r in runs[n]], "cpu_cores_used": cores[n],
                    "non_2xx": sum(r.non_2xx for r in runs[n]), "socket_errors": sum(r.socket_errors for r in runs[n])},
            **fields)
        for name, n in (("one", one), ("many", many))
    ]
    rows.append(Row("replicas_many_vs_one_ratio", rate[many] / rate[one], "ratio", achieved_rate=rate[many],
                    server_cpu=cpu[many], detail={"replicas": many, "cores": os.cpu_count(),
                                                  "note": "wrk shares the machine's cores with the replicas"},
                    **fields))
    return rows
