"""The checks of notebook 09: each passes the right answer and its worked solution, and fails
the characteristic wrong ones with a message that names what is off."""

from __future__ import annotations

import pytest

from gwlab.exercises import retries
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import assert_verdict, solution

pytestmark = pytest.mark.timeout(4 * SIMULATION_TIMEOUT)


@pytest.mark.parametrize("p, calls", [(0.0, 1.0), (0.5, 1.75 * (1 - 0.125**3) / 0.875), (1.0, 9.0)])
def test_calls_per_user_request_reference_values(p, calls):
    assert retries.calls_per_user_request(p) == pytest.approx(calls, rel=1e-12)


@pytest.mark.parametrize("p", [0.5, 1.0])
def test_the_simulated_calls_agree_with_the_formula(p):
    for seed in retries.AMPLIFICATION_SEEDS:
        assert retries.measured_calls(p, seed) == pytest.approx(retries.calls_per_user_request(p), rel=0.01)


@pytest.mark.parametrize("answer, ok, named", [
    (lambda: solution("09_retries_and_metastability")["amplification_answer"], True, ["3 × 3 = 9"]),
    (lambda: (lambda p: 6.0 if p == 1 else retries.calls_per_user_request(p)), False, ["adds the two layers"]),
    (lambda: (lambda p: 3.0 if p == 1 else retries.calls_per_user_request(p)), False, ["one layer only"]),
    (lambda: (lambda p: 1 / (1 - p)), False, ["p = 0.9", "without its cap"]),
    (lambda: (lambda p: 1 + p), False, ["at p = 0.1", "1.1"]),
    (lambda: None, False, ["expected a function of p"]),
    (lambda: 9, False, ["expected a function of p"]),
])
def test_amplification_check(answer, ok, named):
    assert_verdict(retries.check_amplification(answer()), ok, *named)


@pytest.mark.parametrize("seed", range(4, 9))
def test_the_retries_verdict_holds_on_other_seeds(seed):
    assert not retries.storm_persists(1, seed) and retries.storm_persists(2, seed)


@pytest.mark.parametrize("answer, ok, named", [
    (lambda: solution("09_retries_and_metastability")["retries_answer"], True, ["1 retry", "80 attempts"]),
    (lambda: 2, False, ["persists", "120 a second"]),
    (lambda: 0, False, ["so do 1", "the most"]),
    (lambda: -1, False, ["expected a whole number of retries"]),
    (lambda: 1.0, True, ["1 retry"]),  # a whole number, as a float
    (lambda: 1.5, False, ["answer = 1.5: expected a whole number of retries"]),
    (lambda: True, False, ["expected a whole number of retries"]),
])
def test_retries_check(answer, ok, named):
    assert_verdict(retries.check_retries(answer()), ok, *named)
