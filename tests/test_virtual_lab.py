"""The lab without sockets: the simulator at wall-clock pace behind the lab's handle.

Its pure core makes every check exact: a virtual lab advanced in any steps, changed at any
instant, is the run ``gwlab.simulate`` makes of the same scenario with that change scripted
at that instant, bin for bin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import gwlab.lab
from gwlab import config, simulate
from gwlab.config import ConfigError, Scenario
from gwlab.lab.virtual import VirtualLab
from gwlab.stats import RELATIVE_ERROR, Tally
from gwlab.timeseries import Bin
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import README, readme_table

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

SCENARIOS = Path(__file__).parent.parent / "scenarios"
WIDTH = config.LAB_BIN_WIDTH
OPEN = {"workload": {"mode": "open", "rate": 1000.0}}
RETRYING = {"retry": {"attempts": 3}, "workload": {"retries": 2, "timeout": 1.0}}


@pytest.fixture(autouse=True)
def no_lab_left():
    yield
    gwlab.lab.stop()
    assert gwlab.lab.current() is None


def raw(b: Bin) -> dict[str, Any]:
    """Everything a bin holds, its tally as plain data (a tally compares by identity)."""
    return {f.name: getattr(b, f.name).to_dict() if f.name == "tally" else getattr(b, f.name)
            for f in dataclasses.fields(b)}


def simulated_bins(scenario: Any, seconds: float, seed: int = config.SEED) -> list[dict[str, Any]]:
    """The bins of ``simulate`` over the first ``seconds``, in the lab's width. The run goes
    one bin further, so that none of these holds the requests its end cuts off."""
    result = simulate(scenario, duration=seconds + WIDTH, seed=seed, bin_width=WIDTH)
    return [raw(b) for b in result.timeseries().bins[:round(seconds / WIDTH)]]


def lab_bins(lab: VirtualLab) -> list[dict[str, Any]]:
    return [raw(b) for b in lab.timeseries().bins]


@pytest.mark.parametrize("scenario", [None, OPEN, RETRYING, str(SCENARIOS / "llm_mix.toml")],
                         ids=["seed", "open", "retrying", "llm_mix"])
def test_a_virtual_lab_is_the_simulation_of_its_seed_in_any_steps(scenario):
    steps = (0.3, 7.25, 0.0001, 12.4499, 10.0)
    lab = VirtualLab(gwlab.lab._scenario(scenario, None, None), seed=5)
    lab._begin()
    summaries = [lab.run_for(s) for s in steps]
    assert lab.now == sum(steps) == 30.0
    assert lab_bins(lab) == simulated_bins(scenario, 30.0, seed=5)
    # One run_for over the same time, in another lab with the seed: the same requests.
    again = VirtualLab(lab.initial, seed=5)
    again._begin()
    whole = again.run_for(30.0)
    assert lab_bins(again) == lab_bins(lab)
    assert whole["offered"] == sum(s["offered"] for s in summaries)
    assert whole["codes"] == dict(sum((Counter(s["codes"]) for s in summaries), Counter()))
    assert whole["mode"] == "virtual" and whole["duration"] == 30.0 and whole["seed"] == 5
    # ... and each run_for counts what its bins count: the tap is exact.
    tally = Tally()
    for b in lab.timeseries().bins:
        tally.merge(b.tally)
    assert whole["offered"] == tally.count()
    assert whole["latency"]["p99"] == tally.latency.quantile(0.99)


def test_run_for_gives_the_same_summary_in_two_labs_of_one_seed():
    first = gwlab.lab.start(mode="virtual", seed=3)
    a = [first.run_for(s) for s in (2.5, 4.0)]
    first.stop()
    second = gwlab.lab.start(mode="virtual", seed=3)
    assert second is not first
    assert [second.run_for(s) for s in (2.5, 4.0)] == a
    assert [(s["offered"], s["codes"], s["achieved_offered_rate"]) for s in a] == [
        (696, {"200": 648, "502": 48}, 318.4), (1064, {"200": 987, "502": 77}, 266.0)]


@pytest.mark.parametrize("at, patch", [
    (7.3, {"providers": {"p1": {"error_rate": 1.0}}}),             # mid-bin
    (10.0, {"workload": {"mode": "open", "rate": 500.0}}),         # on a bin's edge
    (4.0, {"limiter": {"rate": 50.0, "burst": 10.0}}),             # at the scenario's own event
    (12.123, {"workload": {"clients": 20}, "retry": {"attempts": 2}}),
])
def test_configure_at_a_virtual_instant_is_a_scripted_event_there(at, patch):
    base = {"events": [{"at": 4.0, "providers": {"p2": {"latency": 1.0}}}]}
    lab = gwlab.lab.start(base, mode="virtual", seed=2)
    lab.run_for(at)
    changed = lab.configure(patch)
    lab.run_for(30.0 - at)
    scripted = {"events": [*base["events"], {"at": at, **patch}]}
    assert lab_bins(lab) == simulated_bins(scripted, 30.0, seed=2)
    assert changed == lab.scenario
    assert lab.transitions() == [t for t in simulate(scripted, duration=30.0 + WIDTH, seed=2,
                                                     bin_width=WIDTH).transitions if t.time < 30.0]


def test_a_change_that_does_not_fit_or_could_not_run_is_refused_and_changes_nothing():
    lab = gwlab.lab.start(mode="virtual")
    lab.run_for(1.0)
    before = lab.scenario
    with pytest.raises(ConfigError, match=r"^lab.configure: breaker.max_cooldown = 0.5: expected a number >= "):
        lab.configure({"breaker": {"max_cooldown": 0.5}})
    with pytest.raises(ConfigError, match=r"^dashboard: providers.p1.latency = 0 \(fixed\) with workload.think_time = 0"):
        lab.configure({"providers": {"p1": {"latency": 0.0}}}, source="dashboard")
    assert lab.scenario is before and lab.now == 1.0


def test_a_long_run_keeps_only_its_window():
    lab = gwlab.lab.start({"providers": {"p1": {"error_rate": 0.5}}}, mode="virtual")
    lab.run_for(3 * config.LAB_WINDOW + 0.2)
    bins = lab.timeseries().bins
    assert len(bins) == config.LAB_WINDOW / WIDTH == 120
    assert bins[0].start == 2 * config.LAB_WINDOW and bins[-1].start + WIDTH == 3 * config.LAB_WINDOW
    assert len(lab.engine.bins) == 1 and not lab.engine.keep
    assert lab.transitions() and all(t.time >= 2 * config.LAB_WINDOW for t in lab.transitions())
    assert len(lab.engine.player.events) == 0


class FakeClock:
    def __init__(self, readings: list[float]) -> None:
        self.readings = readings
        self.asked: list[float] = []

    def __call__(self) -> float:
        return self.readings[0]

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.readings.pop(0)
        await asyncio.sleep(0)


@pytest.mark.parametrize("readings, virtual", [
    ([0.0, 0.25, 0.5], [0.25, 0.5]),                 # advance = wall time elapsed
    ([0.0, 0.25, 30.25, 30.75], [0.25, 1.25, 1.75]),  # a 30 s stall catches up VIRTUAL_CATCH_UP only
    ([5.0, 5.0, 5.5], [0.0, 0.5]),
])
def test_pacing_advances_by_the_wall_time_elapsed_within_its_cap(readings, virtual):
    assert config.VIRTUAL_CATCH_UP == 1.0

    async def main():
        clock = FakeClock(list(readings))
        lab = VirtualLab(Scenario(), 1, clock=clock, sleep=clock.sleep)
        lab._begin()
        seen = []
        for _ in virtual:
            while len(clock.asked) == len(seen):
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            seen.append(lab.now)
        lab._halt()
        await asyncio.sleep(0)
        return seen, clock.asked, asyncio.all_tasks()

    seen, asked, tasks = asyncio.run(main())
    assert seen == virtual
    assert asked[:len(virtual)] == [config.VIRTUAL_STEP] * len(virtual)
    assert len(tasks) == 1  # main's own: the pacing task has ended


def test_run_for_holds_the_pacing_and_it_goes_on_from_its_end():
    clock = FakeClock([0.0])
    lab = VirtualLab(Scenario(), 1, clock=clock)
    lab._begin()
    clock.readings[0] = 100.0  # run_for took 100 wall seconds
    lab.run_for(2.0)
    clock.readings[0] = 100.5
    lab.step()
    assert lab.now == 2.5


@pytest.fixture
def unpaced(monkeypatch):
    """Pacing steps too far apart to come during a test: only the test advances the lab."""
    monkeypatch.setattr(config, "VIRTUAL_STEP", 3600.0)


def test_the_dashboard_draws_a_virtual_lab_and_its_mode(unpaced):
    async def main():
        lab = gwlab.lab.start(mode="virtual")
        dashboard = lab.dashboard()
        assert lab.dashboard() is dashboard
        lab.run_for(2.0)
        dashboard.redraw()
        status = dashboard.status.value
        figure_bins = len(dashboard.figure.data[0].x)
        dashboard.controls["providers", "p1", "weight"].value = 0
        dashboard.controls["limiter", "rate"].value = 500
        weight, rate = lab.scenario.provider("p1").weight, lab.snapshot().rate
        lab.configure({"providers": {"p2": {"latency": 1.5}}})
        slider = dashboard.controls["providers", "p2", "latency"].value
        await lab.run_for_async(1.5)
        at = lab.now
        dashboard.reset_button.click()
        after_reset = lab.now, dashboard.controls["providers", "p2", "latency"].value
        lab.stop()
        await asyncio.sleep(0)
        return (status, figure_bins, weight, rate, slider, at, after_reset, dashboard.status.value,
                dashboard.controls["limiter", "rate"].disabled, asyncio.all_tasks())

    status, figure_bins, weight, rate, slider, at, after_reset, stopped, disabled, tasks = asyncio.run(main())
    assert status.startswith("<b>virtual</b> · <b>t = 2.0 s</b>")
    assert figure_bins == 4
    assert (weight, rate, slider) == (0, 500, 1.5)
    assert at == 3.5 and after_reset == (0.0, 0.5)
    assert stopped == "<b>the lab is stopped</b>" and disabled
    assert len(tasks) == 1  # main's own: no pacing, no redraw task left


def test_a_dashboard_without_a_running_loop_is_refused_and_nothing_is_kept(unpaced):
    lab = gwlab.lab.start(mode="virtual")
    for _ in range(2):
        with pytest.raises(RuntimeError) as error:
            lab.dashboard()
        assert str(error.value) == ("lab.dashboard(): no event loop is running to redraw the virtual lab's charts "
                                    "on: expected a notebook (its kernel runs one) or a call from a coroutine "
                                    "(asyncio.run)")
        assert (lab.views, lab._listeners, lab._stopping) == ({}, [], [])

    async def main():
        dashboard = lab.dashboard()
        assert lab.dashboard() is dashboard and lab.views == {"dashboard": dashboard}
        lab.configure({"limiter": {"rate": 500}})
        rate = dashboard.controls["limiter", "rate"].value
        lab.stop()
        await asyncio.sleep(0)
        return rate, dashboard.status.value

    assert asyncio.run(main()) == (500, "<b>the lab is stopped</b>")


def test_the_window_of_either_lab_refuses_a_width_that_is_not_a_whole_multiple():
    lab = gwlab.lab.start(mode="virtual")
    lab.run_for(2.0)
    for width in (math.inf, "2", math.nan, 0.75):
        with pytest.raises(ConfigError, match=r"^timeseries: width = .*: expected a whole multiple of the bin "
                                              r"width 0.5$"):
            lab.timeseries().resample(width)
    assert lab.timeseries().resample(1.0).bin_width == 1.0


def test_start_checks_the_mode_and_keeps_one_lab():
    with pytest.raises(ConfigError, match=r"^gwlab.lab.start: mode = 'browser': expected one of 'live', 'virtual'$"):
        gwlab.lab.start(mode="browser")
    lab = gwlab.lab.start(mode="virtual")
    assert gwlab.lab.start(mode="virtual") is lab and lab.mode == "virtual"
    other = gwlab.lab.start(mode="virtual", seed=9)
    assert other is not lab and not lab.running and gwlab.lab.current() is other
    with pytest.raises(RuntimeError, match="this lab is stopped"):
        lab.run_for(1.0)
    with pytest.raises(ConfigError, match=r"^lab.run_for: seconds = -1"):
        other.run_for(-1)
    assert math.isinf(other.engine.duration)


def test_a_virtual_lab_imports_nothing_that_needs_sockets():
    code = ("import sys, gwlab.lab; lab = gwlab.lab.start(mode='virtual'); lab.run_for(1.0); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'prometheus_client', 'multidict'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout
    assert out == "[]\n"


@pytest.mark.parametrize("before, after, counted", [
    ([], [0.1, 0.2], {"count": 2, "max": 0.2}),                # the largest value is new: exact
    ([0.5], [0.5, 0.1, 0.2], {"count": 2, "max": 0.2}),        # below the earlier max: from its bucket
    ([0.0, 0.3], [0.0, 0.3, 0.0], {"count": 1, "max": 0.0}),
])
def test_a_tally_since_a_copy_counts_what_came_after(before, after, counted):
    tally = Tally()
    for latency in before:
        tally.record(200, "p1", latency)
    head = tally.copy()
    for latency in after[len(before):]:
        tally.record(200, "p1", latency)
    tally.users["ok"] += 1
    since = tally.since(head)
    assert since.by_status == {(200, "p1"): counted["count"]} and since.users == {"ok": 1}
    assert since.latency.count == counted["count"]
    assert since.latency.max == pytest.approx(counted["max"], rel=RELATIVE_ERROR)
    assert since.latency.quantile(0.5) == pytest.approx(sorted(after[len(before):])[0], rel=RELATIVE_ERROR)


def test_the_readme_gives_the_lab_modes_and_bounds_of_the_code():
    rows = {row[0]: row[1:] for row in readme_table("Every default is one named constant")}
    default, meaning = rows["gwlab.lab.start(mode=...)"]
    assert default == config.LAB_MODE == "live"
    assert meaning.startswith(" or ".join(config.LAB_MODES) + " (LAB_MODES")
    for name in ("LAB_BIN_WIDTH", "LAB_WINDOW", "VIRTUAL_STEP", "VIRTUAL_CATCH_UP"):
        assert rows[name][0] == str(getattr(config, name)), name
    lab = gwlab.lab.start(mode="virtual", seed=3)
    assert 'lab.run_for(2.5)["offered"]   # 696' in README and lab.run_for(2.5)["offered"] == 696


def test_a_reset_during_run_for_async_is_named_not_mixed_into_its_summary(unpaced):
    async def main():
        lab = gwlab.lab.start(mode="virtual")
        running = asyncio.ensure_future(lab.run_for_async(5.0))
        await asyncio.sleep(0)
        lab.reset()
        with pytest.raises(RuntimeError, match="^lab.run_for: the lab was reset while it ran"):
            await running
        return lab.now, lab.run_for(1.0)["duration"]

    assert asyncio.run(main()) == (0.0, 1.0)


def test_an_interrupted_run_for_says_so_on_every_later_call_until_a_reset(unpaced, monkeypatch):
    """Jupyter's "interrupt the kernel" raises KeyboardInterrupt wherever the run is: the run
    cannot go on from there, and every later call says so, rather than a lab that answers
    with empty summaries for ever; a reset starts it again."""
    async def main():
        lab = gwlab.lab.start(mode="virtual")
        lab.run_for(1.0)
        calls = [0]
        for upstream in lab.engine.router.upstreams:  # the 500th provider call from now is interrupted
            def interrupted(*args, call=upstream.host.provider.call, **kwargs):
                calls[0] += 1
                if calls[0] == 500:
                    raise KeyboardInterrupt
                return call(*args, **kwargs)

            monkeypatch.setattr(upstream.host.provider, "call", interrupted)
        with pytest.raises(KeyboardInterrupt):
            lab.run_for(3600.0)
        assert lab.now == 1.0  # where the run last paused, not the time it was asked to reach
        message = (r"^this virtual lab's run was interrupted \(KeyboardInterrupt\) after t = 1 s and cannot go on "
                   r"from there; lab\.reset\(\) starts it again from 0$")
        for call in (lambda: lab.run_for(1.0), lambda: lab.configure({"limiter": {"rate": 5.0}}), lab.snapshot):
            with pytest.raises(RuntimeError, match=message):
                call()
        with pytest.raises(RuntimeError, match=message):
            await lab.run_for_async(1.0)
        lab.reset()
        return lab.now, lab.run_for(1.0)

    now, summary = asyncio.run(main())
    assert now == 0.0 and summary["offered"] > 0


def test_an_error_while_pacing_is_logged_and_the_lab_stands_still(caplog):
    async def main():
        clock = FakeClock([0.0, 0.5, 1.0])
        lab = VirtualLab(Scenario(), 1, clock=clock, sleep=clock.sleep)
        lab.subscribe(lambda scenario: 1 / 0)
        lab._begin()
        lab.engine.player.schedule(config.Event(0.2, {"limiter": {"rate": 10.0}}))
        while not lab._task.done():
            await asyncio.sleep(0)
        return lab.now, clock.asked, lab.scenario.limiter.rate

    assert asyncio.run(main()) == (0.5, [config.VIRTUAL_STEP], 10.0)
    assert [r.getMessage() for r in caplog.records if r.name == "gwlab.lab.virtual"] == [
        "the virtual lab stopped advancing at t = 0.5 s"]


def test_the_browser_defaults_to_the_virtual_lab():
    code = "import sys; sys.platform = 'emscripten'; from gwlab import config; print(config.LAB_MODE)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout
    assert out == "virtual\n"


@pytest.mark.parametrize("environment, out", [
    ("virtual", "virtual"),
    ("live", "live"),
    ("", "live"),  # unset or empty: the platform's default
    ("browser", "gwlab.lab.start: the environment's GWLAB_LAB_MODE = 'browser': expected one of 'live', 'virtual'"),
])
def test_the_environment_may_choose_the_labs_mode_when_a_call_does_not(environment, out):
    code = ("import gwlab.lab\nfrom gwlab.config import ConfigError\n"
            "try:\n    lab = gwlab.lab.start(port=0, metrics_port=0)\n    print(lab.mode)\n"
            "    lab.stop()\nexcept ConfigError as exc:\n    print(exc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=Path(__file__).parent.parent, env={**os.environ, "GWLAB_LAB_MODE": environment})
    assert run.stdout == out + "\n", run.stderr


def test_start_and_stop_async_run_a_virtual_lab_on_the_loop_itself(unpaced):
    async def main():
        lab = await gwlab.lab.start_async(mode="virtual", seed=3)
        summary = await lab.run_for_async(2.5)
        await gwlab.lab.stop_async()
        await asyncio.sleep(0)
        return summary["offered"], lab.running, gwlab.lab.current(), asyncio.all_tasks()

    offered, running, current, tasks = asyncio.run(main())
    assert (offered, running, current) == (696, False, None) and len(tasks) == 1
