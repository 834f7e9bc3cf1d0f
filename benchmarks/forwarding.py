"""Forwarding to a real upstream: a gateway in front of a bare aiohttp upstream, against clients
calling that upstream directly.

The upstream is ``benchmarks.bare --completion`` (an OpenAI-compatible server doing the least:
it parses the request and answers a fixed ``chat.completion``). The gateway is ``gwlab
serve`` with one provider of ``kind = "openai"`` pointing at it and a limiter that refuses
nothing. Load comes from :data:`~benchmarks.common.LOAD_CORE`.

- Throughput: the gateway and the upstream both on :data:`~benchmarks.common.SERVER_CORE`,
  so that through the gateway the core does the upstream's work and the gateway's: the
  ratio is what forwarding costs on top of answering. One ``wrk -t1 -c64``, direct and
  through the gateway in turn, round after round; medians, and their ratio.
- Added latency: the gateway alone on the server core, the upstream moved to the load core,
  where it serves both runs: what the gateway adds is then its own time and the extra hop,
  not the upstream's work queued behind the gateway's on one core (a gateway runs on cores
  of its own, not its upstream's). Open-loop Poisson arrivals at 1000/s
  (:mod:`benchmarks.openloop`), direct, then through the gateway; the client-side p50 and
  p99 of the second less the first's (aim: p99 added under 1 ms).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import pair
from benchmarks.common import LOAD_CORE, GwlabServe, Row, Server, pin

SIZES = pair.Sizes(rounds=7, seconds=2.0, connections=64, rate=1000.0, latency_seconds=10.0)
SMOKE_SIZES = pair.Sizes(rounds=1, seconds=1.0, connections=8, rate=200.0, latency_seconds=1.0)
TARGET_ADDED_P99 = 0.001
"""The latency forwarding adds at the 99th percentile should stay under 1 ms (the issue's aim)."""
LATENCY_PLACEMENT = "the gateway alone on its core; the upstream on the load generator's"
"""Where the servers run while the added latency is measured."""


def scenario(upstream: str) -> str:
    """The gateway's scenario (TOML): one real upstream at ``upstream`` (its URL), and a
    limiter that refuses nothing."""
    return (f'[providers.upstream]\nkind = "openai"\nbase_url = "{upstream}/v1"\n'
            "[limiter]\nrate = 1e6\nburst = 1e6\n")


def measure(smoke: bool = False) -> list[Row]:
    with tempfile.TemporaryDirectory() as folder, Server("benchmarks.bare", "--completion") as upstream:
        path = Path(folder) / "upstream.toml"
        path.write_text(scenario(upstream.url))
        with GwlabServe("--config", str(path)) as gateway:
            sides = (pair.Side(upstream.url, (upstream.pid,)), pair.Side(gateway.url, (*gateway.pids, upstream.pid)))
            return pair.compare("forwarding", ("direct", "gateway"), sides, SMOKE_SIZES if smoke else SIZES,
                                TARGET_ADDED_P99, "the gateway and its upstream share one core",
                                between=lambda: pin(LOAD_CORE, upstream.pid),
                                latency_note=LATENCY_PLACEMENT)
