"""Simulated providers: latency quantiles, one draw per stream per call, outcomes."""

from __future__ import annotations

import dataclasses
import json
import math
from random import Random
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlab import config
from gwlab.config import ProviderConfig, Scenario
from gwlab.providers import Call, Outcome, Provider, latency_quantile, mean_latency
from gwlab.sim import simulate
from gwlab.streams import stream
from gwlab.wire import reply
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

FIXED = ProviderConfig(name="f", latency=0.5)
EXPO = ProviderConfig(name="e", latency=0.5, distribution="exponential")
LOGN = ProviderConfig(name="l", latency=0.2, distribution="lognormal", p99=1.5)


@pytest.mark.parametrize("u", [0.0, 0.1, 0.5, 0.99, 0.999999])
def test_fixed_latency_ignores_the_draw(u):
    assert latency_quantile(FIXED, u) == 0.5


@pytest.mark.parametrize("u", [0.0, 0.25, 0.5, 0.75, 0.99])
def test_exponential_quantile_inverts_the_cdf(u):
    assert latency_quantile(EXPO, u) == pytest.approx(-0.5 * math.log(1 - u), rel=1e-12, abs=0)


def test_exponential_median_and_zero():
    assert latency_quantile(EXPO, 0.0) == 0.0
    assert latency_quantile(EXPO, 0.5) == pytest.approx(0.5 * math.log(2), rel=1e-12)


def test_lognormal_hits_its_median_and_p99():
    assert latency_quantile(LOGN, 0.5) == pytest.approx(0.2, abs=1e-9)
    assert latency_quantile(LOGN, 0.99) == pytest.approx(1.5, abs=1e-9)


def test_lognormal_quantile_at_zero_is_finite_and_positive():
    low = latency_quantile(LOGN, 0.0)
    assert 0 < low < latency_quantile(LOGN, 1e-6)


def test_lognormal_other_quantiles_follow_the_normal():
    sigma = math.log(1.5 / 0.2) / NormalDist().inv_cdf(0.99)
    for u in (0.01, 0.1, 0.9):
        assert latency_quantile(LOGN, u) == pytest.approx(0.2 * math.exp(sigma * NormalDist().inv_cdf(u)), rel=1e-12)


@pytest.mark.parametrize("without_statistics_internals", [False, True])
def test_lognormal_draws_are_exactly_the_normal_distributions(monkeypatch, without_statistics_internals):
    # The sampler calls the function NormalDist.inv_cdf wraps (or the method, where
    # statistics lacks it): every draw is the very number the method gives.
    from gwlab import providers

    if without_statistics_internals:
        monkeypatch.setattr(providers, "_inv_cdf", None)
    sigma = math.log(1.5 / 0.2) / NormalDist().inv_cdf(0.99)
    draw = providers.sampler("lognormal", 0.2, 1.5)
    rng = Random(3)
    for u in [0.0, 1e-300, 0.5, 1 - 2**-53] + [rng.random() for _ in range(1000)]:
        assert draw(u) == 0.2 * math.exp(sigma * NormalDist().inv_cdf(max(u, 1e-300)))


def test_quantiles_increase_with_u():
    us = [i / 100 for i in range(100)]
    for cfg in (EXPO, LOGN):
        values = [latency_quantile(cfg, u) for u in us]
        assert values == sorted(values)
        assert len(set(values)) == len(values)


def test_mean_latency():
    assert mean_latency(FIXED) == 0.5
    assert mean_latency(EXPO) == 0.5
    sigma = math.log(1.5 / 0.2) / NormalDist().inv_cdf(0.99)
    assert mean_latency(LOGN) == pytest.approx(0.2 * math.exp(sigma**2 / 2), rel=1e-12)


def test_seed_mean_latency_is_0_37_seconds():
    providers = Scenario().providers
    total = sum(p.weight for p in providers)
    assert sum(p.weight / total * mean_latency(p) for p in providers) == pytest.approx(0.37, abs=1e-12)


def replay(config: ProviderConfig, timeout: float, u_latency: float, u_error: float) -> Call:
    """The call a provider must decide for these two uniforms (the rule, restated)."""
    latency = latency_quantile(config, u_latency)
    if config.outage == "hang" or latency > timeout:
        return Call(timeout, Outcome.TIMEOUT, latency)
    if config.outage == "error" or u_error < config.error_rate:
        return Call(latency, Outcome.ERROR, latency)
    return Call(latency, Outcome.SUCCESS, latency)


