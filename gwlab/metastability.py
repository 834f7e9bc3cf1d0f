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
from gwlab.config import ConfigError, Scenario
from gwlab.stats import USER_OUTCOMES
from gwlab.timeseries import TimeSeries
from gwlab.workload import follows_users

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
    problem = _trigger(start, end, sum(b.width for b in series.bins))
    if problem:
        raise ValueError(f"recovery: {problem}")
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


def _trigger(start: float, end: float, span: float) -> str | None:
    """What keeps a run of ``span`` seconds from being judged around a trigger from ``start``
    to ``end`` seconds, or ``None``."""
    if not (config.RECOVERED_FOR <= start < end):
        return f"a trigger from {start!r} to {end!r} s: expected {config.RECOVERED_FOR:g} <= start < end"
    need = end + config.PERSISTS_FOR * (end - start)
    if need > span + 1e-9:
        return (f"the run lasts {span:g} s: expected at least {config.PERSISTS_FOR:g} times the trigger's "
                f"{end - start:g} s after its end, so {need:g} s")
    return None


class Judge:
    """The measure :data:`judge`: a class, so that it carries its own :meth:`check`."""

    def __call__(self, result: SimResult) -> dict[str, Any]:
        """``result`` judged by :func:`recovery` around its trigger, the stretch from its
        scenario's first scripted event to its second: ``trigger`` (its length in seconds),
        ``baseline``, ``persists``, ``recovered`` (whether the run recovered before its end)
        and ``recovered_after`` (seconds, ``None`` when it did not).

        Raises :class:`~gwlab.config.ConfigError` (a :class:`ValueError`) for a run that
        :meth:`check` refuses, and :class:`ValueError` as :func:`recovery` does."""
        series = result.timeseries()
        self.check(result.scenario, result.duration, series.bin_width)
        start, end = result.scenario.events[0].at, result.scenario.events[1].at
        judged = recovery(series, start, end)
        return {"trigger": end - start, "baseline": judged.baseline, "persists": judged.persists,
                "recovered": judged.recovered_after is not None, "recovered_after": judged.recovered_after}

    def check(self, scenario: Scenario, duration: float, bin_width: float, source: str = "scenario") -> None:
        """Raise :class:`~gwlab.config.ConfigError` naming ``source`` when no run of
        ``scenario`` for ``duration`` seconds in bins of ``bin_width`` seconds can be judged,
        whatever happens in it: fewer than two scripted events, a trigger :func:`recovery`
        cannot judge in a run that long, bins that do not divide
        :data:`~gwlab.config.JUDGED_BIN`, or clients that neither time out nor retry (no user
        requests to judge). :func:`gwlab.sweep.sweep` calls it for every point before any
        run."""
        events = scenario.events
        if len(events) < 2:
            raise ConfigError(f"{source}: judge: {len(events)} scripted events: expected a trigger from the first "
                              "to the second")
        problem = _trigger(events[0].at, events[1].at, duration)
        if problem:
            raise ConfigError(f"{source}: judge: {problem}")
        bins = config.JUDGED_BIN / bin_width
        if round(bins) < 1 or not math.isclose(bins, round(bins), rel_tol=1e-9):
            raise ConfigError(f"{source}: judge: bin_width = {bin_width:g}: expected a width that divides the "
                              f"{config.JUDGED_BIN:g} s of the bins judged")
        if not follows_users(scenario.workload):
            w = scenario.workload
            raise ConfigError(f"{source}: judge: workload.retry_policy = {w.retry_policy!r} and workload.timeout = "
                              f"{w.timeout:g}: expected clients that time out or retry, whose user requests are judged")


judge = Judge()
"""A simulated run judged around its trigger (:meth:`Judge.__call__`): a measure for
:func:`gwlab.sweep.sweep`, as in a phase diagram (:func:`gwlab.plots.phase_diagram`), whose
:meth:`Judge.check` the sweep calls for every point before it runs any."""
