"""Checks for ``02_weighted_balancing``: renormalised weights and the size of a sample.

Both answers follow from the seed's weights (70/20/10, :data:`gwlab.config.SEED_PROVIDERS`)
by arithmetic, so nothing here depends on chance: the share a provider gets when another one
is excluded, and how many requests it takes for an observed share to settle within a band
around its weight's share. Each check recognises the characteristic wrong answers (a share
over the wrong denominator, a band of the wrong width) and says what they got wrong; any
other wrong answer is told which way it misses and by how much.
"""

from __future__ import annotations

import math
from typing import Any

from gwlab.config import SEED_PROVIDERS
from gwlab.exercises import Verdict, direction, known_mistake, number, wrong_kind

WEIGHTS = {name: weight for name, weight, _, _ in SEED_PROVIDERS}
"""The seed's weights by provider."""
TOLERANCE = 0.005
"""How far a share given as a fraction may be from the exact one: half a unit of the second
decimal, so 70/90 rounded to two decimals (0.78) is right."""
BAND = 0.01
"""Half-width of the band, as a fraction (one percentage point)."""
SIGMAS = 4
"""Width of the band in standard deviations: a share outside it is about a 1 in 16,000 event."""
SAMPLE_SLACK = 0.02
"""How much larger than the smallest sample an answer may be (a fraction)."""
SAMPLE_MISTAKE_TOLERANCE = 0.01
"""How close (a fraction of it) an answer must be to a characteristic wrong sample size to be
taken for it."""


def _share_mistakes() -> list[tuple[float, str]]:
    """Characteristic wrong shares of p1 with p3 out, each with what it got wrong."""
    p1, p2, p3 = WEIGHTS["p1"], WEIGHTS["p2"], WEIGHTS["p3"]
    total = p1 + p2 + p3
    return [
        (p1 / total, "that is p1's share while all three providers are eligible: with p3 excluded the balancer "
                     "divides by the weights of the eligible providers only"),
        ((p1 + p3) / total, "that gives all of p3's share to p1, but p2 takes its part of it too"),
        ((p1 + p3 * p1 / total) / total,
         f"that splits p3's share over the total weight {total:g}: the denominator must be the weight still "
         f"eligible, {p1 + p2:g}"),
        ((p1 + p3 / 2) / total, "that splits p3's share evenly between p1 and p2, but they take it in proportion "
                                "to their weights"),
        (p1 / (p1 + p3), "that is p1's share with p2 excluded, not p3"),
        (p2 / (p1 + p2), "that is p2's share while p3 is out, not p1's"),
        ((p1 + p2) / total, "that is the share of p1 and p2 together, the traffic that was theirs anyway"),
        (p1 / total * (p1 + p2) / total, "that multiplies by the eligible share of the weight instead of "
                                         "dividing by it"),
    ]


def check_share_without_p3(answer: Any) -> Verdict:
    """Is ``answer`` p1's share of the requests (a fraction) while p3 is excluded?"""
    expected = "p1's share as a fraction between 0 and 1 (for example answer = 0.5)"
    share = number(answer)
    if share is None:
        return wrong_kind(answer, expected)
    right = WEIGHTS["p1"] / (WEIGHTS["p1"] + WEIGHTS["p2"])
    if 1 < share <= 100 and abs(share / 100 - right) <= TOLERANCE:
        return Verdict(False, f"{share:g} looks like a percentage: give the share as a fraction between 0 and 1.")
    if not 0 <= share <= 1:
        return wrong_kind(answer, expected)
    answer = share
    if abs(answer - right) > TOLERANCE:
        hint = known_mistake(answer, _share_mistakes(), TOLERANCE) or (
            "divide p1's weight by the total weight of the providers still eligible")
        return Verdict(False, f"p1's share {answer:g} is {direction(answer, right)} by {abs(answer - right):.4f}: "
                              f"{hint}.")
    return Verdict(True, f"{answer:g}: p1 gets {WEIGHTS['p1']:g} / ({WEIGHTS['p1']:g} + {WEIGHTS['p2']:g}) = "
                         f"{right:.4f} of the requests while p3 is out, and p2 the rest.")
def _sample(sigmas: float, band: float, variance: float) -> float:
    """Requests for ``sigmas`` standard deviations of a share of ``variance`` p (1 - p) per
    request to fit in ±``band``: n = sigmas² variance / band²."""
    return sigmas**2 * variance / band**2


def smallest_sample() -> int:
    """Requests needed for SIGMAS standard deviations of p3's observed share to fit in BAND."""
    p = WEIGHTS["p3"] / sum(WEIGHTS.values())
    # Rounded first: 16 * 0.09 / 0.0001 is 14400.000000000002 in floating point.
    return math.ceil(round(_sample(SIGMAS, BAND, p * (1 - p)), 6))


def _sample_mistakes() -> list[tuple[float, str]]:
    """Characteristic wrong sample sizes, each with what it got wrong."""
    p = WEIGHTS["p3"] / sum(WEIGHTS.values())
    return [
        (_sample(2, BAND, p * (1 - p)), f"that puts ±{BAND:.0%} at 2 standard deviations, not {SIGMAS}, or "
                                        f"±{2 * BAND:.0%} at {SIGMAS}"),
        (_sample(3, BAND, p * (1 - p)), f"that puts ±{BAND:.0%} at 3 standard deviations, not {SIGMAS}"),
        (_sample(SIGMAS, BAND / 2, p * (1 - p)), f"that makes the band ±{BAND / 2:.1%}, one point wide in all: "
                                                 f"the band is ±{BAND:.0%} around the share"),
        (_sample(SIGMAS, BAND, p), f"that takes the variance of a share as p, not p (1 - p) = {p * (1 - p):g}"),
        (math.sqrt(_sample(SIGMAS, BAND, p * (1 - p))), "that is sqrt(n): square it"),
    ]


def check_sample_size(answer: Any) -> Verdict:
    """Is ``answer`` (about) the smallest number of requests for which p3's observed share
    lies within ±1 point of 10% at 4 standard deviations? A wrong answer is told the band it
    gives, which is wider or narrower than asked."""
    requests = number(answer)
    if requests is None or requests <= 0:
        return wrong_kind(answer, "a number of requests > 0 (for example answer = 1000)")
    answer = requests
    n = smallest_sample()
    p = WEIGHTS["p3"] / sum(WEIGHTS.values())
    half = SIGMAS * math.sqrt(p * (1 - p) / answer)
    mistake = known_mistake(answer, _sample_mistakes(), SAMPLE_MISTAKE_TOLERANCE * answer)
    hint = f" ({mistake})" if mistake else ""
    if answer < n:
        return Verdict(False, f"{answer:g} requests are too few{hint}: {SIGMAS} standard deviations of p3's share "
                              f"are ±{half:.2%} over them, wider than ±{BAND:.0%}. The standard deviation of a "
                              "share p over n requests is sqrt(p (1 - p) / n).")
    if answer > n * (1 + SAMPLE_SLACK):
        return Verdict(False, f"{answer:g} requests are more than needed{hint}: {SIGMAS} standard deviations of p3's "
                              f"share are ±{half:.2%} over them, narrower than the ±{BAND:.0%} asked, and "
                              f"{answer:g} is over {SAMPLE_SLACK:.0%} above the smallest number that is enough: "
                              f"solve {SIGMAS} sqrt(p (1 - p) / n) = {BAND:g} for n.")
    return Verdict(True, f"{answer:g} requests: {SIGMAS} × sqrt({p:g} × {1 - p:g} / n) = {BAND:g} gives n = {n}. "
                         "Halving the band takes four times as many requests.")
