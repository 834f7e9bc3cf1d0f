"""Retries, and what keeps them from feeding a storm: backoff with jitter and a retry budget.

Pure like every policy here: ``now`` in, decisions out.

**Backoff.** The wait before the n-th retry (n = 1, 2, ...) is ``min(cap, base × 2^(n−1))``,
spread by a jitter mode as the AWS Architecture Blog's "Exponential Backoff And Jitter"
(Marc Brooker, 2015) defines them: ``none`` waits exactly that; ``full`` a uniform draw
from 0 to it; ``equal`` half of it plus a uniform draw over the other half; ``decorrelated``
``min(cap, uniform(base, 3 × the previous wait))``, starting from ``base``.

**Retry budget.** Retries may add at most ``ratio`` of the recent requests, plus a floor of
``min_per_second`` retries a second (Finagle's ``RetryBudget``, tower's ``TpsBudget``): a
retry is allowed while ``retries + 1 <= min_per_second × window + ratio × requests``, both
counted over the last ``window`` seconds in one-second buckets (DESIGN, "Retries and
fallbacks"). A request is a first attempt; a retry refused leaves the request with the
outcome of its last attempt.
"""

from __future__ import annotations

import math
from collections import deque
from random import Random

from gwlab.config import JITTERS


class Backoff:
    """The waits of one request's retries: :meth:`next` gives the wait before each retry in
    turn, in seconds, drawing from ``rng`` as the ``jitter`` mode says (:data:`JITTERS`).
    ``base`` and ``cap`` in seconds, ``0 < base <= cap``; :class:`ValueError` otherwise."""

    __slots__ = ("base", "cap", "jitter", "_rng", "_retries", "_previous")

    def __init__(self, base: float, cap: float, jitter: str, rng: Random) -> None:
        if not 0 < base <= cap or jitter not in JITTERS:
            raise ValueError(f"Backoff needs 0 < base <= cap and a jitter in {JITTERS}; "
                             f"got base={base!r}, cap={cap!r}, jitter={jitter!r}")
        self.base, self.cap, self.jitter = base, cap, jitter
        self._rng = rng
        self._retries = 0
        self._previous = base

    def next(self) -> float:
        """The wait before the next retry."""
        self._retries += 1
        if self.jitter == "decorrelated":
            self._previous = min(self.cap, self._rng.uniform(self.base, 3 * self._previous))
            return self._previous
        # 2^(n-1) overflows a float past n = 1024: the cap has been reached long before.
        ceiling = self.cap if self._retries > 64 else min(self.cap, self.base * 2 ** (self._retries - 1))
        if self.jitter == "full":
            return self._rng.uniform(0.0, ceiling)
        if self.jitter == "equal":
            return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)
        return ceiling


class RetryBudget:
    """Requests and retries of the last ``window`` whole seconds, and whether one more retry
    fits: at most ``min_per_second × window + ratio × requests`` retries in the window.

    ``ratio`` >= 0, ``min_per_second`` >= 0 and a whole ``window`` >= 1 second;
    :class:`ValueError` otherwise. Time runs forward: a ``now`` earlier than the last one
    counts in the latest second."""

    __slots__ = ("ratio", "min_per_second", "window", "_seconds", "_requests", "_retries")

    def __init__(self, ratio: float, min_per_second: float, window: int) -> None:
        if not (ratio >= 0 and min_per_second >= 0) or isinstance(window, bool) or not isinstance(window, int) \
                or window < 1:
            raise ValueError(f"RetryBudget needs ratio >= 0, min_per_second >= 0 and a whole window >= 1; "
                             f"got {ratio!r}, {min_per_second!r}, {window!r}")
        self.ratio, self.min_per_second, self.window = ratio, min_per_second, window
        self._seconds: deque[list[int]] = deque()
        """[second, requests, retries] of each second with any, oldest first."""
        self._requests = 0
        self._retries = 0
        """The sums over :attr:`_seconds`."""

    def _now(self, now: float) -> list[int]:
        """The bucket of ``now``'s second, after dropping those that left the window."""
        second = math.floor(now)
        seconds = self._seconds
        while seconds and seconds[0][0] <= second - self.window:
            _, requests, retries = seconds.popleft()
            self._requests -= requests
            self._retries -= retries
        if not seconds or seconds[-1][0] < second:
            seconds.append([second, 0, 0])
        return seconds[-1]

    def request(self, now: float) -> None:
        """A request arrived at ``now`` (its first attempt)."""
        self._now(now)[1] += 1
        self._requests += 1

    def allows(self, now: float) -> bool:
        """Whether a retry at ``now`` fits the budget; if it does, it is counted."""
        bucket = self._now(now)
        if self._retries + 1 > self.min_per_second * self.window + self.ratio * self._requests:
            return False
        bucket[2] += 1
        self._retries += 1
        return True

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, retries) in the window at ``now``."""
        self._now(now)
        return self._requests, self._retries
