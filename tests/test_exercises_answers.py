"""Every check of every tutorial judges any answer a learner may give and never raises: an
answer of the wrong kind (None from a function whose body is still ``pass``, text, NaN, an
infinity, an int too large for a float, a bool, a function where a value belongs) gets one
message saying what it is and what was expected; a learner's function that raises or returns
something other than a number is reported as the learner's error; a huge number is judged
like any other; and each verdict blames what is actually wrong."""

from __future__ import annotations

import math
import reprlib
import signal
import time
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from gwlab import config
from gwlab.exercises import Verdict, balancing, breaker, call, capstone, fault_drills, llm_traffic, load_testing
from gwlab.exercises import metrics, number, off_by, retries, scale_out, shown, token_bucket, whole, wrong_kind
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import assert_verdict

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

HUGE = 10**400
"""An int too large for a float."""
NONE_SAID = "answer is None, which is what a function returns when its body is still `pass` or it has no `return`"


def pending(*args):
    """A learner's function whose body is still ``pass``."""


def misspelt(*args):
    """A learner's function that uses a name it never defined."""
    return undefined_name  # noqa: F821


def wrong_key(*args):
    return {"rate": 1.0}["p"]


def divides_by_zero(*args):
    return 1 / 0


def text(*args):
    return "many"


def huge(*args):
    return HUGE


def not_a_number(*args):
    return math.nan


VALUE_CHECKS = [
    (token_bucket.check_burst, "the burst, a finite number of tokens >= 1 (for example answer = 150)"),
    (balancing.check_share_without_p3, "p1's share as a fraction between 0 and 1 (for example answer = 0.5)"),
    (balancing.check_sample_size, "a number of requests > 0 (for example answer = 1000)"),
    (breaker.check_flaky_breaker, "a dict with the keys failure_threshold and base_delay (for example "
                                  "{'failure_threshold': 3, 'base_delay': 1.0})"),
    (fault_drills.check_backoff, 'a dict such as {"base_delay": 1.0, "max_cooldown": 30.0}'),
    (load_testing.check_in_flight, "a number: the arrival rate of admitted requests × their mean latency"),
    (capstone.check_slo, 'a patch such as {"breaker": {"failure_threshold": 3}, "providers": {"p3": {"weight": 10}}}'),
    (llm_traffic.check_mean_wait, "the mean wait for a slot in seconds, a number (for example answer = 1.5)"),
    (llm_traffic.check_slots, "a whole number of slots from 1 to 1000 (for example answer = 12)"),
    (llm_traffic.check_tokens_per_minute, "a dict with two numbers of tokens per minute, "
                                          "{'mix': ..., 'long_heavy': ...}"),
    (retries.check_retries, "a whole number of retries from 0 to 8 (for example answer = 4)"),
    (scale_out.check_split_share, "the share of the requests admitted, a number from 0 to 1 (for example answer = 0.5)"),
]
"""The checks whose answer is a value (a number or a dict), with what each expects."""

WRONG_KINDS = [
    (None, NONE_SAID + ": expected {}"),
    ("150", "answer = '150': expected {}"),
    (math.nan, "answer = nan: expected {}"),
    (math.inf, "answer = inf: expected {}"),
    (-math.inf, "answer = -inf: expected {}"),
    (HUGE, f"answer = {reprlib.repr(HUGE)}: expected {{}}"),
    (True, "answer = True: expected {}"),
    (1 + 2j, "answer = (1+2j): expected {}"),
    ([150], "answer = [150]: expected {}"),
    (pending, "answer is the function pending: expected {}; call it and set answer to what it returns"),
]
"""Answers of the wrong kind for every value check, with the message each gets."""


@pytest.mark.parametrize("check, expected", VALUE_CHECKS, ids=lambda v: getattr(v, "__name__", "expected"))
@pytest.mark.parametrize("answer, message", WRONG_KINDS, ids=repr)
def test_an_answer_of_the_wrong_kind_is_told_what_it_is_and_what_was_expected(check, expected, answer, message):
    verdict = check(answer)
    assert isinstance(verdict, Verdict) and not verdict.ok
    assert verdict.message == message.format(expected)


