"""Providers with finite capacity: slots, a bounded FIFO queue, their own rate limit; in the
pure router (exact, with ``now`` fed), in virtual time (against the Erlang C formula) and in
the live gateway."""

from __future__ import annotations

import asyncio
import math
import time
from fractions import Fraction

import openai
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gwlab import config
from gwlab.breaker import State
from gwlab.providers import Outcome
from gwlab.router import CONTEXT_EXCEEDS_LIMIT, Rejected, Route, Router
from gwlab.sim import simulate
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import serving

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)


def one(breaker: dict | None = None, **fields) -> config.Scenario:
    return config.from_dict({"providers": {"a": {"latency": 1.0, **fields}}, "breaker": breaker or {}})


def listening(router: Router) -> list[tuple[Route, float]]:
    starts: list[tuple[Route, float]] = []
    router.on_start = lambda route, now: starts.append((route, now))
    return starts


def test_slots_then_the_queue_then_429_with_the_wait_for_a_slot():
    router = Router(one(capacity=2, queue=1), seed=1)
    starts = listening(router)
    first, second = router.route(0.0), router.route(0.25)
    third, fourth = router.route(0.5), router.route(0.75)
    assert (first.waiting, second.waiting, third.waiting) == (False, False, True)
    assert fourth.call.outcome is Outcome.RATE_LIMITED and fourth.call.duration == 0.0
    assert fourth.call.retry_after == pytest.approx(0.25)  # the first ends at 1.0
    assert router.complete(fourth, 0.75, fourth.call.outcome) == 429
    assert router.snapshot(0.75).providers["a"].waiting == 1
    router.complete(first, 1.0, first.call.outcome)
    assert starts == [(third, 1.0)] and not third.waiting
    assert third.call.duration == 1.0  # waited 0.5 s of its 10 s timeout: unchanged
    snapshot = router.snapshot(1.0).providers["a"]
    assert (snapshot.busy, snapshot.waiting, snapshot.in_flight) == (2, 0, 2)


def test_the_gateway_timeout_counts_the_wait():
    scenario = config.merge(one(capacity=1, queue=5, latency=3.0), {"gateway": {"timeout": 4.0}})
    router = Router(scenario, seed=1)
    starts = listening(router)
    running, late, later = router.route(0.0), router.route(0.5), router.route(1.0)
    router.complete(running, 3.0, running.call.outcome)
    # It waited 2.5 s: its 3 s call would end 5.5 s after its routing, past the 4 s timeout.
    assert starts == [(late, 3.0)] and late.call.outcome is Outcome.TIMEOUT and late.call.duration == 1.5
    assert router.give_up(later, 5.0) == 504
    assert router.snapshot(5.0).providers["a"].waiting == 0


def test_abandoning_a_waiting_call_frees_its_place_and_charges_nothing():
    router = Router(one(capacity=1, queue=1, error_rate=0.0), seed=1)
    starts = listening(router)
    running, waiting = router.route(0.0), router.route(0.0)
    router.abandon(waiting, 0.5)
    assert router.snapshot(0.5).providers["a"].waiting == 0
    nxt = router.route(0.5)
    assert nxt.waiting
    router.abandon(running, 0.6)  # frees the slot: the next one starts
    assert starts == [(nxt, 0.6)]


def test_own_rate_limit_is_an_exact_bucket_of_a_minute():
    router = Router(one(rpm=60, latency=0.0), seed=1)
    routes = [router.route(0.0) for _ in range(61)]
    assert [r.call.outcome for r in routes[:60]] == [Outcome.SUCCESS] * 60
    assert routes[60].call.outcome is Outcome.RATE_LIMITED and routes[60].call.retry_after == 1.0
    assert router.route(1.0).call.outcome is Outcome.SUCCESS  # one token a second


def calls_left(router: Router, now: float) -> int:
    """How many more calls of no tokens the first provider takes at ``now`` (its ``rpm``)."""
    for taken in range(100):
        if router.route(now).call.outcome is Outcome.RATE_LIMITED:
            return taken
    raise AssertionError("more than 100 calls taken")


