"""Token bucket: the gateway's rate limiter.

The bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second; each admitted
request takes one. A full bucket lets a burst of ``burst`` requests through at once, after
which admissions settle at ``rate`` per second: under overload lasting T seconds a bucket that
starts full admits ``burst + rate * T`` requests.

Nothing here reads a clock. The bucket remembers the level it had at the last time it was
told about (``stamp``) and brings it up to date lazily whenever it is called with a later
``now``, so the same object runs on wall-clock time in the server and on virtual time in the
simulator.
"""

from __future__ import annotations

import math


class TokenBucket:
    """A token bucket with capacity ``burst`` refilled at ``rate`` tokens per second."""

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"TokenBucket needs rate > 0 and burst >= 1, got rate={rate!r}, burst={burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._level = self.burst
        self._stamp = now

    def _settle(self, now: float) -> None:
        # A clock that steps back (or two shells reporting slightly different times) never
        # removes tokens: time only moves forward for the bucket.
        if now > self._stamp:
            self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
            self._stamp = now

    def tokens(self, now: float) -> float:
        """Tokens in the bucket at ``now``."""
        self._settle(now)
        return self._level

    def try_acquire(self, now: float) -> bool:
        """Take one token if there is one; ``False`` means the request is rate limited."""
        self._settle(now)
        if self._level >= 1.0:
            self._level -= 1.0
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds from ``now`` until one token is available (0 if one is)."""
        self._settle(now)
        return max(0.0, (1.0 - self._level) / self.rate)

    def configure(self, now: float, rate: float | None = None, burst: float | None = None) -> None:
        """Change rate and/or burst: tokens earned up to ``now`` count at the old rate, then
        the level is clamped to the new capacity."""
        self._settle(now)
        if rate is not None:
            self.rate = float(rate)
        if burst is not None:
            self.burst = float(burst)
            self._level = min(self._level, self.burst)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up and at least 1 (RFC 9110 § 10.2.3)."""
    return str(max(1, math.ceil(seconds)))
