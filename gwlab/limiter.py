"""Token bucket: the gateway's rate limiter, in exact integer arithmetic.

The bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second; each admitted
request takes one. A full bucket lets a burst of ``burst`` requests through at once, after
which admissions settle at ``rate`` per second: under overload lasting T seconds a bucket that
starts full admits ``burst + rate * T`` requests.

Nothing here reads a clock. The bucket remembers its level at the last time it was told
about (``stamp``) and brings it up to date lazily whenever it is called with a later ``now``,
so the same object runs on wall-clock time in the server and on virtual time in the
simulator. A clock that steps back never removes tokens: time only moves forward for the
bucket.

Units, chosen so that nothing is rounded per token:

- time is counted in whole microseconds (the unit of Redis's ``TIME``); a float ``now`` is
  taken to the nearest one, halves rounding up;
- the rate is quantised to 0.001 token per second (``rate_milli = rate * 1000``, an integer);
- the level is counted in nano-tokens (10⁻⁹ token, so the burst is quantised to that).

One microsecond then earns exactly ``rate_milli`` nano-tokens, and one token is 10⁹ of them:
in time scaled by the rate, a token's period is exactly 10⁹ units. (This is the generic cell
rate algorithm's theoretical arrival time, written as a level.) Every stored quantity is a
whole number below 2⁵³, held in a float, where such arithmetic is exact and cheaper than
Python's integers; a Lua script in Redis (doubles only) can run the same steps. (The refill
of a long idle spell may exceed 2⁵³ before it is capped at the burst; rounding is monotonic,
so the cap still comes out exact.)

The one tolerance comes from the clock's resolution: an arrival counts as on time when the
bucket's clock puts it less than one microsecond before its token is due. Its own time and
the time the bucket last filled up were each rounded by up to half a microsecond, so a
client that sends at exactly the rate (``t_k = k / rate``) is never refused; the bucket
admits less than one token more than ``burst + rate * T`` for it. Waits round up, to a whole
microsecond, and are never 0 for a refused request: a client that waits the advertised time
is admitted.
"""

from __future__ import annotations

import math

TOKEN = 1e9
"""Nano-tokens in one token."""
MICROS = 1e6
"""Microseconds in one second."""
MIN_RATE = 0.001
"""The slowest rate, tokens per second: the quantum of rates (one token per 1000 s). Open-loop
arrivals share the range."""
MAX_RATE = 1e6
"""The fastest rate, tokens per second: one token per microsecond, the clock's resolution (a
thousand times the seed's limiter)."""
MAX_BURST = 1e6
"""The largest capacity in tokens: a second at the fastest rate; in nano-tokens it stays
below 2⁵³."""


def micros(seconds: float) -> float:
    """``seconds`` as the nearest whole microsecond, halves rounding up: then adding a whole
    number of microseconds to a time never rounds it to an earlier one."""
    return (seconds * MICROS + 0.5) // 1.0


class TokenBucket:
    """A token bucket with capacity ``burst`` refilled at ``rate`` tokens per second.

    ``rate`` is taken to the nearest 0.001 per second and ``burst`` to the nearest 10⁻⁹
    token. Raises :class:`ValueError` unless :data:`MIN_RATE` <= ``rate`` <= :data:`MAX_RATE`
    and 1 <= ``burst`` <= :data:`MAX_BURST`."""

    __slots__ = ("rate", "burst", "_rate_milli", "_burst_nano", "_due", "_level", "_stamp")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        self._set(rate, burst)
        self._level = self._burst_nano
        """Nano-tokens at ``_stamp`` (slightly below 0 after an arrival within the tolerance)."""
        self._stamp = micros(now)
        """Microseconds of the latest ``now`` seen."""

    def _set(self, rate: float, burst: float) -> None:
        if not (MIN_RATE <= rate <= MAX_RATE and 1 <= burst <= MAX_BURST):
            raise ValueError(f"TokenBucket needs {MIN_RATE:g} <= rate <= {MAX_RATE:g} and 1 <= burst <= "
                             f"{MAX_BURST:g}; got rate={rate!r}, burst={burst!r}")
        self._rate_milli = float(round(rate * 1000))
        self._burst_nano = float(round(burst * TOKEN))
        self._due = TOKEN - self._rate_milli + 1
        """The least level that admits: a token, less what just under a microsecond earns
        (the clock's tolerance)."""
        self.rate = self._rate_milli / 1000
        """Tokens per second, as quantised."""
        self.burst = self._burst_nano / TOKEN
        """Capacity in tokens, as quantised."""

    def _settle(self, t: float) -> float:
        """Bring the level up to microsecond ``t``; returns it."""
        stamp = self._stamp
        if t > stamp:
            level = self._level + (t - stamp) * self._rate_milli
            if level > self._burst_nano:
                level = self._burst_nano
            self._level = level
            self._stamp = t
            return level
        return self._level

    def tokens(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (never below 0)."""
        return max(0.0, self._settle(micros(now))) / TOKEN

    def try_acquire(self, now: float) -> bool:
        """Take one token if there is one (within the clock's tolerance); ``False`` means the
        request is rate limited."""
        # _settle(micros(now)), written out: this runs for every request.
        t = (now * 1e6 + 0.5) // 1.0
        level = self._level
        if t > self._stamp:
            level += (t - self._stamp) * self._rate_milli
            if level > self._burst_nano:
                level = self._burst_nano
            self._stamp = t
        if level >= self._due:
            self._level = level - 1e9
            return True
        self._level = level
        return False

    def retry_after_us(self, now: float) -> int:
        """Whole microseconds from ``now`` until a whole token is due: 0 if a request would be
        admitted now, else at least 1. Rounded up from the exact wait, measured from ``now``
        itself rather than its rounded microsecond, so ``now + wait`` is never early (the
        clock's tolerance may admit a request up to a microsecond sooner)."""
        level = self._settle(micros(now))
        if level >= self._due:
            return 0
        # The token is due exactly (TOKEN - level) / rate_milli microseconds after the stamp;
        # ``now`` lies ``offset`` microseconds after the stamp (-1/2 <= offset < 1/2, unless
        # the clock stepped back).
        whole, part = divmod(TOKEN - level, self._rate_milli)
        offset = now * MICROS - self._stamp
        # At least 1 also when float error in ``offset`` rounds a sliver of a wait to 0.
        return max(1, int(whole) + math.ceil(part / self._rate_milli - offset))

    def retry_after(self, now: float) -> float:
        """:meth:`retry_after_us` in seconds: a whole number of microseconds, at least one
        when the bucket refuses."""
        return self.retry_after_us(now) / MICROS

    def configure(self, now: float, rate: float | None = None, burst: float | None = None) -> None:
        """Change rate and/or burst: tokens earned up to ``now`` count at the old rate, then
        the level is clamped to the new capacity. Raises :class:`ValueError` like the
        constructor, changing nothing."""
        level = self._settle(micros(now))
        self._set(self.rate if rate is None else rate, self.burst if burst is None else burst)
        self._level = min(level, self._burst_nano)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up and at least 1 (RFC 9110 § 10.2.3)."""
    return str(max(1, math.ceil(seconds)))


def retry_after_ms_header(wait_us: int) -> str:
    """``retry-after-ms``: the exact wait in milliseconds (up to three decimals), as the
    OpenAI SDK reads it."""
    ms, us = divmod(wait_us, 1000)
    return f"{ms}.{us:03d}".rstrip("0").rstrip(".") if us else str(ms)
