"""Importing one part of gwlab loads only that part; ``gwlab.simulate`` is loaded when used."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)


def test_importing_the_limiter_loads_nothing_else_of_gwlab():
    out = subprocess.run([sys.executable, "-c", "import sys, gwlab.limiter; "
                          "print(sorted(m for m in sys.modules if m.startswith('gwlab')))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['gwlab', 'gwlab.limiter']"


def test_the_commands_entry_point_loads_nothing_else_of_gwlab_before_it_handles_signals():
    out = subprocess.run([sys.executable, "-c", "import sys, gwlab.entry; "
                          "print(sorted(m for m in sys.modules if m.startswith('gwlab')))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['gwlab', 'gwlab.entry']"


def test_gwlab_simulate_still_works_when_asked_for():
    out = subprocess.run([sys.executable, "-c", "import gwlab; r = gwlab.simulate(duration=1.0); "
                          "print(type(r).__name__, 'gwlab.sim' in __import__('sys').modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "SimResult True"
