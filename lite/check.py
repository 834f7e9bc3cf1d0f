"""A check notebook run in the browser site, in Debian's chromium driven by Playwright, every
request outside 127.0.0.1 aborted (and no other host resolved): what ``tests/test_lite.py`` asserts and ``benchmarks/lite.py``
times.

The check site is the notebooks plus :data:`CHECK` (:data:`CELLS`), built into :data:`SITE`
once and reused while it is newer than its inputs. :func:`run` opens it in a fresh browser
(nothing cached), runs every cell, moves the slider and returns what it saw.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

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
    "import gwlab.lab\n\nlab = gwlab.lab.start(seed=1)\nprint('lab', lab.mode)\nlab.dashboard()",
]
"""The check notebook's cells: a seeded simulation, its figure, a slider whose moves the
kernel answers, the simulator's speed (after a one-second warm-up run), and the lab (virtual,
as the browser starts it) with its dashboard."""
LIVE_PLOT = f"{PANEL} .widget-vbox .js-plotly-plot"
"""The dashboard's live chart."""
RECENT_ANSWERS = """((selector, name) => document.querySelector(selector).data
    .find(t => t.name === name).y.slice(-3).reduce((a, b) => a + b, 0))"""
"""JavaScript: the answers of provider ``name`` in the live chart's last three bins."""


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
    lab: str
    """What the lab's cell printed: ``lab virtual`` in the browser."""
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
    the slider one step, drive the lab's dashboard (its chart must gain three bins by itself,
    then lose p1's answers once its ``p1 weight`` is typed to 0) and read what the page shows;
    a picture of the page to ``screenshot``.
    Raises Playwright's ``TimeoutError`` when a step outlasts :data:`FIRST_OUTPUT` or
    :data:`WIDGETS`."""
    outside: list[str] = []
    with _browser(site, chromium, outside) as (page, url):
        opened = time.monotonic()
        page.goto(url + f"?path=notebooks/{CHECK}")
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
        lab = page.locator(f"{PANEL} .jp-OutputArea-output", has_text="lab ").first
        lab.wait_for(timeout=WIDGETS * 1000)
        _drive_dashboard(page)
        errors = page.locator(f"{PANEL} .jp-OutputArea-output[data-mime-type*='stderr'], "
                              f"{PANEL} .jp-OutputArea-output[data-mime-type*='error']")
        result = Run(first_output=first.inner_text().strip(), first_output_s=first_output_s,
                     traces=page.evaluate("(s) => document.querySelector(s).data.length", plot),
                     slider_answered=answered.count() == 1,
                     speed=json.loads(speed.inner_text().strip().removeprefix("speed ")),
                     lab=lab.inner_text().strip(), errors=errors.all_inner_texts(), outside=outside)
        if screenshot is not None:
            page.screenshot(path=str(screenshot))
        return result


def _drive_dashboard(page) -> None:
    """Watch the dashboard's chart gain three bins by itself, then type 0 into ``p1 weight``
    and watch p1's answers leave the chart's last three bins (as tests/test_browser.py does
    with the live lab in JupyterLab). Raises Playwright's ``TimeoutError`` after
    :data:`WIDGETS` seconds for a step."""
    page.wait_for_function("(s) => document.querySelector(s)?.data?.length > 0", arg=LIVE_PLOT,
                           timeout=WIDGETS * 1000)
    bins = "(s) => document.querySelector(s).data[0].x.length"
    before = page.evaluate(bins, LIVE_PLOT)
    page.wait_for_function(f"([s, n]) => ({bins})(s) >= n", arg=[LIVE_PLOT, before + 3], timeout=WIDGETS * 1000)
    readout = page.locator(f"{PANEL} .widget-slider", has_text="p1 weight").locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("0")
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"""(s) => {{
            const answers = name => {RECENT_ANSWERS}(s, name);
            return answers("p1") === 0 && answers("p2") + answers("p3") > 0;
        }}""", arg=LIVE_PLOT, timeout=WIDGETS * 1000)


TUTORIAL = 420.0
"""Seconds one tutorial gets to run all its cells in the browser (tutorial 9's simulations
take the longest)."""


@dataclass
class TutorialRun:
    """What one tutorial showed in the browser site: ``errors``, the text of every error
    output; ``plots``, the Plotly figures drawn; ``seconds``, from opening the page to its
    last cell's end."""

    errors: list[str]
    plots: int
    seconds: float


def run_tutorial(site: Path, chromium: str, name: str, screenshot: Path | None = None) -> TutorialRun:
    """Open notebook ``name`` (of :data:`lite.build.NOTEBOOKS`) of ``site`` in a fresh ``chromium``, clear the outputs it was
    saved with, run all its cells and wait until the last one has run (at most
    :data:`TUTORIAL` seconds, else Playwright's ``TimeoutError``); what it showed, and a
    picture of its end to ``screenshot``. Requests outside 127.0.0.1 are aborted."""
    site_copy, _ = build.skip_socket_cells(json.loads((build.NOTEBOOKS / name).read_text(encoding="utf-8")))
    cells = sum(cell["cell_type"] == "code" for cell in site_copy["cells"])
    with _browser(site, chromium, []) as (page, url):
        opened = time.monotonic()
        page.goto(url + f"?path=notebooks/{name}")
        page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=FIRST_OUTPUT * 1000)
        page.locator(f"{PANEL} .jp-Cell").first.click()
        for menu, item in (("Edit", "Clear Outputs of All Cells"), ("Run", "Run All Cells")):
            page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
            page.locator(".lm-Menu-itemLabel").filter(has_text=item).first.click()
        page.wait_for_function(
            """([selector, n]) => {
                const prompts = document.querySelectorAll(selector);
                return prompts.length === n && prompts[n - 1].textContent.trim() === `[${n}]:`;
            }""",
            arg=[f"{PANEL} .jp-CodeCell .jp-InputPrompt", cells], timeout=TUTORIAL * 1000)
        seconds = time.monotonic() - opened
        errors = page.locator(f"{PANEL} .jp-OutputArea-output[data-mime-type*='error']")
        result = TutorialRun(errors=errors.all_inner_texts(),
                             plots=page.locator(f"{PANEL} .js-plotly-plot").count(), seconds=seconds)
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
        return result


@contextlib.contextmanager
def _browser(site: Path, chromium: str, outside: list[str]) -> Iterator[tuple[Any, str]]:
    """A page of a fresh ``chromium`` with ``site`` served on 127.0.0.1, and the site's URL;
    the URLs asked for outside 127.0.0.1 are aborted and added to ``outside``. The browser
    and the server end with the block."""
    from playwright.sync_api import sync_playwright

    httpd, thread = serve.serve_in_thread(site)

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
                yield context.new_page(), serve.url(httpd)
            finally:
                browser.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
