"""Helpers shared by the tests: a real gateway over HTTP, free ports, PromQL checked by promtool,
the tutorials' worked solutions and the verdicts of their checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import runpy
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import aiohttp

from gwlab import config
from gwlab.exercises import Verdict
from gwlab.router import Rejected, Route, Router
from gwlab.server import Gateway

CHAT = {"model": "gwlab-sim", "messages": [{"role": "user", "content": "hello there"}]}
"""A valid chat completion request; its 11-character message is 3 prompt tokens."""
SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"
"""The tutorials' worked solutions."""


@contextlib.asynccontextmanager
async def serving(scenario: config.Scenario, host: str = config.HOST,
                  **kwargs: Any) -> AsyncIterator[tuple[Gateway, aiohttp.ClientSession]]:
    """A gateway for ``scenario`` (``kwargs`` go to :class:`Gateway`) listening on free ports
    of ``host``, and an HTTP session to it over the IPv4 loopback, which a gateway on any
    IPv4 address of this machine answers. The gateway stops on the way out."""
    gw = Gateway(scenario, **kwargs)
    await gw.start(host=host, port=0, metrics_port=0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gw.port}") as http:
            yield gw, http
    finally:
        await gw.stop()


def failing_at_once() -> config.Scenario:
    """One provider ``p1`` that answers at once and always fails, behind a breaker that
    opens on the first failure (for 1 s, the default base delay)."""
    return config.from_dict({"providers": {"p1": {"latency": 0.0, "error_rate": 1.0}},
                             "breaker": {"failure_threshold": 1}})


def port_is_free(port: int) -> bool:
    """Whether ``port`` of the IPv4 loopback can be bound now (nothing left listening)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def readme_table(heading: str) -> list[list[str]]:
    """The cells of the README's first Markdown table after ``heading``, without the header
    rows and backquotes."""
    section = README.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([c.strip().replace("`", "") for c in line.strip("|").split(" | ")])
        elif rows:
            break
    return rows[2:]


def free_port() -> int:
    """A port of the IPv4 loopback that nothing listened on a moment ago (for a process
    that takes its port as an argument: it may be taken meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_promql(promtool: str, queries: Iterable[str], folder: Path) -> subprocess.CompletedProcess:
    """Run ``promtool check rules`` on a rules file recording each of ``queries``: it parses
    every expression the way Prometheus would."""
    rules = ["groups:", "  - name: checked", "    rules:"]
    for i, query in enumerate(queries):
        rules += [f"      - record: checked:query{i}", f"        expr: {json.dumps(query)}"]
    path = folder / "rules.yml"
    path.write_text("\n".join(rules) + "\n")
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)


def solution(name: str) -> dict:
    """The names the worked solution ``name`` defines when run, as ``%load`` and a cell run would."""
    return runpy.run_path(str(SOLUTIONS / f"{name}.py"))


def assert_verdict(verdict: Verdict, ok: bool, *named: str) -> None:
    """``verdict`` is ``ok`` and its message names everything in ``named``."""
    assert isinstance(verdict, Verdict)
    assert verdict.ok is ok, verdict.message
    assert repr(verdict).startswith("✔ " if ok else "✘ ")
    for words in named:
        assert words in verdict.message, (words, verdict.message)


def handle(router: Router, now: float) -> Rejected | Route:
    """A request arriving at ``now`` as a shell takes it: admitted, then routed; or the
    ``Rejected`` of its 429."""
    return router.admit(now) or router.route(now)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux's ``/proc``)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def reset_unread(port: int, request: bytes, hold: float = 0.5) -> None:
    """Send ``request`` to ``127.0.0.1:port`` from a socket with a small receive buffer, read
    nothing of the answer for ``hold`` seconds (a long answer fills the buffers, and the
    gateway's writes wait for the client to read), then reset the connection, as a client
    killed then leaves it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        await asyncio.get_running_loop().sock_sendall(sock, request)
        await asyncio.sleep(hold)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()
