"""Open-loop Poisson traffic from :class:`gwlab.loadgen.LoadGenerator`, on the load core.

``wrk`` keeps a fixed number of requests in flight (a closed loop); the overhead and limiter
measurements need requests arriving at a set rate whatever the answers, which the project's
own load generator does (worker processes, latency counted from the scheduled send time).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from benchmarks.common import LOAD_CORE, pinned
from gwlab.config import WorkloadConfig
from gwlab.loadgen import LoadGenerator
from gwlab.stats import Tally

SHORTFALL = 0.95
"""An achieved offered rate below this fraction of the requested one marks the row as
limited by the load generator."""


@dataclass
class OpenLoopRun:
    """What the load generator sent and got back."""

    requested_rate: float
    achieved_rate: float
    tally: Tally
    workers: int

    @property
    def limited(self) -> bool:
        return self.achieved_rate < SHORTFALL * self.requested_rate

    @property
    def generator(self) -> str:
        return f"gwlab.loadgen open loop ({self.workers} process{'es' if self.workers > 1 else ''})"


def drive(url: str, rate: float, seconds: float, seed: int = 1) -> OpenLoopRun:
    """Offer Poisson arrivals at ``rate`` per second to ``url`` for ``seconds``, from worker
    processes pinned to the load core."""

    async def run() -> OpenLoopRun:
        generator = LoadGenerator(url, WorkloadConfig(mode="open", rate=rate), seed)
        await generator.start()
        try:
            await asyncio.sleep(seconds)
        finally:
            await generator.stop()
        return OpenLoopRun(rate, generator.achieved_rate or 0.0, generator.tally, len(generator.plans))

    with pinned(LOAD_CORE):
        return asyncio.run(run())
