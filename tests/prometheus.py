"""A real Prometheus server for the tests: Debian's ``prometheus`` on a free port of the
loopback, with its storage in a temporary folder, scraping the targets it is given; stopped
(and waited for) however the test ends."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from typing import AsyncIterator

import aiohttp

from gwlab.replicas import scrape_config
from tests.conftest import require_tool
from tests.support import free_port

SCRAPE_INTERVAL = 1.0
"""Seconds between two scrapes of a target, and between two evaluations of the rules."""
START_TIMEOUT = 30.0
"""Seconds Prometheus has to answer ready (it starts in about one on this machine)."""
STOP_TIMEOUT = 10.0
"""Seconds Prometheus has to exit after SIGTERM, before it is killed."""


class Prometheus:
    """A running Prometheus at ``url``, asked through its HTTP API."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def query(self, expr: str) -> list[dict]:
        """The instant vector (or a scalar as one sample) that ``expr`` gives now.
        Raises AssertionError with Prometheus's error for a query it refuses."""
        async with self.http.get(f"{self.url}/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
        assert body["status"] == "success", (expr, body)
        data = body["data"]
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    async def value(self, expr: str) -> float:
        """The one number that ``expr`` gives now."""
        result = await self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    async def scrapes(self, job: str = "gwlab") -> float:
        """How many scrapes of ``job``'s targets Prometheus has stored samples of (0 before the
        first): ``up`` is 1 for those, 0 for a scrape that failed (a target too slow to answer
        within the interval on a loaded machine), which brought nothing to compute on."""
        result = await self.query(f'sum(sum_over_time(up{{job="{job}"}}[1h]))')
        return float(result[0]["value"][1]) if result else 0.0

    async def wait_for_scrapes(self, n: int, timeout: float, job: str = "gwlab") -> None:
        """Wait (letting the loop serve the targets) until ``n`` more successful scrapes are stored."""
        target = await self.scrapes(job) + n
        deadline = time.monotonic() + timeout
        while await self.scrapes(job) < target:
            assert time.monotonic() < deadline, f"Prometheus stored fewer than {n} scrapes in {timeout} s"
            await asyncio.sleep(SCRAPE_INTERVAL / 4)


PORT_ATTEMPTS = 3
"""Free ports tried in turn, for one taken between its choice and Prometheus's bind."""


@contextlib.asynccontextmanager
async def prometheus(folder: Path, ports: list[int], rules: Path | None = None) -> AsyncIterator[Prometheus]:
    """Prometheus scraping the metrics servers on the loopback's ``ports`` every
    :data:`SCRAPE_INTERVAL`, each labelled ``replica`` by its place in ``ports``, with the
    configuration gwlab writes for its replicas (:func:`gwlab.replicas.scrape_config`) and
    ``rules`` loaded; its configuration and storage under ``folder``."""
    binary = require_tool("prometheus")
    path = folder / "prometheus.yml"
    targets = [f"127.0.0.1:{port}" for port in ports]
    path.write_text(scrape_config(targets, SCRAPE_INTERVAL, None if rules is None else str(rules)))
    log = folder / "prometheus.log"
    async with aiohttp.ClientSession() as http:
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            with log.open("w") as stderr:
                process = subprocess.Popen(
                    [binary, f"--config.file={path}", f"--storage.tsdb.path={folder / 'data'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                    stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                url = f"http://127.0.0.1:{port}"
                if await _ready(process, http, url):
                    yield Prometheus(url, http)
                    return
            finally:
                _stop(process)
            assert "address already in use" in log.read_text(), log.read_text()
    raise AssertionError(f"no free port for Prometheus in {PORT_ATTEMPTS} attempts: {log.read_text()}")


async def _ready(process: subprocess.Popen, http: aiohttp.ClientSession, url: str) -> bool:
    """Whether Prometheus at ``url`` answers ready (False: it exited first)."""
    deadline = time.monotonic() + START_TIMEOUT
    while process.poll() is None:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{url}/-/ready") as r:
                if r.status == 200:
                    return True
        assert time.monotonic() < deadline, f"Prometheus not ready in {START_TIMEOUT} s"
        await asyncio.sleep(0.1)
    return False


def _stop(process: subprocess.Popen) -> None:
    """Stop ``process`` and wait for it: SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`."""
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
