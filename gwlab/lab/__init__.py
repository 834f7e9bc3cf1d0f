"""The gateway inside a Jupyter kernel: start it, drive it, watch it, change it live.

::

    import gwlab.lab
    lab = gwlab.lab.start()      # gateway :8080, metrics :9090, 100 closed-loop clients
    lab.dashboard()              # sliders and live charts
    lab.run_for(5)               # block this cell 5 s; the charts keep moving
    lab.stop()

The gateway (:class:`gwlab.server.Gateway`), its metrics server and the clients run on an
event loop owned by a background thread (:mod:`gwlab.lab.loop` says why), behind the
synchronous :class:`~gwlab.lab.handle.Lab` handle; ``start_async``, ``run_for_async``,
``configure_async`` and ``stop_async`` are the awaitable variants.

One lab runs per kernel. Running a ``start`` cell again with the same arguments returns the
running lab; with other arguments it stops that lab and starts a new one: never two
servers, never a leaked port or thread. Unlike the command line, which fails when its port
is taken, a lab falls back to free ports and says which ones it got: a notebook must just
work. Each gateway has its own Prometheus registry, so a restart duplicates no series.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any, Mapping

from gwlab import config
from gwlab.config import ConfigError, Scenario
from gwlab.lab.handle import Lab, Summary

__all__ = ["Lab", "Summary", "current", "start", "start_async", "stop", "stop_async"]

_lock = threading.Lock()
_current: Lab | None = None
_request: tuple | None = None


def current() -> Lab | None:
    """The running lab of this kernel, if any."""
    return _current


def start(scenario: Scenario | Mapping[str, Any] | str | Path | None = None, *, seed: int = config.SEED,
          clients: int | None = None, rate: float | None = None, host: str = config.HOST,
          port: int = config.PORT, metrics_port: int = config.METRICS_PORT) -> Lab:
    """Start the lab: the gateway on ``port``, its metrics on ``metrics_port`` (free ports
    instead when those are taken) and the scenario's clients, or ``clients`` closed-loop
    clients, or open-loop arrivals at ``rate`` per second.

    ``scenario`` is a :class:`~gwlab.config.Scenario`, plain data in the TOML shape, the path
    of a TOML file, or ``None`` for the seed scenario. Returns the running lab when one was
    started with the same arguments. Raises :class:`~gwlab.config.ConfigError` for bad input."""
    lab, stale = _claim(_scenario(scenario, clients, rate), seed, host, port, metrics_port)
    if stale is not None:
        stale.stop()
    if not lab.running:
        try:
            lab._open().call(lab._start())
        except BaseException:
            lab.stop()
            raise
    return lab


async def start_async(scenario: Scenario | Mapping[str, Any] | str | Path | None = None, *,
                      seed: int = config.SEED, clients: int | None = None, rate: float | None = None,
                      host: str = config.HOST, port: int = config.PORT,
                      metrics_port: int = config.METRICS_PORT) -> Lab:
    """:func:`start`, awaitable: the kernel's loop stays free while the lab starts."""
    lab, stale = _claim(_scenario(scenario, clients, rate), seed, host, port, metrics_port)
    if stale is not None:
        await stale.stop_async()
    if not lab.running:
        try:
            await lab._open().call_async(lab._start())
        except BaseException:
            await lab.stop_async()
            raise
    return lab


def stop() -> None:
    """Stop the running lab, if any. Safe to call when none runs."""
    lab = _current
    if lab is not None:
        lab.stop()


async def stop_async() -> None:
    """:func:`stop`, awaitable."""
    lab = _current
    if lab is not None:
        await lab.stop_async()


def forget(lab: Lab) -> None:
    """``lab`` has stopped: it is no longer the kernel's lab."""
    global _current, _request
    with _lock:
        if _current is lab:
            _current = _request = None


def _claim(scenario: Scenario, seed: int, host: str, port: int, metrics_port: int) -> tuple[Lab, Lab | None]:
    """The lab for these arguments (the running one if they match) and the lab it replaces."""
    global _current, _request
    request = (scenario, seed, host, port, metrics_port)
    with _lock:
        running = _current
        if running is not None and _request == request:
            return running, None
        _current, _request = Lab(scenario, seed, host, port, metrics_port), request
        return _current, running


def _scenario(scenario: Scenario | Mapping[str, Any] | str | Path | None, clients: int | None,
              rate: float | None) -> Scenario:
    if scenario is None:
        base = Scenario()
    elif isinstance(scenario, Scenario):
        config.check(scenario, "gwlab.lab.start(scenario=...)")
        base = scenario
    elif isinstance(scenario, Mapping):
        base = config.from_dict(scenario, "gwlab.lab.start(scenario=...)")
    elif isinstance(scenario, (str, Path)):
        base = config.load(scenario)
    else:
        raise ConfigError(f"gwlab.lab.start: scenario = {type(scenario).__name__}: "
                          "expected a Scenario, a dict, a TOML path or None")
    if clients is not None and rate is not None:
        raise ConfigError(f"gwlab.lab.start: clients = {clients!r} and rate = {rate!r}: expected one of them, not both")
    if clients is not None:
        base = config.merge(base, {"workload": {"mode": "closed", "clients": clients}}, "gwlab.lab.start(clients=...)")
    if rate is not None:
        base = config.merge(base, {"workload": {"mode": "open", "rate": rate}}, "gwlab.lab.start(rate=...)")
    return base


atexit.register(stop)
