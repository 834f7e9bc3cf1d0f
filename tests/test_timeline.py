"""Scripted events: checked cumulatively at load time, played as patches by a Player."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math

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


def test_the_states_are_the_start_then_each_step_each_named_as_messages_name_it():
    s = with_events({"at": 12.5, "breaker": {"base_delay": 20.0}}, {"at": 3.0, "limiter": {"rate": 7.0}})
    states = list(timeline.states(s, "f.toml"))
    assert [where for _, where in states] == ["f.toml", "f.toml: event at 3 s", "f.toml: event at 12.5 s"]
    assert [state for state, _ in states] == [s, *(step.scenario for step in timeline.steps(s))]
    assert list(timeline.states(config.Scenario())) == [(config.Scenario(), "scenario")]


class Shell:
    """A shell reduced to its scenario in force: what a player's ``apply`` changes."""

    def __init__(self, scenario: config.Scenario) -> None:
        self.scenario = scenario
        self.applied: list[float] = []

    def configure(self, patch, source: str = "runtime") -> None:
        self.scenario = config.merge(self.scenario, patch, source)

    def apply(self, event: Event, source: str) -> None:
        self.configure(event.patch, source)
        self.applied.append(event.at)


def test_player_applies_each_event_once_when_its_time_comes():
    shell = Shell(with_events({"at": 8.0, "workload": {"rate": 20.0}}, {"at": 5.0, "workload": {"rate": 10.0}}))
    player = timeline.Player(shell.scenario, shell.apply)
    assert player.next_at == 5.0
    assert player.play(4.999) == []
    assert [e.at for e in player.play(5.0)] == [5.0] and shell.scenario.workload.rate == 10.0
    assert player.play(6.0) == [] and player.next_at == 8.0
    assert [e.at for e in player.play(100.0)] == [8.0] and shell.scenario.workload.rate == 20.0
    assert player.play(200.0) == [] and player.next_at == math.inf
    assert shell.applied == [5.0, 8.0] and player.refused == 0


def test_a_scheduled_event_plays_after_the_scripted_ones_of_its_time():
    shell = Shell(with_events({"at": 5.0, "workload": {"rate": 10.0}}, {"at": 8.0, "workload": {"rate": 20.0}}))
    player = timeline.Player(shell.scenario, shell.apply)
    player.play(5.0)
    player.schedule(Event(8.0, {"workload": {"rate": 30.0}}))
    player.schedule(Event(6.0, {"workload": {"rate": 15.0}}))
    assert [e.at for e in player.events] == [6.0, 8.0, 8.0] and player.next_at == 6.0
    assert [e.patch["workload"]["rate"] for e in player.play(8.0)] == [15.0, 20.0, 30.0]
    assert shell.scenario.workload.rate == 30.0 and shell.applied == [5.0, 6.0, 8.0, 8.0]


def test_an_event_is_a_patch_on_the_scenario_in_force_so_runtime_changes_are_kept():
    shell = Shell(with_events({"at": 1.0, "workload": {"rate": 10.0}}, {"at": 2.0, "providers": {"p1": {"weight": 0.0}}}))
    player = timeline.Player(shell.scenario, shell.apply)
    player.play(1.0)
    shell.configure({"limiter": {"rate": 50.0}, "workload": {"rate": 15.0}})
    player.play(2.0)
    assert (shell.scenario.limiter.rate, shell.scenario.workload.rate, shell.scenario.provider("p1").weight) == \
        (50.0, 15.0, 0.0)


def test_an_event_that_no_longer_fits_is_logged_counted_and_the_next_ones_still_apply(caplog):
    # Valid at load (max_cooldown is 30 then); a runtime change makes it refused at 1 s.
    shell = Shell(with_events({"at": 1.0, "breaker": {"base_delay": 20.0}}, {"at": 2.0, "limiter": {"rate": 500.0}}))
    player = timeline.Player(shell.scenario, shell.apply)
    shell.configure({"breaker": {"max_cooldown": 10.0}})
    with caplog.at_level(logging.WARNING, logger="gwlab.timeline"):
        assert player.play(3.0) == [shell.scenario.events[1]]
    assert player.refused == 1
    assert (shell.scenario.limiter.rate, shell.scenario.breaker.base_delay) == (500.0, config.BASE_DELAY)
    assert [r.getMessage() for r in caplog.records] == [
        "event at 1 s: breaker.base_delay = 20.0: not applied: scenario: event at 1 s: breaker.max_cooldown = "
        "10.0: expected a number >= breaker.base_delay (20)"
    ]


def test_describe_names_every_changed_field_with_its_dotted_key():
    event = Event(60.0, {"providers": {"p1": {"outage": "error"}}, "workload": {"rate": 3000.0}})
    assert timeline.describe(event) == "event at 60 s: providers.p1.outage = 'error', workload.rate = 3000.0"
    event = Event(1.0, {"limiter": {"redis_url": "redis://:s3cret@10.0.0.5:6379/0"}})
    assert timeline.describe(event) == "event at 1 s: limiter.redis_url = 'redis://:***@10.0.0.5:6379/0'"


def test_follow_plays_the_events_on_a_clock():
    t = [100.0]
    shell = Shell(with_events({"at": 0.0, "workload": {"rate": 10.0}}, {"at": 0.02, "workload": {"rate": 20.0}}))
    player = timeline.Player(shell.scenario, shell.apply)

    def clock() -> float:
        return t[0]

    async def main():
        playing = asyncio.create_task(timeline.follow(player, clock, 100.0))
        await asyncio.sleep(0.005)
        assert shell.applied == [0.0]
        t[0] = 100.02
        await asyncio.wait_for(playing, 1.0)

    asyncio.run(main())
    assert shell.applied == [0.0, 0.02] and shell.scenario.workload.rate == 20.0


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


@pytest.mark.parametrize("start, events, followed", [
    ({}, (), False),
    ({"timeout": 2.0}, (), True),
    ({"retry_policy": "fixed"}, (), True),
    ({}, ({"at": 50.0, "workload": {"retry_policy": "openai_sdk"}},), True),
    ({}, ({"at": 5.0, "workload": {"timeout": 1.0}}, {"at": 9.0, "workload": {"timeout": 0.0}}), True),
    ({}, ({"at": 5.0, "workload": {"rate": 3.0}},), False),
], ids=["never", "timeout", "retries", "switched on later", "on then off", "other fields"])
def test_user_requests_are_followed_when_any_state_of_the_run_times_out_or_retries(start, events, followed):
    assert timeline.follows_users(config.from_dict({"workload": start, "events": list(events)})) is followed


def test_an_event_that_will_be_refused_is_skipped_as_the_player_skips_it():
    s = dataclasses.replace(config.Scenario(), events=(
        Event(1.0, {"breaker": {"max_cooldown": 0.5}, "workload": {"timeout": 1.0}}),
        Event(2.0, {"limiter": {"rate": 500.0}})))
    assert timeline.follows_users(s) is False
    fits = dataclasses.replace(s, events=(*s.events, Event(3.0, {"workload": {"retry_policy": "fixed"}})))
    assert timeline.follows_users(fits) is True
