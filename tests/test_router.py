"""Router: the request flow (admit, pick, breaker, fallback, record) with exact numbers.

Providers with ``error_rate`` 0 or 1 and fixed latencies make every outcome certain; picks
are checked against the router's own pick stream replayed by hand.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from gwlab import config
from gwlab.balancer import PowerOfTwo, RoundRobin, WeightedRandom
from gwlab.breaker import State, Transition
from gwlab.providers import Call, Outcome
from gwlab.router import Attempts, Rejected, Route, Router
from gwlab.upstream import Upstream
from gwlab.streams import stream
from tests.support import handle

SEED = 7


def scenario(providers: dict[str, dict[str, Any]] | None = None, **sections: dict[str, Any]) -> config.Scenario:
    data: dict[str, Any] = dict(sections)
    if providers is not None:
        data["providers"] = providers
    return config.from_dict(data)


def good(weight: float = 1.0, latency: float = 0.125) -> dict[str, Any]:
    return {"weight": weight, "latency": latency, "error_rate": 0.0}


def bad(weight: float = 1.0, latency: float = 0.125) -> dict[str, Any]:
    return {"weight": weight, "latency": latency, "error_rate": 1.0}


def upstream(router: Router, name: str) -> Upstream:
    return next(u for u in router.upstreams if u.name == name)


def trip(router: Router, name: str, now: float) -> None:
    """Open ``name``'s breaker at ``now`` by recording threshold failures on it directly."""
    breaker = upstream(router, name).breaker
    for _ in range(breaker.config.failure_threshold):
        breaker.record(breaker.acquire(now), now, ok=False)
    assert breaker.state(now) is State.OPEN


def weighted(names_weights: list[tuple[str, float]], u: float) -> str:
    point = u * sum(w for _, w in names_weights)
    for (name, _), upper in zip(names_weights, itertools.accumulate(w for _, w in names_weights)):
        if point < upper:
            return name
    raise AssertionError("u must be < 1")


def test_admitted_request_routes_and_completes():
    router = Router(scenario({"a": good(latency=0.25)}), SEED)
    route = handle(router, 0.0)
    assert isinstance(route, Route)
    assert route.provider == "a"
    assert route.fallback is False
    assert route.permit.probe is False
    assert route.call == Call(0.25, Outcome.SUCCESS, 0.25)
    assert route.status == 200
    assert router.complete(route, 0.25, route.call.outcome) == 200


def test_a_first_attempt_goes_where_it_would_with_its_attempts_which_can_be_made_after_it():
    data = {"a": good(), "b": good(2.0), "c": bad()}
    eager, lazy = Router(scenario(data, retry={"attempts": 3}), SEED), Router(scenario(data, retry={"attempts": 3}), SEED)
    for i in range(50):
        now = i * 0.01
        attempts = eager.attempts(now)
        first = eager.route(now, attempts=attempts)
        lazy.budget.request(now)
        alone = lazy.route(now)
        assert (alone.upstream.name, alone.call) == (first.upstream.name, first.call)
        made = Attempts.after_first(now, alone.upstream)
        assert (made.arrived, made.made, [u.name for u in made.tried], made.backoff, made.reserved) == (
            attempts.arrived, attempts.made, [u.name for u in attempts.tried], attempts.backoff, attempts.reserved)
    assert lazy.budget.counts(1.0) == eager.budget.counts(1.0) == (50, 0)


def test_rejected_carries_exact_retry_after():
    router = Router(scenario(limiter={"rate": 0.5, "burst": 2}), SEED)
    assert isinstance(handle(router, 0.0), Route)
    assert isinstance(handle(router, 0.0), Route)
    assert handle(router, 0.0) == Rejected(2_000_000)
    assert handle(router, 0.5) == Rejected(1_500_000)  # 0.25 tokens; 0.75 more at 0.5/s
    assert isinstance(handle(router, 2.0), Route)
    assert handle(router, 2.0) == Rejected(2_000_000)


