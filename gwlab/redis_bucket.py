"""The gateway's limits kept in Redis: one requests bucket and one tokens bucket for every
gateway (every replica) that uses the same Redis and ``limiter.redis_prefix``.

Each admission is one call of a Lua script (``redis_bucket.lua``), which Redis runs
atomically: it reads Redis's own clock (``TIME``: the replicas' monotonic clocks mean
nothing to each other), refills and takes with exactly the arithmetic of
:class:`gwlab.limiter.TokenBucket` and :class:`~gwlab.limiter.PerMinuteBucket`, and answers
with the admission, the wait (``retry-after``) and each bucket's level in the same reply
(DESIGN, "Upstreams and replicas"). Refunds and charges of the tokens a request reserved
go to Redis too, without holding up the answer. The keys are ``PREFIX:bucket:requests`` and
``PREFIX:bucket:tokens``. A bucket missing from Redis (first use, after a reset, after Redis
lost its data) is created full, with the rates of the gateway that meets it missing; its
rates change only by a gateway's :meth:`RedisAdmission.configure`, so replicas cannot fight
over them. :meth:`RedisAdmission.reset` resets the shared buckets, for every replica.

What the gateway shows of a shared bucket (the tokens gauge, the ``x-ratelimit-*`` headers)
is what the last reply said: scraping costs no call to Redis.

When Redis fails (refused, closed, slower than ``limiter.redis_timeout``, or busy), the
admission follows ``limiter.redis_failure``: ``"open"`` admits the request, reserving
nothing (so it gets no refund), ``"closed"`` refuses it (429 ``limiter_unavailable``). Every
such admission, refund or change is counted (:attr:`RedisAdmission.errors`,
``gwlab_limiter_backend_errors_total``) and logged once per :data:`~gwlab.config.REDIS_LOG_INTERVAL`.
After a failure Redis is left alone for :data:`~gwlab.config.REDIS_RECONNECT_BASE`, doubling
up to :data:`~gwlab.config.REDIS_RECONNECT_MAX`: meanwhile admissions follow the failure mode
at once, and the next call after the wait reconnects (redis-py opens a new connection, and
loads the script again into a Redis that restarted). A failure also closes the pool's idle
connections, so that none of them fails a call again once Redis is back. No call ever blocks the event loop:
redis-py's asyncio client, each call within ``limiter.redis_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from importlib.resources import files
from typing import Callable

from gwlab.needs import needs

needs("limiter.backend = \"redis\" (gwlab.redis_bucket)", ("redis",), "pip install 'gwlab[redis]'")

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from gwlab.admission import FAILED_OPEN, LIMITER_UNAVAILABLE, RATE_LIMIT_REQUESTS, RATE_LIMIT_TOKENS, Rejected
from gwlab.config import REDIS_LOG_INTERVAL, REDIS_RECONNECT_BASE, REDIS_RECONNECT_MAX, LimiterConfig, redacted
from gwlab.limiter import PerMinuteBucket, TokenBucket

log = logging.getLogger(__name__)

SCRIPT = files("gwlab").joinpath("redis_bucket.lua").read_text(encoding="utf-8")
"""The Lua script of every operation on the shared buckets; its header gives its arguments
and its reply."""
_SHORT = (None, RATE_LIMIT_REQUESTS, RATE_LIMIT_TOKENS)
"""The code of a refusal by the script's number of the bucket that was short."""


def keys(prefix: str) -> list[str]:
    """The Redis keys of the requests bucket and the tokens bucket under ``prefix``."""
    return [f"{prefix}:bucket:requests", f"{prefix}:bucket:tokens"]


def arguments(op: str, requests: TokenBucket, tokens: PerMinuteBucket | None, n: int = 0,
              time_us: int | None = None) -> list[str]:
    """The script's arguments for ``op`` (``admit``, ``refund``, ``charge``, ``configure``,
    ``reset``) of ``n`` tokens, with the rates and capacities of the buckets ``requests`` and
    ``tokens`` (``None``: no tokens limit). ``time_us``, microseconds, stands for Redis's
    clock: for tests only."""
    limits = [*requests.units(), *(tokens.units() if tokens is not None else (0.0, 0.0, 0.0))]
    return [op, "" if time_us is None else str(time_us), str(n), *(f"{x:.17g}" for x in limits)]