# Provider ``a`` (rpm as given, tpm = 100) has taken one call of 70 tokens at 0 s: 30 tokens
# and rpm - 1 requests are left. A token comes every 0.6 s, a request every 60 / rpm s.
@pytest.mark.parametrize("rpm, tokens, retry_after, requests_left, tokens_left", [
    (2, 30, None, 0, 0),  # both have enough: both are taken
    (2, 31, 0.6, 1, 30),  # tokens short by one: the request token goes back
    (2, 100, 42.0, 1, 30),  # short by 70: 42 s
    (1, 30, 60.0, 0, 30),  # requests short: the tokens are not taken
    (1, 90, 60.0, 0, 30),  # both short: the later wait (requests 60 s, tokens 36 s)
    (1, 100, 60.0, 0, 30),  # both short, tokens later: 42 s < 60 s
    (0, 31, 0.6, None, 30),  # no requests limit
    (0, 0, None, None, 30),  # a request of no tokens (no limit counts them) takes none
], ids=["both", "tokens-short", "tokens-short-70", "requests-short", "both-short", "both-short-2",
        "no-rpm", "no-tokens"])
def test_a_provider_takes_its_request_and_tokens_both_or_neither(rpm, tokens, retry_after, requests_left,
                                                                  tokens_left):
    router = Router(one(rpm=rpm, tpm=100, latency=0.0), seed=1)
    first = router.route(0.0, tokens=70)
    assert first.call.outcome is Outcome.SUCCESS and first.provider_reserved == 70
    route = router.route(0.0, tokens=tokens)
    if retry_after is None:
        assert route.call.outcome is Outcome.SUCCESS and route.provider_reserved == tokens
    else:
        assert route.call.outcome is Outcome.RATE_LIMITED and route.provider_reserved == 0
        assert route.call.retry_after == retry_after
        assert router.route(retry_after - 1e-6, tokens=tokens).call.outcome is Outcome.RATE_LIMITED
        assert router.route(retry_after, tokens=tokens).call.outcome is Outcome.SUCCESS
        router = Router(one(rpm=rpm, tpm=100, latency=0.0), seed=1)  # again, to read what the refusal left
        router.route(0.0, tokens=70), router.route(0.0, tokens=tokens)
    assert router.upstreams[0].host.tokens.level(0.0) == tokens_left
    if requests_left is not None:
        assert calls_left(router, 0.0) == requests_left


@pytest.mark.parametrize("used, provider_level, gateway_level", [
    (70, 30, 930),  # used all it reserved
    (20, 80, 980),  # 50 unused go back to both
    (0, 100, 1000),
    (150, -50, 850),  # 80 beyond the reservation: debt in both
])
def test_one_refund_settles_the_gateways_and_the_providers_reservation(used, provider_level, gateway_level):
    scenario = config.merge(one(tpm=100, latency=0.0), {"limiter": {"tpm": 1000}})
    router = Router(scenario, seed=1)
    assert router.admit(0.0, 70) is None
    route = router.route(0.0, tokens=70)
    assert (route.reserved, route.provider_reserved) == (70, 70)
    router.complete(route, 0.0, route.call.outcome)
    router.refund(route, 0.0, used)
    router.refund(route, 0.0, 0)  # settled once: a second refund changes nothing
    assert router.upstreams[0].host.tokens.level(0.0) == provider_level
    assert router.tokens.level(0.0) == gateway_level


def test_a_call_the_provider_refused_reserved_nothing_there():
    router = Router(one(tpm=100, latency=0.0), seed=1)
    router.route(0.0, tokens=100)
    refused = router.route(0.0, tokens=1)
    assert refused.call.outcome is Outcome.RATE_LIMITED and refused.call.retry_after == 0.6
    router.complete(refused, 0.0, refused.call.outcome)
    router.refund(refused, 0.0, 1)
    assert router.upstreams[0].host.tokens.level(0.0) == 0


def providers(**tpms: tuple[float, int]) -> config.Scenario:
    """Providers named by the keywords, each ``(weight, tpm)``."""
    return config.from_dict({"providers": {name: {"weight": weight, "tpm": tpm, "latency": 1.0}
                                           for name, (weight, tpm) in tpms.items()}})


