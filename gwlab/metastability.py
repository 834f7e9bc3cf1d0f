"""Whether a run recovered from a trigger, by DESIGN's definitions ("Retries and fallbacks").

A *trigger* is a stretch ``[start, end)`` of a run during which something went wrong (an
outage, a latency spike). Goodput per user request, the share of the user requests ending
in a bin that succeeded (the time series' ``user_goodput``), is judged in bins of
:data:`~gwlab.config.JUDGED_BIN` seconds against its *baseline*: its level over the
:data:`~gwlab.config.RECOVERED_FOR` seconds before the trigger.

- The storm **persists** when every bin of the :data:`~gwlab.config.PERSISTS_FOR` × (end −
  start) seconds after the trigger stays below :data:`~gwlab.config.COLLAPSED_SHARE` of the
  baseline: the system stays collapsed long after its cause is gone (a metastable failure,
  Bronson et al., HotOS 2021).
- The run has **recovered** at the first bin from which every bin of
  :data:`~gwlab.config.RECOVERED_FOR` seconds holds at least
  :data:`~gwlab.config.RECOVERED_SHARE` of the baseline.

A bin in which no user request ended counts as goodput 0: its users are all still waiting.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

from gwlab import config
from gwlab.stats import USER_OUTCOMES
from gwlab.timeseries import TimeSeries

if TYPE_CHECKING:
    from gwlab.sim import SimResult


class Recovery(NamedTuple):
    """How a run came through a trigger: the ``baseline`` goodput per user request before it;
    ``persists``, whether the storm outlived it as DESIGN defines; ``recovered_after``, the
    seconds from the trigger's end to the start of the first stretch judged recovered
    (``None`` when the run never recovered)."""

    baseline: float
    persists: bool
    recovered_after: float | None


def recovery(series: TimeSeries, start: float, end: float) -> Recovery:
    """Judge ``series`` (a :class:`~gwlab.timeseries.TimeSeries` of a run whose clients time
    out or retry, in bins that divide :data:`~gwlab.config.JUDGED_BIN`) around a trigger from
    ``start`` to ``end`` seconds.

    Raises :class:`ValueError` when the trigger is not a stretch of the run with the
    :data:`~gwlab.config.RECOVERED_FOR` seconds before it, when the run ends before the
    :data:`~gwlab.config.PERSISTS_FOR` × (end − start) seconds after it, or when no user
    request ended before it."""
    length = end - start
    span = sum(b.width for b in series.bins)
    if not (config.RECOVERED_FOR <= start < end):
        raise ValueError(f"recovery: a trigger from {start!r} to {end!r} s: expected "
                         f"{config.RECOVERED_FOR:g} <= start < end")
    if end + config.PERSISTS_FOR * length > span + 1e-9:
        raise ValueError(f"recovery: the run lasts {span:g} s: expected at least {config.PERSISTS_FOR:g} times "
                         f"the trigger's {length:g} s after its end, so {end + config.PERSISTS_FOR * length:g} s")
    bins = series.resample(config.JUDGED_BIN).bins
    ok = [b.tally.users["ok"] for b in bins]
    ended = [sum(b.tally.users[o] for o in USER_OUTCOMES) for b in bins]
    before = [i for i, b in enumerate(bins) if start - config.RECOVERED_FOR <= b.start and b.start + b.width <= start]
    if not sum(ended[i] for i in before):
        raise ValueError("recovery: no user request ended before the trigger: expected clients that time out or retry")
    baseline = sum(ok[i] for i in before) / sum(ended[i] for i in before)
    goodput = [o / n if n else 0.0 for o, n in zip(ok, ended)]
    first = math.ceil(end / config.JUDGED_BIN - 1e-9)  # the first bin after the trigger
    after = range(first, first + math.ceil(config.PERSISTS_FOR * length / config.JUDGED_BIN - 1e-9))
    persists = all(goodput[i] < config.COLLAPSED_SHARE * baseline for i in after)
    stretch = math.ceil(config.RECOVERED_FOR / config.JUDGED_BIN - 1e-9)
    recovered_after = None
    for i in range(first, len(bins) - stretch + 1):
        if all(bins[j].width == config.JUDGED_BIN and goodput[j] >= config.RECOVERED_SHARE * baseline
               for j in range(i, i + stretch)):
            recovered_after = bins[i].start - end
            break
    return Recovery(baseline, persists, recovered_after)


def judge(result: SimResult) -> dict[str, Any]:
    """A simulated run judged by :func:`recovery` around its trigger, the stretch from its
    scenario's first scripted event to its second: ``trigger`` (its length in seconds),
    ``baseline``, ``persists``, ``recovered`` (whether the run recovered before its end) and
    ``recovered_after`` (seconds, ``None`` when it did not). A measure for
    :func:`gwlab.sweep.sweep`, as in a phase diagram (:func:`gwlab.plots.phase_diagram`).

    Raises :class:`ValueError` for a scenario with fewer than two events, or as
    :func:`recovery` does."""
    events = result.scenario.events
    if len(events) < 2:
        raise ValueError(f"judge: {len(events)} scripted events: expected a trigger from the first to the second")
    start, end = events[0].at, events[1].at
    judged = recovery(result.timeseries(), start, end)
    return {"trigger": end - start, "baseline": judged.baseline, "persists": judged.persists,
            "recovered": judged.recovered_after is not None, "recovered_after": judged.recovered_after}
