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

**Adaptive throttling.** A client's own defence: it rejects attempts locally as the share of
them its backend accepts falls (:class:`AdaptiveThrottle`), counted in the same one-second
buckets.
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


class SlidingCounts:
    """Two counts of events over the last ``window`` whole seconds, kept in one-second
    buckets: what a retry budget and adaptive throttling both look back on. Time runs
    forward: a ``now`` earlier than the last one counts in the latest second."""

    __slots__ = ("window", "_seconds", "_latest_ends", "totals")

    def __init__(self, window: int) -> None:
        self.window = window
        self._seconds: deque[list[int]] = deque()
        """[second, first count, second count] of each second with any, oldest first."""
        self._latest_ends: float = -math.inf
        """The end of the latest second in :attr:`_seconds` (its second + 1): an event
        before it counts in that second."""
        self.totals = [0, 0]
        """The two counts summed over the window, as of the last :meth:`at`."""

    def at(self, now: float) -> list[int]:
        """Drop the seconds that left the window at ``now``; returns ``now``'s bucket, whose
        items 1 and 2 are its counts (add to them through :meth:`add`)."""
        second = math.floor(now)
        seconds, totals = self._seconds, self.totals
        if seconds and second <= seconds[-1][0]:
            return seconds[-1]  # nothing left the window since the latest second was opened
        while seconds and seconds[0][0] <= second - self.window:
            _, first, other = seconds.popleft()
            totals[0] -= first
            totals[1] -= other
        seconds.append([second, 0, 0])
        self._latest_ends = second + 1
        return seconds[-1]

    def add(self, now: float, which: int) -> None:
        """Count one event of kind ``which`` (0 or 1) at ``now``."""
        # Most events fall in the latest second: its bucket is taken without the call to at().
        # (floor(now) <= second exactly when now < second + 1, a whole number.)
        bucket = self._seconds[-1] if now < self._latest_ends else self.at(now)
        bucket[which + 1] += 1
        self.totals[which] += 1


def _whole_window(window: int) -> bool:
    return not isinstance(window, bool) and isinstance(window, int) and window >= 1


class RetryBudget:
    """Requests and retries of the last ``window`` whole seconds, and whether one more retry
    fits: at most ``min_per_second × window + ratio × requests`` retries in the window.

    ``ratio`` >= 0, ``min_per_second`` >= 0 and a whole ``window`` >= 1 second;
    :class:`ValueError` otherwise."""

    __slots__ = ("ratio", "min_per_second", "window", "_counts")

    def __init__(self, ratio: float, min_per_second: float, window: int) -> None:
        if not (ratio >= 0 and min_per_second >= 0) or not _whole_window(window):
            raise ValueError(f"RetryBudget needs ratio >= 0, min_per_second >= 0 and a whole window >= 1; "
                             f"got {ratio!r}, {min_per_second!r}, {window!r}")
        self.ratio, self.min_per_second, self.window = ratio, min_per_second, window
        self._counts = SlidingCounts(window)
        """Requests (0) and retries (1)."""

    def request(self, now: float) -> None:
        """A request arrived at ``now`` (its first attempt)."""
        self._counts.add(now, 0)

    def allows(self, now: float) -> bool:
        """Whether a retry at ``now`` fits the budget; if it does, it is counted."""
        counts = self._counts
        counts.at(now)
        requests, retries = counts.totals
        if retries + 1 > self.min_per_second * self.window + self.ratio * requests:
            return False
        counts.add(now, 1)
        return True

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, retries) in the window at ``now``."""
        self._counts.at(now)
        requests, retries = self._counts.totals
        return requests, retries


class AdaptiveThrottle:
    """Client-side adaptive throttling (Google's SRE book, chapter 21, "Handling Overload"):
    each attempt is rejected locally, before it is sent, with probability
    ``max(0, (requests - k × accepts) / (requests + 1))``, where ``requests`` are the
    attempts whose outcome is known (answered, given up at the client's timeout, or rejected
    locally) and ``accepts`` those the backend answered with success, both over the last
    ``window`` whole seconds. A client that sees its backend accept everything never
    rejects; one that sees half its attempts fail with ``k = 2`` still never does; past
    that, it sheds load in proportion to the failures.

    Attempts count as they end, as Envoy's admission control counts them, and not as they
    are sent: counted at sending, a client starting with an empty window would see requests
    for a whole latency before the first accept and reject nearly everything, a state the
    rule leaves only slowly.

    ``k`` >= 1, a whole ``window`` >= 1 second; :class:`ValueError` otherwise. Draws from
    ``rng`` only when the probability is above 0."""

    __slots__ = ("k", "window", "_rng", "_counts")

    def __init__(self, k: float, window: int, rng: Random) -> None:
        if not k >= 1 or not _whole_window(window):
            raise ValueError(f"AdaptiveThrottle needs k >= 1 and a whole window >= 1; got {k!r}, {window!r}")
        self.k, self.window = k, window
        self._rng = rng
        self._counts = SlidingCounts(window)
        """Requests (0) and accepts (1)."""

    def rejection_probability(self, now: float) -> float:
        """The probability of rejecting an attempt at ``now``."""
        counts = self._counts
        counts.at(now)
        requests, accepts = counts.totals
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def admits(self, now: float) -> bool:
        """Whether an attempt at ``now`` goes out; one rejected counts as a request."""
        p = self.rejection_probability(now)
        if p <= 0.0 or self._rng.random() >= p:
            return True
        self._counts.add(now, 0)
        return False

    def answered(self, now: float, accepted: bool) -> None:
        """An attempt sent ended at ``now``: answered with success (``accepted``), or not
        (any other answer, or given up at the client's timeout)."""
        self._counts.add(now, 0)
        if accepted:
            self._counts.add(now, 1)