def test_rejected_requests_use_no_pick_and_no_provider():
    router = Router(scenario(limiter={"rate": 1, "burst": 1}, breaker={"enabled": False}), SEED)
    draws = stream(SEED, "pick")
    seed_weights = [(n, w) for n, w, _, _ in config.SEED_PROVIDERS]
    for second in range(200):
        route = handle(router, float(second))
        assert route.provider == weighted(seed_weights, draws.random())
        assert [handle(router, float(second)) for _ in range(3)] == [Rejected(1_000_000)] * 3
    assert sum(u.in_flight for u in router.upstreams) == 200


def test_weighted_picks_follow_the_pick_stream():
    router = Router(scenario(breaker={"enabled": False}), SEED)
    draws = stream(SEED, "pick")
    seed_weights = [(n, w) for n, w, _, _ in config.SEED_PROVIDERS]
    for i in range(500):
        route = handle(router, i / 1000)
        assert route.provider == weighted(seed_weights, draws.random())
        assert route.fallback is False


def test_open_provider_is_excluded_and_weights_renormalised():
    providers = {"p1": good(70), "p2": good(20), "p3": good(10)}
    router = Router(scenario(providers, breaker={"max_cooldown": 1000, "base_delay": 1000}), SEED)
    trip(router, "p1", 0.0)
    draws = stream(SEED, "pick")
    for i in range(300):
        route = handle(router, i / 1000)
        assert route.provider == weighted([("p2", 20), ("p3", 10)], draws.random())
        router.complete(route, i / 1000, route.call.outcome)


def test_fallback_goes_to_soonest_reopening_and_counts_as_probe():
    router = Router(scenario({"a": bad(), "b": bad(), "c": bad()}), SEED)
    trip(router, "b", 0.0)  # reopens at 1.0
    trip(router, "a", 0.25)  # reopens at 1.25
    trip(router, "c", 0.5)  # reopens at 1.5
    route = handle(router, 0.75)
    assert route.provider == "b"
    assert route.fallback is True
    assert route.permit.probe is True
    assert router.complete(route, 0.875, route.call.outcome) == 502
    b = upstream(router, "b").breaker
    assert b.state(0.875) is State.OPEN
    assert b.cooldown == 2.0  # the second trip's cooldown
    assert b.reopens_at == 2.875
    # Now a reopens first.
    assert handle(router, 0.875).provider == "a"


def test_fallback_tie_goes_to_configuration_order():
    router = Router(scenario({"a": bad(), "b": bad(), "c": bad()}), SEED)
    for name in ("c", "b", "a"):
        trip(router, name, 0.0)
    routes = [handle(router, 0.5) for _ in range(3)]
    assert [r.provider for r in routes] == ["a", "a", "a"]
    assert all(r.fallback and r.permit.probe for r in routes)


def test_successful_fallback_closes_the_breaker():
    router = Router(scenario({"a": good(), "b": good()}), SEED)
    trip(router, "a", 0.0)
    trip(router, "b", 0.0)
    route = handle(router, 0.5)
    assert route.fallback and route.provider == "a"
    assert router.complete(route, 0.625, route.call.outcome) == 200
    a = upstream(router, "a").breaker
    assert a.state(0.625) is State.HEALTHY
    assert a.trips == 0
    assert handle(router, 0.625).fallback is False


def test_picks_only_providers_whose_breakers_let_calls_through_at_that_moment():
    """The router skips asking the breakers while it knows all of them are closed (it counts
    their transitions), and while one is not it keeps their answers until a cooldown ends, a
    transition, or a probe taken or given back. Through thousands of openings, probes,
    re-openings and recoveries, each pick is the balancer's over exactly the providers whose
    breakers let the call through at that moment (drawn with a twin of the router's stream),
    and the fallback is used only when no breaker does."""
    flaky = {"error_rate": 0.6, "latency": 0.05}
    providers = {"a": flaky, "b": {**flaky, "weight": 2.0}, "c": {**flaky, "error_rate": 0.2}}
    router = Router(scenario(providers, breaker={"failure_threshold": 2, "base_delay": 0.2, "max_cooldown": 1.0}),
                    SEED)
    heard: list[Transition] = []
    router.subscribe(heard.append)
    twin = stream(SEED, "pick")
    now = 0.0
    for _ in range(20_000):
        available = [u for u in router.upstreams if u.breaker.available(now)]
        route = handle(router, now)
        assert isinstance(route, Route)
        if route.fallback:
            assert not available
        else:
            assert route.provider == WeightedRandom().pick(available, twin).name
        router.complete(route, now + route.call.duration, route.call.outcome)
        now += 0.01
    kinds = {(t.source, t.target) for t in heard}
    assert {(State.FAILING, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.OPEN),
            (State.HALF_OPEN, State.HEALTHY), (State.OPEN, State.OPEN), (State.OPEN, State.HEALTHY)} <= kinds


