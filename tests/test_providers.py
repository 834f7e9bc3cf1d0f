"""Simulated providers: latency quantiles, one draw per stream per call, outcomes."""

from __future__ import annotations

import json
import math
from random import Random
from statistics import NormalDist

import pytest

from gwlab import config
from gwlab.config import ProviderConfig, Scenario
from gwlab.providers import Call, Outcome, Provider, latency_quantile, mean_latency
from gwlab.sim import simulate
from gwlab.streams import stream
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
        return Call(timeout, Outcome.TIMEOUT)
    if config.outage == "error" or u_error < config.error_rate:
        return Call(latency, Outcome.ERROR)
    return Call(latency, Outcome.SUCCESS)


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
    provider = Provider(cfg, stream(3, "p/latency"), stream(3, "p/errors"))
    lat, err = stream(3, "p/latency"), stream(3, "p/errors")
    for _ in range(300):
        assert provider.call(timeout=1.0) == replay(cfg, 1.0, lat.random(), err.random())


def test_common_random_numbers_across_configurations():
    # The same seed under every configuration: after n calls each stream has moved by
    # exactly n draws, so the (n+1)-th call sees the same two uniforms in every variant.
    streams = [(stream(9, "p/latency"), stream(9, "p/errors")) for _ in CONFIGS]
    providers = [Provider(cfg, lat, err) for cfg, (lat, err) in zip(CONFIGS, streams)]
    for _ in range(250):
        for p in providers:
            p.call(timeout=1.0)
    assert len({lat.getstate() for lat, _ in streams}) == 1
    assert len({err.getstate() for _, err in streams}) == 1


def test_changing_error_rate_only_flips_outcomes_where_the_draw_lies_between():
    low = Provider(ProviderConfig(name="p", latency=0.1, error_rate=0.1), stream(4, "lat"), stream(4, "err"))
    high = Provider(ProviderConfig(name="p", latency=0.1, error_rate=0.3), stream(4, "lat"), stream(4, "err"))
    errors = stream(4, "err")
    for _ in range(1000):
        a, b, u = low.call(10.0), high.call(10.0), errors.random()
        assert (a.outcome, b.outcome) == (
            Outcome.ERROR if u < 0.1 else Outcome.SUCCESS,
            Outcome.ERROR if u < 0.3 else Outcome.SUCCESS,
        )
        # Every error at the low rate is also an error at the high rate.
        assert not (a.outcome is Outcome.ERROR and b.outcome is Outcome.SUCCESS)


def test_scaling_latency_scales_every_call_by_the_same_factor():
    one = Provider(ProviderConfig(name="p", latency=0.5, distribution="exponential"), stream(5, "l"), Random(0))
    two = Provider(ProviderConfig(name="p", latency=1.0, distribution="exponential"), stream(5, "l"), Random(0))
    for _ in range(500):
        assert two.call(1e9).duration == pytest.approx(2 * one.call(1e9).duration, rel=1e-12)


def test_timeout_cuts_a_slow_call_to_the_timeout():
    slow = Provider(ProviderConfig(name="p", latency=3.0), Random(1), Random(1))
    assert slow.call(timeout=2.5) == Call(2.5, Outcome.TIMEOUT)
    assert slow.call(timeout=3.0) == Call(3.0, Outcome.SUCCESS)  # exactly at the limit is in time


def test_timeout_wins_over_error():
    slow = Provider(ProviderConfig(name="p", latency=3.0, error_rate=1.0), Random(1), Random(1))
    assert slow.call(timeout=1.0) == Call(1.0, Outcome.TIMEOUT)


def test_outage_error_fails_fast_at_its_latency():
    p = Provider(ProviderConfig(name="p", latency=0.25, outage="error"), Random(1), Random(1))
    assert {p.call(10.0) for _ in range(20)} == {Call(0.25, Outcome.ERROR)}


def test_outage_hang_always_times_out():
    p = Provider(ProviderConfig(name="p", latency=0.01, outage="hang"), Random(1), Random(1))
    assert {p.call(10.0) for _ in range(20)} == {Call(10.0, Outcome.TIMEOUT)}


def test_error_rate_bounds():
    never = Provider(ProviderConfig(name="p", error_rate=0.0), Random(2), Random(2))
    always = Provider(ProviderConfig(name="p", error_rate=1.0), Random(2), Random(2))
    assert {never.call(10.0).outcome for _ in range(500)} == {Outcome.SUCCESS}
    assert {always.call(10.0).outcome for _ in range(500)} == {Outcome.ERROR}


def test_name_comes_from_config():
    assert Provider(ProviderConfig(name="p7"), Random(0), Random(0)).name == "p7"


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
        call = Provider(provider, _Fixed(u), _Fixed(u)).call(scenario.gateway.timeout)
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
