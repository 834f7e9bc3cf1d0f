"""A run as a sequence of fixed-width time bins, and the columns read from them.

Each :class:`Bin` keeps what can be added up (requests offered and admitted by arrival time,
a :class:`~gwlab.stats.Tally` of outcomes and latencies by completion time, the integral of
in-flight requests over the bin) and what is read at the bin's end (tokens in the bucket and
its burst, each breaker's state and cooldown left). Because tallies and their latency
histograms merge exactly, :meth:`TimeSeries.resample` builds wider bins whose quantiles are
those of all their requests, not averages of narrower quantiles.

The simulator fills a time series in virtual time; the notebooks' live dashboard can fill one
from the live gateway, and :mod:`gwlab.plots` draws either.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence

from gwlab.breaker import CLOSED, Transition
from gwlab.config import ConfigError
from gwlab.stats import (CLIENT_TIMEOUT, CUT_OFF, QUANTILES, RATE_LIMITED, STREAM_ERROR, USER_OUTCOMES, Tally,
                         admitted, code_name)

if TYPE_CHECKING:
    from gwlab.router import Snapshot

STATUSES = (200, RATE_LIMITED, 502, 504, CUT_OFF)
"""Status codes that get a column (``"200"``, ``"429"``, ...)."""


class BreakerChange(NamedTuple):
    """A breaker moving among healthy, open and half_open: at ``time`` seconds, ``provider``
    went from ``source`` to ``target`` (state names); ``cooldown`` is the new cooldown when
    ``target`` is ``"open"``, else 0; ``replica``: the index of the replica whose breaker it
    is, in a run of several (``None`` for one gateway)."""

    time: float
    provider: str
    source: str
    target: str
    cooldown: float
    replica: int | None = None

    @classmethod
    def from_transition(cls, t: Transition, replica: int | None = None) -> BreakerChange:
        return cls(t.at, t.provider, t.source.value, t.target.value, t.cooldown, replica)

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``replica`` only in a run of several."""
        data = self._asdict()
        if self.replica is None:
            del data["replica"]
        return data


def is_listed(t: Transition) -> bool:
    """Whether a transition is one that a run lists: flips between healthy and failing happen
    many times a second under load and are only counted."""
    return not (t.source in CLOSED and t.target in CLOSED)


@dataclass
class Bin:
    """One time bin ``[start, start + width)``."""

    start: float
    width: float
    offered: int = 0
    """Requests that arrived in the bin."""
    admitted: int = 0
    """Arrivals that got past the rate limiter."""
    tally: Tally = field(default_factory=Tally)
    """Outcomes (and latencies) of requests that completed in the bin."""
    in_flight_area: float = 0.0
    """Integral over the bin of the number of requests in flight (request-seconds)."""
    tokens: float | None = None
    """Tokens in the bucket at the bin's end."""
    breakers: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Each provider's breaker state and cooldown left at the bin's end."""
    burst: float | None = None
    """The bucket's capacity in force at the bin's end (tokens)."""
    slots: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Each provider's calls in a slot and calls waiting for one at the bin's end (providers
    with a capacity)."""

    def read_gauges(self, snapshot: Snapshot) -> None:
        """Take the bin's end-of-bin gauges (tokens, burst, breakers, slots) from the router's ``snapshot``."""
        self.tokens = snapshot.tokens
        self.burst = snapshot.burst
        self.breakers = {name: (p.state.value, p.cooldown_left) for name, p in snapshot.providers.items()}
        self.slots = {name: (p.busy, p.waiting) for name, p in snapshot.providers.items() if p.busy or p.waiting}


