"""The quickstart in a real browser: JupyterLab headless, driven by Debian's chromium through
Playwright (the system browser; nothing is downloaded).

The test opens a copy of the quickstart, runs every cell, and checks what a learner would
see: the dashboard with its sliders and live chart, a chart whose data grows by itself, a
weight slider that, moved to 0, takes its provider out of the traffic, and, after the page
is saved and reloaded, the same dashboard still live. It leaves a
screenshot in its temporary folder. Under CI=true a missing browser or Playwright fails the
test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "notebooks" / "00_quickstart.ipynb"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
LIVE_PLOT = f"{PANEL} .widget-vbox .js-plotly-plot"
STARTUP = 60.0
"""Seconds JupyterLab gets to answer."""
RUN_ALL = 120_000
"""Milliseconds the whole notebook gets to run."""
RECENT_ANSWERS = """((selector, name) => document.querySelector(selector).data
    .find(t => t.name === name).y.slice(-3).reduce((a, b) => a + b, 0))"""
"""JavaScript: the answers of provider ``name`` in the live chart's last three bins (1.5 s)."""
WAIT = 15_000
"""Milliseconds the live chart gets to show an expected change."""
LAST_BIN = """(selector) => {
    const element = document.querySelector(selector);
    return element === null ? null : element.data[0].x[element.data[0].x.length - 1];
}"""
"""JavaScript: the start of the live chart's last bin (seconds), or null while it is not drawn."""


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "the playwright Python package is not installed (pip install playwright)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free port, serving a copy of the quickstart, with its own
    HOME (settings, workspaces) so that nothing leaks between runs; its URL."""
    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(QUICKSTART, work / QUICKSTART.name)
    home = tmp_path / "home"
    settings = home / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No "news" toast over the page.
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = _free_port()
    env = {**os.environ, "HOME": str(home)}
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.token=",
         "--ServerApp.password=", f"--ServerApp.root_dir={work}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start; see {log.name}")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _menu(page, menu: str, item: str) -> None:
    """Click ``item`` of the menu bar's ``menu`` (Lumino menu items are found by their label)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel").filter(has_text=item).first.click()


def _wait_for_last_prompt(page, text: str, cells: int, timeout: float) -> None:
    """Wait until the input prompt of the last of the ``cells`` code cells reads ``text``."""
    page.wait_for_function(
        """([selector, n, text]) => {
            const prompts = document.querySelectorAll(selector);
            return prompts.length === n && prompts[n - 1].textContent.trim() === text;
        }""",
        arg=[f"{PANEL} .jp-CodeCell .jp-InputPrompt", cells, text], timeout=timeout,
    )


def test_quickstart_runs_and_its_dashboard_lives(jupyterlab, tmp_path):
    chromium = require_tool("chromium")
    sync_playwright = _playwright()
    code_cells = sum(c["cell_type"] == "code" for c in json.loads(QUICKSTART.read_text())["cells"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"{jupyterlab}/lab/tree/{QUICKSTART.name}?reset")
            page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=60_000)
            page.wait_for_selector(f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)

            page.locator(f"{PANEL} .jp-Cell").first.click()  # the notebook is the current widget
            # Clear the committed outputs (and execution counts), so that the last cell's
            # prompt shows [N]: only once this run has reached it.
            _menu(page, "Edit", "Clear Outputs of All Cells")
            _wait_for_last_prompt(page, "[ ]:", code_cells, 10_000)
            _menu(page, "Run", "Run All Cells")
            _wait_for_last_prompt(page, f"[{code_cells}]:", code_cells, RUN_ALL)

            # The dashboard rendered: every slider and the live chart.
            sliders = page.locator(f"{PANEL} .widget-slider")
            assert sliders.count() == 16  # 3 per provider, 2 limiter, 3 breaker, 2 clients
            page.wait_for_selector(LIVE_PLOT)

            # The chart's data grows on its own, the kernel idle: 3 more half-second bins.
            before = page.evaluate(f"() => document.querySelector({json.dumps(LIVE_PLOT)}).data[0].x.length")
            page.wait_for_function(
                "([selector, n]) => document.querySelector(selector).data[0].x.length >= n",
                arg=[LIVE_PLOT, before + 3], timeout=WAIT,
            )

            # p1's weight slider to 0: from then on p1 answers nothing, p2 and p3 everything.
            assert page.evaluate(f"{RECENT_ANSWERS}({json.dumps(LIVE_PLOT)}, 'p1')") > 0
            readout = page.locator(f"{PANEL} .widget-slider", has_text="p1 weight").locator(".widget-readout")
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("0")
            page.keyboard.press("Enter")
            # Wait for three bins (1.5 s) in a row in which p1 answered nothing and the others did.
            page.wait_for_function(
                f"""(selector) => {{
                    const answers = name => {RECENT_ANSWERS}(selector, name);
                    return answers("p1") === 0 && answers("p2") + answers("p3") > 0;
                }}""",
                arg=LIVE_PLOT, timeout=WAIT,
            )
            # The status line shows the last bin's shares: "p1: 0%" once a bin has admitted
            # answers (a bin in which every client waits on a 2 s call of p3 shows "-").
            status = page.locator(f"{PANEL} .widget-html", has_text="answers/s").first
            page.wait_for_function("(element) => element.innerText.includes('p1: 0%')",
                                   arg=status.element_handle(), timeout=WAIT)

            # A reloaded page gets the dashboard back from the kernel, and its chart still moves:
            # its last bin is 1.5 s later a few seconds on.
            page.keyboard.press("Control+s")
            page.wait_for_selector(".lm-TabBar-tab.jp-mod-dirty", state="detached", timeout=10_000)  # saved
            page.reload()
            page.wait_for_selector(LIVE_PLOT, timeout=60_000)
            reloaded = page.evaluate(f"({LAST_BIN})({json.dumps(LIVE_PLOT)})")
            page.wait_for_function(f"(selector) => ({LAST_BIN})(selector) >= {reloaded + 1.5}", arg=LIVE_PLOT,
                                   timeout=WAIT)

            # The picture shows the dashboard from its status line down: controls and charts.
            page.locator(f"{PANEL} .widget-html", has_text="answers/s").first.evaluate(
                "element => element.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(tmp_path / "quickstart.png"))
        finally:
            browser.close()
