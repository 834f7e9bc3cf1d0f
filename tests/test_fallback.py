"""What the gateway does when every breaker is open (``gateway.fallback``): probe the
provider whose cooldown ends soonest (the seed's rule), pick among all of them ignoring the
breakers (``panic``), or answer 503 until one reopens (``reject``). In the pure router with
``now`` fed, under random sequences (hypothesis), in virtual time and on the live gateway."""

from __future__ import annotations

import asyncio
import collections
import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gwlab import config
from gwlab.breaker import UNCOUNTED, State
from gwlab.providers import Outcome
from gwlab.router import ALL_COOLING_DOWN, Rejected, Route, Router
from gwlab.sim import simulate
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import serving

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)


def two(fallback: str, **gateway) -> config.Scenario:
    """Providers a (weight 3) and b (weight 1) that fail at once, behind breakers opening on
    the first failure for 1 s (a) and, b failing later, until 1.5 s (b)."""
    return config.from_dict({
        "gateway": {"fallback": fallback, **gateway},
        "limiter": {"tpm": 1000},
        "providers": {"a": {"weight": 3.0, "latency": 0.0, "error_rate": 1.0},
                      "b": {"weight": 1.0, "latency": 0.0, "error_rate": 1.0}},
        "breaker": {"failure_threshold": 1},
    })


def all_open(fallback: str) -> Router:
    """:func:`two`'s router with a open from 0 s to 1 s and b from 0.5 s to 1.5 s."""
    router = Router(two(fallback), seed=1)
    a, b = router.upstreams
    a.breaker.record(a.breaker.acquire(0.0), 0.0, False)
    b.breaker.record(b.breaker.acquire(0.5), 0.5, False)
    return router


@pytest.mark.parametrize("at", [0.0, 0.5, 0.75, 0.999999])
def test_soonest_probes_the_provider_whose_cooldown_ends_first_however_many_probes_are_out(at):
    router = all_open("soonest")
    routes = [router.route(at) for _ in range(5)]
    assert all(r.fallback and not r.panic and r.provider == "a" and r.permit.probe for r in routes)
    assert router.upstreams[0].breaker.probes == 5  # past half_open_max_calls = 1


@pytest.mark.parametrize(("at", "wait_us"), [(0.5, 500_000), (0.75, 250_000), (0.999999, 1000), (0.9995, 1000)])
def test_reject_answers_503_with_the_wait_until_the_soonest_reopens_at_least_a_millisecond(at, wait_us):
    router = all_open("reject")
    assert router.admit(at, 100) is None  # a request token and 100 tokens taken...
    tokens = router.tokens.level(at)
    rejected = router.route(at, tokens=100)
    assert rejected == Rejected(wait_us, ALL_COOLING_DOWN) and rejected.status == 503
    assert router.tokens.level(at) == tokens + 100  # ...the tokens come back
    assert router.bucket.tokens(at) == config.BURST - 1  # the request token does not: it was admitted
    assert [u.in_flight for u in router.upstreams] == [0, 0]
    assert [u.breaker.probes for u in router.upstreams] == [0, 0]


@pytest.mark.parametrize(("b_fails", "wait_us"), [
    (False, 1_000_000),  # only a: half-open, its probe out: breaker.base_delay (1 s)
    (True, 300_000),  # b reopens at 1.5 s, sooner than a's 1 s from 1.2 s
])
def test_reject_counts_a_half_open_breaker_with_its_probes_out_as_the_base_delay_away(b_fails, wait_us):
    scenario = two("reject") if b_fails else config.merge(two("reject"), {"providers": {"b": {"weight": 0.0}}})
    router = Router(scenario, seed=1)
    a, b = router.upstreams
    a.breaker.record(a.breaker.acquire(0.0), 0.0, False)  # a reopens at 1 s
    if b_fails:
        b.breaker.record(b.breaker.acquire(0.5), 0.5, False)  # b at 1.5 s
    probe = router.route(1.0)  # a is half-open: its one probe slot is taken
    assert isinstance(probe, Route) and probe.permit.probe and probe.provider == "a"
    assert router.route(1.2) == Rejected(wait_us, ALL_COOLING_DOWN)


