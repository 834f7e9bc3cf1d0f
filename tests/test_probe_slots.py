"""Probe slots and liveness: every slot a breaker hands out comes back exactly once, on every
path, and a breaker whose provider works always returns to rotation.

Random sequences of acquire / record / release / configure / reset / time steps drive a
:class:`CircuitBreaker` and a :class:`Router` (hypothesis' stateful testing); invariants are
checked after every step.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gwlab import config
from gwlab.breaker import CLOSED, CircuitBreaker, Permit, PermitError, State, Transition
from gwlab.config import BreakerConfig
from gwlab.router import Route, RouteError, Router
from tests.support import handle

breaker_configs = st.builds(
    BreakerConfig,
    enabled=st.booleans(),
    failure_threshold=st.integers(1, 4),
    base_delay=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    max_cooldown=st.sampled_from([2.0, 4.0, 8.0]),
    half_open_max_calls=st.integers(1, 3),
)
steps = st.sampled_from([0.0, 0.125, 0.5, 1.0, 3.0, 10.0])


def test_a_probe_in_flight_while_breakers_are_switched_off_comes_back():
    # The example: the probe's slot was stranded and the provider left rotation.
    cfg = BreakerConfig()
    b = CircuitBreaker("b", cfg)
    for _ in range(3):
        b.record(b.acquire(0.0), 0.0, ok=False)  # OPEN until t = 1
    probe = b.acquire(1.5)  # HALF_OPEN, the only slot taken
    b.configure(dataclasses.replace(cfg, enabled=False))
    assert b.record(probe, 2.0, ok=True) is False  # switched off: it decides nothing...
    b.configure(cfg)
    assert (b.state(3600.0), b.available(3600.0), b.probes) == (State.HALF_OPEN, True, 0)  # ...but its slot is back
    assert b.record(b.acquire(3600.0), 3600.0, ok=True)
    assert b.state(3600.0) is State.HEALTHY


@pytest.mark.parametrize("give_back", ["record", "release"])
def test_a_probe_permit_comes_back_once(give_back):
    b = CircuitBreaker("b", BreakerConfig(failure_threshold=1))
    b.record(b.acquire(0.0), 0.0, ok=False)
    probe = b.acquire(1.0)
    b.release(probe) if give_back == "release" else b.record(probe, 1.0, ok=False)
    with pytest.raises(PermitError, match="recorded or released twice"):
        b.record(probe, 1.0, ok=True)
    with pytest.raises(PermitError, match="recorded or released twice"):
        b.release(probe)


def test_acquire_without_a_free_slot_is_refused_unless_forced():
    b = CircuitBreaker("b", BreakerConfig(failure_threshold=1))
    b.record(b.acquire(0.0), 0.0, ok=False)
    with pytest.raises(PermitError, match="without a free slot"):
        b.acquire(0.5)  # OPEN
    b.acquire(1.0)
    with pytest.raises(PermitError, match="without a free slot"):
        b.acquire(1.0)  # HALF_OPEN, its one slot taken
    assert b.acquire(1.0, force=True).probe and b.probes == 2


@pytest.mark.parametrize("second", ["complete", "abandon"])
@pytest.mark.parametrize("first", ["complete", "abandon"])
def test_a_route_is_completed_or_abandoned_once(first, second):
    router = Router(config.Scenario(), seed=1)
    route = handle(router, 0.0)
    assert isinstance(route, Route)
    finish = {"complete": lambda: router.complete(route, 1.0, route.call.outcome), "abandon": lambda: router.abandon(route, 1.0)}
    finish[first]()
    with pytest.raises(RouteError, match="completed or abandoned twice"):
        finish[second]()
    assert sum(u.in_flight for u in router.upstreams) == 0


class BreakerMachine(RuleBasedStateMachine):
    """One breaker and the permits its caller holds."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[Transition] = []
        self.config = BreakerConfig()
        self.breaker = CircuitBreaker("p", self.config, [self.heard.append])
        self.now = 0.0
        self.out: list[Permit] = []
        self.longest_cooldown = self.config.max_cooldown

    @rule(dt=steps)
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def acquire(self) -> None:
        if self.breaker.available(self.now):
            permit = self.breaker.acquire(self.now)
            if permit.probe:
                assert self.breaker.probes <= self.breaker.config.half_open_max_calls
            self.out.append(permit)

    @rule()
    def force(self) -> None:
        self.out.append(self.breaker.acquire(self.now, force=True))

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0), ok=st.booleans())
    def record(self, index: int, ok: bool) -> None:
        self.breaker.record(self.out.pop(index % len(self.out)), self.now, ok)

    @precondition(lambda self: self.out)
    @rule(index=st.integers(0))
    def release(self, index: int) -> None:
        self.breaker.release(self.out.pop(index % len(self.out)))

    @rule(cfg=breaker_configs)
    def configure(self, cfg: BreakerConfig) -> None:
        self.config = cfg
        self.longest_cooldown = max(self.longest_cooldown, cfg.max_cooldown)
        self.breaker.configure(cfg)

    @rule()
    def reset(self) -> None:
        self.breaker.reset(self.now)

    @invariant()
    def no_slot_is_leaked(self) -> None:
        b = self.breaker
        assert b.probes == sum(p.probe and p.generation == b.generation for p in self.out)

    @invariant()
    def state_is_what_the_transitions_announced(self) -> None:
        self.breaker.settle(self.now)
        announced = self.heard[-1].target if self.heard else State.HEALTHY
        assert self.breaker.state(self.now) is announced

    @invariant()
    def a_working_provider_is_back_within_the_longest_cooldown(self) -> None:
        b, out = copy.deepcopy((self.breaker, self.out))
        b.listeners = []
        for permit in out:  # the calls in flight end, and the provider works
            b.record(permit, self.now, ok=True)
        later = self.now + self.longest_cooldown
        assert b.available(later)  # switched off, every breaker is
        if b.config.enabled:
            b.record(b.acquire(later), later, ok=True)
            assert b.state(later) is State.HEALTHY


