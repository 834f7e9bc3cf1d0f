"""Item 2: the gateway's own time per request at open-loop 1000 requests/s.

The gateway runs with zero-latency providers and a bucket too large to reject, probed from
inside (:class:`benchmarks.gateway_server.ProbedGateway`): handler time minus the time its
task waited for the provider call. The same open-loop traffic then goes to bare aiohttp, and
the client-side latency quantiles of the two are compared.
"""

from __future__ import annotations

from benchmarks import common, openloop
from benchmarks.bare import PATH
from benchmarks.common import CpuMeter, Row, Server
from gwlab.clients import BODY

RATE, SECONDS = 1000.0, 10.0
SMOKE_RATE, SMOKE_SECONDS = 200.0, 1.0
TARGET_P99 = 0.001
"""The gateway's own time per request at the 99th percentile should stay under 1 ms."""


def measure(smoke: bool = False) -> list[Row]:
    rate, seconds = (SMOKE_RATE, SMOKE_SECONDS) if smoke else (RATE, SECONDS)
    with Server("benchmarks.gateway_server", "--zero-latency", "--probe") as gateway:
        meter = CpuMeter(gateway.pid)
        gw_run = openloop.drive(gateway.url, rate, seconds)
        gw_cpu = meter.share()
        stats = gateway.get("/bench/stats")
        size = len(common.post(gateway.url + PATH, BODY))
    own = stats["own_time"]
    window = stats["last"] - stats["first"]
    arrived = sum(stats["codes"].values())
    achieved = arrived / window if window > 0 else 0.0
    with Server("benchmarks.bare", "--body-size", str(size)) as bare:
        meter = CpuMeter(bare.pid)
        bare_run = openloop.drive(bare.url, rate, seconds)
        bare_cpu = meter.share()
    p99 = own["p99"]
    fields = dict(offered_rate=rate, load_generator=gw_run.generator, connections=None)
    client = {name: {f"p{round(q * 100)}_ms": run.tally.latency.quantile(q) * 1e3 for q in (0.5, 0.99)}
              for name, run in (("gateway", gw_run), ("bare", bare_run))}
    return [
        Row("overhead_own_time_p99", p99 * 1e3, "ms", target=f"< {TARGET_P99 * 1e3:g} ms", met=p99 < TARGET_P99,
            achieved_rate=achieved, server_cpu=gw_cpu, limited_by_load_generator=gw_run.limited,
            detail={"p50_ms": own["p50"] * 1e3, "mean_ms": own["mean"] * 1e3, "max_ms": own["max"] * 1e3,
                    "requests": own["count"], "seconds": seconds,
                    "sent_per_load_generator": gw_run.achieved_rate}, **fields),
        Row("overhead_client_p50_vs_bare", client["gateway"]["p50_ms"] - client["bare"]["p50_ms"], "ms",
            achieved_rate=gw_run.achieved_rate, server_cpu=gw_cpu,
            limited_by_load_generator=gw_run.limited or bare_run.limited,
            detail={"gateway": client["gateway"], "bare": client["bare"], "bare_cpu": bare_cpu,
                    "bare_achieved_rate": bare_run.achieved_rate}, **fields),
        Row("overhead_client_p99_vs_bare", client["gateway"]["p99_ms"] - client["bare"]["p99_ms"], "ms",
            achieved_rate=gw_run.achieved_rate, server_cpu=gw_cpu,
            limited_by_load_generator=gw_run.limited or bare_run.limited,
            detail={"gateway": client["gateway"], "bare": client["bare"], "bare_cpu": bare_cpu,
                    "bare_achieved_rate": bare_run.achieved_rate}, **fields),
    ]
