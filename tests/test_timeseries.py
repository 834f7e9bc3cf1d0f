"""Time bins: columns read exactly from their counts, merging into wider bins, and the
simulator's bins adding up to its summary."""

from __future__ import annotations

import fractions
import json
import math
import sys
import types

import numpy as np
import pytest

from gwlab.config import ConfigError
from gwlab.sim import simulate
from gwlab.stats import LatencyHistogram, Tally
from gwlab.timeseries import Bin, TimeSeries
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)


def make_bin(start, records, offered, admitted, area, tokens, p2_state) -> Bin:
    tally = Tally()
    for status, provider, latency in records:
        tally.record(status, provider, latency)
    return Bin(start, 1.0, offered, admitted, tally, area, tokens,
               {"p1": ("healthy", 0.0), "p2": p2_state})


@pytest.fixture
def series() -> TimeSeries:
    bins = [
        make_bin(0.0, [(200, "p1", 0.1), (502, "p2", 0.5), (429, "none", 0.0)], 4, 3, 0.6, 7.0, ("open", 2.0)),
        make_bin(1.0, [(200, "p1", 0.2), (200, "p1", 0.3), (504, "p2", 10.0)], 2, 2, 1.5, 8.0, ("half_open", 0.0)),
        make_bin(2.0, [], 0, 0, 0.0, 9.0, ("healthy", 0.0)),
    ]
    return TimeSeries(bins, ["p1", "p2"], 1.0)


def test_columns_read_counts_and_end_of_bin_values(series):
    cols = series.columns()
    assert cols["time"] == [0.0, 1.0, 2.0]
    assert cols["offered"] == [4, 2, 0]
    assert cols["admitted"] == [3, 2, 0]
    assert cols["200"] == [1, 2, 0]
    assert cols["429"] == [1, 0, 0]
    assert cols["502"] == [1, 0, 0]
    assert cols["504"] == [0, 1, 0]
    assert cols["499"] == [0, 0, 0]
    assert cols["p1.calls"] == [1, 2, 0]
    assert cols["p2.calls"] == [1, 1, 0]
    assert cols["p2.state"] == ["open", "half_open", "healthy"]
    assert cols["p2.cooldown"] == [2.0, 0.0, 0.0]
    assert cols["tokens"] == [7.0, 8.0, 9.0]
    assert cols["in_flight"] == [0.6, 1.5, 0.0]
    assert cols["p50"][2] is None
    # Rank floor(0.99 * (3 - 1)) = 1 of (0.2, 0.3, 10.0), within the histogram's 1%.
    assert cols["p99"][1] == pytest.approx(0.3, rel=0.01)


def test_resample_adds_counts_merges_histograms_and_keeps_last_readings(series):
    wide = series.resample(2.0)
    assert wide.bin_width == 2.0
    cols = wide.columns()
    assert cols["time"] == [0.0, 2.0]
    assert cols["width"] == [2.0, 1.0]
    assert cols["offered"] == [6, 0]
    assert cols["200"] == [3, 0]
    assert cols["p1.calls"] == [3, 0]
    assert cols["tokens"] == [8.0, 9.0]
    assert cols["p2.state"] == ["half_open", "healthy"]
    assert cols["in_flight"] == [pytest.approx(2.1 / 2), 0.0]
    whole = LatencyHistogram()
    for v in (0.1, 0.5, 0.2, 0.3, 10.0):
        whole.add(v)
    assert [cols[q][0] for q in ("p50", "p95", "p99")] == [whole.quantile(q) for q in (0.5, 0.95, 0.99)]


def test_resample_by_one_is_the_same_series(series):
    assert series.resample(1.0) is series


@pytest.mark.parametrize("width", [1.5, 0.5, 0.0, -2.0, math.inf, -math.inf, math.nan, 1e-320, "2", None, True,
                                   [2], 2j])
def test_resample_needs_a_whole_multiple(series, width):
    with pytest.raises(ConfigError) as error:
        series.resample(width)
    assert str(error.value) == f"timeseries: width = {width!r}: expected a whole multiple of the bin width 1.0"


@pytest.mark.parametrize("width", [2, 2.0, np.int64(2), np.float32(2.0), fractions.Fraction(2)])
def test_resample_takes_a_whole_multiple_of_any_number_type(series, width):
    assert series.resample(width).columns() == series.resample(2.0).columns()


def test_to_pandas_without_pandas_says_so(series, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="needs pandas"):
        series.to_pandas()


def test_to_pandas_builds_a_frame_indexed_by_time(series, monkeypatch):
    made = {}

    class Frame:
        def __init__(self, data):
            made["data"] = data

        def set_index(self, column):
            made["index"] = column
            return self

    monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(DataFrame=Frame))
    series.to_pandas()
    assert made["index"] == "time"
    assert made["data"] == series.columns()


def overloaded_run(duration: float, bin_width: float = 1.0):
    providers = {"p1": {"weight": 3, "latency": 0.05, "error_rate": 0.2},
                 "p2": {"weight": 1, "latency": 4.0, "distribution": "exponential"}}
    s = {"providers": providers, "gateway": {"timeout": 5.0}, "limiter": {"rate": 200.0, "burst": 100.0},
         "workload": {"mode": "open", "rate": 300.0}}
    return simulate(s, duration=duration, seed=4, bin_width=bin_width)


def test_simulated_bins_add_up_to_the_summary():
    result = overloaded_run(30)
    summary = result.summary()
    cols = result.timeseries().columns()
    assert len(cols["time"]) == 30
    assert sum(cols["offered"]) == summary["offered"]
    for code in ("200", "429", "502", "504", "499"):
        assert sum(cols[code]) == summary["codes"].get(code, 0), code
        assert summary["codes"].get(code, 0) > 0, code
    # Admitted counts arrivals; those still in flight at the end are answered 499.
    assert sum(cols["admitted"]) == summary["admitted"] + summary["codes"]["499"]
    for name in ("p1", "p2"):
        assert sum(cols[f"{name}.calls"]) == summary["providers"][name]["requests"]


def test_merging_all_bins_gives_the_summary_quantiles():
    result = overloaded_run(30)
    summary = result.summary()
    one = result.timeseries(30).columns()
    assert [one[q][0] for q in ("p50", "p95", "p99")] == [summary["latency"][q] for q in ("p50", "p95", "p99")]
    five = result.timeseries(5).columns()
    assert five["time"] == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    assert sum(five["200"]) == summary["codes"]["200"]


def test_last_bin_is_partial_when_duration_is_not_a_multiple():
    cols = overloaded_run(10.5).timeseries(5).columns()
    assert cols["time"] == [0.0, 5.0, 10.0]
    assert cols["width"] == [5.0, 5.0, 0.5]


def test_narrow_bins_hold_the_same_run():
    wide = overloaded_run(6).summary()
    narrow = overloaded_run(6, bin_width=0.25)
    assert len(narrow.timeseries()) == 24
    assert narrow.summary()["codes"] == wide["codes"]


def test_json_carries_the_columns():
    result = overloaded_run(5)
    data = json.loads(result.to_json())
    assert data["timeseries"]["columns"]["offered"] == result.timeseries()["offered"]
    assert data["timeseries"]["bin_width"] == 1.0
    assert data["summary"]["mode"] == "simulated"
