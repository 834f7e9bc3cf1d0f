"""The quickstart in a real browser: JupyterLab headless, driven by Debian's chromium through
Playwright (the system browser; nothing is downloaded).

The test opens a copy of the quickstart, runs every cell, and checks what a learner would
see: the dashboard with its sliders and live chart, a chart whose data grows by itself, a
weight slider that, moved to 0, takes its provider out of the traffic, readouts that show a
typed value as it is, control columns that nothing overflows, legends and colour bars that
stand beside their own panels without overlapping (live and static), and, after the page is
saved and reloaded, the same dashboard still live. It leaves screenshots of the dashboard and
of a static figure in :data:`ARTIFACTS` and prints where. A second test answers an exercise
wrong, then right, as a learner types it, and reads the check's verdicts. A failing test
leaves a picture of its page there too. Under CI=true a missing browser or Playwright fails
the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gwlab import plots
from tests.conftest import require_tool
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "notebooks" / "00_quickstart.ipynb"
EXERCISE = ROOT / "notebooks" / "02_weighted_balancing.ipynb"
"""The notebook whose first exercise the learner answers wrong, then right."""
EXERCISE_ANSWER = "sample_answer = None"
"""The start of the exercise's answer cell, as committed."""
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
ANSWER = 60_000
"""Milliseconds a learner's cell (an answer, its check) gets to run: the kernel, JupyterLab
and the browser share the machine with the other tests' processes."""
LAST_BIN = """(selector) => {
    const element = document.querySelector(selector);
    return element === null ? null : element.data[0].x[element.data[0].x.length - 1];
}"""
"""JavaScript: the start of the live chart's last bin (seconds), or null while it is not drawn."""
ARTIFACTS = ROOT / "artifacts" / "browser"
"""Where the screenshots go (ignored by git): the last run's stay there to be looked at."""
STATIC_PLOT = f"{PANEL} .jp-OutputArea-child > .js-plotly-plot"
"""A figure drawn by JupyterLab's Plotly renderer, not inside a widget."""
CONTROL_PARTS = ".widget-inline-hbox, .widget-label, .widget-readout, select, button"
"""What a control shows: the control, its description, its value, a drop-down and buttons
(a slider's inner parts are positioned by transforms and are left out)."""
CONTROL_COLUMNS = """([selector, parts]) => [...document.querySelectorAll(selector)].map(column => {
    const edge = column.getBoundingClientRect().right;
    const cut = [...column.querySelectorAll(parts)]
        .filter(e => e.getBoundingClientRect().right > edge + 0.5 || e.scrollWidth > e.clientWidth)
        .map(e => e.className + ': ' + (e.innerText || e.value || '').slice(0, 30));
    return {scroll: column.scrollWidth, client: column.clientWidth, cut};
})"""
"""JavaScript: each control column's widths and the ``parts`` in it that are cut off (beyond
its right edge, or wider than their own box)."""
LEGEND_BOXES = """(plot) => {
    const top = plot.getBoundingClientRect().top;
    const boxes = [], problems = [];
    for (const g of plot.querySelectorAll('g')) {
        const legend = /^legend(\\d*)$/.exec(g.getAttribute('class') || '');
        if (!legend && !g.classList.contains('colorbar')) continue;
        const name = legend ? legend[0] : 'colorbar';
        const box = g.getBoundingClientRect();
        const axis = plot._fullLayout['yaxis' + (legend ? legend[1] : '4')];
        const [low, high] = [top + axis._offset, top + axis._offset + axis._length];
        if (box.top < low - 1 || box.bottom > high + 1) problems.push(`${name} is beside another panel`);
        for (const [other, seen] of boxes) {
            if (box.left < seen.right && seen.left < box.right && box.top < seen.bottom && seen.top < box.bottom)
                problems.push(`${name} overlaps ${other}`);
        }
        boxes.push([name, box]);
    }
    return [boxes.length, problems];
}"""
"""JavaScript: how many legends and colour bars a figure has, and which of them overlap or
stand beside another panel than their own (the breaker panel, the fourth, holds the colour
bar)."""
BOXES = len(plots.PANELS) + 1
"""A legend per panel and the breaker states' colour bar."""


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "the playwright Python package is not installed (pip install playwright)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free port, serving copies of the quickstart and of
    :data:`EXERCISE`, with its own
    HOME (settings, workspaces) so that nothing leaks between runs; its URL."""
    work = tmp_path / "notebooks"
    work.mkdir()
    for notebook in (QUICKSTART, EXERCISE):
        shutil.copy(notebook, work / notebook.name)
    home = tmp_path / "home"
    settings = home / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No "news" toast over the page.
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    # Every cell laid out, in view or not: a chart drawn in a cell out of view (after a reload,
    # the page opens at the top) would otherwise wait for its cell to be scrolled to.
    notebook = settings.parent / "notebook-extension"
    notebook.mkdir()
    (notebook / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port = free_port()
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


def _readout(page, description: str):
    """The readout of the dashboard's slider labelled ``description``."""
    return page.locator(f"{PANEL} .widget-slider", has_text=description).locator(".widget-readout")


