"""The browser site (``make lite``) in a real browser: built once per run, served on loopback,
opened in Debian's chromium through Playwright with every request outside 127.0.0.1 aborted.

The check notebook of :mod:`lite.check`, added to a copy of the notebooks, runs a 60 s
simulation (the same admitted count as CPython's), draws its figure and shows a slider, which
the test moves and sees the kernel answer; then it starts the lab (virtual, the browser's
default) with its dashboard, whose chart must move by itself and answer its ``p1 weight``
slider. No cell may print an error. The page's screenshot
goes to :data:`SCREENSHOT`; the test prints the time from opening the page to the first cell's
output. Under CI=true a missing browser, Playwright or JupyterLite build tool fails the test
instead of skipping it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gwlab import simulate
from lite import build, check
from tests.conftest import require_module, require_tool

SCREENSHOT = build.ROOT / "build" / "lite-check.png"
BUDGET = build.BUILD_TIMEOUT + 2 * build.DOWNLOAD_TIMEOUT + check.FIRST_OUTPUT + 4 * check.WIDGETS
"""Seconds the test gets: a cold build (its downloads and ``jupyter lite build``) and the page."""

pytestmark = pytest.mark.timeout(BUDGET)


@pytest.fixture(scope="session")
def site() -> Path:
    """The check site, built once per run (or reused while newer than its inputs)."""
    require_module("jupyterlite_core")
    require_tool("npm")
    started = time.monotonic()
    out = check.site()
    print(f"check site ready in {time.monotonic() - started:.1f} s")
    return out


def test_check_notebook_runs_in_the_browser_offline(site):
    chromium = require_tool("chromium")
    require_module("playwright.sync_api")
    run = check.run(site, chromium, SCREENSHOT)
    print(f"first cell's output {run.first_output_s:.1f} s after opening the page; screenshot: {SCREENSHOT}")
    assert run.first_output == f"admitted {simulate(None, 60, seed=1).summary()['admitted']}"
    assert run.traces > 0
    assert run.slider_answered
    assert run.speed["requests"] > 0.9 * check.SPEED_RATE * check.SPEED_DURATION
    assert run.lab == "lab virtual"  # and its dashboard moved and answered (check.run raises otherwise)
    assert run.errors == []
    assert run.outside == []


def test_site_lock_lists_only_wheels_the_site_serves(site):
    lock = json.loads(build.lock_path(site).read_text(encoding="utf-8"))
    # Every wheel is a file of the site (a relative path from the lock's folder), none a URL.
    folder = build.lock_path(site).parent
    for package in lock["packages"].values():
        wheel = (folder / package["file_name"]).resolve()
        assert wheel.is_file() and wheel.is_relative_to(site.resolve()), package["file_name"]
    assert {"gwlab", "plotly", "ipywidgets", "nbformat", "prometheus-client"} <= set(lock["packages"])
    assert not {"aiohttp", "multidict"} & set(lock["packages"])
    assert "prometheus-client" not in lock["packages"]["gwlab"]["depends"]  # tutorial 4's, not gwlab's
    assert "nbformat" in lock["packages"]["plotly"]["depends"]
    settings = json.loads((site / "jupyter-lite.json").read_text(encoding="utf-8"))
    kernel = settings["jupyter-config-data"]["litePluginSettings"][build.KERNEL_PLUGIN]
    assert kernel["disablePyPIFallback"] is True
    assert kernel["pyodideUrl"] == "./static/pyodide/pyodide.mjs"


@pytest.mark.parametrize("name", sorted(path.name for path in build.NOTEBOOKS.glob("[0-9]*.ipynb")))
def test_each_tutorial_runs_all_its_cells_in_the_browser(site, name):
    chromium = require_tool("chromium")
    require_module("playwright.sync_api")
    run = check.run_tutorial(site, chromium, name, build.ROOT / "build" / f"lite-{name.removesuffix('.ipynb')}.png")
    print(f"{name}: {run.seconds:.0f} s, {run.plots} figures")
    assert run.errors == []
    # Every figure the notebook was saved with, in the cells the browser runs, is drawn there
    # (and the dashboards' live charts besides).
    saved = build.skip_socket_cells(json.loads((build.NOTEBOOKS / name).read_text(encoding="utf-8")))[0]
    assert run.plots >= sum("application/vnd.plotly.v1+json" in output.get("data", {})
                            for cell in saved["cells"] if cell["cell_type"] == "code" for output in cell["outputs"])