@pytest.mark.parametrize("check, answer, message", [
    # Far above the largest burst a bucket may hold: judged without a bucket.
    (token_bucket.check_burst, 2e6, "burst 2e+06 is too large by 1.99983e+06 tokens"),
    (token_bucket.check_burst, 1e300, "burst 1e+300 is too large by 1e+300 tokens"),
    (token_bucket.check_burst, 1e6, "burst 1e+06 is too large by 999829 tokens"),
    (balancing.check_sample_size, 1e300, "1e+300 requests are more than needed"),
    (balancing.check_share_without_p3, 1e300, "answer = 1e+300: expected p1's share as a fraction between 0 and 1"),
    (balancing.check_share_without_p3, -0.5, "answer = -0.5: expected p1's share as a fraction between 0 and 1"),
    (llm_traffic.check_mean_wait, 1e300, "1e+300 s is too high by a factor of 2.62e+300"),
    (llm_traffic.check_mean_wait, 2.0, "2 s is too high by 425%"),
    (llm_traffic.check_mean_wait, 4.0, "4 s is too high by a factor of 10.5"),
    (llm_traffic.check_tokens_per_minute, {"mix": 1e300, "long_heavy": 1e300},
     "mix (20% long): 1e+300 tokens a minute is too high by a factor of 4.44e+294"),
    (llm_traffic.check_tokens_per_minute, {"mix": None, "long_heavy": 1.0},
     "answer['mix'] = None: expected a number of tokens per minute"),
    (llm_traffic.check_tokens_per_minute, {"mix": 1.0, "long_heavy": HUGE},
     f"answer['long_heavy'] = {reprlib.repr(HUGE)}: expected a number of tokens per minute"),
    (scale_out.check_split_share, 1e300, "answer = 1e+300: expected the share of the requests admitted"),
    (breaker.check_flaky_breaker, {"failure_threshold": 3, "base_delay": 1e300},
     "base delay 1e+300 s is longer than any cooldown may last"),
    (fault_drills.check_backoff, {"base_delay": 1e300, "max_cooldown": 1e300},
     "outage scenario: breaker.base_delay = 1e+300: expected a number >= 1e-06 and <= 31536000"),
    (capstone.check_slo, {"gateway": {"timeout": math.nan}},
     "your configuration: gateway.timeout = nan: expected a number >= 1e-06 and <= 31536000"),
    (capstone.check_slo, {"breaker": None}, "breaker = None: expected a dict, such as {'failure_threshold': 3}"),
    (capstone.check_slo, {"providers": None}, "providers = None: expected a dict, such as {'p3': {'weight': 10}}"),
    (capstone.check_slo, {"providers": {"p1": 70}}, "providers.p1 = 70: expected a dict, such as {'weight': 10}"),
], ids=str)
def test_huge_numbers_and_bad_fields_get_a_verdict(check, answer, message):
    assert_verdict(check(answer), False, message)


# -- the learner's functions -----------------------------------------------------------------

FUNCTION_CHECKS = [
    (retries.check_amplification, "answer(0) ", retries.calls_per_user_request),
    (scale_out.check_reconnect, "answer(0.05) ", scale_out.back_in_use),
    (metrics.check_histogram_quantile, "histogram_quantile(0.5, [(0.05, 0), (0.1, 60)", metrics.histogram_quantile),
    (metrics.check_increase, "increase([(0, 10), (15, 25), (30, 55)]) ", metrics.increase),
]
"""The checks whose answer is a function, the call each shows first, and a right answer."""

FAILING_FUNCTIONS = [
    (pending, "returned None: is its body still `pass`, or is a `return` missing?"),
    (misspelt, "raised NameError: name 'undefined_name' is not defined"),
    (wrong_key, "raised KeyError: 'p'"),
    (divides_by_zero, "raised ZeroDivisionError: division by zero"),
    (text, "returned 'many', not a number"),
    (huge, f"returned {reprlib.repr(HUGE)}, too large for a float"),
]
"""Learner's functions that fail on the first case, with what the check says they did."""


@pytest.mark.parametrize("check, first_call, right", FUNCTION_CHECKS, ids=lambda v: getattr(v, "__name__", "call"))
@pytest.mark.parametrize("function, did", FAILING_FUNCTIONS, ids=lambda v: getattr(v, "__name__", "did"))
def test_a_learners_function_that_fails_is_reported_not_raised(check, first_call, right, function, did):
    verdict = check(function)
    assert isinstance(verdict, Verdict) and not verdict.ok
    assert verdict.message.startswith(first_call), verdict.message
    assert did in verdict.message, verdict.message


