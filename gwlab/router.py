"""The request flow, in one place: admit, pick, check the breaker, fall back, record.

::

    admit(now, tokens) ── more tokens than any tokens bucket holds? ─▶ Rejected         400
         ├─ either bucket short? (take both or neither) ────────────▶ Rejected(retry_after)  429
    route(now, tokens)
         ├─ eligible = providers whose breaker is available(now)
         │             (and whose own tokens limit could ever take the request's tokens)
         ├─ balancer picks among them (weights renormalised over that set)
         ├─ none eligible, or their weights sum to 0: gateway.fallback
         │      soonest: the provider whose cooldown ends soonest, as a probe
         │               (its outcome decides its breaker)
         │      panic:   the balancer's pick over every provider, breakers ignored
         │               (the call's outcome changes no breaker)
         │      reject: ──────────────────────────────────────────▶ Rejected(retry_after)  503
         └─ breaker.acquire → provider decides the Call ──▶ Route
                (its own capacity and limits may refuse it: a 429 Call)
    complete(route, now, outcome) ── breaker.record ──▶ status 200 / 502 / 504
    refund(route, now, used) ── the unused part of the tokens reserved, or the excess as debt

A shell (the aiohttp server, the simulator) calls :meth:`Router.admit`, and when it admits,
:meth:`Router.route`. The router admits with the admission object it is given
(:mod:`gwlab.admission`: its own buckets by default; the server may give it buckets kept
in Redis, and then awaits their admission itself, after :meth:`Router.oversized`);
:meth:`Router.reset` resets that object's buckets, shared ones included. The shell carries
the call out in its own kind of time and tells the router the outcome it observed with
:meth:`Router.complete`. Admission is a step of its own because
a shell may have to wait for it (a limit kept elsewhere), and the outcome is the shell's to
tell because only the shell sees how a call really ended (a stream cut short, a client gone);
for a simulated provider it is the one the call decided, ``route.call.outcome``. The
router never waits, never reads a clock and never counts metrics: it returns decisions and
the shell records them. Breaker transitions reach the shell through :meth:`Router.subscribe`;
:meth:`Router.snapshot` is the state a shell shows or samples, typed.

With a tokens-per-minute limit (``limiter.tpm`` > 0, or a provider's own ``tpm``), a request
reserves its prompt's tokens and its ``max_tokens`` (:meth:`Router.reservation`) from the
gateway's tokens bucket as it is admitted and from its provider's as it is routed there, and
the shell tells what it used once the call has ended (:meth:`Router.refund`, with the tokens
the answer carried): the unused part goes back to each, usage beyond the reservation is
taken as debt. A call abandoned uses its whole reservation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from gwlab import balancer as balancers
from gwlab.admission import (  # the codes and Rejected, importable from here too
    ALL_COOLING_DOWN, CONTEXT_EXCEEDS_LIMIT, LIMITER_UNAVAILABLE, RATE_LIMIT_REQUESTS,
    RATE_LIMIT_TOKENS, LocalAdmission, Rejected)
from gwlab.breaker import CLOSED, UNCOUNTED, CircuitBreaker, Listener, Permit, State, Transition
from gwlab.config import Scenario
from gwlab.limiter import TokenBucket
from gwlab.providers import Call, Outcome, make_provider
from gwlab.retry import Backoff, RetryBudget
from gwlab.streams import stream
from gwlab.upstream import MIN_RETRY_AFTER, Host, Upstream

_RATE_LIMITED = Outcome.RATE_LIMITED


class Route:
    """An admitted request: where it goes, under which permit, and how the call will end
    (``call``'s times count from the moment it starts: at once, or when a slot frees).
    ``fallback`` is true when no provider was eligible and the soonest-reopening one was
    called anyway, ``panic`` when none was and the balancer picked among all of them
    (``gateway.fallback``); ``streaming`` whether the request asked for a stream. ``pending`` until
    :meth:`Router.complete` or :meth:`Router.abandon`, which accept it once. ``reserved``
    holds the tokens the request took from the gateway's tokens bucket at admission, and
    ``provider_reserved`` those its call took from its provider's (0 without such a limit),
    until :meth:`Router.refund` settles them."""

    __slots__ = ("upstream", "permit", "fallback", "panic", "call", "streaming", "routed", "waiting", "pending",
                 "reserved", "provider_reserved")

    def __init__(self, upstream: Upstream, permit: Permit, fallback: bool, call: Call, streaming: bool,
                 panic: bool = False, reserved: int = 0) -> None:
        self.upstream = upstream
        self.permit = permit
        self.fallback = fallback
        self.panic = panic
        self.call = call
        self.streaming = streaming
        self.waiting = False
        """Whether the call waits for a slot of its provider: its shell then waits for
        :attr:`Router.on_start`, or gives up with :meth:`Router.give_up` when the gateway's
        timeout runs out first, counted from :attr:`routed` (set only for such a call: when
        it was routed)."""
        self.pending = True
        self.reserved = reserved
        self.provider_reserved = 0

    @property
    def provider(self) -> str:
        return self.upstream.name

    @property
    def status(self) -> int:
        return self.call.outcome.status


class Attempts:
    """One request's attempts while the gateway retries (``retry.attempts`` > 1): when it
    arrived, how many attempts it has made, the providers they went to, its backoff (made at
    its first retry: most requests never need one), and the tokens it reserved from the
    gateway's bucket, held from one attempt to the next and settled once, by its last
    attempt's refund."""

    __slots__ = ("arrived", "made", "tried", "backoff", "reserved")

    def __init__(self, arrived: float) -> None:
        self.arrived = arrived
        self.made = 0
        self.tried: list[Upstream] = []
        self.backoff: Backoff | None = None
        self.reserved = 0

    @classmethod
    def after_first(cls, arrived: float, upstream: Upstream) -> Attempts:
        """The attempts of a request that arrived at ``arrived`` once its first attempt, sent
        to ``upstream``, has ended: what :meth:`Router.route` leaves in :meth:`Router.attempts`'
        :class:`Attempts` after routing it. A shell may route a first attempt without them (it
        goes where it would with them) and make them only if it fails, when its retry is
        decided: most requests never need them."""
        attempts = cls(arrived)
        attempts.made = 1
        attempts.tried.append(upstream)
        return attempts


RETRY_DECISIONS = ("retry", "attempts", "deadline", "budget")
"""The reasons of :meth:`Router.retry` that metrics and summaries count: all but
``"not_retried"`` (an answer the gateway never retries)."""


class Retry(NamedTuple):
    """What :meth:`Router.retry` decided: ``wait`` seconds before the next attempt, or
    ``None`` when the request ends with its last attempt's answer, for ``reason``:
    ``"retry"``, ``"not_retried"`` (its status is not in ``retry.retry_on``, or was a
    success), ``"attempts"`` (all made), ``"deadline"`` (the backoff would end past it) or
    ``"budget"`` (the retry budget refused it)."""

    wait: float | None
    reason: str


class RouteError(RuntimeError):
    """A route was completed or abandoned a second time: the shell miscounts its calls."""


@dataclass(frozen=True, slots=True)
class ProviderState:
    """One provider at one instant: its breaker's state and cooldown left, its weight, the
    calls in flight to it (``busy`` of them in a slot and ``waiting`` for one, when it has
    a capacity) and its breaker's openings since its last recovery."""

    state: State
    cooldown_left: float
    weight: float
    in_flight: int
    trips: int
    busy: int = 0
    waiting: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The router at ``at`` seconds: the bucket's tokens, burst and rate, the calls in flight
    and each provider's state (in the scenario's order); with a tokens-per-minute limit, the
    tokens in its bucket (``tpm_tokens``, below 0 in debt; ``None`` without one). What every
    shell shows or samples."""

    at: float
    tokens: float
    burst: float
    rate: float
    in_flight: int
    providers: Mapping[str, ProviderState]
    tpm_tokens: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (states by their values: ``"half_open"``); ``tpm_tokens``
        only with a tokens limit."""
        data = {
            "time": self.at, "tokens": self.tokens, "in_flight": self.in_flight,
            "rate": self.rate, "burst": self.burst,
            "providers": {
                name: {"state": p.state.value, "cooldown_left": p.cooldown_left, "weight": p.weight,
                       "in_flight": p.in_flight, "trips": p.trips, "busy": p.busy, "waiting": p.waiting}
                for name, p in self.providers.items()
            },
        }
        if self.tpm_tokens is not None:
            data["tpm_tokens"] = self.tpm_tokens
        return data


