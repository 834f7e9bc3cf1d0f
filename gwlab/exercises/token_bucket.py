"""Checks for ``01_token_bucket``: size a bucket's burst for a bursty workload.

The workload of the exercise: a steady stream of :data:`STEADY_RATE` requests per second,
evenly spaced from 0 s on, plus every :data:`SPIKE_EVERY` seconds a batch job that sends
:data:`SPIKE_SIZE` requests at :data:`SPIKE_RATE` per second. The bucket refills at
:data:`RATE` tokens per second, more than the average demand but far less than a spike's. The
right burst is the smallest that lets every request through: any smaller and a spike meets
429s, any larger and the gateway lets bigger floods through to the providers than the
workload needs.

The arrivals are discrete, and the question states their times, so the reasoning gives the
exact number (nothing here is random): from a batch's first request to the end of its
``SPIKE_SIZE / SPIKE_RATE`` seconds, both ends included, arrive the batch and
``STEADY_RATE × SPIKE_SIZE / SPIKE_RATE + 1`` steady requests, while ``RATE × SPIKE_SIZE /
SPIKE_RATE`` tokens flow back in; their difference is the smallest burst. The continuous
estimate ``(SPIKE_RATE + STEADY_RATE − RATE) × SPIKE_SIZE / SPIKE_RATE`` misses the steady
request at the end of that span, one token short. :func:`check_burst` recognises it and the
other characteristic estimates (:func:`_mistakes`) and says what each left out.
"""

from __future__ import annotations

from typing import Any

from gwlab.exercises import Verdict, known_mistake, number, wrong_kind
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
MISTAKE_TOLERANCE = 0.5
"""How far (tokens) an answer may be from a characteristic estimate to be taken for it: the
estimate, rounded to a whole token."""


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


def _mistakes() -> list[tuple[float, str]]:
    """Characteristic wrong bursts, each with what it left out."""
    span = SPIKE_SIZE / SPIKE_RATE
    steady = STEADY_RATE * span + 1
    refill = RATE * span
    return [
        ((SPIKE_RATE + STEADY_RATE - RATE) * span,
         f"the estimate ({SPIKE_RATE:g} + {STEADY_RATE:g} - {RATE:g}) × {span:g} s counts {steady - 1:g} steady "
         f"requests in a batch's {span:g} s, but the stream sends one at each end of it, {steady:g} in all"),
        (SPIKE_SIZE - refill,
         f"{SPIKE_SIZE} - {refill:g} leaves out the steady traffic, which takes tokens during a batch too"),
        (SPIKE_SIZE,
         f"{SPIKE_SIZE} is a batch alone: {refill:g} tokens flow back in while it lasts, and the steady traffic "
         "takes some"),
        (SPIKE_SIZE + steady,
         f"{SPIKE_SIZE} + {steady:g} counts every request of a batch's {span:g} s but not the {refill:g} tokens "
         "that flow back in meanwhile"),
    ]


def _tokens(n: float) -> str:
    return f"{n:g} token" + ("" if n == 1 else "s")


def check_burst(answer: Any) -> Verdict:
    """Is ``answer`` a burst that admits the whole workload without being much larger than
    needed (at most :data:`SLACK` above the smallest)? A wrong burst is told which way it
    misses and by how many tokens, and a characteristic estimate what it left out. A burst
    of at least the smallest refuses nothing (less burst never refuses fewer), so only a
    smaller one is run through a bucket, and a huge one is told it is too large."""
    burst = number(answer)
    if burst is None or burst < 1:
        return wrong_kind(answer, "the burst, a finite number of tokens >= 1 (for example answer = 150)")
    total = len(bursty_arrivals())
    smallest = _smallest_burst()
    refused = rejections(burst) if burst < smallest else []
    mistake = known_mistake(burst, _mistakes(), MISTAKE_TOLERANCE)
    if refused:
        hint = mistake or ("from a batch's first request to the end of its half second, count the requests that "
                           "arrive, both ends included, less the tokens that flow back in")
        return Verdict(False, f"burst {burst:g} is too small by {_tokens(smallest - burst)} ({hint}): "
                              f"{len(refused)} of the {total} requests get a 429, the first at "
                              f"t = {refused[0]:.4f} s, during a batch.")
    if burst > smallest * (1 + SLACK):
        hint = mistake or "subtract the tokens that flow back in while a batch is being sent"
        return Verdict(False, f"burst {burst:g} is too large by {_tokens(burst - smallest)} ({hint}): no 429, "
                              f"but more than {SLACK:.0%} above the smallest burst that works, so bigger floods "
                              "than needed reach the providers.")
    return Verdict(True, f"burst {burst:g}: all {total} requests admitted; the smallest burst that does it is "
                         f"{smallest}: a batch's {SPIKE_SIZE} requests and the steady ones at both ends of its "
                         f"{SPIKE_SIZE / SPIKE_RATE:g} s, less the tokens that flow back in meanwhile.")
