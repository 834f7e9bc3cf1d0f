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

Tokens of an LLM's traffic are counted by the same arithmetic (:class:`PerMinuteBucket`):
a bucket of ``limit`` tokens refilled at ``limit`` per minute, as OpenAI states its limits,
whose unit is a sixty-millionth of a token, so that one microsecond earns exactly ``limit``
units and no rate is rounded. Either kind takes ``n`` tokens at once (:meth:`TokenBucket.take`,
with the same tolerance: an arrival less than a microsecond before its ``n`` tokens are due is
on time), gives back what a request reserved and did not use (:meth:`TokenBucket.refund`,
never above the capacity) and takes what it used beyond its reservation as debt
(:meth:`TokenBucket.charge`: the level goes below 0 and refills from there). Nothing is
created or lost: the level is always what it started with, plus what time earned (up to the
capacity), less what was taken and charged, plus what was refunded (up to the capacity).
So from the start of any window of T seconds to any admission in it, what was taken, less
what was refunded, plus what was charged, is at most the level at the window's start plus
``rate * T``, and less than a microsecond's refill more (the tolerance). Debt is recorded
down to −2⁵³ units (150 million tokens of a per-minute bucket, a minute at its largest
limit), as deep as its arithmetic stays exact; usage beyond that depth is not recorded.
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
MINUTE_UNIT = 6e7
"""Units of a :class:`PerMinuteBucket` in one token: the microseconds of a minute, so that a
limit of N tokens per minute earns exactly N units per microsecond."""
MAX_PER_MINUTE = 150_000_000
"""The largest limit of a :class:`PerMinuteBucket`, tokens per minute: OpenAI's largest
published tokens-per-minute limit; in units its capacity stays below 2⁵³."""
_FLOOR = -float(2**53)
"""The deepest level debt may take a bucket to, in units: below it, whole numbers in floats
are no longer exact."""


def micros(seconds: float) -> float:
    """``seconds`` as the nearest whole microsecond, halves rounding up: then adding a whole
    number of microseconds to a time never rounds it to an earlier one."""
    return (seconds * MICROS + 0.5) // 1.0