def test_a_probe_given_back_without_an_outcome_lets_the_next_requests_probe_again():
    """A half-open provider whose one probe slot is out is skipped; once that probe is
    abandoned (no outcome, so no transition), the next requests may go to it again."""
    router = Router(scenario({"a": good(), "b": good()}, breaker={"half_open_max_calls": 1}), SEED)
    trip(router, "a", 0.0)
    now = upstream(router, "a").breaker.reopens_at
    probe = handle(router, now)
    while probe.provider != "a":
        probe = handle(router, now)
    assert not probe.fallback
    assert {handle(router, now).provider for _ in range(20)} == {"b"}  # its probe slot is out
    router.abandon(probe, now)
    assert "a" in {handle(router, now).provider for _ in range(20)}


def test_eligible_set_of_zero_weight_counts_as_none_available():
    router = Router(scenario({"idle": good(weight=0), "main": good(weight=1)}), SEED)
    assert upstream(router, "idle").breaker.available(0.0)
    trip(router, "main", 0.0)
    route = handle(router, 0.5)
    assert route.provider == "main"
    assert route.fallback is True
    assert route.permit.probe is True


def test_zero_weight_provider_is_never_picked():
    router = Router(scenario({"idle": good(weight=0), "main": good(weight=1)}), SEED)
    assert {handle(router, i / 1000).provider for i in range(200)} == {"main"}


def test_half_open_probe_routes_and_blocks_further_calls():
    router = Router(scenario({"a": good(), "b": good(weight=1e-9)}), SEED)
    trip(router, "a", 0.0)
    probe = handle(router, 1.0)  # a's cooldown has just ended
    assert probe.provider == "a" and probe.permit.probe and not probe.fallback
    # Its only probe slot is taken, so b (tiny weight) gets everything meanwhile.
    assert {handle(router, 1.0 + i / 1000).provider for i in range(50)} == {"b"}
    assert router.complete(probe, 1.125, probe.call.outcome) == 200
    assert upstream(router, "a").breaker.state(1.125) is State.HEALTHY


def test_fallback_prefers_a_half_open_provider_with_busy_probe_slot():
    # a's cooldown has ended (its probe slot is taken), b still cools down: a ended soonest.
    router = Router(scenario({"a": good(), "b": good()}), SEED)
    trip(router, "a", 0.0)
    trip(router, "b", 0.5)
    probe = handle(router, 1.0)
    assert (probe.provider, probe.fallback) == ("a", False)
    forced = handle(router, 1.25)
    assert (forced.provider, forced.fallback, forced.permit.probe) == ("a", True, True)
    assert upstream(router, "a").breaker.probes == 2


def test_in_flight_counts_up_and_down():
    router = Router(scenario({"a": good()}), SEED)
    a = upstream(router, "a")
    routes = [handle(router, 0.0) for _ in range(5)]
    assert a.in_flight == 5
    router.complete(routes[0], 0.125, routes[0].call.outcome)
    router.abandon(routes[1], 0.0)
    assert a.in_flight == 3
    for route in routes[2:]:
        router.complete(route, 0.125, route.call.outcome)
    assert a.in_flight == 0