@pytest.mark.parametrize("tpms, tokens, chosen", [
    ({"a": (1, 50), "b": (1, 0)}, 50, {"a", "b"}),  # both can take it
    ({"a": (1, 50), "b": (1, 0)}, 51, {"b"}),  # b has no limit
    ({"a": (1, 50), "b": (1, 80)}, 80, {"b"}),
    ({"a": (1, 50), "b": (1, 80)}, 81, None),  # no provider can ever take it: 400
    ({"a": (1, 50), "b": (0, 0)}, 51, None),  # b has no weight: it is never called
    ({"a": (1, 50), "b": (0, 0), "c": (3, 60)}, 55, {"c"}),
])
def test_a_request_goes_only_to_providers_whose_tokens_limit_can_take_it(tpms, tokens, chosen):
    router = Router(providers(**tpms), seed=1)
    if chosen is None:
        assert router.admit(0.0, tokens) == Rejected(0, CONTEXT_EXCEEDS_LIMIT)
        return
    seen = set()
    for i in range(200):  # at 1 s apart, every provider's bucket has refilled what a call took
        assert router.admit(float(i), tokens) is None
        route = router.route(float(i), tokens=tokens)
        assert route.call.outcome is Outcome.SUCCESS and not route.fallback
        seen.add(route.provider)
        router.complete(route, i + 1.0, route.call.outcome)
        router.refund(route, i + 1.0, 0)
    assert seen == chosen  # 200 draws: a provider of weight w / 2 is missed with chance (1 - w / 2)**200


def test_with_every_breaker_open_the_fallback_is_the_soonest_provider_that_can_take_the_request():
    router = Router(config.merge(providers(a=(1, 50), b=(1, 0)), {"breaker": {"failure_threshold": 1}}), seed=1)
    a, b = router.upstreams
    a.breaker.record(a.breaker.acquire(0.0), 0.0, False)  # a reopens first
    b.breaker.record(b.breaker.acquire(1.0), 1.0, False)
    assert router.route(1.5, tokens=10).provider == "a"
    route = router.route(1.5, tokens=60)
    assert route.fallback and route.provider == "b"


def test_tokens_limits_follow_the_configuration():
    router = Router(providers(a=(1, 50), b=(1, 0)), seed=1)
    assert router.reservation(10, 100) == 110
    router.configure(config.merge(router.scenario, {"providers": {"b": {"tpm": 80}}}), 0.0)
    assert router.admit(0.0, 81) == Rejected(0, CONTEXT_EXCEEDS_LIMIT)
    assert router.route(0.0, tokens=80).provider == "b"
    router.configure(config.merge(router.scenario, {"providers": {"a": {"tpm": 0}, "b": {"tpm": 0}}}), 0.0)
    assert router.reservation(10, 100) == 0 and router.admit(0.0, 10**6) is None


