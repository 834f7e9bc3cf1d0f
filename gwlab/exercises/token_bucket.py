"""Checks for ``01_token_bucket``: size a bucket's burst for a bursty workload.

The workload of the exercise: a steady stream of :data:`STEADY_RATE` requests per second,
plus every :data:`SPIKE_EVERY` seconds a batch job that sends :data:`SPIKE_SIZE` requests at
:data:`SPIKE_RATE` per second. The bucket refills at :data:`RATE` tokens per second, more than
the average demand but far less than a spike's. The right burst is the smallest that lets
every request through: any smaller and a spike meets 429s, any larger and the gateway lets
bigger floods through to the providers than the workload needs.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

from gwlab.exercises import Verdict
from gwlab.limiter import TokenBucket

RATE = 100.0
"""Refill rate of the exercise's bucket, tokens per second."""
STEADY_RATE = 40.0
"""Requests per second of the steady traffic, evenly spaced."""
SPIKE_SIZE = 200
"""Requests in one batch."""
SPIKE_RATE = 400.0
"""Requests per second while a batch is being sent."""
SPIKE_EVERY = 5.0
"""Seconds from one batch to the next."""
FIRST_SPIKE = 1.0
"""Time of the first batch in seconds."""
DURATION = 20.0
"""Length of the workload in seconds."""
SLACK = 0.1
"""How much larger than the smallest working burst an answer may be (a fraction)."""


def bursty_arrivals() -> list[float]:
    """Arrival times (seconds, sorted) of the exercise's workload."""
    steady = [k / STEADY_RATE for k in range(int(DURATION * STEADY_RATE))]
    spikes = []
    start = FIRST_SPIKE
    while start < DURATION:
        spikes += [start + i / SPIKE_RATE for i in range(SPIKE_SIZE)]
        start += SPIKE_EVERY
    return sorted(steady + spikes)


def rejections(burst: float, rate: float = RATE) -> list[float]:
    """Arrival times of the requests a full bucket of ``burst`` tokens refilled at ``rate``
    answers with 429, over :func:`bursty_arrivals`."""
    bucket = TokenBucket(rate, burst)
    return [t for t in bursty_arrivals() if not bucket.try_acquire(t)]


def _smallest_burst() -> int:
    """The smallest whole burst with no 429 (fewer rejections never come with less burst)."""
    lo, hi = 1, SPIKE_SIZE + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if rejections(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo


def check_burst(answer: Any) -> Verdict:
    """Is ``answer`` a burst that admits the whole workload without being much larger than
    needed (at most :data:`SLACK` above the smallest)?"""
    if isinstance(answer, bool) or not isinstance(answer, Real) or not answer >= 1:
        return Verdict(False, f"answer = {answer!r}: expected the burst, a number of tokens >= 1 "
                              "(for example answer = 150)")
    total = len(bursty_arrivals())
    refused = rejections(float(answer))
    if refused:
        return Verdict(False, f"burst {answer:g}: {len(refused)} of the {total} requests get a 429, the first at "
                              f"t = {refused[0]:.3f} s, during a batch. A batch takes out one token per request "
                              "while the bucket refills for as long as the batch lasts: count both.")
    smallest = _smallest_burst()
    if answer > smallest * (1 + SLACK):
        return Verdict(False, f"burst {answer:g}: no 429, but more than {SLACK:.0%} above the smallest burst that "
                              "works, so bigger floods than needed reach the providers. Subtract the tokens that "
                              "flow back in while a batch is being sent.")
    return Verdict(True, f"burst {answer:g}: all {total} requests admitted; the smallest burst that does it is "
                         f"{smallest}.")
