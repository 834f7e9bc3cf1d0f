"""The live dashboard: sliders that change the running gateway, and charts that follow it.

The charts are one ``plotly.graph_objects.FigureWidget`` built by :func:`gwlab.plots.figure`
from the lab's rolling :class:`~gwlab.timeseries.TimeSeries`, the very code that draws a
simulation's ``result.figure()``; so a live run and its replay look alike. A task on the
lab's loop thread redraws them about three times a second (``config.LAB_REDRAW``), in one
``batch_update`` so the views open get one change per redraw, and only when a bin has closed
since the last redraw, with the axis ranges of :func:`gwlab.plots.axis_ranges` (the tokens
axis follows the burst). Each redraw also refreshes the figure's synced state, from which a
view opened later (a reloaded page) draws its first picture. It also refreshes a status line
with the values of this instant (tokens, each breaker's state and cooldown left), which the
binned charts show only at bin ends.

A slider change reaches the gateway through :meth:`Lab.configure` (thread-safe) and is in
force within the second. A change the scenario rules refuse (all weights zero, a maximum
cooldown below the base delay) is shown with the same message a scenario file would get,
and the control goes back to the value in force. Anything else that goes wrong in a
callback or a redraw is written to the Output widget at the bottom; a failing redraw also
pauses the charts, so one error is shown once.
"""

from __future__ import annotations

import asyncio
import copy
import html
import traceback
from typing import TYPE_CHECKING, Any, Callable

import ipywidgets as widgets
import plotly.graph_objects as go

from gwlab import balancer, config, plots
from gwlab.config import ConfigError, Scenario
from gwlab.live import cannot_keep_up
from gwlab.router import Snapshot
from gwlab.stats import ADMITTED

if TYPE_CHECKING:
    from gwlab.lab.handle import Lab

HEIGHT = 1000
"""Height of the live figure in pixels."""
WIDTH = "320px"
"""Width of a control, its description included."""
_STYLE = {"description_width": "125px"}
_Path = tuple[str, ...]


def _slider(kind: type, description: str, lo: float, hi: float, step: float, value: float):
    return kind(description=description, min=lo, max=max(hi, value), step=step, value=value,
                continuous_update=False, layout=widgets.Layout(width=WIDTH), style=_STYLE)


