"""Item 6: the gateway's memory after a million requests.

The gateway (zero-latency providers, bucket set high) is loaded by ``wrk`` until it has
answered a million requests. Its resident size is read after a warm-up (allocator pools,
caches and connection buffers filled) and at the end; the growth between the two should be
a few MB at most: nothing is kept per request.
"""

from __future__ import annotations

import math

from benchmarks import common
from benchmarks.bare import PATH
from benchmarks.common import Row, Server, rss_bytes
from benchmarks.serving import has_uvloop
from gwlab.clients import BODY

REQUESTS, SMOKE_REQUESTS = 1_000_000, 2_000
WARM_UP_SECONDS = 5.0
CONNECTIONS = 64
TARGET_MB = 5.0
"""Growth allowed from after the warm-up to the end."""
MB = 1024 * 1024


def measure(smoke: bool = False) -> list[Row]:
    total = SMOKE_REQUESTS if smoke else REQUESTS
    # uvloop (when installed) only to get through a million requests sooner; the gateway
    # code and what it keeps per request are the same on either loop.
    loop = ["--uvloop"] if has_uvloop() and not smoke else []
    with Server("benchmarks.gateway_server", "--zero-latency", *loop) as gateway:
        url = gateway.url + PATH
        start = rss_bytes(gateway.pid)
        warm = common.wrk(url, BODY, 1 if smoke else WARM_UP_SECONDS, CONNECTIONS, gateway.pid)
        after_warm_up = rss_bytes(gateway.pid)
        served = warm.requests
        runs = [warm]
        while served < total:
            seconds = max(1, math.ceil((total - served) / warm.rate * 1.05))
            runs.append(common.wrk(url, BODY, seconds, CONNECTIONS, gateway.pid))
            served += runs[-1].requests
        end = rss_bytes(gateway.pid)
    growth = (end - after_warm_up) / MB
    measured = runs[1:] or runs
    rate = sum(r.requests for r in measured) / sum(r.seconds for r in measured)
    return [Row(
        "memory_growth_after_1m_requests" if not smoke else "memory_growth_smoke", growth, "MB",
        target=f"<= {TARGET_MB:g} MB", met=growth <= TARGET_MB, achieved_rate=rate,
        server_cpu=min(r.server_cpu for r in measured), load_generator="wrk (1 thread)", connections=CONNECTIONS,
        limited_by_load_generator=max(r.wrk_cpu for r in measured) >= common.CPU_BOUND,
        detail={"requests": served, "rss_start_mb": start / MB, "rss_after_warm_up_mb": after_warm_up / MB,
                "rss_end_mb": end / MB, "loop": "uvloop" if loop else "asyncio",
                "non_2xx": sum(r.non_2xx for r in runs)},
    )]
