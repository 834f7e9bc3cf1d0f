"""Discrete-event simulation of the gateway in virtual time.

The simulator owns only the scheduling. Every request goes through the same
:class:`~gwlab.router.Router` as the live gateway: ``router.admit(now, tokens)`` admits or rejects it,
``router.route(now)`` decides the provider call, the simulator schedules the call's end
``call.duration`` later and then hands it back with ``router.complete(route, t, outcome)``,
the outcome the call decided. With a tokens-per-minute limit (``limiter.tpm``), each request
reserves ``workload.prompt_tokens`` and its ``max_tokens`` (or ``limiter.default_max_tokens``)
as it is admitted, and ``router.refund(route, t, used)`` settles what its answer used: the
prompt, and the tokens of the reply for a 200 (the call's, or the provider's fixed reply) or
those sent before a mid-stream error. Breaker changes arrive through
:meth:`Router.subscribe`. Clients follow :mod:`gwlab.workload`; scripted events are played by
a :class:`gwlab.timeline.Player`, as in the live shells.

Events wait on a binary heap of ``(time, sequence, ...)``; the sequence number breaks ties,
so two events at the same instant run in the order they were scheduled and the rest of an
entry is never compared. Open-loop arrivals and scripted events do not need the heap: the
next one of each is kept aside and compared with the heap's top.

Virtual time must always move on: a closed-loop client's next request is scheduled strictly
after its previous one (so a 429 is never retried at the instant it was given, nor a call
that took no time repeated with no think time); anything else raises :class:`Stuck`, naming
the scenario and the time, instead of running for ever. All randomness comes from named streams of one seed,
so the same scenario and seed give the same run, byte for byte, in any process.

Open-loop arrivals follow the live clients' cap: one that finds the workload's
``max_in_flight`` requests in flight is not sent and counts as saturated.

Memory does not grow with the number of requests: outcomes are counted per time bin (see
:mod:`gwlab.timeseries`), and each request is kept only when asked (``keep_requests``).
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Generator, Mapping, NamedTuple, Sequence

from gwlab import config, stats, timeline, workload
from gwlab.breaker import Transition
from gwlab.config import ConfigError, Event, Scenario
from gwlab.retry import AdaptiveThrottle
from gwlab.fleet import Fleet
from gwlab.router import Attempts, Rejected, Route, Router
from gwlab.streams import stream
from gwlab.summary import Trips, summarise
from gwlab.timeseries import Bin, BreakerChange, TimeSeries, is_listed
from gwlab.upstream import Upstream
from gwlab.wire import reply

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
    ttft: float | None = None
    """A stream's time to first token from its arrival, as the summary counts it; ``None``
    for an answer that came whole, or none."""
    tokens: int = 0
    """The output tokens of an answer, as the summary counts them (LLM traffic only)."""


class _User:
    """A user request of clients that time out or retry: ``closed`` whether a closed-loop
    client waits for it, its ``retry`` decisions, whether it ``streaming``, the attempt it
    waits for (``current``, ``None`` between attempts) and how many it sent (``attempts``)."""

    __slots__ = ("closed", "retry", "streaming", "current", "attempts")

    def __init__(self, closed: bool, retry: workload.ClientRetry, streaming: bool) -> None:
        self.closed, self.retry, self.streaming = closed, retry, streaming
        self.current: _Try | None = None
        self.attempts = 0


class _Try:
    """One attempt of a :class:`_User`'s request: its heap events carry it, so that an answer
    or a timeout can tell whether its user still waits for it."""

    __slots__ = ("user",)

    def __init__(self, user: _User) -> None:
        self.user = user


class _LocalRejection(NamedTuple):
    """An attempt its client's adaptive throttling rejected: it never reaches the gateway."""

    status: int = -1
    retry_after: float = 0.0


_THROTTLED = _LocalRejection()

_FIRST = object()
"""The first attempt of a request the gateway may retry, routed without its
:class:`~gwlab.router.Attempts`: they are made only if it fails (most do not), by
:meth:`~gwlab.router.Attempts.after_first`."""


class _Pending:
    """The latencies and stream timings of the answers in the open bin, kept until it closes
    or the run pauses and then counted into its tally in one pass (:meth:`into`): counted
    one at a time, each was a Python call per answer. Nothing outside the engine reads a
    bin before either."""

    __slots__ = ("latencies", "ttfts", "tpots")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.tpots: list[float] = []
        """Of each stream of two tokens or more (:func:`gwlab.stats.time_per_output_token`)."""

    def into(self, tally: stats.Tally) -> None:
        """Count everything kept into ``tally``, in the order it came, and start afresh."""
        for values, histogram in ((self.latencies, tally.latency), (self.ttfts, tally.ttft), (self.tpots, tally.tpot)):
            histogram.add_all(values)
            values.clear()


