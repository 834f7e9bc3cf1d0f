"""Clients that time out and retry, in the pure core: each policy's waits exactly as its
definition (the ``openai`` SDK's read from its installed source's constants), adaptive
throttling against its formula (hypothesis), and the simulator's books of user requests
against attempts."""

from __future__ import annotations

import dataclasses
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlab import config, stats
from gwlab.config import WorkloadConfig
from gwlab.retry import AdaptiveThrottle
from gwlab.sim import simulate
from gwlab.workload import RETRIED, ClientRetry
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)


def _policy(name: str, **fields) -> ClientRetry:
    return ClientRetry(WorkloadConfig(retry_policy=name, **fields), Random(3))


def test_the_openai_defaults_are_those_of_the_installed_sdk():
    from openai import _constants

    assert config.CLIENT_RETRIES == _constants.DEFAULT_MAX_RETRIES
    assert config.CLIENT_RETRY_DELAY == _constants.INITIAL_RETRY_DELAY
    assert config.CLIENT_RETRY_MAX_DELAY == _constants.MAX_RETRY_DELAY
    assert config.OPENAI_MAX_RETRY_AFTER == _constants.MAX_RETRY_AFTER_DELAY


@pytest.mark.parametrize("status, retried", [
    (200, False), (400, False), (404, False), (408, True), (409, True), (429, True), (499, False),
    (500, True), (502, True), (503, True), (504, True), (stats.STREAM_ERROR, False),
    (stats.TRANSPORT_ERROR, True), (stats.CLIENT_TIMEOUT, True),
])
def test_which_outcomes_a_client_retries(status, retried):
    assert (status in RETRIED) is retried
    assert (_policy("fixed").after(status, 0.0) is not None) is retried


def test_none_never_retries():
    policy = _policy("none", retries=9)
    assert [policy.after(s, 0.0) for s in (429, 502, stats.CLIENT_TIMEOUT)] == [None, None, None]


@pytest.mark.parametrize("name", ["fixed", "adaptive"])
def test_fixed_waits_its_delay_or_a_longer_retry_after_as_many_times_as_allowed(name):
    policy = _policy(name, retries=3, retry_delay=0.1)
    assert [policy.after(502, 0.0), policy.after(429, 0.05), policy.after(429, 2.5), policy.after(502, 0.0)] == \
        [0.1, 0.1, 2.5, None]


def test_openai_sdk_backs_off_as_the_sdk_does():
    policy, rng = _policy("openai_sdk", retries=4), Random(3)
    waits = [policy.after(s, ra) for s, ra in ((502, 0.0), (stats.CLIENT_TIMEOUT, 0.0), (429, 7.5), (502, 0.0))]
    expected = [0.5 * (1 - 0.25 * rng.random()), 1.0 * (1 - 0.25 * rng.random()), 7.5, 4.0 * (1 - 0.25 * rng.random())]
    assert waits == expected
    assert policy.after(502, 0.0) is None  # four retries made


@pytest.mark.parametrize("retry_after, wait", [(config.OPENAI_MAX_RETRY_AFTER, config.OPENAI_MAX_RETRY_AFTER),
                                               (config.OPENAI_MAX_RETRY_AFTER + 0.001, None)])
def test_openai_sdk_waits_a_retry_after_up_to_its_limit_and_gives_up_past_it(retry_after, wait):
    assert _policy("openai_sdk").after(429, retry_after) == wait


def test_exponential_jitter_draws_full_jitter_under_the_cap():
    policy, rng = _policy("exponential_jitter", retries=5, retry_delay=0.5, retry_max_delay=3.0), Random(3)
    waits = [policy.after(502, 0.0) for _ in range(4)] + [policy.after(429, 9.0)]
    assert waits == [rng.uniform(0, 0.5), rng.uniform(0, 1.0), rng.uniform(0, 2.0), rng.uniform(0, 3.0),
                     max(rng.uniform(0, 3.0), 9.0)]


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(config.CLIENT_RETRY_POLICIES), retries=st.integers(0, 9),
       delay=st.floats(1e-6, 10), spread=st.floats(1, 100),
       answers=st.lists(st.tuples(st.sampled_from([400, 429, 502, 504, stats.CLIENT_TIMEOUT, stats.STREAM_ERROR]),
                                  st.floats(0, 200)), max_size=15))
def test_no_policy_retries_more_than_allowed_or_waits_outside_its_rule(name, retries, delay, spread, answers):
    w = WorkloadConfig(retry_policy=name, retries=retries, retry_delay=delay, retry_max_delay=delay * spread)
    policy = ClientRetry(w, Random(1))
    made = 0
    for status, retry_after in answers:
        wait = policy.after(status, retry_after)
        if wait is None:
            continue
        made += 1
        assert status in RETRIED and name != "none"
        if name == "openai_sdk":
            assert wait == retry_after if 0 < retry_after else 0.75 * delay <= wait <= w.retry_max_delay
            assert retry_after <= config.OPENAI_MAX_RETRY_AFTER
        elif name == "exponential_jitter":
            assert 0 <= wait <= max(w.retry_max_delay, retry_after) and wait >= retry_after
        else:
            assert wait == max(delay, retry_after)
    assert made <= (0 if name == "none" else retries)


