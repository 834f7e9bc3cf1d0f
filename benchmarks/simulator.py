"""Item 5: the simulator's speed and memory.

One simulated hour of open-loop traffic at 1000 requests/s through the seed scenario, in a
fresh process pinned to one core: simulated requests per wall-clock second, the wall time,
and the process's peak resident memory (VmHWM) against its size before the run.

Then LLM traffic: ten simulated hours of ``scenarios/llm_mix.toml`` (a mix of short chat
answers and long generations, most of them streamed) in another fresh process; simulated
requests per wall-clock second again, beside the seed's in the same run. Then the seed's
open loop with the gateway retrying (:data:`RETRIES`): provider attempts per wall second.

Each scenario runs :data:`ROUNDS` times, the three in turn, and each row takes its median
run.

``python -m benchmarks.simulator --duration S [--scenario seed|llm_mix|retries]`` runs one
and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, peak_rss_bytes, rss_bytes, run_json

DURATION, SMOKE_DURATION = 3600.0, 10.0
RATE = 1000.0
BAR_SECONDS = 60.0
"""One simulated hour at 1000 requests/s should take less than a minute."""
AIM = 250_000.0
"""Simulated requests per wall second aimed at."""
MB = 1024 * 1024

LLM_MIX = Path(__file__).parent.parent / "scenarios" / "llm_mix.toml"
LLM_MIX_BIN_WIDTH = 60.0
"""Seconds of each time bin of the LLM mix's run: at its 8 requests a second, one-second
bins would time the bins' bookkeeping more than the requests."""


def llm_mix() -> Any:
    """``scenarios/llm_mix.toml``, as written."""
    from gwlab import config

    return config.load(LLM_MIX)


LLM_MIX_DURATION, SMOKE_LLM_MIX_DURATION = 36_000.0, 600.0
LLM_MIX_AIM = 100_000.0
"""Simulated requests per wall second aimed at for the LLM mix."""


RETRIES: dict = {"workload": {"mode": "open", "rate": RATE}, "retry": {"attempts": 3}}
"""The seed's open loop with the gateway retrying: up to 3 attempts at each request, with
the default backoff and retry budget. The seed's providers fail 5, 10 and 20 % of their
calls, so about one request in eleven is retried."""
RETRIES_DURATION, SMOKE_RETRIES_DURATION = 600.0, 10.0
RETRIES_AIM = 100_000.0
"""Simulated attempts per wall second aimed at with retries on."""


ROUNDS, SMOKE_ROUNDS = 3, 1
"""Fresh runs of each scenario, the three scenarios taken in turn in each round. Each row is
timed by its median run: the runs simulate the same requests and differ only in wall time,
which on a shared machine moves by half from one run to the next (other tenants, the core's
clock), and a slow spell then slows one run of each scenario, not every run of one."""


