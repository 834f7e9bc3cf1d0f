"""The live dashboard: sliders that change the running gateway, and charts that follow it.

The charts are one ``plotly.graph_objects.FigureWidget`` built by :func:`gwlab.plots.figure`
from the lab's rolling :class:`~gwlab.timeseries.TimeSeries`, the very code that draws a
simulation's ``result.figure()``; so a live run and its replay look alike. A task on the
lab's loop thread redraws them about three times a second (``config.LAB_REDRAW``) from the
panels' new traces (:func:`gwlab.plots.panels`; laying a whole figure out again would cost
several times more, and the loop's gateway and clients wait while it draws), in one
``batch_update`` so the views open get one message per redraw, and only when a bin has closed
since the last redraw, with the axis ranges of :func:`gwlab.plots.axis_ranges` (the tokens
axis follows the burst). Each redraw also refreshes the figure's synced state, from which a
view opened later (a reloaded page) draws its first picture. It also refreshes a status line
with the values of this instant (tokens, each breaker's state and cooldown left), which the
binned charts show only at bin ends.

The controls are the sliders of :mod:`gwlab.lab.controls`, which show the value they hold
and land on the value they are given, in columns that wrap rather than overflow. They follow
the scenario in force: the dashboard subscribes to its lab (:meth:`Lab.subscribe`), which
announces every change (a slider, ``lab.configure`` from a cell, a scripted event, a reset),
and sets each control to its value; a control set to the value in force sends nothing back.
A slider change reaches the gateway through :meth:`Lab.configure` (thread-safe) and is in
force within the second. A change the scenario rules refuse (all weights zero, a maximum
cooldown below the base delay) is shown with the same message a scenario file would get,
and the control goes back to the value in force. Anything else that goes wrong in a
callback or a redraw is written to the Output widget at the bottom; a failing redraw also
pauses the charts, so one error is shown once.

It draws a live lab (:class:`~gwlab.lab.handle.Lab`) and a virtual one
(:class:`~gwlab.lab.virtual.VirtualLab`) alike, through what both handles offer: their
``recorder`` (the rolling bins, the breaker changes), ``state_now()`` (the gateway's state
this instant, read on the thread that runs the lab), ``call`` and ``mode``, which the status
line names first.
"""

from __future__ import annotations

import asyncio
import copy
import html
import traceback
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import ipywidgets as widgets
import plotly.graph_objects as go

from gwlab import balancer, config, plots
from gwlab.config import ConfigError, Scenario
from gwlab.lab.controls import float_slider, int_slider, log_slider, show
from gwlab.live import cannot_keep_up, seconds_text
from gwlab.router import Snapshot

if TYPE_CHECKING:
    from gwlab.lab.handle import Lab
    from gwlab.lab.virtual import VirtualLab

HEIGHT = 1000
"""Height of the live figure in pixels, for the five panels of :data:`gwlab.plots.PANELS`; a
scenario with LLM traffic adds its three panels in proportion."""
DESCRIPTION_WIDTH = "130px"
"""Width of a control's description: the longest, "max cooldown (s)", fits."""
COLUMN_WIDTH = "300px"
"""Width a column of controls starts from and never goes below: the columns share the
output's width and wrap onto a new row where they would not fit, so none overflows."""
MODE_BUTTON_WIDTH = "100px"
"""Width of each of the closed loop / open loop buttons."""
_STYLE = {"description_width": DESCRIPTION_WIDTH}
_Path = tuple[str, ...]


class Slider(NamedTuple):
    """How the dashboard shows one number of the scenario: its label, its range (widened to
    hold any value in force) and its kind: ``"linear"`` in steps of ``step``, ``"log"``
    (lands on any value, for quantities that span decades) or ``"int"``."""

    label: str
    low: float
    high: float
    step: float | None
    kind: str


