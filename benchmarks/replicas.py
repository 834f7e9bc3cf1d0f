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
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common
from benchmarks.bare import PATH
from benchmarks.common import CPU_BOUND, ROOT, Row, Server, WrkResult, cpu_seconds
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


class Replicas(Server):
    """``gwlab serve --replicas N`` on free ports, not pinned (its replicas may use every
    core); closed as any :class:`~benchmarks.common.Server` is."""

    def __init__(self, n: int, scenario: Path, folder: Path) -> None:
        self.module = "gwlab serve"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gwlab", "serve", "--replicas", str(n), "--config", str(scenario),
             "--port", "0", "--metrics-port", "0", "--scrape-config", str(folder / f"scrape-{n}.yml")],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        first = self.process.stdout.readline()  # it prints the URL, or fails, within its startup timeout
        match = re.match(r"^gateway  (http://\S+)", first)
        if match is None:
            self.close()
            raise RuntimeError(f"gwlab serve --replicas {n} did not start: {first!r}")
        self.url = match.group(1)
        self.pids = [self.process.pid, *_children(self.process.pid)]

    def cpu(self) -> float:
        """CPU seconds used so far by the parent and its replicas."""
        return sum(cpu_seconds(pid) for pid in self.pids)


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def measure(smoke: bool = False) -> list[Row]:
    rounds, seconds = (SMOKE_ROUNDS, SMOKE_SECONDS) if smoke else (ROUNDS, SECONDS)
    connections = SMOKE_CONNECTIONS if smoke else CONNECTIONS
    with tempfile.TemporaryDirectory() as folder:
        scenario = Path(folder) / "wide_open.toml"
        scenario.write_text(WIDE_OPEN)
        servers = {n: Replicas(n, scenario, Path(folder)) for n in counts()}
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
