"""Plotly figures of a run, drawn from a :class:`~gwlab.timeseries.TimeSeries`.

One function per panel returns that panel's traces, so the notebooks' live dashboard can
update a widget's traces from a growing time series while a finished simulation draws the
same panels at once with :func:`figure`:

- requests per second by status code,
- latency quantiles of the requests completed in each bin,
- each provider's share of the answered requests,
- each breaker's state over time, with its openings marked,
- tokens in the rate limiter's bucket, on an axis from 0 to the burst;

and for LLM traffic (:data:`LLM_PANELS`, when the series holds it or when asked):

- time to first token quantiles of the streams ended in each bin,
- output tokens per second,
- each provider's calls waiting for a slot.

and, for a sweep of storms judged by :data:`gwlab.metastability.judge`, a phase diagram
(:func:`phase_diagram`).

Every quantity has one colour wherever it is drawn (live, static, in the report and in a
notebook's own plots): :data:`STATUS_COLOURS`, :data:`QUANTILE_COLOURS`,
:data:`STATE_COLOURS` and :func:`provider_colour`. Statuses and breaker states use the
Okabe–Ito palette, providers Paul Tol's "muted" one, quantiles one hue from light to dark:
both palettes were made to stay distinct with the common colour-vision deficiencies. No
provider takes a status's colour, as both are drawn as stacked request rates.

Each panel has its own legend beside its top edge, and the breaker panel's state colour bar
stands below that panel's legend: nothing on the right overlaps, whatever the figure's width.

Plotly is imported here only; the simulator itself never needs it.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gwlab import config
from gwlab.breaker import AVAILABILITY
from gwlab.stats import CUT_OFF, RATE_LIMITED, TRANSPORT_ERROR
from gwlab.timeseries import STATUSES, BreakerChange, TimeSeries

STATUS_COLOURS = {
    200: "#009E73",              # bluish green: answered
    RATE_LIMITED: "#E69F00",     # orange: refused by the rate limiter
    502: "#D55E00",              # vermillion: the provider failed
    504: "#CC79A7",              # reddish purple: the provider timed out
    CUT_OFF: "#999999",          # grey: cut off at the end of a run
    TRANSPORT_ERROR: "#000000",  # black: no HTTP answer at all
}
"""A colour per status code (Okabe–Ito)."""
QUANTILE_COLOURS = {"p50": "#56B4E9", "p95": "#0072B2", "p99": "#003F7F"}
"""A colour per latency quantile: one blue, darker for a higher quantile."""
STATE_LEVELS = {state.value: i for i, state in enumerate(AVAILABILITY)}
"""Breaker states as numbers for the timeline, from best to worst."""
STATE_COLOURS = {"healthy": "#009E73", "failing": "#F0E442", "half_open": "#E69F00", "open": "#D55E00"}
"""A colour per breaker state (Okabe–Ito): healthy as a 200, open as a 502."""
PROVIDER_PALETTE = ("#332288", "#88CCEE", "#DDCC77", "#882255", "#999933")
"""Provider colours (Paul Tol's "muted" without its greens and reds): indigo, cyan, sand,
wine and olive. The first three, far apart in lightness and on the blue–yellow axis that
every colour vision keeps, go to the seed's providers."""
PROVIDER_COLOURS = dict(zip((name for name, *_ in config.SEED_PROVIDERS), PROVIDER_PALETTE))
"""The seed scenario's providers (p1, p2, p3) with the palette's colours in their order."""
OPENED_COLOUR = "#000000"
"""The marks of a breaker opening."""
TOKENS_COLOUR = "#44AA99"
"""The tokens in the bucket (teal)."""
BURST_COLOUR = "#999999"
"""The burst, the bucket's capacity (a grey dashed line)."""

PANELS = ("Requests/s by status", "Latency of answered requests (s)", "Provider share of answers (%)",
          "Breaker state", "Tokens in the bucket")
LLM_PANELS = ("Time to first token of streams (s)", "Output tokens/s", "Calls waiting for a slot")
"""The panels below :data:`PANELS` for LLM traffic."""
BREAKER_PANEL = PANELS.index("Breaker state")
"""Index of the panel whose colour bar stands below its legend."""
HEIGHT = 1200
"""Height of :func:`figure` in pixels, for the panels of :data:`PANELS`; LLM traffic's add
as much again per panel."""
SPACING = 0.05
"""Gap between two panels, as a fraction of the plotting area's height."""
MARGIN = {"t": 80, "b": 50}
"""Margins above (the title) and below (the time axis) the plotting area, in pixels."""
LEGEND_X = 1.02
"""Left edge of the legends and the colour bar, as a fraction of the plotting area's width."""
LEGEND_ENTRY = 20
"""Height of one legend entry, in pixels (the default 12 px font on one line)."""
LEGEND_PAD = 10
"""Height a legend adds to its entries (its border and inner gaps), in pixels."""
COLOURBAR_GAP = 10
"""Pixels between the breaker panel's legend and its colour bar."""
COLOURBAR_THICKNESS = 15
"""Width of the colour bar, in pixels."""


def provider_colour(name: str) -> str:
    """The colour of provider ``name``: its own for the seed's providers, else one of
    :data:`PROVIDER_PALETTE` picked by the name's CRC-32. It depends on the name only, so a
    provider keeps its colour whatever the other providers of a scenario and their order
    (two providers of other names may share one; the legend tells them apart)."""
    return PROVIDER_COLOURS.get(name) or PROVIDER_PALETTE[zlib.crc32(name.encode()) % len(PROVIDER_PALETTE)]


def _rates(counts: Sequence[int], widths: Sequence[float]) -> list[float]:
    return [n / w if w > 0 else 0.0 for n, w in zip(counts, widths)]


def status_traces(ts: TimeSeries) -> list[go.Scatter]:
    """Requests per second by status code, stacked, one trace per status of
    :data:`~gwlab.timeseries.STATUSES`; 499 (cut off at the end) is drawn and in the legend
    only if any, and hidden (``visible=False``) otherwise rather than left out, so that every
    series gives the same traces and a live figure follows it with new values alone."""
    cols = ts.columns()
    return [
        go.Scatter(x=cols["time"], y=_rates(cols[str(s)], cols["width"]), name=str(s), mode="lines",
                   stackgroup="status", line={"color": STATUS_COLOURS[s], "width": 0.5},
                   visible=any(cols[str(s)]) if s == CUT_OFF else None)
        for s in STATUSES
    ]


def latency_traces(ts: TimeSeries) -> list[go.Scatter]:
    """p50, p95 and p99 latency per bin (gaps where nothing completed)."""
    cols = ts.columns()
    return [go.Scatter(x=cols["time"], y=cols[q], name=q, mode="lines", line={"color": colour})
            for q, colour in QUANTILE_COLOURS.items()]


def share_traces(ts: TimeSeries) -> list[go.Scatter]:
    """Each provider's share of the requests answered in each bin, stacked to 100%."""
    cols = ts.columns()
    return [
        go.Scatter(x=cols["time"], y=cols[f"{name}.calls"], name=name, mode="lines", stackgroup="share",
                   groupnorm="percent", line={"color": provider_colour(name), "width": 0.5})
        for name in ts.providers
    ]


def breaker_traces(ts: TimeSeries, transitions: Sequence[BreakerChange] = ()) -> list[go.BaseTraceType]:
    """A heat strip per provider with its breaker state at each bin's end, and a marker at
    every opening (a short cooldown can begin and end inside one bin). With no opening the
    markers are one point at no place: plotly.js hides a trace with no points, and with it
    this panel's only legend entry, so the live chart's legend would come and go as
    openings enter and leave its window."""
    cols = ts.columns()
    levels = len(STATE_LEVELS)
    scale = []
    for i, state in enumerate(STATE_LEVELS):
        scale += [[i / levels, STATE_COLOURS[state]], [(i + 1) / levels, STATE_COLOURS[state]]]
    strip = go.Heatmap(
        x=cols["time"], y=list(ts.providers),
        z=[[STATE_LEVELS.get(s) for s in cols[f"{name}.state"]] for name in ts.providers],
        zmin=-0.5, zmax=levels - 0.5, colorscale=scale, showscale=True, name="state",
        colorbar={"tickvals": list(STATE_LEVELS.values()), "ticktext": list(STATE_LEVELS)},
        hovertemplate="%{y} at %{x} s: level %{z}<extra></extra>",
    )
    opened = [t for t in transitions if t.target == "open"]
    marks = go.Scatter(
        x=[t.time for t in opened] or [None], y=[t.provider for t in opened] or [None],
        mode="markers", name="opened",
        marker={"symbol": "x", "color": OPENED_COLOUR, "size": 7},
        text=[f"cooldown {t.cooldown:g} s" for t in opened],
        hovertemplate="%{y} opened at %{x:.3f} s, %{text}<extra></extra>",
    )
    return [strip, marks]


def token_traces(ts: TimeSeries) -> list[go.Scatter]:
    """Tokens in the bucket at each bin's end, and the burst in force then (dashed)."""
    cols = ts.columns()
    return [
        go.Scatter(x=cols["time"], y=cols["tokens"], name="tokens", mode="lines", line={"color": TOKENS_COLOUR}),
        go.Scatter(x=cols["time"], y=cols["burst"], name="burst", mode="lines", line_shape="hv",
                   line={"color": BURST_COLOUR, "dash": "dash", "width": 1}),
    ]


def ttft_traces(ts: TimeSeries) -> list[go.Scatter]:
    """p50, p95 and p99 time to first token of the streams ended in each bin (gaps where none
    did), in the latency quantiles' colours."""
    cols = ts.columns()
    empty = [None] * len(cols["time"])
    return [go.Scatter(x=cols["time"], y=cols.get(f"ttft_{q}", empty), name=f"TTFT {q}", mode="lines",
                       line={"color": colour})
            for q, colour in QUANTILE_COLOURS.items()]


def output_token_traces(ts: TimeSeries) -> list[go.Scatter]:
    """Output tokens per second carried by the answers of each bin."""
    cols = ts.columns()
    tokens = cols.get("output_tokens", [0] * len(cols["time"]))
    return [go.Scatter(x=cols["time"], y=_rates(tokens, cols["width"]), name="tokens/s", mode="lines",
                       line={"color": TOKENS_COLOUR})]


def waiting_traces(ts: TimeSeries) -> list[go.Scatter]:
    """Each provider's calls waiting for a slot at each bin's end."""
    cols = ts.columns()
    zeros = [0] * len(cols["time"])
    return [go.Scatter(x=cols["time"], y=cols.get(f"{name}.waiting", zeros), name=f"{name} waiting",
                       mode="lines", line={"color": provider_colour(name)})
            for name in ts.providers]


def has_llm_traffic(ts: TimeSeries) -> bool:
    """Whether the series holds LLM traffic: streams, tokens, stream errors or slots."""
    cols = ts.columns()
    return "output_tokens" in cols or any(f"{name}.waiting" in cols for name in ts.providers)


def axis_ranges(ts: TimeSeries, llm: bool = False) -> dict[str, Any]:
    """The y axes of :func:`figure`'s panels (in the order of :data:`PANELS`), as
    ``update_layout`` arguments: rates and
    latencies from 0 up to what is drawn, shares from 0 to 100 %, one breaker row per
    provider in the scenario's order from the top, and tokens from 0 to the largest burst
    in force over the bins (a dip of a few tokens stays a small dip); with ``llm``, the
    LLM panels' from 0. The live dashboard applies them again at every redraw, so the tokens
    axis follows a change of the burst."""
    providers = list(ts.providers)
    bursts = [b for b in ts.columns()["burst"] if b is not None]
    ranges = {
        "yaxis": {"rangemode": "tozero"},
        "yaxis2": {"rangemode": "tozero"},
        "yaxis3": {"range": [0, 100]},
        "yaxis4": {"type": "category", "categoryorder": "array", "categoryarray": providers,
                   "range": [len(providers) - 0.5, -0.5]},
        "yaxis5": {"range": [0, max(bursts)]} if bursts else {"rangemode": "tozero"},
    }
    if llm:
        ranges.update({f"yaxis{len(PANELS) + i + 1}": {"rangemode": "tozero"} for i in range(len(LLM_PANELS))})
    return ranges


def legend_height(entries: int) -> int:
    """Pixels a legend of ``entries`` entries takes."""
    return LEGEND_PAD + LEGEND_ENTRY * entries


def _legend(panel: int) -> str:
    """The layout key of ``panel``'s legend: ``legend`` for the first, then ``legend2``..."""
    return "legend" if panel == 0 else f"legend{panel + 1}"


def panels(ts: TimeSeries, transitions: Sequence[BreakerChange] = (),
           llm: bool = False) -> list[list[go.BaseTraceType]]:
    """The traces of each panel of :data:`PANELS` (and :data:`LLM_PANELS` with ``llm``), in
    order: what :func:`figure` lays out, and what a live figure updates its traces from
    without building a new layout. Which traces there are, and in which order, depends on
    the series' providers and ``llm`` alone, never on its values."""
    traces = [status_traces(ts), latency_traces(ts), share_traces(ts), breaker_traces(ts, transitions),
              token_traces(ts)]
    if llm:
        traces += [ttft_traces(ts), output_token_traces(ts), waiting_traces(ts)]
    return traces


def figure(ts: TimeSeries, transitions: Sequence[BreakerChange] = (), title: str | None = None,
           height: int | None = None, llm: bool | None = None) -> go.Figure:
    """All panels, one above the other, sharing the time axis; ``height`` in pixels (by
    default :data:`HEIGHT`, and more for the LLM panels). ``llm``: whether to draw the LLM
    panels (by default, when the series holds LLM traffic)."""
    if llm is None:
        llm = has_llm_traffic(ts)
    titles = PANELS + LLM_PANELS if llm else PANELS
    if height is None:
        height = HEIGHT * len(titles) // len(PANELS)
    fig = make_subplots(rows=len(titles), cols=1, shared_xaxes=True, subplot_titles=titles,
                        vertical_spacing=SPACING * len(PANELS) / len(titles))
    traces_by_panel = panels(ts, transitions, llm)
    legends = {}
    for panel, traces in enumerate(traces_by_panel):
        for trace in traces:
            trace.legend = _legend(panel)
            fig.add_trace(trace, row=panel + 1, col=1)
        top = fig.layout[f"yaxis{panel + 1}"].domain[1]
        legends[_legend(panel)] = {"x": LEGEND_X, "xanchor": "left", "y": top, "yanchor": "top"}
    fig.update_xaxes(title_text="time (s)", row=len(titles), col=1)
    fig.update_traces(selector={"type": "heatmap"}, colorbar=_colourbar(fig, traces_by_panel[BREAKER_PANEL], height))
    fig.update_layout(height=height, title=title, hovermode="x unified", margin=MARGIN, **legends)
    fig.update_layout(axis_ranges(ts, llm))
    return fig


def _colourbar(fig: go.Figure, traces: Sequence[go.BaseTraceType], height: int) -> dict[str, Any]:
    """The state colour bar: beside the breaker panel, from below that panel's legend to
    the panel's bottom edge (positions in pixels converted to fractions of the plotting area)."""
    low, high = fig.layout[f"yaxis{BREAKER_PANEL + 1}"].domain
    area = height - MARGIN["t"] - MARGIN["b"]
    entries = sum(t.type != "heatmap" for t in traces)  # the strip has no legend entry
    top = high - (legend_height(entries) + COLOURBAR_GAP) / area
    return {"x": LEGEND_X, "xanchor": "left", "y": top, "yanchor": "top", "lenmode": "fraction",
            "len": top - low, "thickness": COLOURBAR_THICKNESS}


def phase_diagram(rows: Any, x: str, y: str = "trigger", facet: str | None = None,
                  title: str | None = None) -> go.Figure:
    """A heat map of whether runs recovered: for each value of ``x`` (columns) and ``y``
    (rows), the share of the runs (seeds) that ``recovered``, from vermillion (none: the
    storm persisted or never ended) to bluish green (all), the share written in each cell;
    one panel per value of ``facet`` when given.

    ``rows`` are :func:`gwlab.sweep.sweep`'s rows with :data:`gwlab.metastability.judge`'s
    columns (a list of dicts, or a pandas DataFrame). Raises :class:`KeyError` naming a
    column that no row has."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    for column in (x, y, "recovered", *((facet,) if facet else ())):
        if not records or column not in records[0]:
            raise KeyError(f"phase_diagram: no column {column!r} in the rows")
    facets = sorted({r[facet] for r in records}, key=str) if facet else [None]
    xs, ys = sorted({r[x] for r in records}), sorted({r[y] for r in records})
    fig = make_subplots(rows=1, cols=len(facets), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"{facet} = {f}" for f in facets] if facet else None)
    scale = [[0.0, STATUS_COLOURS[502]], [0.5, STATE_COLOURS["failing"]], [1.0, STATUS_COLOURS[200]]]
    for col, value in enumerate(facets, start=1):
        share = [[None] * len(xs) for _ in ys]
        for j, yv in enumerate(ys):
            for i, xv in enumerate(xs):
                runs = [r["recovered"] for r in records if r[x] == xv and r[y] == yv
                        and (facet is None or r[facet] == value)]
                share[j][i] = sum(bool(v) for v in runs) / len(runs) if runs else None
        fig.add_heatmap(x=[str(v) for v in xs], y=[str(v) for v in ys], z=share, zmin=0, zmax=1,
                        colorscale=scale, showscale=col == len(facets),
                        colorbar={"title": "recovered", "tickformat": ".0%"},
                        texttemplate="%{z:.0%}", hovertemplate=f"{x} %{{x}}<br>{y} %{{y}}<br>recovered %{{z:.0%}}"
                                                               "<extra></extra>", row=1, col=col)
        fig.update_xaxes(title_text=x, type="category", row=1, col=col)
    fig.update_yaxes(title_text=y, type="category", row=1, col=1)
    fig.update_layout(height=380, title=title, margin={"t": 70 if title else 50, "b": 50})
    return fig
