"""Retries in the pure core: backoff with jitter (exact against the definitions), the retry
budget (hypothesis: never more retries than it allows, never a refusal it should not make)
and the router's decisions, with ``now`` fed."""

from __future__ import annotations

import asyncio
import math
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlab import config
from gwlab.providers import Outcome
from gwlab.retry import Backoff, RetryBudget
from gwlab.router import Router
from gwlab.sim import simulate
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import serving

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)


@pytest.mark.parametrize("jitter", config.JITTERS)
def test_backoff_follows_the_aws_definitions_exactly(jitter):
    base, cap = 0.1, 1.0
    backoff, rng = Backoff(base, cap, jitter, Random(7)), Random(7)
    previous = base
    for n in range(1, 12):
        ceiling = min(cap, base * 2 ** (n - 1))
        if jitter == "none":
            expected = ceiling
        elif jitter == "full":
            expected = rng.uniform(0.0, ceiling)
        elif jitter == "equal":
            expected = ceiling / 2 + rng.uniform(0.0, ceiling / 2)
        else:
            expected = previous = min(cap, rng.uniform(base, 3 * previous))
        assert backoff.next() == expected, n


@given(base=st.floats(1e-6, 10.0), factor=st.floats(1.0, 1e4), jitter=st.sampled_from(config.JITTERS),
       seed=st.integers(0, 2**32), retries=st.integers(1, 2000))
@settings(max_examples=300, deadline=None)
def test_backoff_stays_within_its_bounds_whatever_the_retry(base, factor, jitter, seed, retries):
    cap = base * factor
    backoff = Backoff(base, cap, jitter, Random(seed))
    for n in range(1, retries + 1):
        wait = backoff.next()
        ceiling = cap if n > 64 else min(cap, base * 2 ** (n - 1))
        low = {"none": ceiling, "full": 0.0, "equal": ceiling / 2, "decorrelated": base}[jitter]
        high = cap if jitter == "decorrelated" else ceiling
        assert low <= wait <= high and math.isfinite(wait)


@pytest.mark.parametrize(("base", "cap", "jitter"), [(0.0, 1.0, "full"), (2.0, 1.0, "full"), (0.1, 1.0, "fancy")])
def test_backoff_refuses_what_it_cannot_compute(base, cap, jitter):
    with pytest.raises(ValueError, match="Backoff needs"):
        Backoff(base, cap, jitter, Random(1))


def test_the_budget_allows_its_ratio_of_the_requests_plus_its_floor():
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, window=10)
    for _ in range(10):
        budget.request(0.5)
    assert [budget.allows(0.5) for _ in range(3)] == [True, True, False]  # 0.2 x 10 = 2
    floor = RetryBudget(ratio=0.0, min_per_second=1.0, window=10)
    assert sum(floor.allows(0.0) for _ in range(20)) == 10  # 1 a second over 10 s
    assert not floor.allows(9.999)
    assert floor.allows(10.0)  # the second of 0 s has left the window
    assert floor.counts(10.0) == (0, 1)


ops = st.lists(st.tuples(st.sampled_from([0.0, 0.001, 0.3, 1.0, 2.5, 11.0]), st.booleans()), max_size=300)


@given(ratio=st.sampled_from([0.0, 0.1, 0.2, 1.0]), floor=st.sampled_from([0.0, 0.5, 10.0]),
       window=st.integers(1, 12), ops=ops)
@settings(max_examples=300, deadline=None)
def test_the_budget_never_allows_more_and_never_refuses_less_than_its_rule(ratio, floor, window, ops):
    """Against a model that keeps every event: at each retry asked, the retries and requests
    of the seconds in the window decide, as DESIGN's rule says."""
    budget = RetryBudget(ratio, floor, window)
    now, requests, retries = 0.0, [], []
    for dt, is_retry in ops:
        now += dt
        second = math.floor(now)
        in_window = lambda events: sum(1 for t in events if math.floor(t) > second - window)  # noqa: E731
        if not is_retry:
            budget.request(now)
            requests.append(now)
            continue
        allowed = in_window(retries) + 1 <= floor * window + ratio * in_window(requests)
        assert budget.allows(now) == allowed
        if allowed:
            retries.append(now)
        assert budget.counts(now) == (in_window(requests), in_window(retries))
        assert len(budget._counts._seconds) <= window  # its memory: one bucket per second of the window, at most


@pytest.mark.parametrize(("window", "ratio"), [(0, 0.2), (1.5, 0.2), (True, 0.2), (10, -0.1)])
def test_the_budget_refuses_what_it_cannot_count(window, ratio):
    with pytest.raises(ValueError, match="RetryBudget needs"):
        RetryBudget(ratio, 1.0, window)


def retrying(**retry) -> config.Scenario:
    """Providers a and b that fail at once (no breakers); the gateway tries three times
    without jitter, 0.1 s doubling to 0.4 s, within 1 s of a request's arrival."""
    return config.from_dict({
        "providers": {"a": {"latency": 0.0, "error_rate": 1.0}, "b": {"latency": 0.0, "error_rate": 1.0}},
        "breaker": {"enabled": False},
        "retry": {"attempts": 3, "base_delay": 0.1, "max_delay": 0.4, "jitter": "none", "deadline": 1.0, **retry},
    })