CONFIGS = [
    ProviderConfig(name="p", latency=0.1, error_rate=0.05),
    ProviderConfig(name="p", latency=0.1, error_rate=0.5),
    ProviderConfig(name="p", latency=2.0, error_rate=0.0, distribution="exponential"),
    ProviderConfig(name="p", latency=0.3, p99=4.0, error_rate=0.2, distribution="lognormal"),
    ProviderConfig(name="p", latency=0.1, outage="error"),
    ProviderConfig(name="p", latency=0.1, outage="hang"),
    ProviderConfig(name="p", latency=50.0, error_rate=1.0),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.distribution}-{c.error_rate}-{c.outage}-{c.latency}")
def test_each_call_draws_exactly_one_number_from_each_stream(cfg):
    provider = Provider(cfg, seed=3)
    lat, err = stream(3, "p/latency"), stream(3, "p/errors")
    for _ in range(300):
        assert provider.call(timeout=1.0) == replay(cfg, 1.0, lat.random(), err.random())


def test_common_random_numbers_across_configurations():
    # The same seed under every configuration: after n calls each stream has moved by
    # exactly n draws, so the (n+1)-th call sees the same two uniforms in every variant.
    providers = [Provider(cfg, seed=9) for cfg in CONFIGS]
    for _ in range(250):
        for p in providers:
            p.call(timeout=1.0)
    lat, err = stream(9, "p/latency"), stream(9, "p/errors")
    for _ in range(250):
        lat.random(), err.random()
    u_latency, u_error = lat.random(), err.random()
    for cfg, p in zip(CONFIGS, providers):
        assert p.call(timeout=1.0) == replay(cfg, 1.0, u_latency, u_error)


def test_changing_error_rate_only_flips_outcomes_where_the_draw_lies_between():
    low = Provider(ProviderConfig(name="p", latency=0.1, error_rate=0.1), seed=4)
    high = Provider(ProviderConfig(name="p", latency=0.1, error_rate=0.3), seed=4)
    errors = stream(4, "p/errors")
    for _ in range(1000):
        a, b, u = low.call(10.0), high.call(10.0), errors.random()
        assert (a.outcome, b.outcome) == (
            Outcome.ERROR if u < 0.1 else Outcome.SUCCESS,
            Outcome.ERROR if u < 0.3 else Outcome.SUCCESS,
        )
        # Every error at the low rate is also an error at the high rate.
        assert not (a.outcome is Outcome.ERROR and b.outcome is Outcome.SUCCESS)


def test_scaling_latency_scales_every_call_by_the_same_factor():
    one = Provider(ProviderConfig(name="p", latency=0.5, distribution="exponential"), seed=5)
    two = Provider(ProviderConfig(name="p", latency=1.0, distribution="exponential"), seed=5)
    for _ in range(500):
        assert two.call(1e9).duration == pytest.approx(2 * one.call(1e9).duration, rel=1e-12)


def test_timeout_cuts_a_slow_call_to_the_timeout():
    slow = Provider(ProviderConfig(name="p", latency=3.0), seed=1)
    assert slow.call(timeout=2.5) == Call(2.5, Outcome.TIMEOUT, 3.0)
    assert slow.call(timeout=3.0) == Call(3.0, Outcome.SUCCESS, 3.0)  # exactly at the limit is in time


def test_timeout_wins_over_error():
    slow = Provider(ProviderConfig(name="p", latency=3.0, error_rate=1.0), seed=1)
    assert slow.call(timeout=1.0) == Call(1.0, Outcome.TIMEOUT, 3.0)


def test_outage_error_fails_fast_at_its_latency():
    p = Provider(ProviderConfig(name="p", latency=0.25, outage="error"), seed=1)
    assert {p.call(10.0) for _ in range(20)} == {Call(0.25, Outcome.ERROR, 0.25)}


def test_outage_hang_always_times_out():
    p = Provider(ProviderConfig(name="p", latency=0.01, outage="hang"), seed=1)
    assert {p.call(10.0) for _ in range(20)} == {Call(10.0, Outcome.TIMEOUT, 0.01)}


