"""The Redis-backed limiter's cost: one gateway keeping its buckets in Redis
(``limiter.backend = "redis"``) against the same gateway keeping them locally.

Both are ``gwlab serve`` with the seed's providers answering at once and never failing and a
limiter too wide to refuse anything, on :data:`~benchmarks.common.SERVER_CORE`; the Redis
one's redis-server (Debian's package, started here on a free port, saving nothing) runs on
that core too, so its work counts. Side by side as :mod:`benchmarks.pair` measures them: the
throughput of each, and the latency the Redis round trip adds at 1000 requests/s.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from benchmarks import pair
from benchmarks.common import SERVER_CORE, STARTUP_TIMEOUT, GwlabServe, Row, pin

SIZES = pair.Sizes(rounds=7, seconds=2.0, connections=64, rate=1000.0, latency_seconds=10.0)
SMOKE_SIZES = pair.Sizes(rounds=1, seconds=1.0, connections=8, rate=200.0, latency_seconds=1.0)
WIDE_OPEN = "".join(f"[providers.{name}]\nlatency = 0.0\nerror_rate = 0.0\n" for name in ("p1", "p2", "p3")) + \
    "[limiter]\nrate = 1e6\nburst = 1e6\n"
"""The scenario served: nothing waits and nothing is refused, so the limiter's own cost shows."""


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """Debian's redis-server on a free port of the loopback, saving nothing, on the server
    core: its URL and pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, preexec_fn=lambda: pin(SERVER_CORE))
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _pong(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        process.kill()
        process.wait()


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def measure(smoke: bool = False) -> list[Row]:
    with tempfile.TemporaryDirectory() as folder, redis_server() as (url, redis_pid):
        path = Path(folder) / "wide_open.toml"
        path.write_text(WIDE_OPEN)
        with GwlabServe("--config", str(path)) as local, \
                GwlabServe("--config", str(path), "--limiter-backend", "redis", "--redis-url", url) as shared:
            sides = (pair.Side(local.url, tuple(local.pids)), pair.Side(shared.url, (*shared.pids, redis_pid)))
            return pair.compare("redis_limiter", ("local", "redis"), sides, SMOKE_SIZES if smoke else SIZES,
                                note="the gateway and its redis-server share one core")