class SimResult:
    """What a simulation produced: counts per time bin, breaker transitions, the summary."""

    def __init__(self, scenario: Scenario, seed: int, duration: float, series: TimeSeries,
                 transitions: list[BreakerChange], flips: dict[str, int], run: dict[str, Any],
                 requests: list[Request] | None) -> None:
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
        self._run = run
        """What the summary needs besides the counts (:func:`gwlab.summary.summarise`)."""

    def summary(self) -> dict[str, Any]:
        """The run summary (:func:`gwlab.summary.summarise`, the schema of ``gwlab run
        --json``), with ``mode`` "simulated"."""
        return summarise(self._series.total(), **self._run)

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
            "transitions": [t.to_dict() for t in self.transitions],
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
    replicas: int = config.REPLICAS,
    source: str | None = None,
) -> SimResult:
    """Run ``scenario`` for ``duration`` simulated seconds.

    ``scenario`` is a :class:`~gwlab.config.Scenario`, plain data in the TOML shape, the path
    of a TOML file, or ``None`` for the seed scenario. Outcomes are counted in bins of
    ``bin_width`` seconds; ``progress`` is called with the fraction done (0..1) at most
    about ten times per wall-clock second, and with 1.0 at the end.

    ``replicas`` gateways (:class:`gwlab.fleet.Fleet`) share the providers, each request
    reaching one of them drawn uniformly from the named stream ``replicas``; with
    ``limiter.backend = "redis"`` they admit with one bucket, else each with its own. The
    summary then lists each replica's breakers (``replicas``), and the time series shows
    each provider in the least available state any replica has it in.
    Raises :class:`~gwlab.config.ConfigError` for bad input, naming it: the scenario by
    ``source`` (by default its file's path, or ``scenario``), which also starts the warnings
    about its events."""
    if source is None:
        source = str(scenario) if isinstance(scenario, (str, Path)) else "scenario"
    scenario = as_scenario(scenario, source)
    duration, bin_width = run_arguments(duration, bin_width, "simulate")
    seed = config.run_argument("seed", seed, "simulate: seed")
    replicas = config.run_argument("replicas", replicas, "simulate: replicas")
    keep_requests = config.run_argument("keep_requests", keep_requests, "simulate: keep_requests")
    if progress is not None and not callable(progress):
        raise ConfigError(f"simulate: progress = {config.shown_value(progress)}: expected a function called with "
                          "the fraction done, or None")
    check_runnable(scenario, source)
    return _Engine(scenario, source, seed, duration, bin_width, keep_requests, progress, replicas).advance(duration)


def run_arguments(duration: float, bin_width: float, where: str) -> tuple[float, float]:
    """``duration`` and ``bin_width`` as :func:`simulate` takes them (floats within
    :data:`gwlab.config.RUN_RANGES`, and at most :data:`gwlab.config.MAX_BINS` bins); raises
    :class:`~gwlab.config.ConfigError` "``where``: duration = ..." otherwise."""
    duration = config.run_argument("duration", duration, f"{where}: duration")
    bin_width = config.run_argument("bin_width", bin_width, f"{where}: bin_width")
    if duration > config.MAX_BINS * bin_width:
        raise ConfigError(f"{where}: duration = {duration:g}: expected at most {config.MAX_BINS} bins of "
                          f"bin_width = {bin_width:g} s, so <= {config.MAX_BINS * bin_width:g}")
    return duration, bin_width


def check_runnable(scenario: Scenario, source: str = "scenario") -> None:
    """Raise :class:`~gwlab.config.ConfigError`, naming ``source``, if :func:`simulate` would
    refuse ``scenario`` for more than a field's value: at its start or after any of its
    events, a closed loop that could stand still in virtual time, or requests that no
    tokens limit could ever admit, or a real upstream (``kind = "openai"``, which
    cannot change at runtime)."""
    for state, where in timeline.states(scenario, source):
        check_state(state, where)


