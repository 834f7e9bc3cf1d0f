"""Scripted events: checked at load time, then played by every shell in the same way.

A scenario's ``events`` are patches. :func:`steps` works out, once, the scenario each event
leads to when the events apply one after another to the starting scenario; the shells use it
to check a run before it starts (the simulator's zero-time cycles, the load generator's
worker count).

While a run goes, a :class:`Player` applies each event at its time as a patch on the
scenario *in force then*, so a runtime change made between two events (``PATCH
/admin/config``, a slider, ``lab.configure``) is kept. An event that no longer fits that
scenario is refused: logged at WARNING in one line naming the event and the reason, counted
in :attr:`Player.refused`, and the later events still apply. The simulator, ``gwlab run``
and the lab all play their events through a :class:`Player`; the player never reads a clock
(it is told the time), and :func:`follow` paces it on a real one for the live shells.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from gwlab import config, workload
from gwlab.config import ConfigError, Event, Scenario

log = logging.getLogger(__name__)


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
    for i, event in enumerate(_in_order(scenario.events)):
        if not event.at >= 0:
            raise ConfigError(f"{source}: events[{i}].at = {event.at!r}: expected a time in seconds >= 0")
        current = config.merge(current, event.patch, _source(source, event.at))
        result.append(Step(event.at, event.patch, current))
    return tuple(result)


def describe(event: Event) -> str:
    """One line naming a scripted event and what it changes, e.g.
    ``event at 60 s: providers.p1.outage = 'error'``."""
    changes = ", ".join(f"{key} = {value!r}" for key, value in _dotted(config.shown(event.patch)))
    return f"event at {event.at:g} s: {changes}"


Apply = Callable[[Event, str], object]
"""A shell's way to apply one event now: merge ``event.patch`` into the scenario in force
(raising :class:`ConfigError`, naming the source given, when it does not fit) and carry the
result out."""


class Player:
    """The scripted events of ``scenario``, applied by ``apply`` as their times come.

    ``apply(event, source)`` is the shell's own runtime change (the gateway's or the
    simulated router's ``configure`` with the event's patch, and the clients' workload);
    ``source`` names the event in its error messages."""

    def __init__(self, scenario: Scenario, apply: Apply, source: str = "scenario") -> None:
        self.events = _in_order(scenario.events)
        self.apply = apply
        self.source = source
        self.refused = 0
        """Events that did not fit the scenario in force at their time, and were skipped."""
        self._next = 0

    @property
    def next_at(self) -> float:
        """The time of the next event still to play (infinity when none is left)."""
        return self.events[self._next].at if self._next < len(self.events) else math.inf

    def schedule(self, event: Event) -> None:
        """Play ``event`` at its time as well, after the events at that time already to play
        (a change made while the run goes, as a virtual lab's ``configure`` at its now).
        The events played so far are forgotten."""
        rest = self.events[self._next:]
        at = bisect.bisect_right([e.at for e in rest], event.at)
        self.events = (*rest[:at], event, *rest[at:])
        self._next = 0

    def play(self, now: float) -> list[Event]:
        """Apply, in order, every event due by ``now`` and not played before; return those
        applied. A refused one is logged and counted, and the next ones still apply."""
        applied = []
        while self._next < len(self.events) and self.events[self._next].at <= now:
            event = self.events[self._next]
            self._next += 1
            try:
                self.apply(event, _source(self.source, event.at))
            except ConfigError as exc:
                self.refused += 1
                log.warning("%s: not applied: %s", describe(event), exc)
                continue
            log.info("%s", describe(event))
            applied.append(event)
        return applied


async def follow(player: Player, clock: Callable[[], float], origin: float) -> None:
    """Play every event of ``player`` at its time on ``clock``, in seconds since ``origin``
    (a reading of that clock): the live shells' way to play events."""
    while (at := player.next_at) < math.inf:
        await asyncio.sleep(max(0.0, origin + at - clock()))
        if clock() >= origin + at:  # compared on the clock: ``clock() - origin`` may round below ``at``
            player.play(at)


def states(scenario: Scenario, source: str = "scenario") -> Iterator[tuple[Scenario, str]]:
    """``scenario`` at its start, then after each of its events (:func:`steps`), each with
    the source that names it in messages (``source``, then ``source: event at T s``): the
    states a run passes through while no runtime change is made. Raises as :func:`steps`."""
    yield scenario, source
    for step in steps(scenario, source):
        yield step.scenario, _source(source, step.at)


def follows_users(scenario: Scenario) -> bool:
    """Whether the clients time out or retry (:func:`gwlab.workload.follows_users`) at the
    start of ``scenario`` or after any of its events, each applied as a :class:`Player`
    applies it (one that does not fit is skipped). A run follows its user requests from its
    start then, whichever event switches them on, so that its user outcomes and attempts
    count every request it sent."""
    current = scenario
    followed = workload.follows_users(current.workload)
    for event in _in_order(scenario.events):
        try:
            current = config.merge(current, event.patch, "")
        except ConfigError:
            continue
        followed = followed or workload.follows_users(current.workload)
    return followed


def check_reservations(scenario: Scenario, source: str = "scenario") -> None:
    """:func:`gwlab.workload.check_reservation` for every state of ``scenario``
    (:func:`states`), as ``gwlab simulate`` and a virtual lab check it: what ``gwlab run``
    and a live lab check before they start."""
    for state, where in states(scenario, source):
        workload.check_reservation(state, where)


def _in_order(events: tuple[Event, ...]) -> tuple[Event, ...]:
    """Events in time order; events at the same time in the order given."""
    return tuple(sorted(events, key=lambda e: e.at))


def _source(source: str, at: float) -> str:
    """How messages name the event at ``at`` seconds of ``source``."""
    return f"{source}: event at {at:g} s"


def _dotted(patch: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in patch.items():
        if isinstance(value, Mapping):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