def test_error_rate_bounds():
    never = Provider(ProviderConfig(name="p", error_rate=0.0), seed=2)
    always = Provider(ProviderConfig(name="p", error_rate=1.0), seed=2)
    assert {never.call(10.0).outcome for _ in range(500)} == {Outcome.SUCCESS}
    assert {always.call(10.0).outcome for _ in range(500)} == {Outcome.ERROR}


def test_name_comes_from_config():
    assert Provider(ProviderConfig(name="p7"), seed=0).name == "p7"


@pytest.mark.parametrize(
    ("outcome", "status", "ok"),
    [(Outcome.SUCCESS, 200, True), (Outcome.ERROR, 502, False), (Outcome.TIMEOUT, 504, False)],
)
def test_outcome_status(outcome, status, ok):
    assert outcome.status == status
    assert outcome.ok is ok


class _Fixed(Random):
    """A stream whose every draw is ``u``: the extremes ``random()`` can return."""

    def __init__(self, u: float) -> None:
        super().__init__(0)
        self.u = u

    def random(self) -> float:
        return self.u


EXTREME_DRAWS = [0.0, 1e-300, 0.5, 0.99, 1 - 2**-53]
"""``random()`` returns from 0 to 1 - 2**-53; the last is the largest normal deviate (8.2)."""

EXTREME_PROVIDERS = {
    "widest log-normal, longest": {"distribution": "lognormal", "latency": config.MAX_SECONDS / config.MAX_P99_RATIO,
                                   "p99": config.MAX_SECONDS},
    "widest log-normal, shortest": {"distribution": "lognormal", "latency": 5e-324, "p99": 5e-324 * config.MAX_P99_RATIO},
    "narrowest log-normal, longest": {"distribution": "lognormal", "latency": math.nextafter(config.MAX_SECONDS, 0),
                                      "p99": config.MAX_SECONDS},
    "longest exponential": {"distribution": "exponential", "latency": config.MAX_SECONDS},
}


@pytest.mark.parametrize("fields", EXTREME_PROVIDERS.values(), ids=EXTREME_PROVIDERS)
def test_latencies_at_the_allowed_extremes_stay_finite(fields):
    scenario = config.from_dict({"gateway": {"timeout": config.MAX_SECONDS}, "providers": {"p1": fields}})
    provider = scenario.provider("p1")
    assert math.isfinite(mean_latency(provider))
    for u in EXTREME_DRAWS:
        latency = latency_quantile(provider, u)
        assert 0 <= latency < 1e12 * max(provider.latency, 1e-300)
        fixed = Provider(provider, seed=1)
        fixed._latency_rng = fixed._error_rng = _Fixed(u)  # the extreme draw, on both streams
        call = fixed.call(scenario.gateway.timeout)
        assert 0 <= call.duration <= scenario.gateway.timeout
        assert call.outcome in (Outcome.SUCCESS, Outcome.TIMEOUT)


@pytest.mark.parametrize("fields", EXTREME_PROVIDERS.values(), ids=EXTREME_PROVIDERS)
def test_a_simulation_with_extreme_latencies_runs_and_reports_finite_numbers(fields):
    scenario = {"gateway": {"timeout": config.MAX_SECONDS}, "providers": {"p1": fields},
                "workload": {"mode": "open", "rate": 200.0}}
    result = simulate(scenario, duration=5, seed=3)
    summary = result.summary()
    assert summary["offered"] > 500
    json.loads(result.to_json())  # no NaN or infinity anywhere (to_json refuses them)


# -- token timing, output lengths and mid-stream errors (DESIGN, "LLM traffic") -------------

LLM = ProviderConfig(name="p", ttft=0.4, decode_rate=20.0, output_tokens=101)
"""A fixed time to first token and length: the first token at 0.4 s, the last 5 s later."""


