"""A provider as the router sees it: the provider itself (:class:`Host`: its calls' draws, its
finite capacity and its own limits) and the router's view of it (:class:`Upstream`: its
weight, its breaker and the router's calls in flight to it).

Capacity follows DESIGN ("LLM traffic"), and like every policy here it is pure: ``now`` in,
decisions out, the shells wait. With ``capacity`` > 0 the provider serves that many calls at
once; a call that finds every slot busy waits in a first-in-first-out queue of at most
``queue`` calls, and one that finds the queue full is refused at once (429) with a
retry-after equal to the wait until the soonest call in service ends (at least 1 ms). With
``rpm`` > 0 the provider's own limit is an exact token bucket of ``rpm`` tokens refilled at
``rpm`` per minute, exactly (as the gateway's ``limiter.tpm``); with ``tpm`` > 0 a call also reserves its request's tokens (prompt and ``max_tokens``) from a
bucket of ``tpm`` tokens per minute, which is settled to what the answer used when the call
ends (:meth:`gwlab.router.Router.refund`). A call takes from both buckets or from neither;
one it refuses is a 429 with the wait until both would admit it (the later bucket's). A call
the queue refuses has already taken from them: the provider saw it.

A call waiting for a slot starts when a call in service ends or is abandoned (or when a
larger capacity is configured): :meth:`Upstream.vacate` returns the calls that start, in
queue order, for the router to hand to its shell.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from gwlab.breaker import CircuitBreaker
from gwlab.config import ProviderConfig
from gwlab.limiter import PerMinuteBucket
from gwlab.providers import Forwarded, Provider

MIN_RETRY_AFTER = 0.001
"""The least retry-after of a "queue full" 429, in seconds (DESIGN: at least 1 ms)."""


class Host:
    """A provider itself, whoever calls it: its simulated :class:`Provider` (or a real
    upstream's :class:`Forwarded`) and the draws of its calls, and its capacity and own
    limits: ``busy`` calls in service, ``waiting`` routes queued for a slot, its buckets.
    Every replica of a simulated gateway routes to the same hosts (DESIGN, "Upstreams and
    replicas"); each has its own :class:`Upstream` view of them."""

    __slots__ = ("provider", "retry_provider", "limited", "busy", "waiting", "_serving",
                 "requests", "tokens")

    def __init__(self, provider: Provider | Forwarded, retry_provider: Provider | Forwarded, now: float) -> None:
        self.provider = provider
        self.retry_provider = retry_provider
        """The same provider drawing from streams of its own, for retries' calls (first
        attempts draw as they would without retries: common random numbers)."""
        self.limited = bool(provider.config.capacity or provider.config.rpm or provider.config.tpm)
        """Whether the provider has a capacity or its own rate limits: each call must
        :meth:`enter` (read on every call: kept beside the config)."""
        self.busy = 0
        """Calls holding a slot (counted only while ``capacity`` > 0 or calls queued since)."""
        self.waiting: deque[Any] = deque()
        """Routes waiting for a slot, first come first."""
        self._serving: dict[Any, float] = {}
        """The end of each route's call in service. Only a refusal (the queue full) asks for
        the soonest of them, so they are kept unordered: a call's start and end cost a
        dict's insertion and removal, not a heap's."""
        self.requests = _per_minute(None, provider.config.rpm, now)
        """The provider's own requests bucket (``rpm`` per minute), or ``None`` without that limit."""
        self.tokens = _per_minute(None, provider.config.tpm, now)
        """The provider's own tokens bucket (``tpm`` per minute), or ``None`` without that limit."""

    def fits(self, tokens: int) -> bool:
        """Whether a request reserving ``tokens`` could ever be taken by the provider's own
        tokens limit (always, without one)."""
        return self.tokens is None or tokens <= self.tokens.limit

    def configure(self, config: ProviderConfig, now: float) -> list[Any]:
        """New parameters for the provider (under the same name), from ``now``; returns the
        waiting routes that a larger capacity starts now. Configuring a host again with the
        same parameters at the same ``now`` changes nothing (every replica's router
        configures the hosts they share)."""
        self.provider.configure(config)
        self.retry_provider.configure(config)
        self.limited = bool(config.capacity or config.rpm or config.tpm)
        self.requests = _per_minute(self.requests, config.rpm, now)
        self.tokens = _per_minute(self.tokens, config.tpm, now)
        return self._start_waiting()

    def enter(self, route: Any, now: float, end: float, tokens: int = 0) -> float | None:
        """A call routed here at ``now``, which would end at ``end`` if it started now and
        reserves ``tokens`` (taken from the tokens bucket, when there is one, and then set
        as ``route.provider_reserved``): ``None`` when it starts or waits (then it is in
        ``waiting``), or the seconds after which the provider would take it when it refuses
        it (429)."""
        config = self.provider.config
        if self.requests is not None or self.tokens is not None:  # a capacity alone takes nothing
            wait = self._take(now, tokens)
            if wait:
                return wait / 1e6
        if self.tokens is not None:
            route.provider_reserved = tokens
        if not config.capacity or self.busy < config.capacity and not self.waiting:
            if config.capacity:  # start(route, end), written out: this runs for every call
                self.busy += 1
                self._serving[route] = end
            return None
        if len(self.waiting) < config.queue:
            self.waiting.append(route)
            return None
        return max(MIN_RETRY_AFTER, self._soonest_end() - now)

    def _take(self, now: float, tokens: int) -> int:
        """Take a request token and ``tokens`` tokens at ``now``, from the buckets there are,
        all or nothing: 0 when taken, else the microseconds until every short bucket has
        what the call needs."""
        requests, bucket = self.requests, self.tokens
        if bucket is None or not tokens:
            if requests is None or requests.try_acquire(now):
                return 0
            return requests.retry_after_us(now)
        if requests is None or requests.try_acquire(now):
            if bucket.take(now, tokens):
                return 0
            if requests is not None:
                requests.refund(now, 1)  # neither: the request token goes back as it was
            return bucket.retry_after_us(now, tokens)
        return max(requests.retry_after_us(now), bucket.retry_after_us(now, tokens))

    def start(self, route: Any, end: float) -> None:
        """``route``'s call takes a slot until ``end``."""
        self.busy += 1
        self._serving[route] = end

    def vacate(self, route: Any) -> list[Any]:
        """``route`` no longer needs the provider (its call ended, it was abandoned, or it
        gave up waiting): free its slot or its place in the queue. Returns the waiting routes
        that start now, first come first (most often none: the queue is empty)."""
        if self._serving.pop(route, None) is not None:
            self.busy -= 1
            return self._start_waiting() if self.waiting else []
        if self.waiting and route in self.waiting:
            self.waiting.remove(route)
        return []

    def _start_waiting(self) -> list[Any]:
        """Waiting routes taken off the queue while slots are free (they have no slot yet:
        the router starts each with :meth:`start`, once it knows its end)."""
        capacity = self.provider.config.capacity
        started = []
        while self.waiting and (not capacity or self.busy + len(started) < capacity):
            started.append(self.waiting.popleft())
        return started

    def _soonest_end(self) -> float:
        """When the soonest call in service ends (0 when none is)."""
        return min(self._serving.values(), default=0.0)


class Upstream:
    """A provider as one router sees it: its :class:`Host` (shared with the other replicas'
    routers, in a simulation with replicas), and what this router alone keeps of it: its
    weight, its breaker and the calls this router has in flight to it (what the
    power-of-two balancer compares)."""

    __slots__ = ("name", "weight", "host", "real", "breaker", "in_flight")

    def __init__(self, host: Host, breaker: CircuitBreaker) -> None:
        config = host.provider.config
        self.name = config.name
        """The provider's name (fixed: :meth:`Router.configure` cannot rename providers)."""
        self.weight = config.weight
        """The provider's weight, kept beside it: the balancer reads every weight on every request."""
        self.host = host
        self.real = config.kind == "openai"
        """Whether the provider is a real upstream, whose calls the shell forwards (fixed:
        ``kind`` cannot change at runtime)."""
        self.breaker = breaker
        self.in_flight = 0

    def configure(self, config: ProviderConfig, now: float) -> list[Any]:
        """New parameters for the provider from ``now`` (see :meth:`Host.configure`)."""
        self.weight = config.weight
        return self.host.configure(config, now)


def _per_minute(bucket: PerMinuteBucket | None, limit: int, now: float) -> PerMinuteBucket | None:
    """``bucket`` at a new ``limit`` per minute from ``now`` (0: no limit, ``None``): one
    switched on starts full, one changed keeps its level (clamped to the new capacity)."""
    if not limit:
        return None
    if bucket is None:
        return PerMinuteBucket(limit, now)
    bucket.configure(now, limit)
    return bucket