def test_panic_picks_among_all_by_weight_and_changes_no_breaker():
    router = all_open("panic")
    a, b = router.upstreams
    before = [(u.breaker.state(0.75), u.breaker.reopens_at, u.breaker.probes, u.breaker.trips) for u in (a, b)]
    picks = collections.Counter()
    for i in range(4000):
        route = router.route(0.75)
        assert route.panic and not route.fallback and route.permit is UNCOUNTED
        picks[route.provider] += 1
        ok = i % 2 == 0  # successes and failures: neither may close or reopen a breaker
        router.complete(route, 0.75, Outcome.SUCCESS if ok else Outcome.ERROR)
    after = [(u.breaker.state(0.75), u.breaker.reopens_at, u.breaker.probes, u.breaker.trips) for u in (a, b)]
    assert after == before
    # Binomial(4000, 3/4): a standard deviation of 27.4; 5 of them (137) are passed with
    # probability below one in a million.
    assert abs(picks["a"] - 3000) <= 137
    assert [u.in_flight for u in router.upstreams] == [0, 0]


def test_panic_stops_as_soon_as_a_breaker_lets_a_call_through():
    router = all_open("panic")
    probe = router.route(1.0)  # a half-opens at 1 s: an ordinary probe, not a panic call
    assert not probe.panic and not probe.fallback and probe.provider == "a" and probe.permit.probe
    router.complete(probe, 1.0, Outcome.SUCCESS)
    assert router.upstreams[0].breaker.state(1.0) is State.HEALTHY
    route = router.route(1.0)
    assert not (route.fallback or route.panic)


def test_panic_and_reject_respect_the_providers_tokens_limits():
    scenario = config.merge(two("panic"), {"providers": {"a": {"tpm": 100}}})
    for fallback in ("panic", "reject"):
        router = Router(config.merge(scenario, {"gateway": {"fallback": fallback}}), seed=1)
        a, b = router.upstreams
        b.breaker.record(b.breaker.acquire(0.0), 0.0, False)  # b reopens at 1 s
        a.breaker.record(a.breaker.acquire(0.5), 0.5, False)  # a at 1.5 s
        routed = [router.route(0.75, tokens=200) for _ in range(20)]  # more than a's limit: b only
        if fallback == "panic":
            assert {r.provider for r in routed} == {"b"}
        else:
            assert set(routed) == {Rejected(250_000, ALL_COOLING_DOWN)}