@pytest.mark.parametrize("check, first_call, right", FUNCTION_CHECKS, ids=lambda v: getattr(v, "__name__", "call"))
def test_a_learners_function_that_gives_nan_fails(check, first_call, right):
    assert_verdict(check(not_a_number), False, "nan")


@pytest.mark.parametrize("check, first_call, right", FUNCTION_CHECKS[1:], ids=lambda v: getattr(v, "__name__", "c"))
def test_the_right_function_passes(check, first_call, right):
    assert check(right).ok


@pytest.mark.parametrize("function, message", [
    # Right below p = 1, where the uncapped series divides by zero.
    (lambda p: retries.calls_per_user_request(p) * (1 - p) / (1 - p),
     "answer(1) raised ZeroDivisionError: float division by zero; at p = 1 every call fails, and a layer stops after "
     "its last attempt"),
    (lambda p: {0.0: 1.0}[p], "answer(0.1) raised KeyError: 0.1"),
])
def test_amplification_names_the_probability_at_which_the_function_raised(function, message):
    assert_verdict(retries.check_amplification(function), False, message)


@pytest.mark.parametrize("answer, message", [
    (None, "answer = None: expected a function of p"),
    (9.0, "answer = 9.0: expected a function of p"),
])
def test_amplification_asks_for_a_function(answer, message):
    assert_verdict(retries.check_amplification(answer), False, message)


# -- the shared helpers ----------------------------------------------------------------------

@pytest.mark.parametrize("answer, value", [
    (150, 150.0), (1.5, 1.5), (-2, -2.0), (1e300, 1e300),
    (None, None), ("150", None), (True, None), (1 + 2j, None), (math.nan, None), (math.inf, None), (HUGE, None),
])
def test_number_is_a_finite_float_or_none(answer, value):
    assert number(answer) == value


@pytest.mark.parametrize("function, got", [
    (lambda: 2, 2.0), (lambda: math.inf, math.inf), *[(f, did) for f, did in FAILING_FUNCTIONS],
    (lambda: False, "returned False, not a number"),
])
def test_call_gives_a_float_or_what_the_function_did(function, got):
    assert call(function) == got


@pytest.mark.parametrize("got, want, said", [
    (1.1, 1.0, "10%"), (0.5, 1.0, "50%"), (9.9, 1.0, "890%"), (10.0, 1.0, "a factor of 10"),
    (1e300, 3.0, "a factor of 3.33e+299"), (-5.0, 1.0, "600%"),
    (0.11, 1.0, "89%"), (0.1, 1.0, "a factor of 10"), (1.0, 600.0, "a factor of 600"), (0.0, 1.0, "100%"),
    (-0.01, 1.0, "101%"),
])
def test_off_by_is_a_percentage_below_the_factor(got, want, said):
    assert off_by(got, want) == said


@pytest.mark.parametrize("answer, value", [
    (9, 9), (9.0, 9), (-3.0, -3), (np.int64(9), 9), (np.float64(9.0), 9), (Fraction(18, 2), 9),
    (9.5, None), (True, None), (math.nan, None), (math.inf, None), ("9", None), (None, None),
])
def test_whole_takes_whole_numbers_of_any_type(answer, value):
    got = whole(answer)
    assert got == value and (got is None or type(got) is int)


def endless(*args: Any) -> float:
    while True:
        pass


def stubborn(*args: Any) -> float:
    """A loop that catches every Exception it meets."""
    while True:
        try:
            time.sleep(0.01)
        except Exception:
            pass


@pytest.mark.parametrize("check, first_call, right", FUNCTION_CHECKS, ids=lambda v: getattr(v, "__name__", "call"))
@pytest.mark.parametrize("function", [endless, stubborn], ids=lambda f: f.__name__)
def test_a_learners_function_that_never_returns_gets_its_verdict_in_time(check, first_call, right, function,
                                                                         monkeypatch):
    monkeypatch.setattr(config, "EXERCISE_CALL_TIMEOUT", 0.2)
    handler = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    verdict = check(function)
    assert time.monotonic() - started < 2
    assert not verdict.ok and verdict.message.startswith(first_call), verdict.message
    assert "did not return within 0.2 s: does a loop never end?" in verdict.message
    assert signal.getsignal(signal.SIGALRM) is handler  # SIGALRM is handled as before


