"""The lab without sockets: the simulator at wall-clock pace behind the lab's handle.

``gwlab.lab.start(mode="virtual")`` runs the scenario in the simulator's engine
(:mod:`gwlab.sim`), open-ended, instead of a gateway, a metrics server and clients on
sockets. A task on the running event loop (the kernel's own; no thread) wakes every
:data:`~gwlab.config.VIRTUAL_STEP` wall seconds and advances virtual time by the wall time
elapsed since the step before, at most :data:`~gwlab.config.VIRTUAL_CATCH_UP` seconds a
step: a kernel held up by a long cell goes on from where it was. Without a running loop (a
plain script) nothing paces it, and :meth:`VirtualLab.run_for` still advances it.

Its numbers depend on the scenario and the seed alone, never on the machine's load: the
engine pauses at a virtual time and resumes with the same state, so a run advanced in any
steps is the run ``gwlab.simulate`` makes. ``run_for(seconds)`` advances ``seconds`` at once
and summarises them exactly; :meth:`VirtualLab.configure` applies a change at the virtual
now through the engine's own event player, as a scripted event at that instant would apply.

The handle has the live lab's surface (:class:`gwlab.lab.handle.Lab`), so the notebooks and
the dashboard use either: ``recorder`` (the rolling bins and breaker changes of the last
:data:`~gwlab.config.LAB_WINDOW` seconds), ``state_now()``, ``call(coro)`` and ``mode``.
Everything runs on the caller's thread: the loop's, in a kernel.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Generator, Mapping, TypeVar

from gwlab import config, sim
from gwlab.config import Event, Scenario
from gwlab.lab.summary import Summary
from gwlab.router import Snapshot
from gwlab.stats import Tally
from gwlab.summary import summarise
from gwlab.timeseries import Bin, BreakerChange, TimeSeries

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from gwlab.lab.dashboard import Dashboard

log = logging.getLogger(__name__)

_T = TypeVar("_T")

SOURCE = "virtual lab"
"""How the engine names the lab's scenario in its messages."""


class Window:
    """The closed bins of a virtual lab's last :data:`~gwlab.config.LAB_WINDOW` seconds and
    its breaker changes meanwhile, filled by its engine as each bin closes: the read side of
    the live lab's :class:`~gwlab.lab.recorder.Recorder`, which the dashboard draws."""

    def __init__(self, providers: tuple[str, ...]) -> None:
        self.providers = providers
        self.bin_width = config.LAB_BIN_WIDTH
        self.bins: deque[Bin] = deque(maxlen=max(1, round(config.LAB_WINDOW / self.bin_width)))
        """The closed bins kept, oldest first."""
        self.transitions: list[BreakerChange] = []
        self.saturated_last = 0
        """Open-loop arrivals not sent in the last closed bin."""
        self.version = 0
        """Changes whenever a bin closes or the history is cleared."""
        self.taps: list[_Tap] = []
        self._engine: sim._Engine | None = None
        self._saturated = 0

    def follow(self, engine: sim._Engine) -> None:
        """Forget the history and show ``engine``'s run from now on."""
        self._engine = engine
        engine.on_close = self._closed
        self.bins.clear()
        self.transitions = engine.transitions
        self.saturated_last = self._saturated = 0
        self.version += 1

    @property
    def current(self) -> Bin:
        """The bin still open."""
        return self._engine.bins[-1]

    def timeseries(self) -> TimeSeries:
        """The closed bins kept, as a time series."""
        return TimeSeries(list(self.bins), self.providers, self.bin_width)

    def _closed(self, b: Bin) -> None:
        self.bins.append(b)
        saturated = self._engine.saturated
        self.saturated_last, self._saturated = saturated - self._saturated, saturated
        horizon = b.start + b.width - config.LAB_WINDOW
        old = 0
        while old < len(self.transitions) and self.transitions[old].time < horizon:
            old += 1
        del self.transitions[:old]
        for tap in self.taps:
            tap.add(b)
        self.version += 1