class ProviderLimitsMachine(RuleBasedStateMachine):
    """Random calls of random sizes against a provider's own ``rpm`` and ``tpm``, settled to
    random usage: a call is taken exactly when both buckets have what it needs (an exact
    model in fractions of a token says when), a refused one changes neither, and its wait is
    the model's exact wait rounded up to a whole microsecond."""

    RPM, TPM = 6, 600  # a request every 10 s, 10 tokens a second

    def __init__(self) -> None:
        super().__init__()
        self.router = Router(one(rpm=self.RPM, tpm=self.TPM, latency=0.0), seed=1)
        self.now = 0  # whole milliseconds: the model's levels are then exact fractions
        self.requests, self.tokens = Fraction(self.RPM), Fraction(self.TPM)
        self.open: list[Route] = []

    def _advance(self, ms: int) -> None:
        self.now += ms
        self.requests = min(Fraction(self.RPM), self.requests + Fraction(self.RPM * ms, 60_000))
        self.tokens = min(Fraction(self.TPM), self.tokens + Fraction(self.TPM * ms, 60_000))

    @rule(ms=st.sampled_from([0, 1, 7, 100, 999, 10_000]), tokens=st.integers(1, 600))
    def call(self, ms: int, tokens: int) -> None:
        self._advance(ms)
        now = self.now / 1000
        route = self.router.route(now, tokens=tokens)
        if self.requests >= 1 and self.tokens >= tokens:
            assert route.call.outcome is Outcome.SUCCESS
            self.requests -= 1
            self.tokens -= tokens
            self.open.append(route)
            return
        assert route.call.outcome is Outcome.RATE_LIMITED
        self.router.complete(route, now, route.call.outcome)
        wait = max(Fraction(1) - self.requests, Fraction(0)) / Fraction(self.RPM, 60)
        wait = max(wait, max(Fraction(tokens) - self.tokens, Fraction(0)) / Fraction(self.TPM, 60))
        # Whole microseconds, rounded up from the exact wait measured from ``now`` itself
        # (whose float may lie a sliver before its microsecond: one more then).
        assert round(route.call.retry_after * 1e6) - math.ceil(wait * 1_000_000) in (0, 1)

    @precondition(lambda self: self.open)
    @rule(i=st.integers(0, 50), used=st.integers(0, 900))
    def settle(self, i: int, used: int) -> None:
        route = self.open.pop(i % len(self.open))
        reserved = route.provider_reserved
        self.router.complete(route, self.now / 1000, route.call.outcome)
        self.router.refund(route, self.now / 1000, used)
        self.tokens = min(Fraction(self.TPM), self.tokens + reserved - used)

    @invariant()
    def levels_match_the_model(self) -> None:
        host = self.router.upstreams[0].host
        now = self.now / 1000
        assert host.tokens.level(now) == pytest.approx(float(self.tokens), abs=1e-6)
        assert host.requests.tokens(now) == pytest.approx(float(self.requests), abs=1e-6)


ProviderLimitsMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_provider_limits = ProviderLimitsMachine.TestCase


@pytest.mark.parametrize("count, state", [(True, State.OPEN), (False, State.HEALTHY)])
def test_a_provider_429_charges_the_breaker_unless_told_not_to(count, state):
    router = Router(one({"failure_threshold": 1, "count_rate_limited": count}, capacity=1), seed=1)
    router.route(0.0)
    refused = router.route(0.0)
    assert router.complete(refused, 0.0, refused.call.outcome) == 429
    assert router.upstreams[0].breaker.state(0.0) is state


def test_a_larger_capacity_starts_the_waiting_calls_at_once():
    router = Router(one(capacity=1, queue=3), seed=1)
    starts = listening(router)
    routes = [router.route(0.0) for _ in range(4)]
    router.configure(config.merge(router.scenario, {"providers": {"a": {"capacity": 3}}}), 0.5)
    assert starts == [(routes[1], 0.5), (routes[2], 0.5)]
    assert [r.waiting for r in routes] == [False, False, False, True]


def test_a_provider_keeps_no_trace_of_the_calls_that_left():
    # What a provider keeps of its calls (the ends of those in service, for the wait a full
    # queue's 429 gives) is exactly the calls in service however many calls pass, and an
    # early leaver's end is dropped as it leaves.
    router = Router(one(capacity=2, queue=0, latency=0.01, error_rate=0.0), seed=1)
    host = router.upstreams[0].host
    now = 0.0
    for _ in range(10_000):
        first, second = router.route(now), router.route(now)
        assert host._serving == {first: now + first.call.duration, second: now + second.call.duration}
        now += 0.01
        router.complete(second, now, second.call.outcome)
        router.complete(first, now, first.call.outcome)
        assert not host._serving and host.busy == 0
    early = router.route(now)  # ends at now + 0.01
    late = router.route(now + 0.005)  # would end at now + 0.015, but leaves at once
    router.abandon(late, now + 0.006)
    assert host._serving == {early: now + 0.01} and host.busy == 1
    router.complete(early, now + 0.01, early.call.outcome)
    assert not host._serving and host.busy == 0


