"""A real redis-server for the tests, on a free port of the loopback, with nothing saved."""

from __future__ import annotations

import socket
import subprocess
import time

from tests.conftest import require_tool

START_TIMEOUT = 10.0
"""Seconds a redis-server has to answer PING once started."""
TRIES = 5
"""Ports tried before giving up: another process may take a free port before the server binds it."""


class RedisServer:
    """``redis-server --save '' --appendonly no`` on 127.0.0.1: :meth:`start` picks a free
    port (and keeps it across a :meth:`stop` and a later :meth:`start`), :meth:`stop` ends it."""

    def __init__(self) -> None:
        self.binary = require_tool("redis-server")
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait for its PING; on a free port the first time, retrying
        with another while the one chosen turns out taken."""
        for _ in range(TRIES):
            port = self.port or _free_port()
            self.process = subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if _answers(port, self.process):
                self.port = port
                return
            self.stop()
            if self.port:
                break
        raise RuntimeError(f"redis-server did not start (port {self.port or 'any free one'})")

    def stop(self) -> None:
        """End the server (at once: nothing is saved) and wait for it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=START_TIMEOUT)
            self.process = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int, process: subprocess.Popen) -> bool:
    """Whether the server on ``port`` answers PING within :data:`START_TIMEOUT` (``False``
    as soon as it exits: its port was taken)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False
