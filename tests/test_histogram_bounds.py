"""The histograms' bucket bounds make PromQL's quantiles read right: the rule behind them
(consecutive bounds within a ratio, over a range), PromQL's interpolation within that ratio
of the true quantile on any data, and, through a real Prometheus scraping a real gateway,
the README's quantile queries within 5 % of the summary's quantiles on the seed scenario and
on the LLM mix.

The Prometheus runs are deterministic: the gateway's histograms hold the latencies of a
seeded simulation (``keep_requests``), the very run whose summary gives the exact quantiles.
Live, the clients measure a request's latency and the gateway its own; on a busy machine
the two differ by milliseconds, several percent of the seed's 0.1 s, as much as the
tolerance under test. Prometheus reads the histograms through the README's own queries
(``rate`` over a minute): it scrapes them empty, then full, and the rate of every bucket is
their difference over the same interval.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlab import config, metrics, stats
from gwlab.exercises.metrics import histogram_quantile
from gwlab.metrics import BUCKET_RATIO, BUCKETS, TPOT_BUCKETS, Buckets
from gwlab.sim import simulate
from tests.conftest import SIMULATION_TIMEOUT
from tests.prometheus import SCRAPE_INTERVAL, prometheus
from tests.support import readme_table, serving

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.05
"""How far PromQL's quantiles may be from the summary's."""
ROUNDED_RATIO = 1.039
"""The largest ratio of consecutive bounds once rounded to four significant digits."""


def ratios(bounds: tuple[float, ...]) -> list[float]:
    return [b / a for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("bounds, low, high, count", [(BUCKETS, 0.005, 120.0, 272), (TPOT_BUCKETS, 0.001, 1.0, 187)])
def test_bounds_are_log_spaced_over_their_range(bounds, low, high, count):
    assert bounds[0] == low and bounds[-2] < high <= bounds[-1] and len(bounds) == count
    assert BUCKET_RATIO / 1.001 < min(ratios(bounds)) and max(ratios(bounds)) < ROUNDED_RATIO
    assert all(float(f"{b:.4g}") == b for b in bounds)


def test_the_ratio_leaves_room_for_the_summarys_own_error():
    assert ROUNDED_RATIO * (1 + stats.RELATIVE_ERROR) < 1 + TOLERANCE
    assert (1 / ROUNDED_RATIO) / (1 + stats.RELATIVE_ERROR) > 1 - TOLERANCE


def test_log_bounds_end_at_the_first_bound_past_the_top():
    assert metrics.log_bounds(1.0, 4.0, 2.0) == (1.0, 2.0, 4.0)
    assert metrics.log_bounds(1.0, 5.0, 2.0) == (1.0, 2.0, 4.0, 8.0)
    assert metrics.log_bounds(0.001, 0.001) == (0.001,)


# Latencies as gwlab's providers make them, past the first bound (the first bucket starts at
# 0): a few fixed values (the seed's) and spread ones.
latency = st.one_of(st.sampled_from((0.1, 0.5, 2.0, 0.00501, 120.0)),
                    st.floats(math.log(0.005), math.log(120.0)).map(math.exp).filter(lambda v: v > 0.005))


@given(st.lists(latency, min_size=1, max_size=300), st.sampled_from((0.5, 0.9, 0.95, 0.99, 0.999)))
def test_promqls_estimate_is_within_a_buckets_ratio_of_the_true_quantile(values, q):
    """PromQL's rule (:func:`gwlab.exercises.metrics.histogram_quantile`) puts its estimate
    in the bucket holding the value of rank ``ceil(q * n)``: within a bound's ratio of it."""
    buckets = Buckets()
    for v in values:
        buckets.observe(v)
    cumulative = [(float(le), n) for le, n in buckets.cumulative()]
    true = sorted(values)[math.ceil(q * len(values)) - 1]
    estimate = histogram_quantile(q, cumulative)
    assert true / ROUNDED_RATIO <= estimate <= true * ROUNDED_RATIO


def quantile_queries() -> dict[str, str]:
    """The README's quantile queries by the summary's (field, quantile) they estimate."""
    rows = {row[0]: row[1] for row in readme_table("The PromQL for each number")}
    latency = rows["p99 latency (0.5 and 0.95 for p50, p95)"]
    return {
        **{("latency", f"p{round(q * 100)}"): latency.replace("0.99", str(q), 1) for q in (0.5, 0.95, 0.99)},
        ("ttft", "p99"): rows["p99 time to first token"],
        ("time_per_output_token", "p99"): rows["p99 time per output token"],
    }


async def promql_quantiles(scenario: config.Scenario, requests: list, folder: Path, fields: set) -> dict:
    """The README's quantiles for ``fields`` as a real Prometheus reads them from a real
    gateway whose histograms hold ``requests`` (a simulation's)."""
    async with serving(scenario) as (gw, _):
        m = gw.metrics
        for name in m.provider_durations:  # a provider's first stream creates these series: empty here
            m.ttft[name], m.tpot[name] = Buckets(), Buckets(TPOT_BUCKETS)
        async with prometheus(folder, [gw.metrics_port]) as prom:
            await prom.wait_for_scrapes(1, 20 * SCRAPE_INTERVAL)  # every bucket at 0
            for r in requests:
                if stats.admitted(r.status, r.provider):
                    m.durations[r.provider].observe(r.latency)
                if r.ttft is not None:
                    m.ttft[r.provider].observe(r.ttft)
                    if r.tokens >= 2:
                        m.tpot[r.provider].observe((r.latency - r.ttft) / (r.tokens - 1))
            await prom.wait_for_scrapes(2, 20 * SCRAPE_INTERVAL)
            return {key: await prom.value(expr) for key, expr in quantile_queries().items() if key[0] in fields}


FIELDS = {"latency": "latency", "time to first token": "ttft", "time per output token": "time_per_output_token"}
"""The README's names of the summary's fields."""


def readme_measurements(scenario: str) -> dict[tuple[str, str], tuple[float, float]]:
    """The README's table of measured quantiles for ``scenario``: (PromQL's, the summary's)
    by (summary field, quantile)."""
    rows = readme_table("Measured with Prometheus")
    return {(FIELDS[quantile.rsplit(" ", 1)[0]], quantile.rsplit(" ", 1)[1]): (float(promql.split()[0]),
                                                                           float(exact.split()[0]))
            for name, quantile, promql, exact, _ in rows if name == scenario}


@pytest.mark.parametrize("path, name, duration, fields", [
    ("scenarios/seed.toml", "seed", 60.0, {"latency"}),
    ("scenarios/llm_mix.toml", "LLM mix", 600.0, {"latency", "ttft", "time_per_output_token"}),
])
def test_the_readmes_quantiles_read_within_5_percent_in_prometheus(tmp_path, path, name, duration, fields):
    run = simulate(ROOT / path, duration=duration, keep_requests=True)
    summary = run.summary()
    read = asyncio.run(promql_quantiles(run.scenario, run.requests, tmp_path, fields))
    assert {key[0] for key in read} == fields
    for (field, q), value in read.items():
        assert value == pytest.approx(summary[field][q], rel=TOLERANCE), (field, q, value, summary[field][q])
    # The README shows these very numbers, to four significant digits.
    shown = readme_measurements(name)
    assert set(shown) == set(read)
    for key, (promql, exact) in shown.items():
        assert (promql, exact) == (pytest.approx(read[key], rel=5e-4), pytest.approx(summary[key[0]][key[1]], rel=5e-4))