def measure(smoke: bool = False) -> list[Row]:
    durations = {"seed": SMOKE_DURATION, "llm_mix": SMOKE_LLM_MIX_DURATION, "retries": SMOKE_RETRIES_DURATION} \
        if smoke else {"seed": DURATION, "llm_mix": LLM_MIX_DURATION, "retries": RETRIES_DURATION}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in durations}
    for _ in range(SMOKE_ROUNDS if smoke else ROUNDS):
        for name, duration in durations.items():
            runs[name].append(run_json("benchmarks.simulator", "--duration", str(duration), "--scenario", name))
    return _seed(_median(runs["seed"]), durations["seed"]) + [
        _llm_mix(_median(runs["llm_mix"]), durations["llm_mix"]),
        _retries(_median(runs["retries"]), durations["retries"])]


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time (the upper one of an even count), with every run's wall
    time in seconds as ``walls``, in the order they ran."""
    out = dict(sorted(runs, key=lambda run: run["wall"])[len(runs) // 2])
    out["walls"] = [run["wall"] for run in runs]
    return out


def _seed(out: dict[str, Any], duration: float) -> list[Row]:
    speed = out["requests"] / out["wall"]
    hour_wall = DURATION * RATE / speed
    fields = dict(offered_rate=RATE, load_generator="gwlab.simulate (virtual time)")
    return [
        Row("sim_requests_per_wall_second", speed, "requests/s",
            target=f">= {DURATION * RATE / BAR_SECONDS:,.0f}/s (bar), aim {AIM:,.0f}/s",
            met=speed >= DURATION * RATE / BAR_SECONDS, achieved_rate=out["requests"] / duration,
            server_cpu=out["cpu"], detail={"simulated_seconds": duration, "requests": out["requests"],
                                           "wall_s": out["wall"], "walls_s": out["walls"],
                                           "aim_met": speed >= AIM}, **fields),
        Row("sim_hour_wall_seconds", hour_wall, "s", target=f"< {BAR_SECONDS:g} s", met=hour_wall < BAR_SECONDS,
            detail={"simulated_seconds": duration, "extrapolated": duration != DURATION}, **fields),
        Row("sim_peak_memory", out["peak_rss"] / MB, "MB",
            detail={"rss_before_mb": out["rss_before"] / MB, "growth_mb": (out["peak_rss"] - out["rss_before"]) / MB,
                    "simulated_seconds": duration}, **fields),
    ]


def _llm_mix(out: dict[str, Any], duration: float) -> Row:
    speed = out["requests"] / out["wall"]
    summary = out["summary"]
    return Row(
        "sim_llm_mix_requests_per_wall_second", speed, "requests/s", target=f">= {LLM_MIX_AIM:,.0f}/s (aim)",
        met=speed >= LLM_MIX_AIM, offered_rate=out["rate"], achieved_rate=out["requests"] / duration,
        server_cpu=out["cpu"], load_generator="gwlab.simulate (virtual time)",
        detail={"simulated_seconds": duration, "requests": out["requests"], "wall_s": out["wall"],
                "walls_s": out["walls"], "rejected": summary["codes"].get("429", 0), "codes": summary["codes"],
                "saturated": summary.get("saturated", 0), "trips": summary["trips"],
                "providers": {name: {"requests": p["requests"], "trips": p["trips"]}
                              for name, p in summary["providers"].items()},
                "ttft_p50_s": summary.get("ttft", {}).get("p50"),
                "output_tokens": summary.get("output_tokens", {}).get("total", 0),
                "peak_memory_mb": out["peak_rss"] / MB, "bin_width_s": LLM_MIX_BIN_WIDTH,
                "scenario": "scenarios/llm_mix.toml"},
    )


def _retries(out: dict[str, Any], duration: float) -> Row:
    retries = out["summary"].get("retries", {})
    attempts = out["requests"] + retries.get("retry", 0)
    speed = attempts / out["wall"]
    return Row(
        "sim_retries_attempts_per_wall_second", speed, "attempts/s", target=f">= {RETRIES_AIM:,.0f}/s (aim)",
        met=speed >= RETRIES_AIM, offered_rate=RATE, achieved_rate=out["requests"] / duration,
        server_cpu=out["cpu"], load_generator="gwlab.simulate (virtual time)",
        detail={"simulated_seconds": duration, "requests": out["requests"], "attempts": attempts,
                "retries": retries, "codes": out["summary"]["codes"], "wall_s": out["wall"],
                "walls_s": out["walls"], "scenario": "benchmarks.simulator.RETRIES"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="one simulator run, printed as JSON")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--scenario", choices=("seed", "llm_mix", "retries"), default="seed")
    args = parser.parse_args()
    import gwlab
    from gwlab import config

    pid = os.getpid()
    scenario = llm_mix() if args.scenario == "llm_mix" else config.from_dict(
        RETRIES if args.scenario == "retries" else {"workload": {"mode": "open", "rate": RATE}})
    gwlab.simulate(scenario, duration=1.0)
    before = rss_bytes(pid)
    cpu = time.process_time()
    started = time.perf_counter()
    bin_width = LLM_MIX_BIN_WIDTH if args.scenario == "llm_mix" else config.BIN_WIDTH
    result = gwlab.simulate(scenario, duration=args.duration, bin_width=bin_width)
    wall = time.perf_counter() - started
    summary = result.summary()
    out = {"requests": summary["offered"], "rate": scenario.workload.rate, "wall": wall, "rss_before": before,
           "peak_rss": peak_rss_bytes(pid), "cpu": (time.process_time() - cpu) / wall}
    if args.scenario != "seed":
        out["summary"] = {k: v for k, v in summary.items() if k != "scenario"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