def test_power_of_two_sees_router_in_flight():
    router = Router(scenario({"a": good(), "b": good()}, gateway={"balancer": "power_of_two"}), SEED)
    held = [handle(router, 0.0) for _ in range(40)]
    counts = {"a": upstream(router, "a").in_flight, "b": upstream(router, "b").in_flight}
    # Two choices are both drawn every time, so the one with fewer in flight always wins.
    assert counts == {"a": 20, "b": 20}
    for route in held:
        router.complete(route, 0.125, route.call.outcome)


def test_abandon_frees_a_probe_slot_and_learns_nothing():
    router = Router(scenario({"a": bad()}), SEED)
    trip(router, "a", 0.0)
    a = upstream(router, "a").breaker
    probe = handle(router, 1.0)
    assert probe.permit.probe
    assert not a.available(1.0)
    router.abandon(probe, 1.0)
    assert a.available(1.0)
    assert a.state(1.0) is State.HALF_OPEN
    assert a.trips == 1


@pytest.mark.parametrize(
    ("provider", "outcome", "duration", "status"),
    [
        (good(latency=0.5), Outcome.SUCCESS, 0.5, 200),
        (bad(latency=0.5), Outcome.ERROR, 0.5, 502),
        (good(latency=20.0), Outcome.TIMEOUT, 10.0, 504),
        ({"latency": 0.5, "outage": "error"}, Outcome.ERROR, 0.5, 502),
        ({"latency": 0.5, "outage": "hang"}, Outcome.TIMEOUT, 10.0, 504),
    ],
)
def test_status_from_outcome(provider, outcome, duration, status):
    router = Router(scenario({"a": provider}), SEED)
    route = handle(router, 0.0)
    assert (route.call.duration, route.call.outcome) == (duration, outcome)
    assert router.complete(route, duration, route.call.outcome) == status


def test_timeouts_count_as_failures():
    heard: list[Transition] = []
    router = Router(scenario({"a": good(latency=20.0)}), SEED)
    router.subscribe(heard.append)
    for _ in range(3):
        route = router.route(0.0)
        router.complete(route, 10.0, route.call.outcome)
    assert heard[-1] == Transition(10.0, "a", State.FAILING, State.OPEN, 1.0)


def test_subscribers_hear_every_provider_in_the_order_they_subscribed():
    heard: list[Transition] = []
    router = Router(scenario({"a": bad(), "b": good()}, breaker={"failure_threshold": 1}), SEED)
    router.subscribe(heard.append)
    router.subscribe(lambda t: heard.append(t.provider))
    trip(router, "a", 0.0)
    trip(router, "b", 0.0)
    assert [(t.provider, t.target) for t in heard[::2]] == [("a", State.OPEN), ("b", State.OPEN)]
    assert heard[1::2] == ["a", "b"]


def test_late_results_of_old_generation_do_not_touch_the_breaker():
    router = Router(scenario({"a": bad()}), SEED)
    routes = [handle(router, 0.0) for _ in range(10)]
    for route in routes[:3]:
        router.complete(route, 0.125, route.call.outcome)
    a = upstream(router, "a").breaker
    assert a.state(0.125) is State.OPEN
    for route in routes[3:]:
        assert router.complete(route, 0.25, route.call.outcome) == 502  # still answered and counted by the shell
    assert a.trips == 1
    assert a.reopens_at == 1.125


def test_configure_settles_bucket_then_clamps():
    base = scenario({"a": good()}, limiter={"rate": 8, "burst": 8})
    router = Router(base, SEED)
    for _ in range(8):
        handle(router, 0.0)
    router.configure(config.merge(base, {"limiter": {"rate": 64, "burst": 4}}), 0.25)
    assert router.bucket.tokens(0.25) == 2.0  # 0.25 s at the old 8/s
    assert router.bucket.tokens(0.25 + 1 / 64) == 3.0
    assert router.bucket.tokens(1.0) == 4.0


def test_configure_keeps_running_cooldown_and_breaker_state():
    base = scenario({"a": bad(), "b": good()})
    router = Router(base, SEED)
    trip(router, "a", 0.0)
    router.configure(config.merge(base, {"breaker": {"base_delay": 4.0, "max_cooldown": 60.0}}), 0.5)
    a = upstream(router, "a").breaker
    assert a.state(0.5) is State.OPEN
    assert a.reopens_at == 1.0
    a.record(a.acquire(1.0), 1.0, ok=False)
    assert a.cooldown == 8.0  # second trip under the new base delay