def test_without_retries_there_is_no_budget_and_no_attempts():
    router = Router(config.Scenario(), seed=1)
    assert router.budget is None and router.attempts(0.0) is None


def test_a_retry_goes_to_a_provider_not_tried_yet():
    router = Router(retrying(), seed=1)
    for _ in range(50):
        attempts = router.attempts(0.0)
        first = router.route(0.0, attempts=attempts)
        router.complete(first, 0.0, first.call.outcome)
        assert router.retry(attempts, first, 0.0, 502).reason == "retry"
        second = router.route(0.1, attempts=attempts)
        assert second.provider != first.provider and attempts.made == 2
        router.complete(second, 0.1, second.call.outcome)


@pytest.mark.parametrize(("status", "made", "now", "retry", "expected"), [
    (502, 1, 0.0, {}, (0.1, "retry")),
    (504, 2, 0.1, {}, (0.2, "retry")),  # the second retry: 0.1 doubled
    (200, 1, 0.0, {}, (None, "not_retried")),
    (502, 1, 0.0, {"retry_on": [429, 504]}, (None, "not_retried")),
    (502, 3, 0.0, {"deadline": 10.0}, (None, "attempts")),
    (502, 1, 0.95, {}, (None, "deadline")),  # 0.95 + 0.1 is past 1 s from the arrival
    (502, 1, 0.9, {}, (0.1, "retry")),  # ends exactly at the deadline
    (502, 1, 0.0, {"budget_ratio": 0.0, "budget_min_per_second": 0.0}, (None, "budget")),
])
def test_the_router_decides_each_retry(status, made, now, retry, expected):
    router = Router(retrying(**retry), seed=1)
    attempts = router.attempts(0.0)
    for i in range(made):
        route = router.route(now, attempts=attempts)
        router.complete(route, now, route.call.outcome)
        if i < made - 1:  # the retries before, each decided as the shells do
            assert router.retry(attempts, route, now, 502).reason == "retry"
    decision = router.retry(attempts, route, now, status)
    assert (decision.wait if decision.wait is None else pytest.approx(decision.wait, abs=1e-12),
            decision.reason) == expected


def test_a_retry_after_a_providers_429_waits_its_retry_after_when_longer():
    scenario = config.merge(retrying(), {"providers": {"a": {"rpm": 1, "error_rate": 0.0},
                                                        "b": {"weight": 0.0}}})
    router = Router(scenario, seed=1)
    router.route(0.0)  # takes a's one request a minute
    attempts = router.attempts(0.0)
    refused = router.route(0.0, attempts=attempts)
    assert refused.call.outcome is Outcome.RATE_LIMITED and refused.call.retry_after == 60.0
    router.complete(refused, 0.0, refused.call.outcome)
    assert router.retry(attempts, refused, 0.0, 429).reason == "deadline"  # 60 s is past the 1 s deadline
    long = Router(config.merge(scenario, {"retry": {"deadline": 100.0}}), seed=1)
    long.route(0.0)
    attempts = long.attempts(0.0)
    refused = long.route(0.0, attempts=attempts)
    long.complete(refused, 0.0, refused.call.outcome)
    assert long.retry(attempts, refused, 0.0, 429).wait == 60.0


def test_the_tokens_reservation_is_held_across_attempts_and_settled_once():
    router = Router(config.merge(retrying(), {"limiter": {"tpm": 1000}}), seed=1)
    assert router.admit(0.0, 100) is None
    attempts = router.attempts(0.0)
    first = router.route(0.0, tokens=100, attempts=attempts)
    assert first.reserved == 100
    router.complete(first, 0.0, first.call.outcome)
    assert router.retry(attempts, first, 0.0, 502).reason == "retry"
    router.refund(first, 0.0, 10)  # the failed attempt: its reservation has passed on, nothing settles
    assert router.tokens.level(0.0) == 900
    second = router.route(0.1, tokens=100, attempts=attempts)
    assert second.reserved == 100
    router.complete(second, 0.1, second.call.outcome)
    router.refund(second, 0.1, 30)  # settled once, by the last attempt
    assert router.tokens.level(0.1) == pytest.approx(900 + 1000 / 60 * 0.1 + 70, abs=1e-9)  # 70 unused back


# -- the live gateway ------------------------------------------------------------------------------


