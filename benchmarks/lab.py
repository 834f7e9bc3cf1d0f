"""Item 4: the seed scenario in one process, as a notebook runs it.

``gwlab.lab.start`` runs the gateway, its metrics server and the clients in this process
(on the lab's loop thread), pinned to one core. Two runs: the seed scenario (100 closed-loop
clients), reporting the achieved rate and the process's CPU use; and open-loop arrivals at
1000 requests/s with the bucket set high, where the achieved offered rate should be within
2% of the requested one.

Then the virtual lab (``gwlab.lab.start(mode="virtual")``) with open-loop arrivals at 1000
simulated requests/s, paced on this process's event loop as in a kernel: the process's CPU
use per wall second, first alone and then with its dashboard built and redrawing (no browser
is attached, so the widgets' messages are not sent), and the virtual seconds it advanced per
wall second.

Each run is a fresh process: ``python -m benchmarks.lab --mode closed|open|virtual --seconds S``
prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time

from benchmarks.common import CpuMeter, Row, run_json

CLOSED_SECONDS, OPEN_SECONDS, SMOKE_SECONDS = 8.0, 15.0, 1.0
OPEN_RATE = 1000.0
TOLERANCE = 0.02
VIRTUAL_CPU_AIM = 0.25
"""The share of one core a virtual lab's dashboard at 1000 simulated requests/s should stay under."""
WARM_UP = 3.0
"""Seconds the lab runs before measuring: until the slowest seed provider (2 s) has answered,
so that requests in flight, and answers per second, are steady."""


def measure(smoke: bool = False) -> list[Row]:
    closed = run_json("benchmarks.lab", "--mode", "closed", "--seconds", str(SMOKE_SECONDS if smoke else CLOSED_SECONDS))
    opened = run_json("benchmarks.lab", "--mode", "open", "--seconds", str(SMOKE_SECONDS if smoke else OPEN_SECONDS))
    virtual = run_json("benchmarks.lab", "--mode", "virtual", "--seconds", str(SMOKE_SECONDS if smoke else OPEN_SECONDS))
    error = opened["achieved_offered_rate"] / OPEN_RATE - 1
    sigma = 1 / math.sqrt(OPEN_RATE * opened["seconds"])
    return [
        Row("lab_seed_closed_rps", closed["rates"]["offered"], "requests/s", server_cpu=closed["cpu"],
            achieved_rate=closed["rates"]["offered"], load_generator="gwlab.lab in-process clients",
            connections=closed["clients"], limited_by_load_generator=False,
            detail={"admitted_rps": closed["rates"]["admitted"], "availability": closed["availability"],
                    "p50_s": closed["latency"]["p50"], "p99_s": closed["latency"]["p99"],
                    "seconds": closed["seconds"], "cpu_note": "one process: gateway, metrics and clients"}),
        Row("lab_open_loop_offered_error", error * 100, "% of requested", target=f"within ±{TOLERANCE * 100:g}%",
            met=abs(error) <= TOLERANCE, offered_rate=OPEN_RATE, achieved_rate=opened["achieved_offered_rate"],
            server_cpu=opened["cpu"], load_generator="gwlab.lab in-process open loop",
            limited_by_load_generator=opened["cpu"] >= 0.9,
            detail={"seconds": opened["seconds"], "poisson_sigma_pct": sigma * 100,
                    "p99_s": opened["latency"]["p99"], "codes": opened["codes"]}),
        Row("lab_virtual_cpu", virtual["dashboard"]["cpu"], "cores", target=f"under {VIRTUAL_CPU_AIM:g}",
            met=virtual["dashboard"]["cpu"] < VIRTUAL_CPU_AIM, offered_rate=OPEN_RATE,
            achieved_rate=OPEN_RATE * virtual["dashboard"]["virtual_per_wall_second"],
            server_cpu=virtual["dashboard"]["cpu"],
            load_generator="gwlab.lab virtual open loop", limited_by_load_generator=False,
            detail={"seconds": virtual["seconds"], "cpu_without_dashboard": virtual["alone"]["cpu"],
                    "virtual_seconds_per_wall_second": virtual["dashboard"]["virtual_per_wall_second"],
                    "cpu_note": "one process: simulator, pacing and dashboard redraws, no browser attached"}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="one lab run, printed as JSON")
    parser.add_argument("--mode", choices=("closed", "open", "virtual"), required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    import gwlab.lab
    from gwlab import config

    if args.mode == "virtual":
        print(json.dumps(asyncio.run(virtual(args.seconds))))
        return
    if args.mode == "closed":
        lab = gwlab.lab.start(port=0, metrics_port=0)
    else:
        lab = gwlab.lab.start({"limiter": {"rate": config.MAX_RATE, "burst": config.MAX_BURST}}, rate=OPEN_RATE,
                              port=0, metrics_port=0)
    try:
        lab.run_for(WARM_UP)
        meter = CpuMeter(os.getpid())
        summary = lab.run_for(args.seconds)
        cpu = meter.share()
    finally:
        lab.stop()
    print(json.dumps({"rates": summary["rates"], "availability": summary["availability"],
                      "latency": summary["latency"], "codes": summary["codes"], "cpu": cpu,
                      "clients": summary["clients"], "seconds": args.seconds,
                      "achieved_offered_rate": summary["achieved_offered_rate"]}))


async def virtual(seconds: float) -> dict:
    """The virtual lab at :data:`OPEN_RATE` for ``seconds`` wall seconds alone, then as long
    with its dashboard: CPU share and virtual seconds advanced in each."""
    import gwlab.lab
    from gwlab import config

    lab = gwlab.lab.start({"limiter": {"rate": config.MAX_RATE, "burst": config.MAX_BURST}}, rate=OPEN_RATE,
                          mode="virtual")
    try:
        await asyncio.sleep(WARM_UP)
        alone = await _paced(lab, seconds)
        lab.dashboard()
        await asyncio.sleep(WARM_UP)  # past the step that catches up the time the dashboard took to build
        return {"seconds": seconds, "alone": alone, "dashboard": await _paced(lab, seconds)}
    finally:
        lab.stop()


async def _paced(lab, seconds: float) -> dict:
    meter = CpuMeter(os.getpid())
    began, wall = lab.now, time.monotonic()
    await asyncio.sleep(seconds)
    return {"cpu": meter.share(), "virtual_per_wall_second": (lab.now - began) / (time.monotonic() - wall)}


if __name__ == "__main__":
    main()