class RouterMachine(RuleBasedStateMachine):
    """A router of three providers whose outcomes the machine decides."""

    def __init__(self) -> None:
        super().__init__()
        self.scenario = config.from_dict({
            "providers": {name: {"latency": 0.1, "error_rate": 0.5} for name in ("a", "b", "c")},
            "breaker": {"failure_threshold": 1},
        })
        self.router = Router(self.scenario, seed=3)
        self.now = 0.0
        self.routes: list[Route] = []
        self.longest_cooldown = self.scenario.breaker.max_cooldown

    @rule(dt=steps)
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def handle(self) -> None:
        # A set of eligible providers whose weights sum to 0 counts as none.
        eligible = {u.name for u in self.router.upstreams if u.breaker.available(self.now) and u.weight > 0}
        route = handle(self.router, self.now)
        if isinstance(route, Route):
            assert route.fallback == (not eligible)
            if not route.fallback:
                assert route.provider in eligible
                if route.permit.probe:
                    assert route.upstream.breaker.probes <= route.upstream.breaker.config.half_open_max_calls
            self.routes.append(route)

    @precondition(lambda self: self.routes)
    @rule(index=st.integers(0))
    def complete(self, index: int) -> None:
        route = self.routes.pop(index % len(self.routes))
        self.router.complete(route, self.now, route.call.outcome)

    @precondition(lambda self: self.routes)
    @rule(index=st.integers(0))
    def abandon(self, index: int) -> None:
        self.router.abandon(self.routes.pop(index % len(self.routes)), self.now)

    @rule(cfg=breaker_configs, weights=st.tuples(*[st.sampled_from([0.0, 1.0, 5.0])] * 3))
    def configure(self, cfg: BreakerConfig, weights: tuple[float, float, float]) -> None:
        if not any(weights):
            weights = (1.0, *weights[1:])
        providers = tuple(dataclasses.replace(p, weight=w) for p, w in zip(self.scenario.providers, weights))
        self.scenario = dataclasses.replace(self.scenario, breaker=cfg, providers=providers)
        self.longest_cooldown = max(self.longest_cooldown, cfg.max_cooldown)
        self.router.configure(self.scenario, self.now)

    @rule()
    def reset(self) -> None:
        self.router.reset(self.now)

    @invariant()
    def in_flight_and_slots_match_the_routes_out(self) -> None:
        for u in self.router.upstreams:
            mine = [r for r in self.routes if r.upstream is u]
            assert u.in_flight == len(mine)
            assert u.breaker.probes == sum(r.permit.probe and r.permit.generation == u.breaker.generation for r in mine)

    @invariant()
    def the_open_count_is_the_breakers_not_closed(self) -> None:
        self.router.settle(self.now)
        assert self.router._open == sum(u.breaker.state(self.now) not in CLOSED for u in self.router.upstreams)

    @invariant()
    def working_providers_are_back_within_the_longest_cooldown(self) -> None:
        # A copy of the breakers and the permits out alone, without the breakers' listeners
        # (the router): copying the router would copy its random streams too, thousands of
        # numbers each.
        live = [u.breaker for u in self.router.upstreams]
        breakers, permits = copy.deepcopy((live, [r.permit for r in self.routes]), {id(b.listeners): [] for b in live})
        for route, permit in zip(self.routes, permits):  # the calls in flight end, and the providers work
            breakers[live.index(route.upstream.breaker)].record(permit, self.now, ok=True)
        later = self.now + self.longest_cooldown
        for b in breakers:
            assert b.available(later)  # switched off, every breaker is
            if b.config.enabled:
                b.record(b.acquire(later), later, ok=True)
                assert b.state(later) is State.HEALTHY


TestBreakerSlots = BreakerMachine.TestCase
TestBreakerSlots.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestRouterSlots = RouterMachine.TestCase
TestRouterSlots.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
