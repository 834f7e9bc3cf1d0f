"""CircuitBreaker: every transition, exact cooldowns and exact announcement times.

Times are sums of powers of two, so every ``opened_at + cooldown`` is exact in floating point.
"""

from __future__ import annotations

import pytest

from gwlab.breaker import CircuitBreaker, Permit, State, Transition, cooldown_for
from gwlab.config import BASE_DELAY, FAILURE_THRESHOLD, HALF_OPEN_MAX_CALLS, MAX_COOLDOWN, BreakerConfig

H, F, O, HO = State.HEALTHY, State.FAILING, State.OPEN, State.HALF_OPEN


def make(**overrides) -> tuple[CircuitBreaker, list[Transition]]:
    heard: list[Transition] = []
    return CircuitBreaker("p1", BreakerConfig(**overrides), [heard.append]), heard


def fail(breaker: CircuitBreaker, now: float, times: int = 1) -> None:
    for _ in range(times):
        breaker.record(breaker.acquire(now), now, ok=False)


def succeed(breaker: CircuitBreaker, now: float) -> bool:
    return breaker.record(breaker.acquire(now), now, ok=True)


def test_defaults_are_the_named_constants():
    config = BreakerConfig()
    assert (config.failure_threshold, config.base_delay, config.max_cooldown, config.half_open_max_calls) == (
        FAILURE_THRESHOLD, BASE_DELAY, MAX_COOLDOWN, HALF_OPEN_MAX_CALLS,
    ) == (3, 1.0, 30.0, 1)
    assert config.enabled is True