class TimeSeries:
    """Bins of equal width (the last may be shorter) over the providers of a run."""

    def __init__(self, bins: Sequence[Bin], providers: Sequence[str], bin_width: float) -> None:
        self.bins = list(bins)
        self.providers = tuple(providers)
        self.bin_width = bin_width

    def __len__(self) -> int:
        return len(self.bins)

    def resample(self, width: float) -> TimeSeries:
        """The same run in bins of ``width`` seconds, a whole multiple of :attr:`bin_width`.
        Counts and in-flight integrals add up, tallies merge, end-of-bin readings come from
        the last bin merged. Raises :class:`~gwlab.config.ConfigError` (a :class:`ValueError`)
        for a ``width`` that is not such a multiple: not a number, infinite, NaN, or <= 0."""
        number = isinstance(width, numbers.Real) and not isinstance(width, bool)
        factor = width / self.bin_width if number and width > 0 else math.nan
        k = round(factor) if math.isfinite(factor) else 0
        if k < 1 or not math.isclose(factor, k, rel_tol=1e-9):
            raise ConfigError(f"timeseries: width = {width!r}: expected a whole multiple of the bin width "
                              f"{self.bin_width!r}")
        if k == 1:
            return self
        merged = []
        for i in range(0, len(self.bins), k):
            group = self.bins[i:i + k]
            out = Bin(group[0].start, sum(b.width for b in group))
            for b in group:
                out.offered += b.offered
                out.admitted += b.admitted
                out.tally.merge(b.tally)
                out.in_flight_area += b.in_flight_area
            out.tokens = group[-1].tokens
            out.burst = group[-1].burst
            out.breakers = dict(group[-1].breakers)
            out.slots = dict(group[-1].slots)
            merged.append(out)
        return TimeSeries(merged, self.providers, self.bin_width * k)

    def columns(self) -> dict[str, list[Any]]:
        """Plain lists, one value per bin:

        ``time`` (bin start), ``width``, ``offered``, ``admitted``; a column per status code
        (``"200"``, ``"429"``, ``"502"``, ``"504"``, ``"499"`` for cut off at the end);
        ``p50``, ``p95``, ``p99`` latency of requests completed in the bin (None when none);
        when the run had LLM traffic (streams, or providers giving tokens): ``stream_error``
        (streams that failed after their first byte), ``ttft_p50``, ``ttft_p95``, ``ttft_p99``
        (time to first token of the streams ended in the bin) and ``output_tokens`` (carried
        by the answers completed in the bin); when a provider had calls in a slot or waiting
        for one at some bin's end, ``NAME.running`` and ``NAME.waiting`` per provider; for
        clients that time out or retry, ``client_timeout`` (attempts given up),
        ``user_requests`` and ``user_ok`` (user requests that ended in the bin, and those
        that succeeded) and ``user_goodput`` (their ratio, None when none ended);
        ``in_flight`` (time average); ``tokens`` and ``burst`` at the bin's end; and per provider ``NAME.calls``
        (admitted requests it answered in the bin), ``NAME.state`` and ``NAME.cooldown`` at the
        bin's end."""
        cols: dict[str, list[Any]] = {"time": [], "width": [], "offered": [], "admitted": []}
        cols.update({str(s): [] for s in STATUSES})
        cols.update({f"p{round(q * 100)}": [] for q in QUANTILES})
        cols.update({"in_flight": [], "tokens": [], "burst": []})
        for name in self.providers:
            cols.update({f"{name}.calls": [], f"{name}.state": [], f"{name}.cooldown": []})
        llm = any(b.tally.ttft.count or b.tally.output_tokens or b.tally.count([STREAM_ERROR]) for b in self.bins)
        if llm:
            cols[code_name(STREAM_ERROR)] = [b.tally.count([STREAM_ERROR]) for b in self.bins]
            for q in QUANTILES:
                cols[f"ttft_p{round(q * 100)}"] = [b.tally.ttft.quantile(q) for b in self.bins]
            cols["output_tokens"] = [b.tally.output_tokens for b in self.bins]
        if any(b.tally.users for b in self.bins):
            cols[code_name(CLIENT_TIMEOUT)] = [b.tally.count([CLIENT_TIMEOUT]) for b in self.bins]
            cols["user_requests"] = [sum(b.tally.users[o] for o in USER_OUTCOMES) for b in self.bins]
            cols["user_ok"] = [b.tally.users["ok"] for b in self.bins]
            cols["user_goodput"] = [ok / n if n else None for ok, n in zip(cols["user_ok"], cols["user_requests"])]
        if any(b.slots for b in self.bins):
            for i, column in enumerate(("running", "waiting")):
                for name in self.providers:
                    cols[f"{name}.{column}"] = [b.slots.get(name, (0, 0))[i] for b in self.bins]
        for b in self.bins:
            cols["time"].append(b.start)
            cols["width"].append(b.width)
            cols["offered"].append(b.offered)
            cols["admitted"].append(b.admitted)
            codes = dict.fromkeys(STATUSES, 0)
            calls = dict.fromkeys(self.providers, 0)
            for (status, provider), n in b.tally.by_status.items():
                codes[status] = codes.get(status, 0) + n
                if provider in calls and admitted(status, provider):
                    calls[provider] += n
            for s in STATUSES:
                cols[str(s)].append(codes[s])
            for q in QUANTILES:
                cols[f"p{round(q * 100)}"].append(b.tally.latency.quantile(q))
            cols["in_flight"].append(b.in_flight_area / b.width if b.width > 0 else 0.0)
            cols["tokens"].append(b.tokens)
            cols["burst"].append(b.burst)
            for name in self.providers:
                state, cooldown = b.breakers.get(name, (None, None))
                cols[f"{name}.calls"].append(calls[name])
                cols[f"{name}.state"].append(state)
                cols[f"{name}.cooldown"].append(cooldown)
        return cols

    def __getitem__(self, column: str) -> list[Any]:
        return self.columns()[column]

    def __iter__(self) -> Iterator[Bin]:
        return iter(self.bins)

    def total(self) -> Tally:
        """Every bin's tally merged: the whole run's outcomes and latencies."""
        out = Tally()
        for b in self.bins:
            out.merge(b.tally)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the bin width, the providers and the columns."""
        return {"bin_width": self.bin_width, "providers": list(self.providers), "columns": self.columns()}

    def to_pandas(self):
        """The columns as a ``pandas.DataFrame`` indexed by bin start time."""
        try:
            import pandas
        except ImportError:
            raise ImportError("TimeSeries.to_pandas() needs pandas, which is not installed: pip install pandas") from None
        return pandas.DataFrame(self.columns()).set_index("time")

