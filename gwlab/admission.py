"""Admission: the gateway's two limits (requests, and tokens per minute) taken together.

An admission object is what a :class:`~gwlab.router.Router` is given to admit requests
with (DESIGN, "Upstreams and replicas"): :class:`LocalAdmission`, the buckets of this
process, answers at once; :class:`gwlab.redis_bucket.RedisAdmission` keeps the same buckets in
Redis, shared by every gateway that uses it, and is awaited. Both offer the same parts:

- ``requests``: the requests bucket, and ``tokens``: the tokens bucket (``None`` while
  ``limiter.tpm`` is off), each with ``rate``, ``burst``, ``status(now)``, ``tokens(now)``,
  ``level(now)``; the tokens bucket also with ``limit``, ``refund(now, n)`` and ``charge(now,
  n)``;
- ``admit(now, tokens)``: take a request token and ``tokens`` tokens, both or neither;
  ``None`` (admitted), a :class:`Rejected`, or :data:`FAILED_OPEN`;
- ``configure(limiter, now)`` and ``reset(limiter, now)`` (full buckets);
- ``errors``: how many calls to its store failed (never, for the local one).

A request refused is a :class:`Rejected`, whose ``code`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from gwlab.config import LimiterConfig
from gwlab.limiter import PerMinuteBucket, TokenBucket

RATE_LIMIT_REQUESTS = "rate_limit_requests"
"""The ``code`` of a 429 for want of a request token."""
RATE_LIMIT_TOKENS = "rate_limit_tokens"
"""The ``code`` of a 429 for want of the tokens a request reserves."""
LIMITER_UNAVAILABLE = "limiter_unavailable"
"""The ``code`` of a 429 while the store of shared limits cannot be reached and
``limiter.redis_failure`` is ``"closed"``."""
ALL_COOLING_DOWN = "all_providers_cooling_down"
"""The ``code`` of a 503: no provider is eligible and ``gateway.fallback`` is ``"reject"``."""
CONTEXT_EXCEEDS_LIMIT = "context_exceeds_limit"
"""The ``code`` of a 400 for a request that reserves more tokens than the gateway's tokens
bucket holds, or than every provider's own tokens bucket holds."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A request not admitted, and why (``code``): a bucket was short, answer 429, and what
    it lacks is available in ``retry_after_us`` microseconds (a whole number, at least 1;
    the later bucket's when both were short); or the store of shared limits is unreachable
    and the limiter fails closed (:data:`LIMITER_UNAVAILABLE`), answer 429 with the wait
    until it is tried again; or the request reserves more tokens than a tokens limit can
    ever take (:data:`CONTEXT_EXCEEDS_LIMIT`), answer 400 (no wait); or, from
    :meth:`Router.route`, every provider is cooling down and the fallback rejects
    (:data:`ALL_COOLING_DOWN`), answer 503 with the wait until the soonest reopens."""

    retry_after_us: int
    code: str = RATE_LIMIT_REQUESTS

    @property
    def retry_after(self) -> float:
        """The wait in seconds."""
        return self.retry_after_us / 1e6

    @property
    def status(self) -> int:
        """The HTTP status to answer with: 429, 400 for a request that can never be
        admitted, or 503 when every provider is cooling down."""
        return _STATUS.get(self.code, 429)


_STATUS = {CONTEXT_EXCEEDS_LIMIT: 400, ALL_COOLING_DOWN: 503}

FAILED_OPEN = object()
"""What an admission kept elsewhere answers when its store failed and it fails open: the
request is admitted, reserving nothing (so nothing is refunded or charged for it)."""


class LocalAdmission:
    """The gateway's limits in this process: a :class:`~gwlab.limiter.TokenBucket` of
    ``limiter.rate`` and ``limiter.burst`` and, while ``limiter.tpm`` is on, a
    :class:`~gwlab.limiter.PerMinuteBucket` of ``limiter.tpm``, both full at ``now``."""

    __slots__ = ("requests", "tokens")

    errors = 0
    """Failed calls to a store: a local bucket has none."""

    def __init__(self, limiter: LimiterConfig, now: float) -> None:
        self.reset(limiter, now)

    def admit(self, now: float, tokens: int) -> Rejected | None:
        """Admit a request arriving at ``now`` that reserves ``tokens``: ``None`` when it is
        admitted, having taken a request token and ``tokens`` tokens (while the tokens limit
        is on), both or neither; otherwise the 429 with the wait until the bucket that is
        short has what the request needs (the later one when both are)."""
        bucket = self.tokens
        requests = self.requests
        if bucket is None or not tokens:
            if requests.try_acquire(now):
                return None
            return Rejected(requests.retry_after_us(now))
        if requests.try_acquire(now):
            if bucket.take(now, tokens):
                return None
            requests.refund(now, 1)  # neither: the request token goes back as it was
            return Rejected(bucket.retry_after_us(now, tokens), RATE_LIMIT_TOKENS)
        wait, tokens_wait = requests.retry_after_us(now), bucket.retry_after_us(now, tokens)
        return Rejected(tokens_wait, RATE_LIMIT_TOKENS) if tokens_wait > wait else Rejected(wait)

    def configure(self, limiter: LimiterConfig, now: float) -> None:
        """Switch to ``limiter``'s rates: each bucket settles at its old rate up to ``now``
        first; a tokens limit switched on starts full, switched off forgets its bucket."""
        self.requests.configure(now, limiter.rate, limiter.burst)
        if not limiter.tpm:
            self.tokens = None
        elif self.tokens is None:
            self.tokens = PerMinuteBucket(limiter.tpm, now)
        else:
            self.tokens.configure(now, limiter.tpm)

    def reset(self, limiter: LimiterConfig, now: float) -> None:
        """Full buckets of ``limiter``'s rates at ``now``."""
        self.requests = TokenBucket(limiter.rate, limiter.burst, now)
        self.tokens = PerMinuteBucket(limiter.tpm, now) if limiter.tpm else None
