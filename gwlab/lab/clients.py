"""HTTP clients inside the notebook's kernel, on the lab's loop, following the scenario's
workload as it changes.

The command line's load generator (:mod:`gwlab.loadgen`) runs its clients in worker
processes that report tallies through a pipe, to offer thousands of requests per second. A
notebook needs less (100 closed-loop clients offer about 270 requests per second against the
seed's providers) but needs every answer at once for its charts, and needs the number of
clients or the offered rate to follow a slider. So the lab runs the same
:class:`~gwlab.clients.Driver` in its own process, with the arrival stream ``arrivals`` of
the seed (and the streams ``workload/stream`` for which requests stream, ``workload/retry``
for the jitter of clients' retries and ``workload/throttle`` for adaptive throttling's
draws, the simulator's names for all), and hands every request sent, every answer and every
user request of clients that time out or retry to its :class:`Recorder`.
"""

from __future__ import annotations

from typing import Callable

from gwlab.needs import needs

needs("the live lab (gwlab.lab)")

import aiohttp

from gwlab.clients import RETRIES, STREAMS, THROTTLE, Driver, open_session
from gwlab.config import WorkloadConfig
from gwlab.lab.recorder import Recorder

ARRIVALS = "arrivals"
"""The random stream of the lab's open-loop arrivals."""


class ClientPool:
    """Clients of the gateway at ``url``, reporting every request and answer to
    ``recorder``; times are readings of ``clock`` (the gateway's)."""

    def __init__(self, url: str, seed: int, recorder: Recorder, clock: Callable[[], float]) -> None:
        self.url = url
        self.seed = seed
        self.recorder = recorder
        self.clock = clock
        self.workload: WorkloadConfig | None = None
        self._session: aiohttp.ClientSession | None = None
        self._driver: Driver | None = None

    async def start(self, workload: WorkloadConfig, follow_users: bool = False) -> None:
        """Open the HTTP session and start sending as ``workload`` says, following user
        requests from the start with ``follow_users`` (:class:`~gwlab.clients.Driver`)."""
        if self._driver is None:
            self._session = open_session()
            self._driver = Driver(self._session, self.url, self.seed, ARRIVALS, self.clock,
                                  self.recorder.sent, self.recorder.answered, self.recorder.saturated,
                                  streams=STREAMS, retries=RETRIES, throttle=THROTTLE, on_user=self.recorder.user,
                                  follow_users=follow_users)
        self.apply(workload)

    def apply(self, workload: WorkloadConfig) -> None:
        """Follow ``workload`` from now on (on the loop thread)."""
        self.workload = workload
        if self._driver is not None:
            self._driver.apply(workload)

    @property
    def running(self) -> int:
        """Closed-loop clients still running (including those finishing their last request)."""
        return self._driver.running if self._driver is not None else 0

    async def stop(self, grace: float) -> None:
        """Stop sending, give the requests in flight ``grace`` seconds and abandon the rest
        (a stopped lab keeps no books); close the session."""
        driver, session = self._driver, self._session
        self._driver = self._session = None
        if driver is not None:
            await driver.stop(grace)
        if session is not None:
            await session.close()
