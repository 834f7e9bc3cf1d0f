"""The gateway inside a Jupyter kernel: start it, drive it, watch it, change it live.

::

    import gwlab.lab
    lab = gwlab.lab.start()      # gateway :8080, metrics :9090, 100 closed-loop clients
    lab.dashboard()              # sliders and live charts
    lab.run_for(5)               # block this cell 5 s; the charts keep moving
    lab.stop()

    lab = gwlab.lab.start(mode="virtual")   # the simulator at wall-clock pace: no sockets

The gateway (:class:`gwlab.server.Gateway`), its metrics server and the clients run on an
event loop owned by a background thread (:mod:`gwlab.lab.loop` says why), behind the
synchronous :class:`~gwlab.lab.handle.Lab` handle; ``start_async``, ``run_for_async``,
``configure_async`` and ``stop_async`` are the awaitable variants.

One lab runs per kernel. Running a ``start`` cell again with the same arguments returns the
running lab; with other arguments it stops that lab and starts a new one: never two
servers, never a leaked port or thread. Starts and stops from several threads, or
``start_async`` calls gathered on one loop, take turns on one lock: every call waits for
the one before it, and those with the same arguments get the same lab. Unlike the command line, which fails when its port
is taken, a lab falls back to free ports and says which ones it got: a notebook must just
work. Each gateway has its own Prometheus registry, so a restart duplicates no series.

``mode="virtual"`` (:mod:`gwlab.lab.virtual`, the default where there are no sockets: in the
browser, on Pyodide) runs the simulator at wall-clock pace on the kernel's own loop instead,
behind a handle with the same surface; its numbers depend on the scenario and seed alone.
Only the live mode needs aiohttp: it is imported when a live lab starts.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from gwlab import config
from gwlab.config import ConfigError, Scenario
from gwlab.lab.summary import Summary
from gwlab.lab.virtual import VirtualLab

if TYPE_CHECKING:
    from gwlab.lab.handle import Lab

__all__ = ["Lab", "Summary", "VirtualLab", "current", "start", "start_async", "stop", "stop_async"]


def __getattr__(name: str) -> Any:
    if name == "Lab":  # imported on use: it needs aiohttp
        from gwlab.lab.handle import Lab

        return Lab
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MODE_VARIABLE = "GWLAB_LAB_MODE"
"""The environment variable that chooses the lab's mode when a start does not."""
_lock = threading.Lock()
"""Held around every start and stop: the kernel's one lab slot changes in one step at a time."""
_current: Lab | VirtualLab | None = None
_request: tuple | None = None


def current() -> Lab | VirtualLab | None:
    """The running lab of this kernel, if any."""
    return _current


def start(scenario: Scenario | Mapping[str, Any] | str | Path | None = None, *, seed: int = config.SEED,
          clients: int | None = None, rate: float | None = None, host: str = config.HOST,
          port: int = config.PORT, metrics_port: int = config.METRICS_PORT,
          mode: str | None = None) -> Lab | VirtualLab:
    """Start the lab: the gateway on ``port``, its metrics on ``metrics_port`` (free ports
    instead when those are taken) and the scenario's clients, or ``clients`` closed-loop
    clients, or open-loop arrivals at ``rate`` per second.

    ``mode`` is one of :data:`gwlab.config.LAB_MODES`: ``"live"`` (a :class:`Lab`) or
    ``"virtual"`` (a :class:`VirtualLab`: the simulator at wall-clock pace with ``seed``, no
    sockets, ``host`` and the ports unused); ``None``, the environment's ``GWLAB_LAB_MODE``
    when set (every tutorial in virtual mode on CPython: ``GWLAB_LAB_MODE=virtual make
    lab``), else :data:`gwlab.config.LAB_MODE` (live on CPython, virtual on Pyodide).

    ``scenario`` is a :class:`~gwlab.config.Scenario`, plain data in the TOML shape, the path
    of a TOML file, or ``None`` for the seed scenario. Returns the running lab when one was
    started with the same arguments. Raises :class:`~gwlab.config.ConfigError` for bad input
    (``seed`` as :func:`gwlab.simulate` takes it, ``host`` as ``gwlab run --host`` takes it
    and, in live mode, one this machine can listen on, ports from 0 to
    :data:`gwlab.config.MAX_PORT`, not the same one twice), before anything starts or stops.

    Safe from any thread: calls made at once run one after the other, so the kernel holds at
    most one lab, and a call with the same arguments gets the lab another one started."""
    request = (_scenario(scenario, clients, rate), config.run_argument("seed", seed, "gwlab.lab.start: seed"),
               config.run_argument("host", host, "gwlab.lab.start: host"),
               config.run_argument("port", port, "gwlab.lab.start: port"),
               config.run_argument("port", metrics_port, "gwlab.lab.start: metrics_port"), _mode(mode))
    config.distinct_ports(request[3], request[4], names=("gwlab.lab.start: port", "metrics_port"))
    with _lock:
        return _start(request)