def flaky_then_good(**retry) -> config.Scenario:
    """Provider a always fails at once, b answers at once; no breakers; the gateway tries
    twice, 10 ms apart."""
    return config.from_dict({
        "providers": {"a": {"latency": 0.0, "error_rate": 1.0}, "b": {"latency": 0.0}},
        "breaker": {"enabled": False},
        "retry": {"attempts": 2, "base_delay": 0.01, "max_delay": 0.01, "jitter": "none", **retry},
    })


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_live_a_failed_attempt_is_retried_on_the_other_provider(stream):
    async def main():
        async with serving(flaky_then_good()) as (gw, http):
            answers = []
            for _ in range(40):
                body = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], "stream": stream}
                async with http.post("/v1/chat/completions", json=body) as r:
                    await r.read()
                    answers.append((r.status, r.headers["x-gwlab-provider"], r.headers["x-gwlab-attempts"]))
            async with http.get(gw.metrics_url) as r:
                return answers, await r.text()

    answers, metrics = asyncio.run(main())
    assert {status for status, _, _ in answers} == {200}
    assert {(provider, attempts) for _, provider, attempts in answers} <= {("b", "1"), ("b", "2")}
    retried = sum(attempts == "2" for _, _, attempts in answers)
    assert retried > 0  # a gets about half the first attempts: 40 of them miss it with chance 2**-40
    assert f'gwlab_retry_decisions_total{{decision="retry"}} {retried}.0' in metrics
    assert f'gwlab_provider_requests_total{{outcome="error",provider="a"}} {retried}.0' in metrics
    assert 'gwlab_requests_total{code="200",provider="b"} 40.0' in metrics


def test_live_a_retry_the_budget_refuses_answers_the_last_attempts_status():
    async def main():
        scenario = config.merge(flaky_then_good(budget_ratio=0.0, budget_min_per_second=0.0),
                                {"providers": {"b": {"weight": 0.0}}})
        async with serving(scenario) as (gw, http):
            body = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}
            async with http.post("/v1/chat/completions", json=body) as r:
                answer = r.status, r.headers["x-gwlab-attempts"]
            async with http.get(gw.metrics_url) as r:
                return answer, await r.text()

    answer, metrics = asyncio.run(main())
    assert answer == (502, "1")
    assert 'gwlab_retry_decisions_total{decision="budget"} 1.0' in metrics


# -- in virtual time ---------------------------------------------------------------------------------


def test_simulated_retries_turn_every_failure_into_a_success_on_the_other_provider():
    """Ten clients against :func:`flaky_then_good` with a think time of 0.1 s and a budget
    as large as the requests: every request that first goes to a (about half) is answered
    by b 10 ms later."""
    scenario = config.merge(flaky_then_good(budget_ratio=1.0), {"workload": {"clients": 10, "think_time": 0.1}})
    result = simulate(scenario, duration=30, seed=1, keep_requests=True)
    answered = [r for r in result.requests if r.status != 499]
    assert {(r.status, r.provider) for r in answered} == {(200, "b")}
    retried = [r for r in answered if r.latency > 0]
    assert all(r.latency == pytest.approx(0.01) for r in retried)  # the backoff, no jitter
    assert 0.4 < len(retried) / len(answered) < 0.6  # a has half the weight; thousands of draws
    assert simulate(scenario, duration=30, seed=1).to_json() == simulate(scenario, duration=30, seed=1).to_json()


def test_simulated_retries_stop_at_the_budget():
    """The default budget allows 10 x 10 + 0.2 x 1000 retries in 10 s (30 a second) where
    about 50 a second fail: some failures stay 502s. No budget: each one does, as without
    retries."""
    plain = config.merge(flaky_then_good(), {"workload": {"clients": 10, "think_time": 0.1}})
    none = config.merge(plain, {"retry": {"budget_ratio": 0.0, "budget_min_per_second": 0.0}})
    off = config.merge(plain, {"retry": {"attempts": 1}})
    codes = [simulate(s, duration=30, seed=1).summary()["codes"] for s in (plain, none, off)]
    assert codes[1] == codes[2] and codes[1]["502"] > 0
    assert 0 < codes[0]["502"] < codes[1]["502"] and codes[0]["200"] > codes[1]["200"]


def test_simulated_requests_waiting_for_a_retry_at_the_end_are_cut_off():
    scenario = config.merge(flaky_then_good(base_delay=5.0, max_delay=5.0, deadline=100.0),
                            {"workload": {"clients": 1, "think_time": 0.1}, "providers": {"b": {"weight": 0.0}}})
    result = simulate(scenario, duration=3, seed=1)
    assert result.summary()["codes"] == {"499": 1}  # its one request waits for its retry at 5 s


def test_a_simulations_summary_counts_the_retry_decisions():
    scenario = config.merge(flaky_then_good(), {"workload": {"clients": 10, "think_time": 0.1}})
    summary = simulate(scenario, duration=30, seed=1).summary()
    retries = summary["retries"]
    assert set(retries) == {"retry", "attempts", "deadline", "budget"}
    assert retries["retry"] > 0 and retries["budget"] > 0  # 50 failures a second against 30 retries
    assert retries["attempts"] == retries["deadline"] == 0  # b never fails: a retry is the last attempt needed
    assert summary["codes"]["502"] == retries["budget"]  # a request the budget refused answers its 502
    assert "retries" not in simulate(config.merge(scenario, {"retry": {"attempts": 1}}), duration=5, seed=1).summary()
