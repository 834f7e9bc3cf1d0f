"""HTTP clients of the gateway following a workload, in the current asyncio loop.

One :class:`Driver` carries the client behaviour of every real-time shell: the command
line's load generator runs one in each worker process (:mod:`gwlab.loadgen`), the notebook
lab runs one in its loop thread (:mod:`gwlab.lab.clients`). It sends the same request
(:data:`BODY` to :data:`PATH`) and behaves as :mod:`gwlab.workload` says:

- closed loop: each client sends a request, awaits the answer, pauses for
  :func:`~gwlab.workload.pause_after` and sends again;
- open loop: requests arrive as a Poisson process (:func:`~gwlab.workload.next_arrival`,
  from one named random stream) whatever happens to earlier ones; each request runs as its
  own task and its latency counts from its *scheduled* send time, so a late send or a stall
  shows in the latency instead of silently lowering the offered rate (no coordinated
  omission). What the driver holds is capped: an arrival that finds the workload's
  ``max_in_flight`` requests outstanding is not sent and is reported as saturated (k6's
  dropped iterations), so a gateway that cannot keep up costs a bounded number of sockets,
  and the arrivals it could not take are counted instead of piling up.

The workload may change while the clients run (:meth:`Driver.apply`). An open loop redraws
its next arrival from the moment of the change (Poisson arrivals are memoryless); a closed
loop starts the clients it lacks at once and retires the ones it has too many of as they
finish their request (and pause); a switch between the two modes does both.

What the driver sees it reports through three callbacks and nothing else, so that each
shell keeps its own books: ``on_sent()`` as a request starts, ``on_answer(scheduled, done,
status, provider)`` as its answer arrives (:data:`~gwlab.stats.TRANSPORT_ERROR` when no HTTP
answer came), ``on_saturated()`` for an arrival not sent because the cap was full. A
request still unanswered when :meth:`Driver.stop` runs out of grace gets no answer: the
stop returns how many there were, each a :data:`~gwlab.stats.CUT_OFF` (499) for the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable, Protocol

import aiohttp

from gwlab import config
from gwlab.stats import NO_PROVIDER, TRANSPORT_ERROR
from gwlab.streams import stream
from gwlab.workload import next_arrival, pause_after

log = logging.getLogger(__name__)

PROVIDER_HEADER = "x-gwlab-provider"
RETRY_AFTER_MS_HEADER = "retry-after-ms"
PATH = "/v1/chat/completions"
BODY = json.dumps({"model": config.MODEL, "messages": [{"role": "user", "content": "Hello"}]}).encode()
_HEADERS = {"Content-Type": "application/json"}


class Workload(Protocol):
    """What a driver follows: a :class:`~gwlab.config.WorkloadConfig`, or one worker's
    share of it (:class:`gwlab.loadgen.WorkerPlan`)."""

    @property
    def mode(self) -> str: ...

    @property
    def clients(self) -> int: ...

    @property
    def rate(self) -> float: ...

    @property
    def think_time(self) -> float: ...

    @property
    def max_in_flight(self) -> int: ...


def open_session() -> aiohttp.ClientSession:
    """An HTTP session for a driver: no cap on connections (aiohttp's default of 100 would
    queue requests in the client and turn an open loop into a closed one; the driver's
    ``max_in_flight`` bounds them and counts what it cannot send) and no timeout (the
    gateway's own provider timeout decides)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 timeout=aiohttp.ClientTimeout(total=None))


class Driver:
    """Clients of the gateway at ``url`` sending through ``session``; open-loop arrivals
    come from the stream ``arrivals`` of ``seed``, times are readings of ``clock``.

    Nothing is sent before the first :meth:`apply`. Call every method from the loop the
    driver runs in."""

    def __init__(self, session: aiohttp.ClientSession, url: str, seed: int, arrivals: str,
                 clock: Callable[[], float], on_sent: Callable[[], None],
                 on_answer: Callable[[float, float, int, str], None],
                 on_saturated: Callable[[], None]) -> None:
        self.session = session
        self.url = url.rstrip("/") + PATH
        self.clock = clock
        self.on_sent = on_sent
        self.on_answer = on_answer
        self.on_saturated = on_saturated
        self.workload: Workload | None = None
        self._rng = stream(seed, arrivals)
        self._clients = 0
        self._arrivals: asyncio.Task | None = None
        self._rate = 0.0
        self._drivers: set[asyncio.Task] = set()
        """The closed-loop clients and the open-loop arrivals task."""
        self._requests: set[asyncio.Task] = set()
        self._stopped = False

    @property
    def running(self) -> int:
        """Closed-loop clients running, counting those about to retire."""
        return self._clients

    def apply(self, workload: Workload) -> None:
        """Follow ``workload`` from now on. Does nothing once stopped."""
        if self._stopped:
            return
        self.workload = workload
        if workload.mode == "open" and workload.rate > 0:  # rate 0: a worker without a share of the cap
            if self._arrivals is None or workload.rate != self._rate:
                if self._arrivals is not None:
                    self._arrivals.cancel()
                self._rate = workload.rate
                self._arrivals = self._spawn(self._open_loop(workload.rate))
        elif self._arrivals is not None:
            self._arrivals.cancel()
            self._arrivals = None
        for _ in range(self._wanted() - self._clients):
            self._clients += 1
            self._spawn(self._client())

    async def stop(self, grace: float) -> int:
        """Send nothing more; let the requests in flight finish within ``grace`` seconds,
        then cut off the rest. Returns how many were cut off (0 when already stopped)."""
        if self._stopped:
            return 0
        self._stopped = True
        drivers = list(self._drivers)
        for task in drivers:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        if self._requests and grace > 0:
            await asyncio.wait(self._requests, timeout=grace)
        remaining = [task for task in self._requests if not task.done()]
        for task in remaining:
            task.cancel()
        await asyncio.gather(*remaining, return_exceptions=True)
        return len(remaining)

    def _wanted(self) -> int:
        """Closed-loop clients the workload asks for."""
        w = self.workload
        return w.clients if w is not None and w.mode == "closed" else 0

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._drivers.add(task)
        task.add_done_callback(self._drivers.discard)
        return task

    def _launch(self, scheduled: float) -> asyncio.Task:
        """Start a request as its own task: a client cancelled at the stop leaves it in
        flight, for the grace to decide."""
        self.on_sent()
        task = asyncio.create_task(self._request(scheduled))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)
        return task

    async def _open_loop(self, rate: float) -> None:
        """Poisson arrivals at ``rate`` from now on; the one arrival stream goes on across
        rate changes.

        Each arrival waits for its time, or only yields to the loop when it is overdue (the
        loop was busy): the answers that came meanwhile are counted before it looks at the
        cap, and overdue arrivals never go out in one burst. Under the cap it is sent, late
        if need be, its latency still counted from its schedule; with the cap full it is
        not sent, and reported as saturated."""
        scheduled = self.clock()
        while True:
            scheduled = next_arrival(scheduled, rate, self._rng)
            await asyncio.sleep(max(0.0, scheduled - self.clock()))
            if len(self._requests) < self.workload.max_in_flight:
                self._launch(scheduled)
            else:
                self.on_saturated()

    async def _client(self) -> None:
        """One closed-loop client; it retires before sending when the workload wants fewer."""
        try:
            while self._clients <= self._wanted():
                request = self._launch(self.clock())
                await asyncio.wait((request,))
                status, retry_after = request.result()
                pause = pause_after(status, retry_after, self.workload.think_time)
                if pause > 0:
                    await asyncio.sleep(pause)
        finally:
            self._clients -= 1

    async def _request(self, scheduled: float) -> tuple[int, float]:
        """Send one request and report its answer. Returns the status and the server's
        retry-after in seconds (0 when absent)."""
        try:
            async with self.session.post(self.url, data=BODY, headers=_HEADERS) as response:
                await response.read()
                status = response.status
                provider = response.headers.get(PROVIDER_HEADER, NO_PROVIDER)
                retry_ms = response.headers.get(RETRY_AFTER_MS_HEADER)
        except aiohttp.ClientError as exc:
            log.debug("request failed: %s", exc)
            status, provider, retry_ms = TRANSPORT_ERROR, NO_PROVIDER, None
        self.on_answer(scheduled, self.clock(), status, provider)
        return status, float(retry_ms) / 1000 if retry_ms else 0.0
