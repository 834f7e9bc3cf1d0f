"""The checks of notebook 08: each passes the right answer and its worked solution, and fails
the characteristic wrong answers with a message that names what is off; their bounds hold
on seeds the checks never use."""

from __future__ import annotations

import math

import pytest

from gwlab.exercises import llm_traffic
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import assert_verdict, solution

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

WAIT = 0.3811048911625213
"""Erlang C's mean wait for 3.2 requests a second of 4 s calls on 16 slots."""


def test_erlang_c_reference_values():
    # M/M/1: the probability of waiting is ρ, the mean wait ρ / (μ − λ).
    assert llm_traffic.erlang_c(1, 0.5) == pytest.approx(0.5)
    assert llm_traffic._mean_wait(0.5, 1.0, 1) == pytest.approx(1.0)
    # M/M/2 at a = 1: C = (1/2 · 2 / 1) / (1 + 1 + 1) = 1/3.
    assert llm_traffic.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert llm_traffic._mean_wait(**llm_traffic.MMC) == pytest.approx(WAIT)


def test_the_simulated_mean_wait_has_the_stated_precision():
    measured, se = llm_traffic.simulated_waits(llm_traffic.mmc_scenario(), llm_traffic.MMC["mean_call"])
    assert abs(measured - WAIT) <= llm_traffic.WAIT_SE_BOUND * se
    assert 0.10 <= se / WAIT <= 0.15


@pytest.mark.parametrize("answer, ok, named", [
    (WAIT, True, ["0.3811 s: Erlang C gives 0.3811 s", "30.5% of the calls wait", "standard error"]),
    (lambda: solution("08_llm_traffic")["wait_answer"], True, ["Erlang C gives 0.3811 s"]),
    (0.38, True, ["Erlang C gives"]),
    (WAIT + 4.0, False, ["too high", "mean time in the system"]),
    (0.30488, False, ["too low by 20%", "probability of waiting"]),
    (3.2 * WAIT, False, ["too high", "mean number waiting"]),
    (0.2 * 4.0 / (0.25 - 0.2), False, ["too high", "each slot as an M/M/1 queue"]),
    (0.0, False, ["too low by 100%", "C(c, a) / (c μ − λ)"]),
    (None, False, ["expected the mean wait for a slot in seconds"]),
    (True, False, ["expected the mean wait"]),
    (math.nan, False, ["expected the mean wait"]),
])
def test_mean_wait_check(answer, ok, named):
    assert_verdict(llm_traffic.check_mean_wait(answer() if callable(answer) else answer), ok, *named)


def test_the_slots_verdict_holds_on_other_seeds():
    # Eight slots miss the 4 s target and nine meet it on seeds the check never uses.
    for seeds in (tuple(range(9, 17)), tuple(range(17, 25))):
        assert llm_traffic.ttft_p99(8, seeds=seeds) > llm_traffic.TTFT_TARGET + 0.5
        assert llm_traffic.ttft_p99(9, seeds=seeds) < llm_traffic.TTFT_TARGET - 0.3
    assert llm_traffic.offered_load() == pytest.approx(6.05, abs=0.01)


@pytest.mark.parametrize("answer, ok, named", [
    (9, True, ["9 slots: p99 TTFT 3.10 s", "8 give 5.42 s", "6.05 slots are busy"]),
    (lambda: solution("08_llm_traffic")["slots_answer"], True, ["9 slots"]),
    (8, False, ["8 slots are too few: p99 TTFT 5.42 s", "above the 4 s target"]),
    (10, False, ["10 slots meet the target", "so do 9", "look for the least"]),
    (7, False, ["7 slots are too few", "0.95 spare is not enough"]),
    (6, False, ["6 slots are too few", "grow without end"]),
    (None, False, ["expected a whole number of slots"]),
    (9.0, True, ["9 slots: p99 TTFT 3.10 s"]),  # a whole number, as numpy.ceil gives it
    (8.5, False, ["answer = 8.5: expected a whole number of slots"]),
    (0, False, ["from 1 to 1000"]),
])
def test_slots_check(answer, ok, named):
    assert_verdict(llm_traffic.check_slots(answer() if callable(answer) else answer), ok, *named)


MIX, HEAVY = llm_traffic.tokens_per_minute(0.2), llm_traffic.tokens_per_minute(0.5)


def test_tokens_per_minute_reference_values():
    assert (round(MIX, -3), round(HEAVY, -3)) == (225_000, 388_000)


def test_a_measured_hour_passes_the_tokens_check():
    import gwlab

    measured = {key: gwlab.simulate(llm_traffic.mix_scenario(share), duration=3600, seed=4,
                                    bin_width=3600).summary()["output_tokens"]["per_second"] * 60
                for key, share in (("mix", 0.2), ("long_heavy", 0.5))}
    assert_verdict(llm_traffic.check_tokens_per_minute(measured), True, "1.72 times the work")


@pytest.mark.parametrize("answer, ok, named", [
    ({"mix": MIX, "long_heavy": HEAVY}, True, ["225,046 tokens a minute", "387,785", "1.72 times the work",
                                                "admit 348 requests a minute"]),
    (lambda: solution("08_llm_traffic")["tokens_answer"], True, ["1.72 times"]),
    ({"mix": 225_000, "long_heavy": 390_000}, True, ["1.72 times"]),
    ({"mix": 600 * (0.8 * 150 + 0.2 * 1000), "long_heavy": 600 * (0.5 * 150 + 0.5 * 1000)}, False,
     ["mix (20% long): 192,000 tokens a minute is too low by 15%", "medians", "long_heavy (50% long)"]),
    ({"mix": 236_591, "long_heavy": 416_585}, False, ["too high by 5%", "leaves out max_tokens = 2000",
                                                     "cuts 12% of the long answers"]),
    ({"mix": MIX / 60, "long_heavy": HEAVY / 60}, False, ["too low by a factor of 60", "per second"]),
    ({"mix": MIX, "long_heavy": MIX}, False, ["long_heavy (50% long): 225,046 tokens a minute is too low by 42%"]),
    (MIX, False, ["expected a dict with two numbers"]),
    ({"mix": MIX}, False, ["expected a dict with two numbers"]),
    (None, False, ["expected a dict"]),
])
def test_tokens_per_minute_check(answer, ok, named):
    assert_verdict(llm_traffic.check_tokens_per_minute(answer() if callable(answer) else answer), ok, *named)