def _patch(path: _Path, value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    return out


def _read(scenario: Scenario, path: _Path) -> Any:
    data: Any = scenario.to_dict()
    for key in path:
        data = data[key]
    return data


class Dashboard:
    """Controls, status line and live charts of one :class:`~gwlab.lab.handle.Lab`.
    Display it (the last expression of a cell) or its :attr:`widget`."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.paused = False
        self._syncing = False
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
            widgets.HBox([self._providers(), self._gateway(), self._traffic()]),
            widgets.HBox([self.pause_button, self.reset_button]),
            self.error,
            self.figure,
            self.output,
        ])
        self._show_mode()
        lab.subscribe(self.sync)
        lab.on_stop(self.detach)

    @classmethod
    def of(cls, lab: Lab) -> Dashboard:
        """The dashboard of ``lab``, made and started on first use (one per lab)."""
        dashboard = lab.views.get("dashboard")
        if dashboard is None:
            dashboard = lab.views["dashboard"] = cls(lab)
            lab.call(dashboard.attach())
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
        for p in self.lab.scenario.providers:
            base = ("providers", p.name)
            rows += [
                self._control((*base, "weight"), _slider(widgets.FloatSlider, f"{p.name} weight", 0, 100, 1, p.weight)),
                self._control((*base, "latency"),
                              _slider(widgets.FloatSlider, f"{p.name} latency (s)", 0, 3, 0.05, p.latency)),
                self._control((*base, "error_rate"),
                              _slider(widgets.FloatSlider, f"{p.name} error rate", 0, 1, 0.01, p.error_rate)),
            ]
        return widgets.VBox([widgets.HTML("<b>Providers</b>"), *rows])

    def _gateway(self) -> widgets.Widget:
        s = self.lab.scenario
        return widgets.VBox([
            widgets.HTML("<b>Rate limiter</b>"),
            self._control(("limiter", "rate"), _slider(widgets.FloatSlider, "rate (/s)", 10, 3000, 10, s.limiter.rate)),
            self._control(("limiter", "burst"), _slider(widgets.FloatSlider, "burst", 1, 3000, 1, s.limiter.burst)),
            widgets.HTML("<b>Circuit breaker</b>"),
            self._control(("breaker", "failure_threshold"),
                          _slider(widgets.IntSlider, "threshold", 1, 20, 1, s.breaker.failure_threshold)),
            self._control(("breaker", "base_delay"),
                          _slider(widgets.FloatSlider, "base delay (s)", 0.1, 10, 0.1, s.breaker.base_delay)),
            self._control(("breaker", "max_cooldown"),
                          _slider(widgets.FloatSlider, "max cooldown (s)", 1, 120, 1, s.breaker.max_cooldown)),
        ])

    def _traffic(self) -> widgets.Widget:
        s = self.lab.scenario
        picker = widgets.Dropdown(description="balancer", options=list(balancer.names()), value=s.gateway.balancer,
                                  layout=widgets.Layout(width=WIDTH), style=_STYLE)
        mode = widgets.ToggleButtons(options=[("closed loop", "closed"), ("open loop", "open")],
                                     value=s.workload.mode, style={"button_width": "100px"})
        return widgets.VBox([
            widgets.HTML("<b>Balancer</b>"),
            self._control(("gateway", "balancer"), picker),
            widgets.HTML("<b>Clients</b>"),
            self._control(("workload", "mode"), mode),
            self._control(("workload", "clients"), _slider(widgets.IntSlider, "clients", 1, 1000, 1, s.workload.clients)),
            self._control(("workload", "rate"), _slider(widgets.FloatSlider, "offered (/s)", 10, 3000, 10, s.workload.rate)),
        ])

    def _changed(self, path: _Path, value: Any) -> None:
        if self._syncing:
            return
        try:
            self.lab.configure(_patch(path, value), source="dashboard")
        except ConfigError as exc:
            self.error.value = f'<span style="color:#d62728">refused: {html.escape(str(exc))}</span>'
            self.sync(self.lab.scenario)
            return
        self.error.value = ""
        if path == ("workload", "mode"):
            self._show_mode()

    def sync(self, scenario: Scenario) -> None:
        """Set every control to its value in ``scenario``. The dashboard subscribes this to
        its lab, so the controls follow every change: made here, from code or by a scripted
        event."""
        self._syncing = True
        try:
            for path, widget in self.controls.items():
                widget.value = _read(scenario, path)
        finally:
            self._syncing = False
        self._show_mode()

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
        fig = plots.figure(series, transitions, title=f"live: the last {config.LAB_WINDOW:g} s", height=HEIGHT)
        fig.update_layout(uirevision="live")
        return fig

    async def attach(self) -> None:
        """Start redrawing (on the lab's loop)."""
        self._task = asyncio.create_task(self._redraw_loop())

    async def detach(self) -> None:
        """Stop redrawing; the charts keep their last picture and the controls are disabled."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for widget in self.controls.values():
            widget.disabled = True
        self.pause_button.disabled = self.reset_button.disabled = True
        self.status.value = "<b>the lab is stopped</b>"

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
        self.status.value = self._status(self.lab.gateway.snapshot())
        if self.paused or recorder.version == self._drawn:
            return
        self._drawn = recorder.version
        series, transitions = self._data()
        new = self._figure(series, transitions)
        fig = self.figure
        if [t.name for t in fig.data] != [t.name for t in new.data]:
            fig.data = ()
            fig.add_traces(list(new.data))
        else:
            with fig.batch_update():
                for old, fresh in zip(fig.data, new.data):
                    if fresh.type == "heatmap":
                        old.update(x=fresh.x, y=fresh.y, z=fresh.z)
                    else:
                        old.update(x=fresh.x, y=fresh.y, text=fresh.text)
        fig.update_layout(plots.axis_ranges(series))  # the tokens axis follows the burst
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
        admitted = last.tally.count(ADMITTED) if last else 0
        parts = [f"<b>t = {recorder.current.start:.1f} s</b>", f"{answered:.0f} answers/s",
                 f"tokens {snapshot.tokens:.0f} / {snapshot.burst:.0f}"]
        if last and recorder.saturated_last:
            parts.insert(2, cannot_keep_up(last.offered / last.width, recorder.saturated_last / last.width))
        for name, p in snapshot.providers.items():
            share = f"{100 * last.tally.count(ADMITTED, name) / admitted:.0f}%" if admitted else "-"
            state = p.state.value
            if p.cooldown_left > 0:
                state += f", {p.cooldown_left:.1f} s left"
            parts.append(f"{name}: {share} ({state})")
        return " · ".join(parts)
