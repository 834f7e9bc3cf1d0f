"""What every measurement shares: the result row, CPU pinning, CPU and memory read from
/proc, server processes started on their own core, and ``wrk`` runs.

A number is only as good as what produced it, so each :class:`Row` carries the offered
rate actually achieved, the server's CPU use (deltas of its process's CPU-time clock, as a
fraction of one core), the load generator and its connections, and whether the load
generator rather than the server limited it.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
"""The core the server under test runs on."""
LOAD_CORE = 1
"""The core the load generator runs on."""
CPU_BOUND = 0.9
"""A throughput number counts only when the server used at least this share of its core."""
STARTUP_TIMEOUT = 30.0
"""Seconds a server process gets to print the port it listens on."""
_LIBC = ctypes.CDLL(None)
_PAGE = os.sysconf("SC_PAGE_SIZE")
ROW_FIELDS = ("name", "value", "unit", "target", "met", "offered_rate", "achieved_rate", "server_cpu",
              "load_generator", "connections", "limited_by_load_generator", "detail")


@dataclass
class Row:
    """One measured number and what it needs to be trusted.

    ``target`` is a human-readable goal (``None`` when the row only reports); ``met`` says
    whether ``value`` reached it (``None`` when there is no target or the number is not valid,
    e.g. not CPU-bound). ``offered_rate`` is what was asked of the load generator and
    ``achieved_rate`` what it sent (requests/s); ``server_cpu`` the server process's CPU use
    as a fraction of one core."""

    name: str
    value: float | None
    unit: str
    target: str | None = None
    met: bool | None = None
    offered_rate: float | None = None
    achieved_rate: float | None = None
    server_cpu: float | None = None
    load_generator: str | None = None
    connections: int | None = None
    limited_by_load_generator: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def can_pin() -> bool:
    """Whether the server and the load generator can each get a core of their own."""
    return hasattr(os, "sched_setaffinity") and {SERVER_CORE, LOAD_CORE} <= os.sched_getaffinity(0)


def pin(core: int, pid: int = 0) -> None:
    """Run process ``pid`` (0: the calling one), and the threads and children it starts
    later, on ``core``, when the machine has the cores for it."""
    if can_pin():
        os.sched_setaffinity(pid, {core})


def cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` (all its threads, ended ones too), to the
    nanosecond: the process's CPU-time clock (POSIX ``clock_getcpuclockid``). ``/proc/PID/stat``
    counts in clock ticks (10 ms), coarser than a light server uses in a short window.

    Raises :class:`ProcessLookupError` when no process ``pid`` exists."""
    clock = ctypes.c_int()
    error = _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock))
    if error:
        raise ProcessLookupError(error, f"no CPU clock for process {pid}: {os.strerror(error)}")
    return time.clock_gettime(clock.value)


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` now."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def peak_rss_bytes(pid: int) -> int:
    """Highest resident set size process ``pid`` reached (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def load_average() -> float:
    """The machine's one-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


class CpuMeter:
    """CPU use of a process over an interval, as a fraction of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = cpu_seconds(pid)
        self.wall = time.monotonic()

    def share(self) -> float:
        return (cpu_seconds(self.pid) - self.cpu) / (time.monotonic() - self.wall)


class Server:
    """A server under test in its own process (``python -m MODULE ARGS`` in the checkout
    ``root``, whose modules it imports), pinned to :data:`SERVER_CORE`. The module prints
    ``PORT <n>`` once it listens; the constructor waits for it, unless ``wait`` is false:
    then :meth:`wait` does, so that several servers can start at once."""

    def __init__(self, module: str, *args: str, wait: bool = True, root: Path = ROOT) -> None:
        self.module = module
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=root, stdout=subprocess.PIPE, text=True,
            preexec_fn=lambda: pin(SERVER_CORE),
        )
        if wait:
            self.wait()

    def wait(self) -> None:
        """Wait until the server listens; its port and URL then."""
        module = self.module
        deadline = time.monotonic() + STARTUP_TIMEOUT
        line = ""
        while time.monotonic() < deadline and not line.startswith("PORT "):
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                break
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"{module} did not start (exit code {self.process.poll()})")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def get(self, path: str) -> Any:
        """GET ``path`` of the server as JSON."""
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



class GwlabServe(Server):
    """``gwlab serve ARGS`` on free ports, as a user starts it, pinned to
    :data:`SERVER_CORE` when ``pinned`` (else free to use every core: replicas); closed as
    any :class:`Server` is. ``pids`` are the process's and its children's at the start."""

    def __init__(self, *args: str, pinned: bool = True) -> None:
        self.module = "gwlab serve"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gwlab", "serve", "--port", "0", "--metrics-port", "0", *args],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=(lambda: pin(SERVER_CORE)) if pinned else None,
        )
        first = self.process.stdout.readline()  # it prints the URL, or fails, within its startup timeout
        match = re.match(r"^gateway  (http://\S+)", first)
        if match is None:
            self.close()
            raise RuntimeError(f"gwlab serve {' '.join(args)} did not start: {first!r}")
        self.url = match.group(1)
        self.pids = [self.process.pid, *children(self.process.pid)]

    def cpu(self) -> float:
        """CPU seconds used so far by the process and its children."""
        return sum(cpu_seconds(pid) for pid in self.pids)


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, ' ..
    '"p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class WrkResult:
    """A ``wrk`` run: requests completed, seconds, non-2xx answers, socket errors, latency
    quantiles (seconds), and the CPU use of the server and of wrk over the run."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50: float
    p99: float
    server_cpu: float
    wrk_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


class WrkRun:
    """A ``wrk`` run under way: POSTing ``body`` to ``url`` from one thread on
    :data:`LOAD_CORE` for ``seconds`` over ``connections`` keep-alive connections. Several
    may run at once (the servers they load then share what the machine gives); :meth:`result`
    waits for this one."""

    def __init__(self, url: str, body: bytes, seconds: float, connections: int, server_pid: int) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(_WRK_SCRIPT % body.decode())
        self.script = script.name
        self.server = CpuMeter(server_pid)
        self.started = time.monotonic()
        try:
            self.process = subprocess.Popen(
                ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", script.name, url],
                stdout=subprocess.PIPE, text=True, preexec_fn=lambda: pin(LOAD_CORE),
            )
        except BaseException:  # no wrk to remove its script after it: remove it now
            os.unlink(script.name)
            raise

    def result(self) -> WrkResult:
        """Wait for wrk to finish; what it counted, and the CPU use of the server and of this
        wrk process (its own, from ``wait4``, even while other runs go on)."""
        try:
            out = self.process.stdout.read()
            _, status, usage = os.wait4(self.process.pid, 0)
            self.process.returncode = os.waitstatus_to_exitcode(status)
            elapsed = time.monotonic() - self.started
            server_cpu = self.server.share()
            wrk_cpu = (usage.ru_utime + usage.ru_stime) / elapsed
        finally:
            self.process.stdout.close()
            os.unlink(self.script)
        if self.process.returncode != 0:
            raise RuntimeError(f"wrk failed (exit code {self.process.returncode}): {out[-500:]}")
        line = next((x for x in out.splitlines() if x.startswith("WRK ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
        data = json.loads(line[4:])
        return WrkResult(data["requests"], data["duration_us"] / 1e6, data["non_2xx"], data["socket_errors"],
                         data["p50_us"] / 1e6, data["p99_us"] / 1e6, server_cpu, wrk_cpu)


def wrk(url: str, body: bytes, seconds: float, connections: int, server_pid: int) -> WrkResult:
    """One ``wrk`` run (see :class:`WrkRun`), waited for."""
    return WrkRun(url, body, seconds, connections, server_pid).result()


def machine() -> dict[str, Any]:
    """Where and when the numbers were taken."""
    import platform

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "pinned": can_pin(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


class pinned:
    """Context manager: the calling process (and the processes it starts meanwhile) runs on
    ``core``; the previous affinity is restored on exit."""

    def __init__(self, core: int) -> None:
        self.core = core
        self.previous: set[int] | None = None

    def __enter__(self) -> None:
        if can_pin():
            self.previous = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.core})

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            os.sched_setaffinity(0, self.previous)


def post(url: str, body: bytes) -> bytes:
    """POST a JSON ``body`` and return the answer's body."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def run_json(module: str, *args: str, core: int | None = SERVER_CORE) -> dict[str, Any]:
    """Run ``python -m module args`` pinned to ``core`` (:data:`SERVER_CORE` unless told; on
    every core the machine gives with ``None``) and return the JSON object it prints last."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=None if core is None else lambda: pin(core), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed (exit code {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])

