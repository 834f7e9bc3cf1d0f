"""A check notebook run in the browser site, in Debian's chromium driven by Playwright, every
request outside 127.0.0.1 aborted (and no other host resolved): what ``tests/test_lite.py`` asserts and ``benchmarks/lite.py``
times.

The check site is the notebooks plus :data:`CHECK` (:data:`CELLS`), built into :data:`SITE`
once and reused while it is newer than its inputs. :func:`run` opens it in a fresh browser
(nothing cached), runs every cell, moves the slider and returns what it saw.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lite import build, serve

SITE = build.ROOT / "build" / "lite-check"
CHECK = "lite_check.ipynb"
SPEED_DURATION = 60.0
"""Simulated seconds of the speed cell: the seed scenario in open loop at :data:`SPEED_RATE`."""
SPEED_RATE = 1000.0
"""Requests per simulated second of the speed cell (``benchmarks/simulator.py``'s rate)."""
FIRST_OUTPUT = 120.0
"""Seconds from opening the page to the first cell's output (Pyodide and the kernel's
packages load from the site)."""
WIDGETS = 60.0
"""Seconds the figure and the slider get to render, the speed cell to print and the kernel to
answer the slider."""
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
"""Chromium resolves no host name but 127.0.0.1: this covers the requests of the site's
service worker too, which Playwright's routes do not see (the kernel reads the notebooks'
files through it, ``../scenarios`` among them)."""
CELLS = [
    "import gwlab\n\nresult = gwlab.simulate(None, 60, seed=1)\nprint('admitted', result.summary()['admitted'])",
    "result.figure()",
    "import ipywidgets\n\nslider = ipywidgets.IntSlider(value=1, min=0, max=10, description='seed')\n"
    "seen = ipywidgets.Label('kernel saw 1')\n"
    "slider.observe(lambda change: setattr(seen, 'value', f'kernel saw {change.new}'), names='value')\n"
    "ipywidgets.VBox([slider, seen])",
    "import json, time\n\n"
    f"open_loop = {{'workload': {{'mode': 'open', 'rate': {SPEED_RATE!r}}}}}\n"
    "gwlab.simulate(open_loop, 1.0)\n"
    "started = time.perf_counter()\n"
    f"offered = gwlab.simulate(open_loop, {SPEED_DURATION!r}).summary()['offered']\n"
    "print('speed', json.dumps({'requests': offered, 'wall': time.perf_counter() - started}))",
]
"""The check notebook's cells: a seeded simulation, its figure, a slider whose moves the
kernel answers, and the simulator's speed (after a one-second warm-up run)."""


@dataclass
class Run:
    """What one run of the check notebook showed. ``first_output_s``: seconds from opening the
    page to the first cell's output; ``speed``: the speed cell's ``requests`` and ``wall``
    seconds; ``errors``: the text of every error or stderr output; ``outside``: the URLs the
    page asked for outside 127.0.0.1 (all aborted)."""

    first_output: str
    first_output_s: float
    traces: int
    slider_answered: bool
    speed: dict
    errors: list[str]
    outside: list[str] = field(default_factory=list)


def check_notebook() -> dict:
    """The check notebook (nbformat 4), with the site kernel's kernelspec so that no dialog asks."""
    cells = [{"cell_type": "code", "execution_count": None, "id": f"check-{i}", "metadata": {}, "outputs": [],
              "source": source} for i, source in enumerate(CELLS)]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python", "display_name": "Python (Pyodide)", "language": "python"}}}


def site(out: Path = SITE) -> Path:
    """The check site in ``out``, built unless it is newer than its inputs and this file.
    Raises :class:`lite.build.BuildError`."""
    if build.up_to_date(out) and build.lock_path(out).stat().st_mtime >= Path(__file__).stat().st_mtime:
        return out
    with tempfile.TemporaryDirectory(prefix="lite-check-") as work:
        notebooks = Path(work) / "notebooks"
        shutil.copytree(build.NOTEBOOKS, notebooks)
        (notebooks / CHECK).write_text(json.dumps(check_notebook(), indent=1) + "\n", encoding="utf-8")
        build.build(out, notebooks=notebooks)
    return out


def run(site: Path, chromium: str, screenshot: Path | None = None) -> Run:
    """Open :data:`CHECK` of ``site`` in a fresh ``chromium`` (a path), run all its cells, move
    the slider one step and read what the page shows; a picture of the page to ``screenshot``.
    Raises Playwright's ``TimeoutError`` when a step outlasts :data:`FIRST_OUTPUT` or
    :data:`WIDGETS`."""
    from playwright.sync_api import sync_playwright

    httpd, thread = serve.serve_in_thread(site)
    outside: list[str] = []

    def only_loopback(route) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--disable-dev-shm-usage", LOOPBACK_ONLY])
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1200})
                context.route("**/*", only_loopback)
                page = context.new_page()
                opened = time.monotonic()
                page.goto(serve.url(httpd) + f"?path=notebooks/{CHECK}")
                page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=FIRST_OUTPUT * 1000)
                page.locator(f"{PANEL} .jp-Cell").first.click()
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel").filter(has_text="Run All Cells").first.click()
                first = page.locator(f"{PANEL} .jp-OutputArea-output", has_text="admitted").first
                first.wait_for(timeout=FIRST_OUTPUT * 1000 - (time.monotonic() - opened) * 1000)
                first_output_s = time.monotonic() - opened

                plot = f"{PANEL} .js-plotly-plot"
                page.wait_for_function("(s) => document.querySelector(s)?.data?.length > 0", arg=plot,
                                       timeout=WIDGETS * 1000)
                handle = page.locator(f"{PANEL} .widget-slider .noUi-handle").first
                handle.wait_for(timeout=WIDGETS * 1000)
                handle.focus()
                page.keyboard.press("ArrowRight")
                answered = page.locator(f"{PANEL} .widget-label", has_text="kernel saw 2")
                answered.wait_for(timeout=WIDGETS * 1000)
                speed = page.locator(f"{PANEL} .jp-OutputArea-output", has_text="speed").first
                speed.wait_for(timeout=WIDGETS * 1000)
                errors = page.locator(f"{PANEL} .jp-OutputArea-output[data-mime-type*='stderr'], "
                                      f"{PANEL} .jp-OutputArea-output[data-mime-type*='error']")
                result = Run(first_output=first.inner_text().strip(), first_output_s=first_output_s,
                             traces=page.evaluate("(s) => document.querySelector(s).data.length", plot),
                             slider_answered=answered.count() == 1,
                             speed=json.loads(speed.inner_text().strip().removeprefix("speed ")),
                             errors=errors.all_inner_texts(), outside=outside)
                if screenshot is not None:
                    page.screenshot(path=str(screenshot))
                return result
            finally:
                browser.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
