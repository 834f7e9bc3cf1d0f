"""gwlab: the resilience patterns of an LLM API gateway, to run, measure and learn from.

The policies (token bucket, load balancers, circuit breaker, the request flow) are a pure
core that takes the time as an argument; the aiohttp server, the virtual-time simulator and
the notebooks are shells around the same objects.
"""

__version__ = "0.1.0"

from gwlab.sim import SimResult, simulate

__all__ = ["SimResult", "simulate"]
