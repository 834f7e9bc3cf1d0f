"""The check cells of notebooks 01-03: each passes the right answer and its worked solution,
and fails the characteristic wrong answers with a message that names the quantity that is off
and which way."""

from __future__ import annotations

import pytest

from gwlab.exercises import breaker
from gwlab.exercises.balancing import check_sample_size, check_share_without_p3, smallest_sample
from gwlab.exercises.token_bucket import bursty_arrivals, check_burst, rejections
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import assert_verdict, solution

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)


# -- 01_token_bucket ------------------------------------------------------------------------

def test_bursty_workload_has_four_batches_on_a_steady_stream():
    arrivals = bursty_arrivals()
    assert len(arrivals) == 20 * 40 + 4 * 200
    assert arrivals == sorted(arrivals)


def test_token_bucket_solution_is_the_reasoned_count_and_the_smallest_burst():
    answer = solution("01_token_bucket")["answer"]
    assert answer == 200 + 21 - 50 == 171
    assert rejections(answer) == [] and rejections(answer - 1) != []
    assert_verdict(check_burst(answer), True, "smallest burst that does it is 171")


@pytest.mark.parametrize("answer, ok, named", [
    (171, True, ["all 1600 requests admitted"]),
    (188, True, ["all 1600 requests admitted"]),
    # The continuous estimate (400 + 40 - 100) * 0.5 counts one steady request too few.
    (170, False, ["burst 170 is too small by 1 token", "one at each end", "4 of the 1600 requests get a 429"]),
    (150, False, ["too small by 21 tokens", "leaves out the steady traffic"]),
    (100, False, ["too small by 71 tokens", "both ends included"]),
    (200, False, ["too large by 29 tokens", "a batch alone"]),
    (221, False, ["too large by 50 tokens", "not the 50 tokens that flow back in"]),
    (250, False, ["too large by 79 tokens", "more than 10% above the smallest"]),
    (None, False, ["expected the burst"]),
    (True, False, ["expected the burst"]),
    (0, False, ["expected the burst"]),
])
def test_token_bucket_check(answer, ok, named):
    assert_verdict(check_burst(answer), ok, *named)


def test_token_bucket_refusals_are_counted_in_the_message():
    assert f"{len(rejections(150))} of the 1600 requests" in check_burst(150).message


# -- 02_weighted_balancing -----------------------------------------------------------------

def test_balancing_solutions_pass():
    names = solution("02_weighted_balancing")
    assert_verdict(check_share_without_p3(names["share_answer"]), True, "70 / (70 + 20) = 0.7778")
    assert_verdict(check_sample_size(names["sample_answer"]), True, "gives n = 14400")
    assert names["sample_answer"] == smallest_sample() == 14400


@pytest.mark.parametrize("answer, ok, named", [
    (70 / 90, True, ["0.7778"]),
    (0.78, True, ["0.7778"]),                  # 70/90 rounded to two decimals is the idea, rounded
    (0.7, False, ["p1's share 0.7 is too low by 0.0778", "all three providers are eligible"]),
    (0.77, False, ["too low by 0.0078", "over the total weight 100", "the weight still eligible, 90"]),
    (0.8, False, ["too high by 0.0222", "all of p3's share to p1"]),
    (0.75, False, ["too low", "evenly"]),
    (0.875, False, ["too high", "p2 excluded"]),
    (0.5, False, ["too low by 0.2778", "divide p1's weight"]),
    (77.78, False, ["looks like a percentage"]),
    (None, False, ["expected p1's share"]),
])
def test_share_check(answer, ok, named):
    assert_verdict(check_share_without_p3(answer), ok, *named)


@pytest.mark.parametrize("answer, ok, named", [
    (14400, True, ["n = 14400"]),
    (14688, True, ["n = 14400"]),
    (3600, False, ["too few", "2 standard deviations", "±2.00% over them, wider than ±1%"]),
    (8100, False, ["too few", "3 standard deviations", "±1.33%"]),
    (120, False, ["too few", "sqrt(n)"]),
    (16000, False, ["more than needed", "variance of a share as p", "±0.95% over them, narrower"]),
    (57600, False, ["more than needed", "±0.5%"]),
    (20000, False, ["more than needed", "±0.85% over them, narrower than the ±1% asked"]),
    (None, False, ["expected a number of requests"]),
    (0, False, ["expected a number of requests > 0"]),
])
def test_sample_size_check(answer, ok, named):
    assert_verdict(check_sample_size(answer), ok, *named)


# -- 03_circuit_breaker --------------------------------------------------------------------

def test_breaker_runs_differ_in_blip_order_and_timing():
    schedules = [breaker.blips(run) for run in range(len(breaker.SEEDS))]
    starts = {round(start % breaker.BLIP_SPACING, 6) for schedule in schedules for start, _ in schedule}
    assert len(starts) == len(breaker.SEEDS)
    firsts = [round(end - start, 6) for (start, end), *_ in schedules]
    assert sorted(set(firsts)) == list(breaker.BLIP_LENGTHS)
    assert all(end <= breaker.DURATION for schedule in schedules for _, end in schedule)


def test_breaker_solution_passes():
    answer = solution("03_circuit_breaker")["answer"]
    assert answer == {"failure_threshold": 5, "base_delay": 0.1}
    assert_verdict(breaker.check_flaky_breaker(answer), True, "opened for all 30 blips", "healthy again")


@pytest.mark.parametrize("answer, ok, named", [
    # What the summary teaches: a threshold that rarely trips by chance, a short base delay.
    ({"failure_threshold": 5, "base_delay": 1.0}, True, ["opened for all 30 blips"]),
    # Long base delays: no chance openings, but a working p1 is kept out long after a blip.
    ({"failure_threshold": 6, "base_delay": 4.0}, False, ["healthy again", "on average: too slow by"]),
    ({"failure_threshold": 20, "base_delay": 10.0}, False, ["healthy again", "on average: too slow by"]),
    # The defaults, and a short base delay that cannot make up for a low threshold.
    ({"failure_threshold": 3, "base_delay": 1.0}, False, ["opened", "times by chance", "of the time it worked: too "
                                                         "often"]),
    ({"failure_threshold": 3, "base_delay": 0.001}, False, ["times by chance", "too often"]),
    # A breaker that stays closed while p1 is down.
    ({"failure_threshold": 300, "base_delay": 1.0}, False, ["stayed closed through", "the threshold is too high"]),
])
def test_breaker_check(answer, ok, named):
    assert_verdict(breaker.check_flaky_breaker(answer), ok, *named)


@pytest.mark.parametrize("answer, named", [
    (None, "expected a dict with the keys failure_threshold and base_delay"),
    ({"threshold": 5, "base_delay": 0.1}, "expected a dict with the keys"),
    ({"failure_threshold": 0, "base_delay": 0.1}, "breaker.failure_threshold = 0"),
    ({"failure_threshold": 5, "base_delay": -1}, "breaker.base_delay = -1"),
])
def test_breaker_malformed_answers_fail_naming_the_field(answer, named):
    assert_verdict(breaker.check_flaky_breaker(answer), False, named)


def test_breaker_mean_recovery_is_at_least_the_base_delay_and_a_probe_less_the_mean_blip():
    # The bound that makes a long base delay fail on any seeds.
    score = breaker.score({"failure_threshold": 6, "base_delay": 4.0})
    mean_blip = sum(breaker.BLIP_LENGTHS) / len(breaker.BLIP_LENGTHS)
    assert score.mean_recovery >= 4.0 + breaker.P1_LATENCY - mean_blip > breaker.MAX_MEAN_RECOVERY
