"""gwlab: the resilience patterns of an LLM API gateway, to run, measure and learn from.

The policies (token bucket, load balancers, circuit breaker, the request flow) are a pure
core that takes the time as an argument; the aiohttp server, the virtual-time simulator and
the notebooks are shells around the same objects.

``gwlab.simulate`` and ``gwlab.SimResult`` are loaded from :mod:`gwlab.sim` when first used,
so that importing one part (``import gwlab.limiter``) loads only that part. Where the
``resource`` module lacks ``getpagesize`` (Pyodide), importing gwlab adds it
(the page size ``os.sysconf("SC_PAGESIZE")`` reports, as CPython's own answers), because
prometheus-client reads it when imported and catches only an ``ImportError``: the browser
site serves prometheus-client for tutorial 4's registry of its own.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

try:
    import resource
except ImportError:  # not Unix: nothing calls resource.getpagesize there
    pass
else:
    if not hasattr(resource, "getpagesize"):
        resource.getpagesize = lambda: os.sysconf("SC_PAGESIZE")

__version__ = "0.1.0"

__all__ = ["SimResult", "simulate"]

if TYPE_CHECKING:
    from gwlab.sim import SimResult, simulate


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gwlab import sim

        return getattr(sim, name)
    raise AttributeError(f"module 'gwlab' has no attribute {name!r}")
