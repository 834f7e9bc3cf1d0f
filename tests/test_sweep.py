"""Parameter sweeps: the same rows whatever runs them, in the grid's order, a grid checked
whole before any run, and ``gwlab sweep`` writing the rows ``sweep()`` returns."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import io
import itertools
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlab import config
from gwlab.cli import _toml_values, main
from gwlab.config import ConfigError
from gwlab.entry import terminated
from gwlab.metastability import judge
from gwlab.sim import SimResult, simulate
from gwlab.sweep import Plan, read_csv, summary_measure, sweep, write_csv
from tests.conftest import SIMULATION_TIMEOUT, require_module

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
OPEN = {"workload": {"mode": "open"}}
GRID = {"workload.rate": [200, 400], "retry.attempts": [1, 3]}
DURATION = 3.0
SEEDS = [7, 2]
MEASURED = ["offered", "admitted", "goodput", "availability", "latency_p50", "latency_p99", "trips", "saturated",
            "retries", "user_goodput", "attempts_per_request"]


def records(table) -> list[dict]:
    """The rows of ``sweep()``'s answer, whichever form it took."""
    return table if isinstance(table, list) else table.to_dict("records")


@pytest.fixture(scope="module")
def in_process() -> list[dict]:
    """The grid swept in this process: what every other way of running it must give."""
    return records(sweep(OPEN, GRID, DURATION, SEEDS, workers=1))


def test_rows_follow_the_grid_then_the_seeds_with_the_paths_the_seed_and_the_measure_as_columns(in_process):
    assert [list(row) for row in in_process] == [["workload.rate", "retry.attempts", "seed", *MEASURED]] * 8
    assert [(r["workload.rate"], r["retry.attempts"], r["seed"]) for r in in_process] == list(
        itertools.product([200, 400], [1, 3], SEEDS))


def test_each_row_is_its_simulation_measured(in_process):
    for row in in_process:
        scenario = config.from_dict({"workload": {"mode": "open", "rate": row["workload.rate"]},
                                     "retry": {"attempts": row["retry.attempts"]}})
        expected = summary_measure(simulate(scenario, DURATION, row["seed"]))
        assert {k: row[k] for k in MEASURED} == expected
    assert in_process[4]["retries"] == 0 < in_process[6]["retries"]  # the grid changed what ran


def test_a_pool_of_processes_gives_the_same_rows(in_process):
    with ProcessPoolExecutor(max_workers=2) as pool:
        assert records(sweep(OPEN, GRID, DURATION, SEEDS, executor=pool)) == in_process
    assert records(sweep(OPEN, GRID, DURATION, SEEDS, workers=2)) == in_process
    assert multiprocessing.active_children() == []


def test_an_executor_given_is_used_and_left_open(in_process):
    with ThreadPoolExecutor(max_workers=3) as threads:
        assert records(sweep(OPEN, GRID, DURATION, SEEDS, executor=threads, workers=1)) == in_process
        assert threads.submit(lambda: 42).result() == 42


def test_an_executor_that_refuses_a_run_stops_the_sweep_naming_the_run():
    threads = ThreadPoolExecutor(max_workers=2)
    threads.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown") as refused:
        sweep(None, {"workload.clients": [5]}, DURATION, 2, executor=threads)
    assert refused.value.__notes__ == ["sweep: point 0 (workload.clients=5), seed 1"]