class Router:
    """The gateway's policies for one scenario, driven by the caller's clock. A real upstream
    (:attr:`Upstream.real`) is routed as any provider, but its :class:`Route`'s ``call`` is
    only a bound (a TIMEOUT at the gateway's timeout): the shell forwards it and completes
    the route with the outcome it observed."""

    def __init__(self, scenario: Scenario, seed: int, now: float = 0.0, admission: Any = None,
                 hosts: Sequence[Host] | None = None) -> None:
        self.scenario = scenario
        self._listeners: list[Listener] = []
        self._open = 0
        """How many breakers are not CLOSED (OPEN or HALF_OPEN, as their last announced
        transition left them): every transition passes through :meth:`_announce`, which
        counts it before anyone else hears it, so between two calls this always equals the
        number of breakers whose announced state is not CLOSED. While it is 0, which is
        nearly always, every provider is eligible without asking each breaker."""
        self._eligible: list[Upstream] = []
        self._eligible_from = self._eligible_until = -math.inf
        """While some breaker is not CLOSED: the providers eligible from :attr:`_eligible_from`
        until :attr:`_eligible_until`, the soonest end of a cooldown running then (infinity
        for none), as :meth:`_find_eligible` found them. Only time's end of a cooldown, a
        transition, a probe taken or given back, or a new configuration changes what the
        breakers answer: the last three end it at once."""
        self.admission = LocalAdmission(scenario.limiter, now) if admission is None else admission
        """What admits requests (:mod:`gwlab.admission`): the buckets of this process unless
        the shell gives it another (:class:`gwlab.redis_bucket.RedisAdmission`)."""
        self._take = self.admission.admit
        if hosts is None:
            hosts = make_hosts(scenario, seed, now)
        self.upstreams = tuple(
            Upstream(host, CircuitBreaker(p.name, scenario.breaker, [self._announce]))
            for p, host in zip(scenario.providers, hosts)
        )
        """The providers in the scenario's order (a tuple: balancers may be handed it as is)."""
        self.balancer = balancers.create(scenario.gateway.balancer)
        self._rng = stream(seed, "pick")
        self._retry_pick_rng = stream(seed, "retry/pick")
        """The balancer's draws for retries, apart from first attempts' (as the providers'
        own: :attr:`Host.retry_provider`)."""
        self._timeout = scenario.gateway.timeout
        self._idle_timeout = scenario.gateway.stream_idle_timeout
        """The gateway's timeouts, read on every request: kept beside the scenario."""
        self.budget = self._budget(scenario)
        """The retry budget while retries are on (``retry.attempts`` > 1), else ``None``."""
        self._retry_rng = stream(seed, "retry/jitter")
        self.on_start: Callable[[Route, float], None] = _no_shell
        """Called with a route that waited for a slot and starts at the ``now`` given (the
        shell waits for this, then for the route's call); set by the shell."""
        self._token_limits()

    @staticmethod
    def _budget(scenario: Scenario) -> RetryBudget | None:
        r = scenario.retry
        return RetryBudget(r.budget_ratio, r.budget_min_per_second, r.budget_window) if r.attempts > 1 else None

    def attempts(self, now: float) -> Attempts | None:
        """A request admitted at ``now`` that the gateway may retry: its :class:`Attempts`
        (counted by the retry budget as a request), or ``None`` while retries are off. (A
        shell may count the request with :attr:`budget` itself and make its Attempts later,
        with :meth:`Attempts.after_first`.)"""
        budget = self.budget
        if budget is None:
            return None
        budget.request(now)
        return Attempts(now)

    def retry(self, attempts: Attempts, route: Route, now: float, status: int) -> Retry:
        """The attempt of ``route`` ended at ``now`` with ``status``, after the shell
        completed it: is the request tried again, and after how long? A retry waits its
        backoff, or the provider's retry-after when longer (a 429), and needs a status in
        ``retry.retry_on``, an attempt left, its wait ending by ``retry.deadline`` after
        the request's arrival, and the retry budget's leave (asked last: only a retry that
        would happen counts against it). When it retries, the gateway's tokens reservation
        passes from ``route`` to the next attempt (``route``'s refund then settles only its
        provider's)."""
        r = self.scenario.retry
        if status not in r.retry_on:
            return Retry(None, "not_retried")
        if attempts.made >= r.attempts:
            return Retry(None, "attempts")
        if attempts.backoff is None:
            attempts.backoff = Backoff(r.base_delay, r.max_delay, r.jitter, self._retry_rng)
        wait = max(attempts.backoff.next(), route.call.retry_after)
        if now + wait > attempts.arrived + r.deadline:
            return Retry(None, "deadline")
        if self.budget is None or not self.budget.allows(now):
            return Retry(None, "budget")
        attempts.reserved, route.reserved = route.reserved, 0
        return Retry(wait, "retry")

    @property
    def bucket(self) -> TokenBucket:
        """The admission's requests bucket (read through the admission, which may be shared
        by several routers and replace its buckets on a reset)."""
        return self.admission.requests

    @property
    def tokens(self) -> TokenBucket | None:
        """The admission's tokens bucket (``limiter.tpm`` per minute), or ``None`` when that
        limit is off."""
        return self.admission.tokens

    def _token_limits(self) -> None:
        """Keep what the tokens limits allow at hand, read on every request: whether any counts
        tokens (:attr:`counts_tokens`: the shells skip :meth:`reservation` otherwise), the most tokens a request may reserve (the gateway's limit, and the largest
        provider limit of those with a weight, none counting as unbounded) and the least
        that every provider takes (beyond it, :meth:`route` skips the providers too small)."""
        gateway = self.tokens
        own = [u.host.tokens for u in self.upstreams]
        limits = [b.limit if b is not None else math.inf for b, u in zip(own, self.upstreams) if u.weight > 0]
        self.counts_tokens = gateway is not None or any(b is not None for b in own)
        self._most_tokens = min(max(limits), math.inf if gateway is None else gateway.limit)
        self._every_provider_takes = min(b.limit if b is not None else math.inf for b in own)

    def reservation(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """The tokens a request reserves: its prompt's and its ``max_tokens``, or
        ``limiter.default_max_tokens`` when it gives none; 0 without a tokens limit (the
        gateway's or a provider's)."""
        if not self.counts_tokens:
            return 0
        return prompt_tokens + (self.scenario.limiter.default_max_tokens if max_tokens is None else max_tokens)

    def admit(self, now: float, tokens: int = 0) -> Rejected | None:
        """Admit a request arriving at ``now`` that reserves ``tokens`` (its
        :meth:`reservation`): ``None`` when it is admitted, having taken a request token and,
        with a tokens limit, ``tokens`` tokens, both or neither. Otherwise what to answer:
        400 if ``tokens`` exceed the gateway's tokens limit or every provider's own (of those
        with a weight: nothing is taken or checked, :meth:`oversized`), else 429 with the wait
        until the bucket that is short has what the request needs (the later one when both
        are). For an admission that answers at once (:class:`~gwlab.admission.LocalAdmission`);
        a shell whose admission is awaited asks :meth:`oversized` itself, then awaits it."""
        if tokens > self._most_tokens:
            return Rejected(0, CONTEXT_EXCEEDS_LIMIT)
        return self._take(now, tokens)

    def oversized(self, tokens: int) -> Rejected | None:
        """The 400 of a request that reserves ``tokens``, more than the gateway's tokens limit
        or every provider's own can ever take; ``None`` for any other."""
        return Rejected(0, CONTEXT_EXCEEDS_LIMIT) if tokens > self._most_tokens else None

    def refund(self, route: Route, now: float, used: int) -> None:
        """The request of ``route`` used ``used`` tokens in all (its prompt's and the output
        its answer carried; the prompt's alone for an answer with no output): give back to
        the gateway's tokens bucket and to its provider's what it reserved from each and did
        not use, never above a bucket's capacity, or take what it used beyond that as debt.
        Nothing for a bucket it reserved nothing from, or whose limit is off by now."""
        if route.reserved:
            _settle(self.tokens, now, route.reserved, used)
            route.reserved = 0  # settled once
        if route.provider_reserved:
            _settle(route.upstream.host.tokens, now, route.provider_reserved, used)
            route.provider_reserved = 0

    def route(self, now: float, streaming: bool = False, max_tokens: int | None = None,
              tokens: int = 0, attempts: Attempts | None = None, retry: bool = False,
              unreserved: bool = False) -> Route | Rejected:
        """Decide the provider call of a request admitted at ``now``, which streams or not,
        caps its output at ``max_tokens`` (``None``: no cap) and reserves ``tokens`` (its
        :meth:`reservation`, as admitted). Providers whose own tokens limit is below
        ``tokens`` are never chosen (:meth:`admit` refuses a request no provider takes).
        With ``attempts`` (the gateway retries: :meth:`attempts`), a retry goes to a
        provider not tried yet by the request when one is eligible (with a weight), else to
        any eligible one. A retry, the gateway's or a client's (``retry``: a user request's
        attempt after its first), draws its pick and its call from streams of its own, so
        that first attempts draw as they would without retries (common random numbers
        across retry policies; DESIGN, "Retries and fallbacks"). ``unreserved``: the
        gateway's tokens bucket took nothing for the request (its admission failed open), so
        nothing goes back to it.

        When no provider is eligible, ``gateway.fallback`` decides: ``"soonest"`` and
        ``"panic"`` give a route (:attr:`Route.fallback`, :attr:`Route.panic`); ``"reject"``
        gives a :class:`Rejected` (503, :data:`ALL_COOLING_DOWN`) with the wait until the
        soonest cooldown ends, and the tokens reserved go back (the request token stays
        taken: the limiter admitted the request)."""
        # A retry (the gateway's, or a client's: ``retry``) draws apart from first attempts.
        retrying = retry or (attempts is not None and attempts.made > 0)
        rng = self._retry_pick_rng if retrying else self._rng
        if not self._open:
            eligible = self.upstreams
        elif self._eligible_from <= now < self._eligible_until:
            eligible = self._eligible
        else:
            eligible = self._find_eligible(now)
        if tokens > self._every_provider_takes:
            eligible = [u for u in eligible if u.host.fits(tokens)]
        chosen = None
        if attempts is not None and attempts.tried:
            untried = [u for u in eligible if u not in attempts.tried]
            chosen = self.balancer.pick(untried, rng) if untried else None
        if chosen is None:
            chosen = self.balancer.pick(eligible, rng) if eligible else None
        # The tokens the request holds from the gateway's bucket: taken with its first attempt,
        # held from there (Attempts.reserved) while it is retried.
        held = (attempts.reserved if attempts is not None and attempts.made else
                tokens if tokens and not unreserved and self.tokens is not None else 0)
        if chosen is not None:
            upstream: Upstream = chosen  # type: ignore[assignment]
            breaker = upstream.breaker  # acquire(now), written out for a closed breaker: nearly every call
            if breaker.closed:
                permit = breaker.permit
            else:  # a probe: the breaker's answers change
                permit = breaker.acquire(now)
                self._eligible_until = -math.inf
            fallback = panic = False
        else:  # no provider is eligible
            policy = self.scenario.gateway.fallback
            if policy == "reject":
                if attempts is not None:
                    attempts.reserved = 0  # given back by _cooling_down
                return self._cooling_down(now, tokens, held)
            fallback, panic = policy == "soonest", policy == "panic"
            if panic:  # every provider with a weight (that can take the request): at least one can
                upstream = self.balancer.pick([u for u in self.upstreams if u.host.fits(tokens)], rng)
                permit = UNCOUNTED
            else:
                upstream = self.soonest_reopening(tokens)
                permit = upstream.breaker.acquire(now, True)
                self._eligible_until = -math.inf
        upstream.in_flight += 1
        host = upstream.host
        provider = host.retry_provider if retrying else host.provider
        call = provider.call(self._timeout, streaming, max_tokens, self._idle_timeout)
        route = Route(upstream, permit, fallback, call, streaming, panic, held)
        if attempts is not None:
            attempts.made += 1
            attempts.tried.append(upstream)
        if host.limited:
            refused = host.enter(route, now, now + call.duration, tokens)
            if refused is not None:
                route.call = Call(0.0, _RATE_LIMITED, 0.0, retry_after=refused)
            elif host.waiting and host.waiting[-1] is route:
                route.waiting = True
                route.routed = now
        return route

    def _find_eligible(self, now: float) -> list[Upstream]:
        """The providers whose breakers let a call through at ``now``, kept with how long
        that holds (:attr:`_eligible`)."""
        self._eligible = [u for u in self.upstreams if u.breaker.available(now)]
        self._eligible_from = now
        self._eligible_until = min((u.breaker.reopens_at for u in self.upstreams if u.breaker.state(now) is State.OPEN),
                                   default=math.inf)
        return self._eligible

    def _cooling_down(self, now: float, tokens: int, held: int) -> Rejected:
        """The 503 of ``gateway.fallback = "reject"``, with the wait until the soonest
        provider that could take the request reopens. A half-open breaker whose probes are
        all out has reopened already, and when its probes end is not known: it counts as
        ``breaker.base_delay`` away, the shortest cooldown. At least
        :data:`~gwlab.upstream.MIN_RETRY_AFTER`. The ``held`` tokens reserved from the
        gateway's bucket go back."""
        if held and self.tokens is not None:
            self.tokens.refund(now, held)
        base = self.scenario.breaker.base_delay
        wait = min(u.breaker.cooldown_left(now) or base for u in self.upstreams if u.weight > 0 and u.host.fits(tokens))
        # Whole microseconds, rounded up; a float's error (1.5 - 1.2 is 0.30000000000000004)
        # is rounded away first, at a thousandth of a microsecond.
        return Rejected(math.ceil(round(max(MIN_RETRY_AFTER, wait) * 1e6, 3)), ALL_COOLING_DOWN)

    def subscribe(self, listener: Listener) -> None:
        """Have ``listener`` hear every breaker transition from now on, after those
        subscribed before it."""
        self._listeners.append(listener)

    def _announce(self, event: Transition) -> None:
        """The one listener of every breaker: keep :attr:`_open` and drop the eligible
        providers found (a flip between HEALTHY and FAILING changes neither: it is CLOSED
        either way), then tell the subscribers."""
        was_closed, closed = event.source in CLOSED, event.target in CLOSED
        if not (was_closed and closed):
            self._open += was_closed - closed
            self._eligible_until = -math.inf
        for listener in self._listeners:
            listener(event)

    def soonest_reopening(self, tokens: int = 0) -> Upstream:
        """The provider (with weight > 0, and whose own tokens limit could take ``tokens``)
        whose cooldown ends first; ties go to the one listed first. Used when no provider
        is eligible: all are cooling down."""
        return min((u for u in self.upstreams if u.weight > 0 and u.host.fits(tokens)), key=lambda u: u.breaker.reopens_at)

    def complete(self, route: Route, now: float, outcome: Outcome) -> int:
        """The provider call of ``route`` has ended at ``now`` with ``outcome``, as the shell
        observed it: tell its breaker. Returns the status to answer with. Raises
        :class:`RouteError` if ``route`` was already completed or abandoned."""
        if not route.pending:  # _close(route), written out: this runs for every request
            raise RouteError(f"a route to {route.upstream.name} was completed or abandoned twice")
        route.pending = False
        upstream = route.upstream
        upstream.in_flight -= 1
        permit = route.permit
        if permit.probe:  # its slot comes back: the breaker's answers change
            self._eligible_until = -math.inf
        breaker = upstream.breaker
        if outcome is _RATE_LIMITED and not self.scenario.breaker.count_rate_limited:
            breaker.release(permit)
        elif not (outcome.ok and permit is breaker.permit and breaker.healthy):  # else it would change nothing
            breaker.record(permit, now, outcome.ok)
        host = upstream.host
        if host.busy or route.waiting:  # _vacate(route, now), written out: a provider with a capacity is busy
            route.waiting = False
            started = host.vacate(route)
            if started:
                self._begin(started, now)
        return outcome.status

    def give_up(self, route: Route, now: float) -> int:
        """The gateway's timeout ran out at ``now`` while ``route`` waited for a slot: it
        leaves the queue and ends in a TIMEOUT (504, a failure for the breaker)."""
        return self.complete(route, now, Outcome.TIMEOUT)

    def abandon(self, route: Route, now: float) -> None:
        """The call of ``route`` was cut off at ``now`` before it ended (the client went
        away, the server is stopping): it counts for neither outcome, and a probe slot and
        its provider's slot or place in the queue are freed."""
        self._close(route)
        upstream = route.upstream
        if route.permit.probe:
            self._eligible_until = -math.inf
        upstream.breaker.release(route.permit)
        if upstream.host.busy or route.waiting:
            self._vacate(route, now)

    def _vacate(self, route: Route, now: float) -> None:
        """``route`` leaves its provider at ``now``: the routes waiting for the slot it frees start."""
        route.waiting = False
        started = route.upstream.host.vacate(route)
        if started:
            self._begin(started, now)

    def _begin(self, routes: list[Route], now: float) -> None:
        """Start ``routes``, which waited for a slot, at ``now``; their shells hear it."""
        timeout = self._timeout
        for route in routes:
            route.waiting = False
            route.call = route.call.waited(now - route.routed, timeout, route.streaming)
            route.upstream.host.start(route, now + route.call.duration)
            self.on_start(route, now)

    def snapshot(self, now: float) -> Snapshot:
        """The state at ``now``, after :meth:`settle` (a cooldown that has ended reads as
        HALF_OPEN and has been announced)."""
        self.settle(now)
        return Snapshot(
            now, self.bucket.tokens(now), self.bucket.burst, self.bucket.rate,
            sum(u.in_flight for u in self.upstreams),
            {u.name: ProviderState(u.breaker.state(now), u.breaker.cooldown_left(now), u.weight, u.in_flight,
                                   u.breaker.trips, u.host.busy, len(u.host.waiting))
             for u in self.upstreams},
            None if self.tokens is None else self.tokens.level(now),
        )

    @staticmethod
    def _close(route: Route) -> None:
        if not route.pending:
            raise RouteError(f"a route to {route.upstream.name} was completed or abandoned twice")
        route.pending = False
        route.upstream.in_flight -= 1

    def settle(self, now: float) -> None:
        """Bring time-driven state up to ``now`` (cooldowns that ended announce HALF_OPEN)."""
        for u in self.upstreams:
            u.breaker.settle(now)

    def configure(self, scenario: Scenario, now: float) -> None:
        """Switch to ``scenario`` (same providers, validated by :func:`gwlab.config.merge`).

        The buckets settle at the old rates first (a tokens limit switched on starts full,
        and switched off forgets its bucket); breakers keep their state and running
        cooldowns; the balancer is replaced only when its policy changes."""
        if [p.name for p in scenario.providers] != [u.name for u in self.upstreams]:
            raise ValueError("configure() cannot add, remove or reorder providers")
        self.admission.configure(scenario.limiter, now)
        if scenario.gateway.balancer != self.scenario.gateway.balancer:
            self.balancer = balancers.create(scenario.gateway.balancer)
        if scenario.retry != self.scenario.retry:  # a fresh budget, for the new parameters
            self.budget = self._budget(scenario)
        self.scenario = scenario
        self._timeout = scenario.gateway.timeout
        self._idle_timeout = scenario.gateway.stream_idle_timeout
        self._eligible_until = -math.inf
        for upstream, config in zip(self.upstreams, scenario.providers):
            upstream.breaker.configure(scenario.breaker)
            self._begin(upstream.configure(config, now), now)
        self._token_limits()

    def reset(self, now: float) -> None:
        """Full buckets (the admission's: shared ones too) and healthy breakers with no
        history; calls in flight finish without effect on the breakers (their refunds go to
        the new tokens bucket, which is full already)."""
        self.admission.reset(self.scenario.limiter, now)
        self._token_limits()
        for u in self.upstreams:
            u.breaker.reset(now)
        self._eligible_until = -math.inf
        self.balancer = balancers.create(self.scenario.gateway.balancer)
        self.budget = self._budget(self.scenario)


def make_hosts(scenario: Scenario, seed: int, now: float = 0.0) -> tuple[Host, ...]:
    """The providers of ``scenario`` as hosts (:class:`~gwlab.upstream.Host`), in its order,
    drawing from the named streams of ``seed``: what :class:`Router` makes when it is given
    none, and what a simulation's replicas share."""
    return tuple(Host(make_provider(p, seed), make_provider(p, seed, "retry/"), now) for p in scenario.providers)


def _settle(bucket: TokenBucket | None, now: float, reserved: int, used: int) -> None:
    """Settle a reservation of ``reserved`` tokens from ``bucket`` (``None``: its limit is
    off now) to the ``used`` tokens: give back the unused part, or take the excess as debt."""
    if bucket is None:
        return
    if used < reserved:
        bucket.refund(now, reserved - used)
    elif used > reserved:
        bucket.charge(now, used - reserved)


def _no_shell(route: Route, now: float) -> None:
    raise RuntimeError("a call waited for a provider's slot, but no shell listens: set Router.on_start")
