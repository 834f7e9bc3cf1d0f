"""Latency histogram accuracy, tallies and the run summary, in exact numbers."""

from __future__ import annotations

import json
import math
from collections import Counter
from random import Random

import pytest

from gwlab.stats import RELATIVE_ERROR, Counts, LatencyHistogram, Tally

QS = [i / 200 for i in range(201)]


def exact_quantile(ordered: list[float], q: float) -> float:
    """The order statistic of rank floor(q * (n - 1)) of sorted values."""
    return ordered[math.floor(q * (len(ordered) - 1))]


def data_sets() -> dict[str, list[float]]:
    rng = Random(2024)
    return {
        "lognormal": [rng.lognormvariate(-2, 1) for _ in range(5000)],
        "wide": [10 ** rng.uniform(-6, 3) for _ in range(5000)],  # a microsecond to 17 minutes
        "with-zeros": [0.0] * 700 + [rng.expovariate(3) for _ in range(2300)],
        "mostly-zeros": [0.0] * 95 + [rng.uniform(0.1, 1) for _ in range(5)],
        "seed-latencies": [rng.choice([0.1, 0.5, 2.0, 10.0]) for _ in range(3000)],
        "small": [0.3, 0.001, 7.0],
        "single": [0.25],
        "duplicates": [0.125] * 50 + [4.0] * 50,
    }


@pytest.mark.parametrize("name", list(data_sets()))
def test_quantiles_within_relative_error_of_exact_order_statistics(name):
    # Deterministic bound: the histogram finds the bucket holding the exact order statistic of
    # the same rank, and a bucket's representative is within alpha of every value in it. The
    # 1e-12 slack covers a value on a bucket edge that rounding puts in the next bucket.
    values = data_sets()[name]
    hist = LatencyHistogram()
    for v in values:
        hist.add(v)
    ordered = sorted(values)
    for q in QS:
        exact = exact_quantile(ordered, q)
        got = hist.quantile(q)
        assert abs(got - exact) <= RELATIVE_ERROR * exact + 1e-12, (q, got, exact)


def test_zero_ranks_read_exactly_zero():
    hist = LatencyHistogram()
    for v in [0.0, 0.0, 0.0, 1.0]:
        hist.add(v)
    assert [hist.quantile(q) for q in (0, 0.5, 2 / 3)] == [0.0, 0.0, 0.0]
    assert hist.quantile(1.0) == pytest.approx(1.0, rel=RELATIVE_ERROR)


def test_quantile_never_exceeds_max():
    hist = LatencyHistogram()
    hist.add(0.1234)
    assert hist.quantile(0.0) == hist.quantile(1.0) == 0.1234


def test_count_total_mean_max():
    hist = LatencyHistogram()
    for v in [0.5, 0.25, 0.0, 1.25]:
        hist.add(v)
    assert (hist.count, hist.zeros, hist.total, hist.max, hist.mean) == (4, 1, 2.0, 1.25, 0.5)


@pytest.mark.parametrize("name", list(data_sets()))
def test_adding_values_at_once_gives_what_adding_them_one_by_one_does(name):
    values = data_sets()[name]
    one_by_one, at_once = LatencyHistogram(), LatencyHistogram()
    for hist in (one_by_one, at_once):
        hist.add(0.5)  # counted before: the total goes on from it, in the values' order
    for v in values:
        one_by_one.add(v)
    at_once.add_all(values)
    at_once.add_all([])
    assert at_once.to_dict() == one_by_one.to_dict()
    assert at_once.count == len(values) + 1


def test_a_stream_counts_its_ttft_and_its_time_per_output_token_from_two_tokens():
    tally = Tally()
    for latency, ttft, tokens in [(2.0, 0.5, 4), (1.0, 1.0, 1), (0.7, 0.2, 2), (3.0, 0.0, 0)]:
        tally.record_stream(latency, ttft, tokens)
    assert (tally.ttft.count, tally.ttft.total) == (4, 0.5 + 1.0 + 0.2 + 0.0)
    assert (tally.tpot.count, tally.tpot.total, tally.tpot.max) == (2, 0.5 + 0.5, 0.5)