@pytest.mark.parametrize("streaming, max_tokens, timeout, expected", [
    (True, None, 10.0, Call(5.4, Outcome.SUCCESS, 0.4, 101)),
    (False, None, 10.0, Call(5.4, Outcome.SUCCESS, 0.4, 101)),
    (True, 11, 10.0, Call(0.9, Outcome.SUCCESS, 0.4, 11, True)),  # capped: finish_reason "length"
    (True, 101, 10.0, Call(5.4, Outcome.SUCCESS, 0.4, 101)),  # a cap it does not reach
    (True, 1, 10.0, Call(0.4, Outcome.SUCCESS, 0.4, 1, True)),
    (True, None, 1.0, Call(5.4, Outcome.SUCCESS, 0.4, 101)),  # the timeout bounds a stream's first token...
    (False, None, 1.0, Call(1.0, Outcome.TIMEOUT, 0.4)),  # ...and any other answer's end
    (False, 11, 1.0, Call(0.9, Outcome.SUCCESS, 0.4, 11, True)),
    (True, None, 0.4, Call(5.4, Outcome.SUCCESS, 0.4, 101)),  # at the timeout is in time
    (True, None, 0.3, Call(0.3, Outcome.TIMEOUT, 0.4)),
], ids=["stream", "whole", "capped", "cap-not-reached", "one-token", "stream-slow-ttft-ok", "whole-timeout",
        "whole-capped-in-time", "ttft-at-timeout", "ttft-past-timeout"])
def test_token_timing_table(streaming, max_tokens, timeout, expected):
    call = Provider(LLM, seed=1).call(timeout, streaming, max_tokens)
    assert (call.outcome, call.tokens, call.capped) == (expected.outcome, expected.tokens, expected.capped)
    assert (call.duration, call.ttft) == pytest.approx((expected.duration, expected.ttft), rel=1e-12)


@pytest.mark.parametrize("fields, streaming, expected", [
    ({"outage": "hang"}, True, Call(10.0, Outcome.TIMEOUT, 0.4)),
    ({"outage": "error"}, True, Call(0.4, Outcome.ERROR, 0.4)),  # before the first token
    ({"error_rate": 1.0}, False, Call(0.4, Outcome.ERROR, 0.4)),
    ({"stream_error_rate": 1.0}, True, None),
    ({"stream_error_rate": 1.0}, False, None),
])
def test_failures_with_token_timing(fields, streaming, expected):
    config = dataclasses.replace(LLM, **fields)
    provider, draws = Provider(config, seed=2), stream(2, "p/stream_errors")
    for _ in range(200):
        call = provider.call(10.0, streaming)
        if expected is not None:
            assert call == expected
            continue
        # Fails for sure, after a share of the output given by the same draw.
        sent = max(1, math.ceil(draws.random() * 101))
        assert call.outcome is (Outcome.STREAM_ERROR if streaming else Outcome.ERROR)
        assert call.tokens == sent and call.ttft == 0.4
        assert call.duration == pytest.approx(0.4 + (sent - 1) / 20.0, rel=1e-12)


def test_a_length_model_without_token_timing_answers_whole_after_its_latency():
    config = ProviderConfig(name="p", latency=0.25, output_tokens=40, output_distribution="exponential")
    provider, lengths = Provider(config, seed=3), stream(3, "p/output")
    for _ in range(200):
        drawn = max(1, round(-40 * math.log1p(-lengths.random())))
        call = provider.call(10.0, True, max_tokens=64)
        assert call == Call(0.25, Outcome.SUCCESS, 0.25, min(drawn, 64), drawn > 64)


@pytest.mark.parametrize("fields, streams", [
    ({"ttft": 0.2}, ["ttft"]),
    ({"output_tokens": 30.0}, ["output"]),
    ({"stream_error_rate": 0.5}, ["stream_errors"]),
    ({"ttft": 0.2, "ttft_distribution": "exponential", "output_tokens": 30.0, "output_distribution": "lognormal",
      "output_p99": 300.0, "stream_error_rate": 0.1, "error_rate": 0.2}, ["ttft", "output", "stream_errors"]),
])
def test_each_stream_the_model_turns_on_is_drawn_once_per_call(fields, streams):
    """Common random numbers: n calls move each stream of the token model that is on by
    exactly n draws, and the seed's two streams too; the others are not touched."""
    provider = Provider(ProviderConfig(name="p", **fields), seed=7)
    for _ in range(123):
        provider.call(1.0, True, 50)
    attributes = {"latency": "_latency_rng", "errors": "_error_rng", "ttft": "_ttft_rng", "output": "_output_rng",
                  "stream_errors": "_stream_error_rng"}
    for name, attribute in attributes.items():
        expected = stream(7, f"p/{name}")
        if name in ("latency", "errors", *streams):
            for _ in range(123):
                expected.random()
        assert getattr(provider, attribute).getstate() == expected.getstate(), name


