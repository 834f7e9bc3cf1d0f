"""HTTP clients inside the notebook's kernel, on the lab's loop, following the scenario's
workload as it changes.

The command line's load generator (:mod:`gwlab.loadgen`) runs its clients in worker
processes that report tallies through a pipe, to offer thousands of requests per second. A
notebook needs less (100 closed-loop clients offer about 270 requests per second against the
seed's providers) but needs every answer at once for its charts, and needs the number of
clients or the offered rate to follow a slider. So these clients run in the lab's own
process, send the same request (:data:`gwlab.loadgen.BODY`) and behave as
:mod:`gwlab.workload` says:

- closed loop: client ``i`` runs while ``i`` is below the wanted number of clients; a client
  beyond it finishes its request in flight and stops;
- open loop: Poisson arrivals at the offered rate from the stream ``arrivals`` of the seed,
  each request its own task, its latency counted from its scheduled send time. A new rate
  takes effect at once: the next arrival is drawn afresh (the process is memoryless).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import aiohttp

from gwlab.config import WorkloadConfig
from gwlab.lab.recorder import Recorder
from gwlab.loadgen import BODY, PATH, PROVIDER_HEADER, RETRY_AFTER_MS_HEADER, TRANSPORT_ERROR
from gwlab.stats import NO_PROVIDER
from gwlab.streams import stream
from gwlab.workload import next_arrival, pause_after

log = logging.getLogger(__name__)

_HEADERS = {"Content-Type": "application/json"}


class ClientPool:
    """Clients of the gateway at ``url``, reporting every answer to ``recorder``; times are
    readings of ``clock`` (the gateway's)."""

    def __init__(self, url: str, seed: int, recorder: Recorder, clock: Callable[[], float]) -> None:
        self.url = url + PATH
        self.seed = seed
        self.recorder = recorder
        self.clock = clock
        self.workload: WorkloadConfig | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed: dict[int, asyncio.Task] = {}
        self._arrivals: asyncio.Task | None = None
        self._requests: set[asyncio.Task] = set()
        self._rng = stream(seed, "arrivals")

    async def start(self, workload: WorkloadConfig) -> None:
        """Open the HTTP session and start sending as ``workload`` says."""
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                                  timeout=aiohttp.ClientTimeout(total=None))
        self.apply(workload)

    def apply(self, workload: WorkloadConfig) -> None:
        """Follow ``workload`` from now on (on the loop thread)."""
        previous, self.workload = self.workload, workload
        if self._session is None:
            return
        if workload.mode == "closed":
            for i in range(workload.clients):
                if i not in self._closed:
                    task = asyncio.create_task(self._client(i))
                    self._closed[i] = task
                    task.add_done_callback(lambda _, i=i: self._closed.pop(i, None))
        if workload.mode != "open" and self._arrivals is not None:
            self._arrivals.cancel()
            self._arrivals = None
        elif workload.mode == "open" and (self._arrivals is None or previous is None or previous.rate != workload.rate):
            if self._arrivals is not None:
                self._arrivals.cancel()
            self._arrivals = asyncio.create_task(self._open_loop(workload.rate))

    @property
    def running(self) -> int:
        """Closed-loop clients still running (including those finishing their last request)."""
        return len(self._closed)

    async def stop(self) -> None:
        """Stop sending and cut off the requests in flight; close the session."""
        tasks = [*self._closed.values(), *self._requests]
        if self._arrivals is not None:
            tasks.append(self._arrivals)
            self._arrivals = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _wanted(self, i: int) -> bool:
        w = self.workload
        return w is not None and w.mode == "closed" and i < w.clients

    async def _client(self, i: int) -> None:
        while self._wanted(i):
            status, retry_after = await self._request(self.clock())
            pause = pause_after(status, retry_after, self.workload.think_time)
            if pause > 0:
                await asyncio.sleep(pause)

    async def _open_loop(self, rate: float) -> None:
        scheduled = self.clock()
        while True:
            scheduled = next_arrival(scheduled, rate, self._rng)
            delay = scheduled - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._request(scheduled))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _request(self, scheduled: float) -> tuple[int, float]:
        """Send one request scheduled at ``scheduled``; report its answer. Returns the status
        and the server's retry-after in seconds (0 when absent)."""
        self.recorder.sent()
        try:
            async with self._session.post(self.url, data=BODY, headers=_HEADERS) as response:
                await response.read()
                status = response.status
                provider = response.headers.get(PROVIDER_HEADER, NO_PROVIDER)
                retry_ms = response.headers.get(RETRY_AFTER_MS_HEADER)
        except aiohttp.ClientError as exc:
            log.debug("request failed: %s", exc)
            status, provider, retry_ms = TRANSPORT_ERROR, NO_PROVIDER, None
        self.recorder.answered(scheduled, self.clock(), status, provider)
        return status, float(retry_ms) / 1000 if retry_ms else 0.0