SLIDERS = {
    "weight": Slider("weight", 0, 100, 1, "linear"),
    "latency": Slider("latency (s)", 0, 3, 0.01, "linear"),
    "error_rate": Slider("error rate", 0, 1, 0.001, "linear"),
    "limiter.rate": Slider("rate (/s)", 1, 10_000, None, "log"),
    "limiter.burst": Slider("burst", 1, 10_000, None, "log"),
    "breaker.failure_threshold": Slider("threshold", 1, 20, 1, "int"),
    "breaker.base_delay": Slider("base delay (s)", 0.01, 100, None, "log"),
    "breaker.max_cooldown": Slider("max cooldown (s)", 0.1, 1000, None, "log"),
    "retry.attempts": Slider("retry attempts", 1, 10, 1, "int"),
    "workload.clients": Slider("clients", 1, 1000, 1, "int"),
    "workload.rate": Slider("offered (/s)", 1, 10_000, None, "log"),
    "ttft": Slider("TTFT (s)", 0, 5, 0.01, "linear"),
    "decode_rate": Slider("decode (tokens/s)", 1, 1000, None, "log"),
    "capacity": Slider("capacity", 0, 256, 1, "int"),
    "workload.stream_share": Slider("streaming share", 0, 1, 0.01, "linear"),
    "workload.timeout": Slider("client timeout (s)", 0, 10, 0.1, "linear"),
}
"""The dashboard's sliders by field (a provider's fields by their own name). The LLM ones
(:data:`LLM_PROVIDER_FIELDS`, the streaming share) are shown for a scenario with LLM
traffic (:attr:`gwlab.config.Scenario.llm`), with its charts."""
PROVIDER_FIELDS = ("weight", "latency", "error_rate")
LLM_PROVIDER_FIELDS = ("ttft", "decode_rate", "capacity")


def _fill() -> widgets.Layout:
    """A control's layout: as wide as its column (a layout of its own, as the clients and
    offered-rate controls are hidden one at a time)."""
    return widgets.Layout(width="auto")


def _slider(field: str, value: float, prefix: str = "") -> widgets.ValueWidget:
    """The slider of ``field`` (a key of :data:`SLIDERS`) holding ``value``, its label after
    ``prefix``."""
    spec = SLIDERS[field]
    label = f"{prefix}{spec.label}"
    if spec.kind == "log":
        return log_slider(label, value, spec.low, spec.high, layout=_fill(), style=_STYLE)
    if spec.kind == "int":
        return int_slider(label, value, spec.low, spec.high, layout=_fill(), style=_STYLE)
    return float_slider(label, value, spec.low, spec.high, spec.step, layout=_fill(), style=_STYLE)


