"""Client behaviour, shared by the real load generator and the simulator.

Closed loop: each of N clients sends a request, waits for the answer, then waits
:func:`pause_after` (its think time, plus the server's ``retry-after-ms`` after a 429 or a 503) and
sends again. The offered rate then falls as the gateway slows down, and requests that would
have been sent during a stall are never sent: measured latencies look better than what an
independent stream of users would see (coordinated omission).

Open loop: requests arrive as a Poisson process at the offered rate whatever happens to
earlier ones (:func:`next_arrival`); latency is measured from each request's scheduled send
time, so a stall shows in full.
"""

from __future__ import annotations

import math
from random import Random

from gwlab.stats import RATE_LIMITED, UNAVAILABLE


def next_arrival(now: float, rate: float, rng: Random) -> float:
    """The next Poisson arrival after ``now`` at ``rate`` per second (one draw from ``rng``)."""
    return now - math.log1p(-rng.random()) / rate


def pause_after(status: int, retry_after: float, think_time: float) -> float:
    """Seconds a closed-loop client waits after an answer before its next request: its
    think time, and the answer's retry-after when it is a 429 or a 503 (RFC 9110 § 10.2.3
    gives both a ``Retry-After``)."""
    return think_time + (retry_after if status == RATE_LIMITED or status == UNAVAILABLE else 0.0)
