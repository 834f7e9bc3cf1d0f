"""Discrete-event simulation of the gateway in virtual time.

The simulator owns only the scheduling. Every request goes through the same
:class:`~gwlab.router.Router` as the live gateway: ``router.handle(now)`` admits or rejects it
and decides the provider call, the simulator schedules the call's end ``call.duration`` later
and then hands it back with ``router.complete(route, t)``. Breaker changes arrive through the
router's listeners. Clients follow :mod:`gwlab.workload` and scripted events follow
:mod:`gwlab.timeline`.

Events wait on a binary heap of ``(time, sequence, kind, payload)``; the sequence number
breaks ties, so two events at the same instant run in the order they were scheduled and
payloads are never compared. Open-loop arrivals do not need the heap: the next one is kept
aside and compared with the heap's top. All randomness comes from named streams of one seed,
so the same scenario and seed give the same run, byte for byte, in any process.

Memory does not grow with the number of requests: outcomes are counted per time bin (see
:mod:`gwlab.timeseries`), and each request is kept only when asked (``keep_requests``).
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from gwlab import config, stats, timeline, workload
from gwlab.breaker import State, Transition
from gwlab.config import ConfigError, Scenario
from gwlab.router import Rejected, Router
from gwlab.streams import stream
from gwlab.timeseries import Bin, BreakerChange, TimeSeries, is_listed

_SEND, _DONE, _STEP = 0, 1, 2
_PROGRESS_INTERVAL = 0.1
"""Wall-clock seconds between two progress reports."""


class Request(NamedTuple):
    """One simulated request (kept only with ``keep_requests=True``). ``sent`` is its arrival
    time, ``done`` the time of its answer; ``latency`` is the provider call's duration (0 for
    a 429). ``provider`` is ``"none"`` for a 429 and for a request cut off at the end (499)."""

    sent: float
    done: float
    provider: str
    status: int
    latency: float
    fallback: bool


class SimResult:
    """What a simulation produced: counts per time bin, breaker transitions, the summary."""

    def __init__(self, scenario: Scenario, seed: int, duration: float, series: TimeSeries,
                 transitions: list[BreakerChange], flips: dict[str, int], fallbacks: dict[str, int],
                 states: dict[str, str], requests: list[Request] | None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.duration = duration
        self.transitions = transitions
        """Breaker changes among healthy, open and half_open, in time order."""
        self.flips = flips
        """Per provider, how many healthy <-> failing changes happened (counted, not listed)."""
        self.requests = requests
        """Every request in order of its answer, or ``None`` unless ``keep_requests``."""
        self._series = series
        self._fallbacks = fallbacks
        self._states = states

    def summary(self) -> dict[str, Any]:
        """The run summary in the schema of ``gwlab run --json`` (:func:`gwlab.stats.summary`),
        plus ``mode`` ("simulated"), ``seed`` and ``scenario``."""
        trips = Counter(t.provider for t in self.transitions if t.target == State.OPEN.value)
        out = stats.summary(self._series.total(), self.duration, self._series.providers, trips,
                            self._fallbacks, self._states)
        out.update(mode="simulated", seed=self.seed, scenario=self.scenario.to_dict())
        return out

    def timeseries(self, width: float | None = None) -> TimeSeries:
        """The run per time bin; ``width`` (a whole multiple of the simulation's bin width)
        merges bins into wider ones."""
        return self._series if width is None else self._series.resample(width)

    def figure(self):
        """A Plotly figure of the run (see :func:`gwlab.plots.figure`)."""
        from gwlab import plots

        return plots.figure(self._series, self.transitions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "timeseries": self._series.to_dict(),
            "transitions": [t._asdict() for t in self.transitions],
            "flips": dict(self.flips),
        }

    def to_json(self) -> str:
        """Summary, time series and transitions as JSON with sorted keys: the same scenario
        and seed give the same text, byte for byte."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)


def simulate(
    scenario: Scenario | Mapping[str, Any] | str | Path | None = None,
    duration: float = config.SIM_DURATION,
    seed: int = config.SEED,
    *,
    bin_width: float = config.BIN_WIDTH,
    keep_requests: bool = False,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Run ``scenario`` for ``duration`` simulated seconds.

    ``scenario`` is a :class:`~gwlab.config.Scenario`, plain data in the TOML shape, the path
    of a TOML file, or ``None`` for the seed scenario. Outcomes are counted in bins of
    ``bin_width`` seconds; ``progress`` is called with the fraction done (0..1) at most
    about ten times per wall-clock second, and with 1.0 at the end.
    Raises :class:`~gwlab.config.ConfigError` for bad input, naming it."""
    scenario = _as_scenario(scenario)
    duration = config.run_argument("duration", duration, "simulate: duration")
    bin_width = config.run_argument("bin_width", bin_width, "simulate: bin_width")
    seed = config.run_argument("seed", seed, "simulate: seed")
    if duration > config.MAX_BINS * bin_width:
        raise ConfigError(f"simulate: duration = {duration:g}: expected at most {config.MAX_BINS} bins of "
                          f"bin_width = {bin_width:g} s, so <= {config.MAX_BINS * bin_width:g}")
    plan = timeline.steps(scenario)
    _check_cycle(scenario, "scenario")
    for step in plan:
        _check_cycle(step.scenario, f"scenario: event at {step.at:g} s")
    return _Engine(scenario, seed, duration, bin_width, keep_requests, progress).run(plan)


def _as_scenario(scenario: Scenario | Mapping[str, Any] | str | Path | None) -> Scenario:
    if scenario is None:
        return Scenario()
    if isinstance(scenario, Scenario):
        config.check(scenario)
        return scenario
    if isinstance(scenario, Mapping):
        return config.from_dict(scenario)
    if isinstance(scenario, (str, Path)):
        return config.load(scenario)
    raise ConfigError(f"simulate: scenario = {type(scenario).__name__}: expected a Scenario, a dict, a TOML path or None")


def _check_cycle(s: Scenario, source: str) -> None:
    """A closed-loop client with no think time sends again as soon as it is answered; if a
    provider it may be sent to can answer in zero time, virtual time would stand still."""
    if s.workload.mode != "closed" or s.workload.think_time > 0:
        return
    for p in s.providers:
        if p.weight > 0 and p.outage != "hang" and p.distribution in ("fixed", "exponential") and p.latency == 0:
            raise ConfigError(
                f"{source}: providers.{p.name}.latency = 0 ({p.distribution}) with workload.think_time = 0: "
                "a closed-loop client could send again in zero time; expected a latency > 0 or a think_time > 0"
            )


class _Engine:
    """One simulation run. The event loop keeps its hot state in local variables."""

    def __init__(self, scenario: Scenario, seed: int, duration: float, bin_width: float,
                 keep_requests: bool, progress: Callable[[float], None] | None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.duration = duration
        self.bin_width = bin_width
        self.keep = keep_requests
        self.progress = progress
        self.transitions: list[BreakerChange] = []
        self.flips: Counter[str] = Counter()
        self.router = Router(scenario, seed, 0.0, listeners=[self._on_transition])
        self.names = [u.name for u in self.router.upstreams]
        self.bins: list[Bin] = []
        self.bin_count = max(1, math.ceil(duration / bin_width))
        if (self.bin_count - 1) * bin_width >= duration:
            self.bin_count -= 1
        self._wall = time.monotonic()

    def _on_transition(self, t: Transition) -> None:
        if is_listed(t):
            self.transitions.append(BreakerChange.from_transition(t))
        else:
            self.flips[t.provider] += 1

    def _edge(self, index: int) -> float:
        return min((index + 1) * self.bin_width, self.duration)

    def _close(self, b: Bin, at: float, offered: int, admitted: int, in_flight_area: float) -> Bin | None:
        """Close ``b`` at ``at`` with its counts, read its end-of-bin gauges and open the next
        bin, if any."""
        b.offered, b.admitted, b.in_flight_area = offered, admitted, in_flight_area
        router = self.router
        router.settle(at)
        b.tokens = router.bucket.tokens(at)
        b.breakers = {u.name: (u.breaker.state(at).value, u.breaker.cooldown_left(at)) for u in router.upstreams}
        if self.progress is not None:
            wall = time.monotonic()
            if wall - self._wall >= _PROGRESS_INTERVAL:
                self._wall = wall
                self.progress(at / self.duration)
        index = len(self.bins)
        if index >= self.bin_count:
            return None
        nxt = Bin(index * self.bin_width, self._edge(index) - index * self.bin_width)
        self.bins.append(nxt)
        return nxt

    def run(self, plan: tuple[timeline.Step, ...]) -> SimResult:
        router = self.router
        handle, complete = router.handle, router.complete
        push, pop = heapq.heappush, heapq.heappop
        next_arrival, pause_after = workload.next_arrival, workload.pause_after
        keep = self.keep
        requests: list[Request] | None = [] if keep else None
        end = self.duration
        fallbacks: Counter[str] = Counter()
        rejected_key = (stats.RATE_LIMITED, stats.NO_PROVIDER)

        heap: list[tuple[float, int, int, Any]] = []
        seq = 0
        for step in plan:
            if step.at < end:
                push(heap, (step.at, seq, _STEP, step))
                seq += 1

        w = self.scenario.workload
        arrivals = stream(self.seed, "arrivals")
        open_loop = w.mode == "open"
        rate = w.rate
        think = w.think_time
        arrival = next_arrival(0.0, rate, arrivals) if open_loop else math.inf
        arrival_seq = seq
        seq += 1
        clients = 0  # closed-loop clients running (including those about to retire)
        retiring = 0
        if not open_loop:
            for _ in range(w.clients):
                push(heap, (0.0, seq, _SEND, True))
                seq += 1
            clients = w.clients

        cur = Bin(0.0, self._edge(0))
        self.bins.append(cur)
        edge = self._edge(0)
        by_status, hist_add = cur.tally.by_status, cur.tally.latency.add
        offered = admitted = in_flight = 0
        area = 0.0
        last = 0.0

        while True:
            if open_loop and (not heap or arrival < heap[0][0] or (arrival == heap[0][0] and arrival_seq < heap[0][1])):
                now, kind, payload = arrival, _SEND, False
                if now >= end:
                    break
                arrival = next_arrival(now, rate, arrivals)
                arrival_seq = seq
                seq += 1
            elif heap:
                if heap[0][0] >= end:
                    break
                now, _, kind, payload = pop(heap)
            else:
                break

            while now >= edge:
                cur = self._close(cur, edge, offered, admitted, area + in_flight * (edge - last))
                offered = admitted = 0
                area, last = 0.0, edge
                edge = self._edge(len(self.bins) - 1)
                by_status, hist_add = cur.tally.by_status, cur.tally.latency.add

            if kind == _SEND:  # payload: whether a closed-loop client sends it
                offered += 1
                route = handle(now)
                if route.__class__ is Rejected:
                    by_status[rejected_key] += 1
                    if keep:
                        requests.append(Request(now, now, stats.NO_PROVIDER, stats.RATE_LIMITED, 0.0, False))
                    if payload:
                        if retiring:
                            retiring -= 1
                            clients -= 1
                        else:
                            push(heap, (now + pause_after(stats.RATE_LIMITED, route.retry_after, think), seq, _SEND, True))
                            seq += 1
                    continue
                admitted += 1
                area += in_flight * (now - last)
                last = now
                in_flight += 1
                if route.fallback:
                    fallbacks[route.upstream.name] += 1
                push(heap, (now + route.call.duration, seq, _DONE, (route, now, payload)))
                seq += 1
            elif kind == _DONE:
                route, sent, client = payload
                area += in_flight * (now - last)
                last = now
                in_flight -= 1
                status = complete(route, now)
                name = route.upstream.name
                by_status[status, name] += 1
                latency = route.call.duration
                hist_add(latency)
                if keep:
                    requests.append(Request(sent, now, name, status, latency, route.fallback))
                if client:
                    if retiring:
                        retiring -= 1
                        clients -= 1
                    else:
                        push(heap, (now + pause_after(status, 0.0, think), seq, _SEND, True))
                        seq += 1
            else:
                router.configure(payload.scenario, now)
                w = payload.scenario.workload
                think = w.think_time
                was_open, open_loop = open_loop, w.mode == "open"
                if open_loop and (not was_open or w.rate != rate):
                    # Poisson arrivals are memoryless: the next one may be drawn afresh from now.
                    arrival = next_arrival(now, w.rate, arrivals)
                    arrival_seq = seq
                    seq += 1
                rate = w.rate
                wanted = 0 if open_loop else w.clients
                more = wanted - (clients - retiring)
                if more > 0:
                    revived = min(more, retiring)
                    retiring -= revived
                    for _ in range(more - revived):
                        push(heap, (now, seq, _SEND, True))
                        seq += 1
                    clients += more - revived
                elif more < 0:
                    retiring -= more

        while True:
            if len(self.bins) == self.bin_count:
                # Requests still in flight at the end are cut off, as a live run does when it
                # stops; they count in the last bin.
                for _, _, kind, payload in heap:
                    if kind == _DONE:
                        route, sent, _ = payload
                        cur.tally.by_status[stats.CUT_OFF, stats.NO_PROVIDER] += 1
                        if keep:
                            requests.append(Request(sent, end, stats.NO_PROVIDER, stats.CUT_OFF, 0.0, route.fallback))
            cur = self._close(cur, edge, offered, admitted, area + in_flight * (edge - last))
            offered = admitted = 0
            area, last = 0.0, edge
            if cur is None:
                break
            edge = self._edge(len(self.bins) - 1)
        if self.progress is not None:
            self.progress(1.0)

        self.transitions.sort(key=lambda t: t.time)
        series = TimeSeries(self.bins, self.names, self.bin_width)
        states = {u.name: u.breaker.state(end).value for u in router.upstreams}
        return SimResult(self.scenario, self.seed, end, series, self.transitions, dict(sorted(self.flips.items())),
                         dict(fallbacks), states, requests)
