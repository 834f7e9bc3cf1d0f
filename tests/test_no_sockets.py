"""``import gwlab`` works where aiohttp, multidict, prometheus-client and redis are absent (the
browser site, on Pyodide): the core, the simulator, figures, reports, summaries, sweeps and the
exercises import, and the shells that open sockets stop with one line naming what they need.

Every module of the package is classified here; a new one fails the test until it is."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import pytest

import gwlab
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

ABSENT = ("aiohttp", "multidict", "prometheus_client", "redis")
"""What the interpreter of the test cannot import."""

WORKS = [
    "gwlab", "gwlab.__main__", "gwlab.admission", "gwlab.balancer", "gwlab.breaker", "gwlab.children", "gwlab.cli",
    "gwlab.config", "gwlab.entry", "gwlab.fleet", "gwlab.limiter", "gwlab.live", "gwlab.metastability", "gwlab.needs",
    "gwlab.observe", "gwlab.plots", "gwlab.providers", "gwlab.redis_server", "gwlab.report", "gwlab.retry",
    "gwlab.router", "gwlab.sim", "gwlab.stats", "gwlab.streams", "gwlab.summary", "gwlab.sweep", "gwlab.timeline",
    "gwlab.timeseries", "gwlab.upstream", "gwlab.wire", "gwlab.workload",
    "gwlab.exercises", "gwlab.exercises.balancing", "gwlab.exercises.breaker", "gwlab.exercises.capstone",
    "gwlab.exercises.fault_drills", "gwlab.exercises.llm_traffic", "gwlab.exercises.load_testing",
    "gwlab.exercises.metrics", "gwlab.exercises.retries", "gwlab.exercises.scale_out",
    "gwlab.exercises.token_bucket",
    "gwlab.lab", "gwlab.lab.controls", "gwlab.lab.dashboard", "gwlab.lab.loop", "gwlab.lab.summary",
    "gwlab.lab.virtual",
]
"""The modules that import without any package of :data:`ABSENT` (the virtual lab among them)."""

LIVE_LAB = "the live lab (gwlab.lab) needs aiohttp, multidict, prometheus_client"
FULL_INSTALL = "which this Python does not have: it runs on a full install (pip install gwlab)"
NEEDS = {
    "gwlab.server": "gwlab.server needs aiohttp, multidict, prometheus_client",
    "gwlab.replicas": "gwlab.replicas needs aiohttp, multidict, prometheus_client",
    "gwlab.metrics": "gwlab.metrics needs prometheus_client",
    "gwlab.loadgen": "gwlab.loadgen needs aiohttp",
    "gwlab.clients": "gwlab.clients needs aiohttp",
    "gwlab.connections": "gwlab.connections needs aiohttp",
    "gwlab.forward": "gwlab.forward needs aiohttp",
    "gwlab.errors": "gwlab.errors needs aiohttp, multidict",
    "gwlab.redis_bucket": 'limiter.backend = "redis" (gwlab.redis_bucket) needs redis',
    "gwlab.lab.clients": LIVE_LAB, "gwlab.lab.handle": LIVE_LAB,
    "gwlab.lab.recorder": "gwlab.clients needs aiohttp",
}
"""The shells that open sockets (or reach Redis), with the start of the one line each raises."""

PROBE = """
import contextlib, importlib, io, json, sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {absent!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
out = {{"imports": {{}}}}
for module in {modules!r}:
    try:
        importlib.import_module(module)
        out["imports"][module] = None
    except Exception as exc:
        out["imports"][module] = [type(exc).__name__, str(exc)]
import gwlab, gwlab.lab
result = gwlab.simulate(None, 60, seed=1)
out["admitted"] = result.summary()["admitted"]
out["traces"] = len(result.figure().data)
try:
    gwlab.lab.start(mode="live")
except Exception as exc:
    out["live_lab"] = [type(exc).__name__, str(exc)]
from gwlab.cli import main
for command in (["run", "--duration", "1"], ["serve"], ["simulate", "--duration", "1"]):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        out[command[0]] = [main(command), stderr.getvalue()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probed() -> dict:
    """What an interpreter without :data:`ABSENT` did: each module's import (``None`` or the
    exception's type and message), a 60 s simulation's admitted count and figure, a live lab's
    start, and the command line's run, serve and simulate (exit status and stderr)."""
    code = PROBE.format(absent=ABSENT, modules=[*WORKS, *NEEDS])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=SIMULATION_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_module_is_classified():
    modules = {"gwlab", *(m.name for m in pkgutil.walk_packages(gwlab.__path__, "gwlab."))}
    assert modules == {*WORKS, *NEEDS}
    assert not set(WORKS) & set(NEEDS)


@pytest.mark.parametrize("module", WORKS)
def test_module_imports_without_sockets(probed, module):
    assert probed["imports"][module] is None


@pytest.mark.parametrize("module", NEEDS)
def test_socket_shell_says_what_it_needs_in_one_line(probed, module):
    kind, message = probed["imports"][module]
    assert kind == "FullInstallNeeded"
    assert message.startswith(NEEDS[module] + ", ")
    assert "\n" not in message


def test_the_simulator_and_its_figure_run_without_sockets(probed):
    from gwlab import simulate

    assert probed["admitted"] == simulate(None, 60, seed=1).summary()["admitted"]
    assert probed["traces"] > 0


@pytest.mark.parametrize("command", ["run", "serve"])
def test_run_and_serve_say_in_one_line_what_they_need(probed, command):
    status, stderr = probed[command]
    assert status == 2
    assert stderr == f"gwlab: error: gwlab {command} needs aiohttp, multidict, prometheus_client, {FULL_INSTALL}\n"


def test_simulate_on_the_command_line_runs_without_sockets(probed):
    assert probed["simulate"] == [0, ""]



def test_a_notebook_shows_the_one_line_without_the_traceback(tmp_path):
    cell = "import gwlab.needs\ngwlab.needs.needs('the live lab (gwlab.lab)', ('no_such_package',))"
    code = ("from IPython.core.interactiveshell import InteractiveShell\n"
            f"InteractiveShell.instance().run_cell({cell!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=SIMULATION_TIMEOUT,
                          env={**os.environ, "IPYTHONDIR": str(tmp_path)})
    assert proc.stdout.strip() == ("FullInstallNeeded: the live lab (gwlab.lab) needs no_such_package, which this "
                                   "Python does not have: it runs on a full install (pip install gwlab)")


def test_the_live_lab_says_in_one_line_what_it_needs(probed):
    assert probed["live_lab"] == ["FullInstallNeeded", f"{LIVE_LAB}, {FULL_INSTALL}"]


# -- prometheus-client in the browser site ---------------------------------------------------

WITHOUT_GETPAGESIZE = "import resource\ndel resource.getpagesize\n"
"""What a Pyodide kernel starts with: a ``resource`` module without ``getpagesize``."""


def _python(source: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(gwlab.__file__))})


def test_prometheus_client_does_not_import_where_resource_lacks_getpagesize():
    proc = _python(WITHOUT_GETPAGESIZE + "import prometheus_client\n")
    assert proc.returncode == 1
    assert "AttributeError: module 'resource' has no attribute 'getpagesize'" in proc.stderr


def test_after_import_gwlab_prometheus_client_imports_there_and_renders_a_registry():
    proc = _python(WITHOUT_GETPAGESIZE + "import os, resource\nimport gwlab\n"
                   "from prometheus_client import CollectorRegistry, Counter, generate_latest\n"
                   "registry = CollectorRegistry()\n"
                   "Counter('answers', 'Answers.', ['code'], registry=registry).labels('200').inc()\n"
                   "print(resource.getpagesize() == os.sysconf('SC_PAGESIZE'))\n"
                   "print(generate_latest(registry).decode().splitlines()[2])\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["True", 'answers_total{code="200"} 1.0']


def test_a_resource_module_with_getpagesize_keeps_its_own():
    proc = _python("import resource\nown = resource.getpagesize\nimport gwlab\nprint(resource.getpagesize is own)\n")
    assert proc.stdout == "True\n", proc.stderr
