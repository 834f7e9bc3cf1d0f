"""Plotly figures of a run, drawn from a :class:`~gwlab.timeseries.TimeSeries`.

One function per panel returns that panel's traces, so the notebooks' live dashboard can
update a widget's traces from a growing time series while a finished simulation draws the
same panels at once with :func:`figure`:

- requests per second by status code,
- latency quantiles of the requests completed in each bin,
- each provider's share of the answered requests,
- each breaker's state over time, with its openings marked,
- tokens in the rate limiter's bucket.

Plotly is imported here only; the simulator itself never needs it.
"""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gwlab.timeseries import STATUSES, BreakerChange, TimeSeries

STATE_LEVELS = {"healthy": 0, "failing": 1, "half_open": 2, "open": 3}
"""Breaker states as numbers for the timeline, from best to worst."""
_STATE_COLOURS = ("#2ca02c", "#bcbd22", "#ff7f0e", "#d62728")
_STATUS_COLOURS = {200: "#2ca02c", 429: "#9467bd", 502: "#d62728", 504: "#8c564b", 499: "#7f7f7f"}
PANELS = ("Requests/s by status", "Latency of answered requests (s)", "Provider share of answers (%)",
          "Breaker state", "Tokens in the bucket")


def _rates(counts: Sequence[int], widths: Sequence[float]) -> list[float]:
    return [n / w if w > 0 else 0.0 for n, w in zip(counts, widths)]


def status_traces(ts: TimeSeries) -> list[go.Scatter]:
    """Requests per second by status code, stacked; 499 (cut off at the end) only if any."""
    cols = ts.columns()
    return [
        go.Scatter(x=cols["time"], y=_rates(cols[str(s)], cols["width"]), name=str(s), mode="lines",
                   stackgroup="status", line={"color": _STATUS_COLOURS[s], "width": 0.5})
        for s in STATUSES
        if s != 499 or any(cols["499"])
    ]


def latency_traces(ts: TimeSeries) -> list[go.Scatter]:
    """p50, p95 and p99 latency per bin (gaps where nothing completed)."""
    cols = ts.columns()
    return [go.Scatter(x=cols["time"], y=cols[q], name=q, mode="lines") for q in ("p50", "p95", "p99")]


def share_traces(ts: TimeSeries) -> list[go.Scatter]:
    """Each provider's share of the requests answered in each bin, stacked to 100%."""
    cols = ts.columns()
    return [
        go.Scatter(x=cols["time"], y=cols[f"{name}.calls"], name=name, mode="lines",
                   stackgroup="share", groupnorm="percent", line={"width": 0.5})
        for name in ts.providers
    ]


def breaker_traces(ts: TimeSeries, transitions: Sequence[BreakerChange] = ()) -> list[go.BaseTraceType]:
    """A heat strip per provider with its breaker state at each bin's end, and a marker at
    every opening (a short cooldown can begin and end inside one bin)."""
    cols = ts.columns()
    levels = len(_STATE_COLOURS)
    scale = []
    for i, colour in enumerate(_STATE_COLOURS):
        scale += [[i / levels, colour], [(i + 1) / levels, colour]]
    strip = go.Heatmap(
        x=cols["time"], y=list(ts.providers),
        z=[[STATE_LEVELS.get(s) for s in cols[f"{name}.state"]] for name in ts.providers],
        zmin=-0.5, zmax=levels - 0.5, colorscale=scale, showscale=True, name="state",
        colorbar={"tickvals": list(STATE_LEVELS.values()), "ticktext": list(STATE_LEVELS)},
        hovertemplate="%{y} at %{x} s: level %{z}<extra></extra>",
    )
    opened = [t for t in transitions if t.target == "open"]
    marks = go.Scatter(
        x=[t.time for t in opened], y=[t.provider for t in opened], mode="markers", name="opened",
        marker={"symbol": "x", "color": "black", "size": 7},
        text=[f"cooldown {t.cooldown:g} s" for t in opened],
        hovertemplate="%{y} opened at %{x:.3f} s, %{text}<extra></extra>",
    )
    return [strip, marks]


def token_traces(ts: TimeSeries) -> list[go.Scatter]:
    """Tokens in the bucket at each bin's end (no legend entry: the panel's title names it)."""
    cols = ts.columns()
    return [go.Scatter(x=cols["time"], y=cols["tokens"], name="tokens", mode="lines", line={"color": "#17becf"},
                       showlegend=False)]


def figure(ts: TimeSeries, transitions: Sequence[BreakerChange] = (), title: str | None = None) -> go.Figure:
    """All panels, one above the other, sharing the time axis."""
    fig = make_subplots(rows=len(PANELS), cols=1, shared_xaxes=True, subplot_titles=PANELS, vertical_spacing=0.05)
    panels = (status_traces(ts), latency_traces(ts), share_traces(ts), breaker_traces(ts, transitions), token_traces(ts))
    for row, traces in enumerate(panels, start=1):
        for trace in traces:
            # One legend group per panel, so each panel's entries stand beside it.
            trace.legendgroup = PANELS[row - 1]
            fig.add_trace(trace, row=row, col=1)
    fig.update_xaxes(title_text="time (s)", row=len(PANELS), col=1)
    # The state colour scale stands beside the breaker panel, as tall as it.
    low, high = fig.layout[f"yaxis{PANELS.index('Breaker state') + 1}"].domain
    fig.update_traces(selector={"type": "heatmap"},
                      colorbar={"y": (low + high) / 2, "len": high - low, "yanchor": "middle"})
    fig.update_layout(height=1200, title=title, hovermode="x unified",
                      legend={"traceorder": "grouped", "tracegroupgap": 120})
    return fig
