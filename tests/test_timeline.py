"""Scripted events as cumulative scenarios over time (pure: the time is passed in)."""

from __future__ import annotations

import dataclasses

import pytest

from gwlab import config, timeline
from gwlab.config import ConfigError, Event


def with_events(*events) -> config.Scenario:
    return config.from_dict({"events": list(events)})


def test_each_step_builds_on_the_earlier_ones():
    s = with_events(
        {"at": 30.0, "breaker": {"base_delay": 40.0}},            # valid only after the first event
        {"at": 10.0, "breaker": {"max_cooldown": 60.0}},
        {"at": 30.0, "providers": {"p2": {"outage": "hang"}}},
    )
    steps = timeline.steps(s)
    assert [st.at for st in steps] == [10.0, 30.0, 30.0]
    assert steps[0].scenario.breaker.max_cooldown == 60.0
    assert steps[0].scenario.breaker.base_delay == config.BASE_DELAY
    assert (steps[1].scenario.breaker.base_delay, steps[1].scenario.breaker.max_cooldown) == (40.0, 60.0)
    assert steps[2].scenario.provider("p2").outage == "hang"
    assert steps[2].scenario.breaker.base_delay == 40.0
    assert steps[1].patch == {"breaker": {"base_delay": 40.0}}


def test_a_patch_valid_only_out_of_order_is_rejected_at_load():
    with pytest.raises(ConfigError, match=r"^scenario: event at 10 s: breaker.max_cooldown = 30.0: "
                                          r"expected a number >= breaker.base_delay \(40\)$"):
        with_events({"at": 10.0, "breaker": {"base_delay": 40.0}}, {"at": 20.0, "breaker": {"max_cooldown": 60.0}})


def test_scenario_without_events_has_no_steps():
    assert timeline.steps(config.Scenario()) == ()


def test_timeline_hands_out_due_steps_once():
    tl = timeline.Timeline(with_events({"at": 5.0, "workload": {"rate": 10.0}}, {"at": 8.0, "workload": {"rate": 20.0}}))
    assert tl.due(4.999) == []
    assert [st.at for st in tl.due(5.0)] == [5.0]
    assert tl.due(6.0) == []
    assert [st.at for st in tl.due(100.0)] == [8.0]
    assert tl.due(200.0) == []


def test_scenario_at_a_time():
    s = with_events({"at": 5.0, "workload": {"rate": 10.0}}, {"at": 8.0, "workload": {"rate": 20.0}})
    tl = timeline.Timeline(s)
    assert tl.scenario_at(0.0) is s
    assert tl.scenario_at(4.9).workload.rate == config.OPEN_RATE
    assert tl.scenario_at(5.0).workload.rate == 10.0
    assert tl.scenario_at(7.9).workload.rate == 10.0
    assert tl.scenario_at(8.0).workload.rate == 20.0


def test_negative_time_in_a_hand_built_scenario_is_named():
    s = dataclasses.replace(config.Scenario(), events=(Event(-1.0, {"workload": {"rate": 5.0}}),))
    with pytest.raises(ConfigError, match=r"scenario: events\[0\].at = -1.0: expected a time in seconds >= 0"):
        timeline.steps(s)


def test_unknown_provider_in_a_hand_built_scenario_is_named():
    s = dataclasses.replace(config.Scenario(), events=(Event(3.0, {"providers": {"p7": {"weight": 1.0}}}),))
    with pytest.raises(ConfigError, match=r"scenario: event at 3 s: unknown key 'providers.p7'"):
        timeline.steps(s)


def test_loading_events_from_dict_checks_them_cumulatively_and_terminates():
    # Regression: validating events used to recurse without end.
    s = with_events({"at": 1.0, "providers": {"p1": {"outage": "error"}}})
    assert s.events == (Event(1.0, {"providers": {"p1": {"outage": "error"}}}),)
    assert config.merge(s, {"limiter": {"rate": 5.0}}).events == s.events
