"""A redis-server of one's own, for the shared limiter (``limiter.backend = "redis"``): Debian's
``redis-server`` on a free port of the IPv4 loopback, keeping nothing on disk.

::

    from gwlab.redis_server import RedisServer

    with RedisServer() as redis:
        scenario = {"limiter": {"backend": "redis", "redis_url": redis.url}}
        ...

The tutorial on scaling out, the tests and anyone trying the Redis backend without a Redis at
hand start one this way. :meth:`RedisServer.stop` then :meth:`RedisServer.start` stand for
Redis going away and coming back: on the same port, empty. A server is never left behind: the
``with`` block stops it, so does the interpreter's exit (``atexit``) for one still running,
and the server stays in its starter's process group, so that a Jupyter kernel killed with its
group (as nbval and a kernel restart do) takes it along.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import time
from types import TracebackType

from gwlab import config

INSTALL = "Debian: apt-get install redis-server; Binder installs it from binder/apt.txt"
"""Where a missing redis-server comes from, as an error says it."""


class RedisServerError(RuntimeError):
    """redis-server is not installed, or did not start."""


class RedisServer:
    """``redis-server --save '' --appendonly no`` on 127.0.0.1, started by :meth:`start` (or
    entering a ``with`` block) and ended by :meth:`stop`.

    ``binary`` is the redis-server to run (by default the one on ``PATH``; raises
    :class:`RedisServerError` when there is none). ``port`` and ``url`` say where it listens
    (``redis://127.0.0.1:PORT/0``): the port is chosen free at the first start and kept for
    later ones, so that gateways given the URL find the server again after a restart."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RedisServerError(f"redis-server is not installed ({INSTALL})")
        self.binary = found
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The URL a gateway's ``limiter.redis_url`` takes."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        """Start the server and wait, at most :data:`~gwlab.config.REDIS_START_TIMEOUT`
        seconds, until it answers PING. The first start picks a free port, and tries
        another (:data:`~gwlab.config.REDIS_START_TRIES` in all) while the one picked turns
        out taken; a later start uses the same port. Does nothing while the server runs.
        Raises :class:`RedisServerError` when it does not start."""
        if self.process is not None:
            return
        for _ in range(config.REDIS_START_TRIES):
            port = self.port or _free_port()
            process = self.process = subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            atexit.register(self.stop)
            if _answers(port, process):
                self.port = port
                return
            why = ("it exited (is the port taken?)" if process.poll() is not None
                   else f"it did not answer PING within {config.REDIS_START_TIMEOUT:g} s")
            self.stop()
            if self.port:
                break
        raise RedisServerError(f"redis-server did not start on port {port}: {why}")

    def stop(self) -> None:
        """End the server at once (it saves nothing) and wait for it. Safe to call twice."""
        process, self.process = self.process, None
        if process is not None:
            atexit.unregister(self.stop)
            process.kill()
            process.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"redis-server at {self.url} ({'running' if self.running else 'stopped'})"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int, process: subprocess.Popen) -> bool:
    """Whether the server on ``port`` answers PING within
    :data:`~gwlab.config.REDIS_START_TIMEOUT` (``False`` as soon as it exits: its port was
    taken)."""
    deadline = time.monotonic() + config.REDIS_START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False
