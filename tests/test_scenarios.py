"""The example scenarios: they load, carry the events their comments describe, and show what
those comments promise when simulated."""

from __future__ import annotations

from pathlib import Path

import pytest

from gwlab import config, timeline
from gwlab.sim import simulate
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
EXAMPLES = ("p1_outage", "p2_brownout", "spike")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_scenarios_load_and_simulate(name):
    s = config.load(SCENARIOS / f"{name}.toml")
    assert len(s.events) == 2
    result = simulate(s, duration=30, seed=2)
    assert result.summary()["offered"] > 0


def test_outage_file_says_p1_fails_from_60_to_360_s():
    steps = timeline.steps(config.load(SCENARIOS / "p1_outage.toml"))
    assert [(st.at, st.scenario.provider("p1").outage) for st in steps] == [(60.0, "error"), (360.0, "none")]


def test_outage_scenario_opens_p1_during_the_outage_and_heals_after():
    result = simulate(SCENARIOS / "p1_outage.toml", duration=420, seed=1)
    ts = result.timeseries()
    state = ts["p1.state"]
    # p1's own 5% errors open its breaker now and then (three failures in a row), briefly.
    assert state[:60].count("open") <= 3
    assert state[70:360].count("open") > 0.9 * 290
    assert state[380:420].count("healthy") > 0.8 * 40
    healed = [t for t in result.transitions if t.provider == "p1" and t.target == "healthy" and t.time > 360]
    assert healed and healed[0].time <= 360 + config.MAX_COOLDOWN + 1
    calls = ts["p1.calls"]
    assert sum(calls[:60]) > 0.6 * sum(ts["200"][:60])
    assert sum(calls[100:350]) < 100
    # Cooldowns during the outage follow the golden table until the cap.
    cooldowns = [t.cooldown for t in result.transitions if t.provider == "p1" and t.target == "open" and 60 < t.time < 360]
    assert cooldowns[:7] == [1, 2, 4, 8, 16, 30, 30]


def test_brownout_raises_p2_timeouts_and_the_tail_only_during_the_window():
    result = simulate(SCENARIOS / "p2_brownout.toml", duration=360, seed=1)
    ts = result.timeseries(60)
    timeouts = ts["504"]
    assert timeouts[0] == timeouts[1] == 0
    assert timeouts[2] > 0 and timeouts[3] > 0 and timeouts[4] > 0
    p99 = ts["p99"]
    assert p99[3] > 2 * p99[0]
    assert ts["in_flight"][3] > ts["in_flight"][0]


def test_spike_admits_burst_plus_rate_during_the_spike():
    result = simulate(SCENARIOS / "spike.toml", duration=180, seed=1)
    ts = result.timeseries(60)
    s = config.load(SCENARIOS / "spike.toml")
    # The bucket is (nearly) full when the spike starts: 300/s is well under its refill rate,
    # but the last request before 60 s may have taken a token not yet refilled (up to 1).
    # Arrivals are Poisson at 3000/s, so the first and last of the window fall a fraction of
    # a millisecond inside it (under 1 token each at 1000/s, with overwhelming probability).
    assert abs(ts["admitted"][1] - (s.limiter.burst + s.limiter.rate * 60)) <= 3
    assert ts["429"][0] == ts["429"][2] == 0
    assert ts["429"][1] > 100_000