def test_configure_weights_take_effect():
    base = scenario({"a": good(), "b": good()})
    router = Router(base, SEED)
    router.configure(config.merge(base, {"providers": {"a": {"weight": 0}}}), 0.0)
    assert {handle(router, i / 1000).provider for i in range(100)} == {"b"}


def test_configure_provider_parameters_take_effect():
    base = scenario({"a": good(latency=0.25)})
    router = Router(base, SEED)
    router.configure(config.merge(base, {"providers": {"a": {"outage": "error"}}}), 0.0)
    assert handle(router, 0.0).call == Call(0.25, Outcome.ERROR, 0.25)


def test_configure_swaps_balancer_only_when_its_name_changes():
    base = scenario(gateway={"balancer": "round_robin"})
    router = Router(base, SEED)
    before = router.balancer
    assert isinstance(before, RoundRobin)
    router.configure(config.merge(base, {"providers": {"p1": {"weight": 1}}}), 0.0)
    assert router.balancer is before
    router.configure(config.merge(base, {"gateway": {"balancer": "power_of_two"}}), 0.0)
    assert isinstance(router.balancer, PowerOfTwo)
    router.configure(config.merge(base, {"gateway": {"balancer": "weighted_random"}}), 0.0)
    assert isinstance(router.balancer, WeightedRandom)


@pytest.mark.parametrize(
    "providers",
    [
        {"p1": {}, "p2": {}, "p3": {}, "p4": {}},
        {"p1": {}, "p2": {}},
        {"p2": {}, "p1": {}, "p3": {}},
        {"p1": {}, "p2": {}, "x3": {}},
    ],
    ids=["added", "removed", "reordered", "renamed"],
)
def test_configure_rejects_a_different_provider_list(providers):
    router = Router(config.Scenario(), SEED)
    with pytest.raises(ValueError, match="cannot add, remove or reorder providers"):
        router.configure(scenario(providers), 0.0)


def test_reset_refills_bucket_and_heals_breakers():
    base = scenario({"a": bad(), "b": good()}, limiter={"rate": 1, "burst": 4})
    router = Router(base, SEED)
    in_flight = handle(router, 0.0)
    while isinstance(handle(router, 0.0), Route):
        pass
    trip(router, "a", 0.0)
    router.reset(0.5)
    assert router.bucket.tokens(0.5) == 4.0
    a = upstream(router, "a").breaker
    assert a.state(0.5) is State.HEALTHY
    assert a.trips == 0
    router.complete(in_flight, 0.625, in_flight.call.outcome)  # its permit is stale now
    assert a.state(0.625) is State.HEALTHY
    assert a.failures == 0


def test_the_count_of_breakers_not_closed_matches_them_after_every_step():
    """``Router._open`` is kept from the transitions alone; after any sequence of calls,
    outcomes, abandoned calls, configuration changes, resets and time steps it equals the
    number of breakers that are not CLOSED."""
    rng = random.Random(7)
    flaky = {"error_rate": 0.5, "latency": 0.05}
    router = Router(scenario({"a": flaky, "b": flaky, "c": {**flaky, "error_rate": 0.9}},
                             breaker={"failure_threshold": 2, "base_delay": 0.1, "max_cooldown": 0.4}), SEED)
    routes: list[Route] = []
    now = 0.0
    for _ in range(5_000):
        action = rng.random()
        if action < 0.5:
            route = handle(router, now)
            if isinstance(route, Route):
                routes.append(route)
        elif action < 0.85 and routes:
            route = routes.pop(rng.randrange(len(routes)))
            router.complete(route, now, route.call.outcome)
        elif action < 0.9 and routes:
            router.abandon(routes.pop(rng.randrange(len(routes))), now)
        elif action < 0.95:
            patch = {"breaker": {"enabled": rng.random() < 0.8, "failure_threshold": rng.randint(1, 3)}}
            router.configure(config.merge(router.scenario, patch), now)
        elif action < 0.97:
            router.reset(now)
        else:
            router.settle(now)
        now += rng.random() * 0.05
        assert router._open == sum(u.breaker.state(now).standard != "CLOSED" for u in router.upstreams)


