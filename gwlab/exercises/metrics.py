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

Nothing here is random: the cases are fixed, and chosen so that each characteristic mistake
(:data:`_QUANTILE_MISTAKES`, :data:`_INCREASE_MISTAKES`) gets at least one case wrong. A
failing answer is shown the first case it gets wrong, which way it misses PromQL's value, and
the mistake it made when its value there is that of a characteristic one.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from gwlab.exercises import Verdict, call, direction

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


def _bucket(q: float, buckets: Buckets, strict: bool = False) -> tuple[float, float, float, float, float]:
    """The bucket holding rank ``q * total``: the first whose cumulative count reaches the rank
    (passes it, when ``strict``), else the ``+Inf`` one; as ``(rank, lower bound, count below
    it, le, cumulative count)``, the lower bound being the previous ``le`` (0 for the first)."""
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cumulative in buckets[:-1]:
        if cumulative > rank or (cumulative == rank and not strict):
            return rank, lower, below, le, cumulative
        lower, below = le, cumulative
    return (rank, lower, below, *buckets[-1])


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """PromQL's estimate of quantile ``q`` (0..1) from cumulative ``buckets``; NaN when empty."""
    if buckets[-1][1] == 0:
        return math.nan
    return _interpolated(q, buckets)


def _interpolated(q: float, buckets: Buckets, *, strict: bool = False, from_zero: bool = False,
                  whole_count: bool = False, rank_from_zero: bool = False, to_inf: bool = False) -> float:
    """PromQL's interpolation inside the bucket of rank ``q * total``, made with the mistakes
    that are switched on: taking the bucket that passes the rank, interpolating from 0,
    dividing by the cumulative count, measuring the rank from 0 rather than from the count
    below the bucket, interpolating towards ``+Inf``."""
    rank, lower, below, le, cumulative = _bucket(q, buckets, strict)
    if le == _INF and not to_inf:
        return lower
    start = 0.0 if from_zero else lower
    return start + (le - start) * (rank if rank_from_zero else rank - below) / (
        cumulative if whole_count else cumulative - below)


_QUANTILE_MISTAKES: tuple[tuple[Callable[[float, Buckets], float], str], ...] = (
    (lambda q, b: _interpolated(q, b, to_inf=True),
     "a rank in the +Inf bucket has no upper bound to interpolate to: answer the highest finite le"),
    (lambda q, b: _bucket(q, b)[3], "it answers the bucket's upper bound le: interpolate inside the bucket"),
    (lambda q, b: _interpolated(q, b, from_zero=True),
     "it interpolates from 0 in every bucket: the lower bound is the previous bucket's le"),
    (lambda q, b: _interpolated(q, b, whole_count=True),
     "it divides by the cumulative count: the bucket itself holds its cumulative count minus the previous one"),
    (lambda q, b: _interpolated(q, b, rank_from_zero=True),
     "it measures the rank from 0: inside the bucket, count from the observations below it"),
    (lambda q, b: _interpolated(q, b, strict=True),
     "it takes the first bucket whose count passes the rank: PromQL takes the first that reaches it"),
)
"""Characteristic wrong versions of :func:`histogram_quantile`, with what each gets wrong."""


def increase(samples: Samples) -> float:
    """What a counter gained over ``samples``, counting each drop as a restart from 0."""
    gained = 0.0
    for (_, before), (_, after) in zip(samples, samples[1:]):
        gained += after - before if after >= before else after
    return gained


_INCREASE_MISTAKES: tuple[tuple[Callable[[Samples], float], str], ...] = (
    (lambda s: s[-1][1] - s[0][1], "that is the last value minus the first: a drop is a restart from 0, after "
                                   "which the value is all new"),
    (lambda s: sum(max(0.0, b - a) for (_, a), (_, b) in zip(s, s[1:])),
     "it skips the drops: the value after a drop was gained since the restart, count it"),
    (lambda s: sum(abs(b - a) for (_, a), (_, b) in zip(s, s[1:])),
     "it counts a drop as a gain of its size: after a restart the counter counts from 0, so the gain is the "
     "value after the drop"),
)
"""Characteristic wrong versions of :func:`increase`, with what each gets wrong."""


def _same(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12) or (math.isinf(want) and got == want)


def _wrong(fn: Callable, args: tuple, hint: str, expected: Callable, mistakes) -> str | None:
    """What is wrong with ``fn`` on one case, or ``None``: the value it gave, which way it
    misses the expected one, and the characteristic mistake that gives the same value (or
    else the case's ``hint``)."""
    want = expected(*args)
    # Each case as the exercise describes it, a list of pairs (the cases are kept as tuples),
    # and a copy of its own: a function that changes its list changes no later case.
    got = call(fn, *(list(a) if isinstance(a, tuple) else a for a in args))
    if isinstance(got, str):
        return f"{got} (PromQL's rule gives {want:.6g}); look at {hint}"
    if _same(got, want):
        return None
    if math.isnan(got):
        return f"gave nan instead of a number ({want:.6g}); look at {hint}"
    why = next((what for wrong, what in mistakes if _same(got, wrong(*args))), f"look at {hint}")
    return f"gave {got:.6g}, {direction(got, want)} (PromQL's rule gives {want:.6g}): {why}"


def check_histogram_quantile(answer: Callable[[float, Buckets], float] | None) -> Verdict:
    """Right when ``answer(q, buckets)`` gives PromQL's estimate on every case."""
    if not callable(answer):
        return Verdict(False, "write a function histogram_quantile(q, buckets) and set answer = histogram_quantile")
    for q, buckets, hint in _HISTOGRAM_CASES:
        wrong = _wrong(answer, (q, buckets), hint, histogram_quantile, _QUANTILE_MISTAKES)
        if wrong is not None:
            shown = ", ".join(f"({le:g}, {n:g})" for le, n in buckets)
            return Verdict(False, f"histogram_quantile({q:g}, [{shown}]) {wrong}")
    return Verdict(True, f"your histogram_quantile agrees with PromQL's on all {len(_HISTOGRAM_CASES)} cases")


def check_increase(answer: Callable[[Samples], float] | None) -> Verdict:
    """Right when ``answer(samples)`` counts every restart on every case."""
    if not callable(answer):
        return Verdict(False, "write a function increase(samples) and set answer = increase")
    for samples, hint in _INCREASE_CASES:
        wrong = _wrong(answer, (samples,), hint, increase, _INCREASE_MISTAKES)
        if wrong is not None:
            shown = ", ".join(f"({t:g}, {v:g})" for t, v in samples)
            return Verdict(False, f"increase([{shown}]) {wrong}")
    return Verdict(True, f"your increase handles restarts on all {len(_INCREASE_CASES)} cases")
