"""Shared test helpers."""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    # CI explores the same examples every run, so a red run is the change's and repeats;
    # local runs draw new examples each time and keep the failing ones in .hypothesis/.
    settings.load_profile("ci")


def require_tool(name: str) -> str:
    """The path of an external tool a test needs. Without it the test is skipped with the
    reason shown, except under CI=true, where a missing tool fails the test: CI must install
    everything its tests use."""
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} is not installed (Debian: see .ci/run)")
    return path


def require_module(name: str) -> ModuleType:
    """A Python package a test needs from an extra (``make test`` installs them), imported.
    Without it the test is skipped with the reason shown, except under CI=true, where it fails
    the test, as :func:`require_tool` does."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"{name} is not installed (pip install -e '.[test,lab,sweep,redis]')")


def _missing(message: str) -> None:
    """Skip the test for want of something, or fail it under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


SIMULATION_TIMEOUT = 60
"""Wall-clock seconds within which every test of a module that runs simulations must end
(``pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)``): a simulation whose virtual time
stood still fails its test instead of hanging the run."""