def _type_into(page, description: str, typed: str) -> None:
    """Type ``typed`` into the readout of slider ``description`` and wait until the readout,
    having been through the kernel, shows exactly that."""
    readout = _readout(page, description)
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(typed)
    page.keyboard.press("Enter")
    page.wait_for_function("([element, text]) => element.innerText === text",
                           arg=[readout.element_handle(), typed], timeout=WAIT)


def _wait_for_idle_kernel(jupyterlab: str, name: str) -> None:
    """Wait until the server says the kernel of notebook ``name`` has started and is idle (the
    page's indicator reads "idle" before its kernel has answered, and a cell run then waits
    on a kernel that a loaded machine may take long to start)."""
    deadline = time.monotonic() + STARTUP
    states = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{jupyterlab}/api/sessions", timeout=2) as answer:
            states = [s["kernel"]["execution_state"] for s in json.load(answer) if s["path"].endswith(name)]
        if states == ["idle"]:
            return
        time.sleep(0.2)
    pytest.fail(f"the kernel of {name} is not idle after {STARTUP} s: {states}")


@contextlib.contextmanager
def _opened(jupyterlab: str, notebook: Path):
    """A page of Debian's chromium showing ``notebook`` in ``jupyterlab``, its kernel idle."""
    chromium = require_tool("chromium")
    sync_playwright = _playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"{jupyterlab}/lab/tree/{notebook.name}?reset")
            page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=60_000)
            _wait_for_idle_kernel(jupyterlab, notebook.name)
            page.wait_for_selector(f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            try:
                yield page
            except BaseException:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "failed.png"))
                print(f"the page when the test failed: {ARTIFACTS / 'failed.png'}")
                raise
        finally:
            browser.close()


