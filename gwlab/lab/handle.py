"""The handle of a lab running in the kernel: the gateway, its metrics server and the clients
on a background loop, and what a notebook asks of them.

Every method that touches the running system hands its work to the lab's loop thread and
waits (or, for the ``*_async`` methods, awaits) the result, so the router is only ever used
from one thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Mapping, TypeVar

from gwlab import config, workload
from gwlab.config import ConfigError, Event, Scenario, WorkloadConfig
from gwlab.lab.clients import ClientPool  # first of gwlab's: it names what the live lab needs, when missing
from gwlab.lab.loop import LoopThread
from gwlab.lab.recorder import Recorder
from gwlab.lab.summary import Summary
from gwlab.connections import bind
from gwlab.router import Snapshot
from gwlab.server import Gateway, PortInUse
from gwlab.stats import Tally
from gwlab.summary import Trips, summarise
from gwlab.timeline import Player, check_reservations, follow, follows_users
from gwlab.timeseries import BreakerChange, TimeSeries

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from gwlab.lab.dashboard import Dashboard

log = logging.getLogger(__name__)
SOURCE = "live lab"
"""How a live lab names its starting scenario in its messages (a virtual lab's says
``virtual lab``)."""

_T = TypeVar("_T")

_STOP_GRACE = 0.0
"""A lab stops at once: the calls still in flight are abandoned (they decide nothing)."""


def _check_host(host: str) -> None:
    """Raise :class:`~gwlab.config.ConfigError` if nothing can listen on ``host`` here (a name
    that does not resolve, an address of another machine), as ``gwlab run`` says it: found by
    binding a socket to a free port there and closing it, before a lab is stopped for this one."""
    try:
        bind(host, 0).close()
    except OSError as exc:
        raise ConfigError(f"gwlab.lab.start: host = {host!r}: cannot listen there: {exc.strerror or exc}") from None


class Lab:
    """The gateway, its metrics server and in-process clients, running on a loop thread.

    Made by :func:`gwlab.lab.start`. ``url`` and ``metrics_url`` say where they listen;
    ``port`` and ``metrics_port`` are the ports bound, which differ from the ones asked for
    (``requested_ports``) when those were taken."""

    mode = "live"

    def __init__(self, scenario: Scenario, seed: int, host: str, port: int, metrics_port: int) -> None:
        check_reservations(scenario, SOURCE)
        _check_host(host)
        self.seed = seed
        self.host = host
        self.requested_ports = (port, metrics_port)
        self.initial = scenario
        self.gateway = Gateway(scenario, seed)
        self.recorder = Recorder([p.name for p in scenario.providers], self.gateway.clock)
        self.trips = Trips()
        self.gateway.router.subscribe(self.recorder.transition)
        self.gateway.router.subscribe(self.trips)
        self.player: Player | None = None
        """The scripted events' player: made anew at the start and at each reset."""
        self._follow_users = follows_users(scenario)
        """Whether the clients follow their user requests from the start (a scripted event
        will make them time out or retry)."""
        self.workloads: list[tuple[float, WorkloadConfig]] = [(self.gateway.clock(), scenario.workload)]
        """Each workload with the gateway clock's reading from which it applied."""
        self._listeners: list[Callable[[Scenario], None]] = []
        self._stopping: list[Callable[[], Awaitable[None]]] = []
        self.views: dict[str, Any] = {}
        """Views of this lab by kind, made once each (the dashboard keeps itself here)."""
        self.clients: ClientPool | None = None
        self.running = False
        self._thread: LoopThread | None = None
        self._tasks: list[asyncio.Task] = []
        """The bin sampler, then the task that plays the scripted events."""
        self.resets = 0
        """Resets so far: a :meth:`run_for` that spans one refuses to mix two runs."""

    # -- lifecycle ------------------------------------------------------------------------

    def _begin(self) -> None:
        """Start the loop thread, and everything on it."""
        self._thread = LoopThread(f"gwlab-lab-{id(self):x}")
        self._thread.call(self._start())

    async def _start(self) -> None:
        """Listen (falling back to free ports for the ones taken), start the clients, the
        bin sampler and the scenario's scripted events."""
        port, metrics_port = self.requested_ports
        while True:  # each retry asks for one more port 0, which is never taken
            try:
                await self.gateway.start(self.host, port, metrics_port)
                break
            except PortInUse as exc:
                log.info("%s; using a free port instead", exc)
                if exc.port == port and port != 0:
                    port = 0
                elif exc.port == metrics_port and metrics_port != 0:
                    metrics_port = 0
                else:
                    raise
        self.recorder.origin = self.gateway.clock()
        self.clients = ClientPool(self.gateway.url, self.seed, self.recorder, self.gateway.clock)
        await self.clients.start(self.gateway.scenario.workload, self._follow_users)
        self._tasks = [asyncio.create_task(self._sample())]
        self._play_events(self.recorder.origin)
        self.running = True

    def _play_events(self, origin: float) -> None:
        """Play the scenario's scripted events at their times from ``origin`` (a reading of
        the gateway's clock), by a new :class:`Player`, instead of those played so far."""
        if len(self._tasks) > 1:
            self._tasks.pop().cancel()
        self.player = Player(self.initial, self._apply)
        self._tasks.append(asyncio.create_task(follow(self.player, self.gateway.clock, origin)))

    async def _stop(self) -> None:
        self.running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stopping in self._stopping:
            await stopping()
        if self.clients is not None:
            await self.clients.stop(_STOP_GRACE)
        await self.gateway.stop(_STOP_GRACE)

    def stop(self) -> None:
        """Stop the clients, the gateway and the metrics server, release the ports and end
        the loop thread. Safe to call twice, and from any thread (it waits for a start or
        stop under way to end first)."""
        from gwlab import lab

        lab.release(self)

    async def stop_async(self) -> None:
        """:meth:`stop`, awaitable: the kernel's loop stays free meanwhile."""
        await asyncio.to_thread(self.stop)

    def _halt(self) -> None:
        """Stop everything and end the loop thread (the caller holds the module's lock)."""
        thread, self._thread = self._thread, None
        self.running = False
        if thread is not None:
            try:
                if thread.alive:
                    thread.call(self._stop())
            finally:
                thread.close()

    # -- where it listens -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def metrics_url(self) -> str:
        return self.gateway.metrics_url

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def metrics_port(self) -> int:
        return self.gateway.metrics_port

    def __repr__(self) -> str:
        if not self.running:
            return "gwlab lab (stopped)"
        w = self.gateway.scenario.workload
        traffic = (f"{w.clients} closed-loop clients" if w.mode == "closed"
                   else f"open loop, {w.rate:g} requests/s offered")
        lines = ["gwlab lab (running)"]
        for name, url, bound, asked in (("gateway", self.url, self.port, self.requested_ports[0]),
                                        ("metrics", self.metrics_url, self.metrics_port, self.requested_ports[1])):
            taken = f"   (port {asked} was in use)" if asked not in (0, bound) else ""
            lines.append(f"  {name:8} {url}{taken}")
        lines.append(f"  clients  {traffic}")
        return "\n".join(lines)

    # -- running and changing it ----------------------------------------------------------

    def run_for(self, seconds: float) -> Summary:
        """Let the lab run for ``seconds`` (blocking this cell; the charts keep moving) and
        return the summary of the requests answered meanwhile. Raises
        :class:`~gwlab.config.ConfigError` for ``seconds`` out of
        :data:`gwlab.config.RUN_RANGES`' ``duration``, :class:`RuntimeError` once stopped, or
        when the lab is stopped while it runs."""
        return self.call(self._run_for(seconds))

    async def run_for_async(self, seconds: float) -> Summary:
        """:meth:`run_for`, awaitable: the widgets stay responsive while it runs."""
        return await self._call_async(self._run_for(seconds))

    def configure(self, patch: Mapping[str, Any], source: str = "lab.configure") -> Scenario:
        """Merge ``patch`` (the scenario's shape, e.g. ``{"providers": {"p1": {"weight": 0}}}``)
        into the running scenario and apply it within the second: gateway and clients alike.
        Raises :class:`~gwlab.config.ConfigError` naming ``source`` for a bad patch, or one
        after which the lab's requests reserve more tokens than any limit can admit (every
        one would be a 400: :func:`gwlab.workload.check_reservation`, as a virtual lab
        checks), leaving everything as it was."""
        return self.call(self._configure(patch, source))

    async def configure_async(self, patch: Mapping[str, Any], source: str = "lab.configure") -> Scenario:
        """:meth:`configure`, awaitable."""
        return await self._call_async(self._configure(patch, source))

    def reset(self) -> Scenario:
        """Back to the scenario the lab started with: a full bucket, healthy breakers with
        no history, empty charts, and its scripted events to play again from now, as a
        virtual lab's reset plays them from its 0. Returns that scenario."""
        return self.call(self._reset())

    def subscribe(self, listener: Callable[[Scenario], None]) -> None:
        """Have ``listener`` called with the scenario in force after every change to it
        (:meth:`configure`, :meth:`reset`, a scripted event), on the lab's loop thread."""
        self._listeners.append(listener)

    def on_stop(self, stopping: Callable[[], Awaitable[None]]) -> None:
        """Have ``stopping()`` awaited on the lab's loop when the lab stops, before its
        clients and servers."""
        self._stopping.append(stopping)

    @property
    def scenario(self) -> Scenario:
        """The scenario in force."""
        return self.gateway.scenario

    def snapshot(self) -> Snapshot:
        """The gateway's state now (see :meth:`gwlab.server.Gateway.snapshot`)."""
        return self.call(self._snapshot())

    def state_now(self) -> Snapshot:
        """The gateway's state now, read on the lab's loop thread (what the dashboard reads)."""
        return self.gateway.snapshot()

    # -- what it shows ----------------------------------------------------------------------

    def timeseries(self) -> TimeSeries:
        """The last seconds of the run (``config.LAB_WINDOW``) in bins of
        ``config.LAB_BIN_WIDTH`` seconds; times are seconds since the lab started."""
        return self.call(self._timeseries())[0]

    def transitions(self) -> list[BreakerChange]:
        """The breaker changes among healthy, open and half_open in the same window."""
        return self.call(self._timeseries())[1]

    def figure(self) -> go.Figure:
        """A static Plotly figure of the window (:func:`gwlab.plots.figure`): it stays in the
        saved notebook."""
        from gwlab import plots

        series, transitions = self.call(self._timeseries())
        return plots.figure(series, transitions, title="the last seconds of the live run")

    def dashboard(self) -> Dashboard:
        """The live dashboard (controls and charts). One per lab: calling again returns the
        same one (see :func:`gwlab.lab.dashboard.Dashboard.of`)."""
        from gwlab.lab.dashboard import Dashboard

        return Dashboard.of(self)

    # -- on the loop ------------------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the lab's loop thread and return its result (the router is only
        ever used from that thread). Raises :class:`RuntimeError` once the lab is stopped."""
        return self._loop(coro).call(coro)

    async def _call_async(self, coro):
        return await self._loop(coro).call_async(coro)

    def _loop(self, coro: Coroutine) -> LoopThread:
        thread = self._thread  # read once: another thread may be stopping the lab
        if thread is None:
            coro.close()
            raise RuntimeError("this lab is stopped; gwlab.lab.start() starts a new one")
        return thread

    async def _run_for(self, seconds: float) -> Summary:
        seconds = config.run_argument("duration", seconds, "lab.run_for: seconds")
        tap = Tally()
        recorder, metrics, clock = self.recorder, self.gateway.metrics, self.gateway.clock
        scenario = self.gateway.scenario
        trips, fallbacks, retries = Counter(self.trips.counts), Counter(metrics.fallbacks), Counter(metrics.decisions)
        sent, saturated = recorder.sent_total, recorder.saturated_total
        player, resets = self.player, self.resets
        refused, changes = player.refused, len(self.workloads)
        recorder.taps.append(tap)
        began = clock()
        try:
            await asyncio.sleep(seconds)
        finally:
            recorder.taps.remove(tap)
        if self.resets != resets:
            raise RuntimeError("lab.run_for: the lab was reset while it ran; its summary would mix two runs")
        return Summary(summarise(
            tap, mode="live", seed=self.seed, scenario=scenario, duration=clock() - began,
            sent=recorder.sent_total - sent, saturated=recorder.saturated_total - saturated,
            workloads=[(0.0, scenario.workload), *((at - began, w) for at, w in self.workloads[changes:])],
            end=self.gateway.snapshot(), trips=self.trips.counts - trips, fallbacks=metrics.fallbacks - fallbacks,
            events_refused=player.refused - refused, retries=Counter(metrics.decisions) - retries,
        ))

    def _apply(self, event: Event, source: str) -> None:
        self._change(event.patch, source)

    def _change(self, patch: Mapping[str, Any], source: str) -> Scenario:
        """Merge ``patch`` into the scenario in force and apply it: gateway, clients and the
        subscribers."""
        return self._switched(self.gateway.configure(patch, source))

    def _switched(self, scenario: Scenario) -> Scenario:
        if scenario.workload != self.clients.workload:
            self.workloads.append((self.gateway.clock(), scenario.workload))
        self.clients.apply(scenario.workload)
        for listener in self._listeners:
            listener(scenario)
        return scenario

    async def _configure(self, patch: Mapping[str, Any], source: str) -> Scenario:
        workload.check_reservation(config.merge(self.scenario, patch, source), source)  # as a virtual lab does
        return self._change(patch, source)

    async def _reset(self) -> Scenario:
        data = self.initial.to_dict(complete=True)  # every field: one left out would keep its change
        data.pop("events", None)
        scenario = self.gateway.configure(data, "lab.reset")
        self.gateway.reset()
        now = self.gateway.clock()
        self.recorder.clear(now)
        self.resets += 1
        self._play_events(now)
        return self._switched(scenario)

    async def _snapshot(self) -> Snapshot:
        return self.state_now()

    async def _timeseries(self) -> tuple[TimeSeries, list[BreakerChange]]:
        return self.recorder.timeseries(), list(self.recorder.transitions)

    async def _sample(self) -> None:
        """Close each bin once its edge has passed, with the gateway's state at that moment.
        Held back by a busy kernel, it closes the overdue bins one after the other: their
        counts are already right (see :class:`Recorder`), only their gauges are late."""
        clock = self.gateway.clock
        while True:
            await asyncio.sleep(max(0.0, self.recorder.next_edge() - clock()))
            self.recorder.close(self.gateway.snapshot())