def _patch(path: _Path, value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    return out


def _read(scenario: Scenario, path: _Path) -> Any:
    """The value in force of the field at ``path`` (``(section, field)`` or ``("providers",
    name, field)``), read from the scenario itself: its plain data leaves out the fields
    added after the first release while they hold their defaults."""
    section = scenario.provider(path[1]) if path[0] == "providers" else getattr(scenario, path[0])
    return getattr(section, path[-1])


class Dashboard:
    """Controls, status line and live charts of one :class:`~gwlab.lab.handle.Lab`.
    Display it (the last expression of a cell) or its :attr:`widget`."""

    def __init__(self, lab: Lab | VirtualLab) -> None:
        self.lab = lab
        self.llm = lab.scenario.llm
        """Whether it shows the LLM controls and charts: decided by the scenario it starts with."""
        self.paused = False
        self._drawn = -1
        self._task: asyncio.Task | None = None
        self.controls: dict[_Path, widgets.ValueWidget] = {}
        self.status = widgets.HTML()
        self.error = widgets.HTML()
        self.output = widgets.Output(layout=widgets.Layout(max_height="200px", overflow="auto"))
        self.figure = go.FigureWidget(self._figure(lab.timeseries(), lab.transitions()))
        self.pause_button = widgets.Button(description="Pause charts", icon="pause")
        self.reset_button = widgets.Button(description="Reset", icon="undo",
                                           tooltip="back to the starting scenario, a full bucket, "
                                                   "healthy breakers and empty charts")
        self.pause_button.on_click(self._guard(self._toggle_pause))
        self.reset_button.on_click(self._guard(self._reset))
        self.widget = widgets.VBox([
            self.status,
            widgets.HBox([self._providers(), self._gateway(), self._traffic()],
                         layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([self.pause_button, self.reset_button]),
            self.error,
            self.figure,
            self.output,
        ])
        self._show_mode()

    @classmethod
    def of(cls, lab: Lab | VirtualLab) -> Dashboard:
        """The dashboard of ``lab``, made and started on first use (one per lab). Raises
        :class:`RuntimeError`, keeping nothing, where it cannot redraw (see :meth:`attach`)."""
        dashboard = lab.views.get("dashboard")
        if dashboard is None:
            dashboard = cls(lab)
            lab.call(dashboard.attach())
            lab.subscribe(dashboard.sync)
            lab.on_stop(dashboard.detach)
            lab.views["dashboard"] = dashboard
        return dashboard

    # -- display ----------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "gwlab live dashboard (shown while the kernel runs)"
        return bundle

    # -- the controls -----------------------------------------------------------------------

    def _control(self, path: _Path, widget: widgets.ValueWidget) -> widgets.ValueWidget:
        self.controls[path] = widget
        widget.observe(self._guard(lambda change: self._changed(path, change["new"])), names="value")
        return widget

    def _providers(self) -> widgets.Widget:
        rows = []
        fields = PROVIDER_FIELDS + LLM_PROVIDER_FIELDS if self.llm else PROVIDER_FIELDS
        for p in self.lab.scenario.providers:
            for field in fields:
                rows.append(self._control(("providers", p.name, field),
                                          _slider(field, getattr(p, field), f"{p.name} ")))
        return self._column("Providers", rows)

    def _gateway(self) -> widgets.Widget:
        s = self.lab.scenario
        limiter = [self._control(("limiter", f), _slider(f"limiter.{f}", getattr(s.limiter, f)))
                   for f in ("rate", "burst")]
        breaker = [self._control(("breaker", f), _slider(f"breaker.{f}", getattr(s.breaker, f)))
                   for f in ("failure_threshold", "base_delay", "max_cooldown")]
        fallback = widgets.Dropdown(description="fallback", options=list(config.FALLBACKS), value=s.gateway.fallback,
                                    layout=_fill(), style=_STYLE)
        attempts = self._control(("retry", "attempts"), _slider("retry.attempts", s.retry.attempts))
        return self._column("Rate limiter", [*limiter, widgets.HTML("<b>Circuit breaker</b>"), *breaker,
                                             self._control(("gateway", "fallback"), fallback), attempts])

    def _traffic(self) -> widgets.Widget:
        s = self.lab.scenario
        picker = widgets.Dropdown(description="balancer", options=list(balancer.names()), value=s.gateway.balancer,
                                  layout=_fill(), style=_STYLE)
        mode = widgets.ToggleButtons(options=[("closed loop", "closed"), ("open loop", "open")],
                                     value=s.workload.mode, style={"button_width": MODE_BUTTON_WIDTH})
        policy = widgets.Dropdown(description="retry policy", options=list(config.CLIENT_RETRY_POLICIES),
                                  value=s.workload.retry_policy, layout=_fill(), style=_STYLE)
        return self._column("Balancer", [
            self._control(("gateway", "balancer"), picker),
            widgets.HTML("<b>Clients</b>"),
            self._control(("workload", "mode"), mode),
            self._control(("workload", "clients"), _slider("workload.clients", s.workload.clients)),
            self._control(("workload", "rate"), _slider("workload.rate", s.workload.rate)),
            *([self._control(("workload", "stream_share"), _slider("workload.stream_share", s.workload.stream_share))]
              if self.llm else []),
            self._control(("workload", "retry_policy"), policy),
            self._control(("workload", "timeout"), _slider("workload.timeout", s.workload.timeout)),
        ])

    @staticmethod
    def _column(title: str, children: list[widgets.Widget]) -> widgets.VBox:
        """A column of controls under ``title``: it shares the row with the others, never
        narrower than :data:`COLUMN_WIDTH`."""
        return widgets.VBox([widgets.HTML(f"<b>{title}</b>"), *children],
                            layout=widgets.Layout(flex=f"1 1 {COLUMN_WIDTH}", min_width=COLUMN_WIDTH))

    def _changed(self, path: _Path, value: Any) -> None:
        if value == _read(self.lab.scenario, path):
            return  # the value in force, set by sync: not a change to send back
        try:
            self.lab.configure(_patch(path, value), source="dashboard")
        except ConfigError as exc:
            self.sync(self.lab.scenario)  # the control back to the value in force
            self.error.value = f'<span style="color:#d62728">refused: {html.escape(str(exc))}</span>'
            return
        self.error.value = ""
        if path == ("workload", "mode"):
            self._show_mode()

    def sync(self, scenario: Scenario) -> None:
        """Set every control to its value in ``scenario``. The dashboard subscribes this to
        its lab, so the controls follow every change: made here, from code or by a scripted
        event. A control set to the value in force sends nothing back (see :meth:`_changed`),
        and a slider widens its range to hold a value beyond it rather than clamp it. The
        line of a change refused before is cleared: the scenario has moved on since."""
        for path, widget in self.controls.items():
            show(widget, _read(scenario, path))
        self._show_mode()
        self.error.value = ""

    def _show_mode(self) -> None:
        closed = self.lab.scenario.workload.mode == "closed"
        self.controls["workload", "clients"].layout.display = None if closed else "none"
        self.controls["workload", "rate"].layout.display = "none" if closed else None

    def _toggle_pause(self, _: Any = None) -> None:
        self.set_paused(not self.paused)

    def set_paused(self, paused: bool) -> None:
        """Freeze the charts (the run goes on), or let them follow it again."""
        self.paused = paused
        self.pause_button.description = "Resume charts" if paused else "Pause charts"
        self.pause_button.icon = "play" if paused else "pause"

    def _reset(self, _: Any = None) -> None:
        self.lab.reset()
        self.error.value = ""

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` with any exception written to the Output widget instead of being lost."""

        def guarded(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                self.output.append_stderr(traceback.format_exc())

        return guarded

    # -- the charts (on the lab's loop thread) ------------------------------------------------

    def _data(self):
        return self.lab.recorder.timeseries(), list(self.lab.recorder.transitions)

    def _figure(self, series, transitions) -> go.Figure:
        panels = len(plots.PANELS) + (len(plots.LLM_PANELS) if self.llm else 0)
        fig = plots.figure(series, transitions, title=f"live: the last {config.LAB_WINDOW:g} s",
                           height=HEIGHT * panels // len(plots.PANELS), llm=self.llm)
        fig.update_layout(uirevision="live")
        return fig

    async def attach(self) -> None:
        """Start redrawing (on the lab's loop). Raises :class:`RuntimeError` when no event
        loop runs: a virtual lab runs on the caller's, which a plain script does not have."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(f"lab.dashboard(): no event loop is running to redraw the {self.lab.mode} lab's "
                               "charts on: expected a notebook (its kernel runs one) or a call from a coroutine "
                               "(asyncio.run)") from None
        self._task = loop.create_task(self._redraw_loop())

    async def detach(self) -> None:
        """Stop redrawing; the charts keep their last picture and the controls are disabled
        (all before its first wait, for the virtual lab's stop)."""
        for widget in self.controls.values():
            widget.disabled = True
        self.pause_button.disabled = self.reset_button.disabled = True
        self.status.value = "<b>the lab is stopped</b>"
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _redraw_loop(self) -> None:
        while True:
            await asyncio.sleep(config.LAB_REDRAW)
            try:
                self.redraw()
            except Exception:
                self.output.append_stderr(traceback.format_exc())
                self.set_paused(True)

    def redraw(self) -> None:
        """Refresh the status line, and the charts if a bin closed since the last redraw."""
        recorder = self.lab.recorder
        self.status.value = self._status(self.lab.state_now())
        if self.paused or recorder.version == self._drawn:
            return
        self._drawn = recorder.version
        series, transitions = self._data()
        fresh_traces = [trace for traces in plots.panels(series, transitions, self.llm) for trace in traces]
        fig = self.figure
        # The same traces every time (plots.panels), with new points: no new layout (building
        # one costs several times more), and one message to each view.
        with fig.batch_update():
            for old, fresh in zip(fig.data, fresh_traces, strict=True):
                if fresh.type == "heatmap":
                    old.update(x=fresh.x, y=fresh.y, z=fresh.z)
                else:
                    old.update(x=fresh.x, y=fresh.y, text=fresh.text, visible=fresh.visible)
            fig.update_layout(plots.axis_ranges(series, self.llm))  # the tokens axis follows the burst
        # The changes above reach the views open now as deltas; a view opened later (a
        # reloaded page) starts from the figure's synced state, which plotly refreshes only
        # when the figure is displayed. Without this it would draw the picture of that moment
        # and apply the next deltas to the wrong traces: a chart frozen after a reload.
        fig._widget_data = copy.deepcopy(fig._data)
        fig._widget_layout = copy.deepcopy(fig._layout_obj._props)

    def _status(self, snapshot: Snapshot) -> str:
        recorder = self.lab.recorder
        last = recorder.bins[-1] if recorder.bins else None
        answered = last.tally.count() / last.width if last else 0.0
        admitted = last.tally.admitted() if last else 0
        parts = [f"<b>{self.lab.mode}</b>", f"<b>t = {recorder.current.start:.1f} s</b>", f"{answered:.0f} answers/s",
                 f"tokens {snapshot.tokens:.0f} / {snapshot.burst:.0f}"]
        if self.llm and last:
            ttft = last.tally.ttft
            p50, p99 = seconds_text(ttft.quantile(0.5)), seconds_text(ttft.quantile(0.99))
            parts.insert(3, f"TTFT p50 {p50}, p99 {p99}, {last.tally.output_tokens / last.width:.0f} output tokens/s")
        if last and recorder.saturated_last:
            parts.insert(3, cannot_keep_up(last.offered / last.width, recorder.saturated_last / last.width))
        for name, p in snapshot.providers.items():
            share = f"{100 * last.tally.admitted(name) / admitted:.0f}%" if admitted else "-"
            state = p.state.value
            if p.cooldown_left > 0:
                state += f", {p.cooldown_left:.1f} s left"
            if p.busy or p.waiting:
                state += f", {p.busy} running, {p.waiting} waiting"
            parts.append(f"{name}: {share} ({state})")
        return " · ".join(parts)
