"""Scripted events as a sequence of whole scenarios over time.

A scenario's ``events`` are patches applied one after another: the event at 60 s changes
the scenario as it stands after every earlier event, not the original one. :func:`steps`
works that out once, validating each result, so a shell only has to switch to the next
scenario when its clock reaches the step's time. The simulator does that on its event heap
and the live ``gwlab run`` on the wall clock; both read the same steps, so one scenario file
can be watched live and replayed at speed.

Nothing here reads a clock: :class:`Timeline` is told the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from gwlab import config
from gwlab.config import ConfigError, Scenario


@dataclass(frozen=True)
class Step:
    """From ``at`` seconds on, ``scenario`` is in force; ``patch`` is the event that made it."""

    at: float
    patch: Mapping[str, Any]
    scenario: Scenario


def steps(scenario: Scenario, source: str = "scenario") -> tuple[Step, ...]:
    """Every scripted event of ``scenario`` with the cumulative scenario it leads to, in time
    order (events at the same time in the order given). Raises :class:`ConfigError` for an
    event at a negative time or a patch that does not fit the scenario at that point."""
    current = scenario
    result = []
    for i, event in enumerate(sorted(scenario.events, key=lambda e: e.at)):
        if not event.at >= 0:
            raise ConfigError(f"{source}: events[{i}].at = {event.at!r}: expected a time in seconds >= 0")
        current = config.merge(current, event.patch, f"{source}: event at {event.at:g} s")
        result.append(Step(event.at, event.patch, current))
    return tuple(result)


class Timeline:
    """The scenarios of a run over time, for a shell that learns the time as it goes."""

    def __init__(self, scenario: Scenario, source: str = "scenario") -> None:
        self.initial = scenario
        self.steps = steps(scenario, source)
        self._next = 0

    def scenario_at(self, t: float) -> Scenario:
        """The scenario in force at ``t`` seconds (a step applies from its time on)."""
        current = self.initial
        for step in self.steps:
            if step.at > t:
                break
            current = step.scenario
        return current

    def due(self, now: float) -> list[Step]:
        """The steps whose time has come by ``now`` and that were not returned before."""
        start = self._next
        while self._next < len(self.steps) and self.steps[self._next].at <= now:
            self._next += 1
        return list(self.steps[start:self._next])
