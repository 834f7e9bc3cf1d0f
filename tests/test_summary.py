"""The run summary every shell builds: each field with its one meaning, in exact numbers."""

from __future__ import annotations

import json

import pytest

from gwlab import config
from gwlab.breaker import State, Transition
from gwlab.router import ProviderState, Snapshot
from gwlab.stats import NO_PROVIDER, RELATIVE_ERROR, TRANSPORT_ERROR, Tally
from gwlab.summary import Trips, requested_rate, summarise
from tests.test_stats import make_tally

OPEN_LOOP = config.merge(config.Scenario(), {"workload": {"mode": "open", "rate": 5.0}})


def at_end(**states: State) -> Snapshot:
    return Snapshot(2.0, 10.0, 1000.0, 1000.0, 0,
                    {name: ProviderState(state, 0.0, 1.0, 0, 0) for name, state in states.items()})


def summary_of(tally: Tally, *, scenario: config.Scenario = OPEN_LOOP, duration: float = 2.0, sent: int = 0,
               saturated: int = 0, end: Snapshot | None = None, trips=None, fallbacks=None, workloads=None,
               events_refused: int = 0, retries=None):
    return summarise(tally, mode="live", seed=1, scenario=scenario, duration=duration, sent=sent, saturated=saturated,
                     workloads=workloads or [(0.0, scenario.workload)], end=end or at_end(),
                     trips=trips or {}, fallbacks=fallbacks or {}, events_refused=events_refused,
                     retries=retries or {})


def test_summary_exact():
    s = summary_of(make_tally(), sent=15, end=at_end(p1=State.HEALTHY, p2=State.FAILING, p3=State.OPEN),
                   trips={"p3": 2, "p2": 1}, fallbacks={"p3": 1}, events_refused=2)
    assert s["duration"] == 2.0
    assert (s["offered"], s["admitted"]) == (14, 10)
    assert s["codes"] == {"200": 7, "429": 3, "499": 1, "502": 2, "504": 1}
    assert s["rates"] == {"offered": 7.0, "admitted": 5.0, "ok": 3.5}
    assert s["availability"] == 7 / 10
    assert s["goodput"] == 7 / 14
    assert s["providers"] == {
        "p1": {"requests": 7, "share": 7 / 10, "codes": {"200": 6, "502": 1, "504": 0},
               "trips": 0, "fallbacks": 0, "state": "healthy"},
        "p2": {"requests": 2, "share": 2 / 10, "codes": {"200": 1, "502": 1, "504": 0},
               "trips": 1, "fallbacks": 0, "state": "failing"},
        "p3": {"requests": 1, "share": 1 / 10, "codes": {"200": 0, "502": 0, "504": 1},
               "trips": 2, "fallbacks": 1, "state": "open"},
    }
    assert (s["trips"], s["fallbacks"]) == (3, 1)
    assert s["latency"]["max"] == 10.0
    assert s["latency"]["mean"] == pytest.approx(11.7 / 10)
    assert s["latency"]["p50"] == pytest.approx(0.1, rel=RELATIVE_ERROR)
    assert s["latency"]["p95"] == pytest.approx(0.5, rel=RELATIVE_ERROR)  # rank floor(0.95 * 9) = 8
    assert s["latency"]["p99"] == pytest.approx(0.5, rel=RELATIVE_ERROR)
    assert (s["mode"], s["seed"], s["scenario"]) == ("live", 1, OPEN_LOOP.to_dict())
    # Sent per second, not answered per second: 15 sent, 14 counted.
    assert (s["clients"], s["requested_rate"], s["achieved_offered_rate"]) == (None, 5.0, 7.5)
    assert s["events_refused"] == 2
    assert "saturated" not in s  # an added field, shown only when it holds something
    json.dumps(s)  # JSON-ready


def test_arrivals_not_sent_are_counted_apart_from_every_answer():
    s = summary_of(make_tally(), sent=15, saturated=45)
    assert s["saturated"] == 45
    assert (s["offered"], s["achieved_offered_rate"], s["requested_rate"]) == (14, 7.5, 5.0)


def test_a_transport_error_is_named_in_the_codes():
    tally = Tally()
    tally.record(TRANSPORT_ERROR, NO_PROVIDER, None)
    tally.record(200, "p1", 0.1)
    assert summary_of(tally)["codes"] == {"200": 1, "transport_error": 1}


def test_summary_of_nothing_has_no_ratios():
    s = summary_of(Tally(), duration=0.0, end=at_end(p1=State.HEALTHY))
    assert (s["offered"], s["admitted"], s["availability"], s["goodput"]) == (0, 0, None, None)
    assert s["rates"] == {"offered": None, "admitted": None, "ok": None}
    assert s["achieved_offered_rate"] is None
    assert s["latency"] == {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    assert s["providers"]["p1"]["share"] is None


def test_summary_only_rejections():
    tally = Tally()
    for _ in range(4):
        tally.record(429, "none", 0.0)
    s = summary_of(tally, duration=1.0)
    assert (s["offered"], s["admitted"], s["availability"], s["goodput"]) == (4, 0, None, 0.0)


def test_clients_are_those_of_a_closed_loop_at_the_start():
    s = summary_of(Tally(), scenario=config.Scenario())
    assert (s["clients"], s["requested_rate"]) == (config.CLIENTS, None)


def test_requested_rate_is_averaged_over_the_run_and_none_with_any_closed_loop():
    slow, fast = (config.WorkloadConfig(mode="open", rate=r) for r in (10.0, 40.0))
    assert requested_rate([(0.0, slow)], 4.0) == 10.0
    assert requested_rate([(0.0, slow), (1.0, fast)], 4.0) == (10.0 * 1 + 40.0 * 3) / 4
    assert requested_rate([(0.0, slow), (5.0, fast)], 4.0) == 10.0
    assert requested_rate([(0.0, slow), (1.0, config.WorkloadConfig())], 4.0) is None


def test_trips_count_every_transition_to_open():
    trips = Trips()
    for source, target in ((State.FAILING, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.OPEN),
                           (State.OPEN, State.OPEN), (State.OPEN, State.HEALTHY), (State.HEALTHY, State.FAILING)):
        trips(Transition(0.0, "p1", source, target, 1.0 if target is State.OPEN else 0.0))
    assert trips.counts == {"p1": 3}


@pytest.mark.parametrize(("retries", "shown"), [
    ({}, None),
    ({"retry": 0, "attempts": 0, "deadline": 0, "budget": 0}, None),  # retries on, none needed
    ({"budget": 3}, {"retry": 0, "attempts": 0, "deadline": 0, "budget": 3}),
    ({"retry": 5, "deadline": 1}, {"retry": 5, "attempts": 0, "deadline": 1, "budget": 0}),
])
def test_retries_show_only_when_the_gateway_decided_any(retries, shown):
    assert summary_of(make_tally(), retries=retries).get("retries") == shown


def test_admitted_counts_a_providers_429_and_not_the_gateways():
    tally = Tally()
    tally.record(200, "p1", 0.1)
    tally.record(429, "p1", 0.0)
    tally.record(429, NO_PROVIDER, 0.0)
    s = summary_of(tally, end=at_end(p1=State.HEALTHY))
    assert (s["offered"], s["admitted"], s["availability"]) == (3, 2, 0.5)
    assert s["codes"] == {"200": 1, "429": 2}
    assert (s["providers"]["p1"]["requests"], s["providers"]["p1"]["codes"]["429"]) == (2, 1)
