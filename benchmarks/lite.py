"""Item 12: the browser site (``make lite``): cold start and the simulator under Pyodide.

The check site of :mod:`lite.check` (the notebooks and a check notebook, built once and reused
while newer than its inputs) is opened in a fresh Debian chromium, nothing cached, every
request outside 127.0.0.1 aborted: the seconds from opening the page to the first cell's
output (Pyodide, the kernel and gwlab loaded from the site, a 60 s seeded simulation run).
Its last cell times ``gwlab.simulate`` of :data:`lite.check.SPEED_DURATION` simulated seconds of
the seed scenario in open loop at 1000 requests/s under Pyodide; ``benchmarks.simulator`` times
the same run in CPython on the same machine, unpinned as the browser is. Smoke mode runs the
same: the page has one size.
"""

from __future__ import annotations

import shutil

from benchmarks.common import Row, run_json
from lite import check

FIRST_OUTPUT_AIM = 15.0
"""Seconds from opening the page to the first output aimed at."""


def measure(smoke: bool = False) -> list[Row]:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium; .ci/run does)")
    page = check.run(check.site(), chromium)
    cpython = run_json("benchmarks.simulator", "--duration", str(check.SPEED_DURATION), core=None)
    in_browser = page.speed["requests"] / page.speed["wall"]
    in_cpython = cpython["requests"] / cpython["wall"]
    fields = dict(offered_rate=check.SPEED_RATE, load_generator="gwlab.simulate (virtual time)")
    return [
        Row("lite_first_output_seconds", page.first_output_s, "s", target=f"< {FIRST_OUTPUT_AIM:g} s (aim)",
            met=page.first_output_s < FIRST_OUTPUT_AIM, load_generator="chromium (headless, cold cache)",
            detail={"first_output": page.first_output, "requests_outside_loopback": len(page.outside)}),
        Row("sim_pyodide_requests_per_wall_second", in_browser, "requests/s",
            achieved_rate=page.speed["requests"] / check.SPEED_DURATION,
            detail={"simulated_seconds": check.SPEED_DURATION, "requests": page.speed["requests"],
                    "wall_s": page.speed["wall"], "runtime": "Pyodide in chromium"}, **fields),
        Row("sim_pyodide_vs_cpython", in_browser / in_cpython, "ratio",
            achieved_rate=page.speed["requests"] / check.SPEED_DURATION,
            detail={"pyodide_requests_per_wall_second": in_browser, "cpython_requests_per_wall_second": in_cpython,
                    "cpython_wall_s": cpython["wall"], "simulated_seconds": check.SPEED_DURATION}, **fields),
    ]