def check_state(scenario: Scenario, source: str = "scenario") -> None:
    """Raise :class:`~gwlab.config.ConfigError`, naming ``source``, if the simulator could not
    run on from ``scenario`` once it is in force (its events aside): a real upstream, a closed
    loop that could stand still in virtual time, or requests that no tokens limit could ever
    admit. A virtual lab checks every change with it before applying it."""
    for p in scenario.providers:
        if p.kind != "simulated":
            raise ConfigError(f"{source}: providers.{p.name}.kind = {p.kind!r}: a real upstream cannot be simulated "
                              "(it answers in real time, not virtual); expected 'simulated', or run it live with "
                              "gwlab serve or gwlab run")
    _check_cycle(scenario, source)
    workload.check_reservation(scenario, source)


class Stuck(RuntimeError):
    """Virtual time would stand still: a closed-loop client's next request was scheduled at
    or before its previous one. A bug, in the engine or in what validation let through."""


def as_scenario(scenario: Scenario | Mapping[str, Any] | str | Path | None, source: str = "scenario") -> Scenario:
    """What :func:`simulate` accepts as its scenario (a :class:`~gwlab.config.Scenario`, plain
    data in the TOML shape, a TOML file's path or ``None`` for the seed), as a checked
    :class:`~gwlab.config.Scenario`. Raises :class:`~gwlab.config.ConfigError` naming
    ``source`` (a file, its path)."""
    if scenario is None:
        return Scenario()
    if isinstance(scenario, Scenario):
        config.check(scenario, source)
        return scenario
    if isinstance(scenario, Mapping):
        return config.from_dict(scenario, source)
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


def _admitters(routers: Sequence[Router], reserve: int) -> list[Callable[[float, int], Rejected | None]]:
    """What admits a request reserving ``reserve`` tokens at each of ``routers``: its
    :meth:`~gwlab.router.Router.admit`, or, for a request that reserves none (no tokens limit
    is on), its admission's own ``admit``. Such a request is never oversized, the one check
    :meth:`~gwlab.router.Router.admit` makes before asking its admission, so the admission
    decides alone: one call less for every request."""
    return [router.admit if reserve else router.admission.admit for router in routers]


