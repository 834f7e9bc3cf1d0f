"""Item 5: the simulator's speed and memory.

One simulated hour of open-loop traffic at 1000 requests/s through the seed scenario, in a
fresh process pinned to one core: simulated requests per wall-clock second, the wall time,
and the process's peak resident memory (VmHWM) against its size before the run.

Then LLM traffic (:data:`LLM_MIX`): ten simulated minutes of a mix of short chat answers and
long generations, most of them streamed, in another fresh process; simulated requests per
wall-clock second again, beside the seed's in the same run.

``python -m benchmarks.simulator --duration S [--scenario seed|llm_mix]`` runs one and prints
one JSON object.
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

LLM_MIX_RATE = 500.0
"""Open-loop requests per second of the LLM mix: half the bucket's rate, so the gateway's
limiter (the seed's 1000/s, burst 1000) admits every one."""
LLM_MIX: dict = {
    # Long generations outlast the seed's 10 s timeout, which bounds a whole answer when it
    # is not streamed; max_tokens keeps the longest (2048 tokens at 35/s) under 60 s.
    "gateway": {"timeout": 60.0},
    "providers": {
        "chat": {"weight": 70.0, "ttft": 0.25, "ttft_distribution": "lognormal", "ttft_p99": 1.0,
                 "decode_rate": 60.0, "output_tokens": 120.0, "output_distribution": "lognormal",
                 "output_p99": 600.0, "error_rate": 0.01, "stream_error_rate": 0.002},
        "longgen": {"weight": 30.0, "ttft": 0.6, "ttft_distribution": "lognormal", "ttft_p99": 2.5,
                    "decode_rate": 35.0, "output_tokens": 900.0, "output_distribution": "lognormal",
                    "output_p99": 3000.0, "error_rate": 0.002, "stream_error_rate": 0.002},
    },
    "workload": {"mode": "open", "rate": LLM_MIX_RATE, "stream_share": 0.6, "max_tokens": 2048,
                 "max_in_flight": 20_000},
}
"""The LLM mix the simulator is timed on (until ``scenarios/llm_mix.toml`` exists): a chat
provider with short log-normal answers (median 120 tokens, p99 600, 60 tokens/s) and a
long-generation one (median 900, p99 3000, 35 tokens/s), 70/30; 60 % of the requests
streamed; at most 2048 tokens an answer. About 5,000 requests are in flight at once. The
long provider's errors are rare: its failures end long before its successes, and a few in a
row while its first answers are still being written would open its breaker (with the default
three-failure threshold) again and again, leaving the mix to the chat provider."""
LLM_MIX_DURATION, SMOKE_LLM_MIX_DURATION = 600.0, 10.0
LLM_MIX_AIM = 100_000.0
"""Simulated requests per wall second aimed at for the LLM mix."""


def measure(smoke: bool = False) -> list[Row]:
    return _seed(smoke) + [_llm_mix(smoke)]


def _seed(smoke: bool) -> list[Row]:
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


def _llm_mix(smoke: bool) -> Row:
    duration = SMOKE_LLM_MIX_DURATION if smoke else LLM_MIX_DURATION
    out = run_json("benchmarks.simulator", "--duration", str(duration), "--scenario", "llm_mix")
    speed = out["requests"] / out["wall"]
    summary = out["summary"]
    return Row(
        "sim_llm_mix_requests_per_wall_second", speed, "requests/s", target=f">= {LLM_MIX_AIM:,.0f}/s (aim)",
        met=speed >= LLM_MIX_AIM, offered_rate=LLM_MIX_RATE, achieved_rate=out["requests"] / duration,
        server_cpu=out["cpu"], load_generator="gwlab.simulate (virtual time)",
        detail={"simulated_seconds": duration, "requests": out["requests"], "wall_s": out["wall"],
                "rejected": summary["codes"].get("429", 0), "codes": summary["codes"],
                "saturated": summary.get("saturated", 0), "trips": summary["trips"],
                "providers": {name: {"requests": p["requests"], "trips": p["trips"]}
                              for name, p in summary["providers"].items()},
                "ttft_p50_s": summary.get("ttft", {}).get("p50"),
                "output_tokens": summary.get("output_tokens", {}).get("total", 0),
                "peak_memory_mb": out["peak_rss"] / MB, "scenario": "benchmarks.simulator.LLM_MIX"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="one simulator run, printed as JSON")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--scenario", choices=("seed", "llm_mix"), default="seed")
    args = parser.parse_args()
    import gwlab

    pid = os.getpid()
    scenario = LLM_MIX if args.scenario == "llm_mix" else {"workload": {"mode": "open", "rate": RATE}}
    gwlab.simulate(scenario, duration=1.0)
    before = rss_bytes(pid)
    cpu = time.process_time()
    started = time.perf_counter()
    result = gwlab.simulate(scenario, duration=args.duration)
    wall = time.perf_counter() - started
    summary = result.summary()
    out = {"requests": summary["offered"], "wall": wall, "rss_before": before, "peak_rss": peak_rss_bytes(pid),
           "cpu": (time.process_time() - cpu) / wall}
    if args.scenario != "seed":
        out["summary"] = {k: v for k, v in summary.items() if k != "scenario"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