@pytest.mark.parametrize("max_tokens, tokens, capped", [
    (None, 0, False),  # the fixed reply, all of it
    (1, 1, True),
    (8, 8, True),  # one token short of the reply
    (9, 0, False),  # the reply's own length: not cut
    (10, 0, False),
    (10_000, 0, False),
])
@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("timing", [
    {},  # no token model: the seed's providers
    {"ttft": 0.25, "decode_rate": 10.0},  # token timing, without a length model
    {"stream_error_rate": 1e-12},  # mid-stream errors on (this call's draw does not fail)
    {"ttft": 0.25, "stream_error_rate": 1e-12},
], ids=["plain", "ttft", "stream-errors", "ttft-and-stream-errors"])
def test_a_cap_shorter_than_the_fixed_reply_cuts_it(max_tokens, tokens, capped, streaming, timing):
    """A provider without a length model answers its fixed reply (9 tokens), whole at its
    first token, with or without token timing; a request's ``max_tokens`` below that cuts it
    to that many tokens, ``finish_reason: "length"``; the call's timing and draws are those
    of the uncapped call."""
    assert reply("p1")[1] == 9
    fixed = ProviderConfig(name="p1", latency=0.25, **timing)
    call = Provider(fixed, seed=1).call(1.0, streaming, max_tokens)
    uncapped = Provider(fixed, seed=1).call(1.0, streaming)
    assert (call.outcome, call.tokens, call.capped) == (Outcome.SUCCESS, tokens, capped)
    assert (call.duration, call.ttft) == (uncapped.duration, uncapped.ttft) == (0.25, 0.25)


@settings(max_examples=300, deadline=None)
@given(ttft=st.floats(0, 20), rate=st.floats(config.MIN_RATE, 1e4), length=st.floats(0, 1e4),
       distribution=st.sampled_from(["fixed", "exponential"]), error_rate=st.floats(0, 1),
       stream_error_rate=st.floats(0, 1), streaming=st.booleans(),
       max_tokens=st.none() | st.integers(1, 10_000), timeout=st.floats(config.MIN_SECONDS, 30), seed=st.integers(0, 99))
def test_every_call_is_consistent(ttft, rate, length, distribution, error_rate, stream_error_rate, streaming,
                                  max_tokens, timeout, seed):
    """Whatever the parameters: a call ends after its first token (or at the timeout before
    it), a success lasts exactly its tokens' time, no answer outgrows its cap, and the
    timeout bounds what it is meant to bound."""
    config = ProviderConfig(name="p", ttft=ttft, ttft_distribution=distribution, decode_rate=rate,
                            output_tokens=length, output_distribution=distribution, error_rate=error_rate,
                            stream_error_rate=stream_error_rate)
    provider = Provider(config, seed)
    for _ in range(20):
        call = provider.call(timeout, streaming, max_tokens)
        assert 0 <= call.ttft and 0 <= call.duration
        assert max_tokens is None or call.tokens <= max_tokens
        if call.capped:
            assert call.outcome is Outcome.SUCCESS and call.tokens == max_tokens
        if call.outcome is Outcome.TIMEOUT:
            assert call.duration == timeout
            assert not streaming or call.ttft > timeout
            continue
        assert call.ttft <= call.duration
        assert (call.ttft if streaming else call.duration) <= timeout
        if call.outcome is Outcome.SUCCESS and ttft:
            timed = call.tokens if length else 1  # a fixed reply comes whole at its first token
            assert call.duration == pytest.approx(call.ttft + (max(timed, 1) - 1) / rate, rel=1e-9)
        if call.outcome is Outcome.STREAM_ERROR:
            assert streaming and call.tokens >= 1


@pytest.mark.parametrize("streaming, idle, expected", [
    (True, 0.04, Call(0.44, Outcome.STREAM_ERROR, 0.4, 1)),  # tokens 50 ms apart: the second is late
    (True, 0.05, Call(5.4, Outcome.SUCCESS, 0.4, 101)),  # exactly on time
    (False, 0.04, Call(5.4, Outcome.SUCCESS, 0.4, 101)),  # a whole answer has no gaps to time
])
def test_the_stream_idle_timeout_bounds_the_gap_between_tokens(streaming, idle, expected):
    call = Provider(LLM, seed=1).call(10.0, streaming, None, idle)
    assert (call.outcome, call.tokens) == (expected.outcome, expected.tokens)
    assert (call.duration, call.ttft) == pytest.approx((expected.duration, expected.ttft), rel=1e-12)