def test_quickstart_runs_and_its_dashboard_lives(jupyterlab):
    code_cells = sum(c["cell_type"] == "code" for c in json.loads(QUICKSTART.read_text())["cells"])
    with _opened(jupyterlab, QUICKSTART) as page:
        page.locator(f"{PANEL} .jp-Cell").first.click()  # the notebook is the current widget
        # Clear the committed outputs (and execution counts), so that the last cell's
        # prompt shows [N]: only once this run has reached it.
        _menu(page, "Edit", "Clear Outputs of All Cells")
        _wait_for_last_prompt(page, "[ ]:", code_cells, 10_000)
        _menu(page, "Run", "Run All Cells")
        _wait_for_last_prompt(page, f"[{code_cells}]:", code_cells, RUN_ALL)

        # The dashboard rendered: every slider and the live chart.
        sliders = page.locator(f"{PANEL} .widget-slider")
        assert sliders.count() == 18  # 3 per provider, 2 limiter, 3 breaker, 1 retry, 3 clients
        # The chart drawn with its traces (an element can be a plot before it has data).
        page.wait_for_function("(selector) => document.querySelector(selector)?.data?.length > 0",
                               arg=LIVE_PLOT, timeout=WAIT)

        # The chart's data grows on its own, the kernel idle: 3 more half-second bins.
        before = page.evaluate(f"() => document.querySelector({json.dumps(LIVE_PLOT)}).data[0].x.length")
        page.wait_for_function(
            "([selector, n]) => document.querySelector(selector).data[0].x.length >= n",
            arg=[LIVE_PLOT, before + 3], timeout=WAIT,
        )

        # p1's weight slider to 0: from then on p1 answers nothing, p2 and p3 everything.
        assert page.evaluate(f"{RECENT_ANSWERS}({json.dumps(LIVE_PLOT)}, 'p1')") > 0
        _type_into(page, "p1 weight", "0")
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

        # A typed value lands exactly and reads as it is, on a linear and on a log slider.
        typed = {"p1 error rate": "0.002", "max cooldown": "45.5"}
        for description, value in typed.items():
            _type_into(page, description, value)

        # Nothing overflows the control columns; legends and colour bars stand apart, in the
        # live chart and in the first static figure (pictured: a reloaded page draws only
        # the cells in view).
        columns = page.evaluate(CONTROL_COLUMNS, [f"{PANEL} .widget-hbox > .widget-vbox", CONTROL_PARTS])
        assert len(columns) == 3
        for column in columns:
            assert column["scroll"] <= column["client"] and column["cut"] == [], column
        for plot in (LIVE_PLOT, STATIC_PLOT):
            assert page.locator(plot).first.evaluate(LEGEND_BOXES) == [BOXES, []], plot
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        static = page.locator(STATIC_PLOT).first
        static.scroll_into_view_if_needed()
        static.screenshot(path=str(ARTIFACTS / "static_figure.png"))

        # A reloaded page gets the dashboard back from the kernel, and its chart still moves:
        # its last bin is 1.5 s later a few seconds on.
        page.keyboard.press("Control+s")
        page.wait_for_selector(".lm-TabBar-tab.jp-mod-dirty", state="detached", timeout=10_000)  # saved
        page.reload()
        page.wait_for_selector(LIVE_PLOT, timeout=60_000)
        reloaded = page.evaluate(f"({LAST_BIN})({json.dumps(LIVE_PLOT)})")
        page.wait_for_function(f"(selector) => ({LAST_BIN})(selector) >= {reloaded + 1.5}", arg=LIVE_PLOT,
                               timeout=WAIT)

        # The reloaded page shows the values typed before: the kernel kept them as they were.
        assert {description: _readout(page, description).inner_text() for description in typed} == typed

        # The picture shows the dashboard from its status line down: controls and charts.
        page.locator(f"{PANEL} .widget-html", has_text="answers/s").first.evaluate(
            "element => element.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
        print(f"screenshots in {ARTIFACTS}")


def _run_and_wait(page, cell) -> None:
    """Press Shift+Enter on the selected ``cell`` and wait until it has run: its prompt shows a
    number it did not show before (a prompt reads "[*]:" while the cell runs)."""
    prompt = cell.locator(".jp-InputPrompt")
    before = prompt.inner_text().strip()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "([element, before]) => { const text = element.textContent.trim();"
        " return /^\\[\\d+\\]:$/.test(text) && text !== before; }",
        arg=[prompt.element_handle(), before], timeout=ANSWER,
    )


def _answer(page, cell, check, answer: str) -> str:
    """Write ``answer`` in the exercise's answer ``cell``, run it and the ``check`` cell after
    it (Shift+Enter twice, as a learner does), and return the check's verdict. Each step waits
    for what a learner would see before taking the next: the answer in the editor, the answer
    cell run, the check run."""
    editor = cell.locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(answer)
    page.wait_for_function("([element, text]) => element.innerText === text",
                           arg=[editor.element_handle(), answer], timeout=WAIT)
    _run_and_wait(page, cell)
    _run_and_wait(page, check)  # Shift+Enter selected the check cell
    return check.locator(".jp-OutputArea-output").inner_text()


def test_an_exercise_check_judges_a_wrong_answer_then_the_right_one(jupyterlab):
    with _opened(jupyterlab, EXERCISE) as page:
        # Found by its place in the file: on the page, a cell holds what its editor has drawn.
        sources = ["".join(c["source"]) for c in json.loads(EXERCISE.read_text())["cells"] if c["cell_type"] == "code"]
        index = next(i for i, source in enumerate(sources) if EXERCISE_ANSWER in source)
        cells = page.locator(f"{PANEL} .jp-CodeCell")
        cell, check = cells.nth(index), cells.nth(index + 1)
        cell.scroll_into_view_if_needed()

        # 3600 requests: a band of ±1% at two standard deviations, not four.
        wrong = _answer(page, cell, check, "from gwlab.exercises.balancing import check_sample_size\n"
                                          "sample_answer = 3600")
        assert wrong.startswith("✘") and "too few" in wrong, wrong
        right = _answer(page, cell, check, "from gwlab.exercises.balancing import check_sample_size\n"
                                          "sample_answer = 14400")
        assert right.startswith("✔"), right
