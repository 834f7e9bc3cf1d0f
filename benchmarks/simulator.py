"""Item 5: the simulator's speed and memory.

One simulated hour of open-loop traffic at 1000 requests/s through the seed scenario, in a
fresh process pinned to one core: simulated requests per wall-clock second, the wall time,
and the process's peak resident memory (VmHWM) against its size before the run.

``python -m benchmarks.simulator --duration S`` runs it once and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks.common import Row, peak_rss_bytes, rss_bytes, run_json

DURATION, SMOKE_DURATION = 3600.0, 10.0
RATE = 1000.0
BAR_SECONDS = 60.0
"""One simulated hour at 1000 requests/s should take less than a minute."""
AIM = 250_000.0
"""Simulated requests per wall second aimed at."""
MB = 1024 * 1024


def measure(smoke: bool = False) -> list[Row]:
    duration = SMOKE_DURATION if smoke else DURATION
    out = run_json("benchmarks.simulator", "--duration", str(duration))
    speed = out["requests"] / out["wall"]
    hour_wall = DURATION * RATE / speed
    fields = dict(offered_rate=RATE, load_generator="gwlab.simulate (virtual time)")
    return [
        Row("sim_requests_per_wall_second", speed, "requests/s",
            target=f">= {DURATION * RATE / BAR_SECONDS:,.0f}/s (bar), aim {AIM:,.0f}/s",
            met=speed >= DURATION * RATE / BAR_SECONDS, achieved_rate=out["requests"] / duration,
            server_cpu=out["cpu"], detail={"simulated_seconds": duration, "requests": out["requests"],
                                           "wall_s": out["wall"], "aim_met": speed >= AIM}, **fields),
        Row("sim_hour_wall_seconds", hour_wall, "s", target=f"< {BAR_SECONDS:g} s", met=hour_wall < BAR_SECONDS,
            detail={"simulated_seconds": duration, "extrapolated": duration != DURATION}, **fields),
        Row("sim_peak_memory", out["peak_rss"] / MB, "MB",
            detail={"rss_before_mb": out["rss_before"] / MB, "growth_mb": (out["peak_rss"] - out["rss_before"]) / MB,
                    "simulated_seconds": duration}, **fields),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="one simulator run, printed as JSON")
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()
    import gwlab

    pid = os.getpid()
    scenario = {"workload": {"mode": "open", "rate": RATE}}
    gwlab.simulate(scenario, duration=1.0)
    before = rss_bytes(pid)
    cpu = time.process_time()
    started = time.perf_counter()
    result = gwlab.simulate(scenario, duration=args.duration)
    wall = time.perf_counter() - started
    print(json.dumps({"requests": result.summary()["offered"], "wall": wall, "rss_before": before,
                      "peak_rss": peak_rss_bytes(pid), "cpu": (time.process_time() - cpu) / wall}))


if __name__ == "__main__":
    main()