class SharedBucket:
    """One shared bucket as this gateway last saw it: the rates it configured (``rate``,
    ``burst``; ``limit`` for a tokens bucket) and the level, tokens left and time until full
    of the last reply (full until the first). Refunds and charges go to Redis."""

    def __init__(self, bucket: TokenBucket, admission: RedisAdmission) -> None:
        self.bucket = bucket
        """A local bucket of the same rates: what the script's arguments are made from."""
        self.rate = bucket.rate
        self.burst = bucket.burst
        self.limit = getattr(bucket, "limit", None)
        self._unit, _, cap = bucket.units()
        self._admission = admission
        self._seen(cap, *bucket.status(0.0))

    def _seen(self, level: float, left: int, reset_us: int) -> None:
        self._level = level
        self._status = left, reset_us

    def tokens(self, now: float) -> float:
        """Tokens in the bucket at the last reply (never below 0)."""
        return max(0.0, self._level) / self._unit

    def level(self, now: float) -> float:
        """Tokens in the bucket at the last reply, below 0 in debt."""
        return self._level / self._unit

    def status(self, now: float) -> tuple[int, int]:
        """Whole tokens left and microseconds until full, at the last reply."""
        return self._status

    def refund(self, now: float, n: int) -> None:
        """Give ``n`` tokens back, in Redis, never above the capacity."""
        self._admission.settle("refund", n)

    def charge(self, now: float, n: int) -> None:
        """Take ``n`` tokens as debt, in Redis."""
        self._admission.settle("charge", n)