class _Engine:
    """One simulation run. The event loop keeps its hot state in local variables, in a
    generator: :meth:`advance` runs it to a given virtual time and it pauses there, keeping
    that state, until the next call. ``duration`` may be infinite (an open-ended run, as a
    virtual lab's): ``window`` then bounds the bins kept, and the run never ends.

    Every entry of the heap is ``(time, sequence, route, sent, client)``: a request's next
    moment, its sending when ``route`` is ``None`` and its answer otherwise; ``sent`` is when
    it was sent and ``client`` whether a closed-loop client waits for it. Open-loop arrivals
    and scripted events are kept beside the heap, each as the time of the next one; at equal
    times a scripted event comes first, then the heap's entry or the arrival scheduled first.

    With clients that time out or retry (:func:`~gwlab.workload.follows_users`), ``client``
    is the request's :class:`_Try` instead (a :class:`_User` in a sending entry: the user
    request's next attempt), and an entry whose ``route`` is a :class:`_Try` is that
    attempt's client timeout."""

    def __init__(self, scenario: Scenario, source: str, seed: int, duration: float, bin_width: float,
                 keep_requests: bool, progress: Callable[[float], None] | None, replicas: int,
                 window: int | None = None) -> None:
        self.scenario = scenario
        self.source = source
        self.seed = seed
        self.duration = duration
        self.bin_width = bin_width
        self.keep = keep_requests
        self.progress = progress
        self.transitions: list[BreakerChange] = []
        self.flips: stats.Counts[str] = stats.Counts()
        self.fleet = Fleet(scenario, seed, replicas)
        self.router = self.fleet.routers[0]
        self.trips = [Trips() for _ in self.fleet.routers]
        """Each replica's breaker openings."""
        for index, router in enumerate(self.fleet.routers):
            router.subscribe(self._listener(None if replicas == 1 else index))
            router.subscribe(self.trips[index])
        self.player = timeline.Player(scenario, self._apply, source)
        self.workloads = [(0.0, scenario.workload)]
        """Each workload of the run with the time it applied from."""
        self.names = [u.name for u in self.router.upstreams]
        self.bins: list[Bin] | deque[Bin] = [] if window is None else deque(maxlen=window)
        """The bins opened, oldest first (the last ``window`` of them when it is given); the
        last one is open while the run goes on."""
        self.opened = 0
        """Bins opened so far."""
        self.on_close: Callable[[Bin], None] | None = None
        """Called with each bin as it closes, its counts and gauges final."""
        if math.isinf(duration):
            self.bin_count: float = math.inf
        else:
            self.bin_count = max(1, math.ceil(duration / bin_width))
            if (self.bin_count - 1) * bin_width >= duration:
                self.bin_count -= 1
        self.until = 0.0
        """The virtual time the run is paused at (see :meth:`advance`)."""
        self.interrupted: str | None = None
        """What ended the run between two pauses (an exception raised while it ran, such as
        a KeyboardInterrupt), if anything did: it then cannot go on."""
        self.saturated = 0
        """Open-loop arrivals not sent so far: ``max_in_flight`` requests were in flight."""
        self.fallbacks: Counter[Upstream] = Counter()
        """Calls forced on each provider so far, by the replica's view of it."""
        self.decisions: stats.Counts[str] = stats.Counts()
        """The routers' retry decisions so far (:data:`gwlab.router.RETRY_DECISIONS`)."""
        self._steps = self._run()
        self._wall = time.monotonic()

    def _listener(self, replica: int | None) -> Callable[[Transition], None]:
        """The listener of the breakers of ``replica`` (``None``: the one gateway)."""
        def on_transition(t: Transition) -> None:
            if is_listed(t):
                self.transitions.append(BreakerChange.from_transition(t, replica))
            else:
                self.flips[t.provider] += 1
        return on_transition

    def _apply(self, event: Event, source: str) -> None:
        """A scripted event: its patch on the scenario in force, from the event's time."""
        before = self.router.scenario.workload
        self.fleet.configure(config.merge(self.router.scenario, event.patch, source), event.at)
        if self.router.scenario.workload != before:
            self.workloads.append((event.at, self.router.scenario.workload))

    def _scripted(self) -> float:
        """The time of the next scripted event due before the run ends or pauses (one at the
        pause is played before it), else the pause's time if the run pauses before it ends,
        else infinity."""
        at = min(self.player.next_at, self.until)
        return at if at < self.duration else math.inf

    def advance(self, until: float) -> SimResult | None:
        """Run every event before ``until`` virtual seconds (and the scripted ones at
        ``until``), close the bins that end by then and pause; the result once ``until``
        reaches the run's duration (the run then ends), else ``None``. ``until`` never goes
        back: an earlier time runs nothing. An exception raised while the run goes (a
        KeyboardInterrupt, say) ends it where it was: :attr:`interrupted` says so, and a later
        call raises :class:`RuntimeError`."""
        if self.interrupted is not None:
            raise RuntimeError(f"{self.source}: the run was {self.interrupted}; it cannot go on")
        paused = self.until
        self.until = max(self.until, until)
        try:
            next(self._steps)
        except StopIteration as done:
            return done.value
        except BaseException as exc:
            self.interrupted = f"interrupted ({type(exc).__name__}) after t = {paused:g} s"
            self.until = paused
            raise
        return None

    def _stuck(self, sent: float, then: float) -> Stuck:
        return Stuck(f"{self.source}: a closed-loop client that sent at t = {sent!r} s was scheduled to send "
                     f"again at t = {then!r} s, not later: virtual time would stand still")

    def _edge(self, index: int) -> float:
        return min((index + 1) * self.bin_width, self.duration)

    def _advance(self, t: float, cur: Bin, offered: int, admitted: int, area: float, in_flight: int,
                 last: float) -> Bin | None:
        """Close every bin that ends by ``t``, the current one with these counts (``area``
        being the in-flight integral up to ``last``), and return the bin then current (``None``
        after the last one)."""
        edge = self._edge(self.opened - 1)
        while t >= edge:
            cur = self._close(cur, edge, offered, admitted, area + in_flight * (edge - last))
            if cur is None:
                return None
            offered = admitted = 0
            area, last = 0.0, edge
            edge = self._edge(self.opened - 1)
        return cur

    def _close(self, b: Bin, at: float, offered: int, admitted: int, in_flight_area: float) -> Bin | None:
        """Close ``b`` at ``at`` with its counts, read its end-of-bin gauges and open the next
        bin, if any."""
        b.offered, b.admitted, b.in_flight_area = offered, admitted, in_flight_area
        b.read_gauges(self.fleet.snapshot(at))
        if self.progress is not None:
            wall = time.monotonic()
            if wall - self._wall >= _PROGRESS_INTERVAL:
                self._wall = wall
                self.progress(at / self.duration)
        if self.on_close is not None:
            self.on_close(b)
        index = self.opened
        if index >= self.bin_count:
            return None
        nxt = Bin(index * self.bin_width, self._edge(index) - index * self.bin_width)
        self.bins.append(nxt)
        self.opened += 1
        return nxt

    def _prompt(self, sent: float) -> int:
        """The prompt tokens of a request sent at ``sent``: those of the workload then in force."""
        return next(w for at, w in reversed(self.workloads) if at <= sent).prompt_tokens

    @staticmethod
    def _start(started: list[Route], queued: dict[Route, list], heap: list, seq: int, now: float) -> int:
        """Schedule the end of each route that waited for a slot and starts at ``now``;
        returns the next sequence number."""
        for route in started:
            entry = queued[route]
            entry[2] = seq
            entry[3] += 1
            heapq.heappush(heap, (now + route.call.duration, seq, route, entry[0], entry[1]))
            seq += 1
        started.clear()
        return seq

    def _run(self) -> Generator[None, None, SimResult]:
        """The run: it pauses (yields) at :attr:`until` until the run's duration, and returns
        its result there."""
        router = self.router
        route_to, complete = router.route, router.complete
        # With replicas, each attempt reaching the gateway is drawn a replica, whose router
        # admits and routes it; the replica that routed a call completes it and retries it.
        routers, owner = self.fleet.routers, self.fleet.owner
        count = len(routers)
        spread = stream(self.seed, "replicas").randrange
        started: list[Route] = []  # routes that waited for a provider's slot and start now
        for each in routers:
            each.on_start = lambda route, now: started.append(route)
        queued: dict[Route, list] = {}
        """Routes that waited for a slot, while the heap holds an event of theirs: [when they
        were sent, whether by a closed-loop client, the sequence number of their end event
        (-1 while they wait), their events in the heap (the deadline, and the end once they
        run)]."""
        attempts_of: dict[Route, Attempts | object] = {}
        """The attempts of each route in flight whose request the gateway may retry, or
        :data:`_FIRST` for a first attempt (sent and routed without them)."""
        retrying: dict[Route, Attempts] = {}
        """Requests waiting for their next attempt, by the route of their last one (its heap
        event is the retry's moment)."""
        push, pop = heapq.heappush, heapq.heappop
        next_arrival, pause_after = workload.next_arrival, workload.pause_after
        keep = self.keep
        requests: list[Request] | None = [] if keep else None
        end = self.duration
        fallbacks, decisions = self.fallbacks, self.decisions
        rejected_key = (stats.RATE_LIMITED, stats.NO_PROVIDER)
        scripted = self._scripted()

        heap: list[tuple[float, int, Route | None, float, bool]] = []
        seq = 0
        w = self.scenario.workload
        arrivals = stream(self.seed, "arrivals")
        draw_arrival, log1p = arrivals.random, math.log1p  # next_arrival's draw and function, bound once
        open_loop = w.mode == "open"
        rate = w.rate
        think = w.think_time
        cap = w.max_in_flight
        share, max_tokens = w.stream_share, w.max_tokens or None
        llm = share > 0.0 or max_tokens is not None  # the clients count every answer's tokens
        reserve = router.reservation(w.prompt_tokens, max_tokens)  # 0 without tokens limits
        admits = _admitters(routers, reserve)
        admit = admits[0]
        retries = router.budget is not None  # the gateway retries (retry.attempts > 1)
        prompt = w.prompt_tokens  # while no scripted event changes the workload
        replies = {name: reply(name)[1] for name in self.names}  # a fixed reply's tokens
        streams = stream(self.seed, "workload/stream")
        # User requests are followed from the start when any event will need them, and, once
        # on (a virtual lab's change may switch them on), to the end of the run.
        users = timeline.follows_users(self.scenario)
        timeout = w.timeout
        client_rng = stream(self.seed, "workload/retry")
        throttle_rng = stream(self.seed, "workload/throttle")
        throttle = AdaptiveThrottle(w.adaptive_k, w.adaptive_window, throttle_rng) \
            if w.retry_policy == "adaptive" else None
        pending_users = pending_attempts = 0  # user requests not ended, and the attempts they sent
        saturated = 0  # open-loop arrivals not sent: ``cap`` requests were in flight
        arrival = next_arrival(0.0, rate, arrivals) if open_loop else math.inf
        arrival_seq = seq
        seq += 1
        clients = 0  # closed-loop clients running (including those about to retire)
        retiring = 0
        if not open_loop:
            for _ in range(w.clients):
                push(heap, (0.0, seq, None, 0.0, True))
                seq += 1
            clients = w.clients

        cur = Bin(0.0, self._edge(0))
        self.bins.append(cur)
        self.opened = 1
        edge = self._edge(0)
        by_status = cur.tally.by_status
        pending = _Pending()
        hist_add, ttft_add, tpot_add = pending.latencies.append, pending.ttfts.append, pending.tpots.append
        offered = admitted = in_flight = 0
        area = 0.0
        last = 0.0

        # The soonest of the next scripted event (or pause), the run's end and the bin's: an
        # event before it needs none of their checks, and nearly every event comes before it.
        horizon = min(scripted, end, edge)
        while True:
            if heap:
                top = heap[0]
                now = top[0]
                from_arrival = open_loop and (arrival < now or (arrival == now and arrival_seq < top[1]))
                if from_arrival:
                    now = arrival
            else:
                from_arrival = open_loop
                now = arrival if open_loop else math.inf
            if now >= horizon:
                if now >= scripted:
                    now = scripted
                elif now >= end:
                    break
                if now >= edge:
                    self.saturated = saturated
                    pending.into(cur.tally)
                    cur = self._advance(now, cur, offered, admitted, area, in_flight, last)
                    offered = admitted = 0
                    area, last = 0.0, cur.start
                    edge = self._edge(self.opened - 1)
                    horizon = min(scripted, end, edge)
                    by_status = cur.tally.by_status
                if now == scripted:
                    if self.player.next_at > now:  # no event is due: the run pauses here
                        cur.offered, cur.admitted, self.saturated = offered, admitted, saturated
                        pending.into(cur.tally)
                        yield
                        scripted = self._scripted()
                        horizon = min(scripted, end, edge)
                        continue
                    self.player.play(now)
                    if started:  # a larger capacity
                        seq = self._start(started, queued, heap, seq, now)
                    scripted = self._scripted()
                    horizon = min(scripted, end, edge)
                    router = self.router  # every replica has the scenario of the event
                    w = router.scenario.workload
                    think = w.think_time
                    cap = w.max_in_flight
                    share, max_tokens = w.stream_share, w.max_tokens or None
                    llm = share > 0.0 or max_tokens is not None
                    reserve = router.reservation(w.prompt_tokens, max_tokens)
                    admits = _admitters(routers, reserve)
                    admit = admits[0]
                    retries = router.budget is not None
                    users = users or workload.follows_users(w)
                    timeout = w.timeout
                    if w.retry_policy != "adaptive":
                        throttle = None
                    elif throttle is None or (throttle.k, throttle.window) != (w.adaptive_k, w.adaptive_window):
                        throttle = AdaptiveThrottle(w.adaptive_k, w.adaptive_window, throttle_rng)
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
                            push(heap, (now, seq, None, now, True))
                            seq += 1
                        clients += more - revived
                    elif more < 0:
                        retiring -= more
                    continue
            if from_arrival:
                route, sent, client = None, now, False
                # next_arrival(now, rate, arrivals), written out: this runs for every arrival.
                arrival = now - log1p(-draw_arrival()) / rate
                arrival_seq = seq
                seq += 1
                if in_flight >= cap:
                    saturated += 1
                    continue
            else:
                _, event, route, sent, client = pop(heap)

            if users and route.__class__ is _Try:  # an attempt's client timeout
                if route.user.current is not route:
                    continue  # it was answered in time
                client, status, retry_after = route, stats.CLIENT_TIMEOUT, 0.0
                by_status[status, stats.NO_PROVIDER] += 1
                if keep:
                    requests.append(Request(sent, now, stats.NO_PROVIDER, status, now - sent, False))
            elif route is None or (retrying and route in retrying):  # a request is sent, or tried again
                if route is None:
                    if users:  # an attempt of a user request
                        if client.__class__ is _User:  # its next one
                            user = client
                            streaming = user.streaming
                        else:
                            streaming = share > 0.0 and (share == 1.0 or streams.random() < share)
                            user = _User(client, workload.ClientRetry(w, client_rng), streaming)
                            pending_users += 1
                        client = user.current = _Try(user)
                    else:
                        # Whether it streams, as the live clients decide before sending: a share
                        # strictly between 0 and 1 draws once per request sent.
                        streaming = share > 0.0 and (share == 1.0 or streams.random() < share)
                    if users and throttle is not None and not throttle.admits(now):
                        rejected = _THROTTLED  # by the client itself: the gateway never sees it
                        attempts, first = None, False
                    else:
                        if users:
                            user.attempts += 1
                            pending_attempts += 1
                            if timeout:
                                push(heap, (now + timeout, seq, client, now, False))
                                seq += 1
                        offered += 1
                        if count > 1:
                            replica = spread(count)
                            router, admit = routers[replica], admits[replica]
                            route_to = router.route
                        rejected = admit(now, reserve)
                        attempts, first = None, retries and rejected is None  # the gateway may retry it
                        if first:  # the retry budget counts it; its Attempts are made if it fails
                            router.budget.request(now)
                else:  # it leaves the provider it failed on, and is routed again at once
                    attempts, streaming, rejected, first = retrying.pop(route), route.streaming, None, False
                    if count > 1:
                        router = owner[route.upstream]
                        route_to = router.route
                    area += in_flight * (now - last)
                    last = now
                    in_flight -= 1
                if rejected is None:
                    route = route_to(now, streaming, max_tokens, reserve, attempts,
                                     users and client.__class__ is _Try and client.user.attempts > 1)
                    if route.__class__ is Rejected:  # every provider cooling down: 503
                        rejected = route
                if rejected is not None:
                    status, retry_after = rejected.status, rejected.retry_after
                    if users and client.__class__ is _Try and client.user.current is not client:
                        cur.tally.users["wasted"] += 1  # a retry's 503 after its client stopped waiting
                        continue
                    if rejected is not _THROTTLED:
                        by_status[rejected_key if status == 429 else (status, stats.NO_PROVIDER)] += 1
                        if keep:
                            requests.append(Request(sent, now, stats.NO_PROVIDER, status, now - sent, False))
                else:
                    if attempts is None or attempts.made == 1:  # a retry was admitted with its first attempt
                        admitted += 1
                    if attempts is not None:
                        attempts_of[route] = attempts
                    elif first:
                        attempts_of[route] = _FIRST
                    area += in_flight * (now - last)
                    last = now
                    in_flight += 1
                    if route.fallback:
                        fallbacks[route.upstream] += 1
                    if route.waiting:  # for a slot, until the gateway's timeout at most
                        queued[route] = [sent, client, -1, 1]
                        push(heap, (now + router.scenario.gateway.timeout, seq, route, sent, client))
                    else:
                        push(heap, (now + route.call.duration, seq, route, sent, client))
                    seq += 1
                    continue
            else:  # its answer arrives
                waited = queued and route in queued
                if waited:
                    entry = queued[route]
                    entry[3] -= 1
                    if not entry[3]:
                        del queued[route]
                    if not route.waiting and entry[2] != event:
                        continue  # the deadline of a route that started in time
                area += in_flight * (now - last)
                last = now
                in_flight -= 1
                call = route.call
                if count > 1:
                    router = owner[route.upstream]
                    complete = router.complete
                if waited and route.waiting:  # the timeout ran out in the queue
                    status = router.give_up(route, now)
                else:
                    status = complete(route, now, call.outcome)
                attempts = attempts_of.pop(route, None) if attempts_of else None
                if attempts is not None and status != 200:
                    if attempts is _FIRST:
                        attempts = Attempts.after_first(sent, route.upstream)
                    retry = router.retry(attempts, route, now, status)
                    decisions[retry.reason] += 1
                    if retry.wait is not None:  # it ends here, and its request tries again after the wait
                        router.refund(route, now, prompt if len(self.workloads) == 1 else self._prompt(sent))
                        in_flight += 1
                        retrying[route] = attempts
                        push(heap, (now + retry.wait, seq, route, sent, client))
                        seq += 1
                        if started:
                            seq = self._start(started, queued, heap, seq, now)
                        continue
                name = route.upstream.name
                if route.reserved or route.provider_reserved:  # what the answer used: the prompt and its tokens
                    answered = status == 200 or status == stats.STREAM_ERROR
                    used = (call.tokens or replies[name]) if answered else 0
                    router.refund(route, now, used + (prompt if len(self.workloads) == 1 else self._prompt(sent)))
                if started:
                    seq = self._start(started, queued, heap, seq, now)
                if users and client.__class__ is _Try and client.user.current is not client:
                    cur.tally.users["wasted"] += 1  # its client stopped waiting: no one sees the answer
                    continue
                by_status[status, name] += 1
                latency = now - sent if waited or attempts is not None else call.duration
                hist_add(latency)
                if llm or call.tokens:  # LLM traffic; never for the seed's
                    # The tokens of an answer given (a success, or a stream up to its failure; a
                    # fixed reply's, as the live clients see it in its usage), and a stream's time
                    # to first token, counted from its arrival (a wait for a slot included).
                    ttft, tokens = None, 0
                    if status == 200 or status == stats.STREAM_ERROR:
                        tokens = call.tokens or replies[name]
                        cur.tally.output_tokens += tokens
                        if route.streaming:
                            ttft = call.ttft + (latency - call.duration)
                            ttft_add(ttft)
                            if tokens >= 2:  # stats.time_per_output_token, written out
                                tpot_add((latency - ttft) / (tokens - 1))
                    if keep:
                        requests.append(Request(sent, now, name, status, latency, route.fallback, ttft, tokens))
                elif keep:
                    requests.append(Request(sent, now, name, status, latency, route.fallback))
                if not client:
                    continue  # an open-loop request's answer: no client waits for it, nor for its retry-after
                retry_after = call.retry_after
            # The client has seen ``status`` (with ``retry_after``): a user request tries again
            # or ends; a closed-loop client whose request ended waits ``wait``.
            if users and client.__class__ is _Try:
                user = client.user
                user.current = None
                if throttle is not None and status != _THROTTLED.status:
                    throttle.answered(now, status == 200)
                if status == 200:
                    outcome = "ok"
                else:
                    again = user.retry.after(status, retry_after)
                    if again is not None:
                        push(heap, (now + again, seq, None, now + again, user))
                        seq += 1
                        continue
                    outcome = "timed_out" if status == stats.CLIENT_TIMEOUT else \
                        "throttled" if status == _THROTTLED.status else "failed"
                user_counts = cur.tally.users
                user_counts[outcome] += 1
                user_counts["attempts"] += user.attempts
                pending_users -= 1
                pending_attempts -= user.attempts
                if not user.closed:
                    continue
                wait = pause_after(status, retry_after, think) if outcome != "throttled" else max(think, w.retry_delay)
            elif not client:
                continue
            else:
                wait = pause_after(status, retry_after, think)
            # A closed-loop client's request has ended: it retires, or sends again after ``wait``.
            if retiring:
                retiring -= 1
                clients -= 1
            else:
                then = now + wait
                if not then > sent:
                    raise self._stuck(sent, then)
                push(heap, (then, seq, None, then, True))
                seq += 1

        # Requests still in flight at the end are cut off, as a live run does when it stops;
        # they count in the last bin.
        pending.into(cur.tally)
        final = self._advance((self.bin_count - 1) * self.bin_width, cur, offered, admitted, area, in_flight, last)
        if final is not cur:
            cur, offered, admitted, area, last = final, 0, 0, 0.0, final.start
        cut: set[Route] = set()  # a route that waited is in the heap twice, or after its end
        for _, _, route, sent, client in heap:
            if route is None or route.__class__ is _Try or route in cut or not (route.pending or route in retrying):
                continue
            cut.add(route)
            if client.__class__ is not _Try or client.user.current is client:  # else its client's timeout counted it
                cur.tally.by_status[stats.CUT_OFF, stats.NO_PROVIDER] += 1
                if keep:
                    requests.append(Request(sent, end, stats.NO_PROVIDER, stats.CUT_OFF, 0.0, route.fallback))
        if pending_users:
            cur.tally.users["cut_off"] += pending_users
            cur.tally.users["attempts"] += pending_attempts
        self._advance(end, cur, offered, admitted, area, in_flight, last)
        if self.progress is not None:
            self.progress(1.0)

        self.saturated = saturated
        self.transitions.sort(key=lambda t: t.time)
        series = TimeSeries(self.bins, self.names, self.bin_width)
        by_name: Counter[str] = Counter()
        for upstream, n in fallbacks.items():
            by_name[upstream.name] += n
        run = dict(mode="simulated", seed=self.seed, scenario=self.scenario, duration=end,
                   sent=sum(b.offered for b in self.bins), saturated=saturated, workloads=self.workloads,
                   end=self.fleet.snapshot(end), trips=dict(sum((t.counts for t in self.trips), Counter())),
                   fallbacks=dict(by_name), events_refused=self.player.refused, retries=dict(decisions))
        if count > 1:
            run["replicas"] = [
                {"replica": i, "end": r.snapshot(end), "trips": dict(self.trips[i].counts),
                 "fallbacks": {u.name: fallbacks[u] for u in r.upstreams if fallbacks[u]}}
                for i, r in enumerate(routers)
            ]
        return SimResult(self.scenario, self.seed, end, series, self.transitions, dict(sorted(self.flips.items())),
                         run, requests)
