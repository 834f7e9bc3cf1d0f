"""gwlab: the resilience patterns of an LLM API gateway, to run, measure and learn from.

The policies (token bucket, load balancers, circuit breaker, the request flow) are a pure
core that takes the time as an argument; the aiohttp server, the virtual-time simulator and
the notebooks are shells around the same objects.

``gwlab.simulate`` and ``gwlab.SimResult`` are loaded from :mod:`gwlab.sim` when first used,
so that importing one part (``import gwlab.limiter``) loads only that part. Where the
``resource`` module lacks ``getpagesize`` (Pyodide), importing gwlab adds it
(:func:`gwlab.needs.fill_getpagesize`), for prometheus-client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gwlab.needs import fill_getpagesize

try:
    import resource
except ImportError:  # not Unix: nothing calls resource.getpagesize there
    pass
else:
    fill_getpagesize(resource)

__version__ = "0.1.0"

__all__ = ["SimResult", "simulate"]

if TYPE_CHECKING:
    from gwlab.sim import SimResult, simulate


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gwlab import sim

        return getattr(sim, name)
    raise AttributeError(f"module 'gwlab' has no attribute {name!r}")