class CapacityMachine(RuleBasedStateMachine):
    """Random routing, endings, abandons, timeouts and capacity changes: no slot is lost or
    made, nobody waits beside a free slot, and calls start first come, first served."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.capacity, self.queue = 2, 3
        self.router = Router(one(capacity=self.capacity, queue=self.queue, latency=0.5), seed=1)
        self.router.on_start = self._started
        self.running: list[Route] = []
        self.waiting: list[Route] = []

    def _started(self, route: Route, now: float) -> None:
        assert route is self.waiting[0], "started out of order"
        self.waiting.pop(0)
        self.running.append(route)

    @rule(dt=st.sampled_from([0.0, 0.1, 1.0]))
    def route(self, dt: float) -> None:
        self.now += dt
        route = self.router.route(self.now)
        if route.call.outcome is Outcome.RATE_LIMITED:
            assert len(self.waiting) >= self.queue and route.call.retry_after >= 0.001
            self.router.complete(route, self.now, route.call.outcome)
        elif route.waiting:
            self.waiting.append(route)
        else:
            self.running.append(route)

    @precondition(lambda self: self.running)
    @rule(i=st.integers(0, 100), abandon=st.booleans())
    def end(self, i: int, abandon: bool) -> None:
        route = self.running.pop(i % len(self.running))
        if abandon:
            self.router.abandon(route, self.now)
        else:
            self.router.complete(route, self.now, route.call.outcome)

    @precondition(lambda self: self.waiting)
    @rule(i=st.integers(0, 100), give_up=st.booleans())
    def leave(self, i: int, give_up: bool) -> None:
        route = self.waiting.pop(i % len(self.waiting))
        if give_up:
            assert self.router.give_up(route, self.now) == 504
        else:
            self.router.abandon(route, self.now)

    @rule(capacity=st.integers(1, 4))
    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        patch = {"providers": {"a": {"capacity": capacity}}}
        self.router.configure(config.merge(self.router.scenario, patch), self.now)

    @invariant()
    def books_balance(self) -> None:
        state = self.router.snapshot(self.now).providers["a"]
        assert state.busy == len(self.running)
        assert state.waiting == len(self.waiting) <= self.queue
        assert state.in_flight == len(self.running) + len(self.waiting)
        assert not self.waiting or state.busy >= self.capacity


TestCapacity = CapacityMachine.TestCase
TestCapacity.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def erlang_c(servers: int, load: float) -> float:
    """The probability that an arrival waits in an M/M/c queue (Erlang C), ``load`` = λ/μ < c."""
    top = load ** servers / math.factorial(servers) * servers / (servers - load)
    return top / (sum(load ** k / math.factorial(k) for k in range(servers)) + top)


def test_an_m_m_c_provider_waits_as_erlang_c_says():
    """Poisson arrivals at 30/s, exponential calls of mean 0.1 s, 4 slots, a queue that never
    fills: the mean wait for a slot is C(4, 3) / (4 μ - λ) (Erlang C).

    The simulated mean comes from 40 batches of 90 s (108,000 calls): batches much longer
    than the queue's relaxation time (about a second here) are nearly independent, so
    their means' spread gives the standard error; the check allows 4 of them (a correct
    simulator fails it by chance about once in 15,000 runs)."""
    scenario = config.from_dict({
        "providers": {"a": {"latency": 0.1, "distribution": "exponential", "capacity": 4, "queue": 10_000}},
        "workload": {"mode": "open", "rate": 30.0}, "breaker": {"enabled": False},
        "limiter": {"rate": 1000.0}, "gateway": {"timeout": 1000.0}})
    series = simulate(scenario, duration=3600, seed=1, bin_width=90).timeseries()
    waits = [b.tally.latency.total / b.tally.latency.count - 0.1 for b in series]
    mean = sum(waits) / len(waits)
    error = math.sqrt(sum((w - mean) ** 2 for w in waits) / (len(waits) - 1) / len(waits))
    expected = erlang_c(4, 3.0) / (4 * 10 - 30)
    assert abs(mean - expected) <= 4 * error, (mean, expected, error)
    assert error < expected / 10  # the check is sharp enough to mean something


def test_live_queue_full_is_the_sdks_rate_limit_error_naming_the_provider():
    async def main():
        async with serving(one(capacity=1, queue=0, latency=2.0)) as (gw, _):
            async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as sdk:
                create = sdk.chat.completions.create
                first = asyncio.create_task(create(model="m", messages=[{"role": "user", "content": "x"}]))
                while not gw.router.upstreams[0].host.busy:  # until the first call holds the one slot
                    await asyncio.sleep(0.005)
                with pytest.raises(openai.RateLimitError) as refused:
                    await create(model="m", messages=[{"role": "user", "content": "x"}])
                await first
                return refused.value

    error = asyncio.run(main())
    assert error.code == "provider_rate_limited"
    assert error.response.headers["x-gwlab-provider"] == "a"
    # The wait until the first call ends: less than its 2 s, by the time it has run.
    assert 0.001 <= float(error.response.headers["retry-after-ms"]) / 1000 < 2.0


@pytest.mark.parametrize(("max_tokens", "status", "code"), [
    (87, 200, None),  # 2 prompt tokens + 87: exactly the 89 left
    (88, 429, "provider_rate_limited"),  # short by 1 token
    (None, 400, "context_exceeds_limit"),  # 2 + the default 4096: more than a's 100 ever holds
])
def test_live_a_providers_tokens_limit_is_its_own_429_and_too_large_a_request_a_400(max_tokens, status, code):
    """A first request ("Hello": 2 tokens) takes 2 + 97 tokens of provider a's 100 a minute
    and uses 2 + 9 (the fixed reply), so 88 come back: 89 are left for the second."""
    t = [0.0]

    async def main():
        async with serving(one(tpm=100, latency=0.0), clock=lambda: t[0]) as (gw, http):
            body = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}
            async with http.post("/v1/chat/completions", json={**body, "max_tokens": 97}) as first:
                assert first.status == 200
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            async with http.post("/v1/chat/completions", json=body) as second:
                return second.status, second.headers, await second.json(), gw.router.upstreams[0].host.tokens.level(0.0)

    answer_status, headers, answer, level = asyncio.run(main())
    assert answer_status == status
    if status == 200:
        assert level == 100 - 11 - 11  # each used its prompt and the 9 tokens of the reply
        return
    assert answer["error"]["code"] == code and level == 89  # nothing taken
    if status == 429:
        assert headers["x-gwlab-provider"] == "a"
        assert headers["retry-after-ms"] == "600"  # a token at 100 a minute: 0.6 s
        assert "provider a refused the call" in answer["error"]["message"]
    else:
        assert headers["x-gwlab-provider"] == "none"
        assert "more than the providers' own limits in tokens per minute (a 100)" in answer["error"]["message"]


def test_live_a_call_that_waits_past_the_timeout_is_504_and_one_that_gets_a_slot_runs():
    async def main():
        scenario = config.merge(one(capacity=1, queue=2, latency=0.4), {"gateway": {"timeout": 0.6}})
        async with serving(scenario) as (gw, http):
            async def post() -> tuple[int, float, dict]:
                start = time.monotonic()
                response = await http.post("/v1/chat/completions",
                                           json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
                return response.status, time.monotonic() - start, await response.json()

            results = await asyncio.gather(post(), post(), post())
            return results, gw.snapshot().providers["a"]

    results, state = asyncio.run(main())
    (s1, t1, _), (s2, t2, _), (s3, t3, body) = results
    # The second waits 0.4 s and runs 0.4 s: 0.8 s from its routing, past 0.6 s: a timeout.
    assert (s1, s2, s3) == (200, 504, 504)
    assert t1 >= 0.4 and t2 >= 0.6 and t3 >= 0.6
    assert "had no free slot" in body["error"]["message"] or "did not answer" in body["error"]["message"]
    assert (state.busy, state.waiting, state.in_flight) == (0, 0, 0)


def test_the_time_series_shows_each_providers_slots_when_it_has_a_capacity():
    scenario = config.from_dict({
        "providers": {"a": {"latency": 0.5, "capacity": 2, "queue": 3}, "b": {"latency": 0.1}},
        "workload": {"clients": 10}, "breaker": {"enabled": False}})
    columns = simulate(scenario, duration=10, seed=1).timeseries().columns()
    running, waiting = columns["a.running"], columns["a.waiting"]
    assert max(running) == 2 and 0 < max(waiting) <= 3
    assert set(columns["b.running"]) == {0} and set(columns["b.waiting"]) == {0}
    assert "p1.running" not in simulate(None, duration=10, seed=1).timeseries().columns()