@pytest.mark.parametrize("answers, p", [
    ([], 0.0),
    ([True] * 10, 0.0),
    ([False] * 10, 10 / 11),
    ([True] * 5 + [False] * 5, 0.0),  # half fail, K = 2: still none rejected
    ([True] * 2 + [False] * 8, (10 - 2 * 2) / 11),
])
def test_adaptive_throttling_rejects_by_the_sre_books_formula(answers, p):
    throttle = AdaptiveThrottle(2.0, 30, Random(1))
    for accepted in answers:
        throttle.answered(5.0, accepted)
    assert throttle.rejection_probability(5.5) == p
    assert throttle.rejection_probability(35.0) == 0.0  # the window has passed


class _CountingRandom(Random):
    draws = 0

    def random(self) -> float:
        self.draws += 1
        return super().random()


@settings(max_examples=200, deadline=None)
@given(k=st.floats(1, 5), window=st.integers(1, 20),
       events=st.lists(st.tuples(st.floats(0, 3), st.sampled_from(["send", "ok", "fail"])), max_size=60))
def test_adaptive_throttling_follows_its_model_and_draws_only_when_it_may_reject(k, window, events):
    rng = _CountingRandom(4)
    throttle, model = AdaptiveThrottle(k, window, rng), []  # model: (second, request, accept)
    now = 0.0
    for step, kind in events:
        now += step
        live = [(r, a) for second, r, a in model if second > int(now) - window]
        p = max(0.0, (sum(r for r, _ in live) - k * sum(a for _, a in live)) / (sum(r for r, _ in live) + 1))
        assert throttle.rejection_probability(now) == pytest.approx(p, abs=1e-12)
        if kind == "send":
            draws = rng.draws
            sent = throttle.admits(now)
            assert rng.draws == draws + (p > 0)
            if not sent:
                model.append((int(now), 1, 0))
        else:
            throttle.answered(now, kind == "ok")
            model.append((int(now), 1, int(kind == "ok")))


def test_a_policy_and_a_throttle_refuse_bad_arguments():
    for k, window in ((0.5, 30), (2.0, 0), (2.0, 1.5), (2.0, True)):
        with pytest.raises(ValueError, match="AdaptiveThrottle needs k >= 1"):
            AdaptiveThrottle(k, window, Random(1))
    with pytest.raises(config.ConfigError, match=r"workload.retry_max_delay = 0.1: expected a number >= "
                                                 r"workload.retry_delay \(0.5\)"):
        config.from_dict({"workload": {"retry_max_delay": 0.1}})
    with pytest.raises(config.ConfigError, match="workload.retry_policy = 'sometimes': expected one of 'none'"):
        config.from_dict({"workload": {"retry_policy": "sometimes"}})


STORM = config.load(config.__file__.rsplit("/gwlab/", 1)[0] + "/scenarios/retry_storm.toml")


def test_a_run_counts_each_user_request_once_and_its_attempts_apart():
    result = simulate(STORM, 150.0, 1)
    summary = result.summary()
    users = summary["user_requests"]
    outcomes = users["outcomes"]
    assert users["offered"] == sum(outcomes.values())
    assert users["goodput"] == outcomes["ok"] / users["offered"]
    assert outcomes["throttled"] == 0  # no adaptive throttling here
    # Each user request made 1 to 3 attempts (2 retries); the cut-off ones at least 1.
    assert users["offered"] <= users["attempts"] <= 3 * users["offered"]
    assert users["attempts_per_request"] == users["attempts"] / users["offered"]
    # What the clients saw: every attempt once, as an answer, a timeout or a cut-off; the
    # gateway's answers to those they gave up on went to no one.
    assert summary["offered"] == users["attempts"]
    assert 0 < users["wasted"] <= summary["codes"]["client_timeout"]
    assert summary["codes"]["client_timeout"] == sum(result.timeseries()["client_timeout"])
    assert summary["codes"]["200"] == outcomes["ok"]
    columns = result.timeseries(10.0).columns()
    assert sum(columns["user_requests"]) == users["offered"]
    assert columns["user_goodput"][0] == 1.0 and columns["user_goodput"][-1] == 0.0


def test_clients_without_timeouts_or_retries_keep_the_summary_and_columns_as_they_were():
    for scenario in (None, dataclasses.replace(STORM, workload=dataclasses.replace(
            STORM.workload, retry_policy="none", timeout=0.0))):
        result = simulate(scenario, 30.0, 1)
        assert "user_requests" not in result.summary()
        assert "user_goodput" not in result.timeseries().columns()


@pytest.mark.parametrize("policy", ["fixed", "adaptive"])
def test_closed_loop_clients_that_time_out_and_retry_keep_virtual_time_moving(policy):
    scenario = config.merge(STORM, {"workload": {"mode": "closed", "clients": 50, "think_time": 0.0,
                                                 "retry_policy": policy}})
    users = simulate(scenario, 150.0, 2).summary()["user_requests"]
    assert users["offered"] > 0 and users["outcomes"]["ok"] > 0
    assert users["outcomes"]["timed_out"] + users["outcomes"]["failed"] > 0  # the spike did hurt