class FallbackMachine(RuleBasedStateMachine):
    """Random arrivals, endings and time steps against two flaky providers, under each
    fallback: ``panic`` and ``reject`` never hand out more probes than
    ``half_open_max_calls``, every route ends with its in-flight count back, and a panic
    call's outcome never moves a breaker."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.routes: list[Route] = []
        self.router: Router | None = None

    @rule(fallback=st.sampled_from(config.FALLBACKS), limit=st.integers(1, 3))
    def configure(self, fallback: str, limit: int) -> None:
        """The first call creates the router with ``limit`` probes; later ones change the fallback."""
        if self.router is None:
            scenario = config.merge(two(fallback), {"breaker": {"half_open_max_calls": limit, "base_delay": 0.5}})
            self.router = Router(scenario, seed=1)
        else:
            self.router.configure(config.merge(self.router.scenario, {"gateway": {"fallback": fallback}}), self.now)

    @rule(dt=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    def arrive(self, dt: float) -> None:
        if self.router is None:
            return
        self.now += dt
        route = self.router.route(self.now)
        if isinstance(route, Rejected):
            assert self.router.scenario.gateway.fallback == "reject" and route.status == 503
            assert route.retry_after >= 0.001
            return
        self.routes.append(route)

    @rule(i=st.integers(0, 100), ok=st.booleans())
    def end(self, i: int, ok: bool) -> None:
        if not self.routes:
            return
        route = self.routes.pop(i % len(self.routes))
        generations = [u.breaker.generation for u in self.router.upstreams]
        self.router.complete(route, self.now, Outcome.SUCCESS if ok else Outcome.ERROR)
        if route.panic:
            assert [u.breaker.generation for u in self.router.upstreams] == generations

    @invariant()
    def probes_within_the_limit_unless_soonest(self) -> None:
        if self.router is None or self.router.scenario.gateway.fallback == "soonest":
            return
        limit = self.router.scenario.breaker.half_open_max_calls
        forced = sum(r.fallback for r in self.routes)  # probes made while "soonest" was in force
        for u in self.router.upstreams:
            assert u.breaker.probes <= limit + forced

    @invariant()
    def in_flight_counts_the_routes(self) -> None:
        if self.router is not None:
            assert sum(u.in_flight for u in self.router.upstreams) == len(self.routes)


FallbackMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_fallback_policies = FallbackMachine.TestCase


# -- in virtual time ---------------------------------------------------------------------------


def down(fallback: str) -> config.Scenario:
    """Ten closed-loop clients against one provider that fails at once for its first 20 s,
    then answers in 0.1 s."""
    return config.from_dict({
        "gateway": {"fallback": fallback},
        "providers": {"p": {"latency": 0.1, "outage": "error"}},
        "workload": {"clients": 10},
        "events": [{"at": 20.0, "providers": {"p": {"outage": "none"}}}],
    })


def test_simulated_reject_answers_503_under_none_and_clients_wait_the_retry_after():
    result = simulate(down("reject"), duration=60, seed=1, keep_requests=True)
    unavailable = [r for r in result.requests if r.status == 503]
    assert unavailable and {r.provider for r in unavailable} == {"none"}
    # While p is open every probe fails; the cooldowns double (1, 2, 4, 8, 16 s, then 30 s
    # from 31 s): no call reaches p between the probes, only 503s.
    calls = [r for r in result.requests if r.provider == "p"]
    assert all(r.status == 502 for r in calls if r.sent < 20)
    assert result.summary()["codes"]["200"] > 0  # it recovered: a probe after 20 s succeeded
    # Each client waits the retry-after of its 503: until the breaker reopens, and once more
    # (breaker.base_delay) if another client's probe is out then: at most two 503s per client
    # and opening.
    assert len(unavailable) <= 2 * 10 * len([t for t in result.transitions if t.target == "open"])


@pytest.mark.parametrize("fallback", config.FALLBACKS)
def test_simulated_fallbacks_are_deterministic(fallback):
    runs = [simulate(down(fallback), duration=40, seed=3).to_json() for _ in range(2)]
    assert runs[0] == runs[1]


# -- live ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", config.FALLBACKS)
def test_live_fallbacks_answer_as_the_readme_says(fallback):
    t = [0.0]

    async def main():
        scenario = config.merge(two(fallback), {"limiter": {"tpm": 0}})
        async with serving(scenario, clock=lambda: t[0]) as (gw, http):
            a, b = gw.router.upstreams
            a.breaker.record(a.breaker.acquire(0.0), 0.0, False)  # a reopens at 1 s, b at 1.5 s
            b.breaker.record(b.breaker.acquire(0.5), 0.5, False)
            t[0] = 0.75
            body = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}
            async with http.post("/v1/chat/completions", json=body) as r:
                answer = r.status, dict(r.headers), await r.json()
            async with http.get(gw.metrics_url) as r:
                return answer, await r.text()

    (status, headers, body), metrics = asyncio.run(main())
    if fallback == "reject":
        assert (status, body["error"]["code"]) == (503, "all_providers_cooling_down")
        assert (headers["Retry-After"], headers["retry-after-ms"], headers["x-gwlab-provider"]) == ("1", "250", "none")
        assert headers["x-gwlab-attempts"] == "0"  # it reached the routing step and called no provider
        assert 'gwlab_requests_total{code="503",provider="none"} 1.0' in metrics
        return
    assert status == 502 and headers["x-gwlab-route"] == ("panic" if fallback == "panic" else "fallback")
    counter = "gwlab_panic_total" if fallback == "panic" else "gwlab_fallback_total"
    assert sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(counter + "{")) == 1
    assert math.isfinite(float(headers.get("x-ratelimit-remaining-requests", "nan")))
