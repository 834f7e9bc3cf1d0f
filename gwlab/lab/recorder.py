"""The live run as a rolling :class:`~gwlab.timeseries.TimeSeries`, for the notebook's charts.

The in-process clients report every request sent and every answer (status, provider,
scheduled send time, answer time, and for LLM traffic a stream's time to first token and
the output tokens), and for clients that time out or retry every user request as it ends;
each counts in the bin of its own time. A sampler closes
a bin once its edge has passed, reading the gateway's tokens, breaker states and requests in
flight at that moment. A busy kernel can hold the sampler back by several bins (it shares
the interpreter with the lab's thread): the bins then close late, one after the other, but
each with its own counts, so the charts never show a stall that did not happen. The bins are the simulator's :class:`Bin` type, so
:mod:`gwlab.plots` draws a live run exactly as it draws a simulated one. Only the last
``window`` seconds are kept.

Times are seconds since ``origin`` (a reading of the gateway's clock). Everything here runs
on the lab's loop thread; readers on other threads take a copy through the lab.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable, Iterable

from gwlab import config
from gwlab.breaker import Transition
from gwlab.clients import book, book_user
from gwlab.router import Snapshot
from gwlab.stats import RATE_LIMITED, Tally
from gwlab.timeseries import Bin, BreakerChange, TimeSeries, is_listed


class Recorder:
    """Rolling bins of ``bin_width`` seconds over the last ``window`` seconds; ``clock`` is
    the gateway's, and its reading now is the origin until :attr:`origin` is set."""

    def __init__(self, providers: Iterable[str], clock: Callable[[], float], *,
                 bin_width: float = config.LAB_BIN_WIDTH, window: float = config.LAB_WINDOW) -> None:
        self.providers = tuple(providers)
        self.clock = clock
        self.origin = clock()
        self.bin_width = bin_width
        self.window = window
        self.bins: deque[Bin] = deque(maxlen=max(1, round(window / bin_width)))
        """The closed bins kept, oldest first."""
        self.open: deque[Bin] = deque([Bin(0.0, bin_width)])
        """The bins not closed yet, oldest first and without gaps: the first is the one the
        sampler closes next, later ones open as answers come after its edge."""
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

    @property
    def current(self) -> Bin:
        """The bin the sampler closes next."""
        return self.open[0]

    def sent(self) -> None:
        """A client sent a request now."""
        self._bin(self.clock()).offered += 1
        self.sent_total += 1

    def saturated(self) -> None:
        """An open-loop arrival was not sent now: the clients' in-flight cap was full."""
        self._saturated_current += 1
        self.saturated_total += 1

    def answered(self, sent: float, done: float, status: int, provider: str, ttft: float | None = None,
                 tokens: int = 0) -> None:
        """A request sent at ``sent`` got ``status`` from ``provider`` at ``done`` (clock
        readings), a stream's first token ``ttft`` seconds after ``sent`` (``None``: not a
        stream, or it did not end) and ``tokens`` output tokens. Its outcome, latency, time
        to first token and tokens count in the bin of ``done``, its admission in the bin of
        ``sent``, while those bins are kept."""
        latency = done - sent
        answered = self._bin(done)
        if answered is not None:
            book(answered.tally, status, provider, latency, ttft, tokens)
        for tap in self.taps:
            book(tap, status, provider, latency, ttft, tokens)
        if status != RATE_LIMITED:
            admitted = self._bin(sent)
            if admitted is not None:
                admitted.admitted += 1

    def user(self, outcome: str, attempts: int) -> None:
        """A user request ended now, ``outcome`` after ``attempts`` attempts: it counts in the
        bin of now, as the simulator counts it."""
        for tally in (self._bin(self.clock()).tally, *self.taps):
            book_user(tally, outcome, attempts)

    def transition(self, t: Transition) -> None:
        """Breaker listener: keep the changes a run lists (see :func:`is_listed`)."""
        if is_listed(t):
            change = BreakerChange.from_transition(t)
            self.transitions.append(change._replace(time=change.time - self.origin))

    def close(self, snapshot: Snapshot) -> None:
        """End the current bin with the gateway's ``snapshot`` (taken at its end, or later
        when the sampler was held back). The in-flight integral is the count at that moment
        times the width."""
        b = self.open.popleft()
        if not self.open:
            self.open.append(Bin(b.start + self.bin_width, self.bin_width))
        b.read_gauges(snapshot)
        b.in_flight_area = snapshot.in_flight * b.width
        self.bins.append(b)
        self.saturated_last, self._saturated_current = self._saturated_current, 0
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
        self.open = deque([Bin(self._index(now) * self.bin_width, self.bin_width)])
        self.version += 1

    def timeseries(self) -> TimeSeries:
        """The closed bins kept, as a time series."""
        return TimeSeries(list(self.bins), self.providers, self.bin_width)

    def _index(self, t: float) -> int:
        return math.floor((t - self.origin) / self.bin_width)

    def _bin(self, t: float) -> Bin | None:
        """The bin of clock reading ``t``: an open one (opening the bins up to it), a closed
        one still kept, or ``None`` for a time before them all."""
        i = self._index(t) - round(self.current.start / self.bin_width)
        while i >= len(self.open):
            self.open.append(Bin(self.open[-1].start + self.bin_width, self.bin_width))
        if i >= 0:
            return self.open[i]
        return self.bins[i] if -i <= len(self.bins) else None
