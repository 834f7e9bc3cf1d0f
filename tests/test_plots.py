"""The figures keep their conventions everywhere: one colour per quantity, fixed axis ranges,
and a legend beside each panel that nothing overlaps; in a simulation's figure whatever its
statuses and providers, and in the live dashboard's."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

import gwlab
import gwlab.lab
from gwlab import config, plots
from gwlab.config import from_dict
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

OUTAGE = Path(__file__).resolve().parents[1] / "scenarios" / "p1_outage.toml"
TWO_PROVIDERS = {
    "providers": {"backup": {"weight": 1, "latency": 0.001, "error_rate": 0.05},
                  "p2": {"weight": 3, "latency": 0.002, "error_rate": 0.0}},
    "workload": {"mode": "open", "rate": 20},
    "limiter": {"rate": 100, "burst": 50},
    "events": [{"at": 10, "limiter": {"burst": 80}}],
}
"""Another provider set, in another order, with an unknown name; the burst grows from 50 to
80; calls so short that nothing is cut off at the end (seed 1)."""


def expected_colours(fig, providers) -> dict[str, str]:
    """The colour each line of ``fig`` must have, by trace name."""
    statuses = {str(code): colour for code, colour in plots.STATUS_COLOURS.items()
                if any(t.name == str(code) for t in fig.data)}
    return {**statuses, **plots.QUANTILE_COLOURS, **{p: plots.provider_colour(p) for p in providers},
            "tokens": plots.TOKENS_COLOUR, "burst": plots.BURST_COLOUR}


def check_conventions(fig, providers: list[str], burst: float) -> None:
    """Colours, axis ranges and the places of the legends and the colour bar in ``fig``."""
    lines = {t.name: t.line.color for t in fig.data if t.type == "scatter" and t.mode == "lines"}
    assert lines == expected_colours(fig, providers)
    strip = next(t for t in fig.data if t.type == "heatmap")
    assert [c for _, c in strip.colorscale[::2]] == [plots.STATE_COLOURS[s] for s in plots.STATE_LEVELS]
    opened = next(t for t in fig.data if t.name == "opened")
    assert opened.marker.color == plots.OPENED_COLOUR

    layout = fig.layout
    assert layout.yaxis.rangemode == "tozero" and layout.yaxis2.rangemode == "tozero"
    assert list(layout.yaxis3.range) == [0, 100]
    assert list(layout.yaxis4.categoryarray) == providers
    assert list(layout.yaxis4.range) == [len(providers) - 0.5, -0.5]  # the first provider on top
    assert list(layout.yaxis5.range) == [0, burst]
    assert all(layout[f"xaxis{i}"].matches == "x5" for i in range(1, len(plots.PANELS)))

    check_legends(fig)


def check_legends(fig) -> None:
    """Each trace's legend is its own panel's, at the panel's top edge, right of the plots;
    the breaker panel's colour bar is below that panel's legend; and no two of these boxes
    share a height (they all stand at the same place across)."""
    layout = fig.layout
    area = layout.height - layout.margin.t - layout.margin.b
    boxes = []
    for panel in range(len(layout.annotations)):  # a title per panel
        key = "legend" if panel == 0 else f"legend{panel + 1}"
        axis = "y" if panel == 0 else f"y{panel + 1}"
        low, high = layout[f"yaxis{panel + 1}"].domain
        traces = [t for t in fig.data if t.yaxis == axis and t.type != "heatmap"]
        assert traces and all(t.legend == key for t in traces)
        entries = [t for t in traces if t.visible is not False]  # a hidden trace has no entry
        # plotly.js hides a trace with no points, and its legend entry with it.
        assert all(len(t.x) and len(t.y) for t in entries), [t.name for t in entries if not len(t.x)]
        legend = layout[key]
        assert (legend.x, legend.xanchor, legend.y, legend.yanchor) == (plots.LEGEND_X, "left", high, "top")
        bottom = high - plots.legend_height(len(entries)) / area
        assert bottom >= low
        boxes.append((bottom, high))
    bar = next(t for t in fig.data if t.type == "heatmap").colorbar
    assert (bar.x, bar.xanchor, bar.yanchor, bar.lenmode) == (plots.LEGEND_X, "left", "top", "fraction")
    assert bar.y - bar.len >= layout.yaxis4.domain[0] - 1e-9
    boxes.append((bar.y - bar.len, bar.y))
    boxes.sort()
    assert all(top <= next_bottom for (_, top), (next_bottom, _) in zip(boxes, boxes[1:]))


def test_palettes_tell_every_quantity_apart():
    for palette in (plots.STATUS_COLOURS, plots.QUANTILE_COLOURS, plots.STATE_COLOURS, plots.PROVIDER_COLOURS):
        assert len(set(palette.values())) == len(palette)
    assert list(plots.PROVIDER_COLOURS.items()) == list(zip(("p1", "p2", "p3"), plots.PROVIDER_PALETTE))
    assert len(set(plots.PROVIDER_PALETTE)) == len(plots.PROVIDER_PALETTE)
    assert not set(plots.PROVIDER_PALETTE) & set(plots.STATUS_COLOURS.values())
    assert set(plots.STATUS_COLOURS) == {0, 200, 429, 499, 502, 504}


def test_a_provider_keeps_its_colour_whatever_the_others():
    assert plots.provider_colour("p2") == plots.PROVIDER_COLOURS["p2"]
    assert plots.provider_colour("backup") in plots.PROVIDER_PALETTE


def test_a_simulated_figure_with_cut_off_requests():
    result = gwlab.simulate(OUTAGE, duration=90, seed=1)
    fig = result.figure()
    assert cut_off_band(fig).visible is True
    check_conventions(fig, ["p1", "p2", "p3"], 1000)


def test_a_simulated_figure_without_cut_off_requests_and_other_providers():
    result = gwlab.simulate(from_dict(TWO_PROVIDERS), duration=20, seed=1)
    fig = result.figure()
    band = cut_off_band(fig)
    assert band.visible is False and not any(band.y)  # hidden: neither drawn nor in the legend
    check_conventions(fig, ["backup", "p2"], 80)  # the largest burst in force


def cut_off_band(fig):
    """The 499 trace of ``fig``: there whether or not any request was cut off."""
    (band,) = [t for t in fig.data if t.name == "499"]
    return band


def test_the_colours_are_the_same_in_both_figures():
    seed = gwlab.simulate(OUTAGE, duration=30, seed=1).figure()
    other = gwlab.simulate(from_dict(TWO_PROVIDERS), duration=20, seed=1).figure()
    colour = {name: {t.name: t.line.color for t in fig.data if t.type == "scatter"} for name, fig in
              (("seed", seed), ("other", other))}
    for name in ("200", "502", "p50", "p95", "p99", "p2", "tokens"):
        assert colour["seed"][name] == colour["other"][name]


LLM = {
    "providers": {"a": {"ttft": 0.3, "decode_rate": 40.0, "output_tokens": 60.0, "capacity": 3, "queue": 20},
                  "b": {"latency": 0.2}},
    "workload": {"clients": 12, "stream_share": 0.8}, "breaker": {"enabled": False},
}
"""LLM traffic: streams, tokens and a provider whose queue fills (seed 1)."""


def test_a_figure_of_llm_traffic_adds_its_panels_below_the_others():
    fig = gwlab.simulate(from_dict(LLM), duration=30, seed=1).figure()
    assert [a.text for a in fig.layout.annotations] == list(plots.PANELS + plots.LLM_PANELS)
    assert fig.layout.height == plots.HEIGHT * 8 // 5
    by_name = {t.name: t for t in fig.data}
    for q, colour in plots.QUANTILE_COLOURS.items():
        assert by_name[f"TTFT {q}"].line.color == colour
        assert all(v is None or v >= 0.2 * 0.99 for v in by_name[f"TTFT {q}"].y)  # b answers whole after 0.2 s
    assert max(by_name["tokens/s"].y) > 0 and max(by_name["a waiting"].y) > 0
    assert set(by_name["b waiting"].y) == {0}
    assert by_name["a waiting"].line.color == plots.provider_colour("a")
    for i in range(len(plots.PANELS), len(plots.PANELS) + len(plots.LLM_PANELS)):
        assert fig.layout[f"yaxis{i + 1}"].rangemode == "tozero"
    check_legends(fig)
    seed = gwlab.simulate(None, duration=10, seed=1).figure()
    assert [a.text for a in seed.layout.annotations] == list(plots.PANELS) and seed.layout.height == plots.HEIGHT


QUIET = {"workload": {"mode": "open", "rate": 2.0}}
"""A few requests a second that nothing cuts off, with calls of a millisecond that never fail."""
QUIET_CALL = {"latency": 0.001, "distribution": "fixed", "error_rate": 0.0, "outage": "none"}


@pytest.mark.parametrize("scenario, quiet", [
    (config.load(OUTAGE), {"p1": {**QUIET_CALL, "weight": 1.0}, "p2": QUIET_CALL, "p3": QUIET_CALL}),
    (from_dict(LLM), {"a": {**QUIET_CALL, "ttft": 0.001, "decode_rate": config.MAX_RATE, "stream_error_rate": 0.0},
                      "b": QUIET_CALL}),
], ids=["seed providers", "llm"])
def test_the_traces_depend_on_the_providers_alone_not_on_the_values(scenario, quiet):
    """A live figure follows its series by new values alone: what its traces are may not
    change as statuses, openings or cut-offs come and go in its window."""
    calm = dataclasses.replace(config.merge(scenario, {**QUIET, "providers": quiet}), events=())
    runs = [gwlab.simulate(scenario, duration=90, seed=1), gwlab.simulate(calm, duration=20, seed=1)]
    assert [run.summary()["codes"].get("499", 0) > 0 for run in runs] == [True, False]
    assert [len(run.transitions) > 0 for run in runs] == [scenario.breaker.enabled, False]
    series = [(run.timeseries(), run.transitions) for run in runs]
    llm = plots.has_llm_traffic(series[0][0])
    shapes = {tuple((t.type, t.name) for traces in plots.panels(ts, transitions, llm) for t in traces)
              for ts, transitions in series}
    assert len(shapes) == 1


FIGURE_MESSAGES = ("_send_addTraces_msg", "_send_deleteTraces_msg", "_send_moveTraces_msg", "_send_restyle_msg",
                   "_send_relayout_msg", "_send_update_msg", "_send_animate_msg")
"""Every kind of message a plotly FigureWidget sends its views."""


def test_a_live_figure_follows_a_cut_off_band_coming_and_going_with_one_message_a_redraw(monkeypatch):
    """The band of a 499 enters and leaves the live window; each redraw sends the views one
    update of the same traces, never a deletion and an addition (a view could draw the
    empty figure between the two)."""
    monkeypatch.setattr(config, "VIRTUAL_STEP", 3600.0)  # only the test advances the lab
    scenario = config.load(OUTAGE)
    quiet = {name: QUIET_CALL for name in ("p1", "p2", "p3")}
    cut = gwlab.simulate(scenario, duration=30, seed=1)
    calm = gwlab.simulate(dataclasses.replace(config.merge(scenario, {**QUIET, "providers": quiet}), events=()),
                          duration=30, seed=1)

    async def main():
        dashboard = gwlab.lab.start(scenario, mode="virtual").dashboard()
        fig = dashboard.figure
        names = [t.name for t in fig.data]
        sent = []
        for kind in FIGURE_MESSAGES:
            monkeypatch.setattr(fig, kind, lambda *args, kind=kind, **kwargs: sent.append(kind))
        for run, shown in ((cut, True), (calm, False), (cut, True)):
            monkeypatch.setattr(dashboard, "_data", lambda run=run: (run.timeseries(), run.transitions))
            dashboard._drawn = None  # as if a bin had closed
            sent.clear()
            dashboard.redraw()
            assert sent == ["_send_update_msg"]
            assert [t.name for t in fig.data] == names and cut_off_band(fig).visible is shown
            assert list(fig.data[0].x) == run.timeseries().columns()["time"]

    async def run_and_stop():
        try:
            await main()
        finally:
            gwlab.lab.stop()

    asyncio.run(run_and_stop())


@pytest.fixture
def lab():
    yield gwlab.lab.start(clients=20, port=0, metrics_port=0)
    gwlab.lab.stop()


def test_the_live_figure_keeps_the_conventions_and_its_tokens_axis_follows_the_burst(lab):
    dashboard = lab.dashboard()
    lab.run_for(1.2)
    check_conventions(dashboard.figure, ["p1", "p2", "p3"], lab.scenario.limiter.burst)
    lab.configure({"limiter": {"burst": 2000}})
    lab.run_for(1.2)
    assert list(dashboard.figure.layout.yaxis5.range) == [0, 2000]
    assert dashboard.figure._widget_layout["yaxis5"]["range"] == [0, 2000]  # a reloaded page too


def test_a_phase_diagram_shows_the_share_of_runs_that_recovered_per_cell_and_panel():
    rows = [{"workload.rate": rate, "trigger": trigger, "policy": policy, "seed": seed,
             "recovered": (rate < 40 or policy == "adaptive") and not (seed == 2 and trigger == 30)}
            for policy in ("fixed", "adaptive") for rate in (30, 40) for trigger in (10, 30) for seed in (1, 2)]
    fig = plots.phase_diagram(rows, "workload.rate", "trigger", facet="policy")
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert [list(t.x) for t in heatmaps] == [["30", "40"]] * 2 and [list(t.y) for t in heatmaps] == [["10", "30"]] * 2
    # Panels in sorted order: adaptive, fixed; rows by trigger, columns by rate.
    assert [list(map(list, t.z)) for t in heatmaps] == [[[1.0, 1.0], [0.5, 0.5]], [[1.0, 0.0], [0.5, 0.0]]]
    assert [a.text for a in fig.layout.annotations] == ["policy = adaptive", "policy = fixed"]
    assert [t.showscale for t in heatmaps] == [False, True]


def test_a_phase_diagram_names_a_missing_column():
    with pytest.raises(KeyError, match="phase_diagram: no column 'trigger' in the rows"):
        plots.phase_diagram([{"workload.rate": 1, "recovered": True}], "workload.rate")
