"""The retry storm of ``scenarios/retry_storm.toml``, in virtual time and by DESIGN's
definitions (:mod:`gwlab.metastability`): without mitigation it persists; each mitigation
its comments name ends it within the bound they state; the ones they say do not, do not.
Every claim holds on each of several seeds (one would be luck)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gwlab import config
from gwlab.metastability import Recovery, judge, recovery
from gwlab.sim import simulate
from gwlab.stats import Tally
from gwlab.sweep import sweep
from gwlab.timeseries import Bin, TimeSeries
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

STORM = config.load(Path(__file__).parent.parent / "scenarios" / "retry_storm.toml")
START, END = 60.0, 90.0
DURATION = END + config.PERSISTS_FOR * (END - START) + 30.0
SEEDS = (1, 2, 3)


def _judged(patch: dict, seed: int) -> Recovery:
    return recovery(simulate(config.merge(STORM, patch), DURATION, seed).timeseries(), START, END)


def test_the_trigger_is_the_scenarios_latency_spike():
    assert [e.at for e in STORM.events] == [START, END]
    assert STORM.events[0].patch == {"providers": {"model": {"latency": 5.0}}}


@pytest.mark.parametrize("name, patch", [
    ("no mitigation", {}),
    # Backing off from 0.5 s (the openai SDK's first delay) doubling up to 8 s, with full jitter
    # or with the SDK's own: the same attempts per user request, spread out.
    ("exponential backoff with jitter", {"workload": {"retry_policy": "exponential_jitter", "retry_delay": 0.5}}),
    ("the openai SDK's retries", {"workload": {"retry_policy": "openai_sdk", "retry_delay": 0.5}}),
    ("a retry budget at the gateway", {"retry": {"budget_ratio": 0.1, "budget_min_per_second": 1.0}}),
])
@pytest.mark.parametrize("seed", SEEDS)
def test_the_storm_persists(name, patch, seed):
    judged = _judged(patch, seed)
    assert judged.baseline >= 0.99  # before the spike nearly every user request succeeds
    assert judged.persists and judged.recovered_after is None, name


@pytest.mark.parametrize("name, patch, bound", [
    ("the breaker sheds load: fallback reject", {"gateway": {"fallback": "reject"}}, 15.0),
    ("clients that do not retry", {"workload": {"retry_policy": "none"}, "retry": {"attempts": 1}}, 15.0),
    ("adaptive throttling", {"workload": {"retry_policy": "adaptive"}}, 240.0),
])
@pytest.mark.parametrize("seed", SEEDS)
def test_each_mitigation_ends_it_within_its_stated_bound(name, patch, bound, seed):
    judged = _judged(patch, seed)
    assert judged.baseline >= 0.99
    assert not judged.persists and judged.recovered_after is not None and judged.recovered_after <= bound, name


def _series(goodput: list[float | None], width: float = 1.0) -> TimeSeries:
    """A run whose bin i saw 10 user requests end, ``goodput[i]`` of them well (None: none ended)."""
    bins = []
    for i, g in enumerate(goodput):
        b = Bin(i * width, width, tally=Tally())
        if g is not None:
            b.tally.users.update({"ok": round(10 * g), "timed_out": 10 - round(10 * g)})
        bins.append(b)
    return TimeSeries(bins, ["p"], width)


@pytest.mark.parametrize("after, persists, recovered_after", [
    ([0.0] * 60, True, None),
    ([0.4] * 60, True, None),                            # below half of the baseline throughout
    ([0.0] * 25 + [0.6] * 5 + [0.0] * 30, False, None),  # one judged bin at half or more
    ([0.0] * 10 + [0.9] * 30 + [0.0] * 20, False, 10.0),
    ([0.0] * 10 + [0.9] * 29 + [0.0] * 21, False, None),  # 29 s at 90 %: not 30
    ([0.0] * 10 + [0.8] * 50, False, None),              # back, but to 80 %
    ([None] * 60, True, None),                           # no user request ended: all still waiting
    ([1.0] * 60, False, 0.0),
])
def test_persists_and_recovered_follow_design_exactly(after, persists, recovered_after):
    # A baseline of 1.0 over the 30 s before a 5 s trigger from t = 30 to t = 35; 50 s after it.
    series = _series([0.5] * 0 + [1.0] * 30 + [0.0] * 5 + after[:50] + [1.0] * 10)
    assert recovery(series, 30.0, 35.0) == Recovery(1.0, persists, recovered_after)


@pytest.mark.parametrize("start, end, duration, message", [
    (20.0, 25.0, 200, "expected 30 <= start < end"),
    (40.0, 40.0, 200, "expected 30 <= start < end"),
    (40.0, 50.0, 100, "the run lasts 100 s: expected at least 10 times the trigger's 10 s after its end, so 150 s"),
])
def test_recovery_refuses_a_trigger_it_cannot_judge(start, end, duration, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        recovery(_series([1.0] * duration), start, end)
    with pytest.raises(ValueError, match="no user request ended before the trigger"):
        recovery(_series([None] * 200), 40.0, 45.0)


def test_a_sweep_judges_each_run_around_its_scenarios_trigger():
    rows = sweep(STORM, {"workload.retries": [1, 2], "events.1.at": [75.0]}, 60.0 + 15 * 11, [1],
                 measure=judge, workers=1, progress=False)
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    assert [(r["workload.retries"], r["trigger"], r["persists"], r["recovered"]) for r in rows] == [
        (1, 15.0, False, True), (2, 15.0, True, False)]
    assert rows[0]["recovered_after"] == 20.0  # seconds after the trigger ended


def test_judge_needs_a_trigger():
    with pytest.raises(ValueError, match="judge: 0 scripted events: expected a trigger from the first to the second"):
        judge(simulate(config.Scenario(workload=STORM.workload), 40.0, 1))
