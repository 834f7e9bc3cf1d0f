"""Checks for ``02_weighted_balancing``: renormalised weights and the size of a sample.

Both answers follow from the seed's weights (70/20/10, :data:`gwlab.config.SEED_PROVIDERS`):
the share a provider gets when another one is excluded, and how many requests it takes for
an observed share to settle within a band around its weight's share.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from gwlab.config import SEED_PROVIDERS
from gwlab.exercises import Verdict

WEIGHTS = {name: weight for name, weight, _, _ in SEED_PROVIDERS}
"""The seed's weights by provider."""
TOLERANCE = 0.0005
"""How far a share given as a fraction may be from the exact one."""
BAND = 0.01
"""Half-width of the band, as a fraction (one percentage point)."""
SIGMAS = 4
"""Width of the band in standard deviations: a share outside it is about a 1 in 16,000 event."""
SAMPLE_SLACK = 0.02
"""How much larger than the smallest sample an answer may be (a fraction)."""


def _number(answer: Any, what: str) -> str | None:
    if isinstance(answer, bool) or not isinstance(answer, Real) or not math.isfinite(answer):
        return f"answer = {answer!r}: expected {what}"
    return None


def check_share_without_p3(answer: Any) -> Verdict:
    """Is ``answer`` p1's share of the requests (a fraction) while p3 is excluded?"""
    problem = _number(answer, "p1's share as a fraction between 0 and 1 (for example answer = 0.5)")
    if problem:
        return Verdict(False, problem)
    right = WEIGHTS["p1"] / (WEIGHTS["p1"] + WEIGHTS["p2"])
    if 1 < answer <= 100 and abs(answer / 100 - right) <= TOLERANCE:
        return Verdict(False, f"{answer:g} looks like a percentage: give the share as a fraction between 0 and 1.")
    if abs(answer - WEIGHTS["p1"] / sum(WEIGHTS.values())) <= TOLERANCE:
        return Verdict(False, f"{answer:g} is p1's share while all three providers are eligible. With p3 "
                              "excluded the balancer divides by the weights of the eligible providers only.")
    if abs(answer - right) > TOLERANCE:
        return Verdict(False, f"{answer:g} is not it: divide p1's weight by the total weight of the providers "
                              "still eligible.")
    return Verdict(True, f"{answer:g}: p1 gets {WEIGHTS['p1']:g} / ({WEIGHTS['p1']:g} + {WEIGHTS['p2']:g}) = "
                         f"{right:.4f} of the requests while p3 is out, and p2 the rest.")


def smallest_sample() -> int:
    """Requests needed for SIGMAS standard deviations of p3's observed share to fit in BAND."""
    p = WEIGHTS["p3"] / sum(WEIGHTS.values())
    # Rounded first: 16 * 0.09 / 0.0001 is 14400.000000000002 in floating point.
    return math.ceil(round(SIGMAS**2 * p * (1 - p) / BAND**2, 6))


def check_sample_size(answer: Any) -> Verdict:
    """Is ``answer`` (about) the smallest number of requests for which p3's observed share
    lies within ±1 point of 10% at 4 standard deviations?"""
    problem = _number(answer, "a number of requests (for example answer = 1000)")
    if problem:
        return Verdict(False, problem)
    n = smallest_sample()
    p = WEIGHTS["p3"] / sum(WEIGHTS.values())
    if answer < n:
        if answer <= 0:
            return Verdict(False, f"answer = {answer!r}: expected a number of requests > 0")
        half = SIGMAS * math.sqrt(p * (1 - p) / answer)
        return Verdict(False, f"with {answer:g} requests, {SIGMAS} standard deviations of p3's share are "
                              f"±{half:.2%}, wider than ±{BAND:.0%}. The standard deviation of a share p over n "
                              "requests is sqrt(p (1 - p) / n).")
    if answer > n * (1 + SAMPLE_SLACK):
        return Verdict(False, f"{answer:g} requests are enough, but more than {SAMPLE_SLACK:.0%} above the "
                              f"smallest number that is: solve {SIGMAS} sqrt(p (1 - p) / n) = {BAND:g} for n.")
    return Verdict(True, f"{answer:g} requests: {SIGMAS} × sqrt({p:g} × {1 - p:g} / n) = {BAND:g} gives n = {n}. "
                         "Halving the band takes four times as many requests.")
