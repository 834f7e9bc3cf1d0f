"""Checks for ``04_metrics_prometheus``: reading a Prometheus histogram and a counter by hand.

Both exercises ask for a function, which the check calls on cases of its own and compares
with the rules Prometheus applies:

- ``histogram_quantile(q, buckets)`` estimates a quantile from cumulative bucket counts the way
  PromQL's ``histogram_quantile`` does: find the bucket holding rank ``q * total`` and
  interpolate linearly inside it, from the bucket's lower bound (0 for the first one) to its
  upper bound ``le``; a rank in the ``+Inf`` bucket gives the highest finite bound.
- ``increase(samples)`` adds up what a counter gained over ``(time, value)`` samples, where a
  drop means the counter restarted from 0 (a gateway restart, a new registry). Unlike
  PromQL's ``increase``, it does not extrapolate to the edges of a range.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from gwlab.exercises import Verdict

Buckets = Sequence[tuple[float, float]]
"""Cumulative histogram buckets: ``(le, count of observations <= le)``, ending with ``+Inf``."""
Samples = Sequence[tuple[float, float]]
"""Scrapes of one counter: ``(time in seconds, value)``, in time order."""

_INF = math.inf
_LATENCY = ((0.05, 0.0), (0.1, 60.0), (0.25, 60.0), (0.5, 90.0), (1.0, 96.0), (2.5, 100.0), (_INF, 100.0))
_TAIL = ((0.1, 2.0), (0.5, 8.0), (_INF, 10.0))
_HISTOGRAM_CASES: tuple[tuple[float, Buckets, str], ...] = (
    (0.5, _LATENCY, "a rank inside a bucket: interpolate from its lower bound to its upper bound"),
    (0.3, _LATENCY, "a rank in the first non-empty bucket, whose lower bound is the previous le (0.05)"),
    (0.95, _LATENCY, "the count inside a bucket is its cumulative count minus the previous one"),
    (0.1, ((0.1, 20.0), (1.0, 40.0), (_INF, 40.0)), "in the first bucket the lower bound is 0"),
    (0.99, _TAIL, "a rank in the +Inf bucket: answer the highest finite le"),
    (1.0, ((0.1, 0.0), (0.2, 4.0), (0.3, 4.0), (_INF, 4.0)),
     "rank q * total lands exactly on a cumulative count: take the first bucket that reaches it"),
)
_INCREASE_CASES: tuple[tuple[Samples, str], ...] = (
    (((0.0, 10.0), (15.0, 25.0), (30.0, 55.0)), "a counter that only grows: last minus first"),
    (((0.0, 100.0), (15.0, 130.0), (30.0, 12.0), (45.0, 40.0)),
     "a drop is a restart from 0: the value after the drop is all new"),
    (((0.0, 5.0), (10.0, 2.0), (20.0, 1.0), (30.0, 4.0)), "two restarts in a row"),
    (((0.0, 7.0),), "a single scrape shows no increase"),
    (((0.0, 3.0), (10.0, 3.0)), "an idle counter did not increase"),
)


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """PromQL's estimate of quantile ``q`` (0..1) from cumulative ``buckets``; NaN when empty."""
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == _INF:
                return lower
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    return lower


def increase(samples: Samples) -> float:
    """What a counter gained over ``samples``, counting each drop as a restart from 0."""
    gained = 0.0
    for (_, before), (_, after) in zip(samples, samples[1:]):
        gained += after - before if after >= before else after
    return gained


def _first_wrong(fn: Callable, cases, expected: Callable) -> tuple[tuple, object, str] | None:
    for *args, hint in cases:
        want = expected(*args)
        try:
            got = fn(*args)
        except Exception as exc:  # the learner's code may fail in any way: report, don't raise
            return tuple(args), f"{type(exc).__name__}: {exc}", hint
        if not isinstance(got, (int, float)) or not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            return tuple(args), got, hint
    return None


def check_histogram_quantile(answer: Callable[[float, Buckets], float] | None) -> Verdict:
    """Right when ``answer(q, buckets)`` gives PromQL's estimate on every case."""
    if not callable(answer):
        return Verdict(False, "write a function histogram_quantile(q, buckets) and set answer = histogram_quantile")
    wrong = _first_wrong(answer, _HISTOGRAM_CASES, histogram_quantile)
    if wrong is not None:
        (q, buckets), got, hint = wrong
        shown = ", ".join(f"({le:g}, {n:g})" for le, n in buckets)
        return Verdict(False, f"histogram_quantile({q:g}, [{shown}]) gave {got!r}; look at {hint}")
    return Verdict(True, f"your histogram_quantile agrees with PromQL's on all {len(_HISTOGRAM_CASES)} cases")


def check_increase(answer: Callable[[Samples], float] | None) -> Verdict:
    """Right when ``answer(samples)`` counts every restart on every case."""
    if not callable(answer):
        return Verdict(False, "write a function increase(samples) and set answer = increase")
    wrong = _first_wrong(answer, _INCREASE_CASES, increase)
    if wrong is not None:
        (samples,), got, hint = wrong
        shown = ", ".join(f"({t:g}, {v:g})" for t, v in samples)
        return Verdict(False, f"increase([{shown}]) gave {got!r}; look at {hint}")
    return Verdict(True, f"your increase handles restarts on all {len(_INCREASE_CASES)} cases")