@pytest.mark.parametrize("policy", ["fixed", "exponential_jitter", "openai_sdk"])
def test_first_attempts_draw_as_they_would_without_retries(policy):
    """DESIGN, "Retries and fallbacks": arrivals and first attempts draw exactly as without
    retries, so retry policies compare on common random numbers. The seed's providers fail
    5, 10 and 20 % of their calls; with breakers off (whose states retries would change) every
    first attempt, found by its send time among the arrivals, goes to the same provider
    with the same outcome and latency whatever the clients do after it."""
    base = {"breaker": {"enabled": False}, "workload": {"mode": "open", "rate": 100.0}}
    def first_attempts(workload: dict) -> list:
        run = simulate(config.merge(config.from_dict(base), {"workload": workload}), 60.0, 4, keep_requests=True)
        return [(r.sent, r.provider, r.status, r.latency) for r in run.requests]

    alone = first_attempts({})
    arrivals = {sent for sent, *_ in alone}
    retried = first_attempts({"retry_policy": policy, "retries": 3, "retry_delay": 0.05})
    firsts = sorted(r for r in retried if r[0] in arrivals)
    assert len(retried) > len(firsts) > 5000  # the clients did retry
    assert firsts == sorted(alone)


HANGING_REJECT = {
    "providers": {"p1": {"latency": 0.1, "outage": "hang"}},
    "breaker": {"failure_threshold": 1, "base_delay": 0.5, "max_cooldown": 0.5},
    "gateway": {"timeout": 1.0, "fallback": "reject"},
    "retry": {"attempts": 2, "base_delay": 0.01, "max_delay": 0.01},
}
"""Every call hangs to the gateway's 1 s timeout, which opens the one breaker: the gateway's
retry of it then finds every provider cooling down and answers 503 itself, long after a
client with a 0.5 s timeout has stopped waiting."""


@pytest.mark.parametrize("workload", [{"mode": "open", "rate": 5.0, "timeout": 0.5},
                                      {"mode": "closed", "clients": 2, "think_time": 0.2, "timeout": 0.5}],
                         ids=["open", "closed"])
def test_an_answer_of_the_gateway_itself_to_a_client_that_left_is_wasted_not_counted(workload):
    scenario = {**HANGING_REJECT, "workload": workload}
    runs = {attempts: simulate({**scenario, "retry": {**scenario["retry"], "attempts": attempts}},
                               duration=120, seed=1, bin_width=1.0) for attempts in (1, 2)}
    summary = runs[2].summary()
    users, codes = summary["user_requests"], summary["codes"]
    # Each attempt its client stopped waiting for is answered later, to no one, unless the
    # run's end cuts it off first.
    assert codes["503"] > 0 and codes["client_timeout"] - 2 <= users["wasted"] <= codes["client_timeout"]
    assert sum(codes.values()) == summary["offered"] == users["attempts"] == users["offered"]
    assert sum(users["outcomes"].values()) == users["offered"]
    # Closed-loop clients send as often whether or not the gateway retries: a late 503 does
    # not start a client of its own.
    if workload["mode"] == "closed":
        per_minute = [run.timeseries(60.0).columns()["offered"] for run in runs.values()]
        assert per_minute[0] == per_minute[1] and len(set(per_minute[1])) == 1


def test_an_attempt_cut_off_at_the_end_after_its_client_left_is_neither_wasted_nor_counted_again():
    scenario = {"providers": {"p1": {"latency": 100.0, "distribution": "fixed"}}, "gateway": {"timeout": 200.0},
                "workload": {"mode": "open", "rate": 5.0, "timeout": 1.0}}
    summary = simulate(scenario, duration=20, seed=1).summary()
    users, codes = summary["user_requests"], summary["codes"]
    assert "wasted" not in users and set(codes) == {"499", "client_timeout"}  # no call can end within the run
    assert sum(codes.values()) == summary["offered"] == users["attempts"]
    assert users["outcomes"]["cut_off"] == codes["499"] and users["outcomes"]["timed_out"] == codes["client_timeout"]


@pytest.mark.parametrize("policy", ["none", "fixed"], ids=["switched on at 20 s", "switched off at 20 s"])
def test_user_requests_count_the_whole_run_whichever_event_switches_their_retries(policy):
    flaky = {"providers": {"p1": {"latency": 0.05, "error_rate": 0.3}}, "breaker": {"enabled": False}}
    scenario = {**flaky, "workload": {"mode": "open", "rate": 10.0, "retry_policy": policy},
                "events": [{"at": 20.0, "workload": {"retry_policy": "none" if policy == "fixed" else "fixed"}}]}
    summary = simulate(scenario, duration=40, seed=1).summary()
    users, codes = summary["user_requests"], summary["codes"]
    assert users["attempts"] == summary["offered"] and users["outcomes"]["ok"] == codes["200"]
    assert users["offered"] > 350  # 10 a second over 40 s, each counted from the start