class _Tap:
    """What a ``run_for`` counts: every bin that closes while it runs, less what the bin
    held when it began, and the part of the bin still open when it ends."""

    def __init__(self, open_bin: Bin) -> None:
        self.first = open_bin
        self.head = open_bin.tally.copy()
        self.head_offered = open_bin.offered
        self.tally = Tally()
        self.sent = 0

    def add(self, b: Bin) -> None:
        """Count ``b``: a closed bin, or the open one at the end."""
        if b is self.first:
            self.tally.merge(b.tally.since(self.head))
            self.sent += b.offered - self.head_offered
        else:
            self.tally.merge(b.tally)
            self.sent += b.offered


class VirtualLab:
    """The simulator at wall-clock pace, with the lab's handle (see the module).

    Made by :func:`gwlab.lab.start` with ``mode="virtual"``. ``clock`` (wall seconds) and
    ``sleep`` (an awaitable pause of that many seconds) pace it; ``now`` is its virtual time
    in seconds since it started (or was reset)."""

    mode = "virtual"

    def __init__(self, scenario: Scenario, seed: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        sim.check_runnable(scenario, SOURCE)
        self.seed = seed
        self.initial = scenario
        self.recorder = Window(tuple(p.name for p in scenario.providers))
        self.views: dict[str, Any] = {}
        """Views of this lab by kind, made once each (the dashboard keeps itself here)."""
        self.running = False
        self._listeners: list[Callable[[Scenario], None]] = []
        self._stopping: list[Callable[[], Awaitable[None]]] = []
        self._clock, self._sleep = clock, sleep
        self._wall = clock()
        self._held = False
        self._task: asyncio.Task | None = None
        self.engine = self._engine()
        self._shown = self.engine.router.scenario

    def _engine(self) -> sim._Engine:
        """A new open-ended run of the starting scenario, started (its events at 0 played)."""
        engine = sim._Engine(self.initial, SOURCE, self.seed, math.inf, config.LAB_BIN_WIDTH, False, None, 1,
                             window=1)
        self.recorder.follow(engine)
        engine.advance(0.0)
        return engine

    # -- lifecycle ------------------------------------------------------------------------

    def _begin(self) -> None:
        """Start pacing it on the running loop, if there is one."""
        self.running = True
        self._wall = self._clock()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._pace())

    async def _pace(self) -> None:
        while True:
            await self._sleep(config.VIRTUAL_STEP)
            if self.engine.interrupted is not None:
                continue  # it stands still until a reset starts a new run
            try:
                self.step()
            except Exception:  # a task's error would be lost: say it, once, and stand still
                log.exception("the virtual lab stopped advancing at t = %g s", self.now)
                return

    def step(self) -> None:
        """One step of its pacing: advance virtual time by the wall time elapsed since the
        step before (at most :data:`~gwlab.config.VIRTUAL_CATCH_UP`); nothing while a
        ``run_for_async`` holds it."""
        wall = self._clock()
        if not self._held:
            self._advance(self.now + min(wall - self._wall, config.VIRTUAL_CATCH_UP))
        self._wall = wall

    def stop(self) -> None:
        """Stop pacing it; the dashboard freezes. Safe to call twice."""
        from gwlab import lab

        lab.release(self)

    async def stop_async(self) -> None:
        """:meth:`stop`, awaitable."""
        self.stop()

    def _halt(self) -> None:
        """Stop pacing and run the ``on_stop`` callbacks (the caller holds the lab module's lock)."""
        if not self.running:
            return
        self.running = False
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for stopping in self._stopping:
            _at_once(stopping(), finish=False)

    def __repr__(self) -> str:
        if not self.running:
            return "gwlab lab (stopped)"
        w = self.scenario.workload
        traffic = (f"{w.clients} closed-loop clients" if w.mode == "closed"
                   else f"open loop, {w.rate:g} requests/s offered")
        return f"gwlab lab (running, virtual, seed {self.seed}, t = {self.now:.1f} s)\n  clients  {traffic}"

    # -- running and changing it ----------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds since the lab started or was reset."""
        return self.engine.until

    @property
    def scenario(self) -> Scenario:
        """The scenario in force."""
        return self.engine.router.scenario

    def run_for(self, seconds: float) -> Summary:
        """Advance virtual time by ``seconds`` at once and return the summary of those
        seconds (the schema of ``gwlab run --json``, ``mode`` "virtual"): the same for the
        same scenario, seed and changes, on any machine. The pacing goes on from its end,
        however long it took. Raises
        :class:`~gwlab.config.ConfigError` for ``seconds`` out of
        :data:`gwlab.config.RUN_RANGES`' ``duration``, :class:`RuntimeError` once stopped."""
        return next(self._run_for(seconds, math.inf))

    async def run_for_async(self, seconds: float) -> Summary:
        """:meth:`run_for`, awaitable: it advances :data:`~gwlab.config.VIRTUAL_CATCH_UP`
        virtual seconds at a time, letting the loop (the widgets, the charts) run between
        them; the pacing waits meanwhile. The same summary as :meth:`run_for`."""
        self._held = True
        try:
            steps = self._run_for(seconds, config.VIRTUAL_CATCH_UP)
            while not isinstance(summary := next(steps), Summary):
                await asyncio.sleep(0)
            return summary
        finally:
            self._held = False

    def configure(self, patch: Mapping[str, Any], source: str = "lab.configure") -> Scenario:
        """Merge ``patch`` (the scenario's shape) into the scenario in force at the virtual
        now, as a scripted event at this instant would, and return the scenario then in
        force. Raises :class:`~gwlab.config.ConfigError` naming ``source`` for a patch that
        does not fit or that the simulator could not run (see :func:`gwlab.sim.check_state`),
        leaving everything as it was."""
        self._check_running()
        sim.check_state(config.merge(self.scenario, patch, source), source)
        self.engine.player.schedule(Event(self.now, patch))
        self._advance(self.now)
        return self.scenario

    async def configure_async(self, patch: Mapping[str, Any], source: str = "lab.configure") -> Scenario:
        """:meth:`configure`, awaitable."""
        return self.configure(patch, source)

    def reset(self) -> Scenario:
        """Start again from virtual time 0: the starting scenario (its scripted events to
        play again), a full bucket, healthy breakers with no history, empty charts, the same
        seed. Returns that scenario."""
        self._check_running(interrupted=True)
        self.engine = self._engine()
        if self._task is not None and self._task.done():  # an interrupt ended the pacing task
            self._begin()
        self._announce()
        return self.scenario

    def subscribe(self, listener: Callable[[Scenario], None]) -> None:
        """Have ``listener`` called with the scenario in force after every change to it
        (:meth:`configure`, :meth:`reset`, a scripted event)."""
        self._listeners.append(listener)

    def on_stop(self, stopping: Callable[[], Awaitable[None]]) -> None:
        """Have ``stopping()`` run when the lab stops (up to its first wait)."""
        self._stopping.append(stopping)

    def snapshot(self) -> Snapshot:
        """The simulated gateway's state at the virtual now."""
        self._check_running()
        return self.state_now()

    def state_now(self) -> Snapshot:
        """The simulated gateway's state at the virtual now (what the dashboard reads)."""
        return self.engine.fleet.snapshot(self.now)

    # -- what it shows ----------------------------------------------------------------------

    def timeseries(self) -> TimeSeries:
        """The last seconds of the run (``config.LAB_WINDOW``) in bins of
        ``config.LAB_BIN_WIDTH`` seconds; times are virtual seconds since the start."""
        return self.recorder.timeseries()

    def transitions(self) -> list[BreakerChange]:
        """The breaker changes among healthy, open and half_open in the same window."""
        return list(self.recorder.transitions)

    def figure(self) -> go.Figure:
        """A static Plotly figure of the window (:func:`gwlab.plots.figure`)."""
        from gwlab import plots

        return plots.figure(self.timeseries(), self.transitions(), title="the last seconds of the virtual run")

    def dashboard(self) -> Dashboard:
        """The live dashboard (controls and charts), one per lab, as the live lab's."""
        from gwlab.lab.dashboard import Dashboard

        return Dashboard.of(self)

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` now, on this thread, and return its result: the virtual lab has no
        loop of its own. Raises :class:`RuntimeError` if ``coro`` waits, or once stopped."""
        self._check_running(coro)
        return _at_once(coro, finish=True)

    # -- inside -----------------------------------------------------------------------------

    def _check_running(self, coro: Coroutine | None = None, *, interrupted: bool = False) -> None:
        """Raise :class:`RuntimeError` (closing ``coro``) once the lab is stopped, or, unless
        ``interrupted`` is allowed, while its run stands interrupted (:attr:`sim._Engine.interrupted`)."""
        if not self.running or (self.engine.interrupted is not None and not interrupted):
            if coro is not None:
                coro.close()
            if not self.running:
                raise RuntimeError("this lab is stopped; gwlab.lab.start() starts a new one")
            raise RuntimeError(f"this virtual lab's run was {self.engine.interrupted} and cannot go on from "
                               "there; lab.reset() starts it again from 0")

    def _advance(self, until: float) -> None:
        self.engine.advance(until)
        self._announce()

    def _announce(self) -> None:
        """Tell the subscribers if the scenario in force changed (a scripted event, a change
        made here)."""
        scenario = self.scenario
        if scenario is not self._shown:
            self._shown = scenario
            for listener in self._listeners:
                listener(scenario)

    def _run_for(self, seconds: float, chunk: float) -> Generator[Summary | None, None, None]:
        """Advance ``seconds`` in steps of at most ``chunk`` virtual seconds, yielding
        ``None`` after each but the last, and then the summary. Raises
        :class:`RuntimeError` if the lab is reset or stopped between two steps."""
        self._check_running()
        seconds = config.run_argument("duration", seconds, "lab.run_for: seconds")
        engine = self.engine
        began, scenario = self.now, self.scenario
        trips, retries = Counter(engine.trips[0].counts), Counter(engine.decisions)
        fallbacks, saturated = _by_name(engine.fallbacks), engine.saturated
        refused, changes = engine.player.refused, len(engine.workloads)
        tap = _Tap(self.recorder.current)
        self.recorder.taps.append(tap)
        try:
            end = began + seconds
            while self.now < end:
                self._advance(min(end, self.now + chunk))
                if self.now < end:
                    yield None
                    self._check_running()
                    if self.engine is not engine:
                        raise RuntimeError("lab.run_for: the lab was reset while it ran; its summary would mix two runs")
        finally:
            self.recorder.taps.remove(tap)
            self._wall = self._clock()  # the pacing goes on from here, not from before
        tap.add(self.recorder.current)
        yield Summary(summarise(
            tap.tally, mode="virtual", seed=self.seed, scenario=scenario, duration=seconds, sent=tap.sent,
            saturated=engine.saturated - saturated,
            workloads=[(0.0, scenario.workload), *((at - began, w) for at, w in engine.workloads[changes:])],
            end=self.state_now(), trips=engine.trips[0].counts - trips, fallbacks=_by_name(engine.fallbacks) - fallbacks,
            events_refused=engine.player.refused - refused, retries=Counter(engine.decisions) - retries,
        ))


def _by_name(fallbacks: Counter) -> Counter[str]:
    """Calls forced on each provider, by its name."""
    out: Counter[str] = Counter()
    for upstream, n in fallbacks.items():
        out[upstream.name] += n
    return out


def _at_once(coro: Coroutine[Any, Any, _T], *, finish: bool) -> _T | None:
    """Run ``coro`` on this thread up to its first wait and return its result if it ended
    there. If it waits: with ``finish``, raise :class:`RuntimeError`; else leave what it
    waits for to the loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    if finish:
        raise RuntimeError("a virtual lab runs this at once, and it waited")
    return None