def test_admission_and_routing_are_separate_steps():
    """``admit`` takes the bucket's token and nothing else; ``route`` decides the call and
    takes no token: a shell may wait between the two, or route a request admitted elsewhere."""
    router = Router(config.from_dict({"limiter": {"rate": 1, "burst": 1}}), seed=1)
    assert router.admit(0.0) is None
    assert router.admit(0.0) == Rejected(1_000_000)
    assert sum(u.in_flight for u in router.upstreams) == 0
    routes = [router.route(0.0) for _ in range(3)]  # no token is asked for
    assert sum(u.in_flight for u in router.upstreams) == 3
    assert router.admit(0.5) == Rejected(500_000)
    for route in routes:
        router.complete(route, 0.1, route.call.outcome)


@pytest.mark.parametrize("observed", list(Outcome))
def test_the_observed_outcome_decides_the_breaker_and_the_status(observed):
    """The shell tells the outcome it saw; the call's own decision is only its default."""
    scenario = config.from_dict({"providers": {"a": {"latency": 0.1}},
                                 "breaker": {"failure_threshold": 1}})
    router = Router(scenario, seed=1)
    route = router.route(0.0)
    assert route.call.outcome is Outcome.SUCCESS
    assert router.complete(route, 0.1, observed) == observed.status
    assert router.upstreams[0].breaker.state(0.1) is (State.HEALTHY if observed.ok else State.OPEN)


# -- the tokens-per-minute limit ------------------------------------------------------------


def tokens_router(rate: float = 1.0, burst: float = 2.0, tpm: int = 600, **limiter: Any) -> Router:
    """One always-successful provider; ``burst`` requests at ``rate`` per second and ``tpm``
    tokens a minute (10 a second with the default 600)."""
    return Router(scenario({"a": good()}, limiter={"rate": rate, "burst": burst, "tpm": tpm, **limiter}), SEED)


@pytest.mark.parametrize(("requests_taken", "tokens_taken", "tokens", "expected", "requests_left", "tokens_left"), [
    # both have what the request needs: it takes one request token and its reservation
    (0, 0, 100, None, 1, 500),
    # the requests bucket is empty (a token in 1 s), the tokens bucket is not: nothing is taken
    (2, 0, 100, Rejected(1_000_000, "rate_limit_requests"), 0, 600),
    # the tokens bucket is short (50 tokens at 10/s: 5 s), the requests bucket is not: neither is taken
    (0, 550, 100, Rejected(5_000_000, "rate_limit_tokens"), 2, 50),
    # both are short: the later wait, and the code of the bucket that gives it
    (2, 590, 20, Rejected(1_000_000, "rate_limit_requests"), 0, 10),  # tokens in 1 s too: a tie is the requests'
    (2, 550, 100, Rejected(5_000_000, "rate_limit_tokens"), 0, 50),
    (2, 595, 6, Rejected(1_000_000, "rate_limit_requests"), 0, 5),  # tokens in 0.1 s
    # more than the tokens bucket can ever hold: 400, nothing taken or even looked at
    (0, 0, 601, Rejected(0, "context_exceeds_limit"), 2, 600),
    (2, 600, 601, Rejected(0, "context_exceeds_limit"), 0, 0),
    # exactly the capacity is fine
    (0, 0, 600, None, 1, 0),
], ids=["both ok", "requests empty", "tokens short", "both, tie", "both, tokens later", "both, requests later",
        "oversize", "oversize, both empty", "exactly the capacity"])
