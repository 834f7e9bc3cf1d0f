"""Forwarding to a real upstream: a gateway in front of a bare aiohttp upstream, against clients
calling that upstream directly.

The upstream is ``benchmarks.bare --completion`` (an OpenAI-compatible server doing the least:
it parses the request and answers a fixed ``chat.completion``). The gateway is ``gwlab
serve`` with one provider of ``kind = "openai"`` pointing at it and a limiter that refuses
nothing. Both run on :data:`~benchmarks.common.SERVER_CORE`, so that through the gateway
the core does the upstream's work and the gateway's: the throughput ratio is what forwarding
costs on top of answering. Load comes from the other core.

- Throughput: one ``wrk -t1 -c64``, direct and through the gateway in turn, round after
  round; medians, and their ratio.
- Added latency: open-loop Poisson arrivals at 1000/s (:mod:`benchmarks.openloop`), direct,
  then through the gateway; the client-side p50 and p99 of the second less the first's
  (aim: p99 added under 1 ms).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import common, openloop
from benchmarks.bare import PATH
from benchmarks.common import CPU_BOUND, GwlabServe, Row, Server, cpu_seconds
from gwlab.clients import BODY

CONNECTIONS = 64
ROUNDS, SECONDS = 7, 2.0
SMOKE_ROUNDS, SMOKE_SECONDS, SMOKE_CONNECTIONS = 1, 1.0, 8
RATE, LATENCY_SECONDS = 1000.0, 10.0
SMOKE_RATE, SMOKE_LATENCY_SECONDS = 200.0, 1.0
TARGET_ADDED_P99 = 0.001
"""The latency forwarding adds at the 99th percentile should stay under 1 ms (the issue's aim)."""


def scenario(upstream: str) -> str:
    """The gateway's scenario (TOML): one real upstream at ``upstream`` (its URL), and a
    limiter that refuses nothing."""
    return (f'[providers.upstream]\nkind = "openai"\nbase_url = "{upstream}/v1"\n'
            "[limiter]\nrate = 1e6\nburst = 1e6\n")


def measure(smoke: bool = False) -> list[Row]:
    rounds, seconds = (SMOKE_ROUNDS, SMOKE_SECONDS) if smoke else (ROUNDS, SECONDS)
    connections = SMOKE_CONNECTIONS if smoke else CONNECTIONS
    rate, latency_seconds = (SMOKE_RATE, SMOKE_LATENCY_SECONDS) if smoke else (RATE, LATENCY_SECONDS)
    with tempfile.TemporaryDirectory() as folder, Server("benchmarks.bare", "--completion") as upstream:
        path = Path(folder) / "upstream.toml"
        path.write_text(scenario(upstream.url))
        with GwlabServe("--config", str(path)) as gateway:
            pids = {"direct": [upstream.pid], "gateway": [upstream.pid, *gateway.pids]}
            urls = {"direct": upstream.url + PATH, "gateway": gateway.url + PATH}
            runs: dict[str, list[common.WrkResult]] = {name: [] for name in urls}
            cores: dict[str, list[float]] = {name: [] for name in urls}
            for _ in range(rounds):
                for name, url in urls.items():
                    cpu, started = sum(map(cpu_seconds, pids[name])), time.monotonic()
                    runs[name].append(common.wrk(url, BODY, seconds, connections, upstream.pid))
                    cores[name].append((sum(map(cpu_seconds, pids[name])) - cpu) / (time.monotonic() - started))
            opened, open_cpu = {}, {}
            for name, url in urls.items():
                cpu, started = sum(map(cpu_seconds, pids[name])), time.monotonic()
                opened[name] = openloop.drive(url.removesuffix(PATH), rate, latency_seconds)
                open_cpu[name] = (sum(map(cpu_seconds, pids[name])) - cpu) / (time.monotonic() - started)
    throughput = {name: statistics.median(r.rate for r in results) for name, results in runs.items()}
    cpu = {name: statistics.median(c) for name, c in cores.items()}
    wrk_bound = max(r.wrk_cpu for results in runs.values() for r in results) >= CPU_BOUND
    wrk_fields = dict(load_generator="wrk (1 thread)", connections=connections, limited_by_load_generator=wrk_bound)
    rows = [
        Row(f"forwarding_throughput_{name}", throughput[name], "requests/s", achieved_rate=throughput[name],
            server_cpu=cpu[name], detail={"rounds": [round(r.rate) for r in runs[name]],
                                          "non_2xx": sum(r.non_2xx for r in runs[name]),
                                          "socket_errors": sum(r.socket_errors for r in runs[name])}, **wrk_fields)
        for name in urls
    ]
    rows.append(Row("forwarding_throughput_ratio", throughput["gateway"] / throughput["direct"], "ratio",
                    achieved_rate=throughput["gateway"], server_cpu=cpu["gateway"],
                    detail={"note": "the gateway and its upstream share one core"}, **wrk_fields))
    quantiles = {name: {q: run.tally.latency.quantile(q) for q in (0.5, 0.99)} for name, run in opened.items()}
    limited = any(run.limited for run in opened.values())
    open_fields = dict(offered_rate=rate, achieved_rate=opened["gateway"].achieved_rate,
                       load_generator=opened["gateway"].generator, limited_by_load_generator=limited)
    detail = {name: {f"p{round(q * 100)}_ms": value * 1e3 for q, value in quantiles[name].items()} for name in opened}
    for q in (0.5, 0.99):
        added = quantiles["gateway"][q] - quantiles["direct"][q]
        target = dict(target=f"< {TARGET_ADDED_P99 * 1e3:g} ms", met=added < TARGET_ADDED_P99) if q == 0.99 else {}
        rows.append(Row(f"forwarding_added_latency_p{round(q * 100)}", added * 1e3, "ms", server_cpu=open_cpu["gateway"],
                        detail={**detail, "seconds": latency_seconds}, **target, **open_fields))
    return rows