def test_golden_cooldown_table():
    config = BreakerConfig(base_delay=1.0, max_cooldown=30.0)
    assert [cooldown_for(n, config) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_cooldown_stays_capped_after_very_many_trips():
    config = BreakerConfig(base_delay=1.0, max_cooldown=30.0)
    assert cooldown_for(1025, config) == 30.0
    assert cooldown_for(100_000, config) == 30.0


def test_cooldown_with_other_base_and_cap():
    config = BreakerConfig(base_delay=0.25, max_cooldown=5.0)
    assert [cooldown_for(n, config) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0]


def test_golden_table_by_driving_a_breaker():
    breaker, heard = make()
    now = 0.0
    fail(breaker, now, 3)
    cooldowns = []
    for _ in range(7):
        cooldowns.append(breaker.cooldown)
        assert breaker.state(now) is O
        now = breaker.reopens_at
        assert breaker.state(now) is HO
        fail(breaker, now)  # the probe fails
    assert cooldowns == [1, 2, 4, 8, 16, 30, 30]
    assert [t.cooldown for t in heard if t.target is O] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert breaker.trips == 8


def test_every_transition_of_the_seed_diagram_with_exact_times():
    breaker, heard = make()
    fail(breaker, 0.0)
    assert breaker.state(0.0) is F
    fail(breaker, 0.25)
    assert breaker.state(0.25) is F
    fail(breaker, 0.5)
    assert breaker.state(0.5) is O
    assert breaker.cooldown_left(0.75) == 0.75
    assert breaker.state(1.25) is O
    assert breaker.state(1.5) is HO
    assert breaker.cooldown_left(1.5) == 0.0
    fail(breaker, 1.5)  # failed probe: open again, twice as long
    assert breaker.state(3.25) is O
    assert breaker.state(3.5) is HO
    assert succeed(breaker, 3.5)
    assert breaker.state(3.5) is H
    assert heard == [
        Transition(0.0, "p1", H, F, 0.0),
        Transition(0.5, "p1", F, O, 1.0),
        Transition(1.5, "p1", O, HO, 0.0),
        Transition(1.5, "p1", HO, O, 2.0),
        Transition(3.5, "p1", O, HO, 0.0),
        Transition(3.5, "p1", HO, H, 0.0),
    ]


def test_failing_returns_to_healthy_on_success_and_the_count_restarts():
    breaker, heard = make()
    fail(breaker, 0.0, 2)
    assert breaker.failures == 2
    assert succeed(breaker, 1.0)
    assert breaker.state(1.0) is H
    assert breaker.failures == 0
    fail(breaker, 2.0, 2)  # two more do not reach the threshold of three
    assert breaker.state(2.0) is F
    assert heard == [
        Transition(0.0, "p1", H, F, 0.0),
        Transition(1.0, "p1", F, H, 0.0),
        Transition(2.0, "p1", H, F, 0.0),
    ]


def test_success_while_healthy_announces_nothing():
    breaker, heard = make()
    assert succeed(breaker, 0.0)
    assert heard == []
    assert breaker.state(0.0) is H


def test_threshold_one_opens_on_first_failure():
    breaker, heard = make(failure_threshold=1)
    fail(breaker, 2.0)
    assert heard == [Transition(2.0, "p1", H, O, 1.0)]


def test_half_open_announced_at_expiry_even_when_noticed_later_by_settle():
    breaker, heard = make()
    fail(breaker, 0.0, 3)
    breaker.settle(0.75)
    assert heard[-1].target is O
    breaker.settle(1.75)
    assert heard[-1] == Transition(1.0, "p1", O, HO, 0.0)
    breaker.settle(5.0)
    assert [t.target for t in heard] == [F, O, HO]  # announced once


def test_half_open_announced_at_expiry_when_noticed_by_acquire():
    breaker, heard = make()
    fail(breaker, 0.0, 3)
    permit = breaker.acquire(2.5)
    assert permit.probe
    assert heard[-1] == Transition(1.0, "p1", O, HO, 0.0)


def test_half_open_announced_at_expiry_when_noticed_by_record():
    breaker, heard = make()
    permit = breaker.acquire(0.0)
    fail(breaker, 0.0, 3)
    assert breaker.record(permit, 4.0, ok=False) is False  # stale
    assert heard[-1] == Transition(1.0, "p1", O, HO, 0.0)


def test_state_query_is_pure():
    breaker, heard = make()
    fail(breaker, 0.0, 3)
    assert breaker.state(9.0) is HO
    assert breaker.available(9.0)
    assert heard[-1].target is O  # nothing announced by asking


def test_open_breaker_is_unavailable_until_cooldown_ends():
    breaker, _ = make()
    fail(breaker, 0.0, 3)
    assert not breaker.available(0.0)
    assert not breaker.available(0.9990234375)
    assert breaker.available(1.0)


def test_half_open_probe_limit_one():
    breaker, _ = make()
    fail(breaker, 0.0, 3)
    probe = breaker.acquire(1.0)
    assert probe.probe
    assert not breaker.available(1.0)
    assert not breaker.available(50.0)
    assert breaker.record(probe, 1.5, ok=True)
    assert breaker.available(1.5)
    assert not breaker.acquire(1.5).probe


def test_half_open_probe_limit_several_freed_by_release_and_record():
    breaker, heard = make(half_open_max_calls=3)
    fail(breaker, 0.0, 3)
    probes = [breaker.acquire(1.0) for _ in range(3)]
    assert all(p.probe for p in probes)
    assert breaker.probes == 3
    assert not breaker.available(1.0)
    breaker.release(probes[0])
    assert breaker.probes == 2
    assert breaker.available(1.0)
    again = breaker.acquire(1.0)
    assert not breaker.available(1.0)
    # The first successful probe closes the breaker; the others become stale.
    assert breaker.record(probes[1], 1.25, ok=True)
    assert breaker.state(1.25) is H
    assert breaker.record(probes[2], 1.5, ok=False) is False
    assert breaker.record(again, 1.5, ok=False) is False
    assert breaker.state(1.5) is H
    assert breaker.failures == 0
    assert heard[-1] == Transition(1.25, "p1", HO, H, 0.0)


def test_release_of_stale_or_plain_permit_changes_nothing():
    breaker, _ = make()
    plain = breaker.acquire(0.0)
    fail(breaker, 0.0, 3)
    breaker.release(plain)
    probe = breaker.acquire(1.0)
    breaker.release(Permit(probe.generation - 1, probe=True))
    assert breaker.probes == 1
    assert not breaker.available(1.0)


def test_stale_permits_change_no_state_but_report_it():
    breaker, heard = make()
    in_flight = [breaker.acquire(0.0) for _ in range(5)]
    fail(breaker, 0.0, 3)
    assert breaker.generation == 1
    # Late failures must not lengthen the cooldown; a late success must not close it.
    assert [breaker.record(p, 0.5, ok=False) for p in in_flight[:4]] == [False] * 4
    assert breaker.record(in_flight[4], 0.5, ok=True) is False
    assert breaker.state(0.5) is O
    assert breaker.cooldown == 1.0
    assert breaker.reopens_at == 1.0
    assert breaker.trips == 1
    assert [t.target for t in heard] == [F, O]


def test_fresh_permit_record_returns_true():
    breaker, _ = make()
    assert breaker.record(breaker.acquire(0.0), 0.0, ok=False) is True
    assert breaker.record(breaker.acquire(0.0), 0.0, ok=True) is True


def test_generation_changes_on_open_and_recovery_only():
    breaker, _ = make()
    fail(breaker, 0.0, 2)
    assert breaker.generation == 0
    fail(breaker, 0.0)
    assert breaker.generation == 1
    breaker.settle(1.0)
    assert breaker.generation == 1  # OPEN -> HALF_OPEN keeps the probes' generation
    succeed(breaker, 1.0)
    assert breaker.generation == 2


def test_recovery_resets_trips_so_next_cooldown_is_base():
    breaker, heard = make()
    fail(breaker, 0.0, 3)  # trip 1: 1 s
    fail(breaker, 1.0)  # trip 2: 2 s
    fail(breaker, 3.0)  # trip 3: 4 s
    assert breaker.trips == 3
    assert succeed(breaker, 7.0)
    assert breaker.trips == 0
    fail(breaker, 8.0, 3)
    assert breaker.cooldown == 1.0
    assert breaker.reopens_at == 9.0
    assert heard[-1] == Transition(8.0, "p1", F, O, 1.0)


def test_configure_mid_cooldown_keeps_running_cooldown_and_applies_at_next_open():
    breaker, heard = make()
    fail(breaker, 0.0, 3)
    breaker.configure(BreakerConfig(base_delay=4.0, max_cooldown=60.0, failure_threshold=1))
    assert breaker.state(0.5) is O
    assert breaker.cooldown_left(0.5) == 0.5
    assert breaker.state(1.0) is HO
    fail(breaker, 1.0)  # trip 2 under the new base: 4 * 2
    assert breaker.cooldown == 8.0
    assert breaker.reopens_at == 9.0
    assert succeed(breaker, 9.0)
    fail(breaker, 10.0)  # the new threshold of 1 applies from now on
    assert heard[-1] == Transition(10.0, "p1", H, O, 4.0)


def test_configure_probe_limit_applies_to_available():
    breaker, _ = make()
    fail(breaker, 0.0, 3)
    breaker.acquire(1.0)
    assert not breaker.available(1.0)
    breaker.configure(BreakerConfig(half_open_max_calls=2))
    assert breaker.available(1.0)


def test_disabled_breaker_never_opens():
    breaker, heard = make(enabled=False)
    for i in range(100):
        permit = breaker.acquire(float(i))
        assert not permit.probe
        assert breaker.record(permit, float(i), ok=False) is False
        assert breaker.available(float(i))
    assert breaker.state(100.0) is H
    assert breaker.failures == 0
    assert heard == []


def test_reset_returns_to_healthy_with_no_history():
    breaker, heard = make()
    old = breaker.acquire(0.0)
    fail(breaker, 0.0, 3)
    fail(breaker, 1.0)
    breaker.reset(2.0)
    assert breaker.state(2.0) is H
    assert (breaker.trips, breaker.failures, breaker.probes) == (0, 0, 0)
    assert breaker.cooldown_left(2.0) == 0.0
    assert heard[-1] == Transition(2.0, "p1", O, H, 0.0)
    assert breaker.record(old, 2.5, ok=False) is False
    fail(breaker, 3.0, 3)
    assert breaker.cooldown == 1.0


def test_reset_of_healthy_breaker_is_silent():
    breaker, heard = make()
    breaker.reset(1.0)
    assert heard == []
    assert breaker.state(1.0) is H


def test_forced_permit_on_open_breaker_is_a_probe():
    breaker, heard = make()
    fail(breaker, 0.0, 3)
    forced = breaker.acquire(0.5, force=True)
    assert forced.probe
    assert breaker.state(0.5) is O
    assert breaker.record(forced, 0.75, ok=True)
    assert breaker.state(0.75) is H
    assert breaker.trips == 0
    assert heard[-1] == Transition(0.75, "p1", O, H, 0.0)


def test_failed_forced_probe_reopens_with_next_cooldown_and_announces_it():
    breaker, heard = make()
    fail(breaker, 0.0, 3)
    forced = breaker.acquire(0.5, force=True)
    assert breaker.record(forced, 0.75, ok=False)
    assert breaker.cooldown == 2.0
    assert breaker.reopens_at == 2.75
    assert breaker.state(2.5) is O
    # Listeners count trips and show cooldowns: the second opening must reach them.
    assert heard[-1] == Transition(0.75, "p1", O, O, 2.0)


def test_force_on_healthy_breaker_is_a_plain_permit():
    breaker, _ = make()
    assert breaker.acquire(0.0, force=True) == Permit(0, probe=False)


def test_listeners_can_be_added_after_construction():
    breaker, heard = make()
    later: list[Transition] = []
    breaker.listeners.append(later.append)
    fail(breaker, 0.0)
    assert heard == later == [Transition(0.0, "p1", H, F, 0.0)]


@pytest.mark.parametrize(
    ("state", "value", "standard"),
    [(H, "healthy", "CLOSED"), (F, "failing", "CLOSED"), (O, "open", "OPEN"), (HO, "half_open", "HALF_OPEN")],
)
def test_state_names(state, value, standard):
    assert state.value == value
    assert state.standard == standard


def test_healthy_follows_every_change_of_state():
    """``healthy``, which the router reads to skip recording a success that would change
    nothing, is true exactly while the state is HEALTHY: through failures, an opening, a
    failed and a successful probe, and a reset."""
    breaker, heard = make(failure_threshold=2, base_delay=1.0)
    seen = []

    def check(now: float) -> None:
        seen.append(breaker.state(now))
        assert breaker.healthy is (breaker.state(now) is H)

    check(0.0)
    fail(breaker, 0.0)
    check(0.0)
    succeed(breaker, 0.5)
    check(0.5)
    fail(breaker, 1.0, times=2)
    check(1.0)
    breaker.settle(2.0)
    check(2.0)
    fail(breaker, 2.0)  # the probe fails: open again, for 2 s
    check(2.0)
    breaker.settle(4.0)
    succeed(breaker, 4.0)  # the probe succeeds
    check(4.0)
    fail(breaker, 5.0, times=2)
    check(5.0)
    breaker.reset(5.5)
    check(5.5)
    assert seen == [H, F, H, O, HO, O, H, O, H]
    assert [(t.source, t.target) for t in heard][:3] == [(H, F), (F, H), (H, F)]
