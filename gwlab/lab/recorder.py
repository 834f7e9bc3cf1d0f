"""The live run as a rolling :class:`~gwlab.timeseries.TimeSeries`, for the notebook's charts.

The in-process clients report every answer (status, provider, scheduled send time, answer
time); a sampler closes a bin at each bin edge, reading the gateway's tokens, breaker states
and requests in flight at that moment. The bins are the simulator's :class:`Bin` type, so
:mod:`gwlab.plots` draws a live run exactly as it draws a simulated one. Only the last
``window`` seconds are kept.

Times are seconds since ``origin`` (a reading of the gateway's clock). Everything here runs
on the lab's loop thread; readers on other threads take a copy through the lab.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Iterable

from gwlab import config
from gwlab.breaker import Transition
from gwlab.router import Snapshot
from gwlab.stats import RATE_LIMITED, Tally
from gwlab.timeseries import Bin, BreakerChange, TimeSeries, is_listed


class Recorder:
    """Rolling bins of ``bin_width`` seconds over the last ``window`` seconds."""

    def __init__(self, providers: Iterable[str], origin: float, *,
                 bin_width: float = config.LAB_BIN_WIDTH, window: float = config.LAB_WINDOW) -> None:
        self.providers = tuple(providers)
        self.origin = origin
        self.bin_width = bin_width
        self.window = window
        self.bins: deque[Bin] = deque(maxlen=max(1, round(window / bin_width)))
        self.current = Bin(0.0, bin_width)
        self.transitions: deque[BreakerChange] = deque()
        self.taps: list[Tally] = []
        """Extra tallies that count every answer while they are here (``Lab.run_for``)."""
        self.sent_total = 0
        """Requests sent since the lab started (never rolls out)."""
        self.saturated_total = 0
        """Open-loop arrivals not sent since the lab started: the clients' cap was full."""
        self.saturated_last = 0
        """Of those, the ones in the last closed bin (the status line's "can't keep up")."""
        self._saturated_current = 0
        self.version = 0
        """Changes whenever a bin closes or the history is cleared."""

    def sent(self) -> None:
        """A client sent a request now."""
        self.current.offered += 1
        self.sent_total += 1

    def saturated(self) -> None:
        """An open-loop arrival was not sent now: the clients' in-flight cap was full."""
        self._saturated_current += 1
        self.saturated_total += 1

    def answered(self, sent: float, done: float, status: int, provider: str) -> None:
        """A request sent at ``sent`` got ``status`` from ``provider`` at ``done`` (clock
        readings). Its outcome and latency count in the current bin, its admission in the bin
        of its sending, if that bin is still kept."""
        latency = done - sent
        self.current.tally.record(status, provider, latency)
        for tap in self.taps:
            tap.record(status, provider, latency)
        if status != RATE_LIMITED:
            start = self._start_of(sent)
            for b in itertools.chain((self.current,), reversed(self.bins)):
                if abs(b.start - start) < self.bin_width / 2:
                    b.admitted += 1
                    break

    def transition(self, t: Transition) -> None:
        """Breaker listener: keep the changes a run lists (see :func:`is_listed`)."""
        if is_listed(t):
            change = BreakerChange.from_transition(t)
            self.transitions.append(change._replace(time=change.time - self.origin))

    def close(self, snapshot: Snapshot) -> None:
        """End the current bin with the gateway's ``snapshot`` taken at its end, and open the
        next one. The in-flight integral is the count at the end times the width."""
        b = self.current
        b.read_gauges(snapshot)
        b.in_flight_area = snapshot.in_flight * b.width
        self.bins.append(b)
        self.saturated_last, self._saturated_current = self._saturated_current, 0
        self.current = Bin(b.start + self.bin_width, self.bin_width)
        horizon = self.current.start - self.window
        while self.transitions and self.transitions[0].time < horizon:
            self.transitions.popleft()
        self.version += 1

    def next_edge(self) -> float:
        """Clock reading at which the current bin ends."""
        return self.origin + self.current.start + self.bin_width

    def clear(self, now: float) -> None:
        """Forget the history; the next bin starts at the bin edge before ``now``."""
        self.bins.clear()
        self.transitions.clear()
        self.saturated_last = self._saturated_current = 0
        self.current = Bin(self._start_of(now), self.bin_width)
        self.version += 1

    def timeseries(self) -> TimeSeries:
        """The closed bins kept, as a time series."""
        return TimeSeries(list(self.bins), self.providers, self.bin_width)

    def _start_of(self, t: float) -> float:
        return math.floor((t - self.origin) / self.bin_width) * self.bin_width
