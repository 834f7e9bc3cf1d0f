"""The checks of notebooks 04 to 07: each passes the right answer and its worked solution, and
fails the characteristic wrong answers with a message that names the quantity that is off and
which way; the PromQL that notebook 04 gives is valid."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from gwlab import simulate
from gwlab.exercises import capstone, fault_drills, load_testing, metrics
from tests.conftest import SIMULATION_TIMEOUT, require_tool
from tests.support import assert_verdict, check_promql, solution

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


# -- 04 metrics ------------------------------------------------------------------------------


def test_reference_histogram_quantile_follows_promql():
    buckets = [(0.1, 20.0), (1.0, 40.0), (math.inf, 50.0)]
    assert metrics.histogram_quantile(0.3, buckets) == pytest.approx(0.075)  # rank 15 of 20 in (0, 0.1]
    assert metrics.histogram_quantile(0.6, buckets) == pytest.approx(0.55)  # rank 30: 10 of 20 into (0.1, 1]
    assert metrics.histogram_quantile(0.9, buckets) == 1.0  # in the +Inf bucket: the highest finite le
    assert math.isnan(metrics.histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


def test_reference_increase_counts_restarts():
    assert metrics.increase([(0, 100), (15, 130), (30, 12), (45, 40)]) == 70
    assert metrics.increase([(0, 5)]) == 0


def test_metrics_solutions_pass_their_checks():
    ns = solution("04_metrics_prometheus")
    assert_verdict(metrics.check_histogram_quantile(ns["histogram_quantile"]), True, "all 6 cases")
    assert_verdict(metrics.check_increase(ns["increase"]), True, "all 5 cases")
    assert ns["answer"] is ns["histogram_quantile"]


def upper_bound_only(q, buckets):
    return next(le for le, n in buckets if n >= q * buckets[-1][1])


def interpolated_from_zero(q, buckets):
    rank, below = q * buckets[-1][1], 0.0
    for le, n in buckets:
        if n >= rank:
            return le * (rank - below) / (n - below) if le != math.inf else below
        below = n


def inf_bucket_not_handled(q, buckets):
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            return lower + (le - lower) * (rank - below) / (n - below)
        lower, below = le, n


def crashes(q, buckets):
    return buckets[99][0]


@pytest.mark.parametrize("answer, ok, named", [
    (metrics.histogram_quantile, True, ["all 6 cases"]),
    (upper_bound_only, False, ["histogram_quantile(0.5, [(0.05, 0), (0.1, 60)", "gave 0.1, too high",
                               "(PromQL's rule gives 0.0916667)", "the bucket's upper bound"]),
    (interpolated_from_zero, False, ["gave 0.0833333, too low", "interpolates from 0"]),
    (inf_bucket_not_handled, False, ["histogram_quantile(0.99, [(0.1, 2), (0.5, 8), (inf, 10)]) gave inf, too high",
                                     "highest finite le"]),
    (crashes, False, ["raised IndexError: list index out of range (PromQL's rule gives 0.0916667)"]),
    (None, False, ["histogram_quantile(q, buckets)"]),
])
def test_histogram_quantile_check(answer, ok, named):
    assert_verdict(metrics.check_histogram_quantile(answer), ok, *named)


@pytest.mark.parametrize("answer, ok, named", [
    (metrics.increase, True, ["all 5 cases"]),
    (lambda samples: samples[-1][1] - samples[0][1], False, ["gave -60, too low", "last value minus the first"]),
    (lambda samples: sum(max(0, b - a) for (_, a), (_, b) in zip(samples, samples[1:])), False,
     ["gave 58, too low", "skips the drops"]),
    (lambda samples: sum(abs(b - a) for (_, a), (_, b) in zip(samples, samples[1:])), False,
     ["gave 176, too high", "a drop as a gain of its size"]),
    (None, False, ["increase(samples)"]),
])
def test_increase_check(answer, ok, named):
    assert_verdict(metrics.check_increase(answer), ok, *named)


def test_every_characteristic_mistake_fails_a_case():
    for wrong, _ in metrics._QUANTILE_MISTAKES:
        assert not metrics.check_histogram_quantile(wrong)
    for wrong, _ in metrics._INCREASE_MISTAKES:
        assert not metrics.check_increase(wrong)


def test_placeholders_fail_with_what_to_write():
    assert "histogram_quantile(q, buckets)" in metrics.check_histogram_quantile(None).message
    assert "increase(samples)" in metrics.check_increase(None).message
    assert not load_testing.check_in_flight(None) and not fault_drills.check_backoff(None)
    assert "patch" in capstone.check_slo(None).message


def _promql(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return [" ".join(block.split()) for block in re.findall(r"```promql\n(.*?)```", text, re.S)]


def test_the_promql_of_notebook_04_is_valid(tmp_path):
    promtool = require_tool("promtool")
    queries = _promql(NOTEBOOKS / "04_metrics_prometheus.ipynb")
    assert len(queries) == 7
    run = check_promql(promtool, queries, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


# -- 05 fault drills, 06 load testing -----------------------------------------------------------


def test_recovery_time_is_read_from_the_transitions():
    result = simulate(fault_drills.outage_scenario(40, {"base_delay": 1.0}), duration=90, seed=1)
    # Cooldowns 1, 2, 4, 8, 16 s reach the 30 s cap at 41.6 s: p1 waits until 71.7 s.
    assert fault_drills.recovery_time(result, "p1", 50) == pytest.approx(21.73, abs=0.01)
    assert fault_drills.recovery_time(result, "p1", 80) is None


def test_fault_drill_outages_end_at_phases_spread_over_any_cooldown():
    # A cap c >= 10 s fails an outage that ends in the first half of a cooldown cycle. The
    # cooldowns start at the same offset from each outage's start, so whatever the offset, one
    # outage ends in that half when the ends leave no gap of half a cycle between them.
    lengths = [length for _, length in fault_drills.OUTAGES]
    assert len({seed for seed, _ in fault_drills.OUTAGES}) == len(lengths) == fault_drills.OUTAGE_COUNT
    assert min(lengths) == fault_drills.SHORTEST_OUTAGE
    assert max(lengths) <= fault_drills.SHORTEST_OUTAGE + fault_drills.OUTAGE_SPREAD
    for cycle in (10.1, 15.1, 20.1):
        phases = sorted(length % cycle for length in lengths)
        gaps = [b - a for a, b in zip(phases, phases[1:])] + [phases[0] + cycle - phases[-1]]
        assert max(gaps) < cycle / 2, cycle


@pytest.mark.parametrize("answer, ok, named", [
    ({"base_delay": 1.0, "max_cooldown": 4.0}, True, ["after each of 8 outages of 30 to 47.1 s, and one that ends "
                                                      "just after p1's breaker opened", "recovers within 5 s"]),
    ({"base_delay": 4.0, "max_cooldown": 4.0}, True, ["recovers within 5 s"]),
    ({"base_delay": 1.0, "max_cooldown": 4.8}, True, ["recovers within 5 s"]),
    # The default cap: the cooldown running when an outage ends can be 30 s.
    ({"base_delay": 1.0, "max_cooldown": 30.0}, False, ["recovery too slow after 8 of the 9 outages",
                                                        "too late by more than 10 s", "max_cooldown"]),
    # A cap above the bound passes the outages that end late in a cooldown, not the others,
    # and never the one that ends just after an opening.
    ({"base_delay": 1.0, "max_cooldown": 8.0}, False, ["recovery too slow after 4 of the 9 outages",
                                                       "the 39.864 s outage of seed 4, which ends 1 ms after p1's "
                                                       "breaker opened, p1 was healthy again 8.10 s later, too late "
                                                       "by 3.1 s"]),
    # Just above: only the worst end shows it (a cooldown of the cap, then the 0.1 s probe).
    ({"base_delay": 1.0, "max_cooldown": 5.1}, False, ["recovery too slow after 1 of the 9 outages",
                                                       "healthy again 5.20 s later, too late by 0.2 s"]),
    ({"base_delay": 1.0, "max_cooldown": 4.9}, False, ["recovery too slow after 1 of the 9 outages"]),
    ({"base_delay": 1.0, "max_cooldown": 3.0}, False, ["too many failed probes in 8 of the 8 outages",
                                                       "2 too many (allowed: 15)"]),
    ({"base_delay": 5.0, "max_cooldown": 4.0}, False, ["breaker.max_cooldown = 4.0"]),
    (None, False, ["answer is None", "expected a dict such as"]),
    # A base delay alone above the default max_cooldown: the one to set is the one left out.
    ({"base_delay": 40.0}, False, ["base_delay 40 s is longer than max_cooldown, whose default is 30 s: set "
                                   "max_cooldown too, at least the base delay"]),
])
def test_backoff_check(answer, ok, named):
    assert_verdict(fault_drills.check_backoff(answer), ok, *named)


def test_fault_drill_solution_passes():
    assert_verdict(fault_drills.check_backoff(solution("05_fault_drills")["answer"]), True, "recovers within 5 s")


def test_littles_law_holds_on_the_exercise_run_within_the_tolerance():
    result = load_testing.little_run()
    s = result.summary()
    predicted = s["rates"]["admitted"] * s["latency"]["mean"]
    assert predicted == pytest.approx(load_testing.mean_in_flight(result), rel=load_testing.LITTLE_TOLERANCE)
    # The edge effect's bound: the latencies are at most 2 s, the run 60 s long.
    assert s["latency"]["max"] / (2 * result.duration) < load_testing.LITTLE_TOLERANCE


@pytest.mark.parametrize("predict, ok, named", [
    (lambda s: s["rates"]["admitted"] * s["latency"]["mean"], True, ["Little's law holds within"]),
    (lambda s: solution("06_load_testing")["in_flight"], True, ["Little's law holds within"]),
    (lambda s: s["rates"]["admitted"] * s["latency"]["p50"], False, ["too low by 67%", "median latency (p50)"]),
    (lambda s: s["rates"]["admitted"] * s["latency"]["p99"], False, ["too high by", "tail quantile"]),
    (lambda s: s["rates"]["ok"] * s["latency"]["mean"], False, ["too low by 7%", "successful requests only"]),
    (lambda s: 500 * 0.37, False, ["too high by 23%", "configured weights"]),
    (lambda s: s["rates"]["admitted"] / s["latency"]["mean"], False, ["too high by", "divides the rate"]),
    (lambda s: 100.0, False, ["too low by 33%", "multiply the run's admitted rate"]),
    (lambda s: None, False, ["answer is None", "expected a number: the arrival rate"]),
    (lambda s: 1e300, False, ["1e+300 requests in flight is too high by a factor of 6.65e+297"]),
])
def test_in_flight_check(predict, ok, named):
    assert_verdict(load_testing.check_in_flight(predict(load_testing.little_run().summary())), ok, *named)


# -- 07 capstone -----------------------------------------------------------------------------


def test_capstone_checks_more_seeds_than_the_notebook_explores():
    assert set(capstone.SEEDS) < set(capstone.CHECK_SEEDS) and len(capstone.CHECK_SEEDS) == 10


@pytest.mark.parametrize("answer, ok, named", [
    (solution("07_capstone")["answer"], True, ["SLO met on all 10 seeds", "p50 <= 0.099 s"]),
    # Another setting with a margin on every part of the SLO.
    ({"providers": {"p1": {"weight": 1000}, "p3": {"weight": 0}},
      "breaker": {"failure_threshold": 2, "base_delay": 5.0, "max_cooldown": 5.0}}, True, ["SLO met on all 10 seeds"]),
    # The defaults miss all three parts, each for its characteristic reason.
    ({}, False, ["missed on 10 of the 10 seeds", "availability below 99%", "points short",
                 "p99 at or above 1 s on seeds 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, too high: the worst 1.507 s",
                 "that is p3's 1.5 s latency", "median above 0.2 s", "p1 answered only 48.0% of the requests"]),
    # p3 out of the picks alone: the brownout's failures still get through.
    ({"providers": {"p3": {"weight": 0}}}, False, ["availability below 99% on seeds 1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
                                                   "too low", "failing calls go through"]),
    # A timeout shorter than p2's latency: its calls end in 504.
    ({"providers": {"p3": {"weight": 0}}, "gateway": {"timeout": 0.3}}, False,
     ["availability below 99%", "points short", "timeouts (504)"]),
    # A fast breaker alone: p3's latency still sets p99.
    ({"breaker": {"failure_threshold": 2, "base_delay": 3.0}}, False, ["that is p3's 1.5 s latency"]),
    # With p1's weight at 70 its fast answers are barely half: the median holds on some seeds
    # only (on three in five of all seeds, not on seed 10).
    ({"providers": {"p3": {"weight": 0}}, "breaker": {"failure_threshold": 2, "base_delay": 3.0}}, False,
     ["missed on 1 of the 10 seeds", "median above 0.2 s on seed 10", "p1 answered only 49.8%"]),
])
def test_capstone_check(answer, ok, named):
    assert_verdict(capstone.check_slo(answer), ok, *named)


@pytest.mark.parametrize("patch, named", [
    ({"providers": {"p1": {"error_rate": 0.0}}}, "providers.p1: only weight is yours to set, not error_rate"),
    ({"workload": {"rate": 10}}, "'workload' is not yours to set"),
    ({"limiter": {"rate": 10}}, "'limiter' is not yours to set"),
    ({"gateway": {"timeout": 1, "colour": "red"}}, "gateway: colour is not part of this exercise"),
    ({"breaker": {"failure_threshold": 0}}, "breaker.failure_threshold = 0"),
])
def test_capstone_refuses_changes_outside_the_operators_control(patch, named):
    assert_verdict(capstone.check_slo(patch), False, named)
