"""Session-wide pytest hooks: the time each notebook takes under nbval."""

from __future__ import annotations

from collections import defaultdict

_notebook_seconds: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report) -> None:
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    """One line per notebook run: how long it took from its first cell to its last."""
    if _notebook_seconds:
        terminalreporter.section("notebook times")
        for path, seconds in sorted(_notebook_seconds.items()):
            terminalreporter.write_line(f"{seconds:6.1f} s  {path}")
