"""Item 8: a parameter sweep in processes against the same sweep in one process.

A fixed grid: the seed scenario in open loop at 8 rates (250 to 2000 requests/s, the upper
half past the limiter) x 2 seeds, 60 simulated seconds each, swept by :func:`gwlab.sweep`
in one fresh process on every core the machine gives, in rounds: in each, first in that
process (``workers=1``), then in ``os.cpu_count()`` worker processes. Runs per wall-clock
minute of each (medians over the rounds), and the speedup of the processes over the one
process (the median of the rounds' ratios), which should come close to the number of cores:
every run is independent, and only starting the pool and sending scenarios and rows between
processes is added. Other tenants of a shared machine move single rounds by tens of percent
(see the README's "How far to trust the throughput ratio"): ``detail`` keeps every round,
with the CPU each sweep took, so that a low speedup can be told apart from a pool that did
not get its cores. Every sweep's rows must be the same.

``python -m benchmarks.sweep --duration S --rates N --seeds N --rounds N`` runs them and
prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from benchmarks.common import Row, run_json

RATES, SMOKE_RATES = 8, 2
"""Points of the grid: open-loop rates of 250, 500 ... requests/s."""
RATE_STEP = 250.0
SEEDS = 2
DURATION, SMOKE_DURATION = 60.0, 2.0
"""Simulated seconds of each run."""
ROUNDS, SMOKE_ROUNDS = 3, 1
SHARE_OF_CORES = 0.8
"""The speedup counts as met at this share of the number of cores."""
LOAD_GENERATOR = "gwlab.sweep (virtual time)"


def measure(smoke: bool = False) -> list[Row]:
    duration, rates, rounds = (SMOKE_DURATION, SMOKE_RATES, SMOKE_ROUNDS) if smoke else (DURATION, RATES, ROUNDS)
    out = run_json("benchmarks.sweep", "--duration", str(duration), "--rates", str(rates), "--seeds", str(SEEDS),
                   "--rounds", str(rounds), core=None)
    cores = out["workers"]
    detail = {"runs": out["runs"], "points": rates, "seeds": SEEDS, "simulated_seconds_per_run": duration,
              "simulated_requests": out["requests"], "grid": out["grid"], "cores": cores,
              "usable_cores": out["usable_cores"], "identical_rows": out["identical"], "rounds": out["rounds"]}
    rows = []
    for name, key, workers in (("one_process", "one", 1), ("processes", "pool", cores)):
        wall = statistics.median(r[key]["wall"] for r in out["rounds"])
        processes = f"{workers} process{'es' if workers > 1 else ''}"
        rows.append(Row(f"sim_sweep_runs_per_minute_{name}", 60.0 * out["runs"] / wall, "runs/min",
                        server_cpu=statistics.median(r[key]["cpu"] for r in out["rounds"]),
                        load_generator=f"{LOAD_GENERATOR}, {processes}",
                        detail={**detail, "wall_s": wall, "workers": workers}))
    speedup = statistics.median(r["one"]["wall"] / r["pool"]["wall"] for r in out["rounds"])
    rows.append(Row("sim_sweep_speedup", speedup, f"x one process ({cores} processes)",
                    target=f"aim: close to the number of cores ({cores}); met at >= {SHARE_OF_CORES * cores:g}",
                    met=speedup >= SHARE_OF_CORES * cores, load_generator=LOAD_GENERATOR, detail=detail))
    return rows


def _timed(run) -> tuple[list[dict], dict[str, float]]:
    """``run()``'s rows, its wall-clock seconds and the CPU it took, this process's and its
    children's (the pool's workers, once they have exited), as a fraction of one core."""
    before, started = os.times(), time.perf_counter()
    rows = run()
    wall = time.perf_counter() - started
    after = os.times()
    cpu = sum(after[i] - before[i] for i in range(4))  # user, system, children's user and system
    return rows, {"wall": wall, "cpu": cpu / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description="one sweep in one process, then in one process per core, as JSON")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--rates", type=int, required=True)
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    import gwlab
    from gwlab.sweep import Plan

    gwlab.simulate(duration=1.0)  # imports and first-call costs out of the timing
    grid = {"workload.rate": [RATE_STEP * k for k in range(1, args.rates + 1)]}
    plan = Plan({"workload": {"mode": "open"}}, grid, args.duration, args.seeds)
    workers = os.cpu_count() or 1
    rounds, tables = [], []
    for _ in range(args.rounds):
        one_rows, one = _timed(lambda: plan.run(workers=1, progress=False))
        pool_rows, pool = _timed(lambda: plan.run(workers=workers, progress=False))
        rounds.append({"one": one, "pool": pool, "speedup": one["wall"] / pool["wall"],
                       "cpu_per_run_vs_one_process": pool["cpu"] * pool["wall"] / (one["cpu"] * one["wall"])})
        tables += [one_rows, pool_rows]
    print(json.dumps({"runs": len(plan), "requests": sum(row["offered"] for row in tables[0]), "grid": grid,
                      "workers": workers, "usable_cores": len(os.sched_getaffinity(0)), "rounds": rounds,
                      "identical": all(table == tables[0] for table in tables)}))


if __name__ == "__main__":
    main()