class RedisAdmission:
    """The admission object (:mod:`gwlab.admission`) of ``limiter.backend = "redis"``: the
    buckets of ``limiter`` in the Redis at ``limiter.redis_url``. ``clock`` gives monotonic
    seconds (for the waits between tries, and the log's interval). Use it on one event loop;
    :meth:`aclose` when done."""

    def __init__(self, limiter: LimiterConfig, clock: Callable[[], float]) -> None:
        # No retries, and no socket timeouts: each call is bounded by limiter.redis_timeout as
        # it stands (it may change at runtime), and this class decides when to try again.
        self._client = Redis.from_url(limiter.redis_url, retry=Retry(NoBackoff(), 0))
        self._script = self._client.register_script(SCRIPT)
        self._clock = clock
        self.url = redacted(limiter.redis_url)
        """The Redis's URL as log lines show it: its password redacted."""
        self.errors = 0
        """Admissions, refunds and changes that Redis failed (or that were not tried, while
        waiting to try it again)."""
        self._backoff = 0.0
        self._retry_at = -math.inf
        """Monotonic seconds before which Redis is not tried (after a failure)."""
        self._logged_at = -math.inf
        self._unlogged = 0
        self._pending: list[list[str]] = []
        """Changes (configure, reset) not yet made in Redis, in order."""
        self._changing: asyncio.Future | None = None
        self._settling: set[asyncio.Task] = set()
        self._apply(limiter)

    def _apply(self, limiter: LimiterConfig) -> None:
        """Take ``limiter``'s settings, and its rates with buckets seen full."""
        self.limiter = limiter
        self.requests = SharedBucket(TokenBucket(limiter.rate, limiter.burst), self)
        self.tokens = SharedBucket(PerMinuteBucket(limiter.tpm), self) if limiter.tpm else None
        self._keys = keys(limiter.redis_prefix)

    def _arguments(self, op: str, n: int = 0) -> list[str]:
        return arguments(op, self.requests.bucket, None if self.tokens is None else self.tokens.bucket, n)

    async def admit(self, now: float, tokens: int) -> Rejected | None | object:
        """Take a request token and, with a tokens limit, ``tokens`` tokens, both or neither,
        in Redis at Redis's time (``now`` is not used): ``None`` when admitted, else the 429
        (:class:`~gwlab.admission.Rejected`, as :class:`~gwlab.admission.LocalAdmission`
        gives it). When Redis fails: :data:`~gwlab.admission.FAILED_OPEN` (admitted, nothing
        reserved) or the 429 :data:`~gwlab.admission.LIMITER_UNAVAILABLE` with the wait until
        Redis is tried again (``limiter.redis_failure``). Changes not yet made in Redis are
        made first."""
        if self._pending or (self._changing is not None and not self._changing.done()):
            await asyncio.shield(self._change())
        reply = await self._call(self._arguments("admit", tokens))
        if reply is None:
            if self.limiter.redis_failure == "open":
                return FAILED_OPEN
            # Whole microseconds, rounded up, after a float's error is rounded away (as Router's 503).
            wait = math.ceil(round((self._retry_at - self._clock()) * 1e6, 3))
            return Rejected(max(1, wait), LIMITER_UNAVAILABLE)
        if reply[0]:
            return None
        return Rejected(reply[1], _SHORT[reply[2]])

    def settle(self, op: str, n: int) -> None:
        """Carry out ``op`` (``refund`` or ``charge``) of ``n`` tokens in Redis, without
        waiting for it (on the running loop)."""
        task = asyncio.get_running_loop().create_task(self._call(self._arguments(op, n)))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def configure(self, limiter: LimiterConfig, now: float) -> None:
        """Switch to ``limiter``: its prefix, timeout and failure mode at once; new rates,
        burst or tokens limit also in Redis (before this gateway's next admission that Redis
        answers: a change Redis fails is kept and tried again), where the buckets settle at
        their old rates first, as a local bucket does."""
        old = self.limiter
        if (old.rate, old.burst, old.tpm) == (limiter.rate, limiter.burst, limiter.tpm):
            self.limiter, self._keys = limiter, keys(limiter.redis_prefix)
            return
        self._apply(limiter)
        self._change_soon(self._arguments("configure"))

    def reset(self, limiter: LimiterConfig, now: float) -> None:
        """Full shared buckets: for every gateway that uses them (before this one's next
        admission that Redis answers: a reset Redis fails is kept and tried again)."""
        self._apply(limiter)
        self._change_soon(self._arguments("reset"))

    def _change_soon(self, args: list[str]) -> None:
        # A reset writes the buckets anew, with its limits: no change pending before it
        # matters. A change of the limits replaces one pending before it: the limits as they
        # now stand are what Redis must take. At most a reset and a change are ever pending.
        self._pending = [a for a in self._pending if args[0] == "configure" and a[0] == "reset"]
        self._pending.append(args)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # made before the next admission
        self._change()

    def _change(self) -> asyncio.Future:
        """The task making the pending changes in Redis, in order (started if need be)."""
        if self._changing is None or self._changing.done():
            self._changing = asyncio.ensure_future(self._changes())
        return self._changing

    async def _changes(self) -> None:
        """Make the pending changes in Redis, in order. One that Redis fails stays pending,
        with those after it: they are made before a later admission, once Redis answers."""
        while self._pending:
            args = self._pending[0]
            if await self._call(args) is None:
                return
            self._pending = [a for a in self._pending if a is not args]  # it may have been replaced meanwhile

    async def _call(self, args: list[str]) -> list[int] | None:
        """Run the script with ``args`` within ``limiter.redis_timeout``; its reply (the
        buckets seen are updated), or ``None`` when Redis failed or is not tried yet."""
        now = self._clock()
        if now < self._retry_at:
            self._failed(now, None)
            return None
        try:
            async with asyncio.timeout(self.limiter.redis_timeout):
                reply = await self._script(keys=self._keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(now, exc)
            await self._drop_idle()
            return None
        self._backoff = 0.0
        if self._unlogged and now - self._logged_at >= REDIS_LOG_INTERVAL:  # failures since the last line
            log.warning("limiter: Redis at %s failed %d calls since the last line; it answers again",
                        self.url, self._unlogged)
            self._logged_at, self._unlogged = now, 0
        self.requests._seen(*reply[3:6])
        if self.tokens is not None:
            self.tokens._seen(*reply[6:9])
        return reply

    async def _drop_idle(self) -> None:
        """Close the idle connections of the pool, within ``limiter.redis_timeout``. After a
        failure they lead to a Redis that is gone, or that restarted and closed them: each
        would otherwise fail its next call once Redis is back."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.limiter.redis_timeout):
                await self._client.connection_pool.disconnect(inuse_connections=False)

    def _failed(self, now: float, error: BaseException | None) -> None:
        """Count a call that Redis failed (``error``) or that was not tried; after a failure,
        leave Redis alone for the next backoff; log once per interval (failures left unlogged
        when Redis answers again are logged by the first answer after the interval)."""
        self.errors += 1
        self._unlogged += 1
        if error is not None:
            self._backoff = min(REDIS_RECONNECT_MAX, 2 * self._backoff if self._backoff else REDIS_RECONNECT_BASE)
            self._retry_at = now + self._backoff
        if now - self._logged_at >= REDIS_LOG_INTERVAL:
            what = "admitting" if self.limiter.redis_failure == "open" else "refusing"
            log.warning("limiter: Redis at %s failed %d calls (last: %s); %s requests, trying again within %g s",
                        self.url, self._unlogged, _describe(error), what, self._backoff)
            self._logged_at = now
            self._unlogged = 0

    async def aclose(self) -> None:
        """Finish the refunds and changes under way, then close the connections. Changes
        that Redis failed until then are logged: the other gateways keep the old limits."""
        await asyncio.gather(*self._settling, *([self._changing] if self._changing else []), return_exceptions=True)
        if self._pending:
            log.warning("limiter: Redis at %s did not take %d changes of the limits before this gateway stopped; "
                        "gateways sharing its buckets keep the limits from before", self.url, len(self._pending))
        await self._client.aclose()


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "not tried, waiting to try again"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