class TokenBucket:
    """A token bucket with capacity ``burst`` refilled at ``rate`` tokens per second.

    ``rate`` is taken to the nearest 0.001 per second and ``burst`` to the nearest 10⁻⁹
    token. Raises :class:`ValueError` unless :data:`MIN_RATE` <= ``rate`` <= :data:`MAX_RATE`
    and 1 <= ``burst`` <= :data:`MAX_BURST`."""

    __slots__ = ("rate", "burst", "_unit", "_earn", "_cap", "_whole", "_due", "_level", "_stamp")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        self._set(rate, burst)
        self._level = self._cap
        """Units at ``_stamp``: below 0 after an arrival within the tolerance, or in debt."""
        self._stamp = micros(now)
        """Microseconds of the latest ``now`` seen."""

    def _set(self, rate: float, burst: float) -> None:
        if not (MIN_RATE <= rate <= MAX_RATE and 1 <= burst <= MAX_BURST):
            raise ValueError(f"TokenBucket needs {MIN_RATE:g} <= rate <= {MAX_RATE:g} and 1 <= burst <= "
                             f"{MAX_BURST:g}; got rate={rate!r}, burst={burst!r}")
        self._units(TOKEN, float(round(rate * 1000)), float(round(burst * TOKEN)))

    def _units(self, unit: float, earn: float, cap: float) -> None:
        self._unit = unit
        """Units in one token (nano-tokens here)."""
        self._earn = earn
        """Units earned per microsecond (the rate in thousandths of a token per second here)."""
        self._cap = cap
        """The capacity in units."""
        self._whole = int(cap // unit)
        """The whole tokens of a full bucket."""
        self._due = unit - earn + 1
        """The least level that admits: a token, less what just under a microsecond earns
        (the clock's tolerance)."""
        self.rate = earn * MICROS / unit
        """Tokens per second, as quantised."""
        self.burst = cap / unit
        """Capacity in tokens, as quantised."""

    def _settle(self, t: float) -> float:
        """Bring the level up to microsecond ``t``; returns it."""
        stamp = self._stamp
        if t > stamp:
            level = self._level + (t - stamp) * self._earn
            if level > self._cap:
                level = self._cap
            self._level = level
            self._stamp = t
            return level
        return self._level

    def tokens(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (never below 0)."""
        return max(0.0, self._settle(micros(now))) / self._unit

    def level(self, now: float) -> float:
        """Tokens in the bucket at ``now``, below 0 in debt (or, by less than a microsecond's
        refill, after an arrival within the tolerance)."""
        return self._settle(micros(now)) / self._unit

    def try_acquire(self, now: float) -> bool:
        """Take one token if there is one (within the clock's tolerance); ``False`` means the
        request is rate limited."""
        # _settle(micros(now)), written out: this runs for every request.
        t = (now * 1e6 + 0.5) // 1.0
        level = self._level
        if t > self._stamp:
            level += (t - self._stamp) * self._earn
            if level > self._cap:
                level = self._cap
            self._stamp = t
        if level >= self._due:
            self._level = level - self._unit
            return True
        self._level = level
        return False

    def take(self, now: float, n: int) -> bool:
        """Take ``n`` whole tokens at once if the bucket holds them (within the clock's
        tolerance), else take nothing: ``False`` means the request is rate limited."""
        level = self._settle(micros(now))
        need = n * self._unit
        if level >= need - self._earn + 1:
            self._level = level - need
            return True
        return False

    def refund(self, now: float, n: int) -> None:
        """Give back ``n`` tokens taken earlier and not used, never above the capacity."""
        level = self._settle(micros(now)) + n * self._unit
        self._level = level if level < self._cap else self._cap

    def charge(self, now: float, n: int) -> None:
        """Take ``n`` tokens whatever the level: usage beyond what was taken at admission. The
        level may go below 0 (debt, down to −2⁵³ units) and refills from there."""
        level = self._settle(micros(now)) - n * self._unit
        self._level = level if level > _FLOOR else _FLOOR

    def retry_after_us(self, now: float, n: int = 1) -> int:
        """Whole microseconds from ``now`` until ``n`` whole tokens are due: 0 if ``n`` would
        be taken now, else at least 1. Rounded up from the exact wait, measured from ``now``
        itself rather than its rounded microsecond, so ``now + wait`` is never early (the
        clock's tolerance may admit a request up to a microsecond sooner)."""
        level = self._settle(micros(now))
        need = n * self._unit
        if level >= need - self._earn + 1:
            return 0
        # The tokens are due exactly (need - level) / earn microseconds after the stamp;
        # ``now`` lies ``offset`` microseconds after the stamp (-1/2 <= offset < 1/2, unless
        # the clock stepped back).
        whole, part = divmod(need - level, self._earn)
        offset = now * MICROS - self._stamp
        # At least 1 also when float error in ``offset`` rounds a sliver of a wait to 0. The
        # sum is a float's, as Redis's script adds (past 2^53 microseconds, 285 years, it rounds).
        return max(1, int(whole + math.ceil(part / self._earn - offset)))

    def retry_after(self, now: float) -> float:
        """:meth:`retry_after_us` in seconds: a whole number of microseconds, at least one
        when the bucket refuses."""
        return self.retry_after_us(now) / MICROS

    def status(self, now: float) -> tuple[int, int]:
        """What OpenAI's rate-limit headers tell at ``now``: the whole tokens left (never below
        0), and the whole microseconds until the bucket is full again (0 when it is full),
        rounded up and counted from the bucket's own microsecond of ``now``, which is what
        it will take a client's arrival to be."""
        # _settle(micros(now)), written out: this runs for every answer. A bucket full again,
        # nearly every answer's, says so at once.
        t = (now * 1e6 + 0.5) // 1.0
        level = self._level
        cap = self._cap
        if t > self._stamp:
            level += (t - self._stamp) * self._earn
            self._stamp = t
            if level >= cap:
                self._level = cap
                return self._whole, 0
            self._level = level
        elif level >= cap:
            return self._whole, 0
        # Floor division of whole numbers in floats is exact: -((level - cap) // earn) is
        # the exact ceiling of (cap - level) / earn.
        return (int(level // self._unit) if level > 0 else 0), int(-((level - cap) // self._earn))

    def units(self) -> tuple[float, float, float]:
        """The bucket's arithmetic, as a copy kept elsewhere (:mod:`gwlab.redis_bucket`) runs
        it: units in one token, units earned per microsecond, the capacity in units."""
        return self._unit, self._earn, self._cap

    def configure(self, now: float, rate: float | None = None, burst: float | None = None) -> None:
        """Change rate and/or burst: tokens earned up to ``now`` count at the old rate, then
        the level is clamped to the new capacity. Raises :class:`ValueError` like the
        constructor, changing nothing."""
        level = self._settle(micros(now))
        self._set(self.rate if rate is None else rate, self.burst if burst is None else burst)
        self._level = min(level, self._cap)


class PerMinuteBucket(TokenBucket):
    """A token bucket of capacity ``limit`` tokens refilled at ``limit`` tokens per minute (a
    whole number, 1 to :data:`MAX_PER_MINUTE`; :class:`ValueError` otherwise), exactly: its
    unit is 1/:data:`MINUTE_UNIT` of a token, so a microsecond earns ``limit`` units. It
    starts full. ``rate`` is ``limit / 60`` tokens per second and ``burst`` is ``limit``."""

    __slots__ = ("limit",)

    def __init__(self, limit: int, now: float = 0.0) -> None:
        self._set_limit(limit)  # in place of the per-second rate and burst of TokenBucket.__init__
        self._level = self._cap
        self._stamp = micros(now)

    def _set_limit(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PER_MINUTE:
            raise ValueError(f"PerMinuteBucket needs a whole limit, 1 <= limit <= {MAX_PER_MINUTE}; got {limit!r}")
        self.limit = limit
        """Tokens per minute, and the capacity."""
        self._units(MINUTE_UNIT, float(limit), limit * MINUTE_UNIT)

    def configure(self, now: float, limit: int | None = None) -> None:  # type: ignore[override]
        """Change the limit: tokens earned up to ``now`` count at the old one, then the level
        (debt included) is clamped to the new capacity. :class:`ValueError` as the
        constructor, changing nothing."""
        level = self._settle(micros(now))
        self._set_limit(self.limit if limit is None else limit)
        self._level = min(level, self._cap)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up and at least 1 (RFC 9110 § 10.2.3)."""
    return str(max(1, math.ceil(seconds)))


def retry_after_ms_header(wait_us: int) -> str:
    """``retry-after-ms``: the exact wait in milliseconds (up to three decimals), as the
    OpenAI SDK reads it."""
    ms, us = divmod(wait_us, 1000)
    return f"{ms}.{us:03d}".rstrip("0").rstrip(".") if us else str(ms)
