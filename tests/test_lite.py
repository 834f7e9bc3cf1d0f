"""The browser site (``make lite``) in a real browser: built once per run, served on loopback,
opened in Debian's chromium through Playwright with every request outside 127.0.0.1 aborted.

A small check notebook, added to a copy of the notebooks, runs a 60 s simulation (the same
admitted count as CPython's), draws its figure and shows a slider, which the test moves and
sees the kernel answer. No cell may print an error. The page's screenshot goes to
:data:`SCREENSHOT`; the test prints the time from opening the page to the first cell's output.
Under CI=true a missing browser, Playwright or JupyterLite build tool fails the test instead of
skipping it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from gwlab import simulate
from lite import build as lite_build
from lite import serve as lite_serve
from tests.conftest import SIMULATION_TIMEOUT, require_module, require_tool

SITE = lite_build.ROOT / "build" / "lite-test"
"""The site this test builds (the notebooks and :data:`CHECK`), reused while newer than its inputs."""
SCREENSHOT = lite_build.ROOT / "build" / "lite-check.png"
CHECK = "lite_check.ipynb"
BUDGET = lite_build.BUILD_TIMEOUT + 2 * lite_build.DOWNLOAD_TIMEOUT + 300
"""Seconds the test gets: a cold build (its downloads and ``jupyter lite build``) and the page."""
FIRST_OUTPUT = 120_000
"""Milliseconds from opening the page to the first cell's output (Pyodide and the kernel's
packages load from the site)."""
WIDGETS = 60_000
"""Milliseconds the figure and the slider get to render, and the kernel to answer the slider."""
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
CELLS = [
    "import gwlab\n\nresult = gwlab.simulate(None, 60, seed=1)\nprint('admitted', result.summary()['admitted'])",
    "result.figure()",
    "import ipywidgets\n\nslider = ipywidgets.IntSlider(value=1, min=0, max=10, description='seed')\n"
    "seen = ipywidgets.Label('kernel saw 1')\n"
    "slider.observe(lambda change: setattr(seen, 'value', f'kernel saw {change.new}'), names='value')\n"
    "ipywidgets.VBox([slider, seen])",
]
"""The check notebook's cells."""

pytestmark = pytest.mark.timeout(BUDGET)


def check_notebook() -> dict:
    """The check notebook (nbformat 4), with the site kernel's kernelspec so that no dialog asks."""
    cells = [{"cell_type": "code", "execution_count": None, "id": f"check-{i}", "metadata": {}, "outputs": [],
              "source": source} for i, source in enumerate(CELLS)]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python", "display_name": "Python (Pyodide)", "language": "python"}}}


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The site of the notebooks and :data:`CHECK`, built unless :data:`SITE` is newer than
    its inputs and this file."""
    require_module("jupyterlite_core")
    require_tool("npm")
    if lite_build.up_to_date(SITE) and lite_build.lock_path(SITE).stat().st_mtime >= Path(__file__).stat().st_mtime:
        return SITE
    notebooks = tmp_path_factory.mktemp("lite") / "notebooks"
    shutil.copytree(lite_build.NOTEBOOKS, notebooks)
    (notebooks / CHECK).write_text(json.dumps(check_notebook(), indent=1) + "\n", encoding="utf-8")
    started = time.monotonic()
    lite_build.build(SITE, notebooks=notebooks)
    print(f"site built in {time.monotonic() - started:.1f} s")
    return SITE


def test_check_notebook_runs_in_the_browser_offline(site):
    chromium = require_tool("chromium")
    sync_playwright = require_module("playwright.sync_api").sync_playwright
    admitted = simulate(None, 60, seed=1).summary()["admitted"]
    httpd, thread = lite_serve.serve_in_thread(site)
    outside: list[str] = []

    def only_loopback(route) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--disable-dev-shm-usage"])
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1200}, service_workers="block")
                context.route("**/*", only_loopback)
                page = context.new_page()
                opened = time.monotonic()
                page.goto(lite_serve.url(httpd) + f"?path={CHECK}")
                page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=FIRST_OUTPUT)
                page.locator(f"{PANEL} .jp-Cell").first.click()
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel").filter(has_text="Run All Cells").first.click()
                first = page.locator(f"{PANEL} .jp-OutputArea-output", has_text="admitted").first
                first.wait_for(timeout=FIRST_OUTPUT)
                print(f"first cell's output {time.monotonic() - opened:.1f} s after opening the page")
                assert first.inner_text().strip() == f"admitted {admitted}"

                plot = f"{PANEL} .js-plotly-plot"
                page.wait_for_function("(s) => document.querySelector(s)?.data?.length > 0", arg=plot,
                                       timeout=WIDGETS)
                handle = page.locator(f"{PANEL} .widget-slider .noUi-handle").first
                handle.wait_for(timeout=WIDGETS)
                handle.focus()
                page.keyboard.press("ArrowRight")
                page.locator(f"{PANEL} .widget-label", has_text="kernel saw 2").wait_for(timeout=WIDGETS)

                errors = page.locator(f"{PANEL} .jp-OutputArea-output[data-mime-type*='stderr'], "
                                      f"{PANEL} .jp-OutputArea-output[data-mime-type*='error']")
                assert errors.all_inner_texts() == []
                page.screenshot(path=str(SCREENSHOT))
                print(f"screenshot: {SCREENSHOT}")
            finally:
                browser.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert not outside, outside


def test_site_lock_lists_only_wheels_the_site_serves(site):
    lock = json.loads(lite_build.lock_path(site).read_text(encoding="utf-8"))
    # Every wheel is a file of the site (a relative path from the lock's folder), none a URL.
    folder = lite_build.lock_path(site).parent
    for package in lock["packages"].values():
        wheel = (folder / package["file_name"]).resolve()
        assert wheel.is_file() and wheel.is_relative_to(site.resolve()), package["file_name"]
    assert {"gwlab", "plotly", "ipywidgets", "nbformat"} <= set(lock["packages"])
    assert not {"aiohttp", "multidict", "prometheus-client"} & set(lock["packages"])
    assert "nbformat" in lock["packages"]["plotly"]["depends"]
    settings = json.loads((site / "jupyter-lite.json").read_text(encoding="utf-8"))
    kernel = settings["jupyter-config-data"]["litePluginSettings"][lite_build.KERNEL_PLUGIN]
    assert kernel["disablePyPIFallback"] is True
    assert kernel["pyodideUrl"] == "./static/pyodide/pyodide.mjs"