@pytest.mark.parametrize("running", [0.0, 60.0, 0.5])
def test_a_timer_running_before_is_kept(running):
    """None (the bound runs alone), a later one (set again for what it had left after the
    call), or one due before the bound (left alone: the call is not bounded then)."""
    fired = []
    handler = signal.signal(signal.SIGALRM, lambda *_: fired.append(time.monotonic()))
    try:
        signal.setitimer(signal.ITIMER_REAL, running)
        started = time.monotonic()
        assert call(lambda: (time.sleep(0.3), 7)[1]) == 7.0
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        if running == 60.0:
            assert 59.0 < left < 60.0 - 0.3 and not fired
        elif running == 0.5:
            time.sleep(0.5)
            assert len(fired) == 1 and fired[0] - started >= 0.5 - 0.01
        else:
            assert left == 0.0 and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, handler)


def test_the_learners_functions_get_lists_of_pairs_as_the_exercises_say():
    """A right answer that uses what a list has and a tuple has not passes."""
    def quantile(q, buckets):
        return metrics.histogram_quantile(q, buckets.copy())

    def gained(samples):
        samples.append(samples[-1])  # changes its own copy: no later case sees it
        return metrics.increase(samples)

    assert metrics.check_histogram_quantile(quantile).ok
    assert metrics.check_increase(gained).ok


def test_a_long_answer_is_shown_cut_short():
    assert shown("x" * 1000) == reprlib.repr("x" * 1000) and len(shown("x" * 1000)) < 50
    assert wrong_kind(None, "a number").message == NONE_SAID + ": expected a number"


# -- blaming what is actually wrong ----------------------------------------------------------

def test_a_base_delay_above_the_default_cap_is_blamed_not_max_cooldown():
    verdict = breaker.check_flaky_breaker({"failure_threshold": 5, "base_delay": 40.0})
    assert_verdict(verdict, False, f"base delay 40 s is longer than any cooldown may last (max_cooldown, "
                                   f"{config.MAX_COOLDOWN:g} s, is not part of this exercise), and far too long")
    assert "breaker.max_cooldown =" not in verdict.message


def test_a_cap_set_below_the_base_delay_is_the_pair_the_config_refuses():
    assert_verdict(fault_drills.check_backoff({"base_delay": 5.0, "max_cooldown": 4.0}), False,
                   "breaker.max_cooldown = 4.0: expected a number >= breaker.base_delay (5)")


def _run(p99: float, p3_share: float, timeouts: int = 0, trips: int = 3, availability: float = 0.995) -> dict:
    return {"availability": availability, "p50": 0.1, "p99": p99, "trips": trips, "p1_share": 0.7,
            "p3_share": p3_share, "admitted": 24000, "timeouts": timeouts}


@pytest.mark.parametrize("run, why", [
    (_run(1.5, 0.05), "that is p3's 1.5 s latency: p3 answered 5.0% of the requests, more than the 1% the p99 "
                      "leaves out"),
    (_run(1.5, 0.0), "p1's slow brownout calls make up more than 1% of the requests"),
    (_run(1.5, 0.005), "p1's slow brownout calls make up more than 1% of the requests"),
    (_run(1.5, 0.0, timeouts=600), "timeouts (504) are 2.5% of the admitted requests, more than the 1% the p99 "
                                   "leaves out, and each takes the gateway's whole timeout"),
    (_run(2.5, 0.05), "p1's slow brownout calls make up more than 1% of the requests"),
])
def test_capstone_blames_p3_for_the_p99_only_when_p3_answered_its_share(run, why):
    (miss,) = capstone._misses({1: run})
    assert miss.endswith(f"; {why}."), miss


@pytest.mark.parametrize("run, why", [
    (_run(0.5, 0.0, availability=0.95, trips=0), "no breaker opened: all of p1's failing calls during the brownout "
                                                 "went through"),
    (_run(0.5, 0.0, availability=0.95, trips=4), "each time p1's breaker lets it back during the brownout"),
    (_run(0.5, 0.0, availability=0.95, timeouts=1000), "most of its failures are timeouts (504)"),
])
def test_capstone_blames_the_breaker_only_when_it_opened(run, why):
    (miss,) = capstone._misses({1: run})
    assert why in miss, miss


def test_capstone_without_p3_and_without_a_breaker_blames_the_timeouts_and_the_breaker():
    verdict = capstone.check_slo({"providers": {"p3": {"weight": 0}}, "breaker": {"enabled": False},
                                  "gateway": {"timeout": 1.5}})
    assert_verdict(verdict, False, "no breaker opened", "the worst 1.500 s", "timeouts (504) are 2.",
                   "each takes the gateway's whole timeout")
    assert "p3" not in verdict.message
