"""A simulation as one self-contained HTML page that opens offline.

The page holds the headline numbers, a table per provider, the figures of
:func:`gwlab.plots.figure` with Plotly's JavaScript embedded (no network needed to view it),
and the breaker transitions.
"""

from __future__ import annotations

import html
from typing import Any

import plotly.io as pio

from gwlab.sim import SimResult

MAX_TRANSITIONS = 500
"""Transitions listed in the page; the rest are counted."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(result: SimResult) -> str:
    """The report page as a string."""
    s = result.summary()
    title = f"gwlab simulation: {s['duration']:g} s, seed {s['seed']}, {result.scenario.workload.mode} loop"
    headline = _table(
        ["measure", "value"],
        [["offered", s["offered"]], ["admitted", s["admitted"]],
         *[[f"status {code}", n] for code, n in s["codes"].items()],
         ["availability (200 / admitted)", s["availability"]], ["goodput (200 / offered)", s["goodput"]],
         *[[f"latency {k} (s)", v] for k, v in s["latency"].items()],
         ["breaker trips", s["trips"]], ["fallbacks", s["fallbacks"]]],
    )
    providers = _table(
        ["provider", "requests", "share", "200", "502", "504", "trips", "fallbacks", "state at end"],
        [[name, p["requests"], p["share"], p["codes"]["200"], p["codes"]["502"], p["codes"]["504"],
          p["trips"], p["fallbacks"], p["state"]] for name, p in s["providers"].items()],
    )
    shown = result.transitions[:MAX_TRANSITIONS]
    more = len(result.transitions) - len(shown)
    replicas = s.get("replicas", [])
    by_replica = ["replica"] if replicas else []
    transitions = _table([*by_replica, "time (s)", "provider", "from", "to", "cooldown (s)"],
                         [[*([t.replica] if replicas else []), t.time, t.provider, t.source, t.target, t.cooldown]
                          for t in shown])
    if more:
        transitions += f"<p>… and {more} more.</p>"
    if replicas:
        providers += "<h3>Each replica's breakers</h3>" + _table(
            ["replica", "provider", "trips", "fallbacks", "state at end"],
            [[r["replica"], name, p["trips"], p["fallbacks"], p["state"]]
             for r in replicas for name, p in r["providers"].items()])
    chart = pio.to_html(result.figure(), include_plotlyjs=True, full_html=False)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><h2>Summary</h2>{headline}<h2>Providers</h2>{providers}"
        f"<h2>Over time</h2>{chart}<h2>Breaker transitions</h2>{transitions}</body></html>\n"
    )
