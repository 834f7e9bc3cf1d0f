"""Run every measurement, print a table and write the results as JSON.

``python -m benchmarks.run [--smoke] [--only NAME ...] [--out PATH]``. ``--smoke`` runs each
measurement once at a tiny size, to check that they all work (CI does this); its numbers mean
nothing. ``--only`` runs the measurements named (``throughput``, ``instructions`` ...). The
JSON holds the machine (CPU, cores, Python, load average, date) and one row per number
(:class:`benchmarks.common.Row`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks import (
    common,
    forwarding,
    instructions,
    lab,
    limiter_accuracy,
    lite,
    memory,
    overhead,
    redis_limiter,
    replicas,
    simulator,
    streaming,
    sweep,
    throughput,
)
from benchmarks.common import Row

MEASUREMENTS: dict[str, Callable[[bool], list[Row]]] = {
    "throughput": throughput.measure,
    "instructions": instructions.measure,
    "overhead": overhead.measure,
    "limiter": limiter_accuracy.measure,
    "lab": lab.measure,
    "simulator": simulator.measure,
    "memory": memory.measure,
    "streaming": streaming.measure,
    "sweep": sweep.measure,
    "replicas": replicas.measure,
    "forwarding": forwarding.measure,
    "redis_limiter": redis_limiter.measure,
    "lite": lite.measure,
}
DEFAULT_OUT = Path(__file__).with_name("results.json")


def run(smoke: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    """Every measurement (or those named in ``only``) in turn; the results document."""
    machine = common.machine()
    started = time.monotonic()
    rows: list[Row] = []
    for name, measure in MEASUREMENTS.items():
        if only is None or name in only:
            rows += measure(smoke)
    return {
        "smoke": smoke,
        "machine": machine,
        "load_average_1m_at_end": common.load_average(),
        "seconds": time.monotonic() - started,
        "rows": [row.to_dict() for row in rows],
    }


def table(results: dict[str, Any]) -> str:
    """The rows as a fixed-width text table."""
    head = ("measurement", "value", "unit", "target", "met", "offered/s", "achieved/s", "cpu", "load generator",
            "LG-bound")
    lines = [head]
    for r in results["rows"]:
        lines.append((
            r["name"], _num(r["value"]), r["unit"], r["target"] or "", _flag(r["met"]), _num(r["offered_rate"]),
            _num(r["achieved_rate"]), _num(r["server_cpu"]),
            (r["load_generator"] or "") + (f", {r['connections']} conns" if r["connections"] else ""),
            _flag(r["limited_by_load_generator"]),
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _flag(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="each measurement once at a tiny size")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file to write (default {DEFAULT_OUT})")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, metavar="NAME",
                        help=f"run only these measurements, of: {', '.join(MEASUREMENTS)}")
    args = parser.parse_args()
    results = run(args.smoke, args.only)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, load {m['load_average_1m']:.2f}, {m['date']}")
    print(table(results))
    print(f"{results['seconds']:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
