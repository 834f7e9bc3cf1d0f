"""The gateway under test, in its own process, with a probe of its own time per request.

The gateway runs with every policy on: the token bucket (its rate from ``--rate``, set high
so that it never rejects unless a measurement wants it to), weighted-random picks over the
seed's three providers and their weights, breakers, and the Prometheus metrics. The
providers answer at once and never fail (``--zero-latency``), or keep the seed's latencies.

:class:`ProbedGateway` adds what the measurements need and nothing the gateway itself does:
a wrapper timing each chat request's handler, minus the time its task spent
waiting for the provider call (from :meth:`Metrics.routed`, just before the wait, to
:meth:`Router.complete`, just after it); the first and last arrival times; and ``GET
/bench/stats`` reporting them with the gateway's own request counters.

With ``--ttft T --decode-rate R --output-tokens K`` the seed's providers give way to one
provider, ``p1``, that streams: its first token after exactly ``T`` seconds, then ``R``
tokens per second, ``K`` tokens in all, and no errors (as streaming is measured).

With ``--upstream URL`` the one provider is a real upstream (``kind = "openai"``) at ``URL``
(its base URL, ``/v1`` added), as forwarding is measured.

Run as ``python -m benchmarks.gateway_server [--rate R] [--burst B] [--zero-latency]
[--ttft T --decode-rate R --output-tokens K] [--upstream URL] [--probe] [--port P] [--uvloop]``; prints
``PORT <n>``, then serves until terminated. Without ``--probe`` it is the plain
:class:`Gateway`, as throughput is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from aiohttp import web

from benchmarks.bare_sse import STREAMING_PROVIDER
from benchmarks.serving import serve
from gwlab import config
from gwlab.config import Scenario
from gwlab.providers import Outcome
from gwlab.router import Rejected, Route
from gwlab.server import Gateway
from gwlab.stats import LatencyHistogram

_CHAT = ("/v1/chat/completions", "/chat/completions")


def scenario(rate: float, burst: float, zero_latency: bool) -> Scenario:
    """The seed scenario with the bucket at ``rate``/``burst``; with ``zero_latency`` its
    providers answer at once and never fail (the weights stay 70/20/10)."""
    patch: dict[str, Any] = {"limiter": {"rate": rate, "burst": burst}}
    if zero_latency:
        patch["providers"] = {name: {"latency": 0.0, "error_rate": 0.0} for name, *_ in config.SEED_PROVIDERS}
    return config.merge(Scenario(), patch, "benchmark scenario")


def streaming_scenario(rate: float, burst: float, ttft: float, decode_rate: float, output_tokens: int) -> Scenario:
    """One provider that streams: the first token after exactly ``ttft`` seconds, then
    ``decode_rate`` tokens per second, ``output_tokens`` in all, and never fails; the bucket
    at ``rate``/``burst``, breakers and metrics on as ever."""
    provider = {"weight": 1.0, "ttft": ttft, "decode_rate": decode_rate, "output_tokens": float(output_tokens),
                "error_rate": 0.0}
    return config.from_dict({"limiter": {"rate": rate, "burst": burst}, "providers": {STREAMING_PROVIDER: provider}},
                            "streaming benchmark scenario")


def forwarding_scenario(rate: float, burst: float, upstream: str) -> Scenario:
    """One real upstream at ``upstream`` (a base URL, ``/v1`` added); the bucket at ``rate``/``burst``."""
    return config.from_dict({"limiter": {"rate": rate, "burst": burst},
                             "providers": {"upstream": {"kind": "openai", "base_url": f"{upstream}/v1"}}},
                            "forwarding benchmark scenario")


class ProbedGateway(Gateway):
    """A :class:`Gateway` whose chat handler time is measured from inside the process."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        self.own_time = LatencyHistogram()
        """Handler seconds minus provider wait, per chat request answered by a provider."""
        self.first: float | None = None
        self.last: float | None = None
        self._waits: dict[asyncio.Task, float] = {}
        route_to, complete = self.router.route, self.router.complete

        def timed_route(*args: Any) -> Route | Rejected:
            route = route_to(*args)
            if route.__class__ is not Rejected:  # a provider call begins
                self._waits[asyncio.current_task()] = time.perf_counter()
            return route

        def timed_complete(route: Route, now: float, outcome: Outcome) -> int:
            task = asyncio.current_task()
            self._waits[task] = time.perf_counter() - self._waits[task]
            return complete(route, now, outcome)

        self.router.route = timed_route
        self.router.complete = timed_complete

    def _routes(self, admin: bool) -> dict[str, dict[str, Any]]:
        routes = super()._routes(admin)
        for path in _CHAT:
            routes[path]["POST"] = self._probe
        routes["/bench/stats"] = {"GET": self._stats}
        return routes

    async def _probe(self, request: web.BaseRequest) -> web.StreamResponse:
        arrived = time.monotonic()
        if self.first is None:
            self.first = arrived
        self.last = arrived
        began = time.perf_counter()
        response = await self._chat(request)
        spent = time.perf_counter() - began
        wait = self._waits.pop(asyncio.current_task(), None)
        if wait is not None:
            self.own_time.add(spent - wait)
        return response

    async def _stats(self, request: web.BaseRequest) -> web.Response:
        h = self.own_time
        counts: dict[str, float] = {}
        for metric in self.metrics.registry.collect():
            if metric.name == "gwlab_requests":
                for sample in metric.samples:
                    if sample.name == "gwlab_requests_total":
                        code = sample.labels["code"]
                        counts[code] = counts.get(code, 0) + sample.value
        return web.json_response({
            "codes": counts,
            "first": self.first,
            "last": self.last,
            "own_time": {"count": h.count, "p50": h.quantile(0.5), "p99": h.quantile(0.99),
                         "max": h.max if h.count else None, "mean": h.mean},
        })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=config.MAX_RATE)
    parser.add_argument("--burst", type=float, default=config.MAX_BURST)
    parser.add_argument("--zero-latency", action="store_true")
    parser.add_argument("--ttft", type=float, help="one streaming provider: seconds to its first token")
    parser.add_argument("--decode-rate", type=float, default=config.DECODE_RATE, help="its tokens per second")
    parser.add_argument("--output-tokens", type=int, default=40, help="its tokens per answer")
    parser.add_argument("--upstream", metavar="URL", help="one real upstream at URL")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--probe", action="store_true", help="measure the gateway's own time per request")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.upstream is not None:
        chosen = forwarding_scenario(args.rate, args.burst, args.upstream)
    elif args.ttft is not None:
        chosen = streaming_scenario(args.rate, args.burst, args.ttft, args.decode_rate, args.output_tokens)
    else:
        chosen = scenario(args.rate, args.burst, args.zero_latency)
    gateway = ProbedGateway(chosen) if args.probe else Gateway(chosen)

    async def start() -> int:
        await gateway.start("127.0.0.1", args.port, 0)
        return gateway.port

    serve(start, args.uvloop)


if __name__ == "__main__":
    main()