async def start_async(scenario: Scenario | Mapping[str, Any] | str | Path | None = None, *,
                      seed: int = config.SEED, clients: int | None = None, rate: float | None = None,
                      host: str = config.HOST, port: int = config.PORT,
                      metrics_port: int = config.METRICS_PORT, mode: str | None = None) -> Lab | VirtualLab:
    """:func:`start`, awaitable: it waits for the lab's lock in a worker thread, so the
    kernel's loop stays free while another call holds it and while the lab starts. A
    virtual lab starts at once on the running loop (its pacing runs there; Pyodide has no
    threads)."""
    if _mode(mode) == "virtual":
        return start(scenario, seed=seed, clients=clients, rate=rate, host=host, port=port,
                     metrics_port=metrics_port, mode=mode)
    return await asyncio.to_thread(start, scenario, seed=seed, clients=clients, rate=rate, host=host,
                                   port=port, metrics_port=metrics_port, mode=mode)


def stop() -> None:
    """Stop the running lab, if any. Safe to call when none runs, and from any thread."""
    with _lock:
        _drop()


async def stop_async() -> None:
    """:func:`stop`, awaitable (a virtual lab stops at once)."""
    if isinstance(_current, VirtualLab):
        stop()
    else:
        await asyncio.to_thread(stop)


def release(lab: Lab | VirtualLab) -> None:
    """Stop ``lab`` (its handle's :meth:`~Lab.stop`) as one step among the starts and stops,
    and free the kernel's slot if ``lab`` held it."""
    global _current, _request
    with _lock:
        lab._halt()
        if _current is lab:
            _current = _request = None


def _start(request: tuple) -> Lab | VirtualLab:
    """The running lab if it was started for ``request``, else a new one started in its
    place (with the lock held). The new lab is made, which checks that its scenario can run,
    before the running one stops: a start refused for its scenario leaves that one running."""
    global _current, _request
    if _current is not None and _request == request:
        return _current
    scenario, seed, host, port, metrics_port, mode = request
    if mode == "virtual":
        lab: Lab | VirtualLab = VirtualLab(scenario, seed)
    else:
        from gwlab.lab.handle import Lab

        lab = Lab(scenario, seed, host, port, metrics_port)
    _drop()
    try:
        lab._begin()
    except BaseException:
        lab._halt()
        raise
    _current, _request = lab, request
    return lab


def _drop() -> None:
    """Stop the kernel's lab, if any, and empty its slot (with the lock held)."""
    global _current, _request
    if _current is not None:
        _current._halt()
        _current = _request = None


def _mode(mode: str | None) -> str:
    where = "gwlab.lab.start: mode"
    if mode is None:
        mode = os.environ.get(MODE_VARIABLE) or config.LAB_MODE
        where = f"gwlab.lab.start: the environment's {MODE_VARIABLE}"
    if mode not in config.LAB_MODES:
        raise ConfigError(f"{where} = {mode!r}: expected one of {', '.join(map(repr, config.LAB_MODES))}")
    return mode


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
