"""The simulator's replicas (gwlab.fleet): N gateways sharing the providers, with one bucket
or one each, and a breaker each."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlab import simulate
from gwlab.breaker import State
from gwlab.config import ConfigError, Scenario, from_dict
from gwlab.fleet import Fleet, merge
from gwlab.router import ProviderState, Snapshot
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

HEALTHY_PAIR = {"p1": {"weight": 1.0, "latency": 0.01, "error_rate": 0.0},
                "p2": {"weight": 1.0, "latency": 0.01, "error_rate": 0.0}}


def _open_loop(rate: float, limit: float, burst: float, backend: str) -> dict:
    return {"limiter": {"rate": limit, "burst": burst, "backend": backend},
            "workload": {"mode": "open", "rate": rate, "max_in_flight": 100_000}, "providers": HEALTHY_PAIR}


@settings(max_examples=25, deadline=None)
@given(replicas=st.integers(2, 8), rate=st.floats(50, 3000), limit=st.floats(10, 2000),
       burst=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_a_shared_bucket_admits_exactly_what_one_gateway_admits(replicas, rate, limit, burst, seed):
    # Admission sees only the arrivals and the bucket: however many replicas share it, the
    # same arrivals meet the same bucket, so the same ones get in.
    s = _open_loop(rate, limit, burst, "redis")
    one = simulate(s, duration=5, seed=seed).summary()
    many = simulate(s, duration=5, seed=seed, replicas=replicas).summary()
    assert "saturated" not in many
    assert many["offered"] == one["offered"]
    assert many["admitted"] == one["admitted"] <= burst + limit * 5 + 1


@settings(max_examples=25, deadline=None)
@given(replicas=st.integers(1, 8), rate=st.floats(50, 3000), limit=st.floats(10, 2000),
       burst=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_local_buckets_admit_at_most_their_sum(replicas, rate, limit, burst, seed):
    # Each replica's bucket starts full and refills at the limit: none admits more than
    # burst + limit x duration (and a whole token at most of rounding).
    summary = simulate(_open_loop(rate, limit, burst, "local"), duration=5, seed=seed, replicas=replicas).summary()
    assert summary["admitted"] <= replicas * (burst + limit * 5 + 1)


@pytest.mark.parametrize("replicas", [2, 4, 8])
def test_local_limits_let_n_times_the_rate_through_and_a_shared_one_holds_it(replicas):
    # Offered 1.5 x the limit per replica: every replica's bucket binds, so N local buckets
    # admit N times the limit (less only the tokens wasted while a bucket is full: a
    # replica receives far more than it admits, so they are a few); the shared one admits
    # the limit (and its burst) once.
    limit, burst, duration = 200.0, 20, 20.0
    offered = 1.5 * limit * replicas
    local = simulate(_open_loop(offered, limit, burst, "local"), duration=duration, seed=5, replicas=replicas)
    shared = simulate(_open_loop(offered, limit, burst, "redis"), duration=duration, seed=5, replicas=replicas)
    once = burst + limit * duration
    assert 0.99 * replicas * once <= local.summary()["admitted"] <= replicas * (once + 1)
    assert 0.99 * once <= shared.summary()["admitted"] <= once + 1


@pytest.mark.parametrize("replicas", [1, 2, 4, 8])
def test_each_replica_learns_of_a_dead_provider_on_its_own(replicas):
    # One client asking in turn (no two calls overlap), p1 failing every call, breakers
    # that open after 3 failures and stay open for the run: each replica's breaker lets
    # exactly its own 3 failures through, so the provider takes N x 3 of them.
    s = {"workload": {"mode": "closed", "clients": 1, "think_time": 0.05},
         "breaker": {"failure_threshold": 3, "base_delay": 1000.0, "max_cooldown": 1000.0},
         "providers": {"p1": {"weight": 1.0, "latency": 0.01, "error_rate": 1.0},
                       "p2": {"weight": 1.0, "latency": 0.01, "error_rate": 0.0}}}
    result = simulate(s, duration=30, seed=3, replicas=replicas)
    summary = result.summary()
    assert summary["providers"]["p1"]["codes"]["502"] == 3 * replicas
    assert summary["trips"] == replicas
    openings = [(t.replica, t.provider, t.target) for t in result.transitions]
    if replicas == 1:
        assert openings == [(None, "p1", "open")]
        assert "replicas" not in summary
        assert summary["providers"]["p1"]["state"] == "open"
    else:
        assert sorted(openings) == [(i, "p1", "open") for i in range(replicas)]
        assert [r["replica"] for r in summary["replicas"]] == list(range(replicas))
        assert all(r["providers"]["p1"] == {"state": "open", "trips": 1, "fallbacks": 0} for r in summary["replicas"])
        assert summary["providers"]["p1"]["state"] == f"open×{replicas}"
        assert all(t["replica"] == i for t, (i, _, _) in zip(result.to_dict()["transitions"], openings))


def test_replicas_share_a_providers_capacity():
    # Two slots and no queue, 4 replicas: the provider never serves more than 2 calls at
    # once, whoever sent them, and refuses the rest itself (429 from p).
    s = {"workload": {"mode": "open", "rate": 400.0, "max_in_flight": 100_000},
         "providers": {"p": {"weight": 1.0, "latency": 0.05, "error_rate": 0.0, "capacity": 2, "queue": 0}}}
    result = simulate(s, duration=10, seed=2, replicas=4, keep_requests=True)
    assert max(result.timeseries().columns()["p.running"]) == 2
    assert result.summary()["providers"]["p"]["codes"]["429"] > 0
    served = sorted((r.done - r.latency, r.done) for r in result.requests if r.status == 200)
    ends: list[float] = []
    for start, done in served:  # the most calls in service at any call's start
        ends = [e for e in ends if e > start] + [done]
        assert len(ends) <= 2


def test_the_same_seed_gives_the_same_run_and_the_replicas_their_own_draws():
    s = {"workload": {"mode": "open", "rate": 300.0}}
    a = simulate(s, duration=20, seed=9, replicas=3).to_json()
    assert a == simulate(s, duration=20, seed=9, replicas=3).to_json()
    assert a != simulate(s, duration=20, seed=9, replicas=2).to_json()
    assert json.loads(a)["summary"]["replicas"][2]["replica"] == 2


@pytest.mark.parametrize("value, shown, allowed", [
    (0, "0", "a whole number >= 1 and <= 64"), (65, "65", "a whole number >= 1 and <= 64"),
    (1.5, "1.5", "a whole number"), ("2", "'2'", "a whole number"), (None, "null", "a whole number"),
])
def test_a_bad_replica_count_is_refused_naming_it(value, shown, allowed):
    """Values are shown as a scenario file writes them (None as null)."""
    with pytest.raises(ConfigError) as error:
        simulate(None, duration=1, replicas=value)
    assert f"simulate: replicas = {shown}: " in str(error.value) and allowed in str(error.value)


def test_a_fleet_needs_a_replica():
    with pytest.raises(ValueError, match="count = 0: expected at least 1 replica"):
        Fleet(Scenario(), 1, 0)


def _snapshot(tokens: float, states: dict[str, tuple[State, float, int, int]]) -> Snapshot:
    return Snapshot(3.0, tokens, 10.0, 5.0, sum(s[2] for s in states.values()),
                    {name: ProviderState(state, left, 1.0, in_flight, trips, busy=2, waiting=1)
                     for name, (state, left, in_flight, trips) in states.items()})


@pytest.mark.parametrize("states, shown", [
    ([State.HEALTHY, State.HEALTHY], (State.HEALTHY, 0.0)),
    ([State.HEALTHY, State.FAILING], (State.FAILING, 0.0)),
    ([State.FAILING, State.HALF_OPEN], (State.HALF_OPEN, 0.0)),
    ([State.OPEN, State.HALF_OPEN], (State.OPEN, 4.0)),
    ([State.OPEN, State.OPEN], (State.OPEN, 4.0)),  # the longer cooldown
])
def test_a_merged_snapshot_shows_the_least_available_state(states, shown):
    left = {State.OPEN: 4.0}
    snapshots = [_snapshot(1.0, {"p": (state, left.get(state, 0.0) / (i + 1), 1, 1)}) for i, state in enumerate(states)]
    merged = merge(snapshots, shared=False)
    p = merged.providers["p"]
    assert (p.state, p.cooldown_left) == shown
    assert (p.in_flight, p.trips, p.busy, p.waiting) == (2, 2, 2, 1)  # the host's slots, once


@pytest.mark.parametrize("shared, tokens, burst, rate", [(True, 1.0, 10.0, 5.0), (False, 3.0, 20.0, 10.0)])
def test_a_merged_snapshot_counts_a_shared_bucket_once(shared, tokens, burst, rate):
    merged = merge([_snapshot(1.0, {}), _snapshot(2.0, {})], shared)
    assert (merged.tokens, merged.burst, merged.rate) == (tokens, burst, rate)


def test_the_report_says_whose_breaker_changed():
    from gwlab.report import render

    s = {"workload": {"mode": "closed", "clients": 1, "think_time": 0.05},
         "breaker": {"failure_threshold": 3, "base_delay": 1000.0, "max_cooldown": 1000.0},
         "providers": {"p1": {"weight": 1.0, "latency": 0.01, "error_rate": 1.0},
                       "p2": {"weight": 1.0, "latency": 0.01, "error_rate": 0.0}}}
    page = render(simulate(s, duration=30, seed=3, replicas=2))
    assert "<th>replica</th><th>time (s)</th>" in page and "<h3>Each replica's breakers</h3>" in page
    assert "<th>replica</th>" not in render(simulate(s, duration=30, seed=3))


def test_replicas_sharing_a_bucket_see_it_whichever_of_them_reset_it():
    # A reset gives the admission new buckets: every router reads them through the
    # admission they share, not a copy of its own from before.
    scenario = from_dict({"limiter": {"backend": "redis", "rate": 100.0, "burst": 1000.0, "tpm": 6000}})
    first, second = Fleet(scenario, 1, 2).routers
    for _ in range(600):
        assert first.admit(1.0, 5) is None
    first.reset(5.0)
    for _ in range(500):
        assert second.admit(5.0, 2) is None
    assert first.snapshot(5.0) == second.snapshot(5.0)
    assert (first.bucket.tokens(5.0), first.tokens.level(5.0)) == (500.0, 5000.0)