def test_empty_histogram():
    hist = LatencyHistogram()
    assert hist.quantile(0.5) is None
    assert hist.mean is None


def test_coarser_alpha_has_fewer_buckets_and_its_own_bound():
    values = data_sets()["wide"]
    fine, coarse = LatencyHistogram(0.01), LatencyHistogram(0.05)
    for v in values:
        fine.add(v)
        coarse.add(v)
    assert len(coarse.counts) < len(fine.counts)
    ordered = sorted(values)
    for q in QS:
        exact = exact_quantile(ordered, q)
        assert abs(coarse.quantile(q) - exact) <= 0.05 * exact + 1e-12


def test_merge_equals_one_histogram_over_the_union():
    rng = Random(8)
    a = [rng.expovariate(2) for _ in range(1500)] + [0.0] * 10
    b = [rng.lognormvariate(0, 2) for _ in range(2500)] + [0.0] * 5
    left, right, union = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for v in a:
        left.add(v)
        union.add(v)
    for v in b:
        right.add(v)
        union.add(v)
    left.merge(right)
    assert left.counts == union.counts
    assert (left.zeros, left.count, left.max) == (union.zeros, union.count, union.max) == (15, 4015, max(a + b))
    assert left.total == pytest.approx(union.total, rel=1e-12)
    assert [left.quantile(q) for q in QS] == [union.quantile(q) for q in QS]


def test_merge_refuses_different_accuracy():
    with pytest.raises(ValueError, match="different accuracy"):
        LatencyHistogram(0.01).merge(LatencyHistogram(0.02))


def test_histogram_dict_round_trip_through_json():
    hist = LatencyHistogram()
    for v in data_sets()["with-zeros"]:
        hist.add(v)
    data = json.loads(json.dumps(hist.to_dict()))
    back = LatencyHistogram.from_dict(data)
    assert back.to_dict() == hist.to_dict()
    assert [back.quantile(q) for q in QS] == [hist.quantile(q) for q in QS]
    assert back.alpha == hist.alpha


def make_tally() -> Tally:
    tally = Tally()
    for _ in range(6):
        tally.record(200, "p1", 0.1)
    tally.record(200, "p2", 0.5)
    tally.record(502, "p2", 0.5)
    tally.record(502, "p1", 0.1)
    tally.record(504, "p3", 10.0)
    for _ in range(3):
        tally.record(429, "none", 0.0)
    tally.record(499, "p1", None)
    return tally


def test_tally_counts():
    tally = make_tally()
    assert tally.count() == 14
    assert tally.count([200]) == 7
    assert tally.count([200, 502, 504]) == 10
    assert tally.count(provider="p1") == 8
    assert tally.count([200], provider="p2") == 1
    assert tally.count([429], provider="none") == 3
    assert tally.count([503]) == 0
    # Only admitted requests (200, 502, 504) enter the latency histogram.
    assert tally.latency.count == 10
    assert tally.latency.total == pytest.approx(6 * 0.1 + 0.5 + 0.5 + 0.1 + 10.0)


def test_admitted_without_latency_is_counted_not_observed():
    tally = Tally()
    tally.record(200, "p1", None)
    assert tally.count() == 1
    assert tally.latency.count == 0


def test_tally_merge_and_round_trip():
    a, b = make_tally(), make_tally()
    a.merge(b)
    assert a.count() == 28
    assert a.count([502], provider="p2") == 2
    assert a.latency.count == 20
    back = Tally.from_dict(json.loads(json.dumps(a.to_dict())))
    assert back.by_status == a.by_status
    assert back.latency.to_dict() == a.latency.to_dict()


def test_counts_count_as_a_counter_and_delete_as_a_dict():
    counts = Counts()
    counts["a"] += 1
    counts["a"] += 1
    counts.update({"a": 1, "b": 2})
    assert counts == {"a": 3, "b": 2} and counts["missing"] == 0 and "missing" not in counts
    assert isinstance(counts + Counts(b=1), Counter) and (counts + Counts(b=1))["b"] == 3
    del counts["a"]
    assert counts == {"b": 2}
    with pytest.raises(KeyError):
        del counts["a"]