def test_admission_takes_both_buckets_or_neither(requests_taken, tokens_taken, tokens, expected, requests_left,
                                                 tokens_left):
    router = tokens_router()
    assert router.bucket.take(0.0, requests_taken) if requests_taken else True
    assert router.tokens.take(0.0, tokens_taken) if tokens_taken else True
    rejected = router.admit(0.0, tokens)
    assert rejected == expected
    if expected is not None:
        assert rejected.status == (400 if expected.code == "context_exceeds_limit" else 429)
    assert (router.bucket.tokens(0.0), router.tokens.level(0.0)) == (requests_left, tokens_left)
    if expected is not None and expected.status == 429:  # the advertised wait admits it
        assert router.admit(expected.retry_after, tokens) is None


def test_without_a_tokens_limit_admission_takes_only_a_request_token():
    router = tokens_router(tpm=0)
    assert router.tokens is None
    assert router.reservation(10, 100) == 0
    assert router.admit(0.0, 10**9) is None  # no bucket to exceed
    assert router.snapshot(0.0).tpm_tokens is None
    assert "tpm_tokens" not in router.snapshot(0.0).to_dict()


def test_the_reservation_is_the_prompt_and_max_tokens_or_the_default():
    router = tokens_router(default_max_tokens=256)
    assert router.reservation(10, 100) == 110
    assert router.reservation(10, None) == 266
    # Validation lets max_tokens be any integer >= 1: one no bucket could hold is a 400.
    assert router.admit(0.0, router.reservation(10, 10**30)) == Rejected(0, "context_exceeds_limit")
    assert config.DEFAULT_MAX_TOKENS == Router(scenario(limiter={"tpm": 10**6}), SEED).reservation(0, None)


@pytest.mark.parametrize(("used", "level"), [
    (100, 500),  # all of it
    (30, 570),  # 70 unused come back
    (0, 600),  # nothing used: all of it comes back
    (250, 350),  # 150 beyond the reservation: debt
])
def test_a_refund_gives_back_the_unused_reservation_or_takes_debt(used, level):
    router = tokens_router()
    assert router.admit(0.0, 100) is None
    route = router.route(0.0)
    route.reserved = 100
    router.complete(route, 0.0, route.call.outcome)
    router.refund(route, 0.0, used)
    assert router.tokens.level(0.0) == level
    router.refund(route, 0.0, 0)  # settled once: a second refund changes nothing
    assert router.tokens.level(0.0) == level


def test_debt_below_zero_refills_from_there_and_refunds_never_pass_the_capacity():
    router = tokens_router(tpm=60, burst=10)  # a token a second
    routes = []
    for _ in range(2):
        assert router.admit(0.0, 30) is None
        route = router.route(0.0)
        route.reserved = 30
        routes.append(route)
    assert router.admit(0.0, 1) == Rejected(1_000_000, "rate_limit_tokens")
    router.refund(routes[0], 0.0, 50)  # 20 beyond: the level goes to -20
    assert router.snapshot(0.0).tpm_tokens == -20.0
    assert router.admit(20.5, 1) == Rejected(500_000, "rate_limit_tokens")
    router.refund(routes[1], 100.0, 1)  # 80 s later the level is 60: the 29 unused are capped
    assert router.tokens.level(100.0) == 60.0


def test_the_tokens_limit_can_be_switched_on_changed_and_off_at_run_time():
    base = scenario({"a": good()})
    router = Router(base, SEED)
    assert router.tokens is None
    router.configure(config.merge(base, {"limiter": {"tpm": 120}}), 1.0)
    assert router.tokens.level(1.0) == 120.0  # starts full
    assert router.admit(1.0, 100) is None
    router.configure(config.merge(base, {"limiter": {"tpm": 60}}), 2.0)  # 20 + 2 at 2/s, then 1/s
    assert router.tokens.level(2.0) == 22.0 and router.tokens.level(3.0) == 23.0
    router.configure(config.merge(base, {"limiter": {"tpm": 10}}), 3.0)
    assert router.tokens.level(3.0) == 10.0  # clamped to the new capacity
    router.reset(3.0)
    assert router.tokens.level(3.0) == 10.0
    router.configure(base, 4.0)
    assert router.tokens is None and router.admit(4.0, 100) is None