class _Counting(ThreadPoolExecutor):
    """An executor that keeps the most runs it ever held at once (submitted, not finished)."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers)
        self.held = self.most = 0
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            self.held += 1
            self.most = max(self.most, self.held)
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _) -> None:
        with self._lock:
            self.held -= 1


@pytest.mark.parametrize("workers", [1, 3])
def test_an_executor_never_holds_more_than_its_share_of_runs(in_process, workers):
    with _Counting(workers) as executor:
        assert records(sweep(OPEN, GRID, DURATION, SEEDS, executor=executor, workers=workers)) == in_process
    # Held at once: never more than the share (a run may end before the first ones are all
    # handed out, so fewer is possible), and one worker's share exactly.
    assert 1 <= executor.most <= config.SWEEP_OUTSTANDING_PER_WORKER * workers < len(in_process)
    if workers == 1:
        assert executor.most == config.SWEEP_OUTSTANDING_PER_WORKER


@pytest.mark.timeout(300)
def test_a_dask_cluster_gives_the_same_rows(in_process):
    distributed = require_module("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        assert records(sweep(OPEN, GRID, DURATION, SEEDS, executor=client.get_executor())) == in_process


def test_the_rows_are_a_data_frame_with_pandas_and_a_list_of_dicts_without(in_process, monkeypatch):
    pandas = require_module("pandas")
    frame = sweep(OPEN, GRID, DURATION, SEEDS, workers=1)
    assert isinstance(frame, pandas.DataFrame) and list(frame.columns) == list(in_process[0])
    monkeypatch.setitem(sys.modules, "pandas", None)
    rows = sweep(OPEN, GRID, DURATION, SEEDS, workers=1)
    assert isinstance(rows, list) and rows == in_process


def test_an_empty_grid_is_the_scenario_as_it_is_once_per_seed():
    rows = records(sweep(OPEN, {}, DURATION, 2, workers=1))
    assert [list(row)[:2] for row in rows] == [["seed", "offered"]] * 2
    assert [row["seed"] for row in rows] == [1, 2]
    assert rows[1]["offered"] == simulate(OPEN, DURATION, 2).summary()["offered"]


def codes(result: SimResult) -> dict:
    """A measure of the tests' own: answers per status and the breaker's first state change."""
    s = result.summary()
    first = result.transitions[0].target if result.transitions else None
    return {"ok": s["codes"].get("200", 0), "bad": s["codes"].get("502", 0), "first_change": first,
            "all_ok": s["codes"].get("502", 0) == 0}


def test_a_measure_of_ones_own_gives_the_columns_and_runs_in_the_workers():
    grid = {"providers.p1.error_rate": [0.0, 1.0]}
    rows = records(sweep(None, grid, DURATION, 1, measure=codes, workers=2))
    columns = ["providers.p1.error_rate", "seed", "ok", "bad", "first_change", "all_ok"]
    assert [list(row) for row in rows] == [columns] * 2
    for row in rows:
        p1 = {"error_rate": row["providers.p1.error_rate"]}
        scenario = config.merge(config.Scenario(), {"providers": {"p1": p1}})
        result = simulate(scenario, DURATION, 1)
        assert {k: row[k] for k in ("ok", "bad", "first_change", "all_ok")} == codes(result)
    assert rows[1]["first_change"] == "open" and rows[1]["all_ok"] is False


def test_a_measure_the_workers_cannot_receive_is_refused_before_any_run():
    with pytest.raises(TypeError, match="cannot be sent to the worker processes"):
        sweep(None, {}, DURATION, 1, measure=lambda result: {}, workers=2)
    rows = records(sweep(None, {}, DURATION, 1, measure=lambda result: {"seed_seen": result.seed}, workers=1))
    assert rows == [{"seed": 1, "seed_seen": 1}]


class Failing:
    """A measure that fails on seed 2, with the exception given."""

    def __init__(self, exception: type[BaseException]) -> None:
        self.exception = exception

    def __call__(self, result: SimResult) -> dict:
        if result.seed == 2:
            raise self.exception("measure failed")
        return {"n": 1}


@pytest.mark.parametrize("exception", [ValueError, KeyboardInterrupt])
def test_a_failed_run_stops_the_sweep_names_its_point_and_leaves_no_process(exception):
    with pytest.raises(exception, match="measure failed") as failed:
        sweep(None, {"workload.clients": [10, 20, 30]}, DURATION, 3, measure=Failing(exception), workers=2)
    assert failed.value.__notes__ == ["sweep: point 0 (workload.clients=10), seed 2"]
    assert multiprocessing.active_children() == []


class FailingLate:
    """A measure that fails on every seed, seed 1 last: a quarter of a second after the others."""

    def __call__(self, result: SimResult) -> dict:
        if result.seed == 1:
            time.sleep(0.25)
        raise ValueError(f"seed {result.seed} failed")


def test_the_failure_raised_is_the_first_in_the_runs_order_not_the_first_to_end():
    with pytest.raises(ValueError, match="seed 1 failed") as failed:
        sweep(None, {}, DURATION, 2, measure=FailingLate(), workers=2)
    assert failed.value.__notes__ == ["sweep: point 0 (the scenario as it is), seed 1"]
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("measure, message", [
    (lambda r: {"seed": 1},
     "the measure returned the key 'seed': expected strings other than 'seed' and the grid's paths"),
    (lambda r: {"x": [1]}, "the measure returned 'x' = [1]: expected a number, a boolean, a string or None"),
    (lambda r: {f"x{r.seed}": 1},
     "sweep: point 0 (the scenario as it is), seed 2: the measure returned the keys ['x2']: expected the keys of "
     "the first run, ['x1']"),
    (lambda r: 5, "the measure returned an int: expected a dict"),
])
def test_a_measure_must_return_the_same_flat_keys_every_run(measure, message):
    with pytest.raises(TypeError) as refused:
        sweep(None, {}, DURATION, 2, measure=measure, workers=1)
    assert message in str(refused.value)


class KeysBySeed:
    """A measure whose keys depend on the seed, seed 1's coming a quarter of a second after
    the others: ``a`` for seed 1, ``b`` for the others."""

    def __call__(self, result: SimResult) -> dict:
        if result.seed == 1:
            time.sleep(0.25)
            return {"a": 1}
        return {"b": 1}


@pytest.mark.parametrize("seeds, named", [([1, 2, 3], 2), ([2, 1, 3], 1), ([3, 2, 1], 1)])
def test_the_run_whose_keys_differ_from_the_first_runs_is_the_same_whatever_runs_them(seeds, named):
    expected = "['a']" if named != 1 else "['b']"
    message = (f"sweep: point 0 (the scenario as it is), seed {named}: the measure returned the keys "
               f"{['b'] if named != 1 else ['a']}: expected the keys of the first run, {expected}")
    with ThreadPoolExecutor(3) as threads:
        for run in ({"workers": 1}, {"workers": 3}, {"executor": threads}):
            with pytest.raises(TypeError) as refused:
                sweep(None, {}, DURATION, seeds, measure=KeysBySeed(), **run)
            assert str(refused.value) == message, run
    assert multiprocessing.active_children() == []


def test_a_run_with_other_keys_stops_the_sweep_as_soon_as_the_runs_before_it_have_come():
    measured = []

    def measure(result):
        measured.append(result.seed)
        return {"a": 1} if result.seed == 1 else {"b": 1}

    with pytest.raises(TypeError, match=r"^sweep: point 0 \(the scenario as it is\), seed 2: "):
        sweep(None, {}, DURATION, [1, 2, 3, 4], measure=measure, workers=1)
    assert measured == [1, 2]


def test_a_measure_a_process_executor_cannot_receive_is_refused_before_any_run(monkeypatch):
    monkeypatch.setattr("gwlab.sweep.simulate", pytest.fail)

    def nested(result):
        return {}

    with ProcessPoolExecutor(1) as executor:
        for measure in (lambda result: {}, nested):
            with pytest.raises(TypeError) as refused:
                sweep(None, {}, DURATION, 1, measure=measure, executor=executor)
            message = str(refused.value)
            assert message.startswith(f"sweep: measure = {measure!r} cannot be sent to the worker processes (")
            assert message.endswith("): expected a function defined at the top level of a module, or an instance "
                                    "of a class defined there, which a process imports (or an executor of threads, "
                                    "or workers=1 and no executor)")
    monkeypatch.undo()
    with ThreadPoolExecutor(2) as executor:
        assert records(sweep(None, {}, DURATION, [4], measure=lambda r: {"n": r.seed}, executor=executor)) == \
            [{"seed": 4, "n": 4}]


SEEDS_OF_ANY_KIND = [
    (np.array([5]), (5,)),
    (np.array([5, 2, 9], dtype=np.uint8), (5, 2, 9)),
    (np.array([5.0, 2.0]), (5, 2)),
    (np.array(3), range(1, 4)),
    (np.int64(3), range(1, 4)),
    (Fraction(6, 2), range(1, 4)),
    (iter([4, 2]), (4, 2)),
    ((s for s in (7, 8)), (7, 8)),
    (range(2, 4), (2, 3)),
]


@pytest.mark.parametrize("seeds, taken", SEEDS_OF_ANY_KIND)
def test_seeds_may_be_an_array_or_any_iterable_and_mean_their_elements(seeds, taken):
    plan = Plan(None, {}, DURATION, seeds)
    assert plan.seeds == taken and all(type(s) is int for s in plan.seeds)


def test_an_array_of_seeds_runs_those_seeds():
    rows = records(sweep(None, {}, DURATION, np.array([5]), measure=codes, workers=1))
    assert [row["seed"] for row in rows] == [5] and rows[0]["ok"] == codes(simulate(None, DURATION, 5))["ok"]


def test_a_measures_numbers_of_other_types_are_made_plain_as_the_scenarios_are():
    measured = {"half": Fraction(1, 2), "whole": Fraction(6, 2), "n": np.int64(3), "ok": np.bool_(True)}
    row = records(sweep(None, {}, DURATION, 1, measure=lambda r: measured, workers=1))[0]
    assert row == {"seed": 1, "half": 0.5, "whole": 3, "n": 3, "ok": True}
    assert [type(row[key]) for key in measured] == [float, int, int, bool]


@pytest.mark.parametrize("values, points", [
    (np.array([50, 60]), [(50,), (60,)]),
    (np.array([50.5]), [(50.5,)]),
    ([Fraction(100, 2), Fraction(101, 2)], [(50,), (50.5,)]),  # made plain as the scenario's checks make them
    (iter([50, 60]), [(50,), (60,)]),
    ((v for v in (1.5,)), [(1.5,)]),
])
def test_a_grids_values_may_be_an_array_or_any_iterable(values, points):
    plan = Plan(OPEN, {"workload.rate": values}, DURATION, 1)
    assert plan.points == points and [type(p[0]) for p in plan.points] == [type(p[0]) for p in points]


MAX = config.MAX_SWEEP_RUNS
TOO_MANY = [
    (np.array([[5, 6]]), "an array of shape (1, 2): expected a list of values, or an array of one dimension"),
    (np.array([[5], [6]]), "an array of shape (2, 1): expected a list of values, or an array of one dimension"),
    (np.zeros((2, 2, 2)), "an array of shape (2, 2, 2): expected a list of values, or an array of one dimension"),
    (itertools.count(1), f"more than {MAX} values: expected at most {MAX} (gwlab.config.MAX_SWEEP_RUNS)"),
    (itertools.repeat(1), f"more than {MAX} values: expected at most {MAX} (gwlab.config.MAX_SWEEP_RUNS)"),
    ((s for s in range(1, MAX + 2)), f"more than {MAX} values: expected at most {MAX} (gwlab.config.MAX_SWEEP_RUNS)"),
    (np.arange(1, MAX + 2), f"{MAX + 1} values: expected at most {MAX} (gwlab.config.MAX_SWEEP_RUNS)"),
    (list(range(1, MAX + 2)), f"{MAX + 1} values: expected at most {MAX} (gwlab.config.MAX_SWEEP_RUNS)"),
]


@pytest.mark.parametrize("values", [{50, 60}, frozenset([50]), {50: "a"}.keys()])
def test_a_set_of_values_or_of_seeds_is_refused_for_it_has_no_order(values):
    expected = f"{type(values).__name__}: expected a list, or an iterable in an order (a set's changes from one " \
        "process to the next, and the rows follow it)"
    with pytest.raises(ConfigError) as refused:
        Plan(OPEN, {"workload.rate": values}, DURATION, 1)
    assert str(refused.value) == f"sweep: grid 'workload.rate': a {expected}"
    with pytest.raises(ConfigError) as refused:
        Plan(OPEN, {}, DURATION, values)
    assert str(refused.value) == f"sweep: seeds: a {expected}"


@pytest.mark.parametrize("values, message", TOO_MANY)
def test_an_array_of_two_dimensions_or_too_many_values_is_refused_at_once(values, message, monkeypatch):
    monkeypatch.setattr("gwlab.sweep.simulate", pytest.fail)
    with pytest.raises(ConfigError) as refused:
        Plan(OPEN, {"workload.rate": values}, DURATION, 1)
    assert str(refused.value) == f"sweep: grid 'workload.rate': {message}"
    if isinstance(values, Iterator):
        return  # read once
    with pytest.raises(ConfigError) as refused:
        Plan(OPEN, {}, DURATION, values)
    assert str(refused.value) == f"sweep: seeds: {message}"


@pytest.mark.parametrize("make", [lambda: itertools.count(1), lambda: itertools.repeat(1)])
def test_endless_seeds_are_refused_at_once(make):
    with pytest.raises(ConfigError) as refused:
        Plan(OPEN, {}, DURATION, make())
    assert str(refused.value) == f"sweep: seeds: more than {MAX} values: expected at most {MAX} " \
                                 "(gwlab.config.MAX_SWEEP_RUNS)"


def test_progress_bar_counts_the_runs_on_stderr(capsys):
    sweep(None, {}, DURATION, 2, workers=1, progress=True)
    assert "2/2" in capsys.readouterr().err
    sweep(None, {}, DURATION, 2, workers=1)  # auto: stderr is no terminal here
    assert capsys.readouterr().err == ""


def test_a_grid_may_move_the_scenarios_events():
    rows = records(sweep(SCENARIOS / "p1_outage.toml", {"events.0.at": [1.0, 100.0]}, DURATION, 1, workers=1))
    assert rows[0]["events.0.at"] == 1.0 and rows[0]["availability"] < rows[1]["availability"]
    plan = Plan(SCENARIOS / "p1_outage.toml", {"events.1.providers.p1.latency": [0.3]}, DURATION, 1)
    assert plan.scenario(plan.points[0]).events[1].patch == {"providers": {"p1": {"outage": "none", "latency": 0.3}}}


def test_a_grid_may_set_the_events_whole_even_on_a_scenario_without_any():
    outage = {"at": 1.0, "providers": {"p1": {"outage": "error"}}}
    plan = Plan(None, {"events": [[], [outage]]}, DURATION, 1)
    assert [plan.scenario(point).events for point in plan.points] == [
        (), config.from_dict({"events": [outage]}).events]
    with pytest.raises(ConfigError, match=r"^sweep: grid point events=\[\{\"at\": -1\}\]: events\[0\]\.at = -1: "):
        Plan(None, {"events": [[{"at": -1}]]}, DURATION, 1)


def test_each_point_is_a_scenario_a_run_starts_with_so_fields_fixed_while_running_may_vary():
    # limiter.backend is fixed while a gateway runs; every point of a sweep starts a run.
    rows = records(sweep(None, {"limiter.backend": ["local", "redis"]}, DURATION, 1, workers=1))
    assert [row["limiter.backend"] for row in rows] == ["local", "redis"]
    # One gateway: the bucket it shares with no one admits as its own does.
    assert {k: v for k, v in rows[0].items() if k != "limiter.backend"} == \
        {k: v for k, v in rows[1].items() if k != "limiter.backend"}


@pytest.mark.parametrize("grid, seeds, message", [
    ({"workloads.rate": [1]}, 1,
     "sweep: grid point workloads.rate=1: unknown key 'workloads' (did you mean 'workload'?); allowed: gateway, "
     "limiter, breaker, workload, retry, providers"),
    ({"workload.rat": [1]}, 1,
     "sweep: grid point workload.rat=1: unknown key 'workload.rat' (did you mean 'rate'?); allowed: "
     + ", ".join(f.name for f in dataclasses.fields(config.WorkloadConfig))),
    ({"providers.p9.latency": [1]}, 1, "sweep: grid point providers.p9.latency=1: unknown key 'providers.p9'; "
                                       "allowed: p1, p2, p3"),
    ({"events.2.at": [1]}, 1,
     "sweep: grid 'events.2.at': events index '2': expected a whole number from 0 to 1, written without leading "
     "zeros (2 events in the scenario)"),
    ({"events.x.at": [1]}, 1,
     "sweep: grid 'events.x.at': events index 'x': expected a whole number from 0 to 1, written without leading "
     "zeros (2 events in the scenario)"),
    ({"events.00.at": [1]}, 1,
     "sweep: grid 'events.00.at': events index '00': expected a whole number from 0 to 1, written without leading "
     "zeros (2 events in the scenario)"),
    ({"events.01.providers.p1.outage": ["none"]}, 1,
     "sweep: grid 'events.01.providers.p1.outage': events index '01': expected a whole number from 0 to 1, written "
     "without leading zeros (2 events in the scenario)"),
    ({"events.+1.at": [1]}, 1,
     "sweep: grid 'events.+1.at': events index '+1': expected a whole number from 0 to 1, written without leading "
     "zeros (2 events in the scenario)"),
    ({"workload.rate": []}, 1, "sweep: grid 'workload.rate': no values: expected at least one"),
    ([("workload.rate", [1])], 1,
     "sweep: grid: a list: expected a mapping of dotted paths to lists of values, like {'workload.rate': [500, 1000]}"),
    ({"workload.rate": 500}, 1, "sweep: grid 'workload.rate': expected a list of values, not an int"),
    ({"workload..rate": [1]}, 1, "sweep: grid 'workload..rate': expected a dotted path of the scenario's TOML "
                                 "shape, like 'workload.rate' or 'providers.p1.latency'"),
    ({"workload": [{}], "workload.rate": [1]}, 1, "sweep: grid 'workload' and 'workload.rate': the first holds the "
                                                  "second: expected paths of which none holds another"),
    ({"workload.rate": [500, -1]}, 1,
     "sweep: grid point workload.rate=-1: workload.rate = -1: expected a number >= 0.001 and <= 1e+06"),
    ({"events.0.providers.p1.error_rate": [2]}, 1,
     "sweep: grid point events.0.providers.p1.error_rate=2: event at 60 s: providers.p1.error_rate = 2: expected a "
     "number >= 0 and <= 1"),
    ({"providers.p1.latency": [0.0]}, 1,
     "sweep: grid point providers.p1.latency=0.0: providers.p1.latency = 0 (fixed) with workload.think_time = 0: a "
     "closed-loop client could send again in zero time; expected a latency > 0 or a think_time > 0"),
    ({"workload.rate": list(range(1, 1001)), "limiter.rate": list(range(1, 11))}, 11,
     "sweep: 10000 points x 11 seeds = 110000 runs: expected at most 100000 (gwlab.config.MAX_SWEEP_RUNS): split it"),
    ({"workload.rate": [500, 1000, 500.0]}, 1,
     "sweep: grid 'workload.rate': values[2] = 500.0 equals values[0] = 500: expected distinct values (a point gives "
     "the same runs every time)"),
    ({"workload": [{"mode": "open", "rate": 5}, {"rate": 5, "mode": "open"}]}, 1,
     "sweep: grid 'workload': values[1] = {\"rate\": 5, \"mode\": \"open\"} equals values[0] = {\"mode\": \"open\", "
     "\"rate\": 5}: expected distinct values (a point gives the same runs every time)"),
    ({"workload.retry_policy": ["x" * 600]}, 1,
     f'sweep: grid point workload.retry_policy="{"x" * 299}...: workload.retry_policy = '
     f"'{'x' * 300}...': expected one of 'none', 'openai_sdk', 'fixed', 'exponential_jitter', 'adaptive'"),
    ({}, 0, "sweep: seeds = 0: expected a whole number from 1 to 100000 (seeds 1 to n), or a list of seeds"),
    ({}, [3, 1, 3], "sweep: seeds: 3 is given twice: expected distinct seeds (a seed gives the same run every time)"),
    ({}, [1, -1], "sweep: seeds[1] = -1: expected a whole number >= 0 and <= 18446744073709551615"),
])
def test_a_bad_grid_is_refused_whole_before_any_run(grid, seeds, message):
    with pytest.raises(ConfigError) as refused:
        sweep(SCENARIOS / "p1_outage.toml", grid, DURATION, seeds, measure=pytest.fail)
    assert str(refused.value) == message
    assert config.MAX_SWEEP_RUNS == 100_000 and config.SHOWN_CHARS == 300


EVENTS = {"workload": {"mode": "open"}, "events": [{"at": i + 1.0, "workload": {"rate": 10.0}} for i in range(200)]}


@pytest.mark.parametrize("paths, named", [
    (1, "events.0.workload.rate=-1"),
    (3, "events.0.workload.rate=5, events.1.workload.rate=5, events.2.workload.rate=-1"),
    (4, "events.0.workload.rate=5, events.1.workload.rate=5, events.2.workload.rate=5 and 1 more path"),
    (200, "events.0.workload.rate=5, events.1.workload.rate=5, events.2.workload.rate=5 and 197 more paths"),
])
def test_a_point_of_many_paths_is_named_by_its_first_few_and_a_count_of_the_others(paths, named):
    grid = {f"events.{i}.workload.rate": [5] for i in range(paths - 1)}
    grid[f"events.{paths - 1}.workload.rate"] = [-1]
    with pytest.raises(ConfigError) as refused:
        Plan(EVENTS, grid, DURATION, 1)
    assert str(refused.value) == (f"sweep: grid point {named}: event at {paths} s: workload.rate = -1: expected a "
                                  "number >= 0.001 and <= 1e+06")
    assert config.SHOWN_PATHS == 3


STORM = SCENARIOS / "retry_storm.toml"
"""A trigger from t = 60 s to t = 90 s, clients that time out after 2 s and retry."""


@pytest.mark.timeout(10)
def test_a_grid_of_many_paths_is_refused_in_time_linear_in_its_paths():
    # Comparing every pair of 20,000 paths for one holding the other takes 400 million comparisons.
    with pytest.raises(ConfigError, match=r"^sweep: grid 'a' and 'a.b': the first holds the second"):
        Plan(None, {**{f"workload.x{i}": [1] for i in range(20_000)}, "a.b": [1], "a": [1]}, DURATION, 1)
    with pytest.raises(ConfigError, match=r": unknown key 'workload.x0'; allowed: mode, "):
        Plan(None, {f"workload.x{i}": [1] for i in range(20_000)}, DURATION, 1)


@pytest.mark.parametrize("scenario, grid, duration, bin_width, message", [
    (STORM, {"events.1.at": [61.0, 120.0]}, 420, 1.0,
     "sweep: grid point events.1.at=120.0: judge: the run lasts 420 s: expected at least 10 times the trigger's 60 "
     "s after its end, so 720 s"),
    (STORM, {"events.0.at": [10.0]}, 1000, 1.0,
     "sweep: grid point events.0.at=10.0: judge: a trigger from 10.0 to 90.0 s: expected 30 <= start < end"),
    (STORM, {"events.1.at": [60.0]}, 1000, 1.0,
     "sweep: grid point events.1.at=60.0: judge: a trigger from 60.0 to 60.0 s: expected 30 <= start < end"),
    (STORM, {"workload.retry_policy": ["none"], "workload.timeout": [0]}, 1000, 1.0,
     'sweep: grid point workload.retry_policy="none", workload.timeout=0: judge: workload.retry_policy = \'none\' '
     "and workload.timeout = 0: expected clients that time out or retry, whose user requests are judged"),
    (STORM, {"workload.rate": [30]}, 1000, 2.0,
     "sweep: grid point workload.rate=30: judge: bin_width = 2: expected a width that divides the 5 s of the bins "
     "judged"),
    (None, {"workload.rate": [1]}, 1, 1.0,
     "sweep: grid point workload.rate=1: judge: 0 scripted events: expected a trigger from the first to the second"),
    (None, {}, 1, 1.0,
     "sweep: grid (empty): the scenario as it is: judge: 0 scripted events: expected a trigger from the first to "
     "the second"),
])
def test_a_point_the_measure_cannot_judge_is_refused_before_any_run(scenario, grid, duration, bin_width, message,
                                                                      monkeypatch):
    monkeypatch.setattr("gwlab.sweep.simulate", pytest.fail)
    with pytest.raises(ConfigError) as refused:
        sweep(scenario, grid, duration, 1, measure=judge, bin_width=bin_width, workers=1)
    assert str(refused.value) == message


def test_bad_run_arguments_are_refused_naming_them():
    with pytest.raises(ConfigError, match=r"^sweep: duration = 0: expected a number >= 1e-06"):
        sweep(None, {}, 0, 1)
    with pytest.raises(ConfigError, match=r"^sweep: workers = 0: expected a whole number >= 1"):
        sweep(None, {}, DURATION, 1, workers=0)
    with pytest.raises(ConfigError, match=r"^sweep: workers = 1.5: expected a whole number >= 1"):
        sweep(None, {}, DURATION, 1, workers=np.float64(1.5))


WHOLE_NUMBERS = [  # (a whole number given as, taken as); every other way of giving it below takes it alike
    (2, 2), (2.0, 2), (np.float64(2.0), 2), (Fraction(4, 2), 2), (2.5, None), (float("nan"), None),
    (float("inf"), None), (True, None), ("2", None),
]


@pytest.mark.parametrize("given, taken", WHOLE_NUMBERS)
def test_a_whole_number_given_as_a_float_is_taken_alike_by_a_field_a_grid_the_seeds_and_the_workers(given, taken):
    threads = ThreadPoolExecutor(1)
    # One rule, the scenario's: a float of a whole value is the int it equals, anything else not a whole number is
    # refused naming where it was given, the value and what is allowed.
    takes = {
        "scenario field": lambda: config.from_dict({"workload": {"clients": given}}).workload.clients,
        "grid value": lambda: (lambda plan: plan.scenario(plan.points[0]).workload.clients)(
            Plan(None, {"workload.clients": [given]}, DURATION, 1)),
        "seeds": lambda: len(Plan(None, {}, DURATION, given).seeds),
        "a seed": lambda: Plan(None, {}, DURATION, [given]).seeds[0],
        "workers": lambda: len(Plan(None, {}, DURATION, 1, measure=codes).run(executor=threads, workers=given)),
    }
    refusals = {"scenario field": r"^scenario: workload.clients = .*: expected a whole number >= 1",
                "grid value": r"^sweep: grid point workload.clients=.*: expected a whole number >= 1",
                "seeds": r"^sweep: seeds = .*: expected a whole number n",
                "a seed": r"^sweep: seeds\[0\] = .*: expected a whole number >= 0",
                "workers": r"^sweep: workers = .*: expected a whole number >= 1"}
    for name, take in takes.items():
        if taken is None:
            with pytest.raises(ConfigError, match=refusals[name]):
                take()
        else:
            value = take()
            assert value == (1 if name == "workers" else taken) and type(value) is int, name
    threads.shutdown()


@pytest.mark.parametrize("seeds", [["--seeds", "2.0"], ["--seed-list", "1.0,2"], ["--seeds", "2"]])
def test_the_command_takes_a_whole_number_given_as_a_float_as_a_scenario_does(seeds, capsys):
    assert main(["sweep", "--grid", "workload.clients=5.0", "--duration", "1", "--workers", "1.0", *seeds]) == 0
    assert [line.split(",")[:2] for line in capsys.readouterr().out.splitlines()[1:]] == [["5.0", "1"], ["5.0", "2"]]


def test_workers_may_be_a_numpy_integer_as_the_seeds_and_the_values_may():
    assert records(sweep(None, {}, DURATION, np.int64(2), workers=np.int64(1))) == \
        records(sweep(None, {}, DURATION, 2, workers=1))


# -- rows as CSV ----------------------------------------------------------------------------


def _is_other_value(text: str) -> bool:
    """Whether ``text`` would be read back as something else than a string."""
    for kind in (int, float, json.loads):
        try:
            kind(text)
            return kind is not json.loads or text[:1] in ("[", "{")
        except ValueError:
            pass
    return text in ("", "True", "False")


TEXT = st.text(st.characters(blacklist_categories=("Cs",)))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT)
VALUES = st.one_of(SCALARS.filter(lambda v: not (isinstance(v, str) and _is_other_value(v))),
                   st.recursive(st.lists(SCALARS, max_size=3) | st.dictionaries(TEXT, SCALARS, max_size=3),
                                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                                max_leaves=6))
"""What a row may hold (:data:`gwlab.sweep.Value`, and a grid's table or array value):
strings that read as another value are the documented exception, tested apart."""


@given(st.lists(st.text(min_size=1), min_size=1, max_size=5, unique=True).flatmap(
    lambda keys: st.lists(st.tuples(*[VALUES] * len(keys)), min_size=1, max_size=5)
    .map(lambda rows: [dict(zip(keys, values)) for values in rows])))
def test_rows_written_as_csv_read_back_equal_value_for_value_and_type_for_type(rows):
    written = io.StringIO(newline="")
    write_csv(rows, written)
    path = _tmp_csv(written.getvalue())
    back = read_csv(path)
    assert back == rows
    assert [[type(v) for v in row.values()] for row in back] == [[type(v) for v in row.values()] for row in rows]
    assert [list(row) for row in back] == [list(row) for row in rows]


def _tmp_csv(text: str) -> Path:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, encoding="utf-8", newline="") as f:
        f.write(text)
    return Path(f.name)


@pytest.mark.parametrize("field, value", [
    ('""', None), ("True", True), ("False", False), ("0", 0), ("-12", -12), ("1.0", 1.0), ("1e-06", 1e-06),
    ("inf", math.inf), ("-inf", -math.inf), ("fixed", "fixed"), ("true", "true"), ("none", "none"),
    ("7", 7),  # a string "7" comes back as the int it reads as
    ('"[502, 504]"', [502, 504]), ('"{""mode"": ""open"", ""rate"": 5.0}"', {"mode": "open", "rate": 5.0}),
    ("[x", "[x"), ('"[1, 2"', "[1, 2"), ("[" * 100_000, "[" * 100_000),  # not JSON: strings
])
def test_each_kind_of_field_is_read_as_the_value_written(tmp_path, field, value):
    path = tmp_path / "rows.csv"
    path.write_text(f"column\r\n{field}\r\n", encoding="utf-8")  # a lone empty field is quoted
    [row] = read_csv(path)
    assert row == {"column": value} and type(row["column"]) is type(value)


def test_a_grid_of_tables_and_arrays_is_written_as_json_and_read_back_as_the_sweep_returned_it(tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    assert main(["sweep", "--grid", "retry.retry_on=[502, 504],[429]", "--grid", 'workload={mode = "open", rate = 5}',
                 "--duration", "1", "--workers", "1", "--out", str(out)]) == 0
    rows = read_csv(out)
    grid = {"retry.retry_on": [[502, 504], [429]], "workload": [{"mode": "open", "rate": 5}]}
    assert rows == records(sweep(None, grid, 1, 1, workers=1))
    assert out.read_text().splitlines()[1].startswith('"[502, 504]","{""mode"": ""open"", ""rate"": 5}",1,')


def test_nan_is_read_back_as_nan(tmp_path):
    written = io.StringIO(newline="")
    write_csv([{"latency_p50": math.nan}], written)
    path = tmp_path / "rows.csv"
    path.write_text(written.getvalue(), encoding="utf-8")
    assert math.isnan(read_csv(path)[0]["latency_p50"])


def test_the_phase_diagram_of_the_tutorial_reads_back_as_the_sweep_wrote_it():
    rows = read_csv(Path(__file__).resolve().parents[1] / "notebooks" / "data" / "retry_storm_phase.csv")
    assert len(rows) == 210
    assert rows[0] == {"workload.retry_policy": "fixed", "workload.rate": 20, "events.1.at": 61, "seed": 1,
                       "trigger": 1.0, "baseline": 1.0, "persists": False, "recovered": True, "recovered_after": 4.0}
    assert {type(row["recovered_after"]) for row in rows} <= {float, type(None)}


# -- gwlab sweep ----------------------------------------------------------------------------


def test_the_command_writes_the_rows_of_sweep_as_csv(tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    assert main(["sweep", str(SCENARIOS / "seed.toml"), "--grid", "workload.rate=200,400",
                 "--grid", "workload.mode=open", "--grid", "breaker.enabled=true,false", "--duration", str(DURATION),
                 "--seed-list", "7,2", "--workers", "2", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"8 runs (4 points x 2 seeds) written to {out}\n"
    grid = {"workload.rate": [200, 400], "workload.mode": ["open"], "breaker.enabled": [True, False]}
    expected = records(sweep(SCENARIOS / "seed.toml", grid, DURATION, SEEDS, workers=1))
    with out.open(newline="") as f:
        written = list(csv.DictReader(f))
    assert written == [{k: "" if v is None else str(v) for k, v in row.items()} for row in expected]


def test_the_command_writes_csv_to_stdout_without_out(capsys):
    assert main(["sweep", "--grid", "workload.clients=5", "--duration", "1", "--seeds", "2", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "workload.clients,seed," + ",".join(MEASURED)
    assert [line.split(",")[:2] for line in lines[1:]] == [["5", "1"], ["5", "2"]]


def half_then(exception: BaseException) -> Callable[..., None]:
    """A ``write_csv`` that writes half of the rows, then raises ``exception``."""
    def write(rows: list, out: io.TextIOBase) -> None:
        write_csv(rows[:len(rows) // 2], out)
        raise exception
    return write


@pytest.mark.parametrize("exception, status, message", [
    (KeyboardInterrupt(), 130, "gwlab: sweep interrupted: nothing written\n"),
    (OSError(errno.ENOSPC, "No space left on device"), 2,
     "gwlab: error: --out: '{out}': cannot write: No space left on device\n"),
])
def test_the_command_writes_its_file_whole_or_leaves_the_one_there_before(exception, status, message, tmp_path,
                                                                         capsys, monkeypatch):
    out = tmp_path / "sweep.csv"
    out.write_text("before\n")
    monkeypatch.setattr("gwlab.sweep.write_csv", half_then(exception))
    assert main(["sweep", "--grid", "workload.clients=5,10", "--duration", "1", "--workers", "1",
                 "--out", str(out)]) == status
    assert capsys.readouterr().err == message.format(out=out)
    assert out.read_text() == "before\n"
    assert [path.name for path in tmp_path.iterdir()] == ["sweep.csv"]


def test_the_command_writes_through_a_link_and_to_what_is_not_a_file(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    link = tmp_path / "sweep.csv"
    link.symlink_to(tmp_path / "data" / "sweep.csv")
    for out in (link, Path("/dev/null")):
        assert main(["sweep", "--grid", "workload.clients=5", "--duration", "1", "--workers", "1",
                     "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"1 runs (1 points x 1 seeds) written to {out}"
                                                    for out in (link, "/dev/null")]
    assert link.is_symlink() and read_csv(link)[0]["workload.clients"] == 5
    assert Path("/dev/null").is_char_device()


def test_the_command_runs_nothing_and_writes_nothing_for_a_point_it_cannot_judge(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("gwlab.sweep.simulate", pytest.fail)
    out = tmp_path / "rec.csv"
    assert main(["sweep", str(STORM), "--grid", "events.1.at=61,120", "--duration", "420", "--measure", "recovery",
                 "--workers", "1", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("gwlab: error: --grid point events.1.at=120: judge: the run lasts 420 s")
    assert not out.exists()


def test_the_command_judges_each_run_around_its_trigger_with_measure_recovery(capsys):
    assert main(["sweep", str(SCENARIOS / "retry_storm.toml"), "--grid", "workload.retries=1,2",
                 "--grid", "events.1.at=65", "--duration", "125", "--workers", "1", "--measure", "recovery"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [(r["workload.retries"], r["trigger"], r["persists"], r["recovered"]) for r in rows] == [
        ("1", "5.0", "False", "True"), ("2", "5.0", "True", "False")]
    assert list(rows[0])[-5:] == ["trigger", "baseline", "persists", "recovered", "recovered_after"]


@pytest.mark.parametrize("args, message", [
    (["--grid", "workload.rate", "--duration", "1"],
     "--grid 'workload.rate': expected PATH=V1,V2,..., like workload.rate=500,1000"),
    (["--grid", "workload.rate=-1,5", "--duration", "1"],
     "--grid point workload.rate=-1: workload.rate = -1: expected a number >= 0.001 and <= 1e+06"),
    (["--grid", "workload.rate=5,1,5", "--duration", "1"],
     "--grid 'workload.rate': values[2] = 5 equals values[0] = 5: expected distinct values (a point gives the same "
     "runs every time)"),
    (["--grid", "workload.rate=1", "--grid", "workload.rate=2", "--duration", "1"],
     "--grid workload.rate: given twice: expected each path once, its values separated by commas"),
    (["--grid", "workload.rate=1", "--duration", "0"],
     "--duration = 0.0: expected a number >= 1e-06 and <= 31536000"),
    (["--grid", "workload.rate=1", "--duration", "1", "--seeds", "0"],
     "--seeds = 0: expected a whole number from 1 to 100000 (seeds 1 to N)"),
    (["--grid", "workload.rate=1", "--duration", "1", "--seeds", "100001"],
     "--seeds = 100001: expected a whole number from 1 to 100000 (seeds 1 to N)"),
    (["--grid", "workload.rate=1", "--duration", "1", "--seed-list", "1,x"],
     "--seed-list '1,x': expected whole numbers separated by commas, like 1,2,3"),
    (["--grid", "workload.rate=1", "--duration", "1", "--seed-list", "1,2.5"],
     "--seed-list '1,2.5': expected whole numbers separated by commas, like 1,2,3"),
    (["--grid", "workload.rate=1", "--duration", "1", "--seeds", "2.5"],
     "argument --seeds: expected a whole number, got '2.5' (see gwlab sweep --help)"),
    (["--grid", "workload.rate=1", "--duration", "1", "--workers", "0.5"],
     "argument --workers: expected a whole number, got '0.5' (see gwlab sweep --help)"),
    (["--grid", "workload={rate = 1, rate = 2}", "--duration", "1"],
     "--grid 'workload={rate = 1, rate = 2}': not TOML (Duplicate inline table key 'rate'): expected values as TOML "
     "writes them, a string holding brackets, braces or quotes in quotes"),
    (["--grid", "retry.retry_on=[502, 504],none", "--duration", "1"],
     "--grid 'retry.retry_on=[502, 504],none': not TOML (Invalid value): expected values as TOML writes them, a "
     "string holding brackets, braces or quotes in quotes"),
    (["--grid", 'workload.retry_policy="fixed', "--duration", "1"],
     "--grid 'workload.retry_policy=\"fixed': not TOML (Unterminated string): expected values as TOML writes them, "
     "a string holding brackets, braces or quotes in quotes"),
    (["--grid", "workload.rate=1", "--duration", "1", "--out", ""],
     "argument --out: expected a file name, got '' (see gwlab sweep --help)"),
    (["", "--grid", "workload.rate=1", "--duration", "1"],
     "argument SCENARIO: expected a file name, got '' (see gwlab sweep --help)"),
    (["--grid", "workload.rate=1", "--duration", "1", "--seeds", "nan"],
     "argument --seeds: expected a whole number, got 'nan' (see gwlab sweep --help)"),
    (["--grid", "workload.rate=1", "--duration", "1", "--out", "/nonexistent/dir/s.csv"],
     "--out: '/nonexistent/dir/s.csv': expected a file in an existing directory"),
    (["--duration", "1"], "the following arguments are required: --grid (see gwlab sweep --help)"),
    (["/tmp/gwlab-sweep.toml", "--grid", "workload.rate=1", "--duration", "1", "--out", "/tmp/../tmp/gwlab-sweep.toml"],
     "SCENARIO and --out both name '/tmp/../tmp/gwlab-sweep.toml': expected a file of its own for each"),
    ([str(STORM), "--grid", "events.1.at=61,120", "--duration", "420", "--measure", "recovery"],
     "--grid point events.1.at=120: judge: the run lasts 420 s: expected at least 10 times the trigger's 60 s after "
     "its end, so 720 s"),
    (["--grid", "workload.rate=1", "--duration", "1", "--measure", "recovery"],
     "--grid point workload.rate=1: judge: 0 scripted events: expected a trigger from the first to the second"),
    ([str(STORM), "--grid", "workload.timeout=0", "--grid", "workload.retry_policy=none", "--duration", "420",
      "--measure", "recovery"],
     '--grid point workload.timeout=0, workload.retry_policy="none": judge: workload.retry_policy = \'none\' and '
     "workload.timeout = 0: expected clients that time out or retry, whose user requests are judged"),
])
def test_a_bad_flag_is_one_line_and_exit_2(args, message, capsys):
    assert main(["sweep", *args]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"gwlab: error: {message}\n")


def _signalled_sweep(sig: signal.Signals, out: Path, settled: bool) -> tuple[int, str, str, bool]:
    """``gwlab sweep`` sent ``sig`` once its pool's workers run (``settled``), or as soon as
    the first of them is forked: its exit status, stdout, stderr, and whether a process of it
    was left behind."""
    command = [sys.executable, "-m", "gwlab", "sweep", "--grid", "workload.rate=50,100", "--duration", "20000",
               "--workers", "2", "--out", str(out)]
    # SIGINT as a terminal sends it: not ignored, as a shell's background job would have it.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        deadline = time.monotonic() + SIMULATION_TIMEOUT / 2
        while len(children.read_text().split()) < (2 if settled else 1) and time.monotonic() < deadline:
            time.sleep(0.05 if settled else 0)
        if settled:
            time.sleep(0.5)  # the pool started, its workers running
        process.send_signal(sig)  # to the command alone, not to its workers
        # The workers hold its stdout: it closes once they have ended too.
        stdout, stderr = process.communicate(timeout=10)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever the command left running
            left = True
        except ProcessLookupError:
            left = False
        process.communicate()
    return process.returncode, stdout, stderr, left


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads a process's children in /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_command_at_once_with_its_worker_processes_and_writes_nothing(sig, tmp_path):
    out = tmp_path / "sweep.csv"
    assert _signalled_sweep(sig, out, settled=True) == (128 + sig, "", "gwlab: sweep interrupted: nothing written\n",
                                                        False)
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads a process's children in /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_pool_forks_its_workers_ends_the_command_as_later(sig, tmp_path):
    # Sent while the pool forks, the signal used to be lost in the fork's after-fork hooks (which ignore an
    # exception): the command ran on, most times out of these.
    out = tmp_path / "sweep.csv"
    ends = [_signalled_sweep(sig, out, settled=False) for _ in range(6)]
    assert ends == [(128 + sig, "", "gwlab: sweep interrupted: nothing written\n", False)] * 6
    assert not out.exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a worker forked with the command's handler")
def test_sigterm_ends_a_worker_forked_with_the_commands_handler_as_by_default():
    child = os.fork()
    if child == 0:  # a worker, before it sets handlers of its own
        try:
            terminated(os.getppid(), signal.SIGTERM, None)
        finally:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


@pytest.mark.parametrize("text, values", [
    ("500,1000", [500, 1000]),
    ("0.5, 1", [0.5, 1]),
    ("true,false", [True, False]),
    ("none,error", ["none", "error"]),
    ('"a,b","c"', ["a,b", "c"]),
    ("[502, 504],[502]", [[502, 504], [502]]),
    ("1,error", [1, "error"]),
    ("", []),
])
def test_grid_values_are_typed_as_toml_types_them(text, values):
    assert _toml_values(text) == values


def test_help_names_every_flag(capsys):
    with pytest.raises(SystemExit) as done:
        main(["sweep", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gwlab sweep")
    for flag in ("SCENARIO", "--grid", "--duration", "--seeds", "--seed-list", "--workers", "--out"):
        assert flag in out


def test_no_rows_are_an_empty_csv_read_back_as_no_rows():
    written = io.StringIO(newline="")
    write_csv([], written)
    assert written.getvalue() == ""
    assert read_csv(_tmp_csv("")) == []
