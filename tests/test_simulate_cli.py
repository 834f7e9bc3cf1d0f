"""``gwlab simulate`` from the command line: output files, determinism, bad input."""

from __future__ import annotations

import argparse
import errno
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gwlab import config
from gwlab.cli import OUTPUT_FLAGS, _output, _write_whole, check_writable, main
from gwlab.config import Scenario
from gwlab.router import Router
from gwlab.stats import Tally
from gwlab.summary import summarise
from tests.conftest import SIMULATION_TIMEOUT

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

ROOT = Path(__file__).resolve().parent.parent


def _gwlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gwlab", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_json_is_byte_identical_across_processes_and_has_every_part(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    for path in (first, second):
        done = _gwlab("simulate", "--duration", "20", "--rate", "300", "--seed", "3", "--json", str(path))
        assert done.returncode == 0, done.stderr
    assert first.read_bytes() == second.read_bytes()
    data = json.loads(first.read_text())
    assert set(data) == {"summary", "timeseries", "transitions", "flips"}
    assert data["summary"]["seed"] == 3
    assert data["summary"]["scenario"]["workload"] == {"mode": "open", "clients": 100, "think_time": 0.0,
                                                       "rate": 300.0}
    printed = done.stdout.splitlines()[0]
    assert f"offered {data['summary']['offered']} " in printed and "requested 300/s" in printed


def test_summary_schema_is_the_live_runs(tmp_path):
    path = tmp_path / "s.json"
    assert main(["simulate", "--duration", "5", "--json", str(path)]) == 0
    simulated = json.loads(path.read_text())["summary"]
    scenario = Scenario()
    live = summarise(Tally(), mode="live", seed=1, scenario=scenario, duration=1.0, sent=0, saturated=0,
                     workloads=[(0.0, scenario.workload)], end=Router(scenario, 1).snapshot(0.0), trips={},
                     fallbacks={}, events_refused=0, retries={})

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k not in ("codes", "scenario"):
                out |= keys(v, f"{prefix}{k}.")
        return out

    assert keys(live) == keys(simulated)


def test_report_is_a_self_contained_page(tmp_path):
    page = tmp_path / "run.html"
    assert main(["simulate", "--config", str(ROOT / "scenarios/p1_outage.toml"), "--duration", "30",
                 "--report", str(page)]) == 0
    html = page.read_text()
    assert html.startswith("<!") and "<script src=" not in html and "plotly" in html.lower()


class _Full(io.StringIO):
    """A file on a full disk: its first write fails."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("flag", ["--json", "--report"])
def test_an_output_that_cannot_be_written_whole_leaves_the_file_there_before(flag, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.write_text("before\n")
    opened = Path.open
    monkeypatch.setattr(Path, "open", lambda path, *args, **kwargs: _Full() if path.name == "out.part"
                        else opened(path, *args, **kwargs))
    assert main(["simulate", "--duration", "2", flag, str(out)]) == 2
    assert capsys.readouterr().err == f"gwlab: error: {flag}: '{out}': cannot write: No space left on device\n"
    assert out.read_text() == "before\n" and [path.name for path in tmp_path.iterdir()] == ["out"]


SIGNALLED = """
import os, signal, sys, time
import gwlab.sim
from gwlab.cli import main

def signalled(*args, **kwargs):  # a simulation that gets the signal mid-run, as from Ctrl-C or kill
    os.kill(os.getpid(), int(sys.argv[1]))
    time.sleep(60)

gwlab.sim.simulate = signalled
sys.exit(main(["simulate", "--duration", "100", "--json", sys.argv[2]]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_simulation_with_one_line_and_writes_nothing(sig, tmp_path):
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-c", SIGNALLED, str(int(sig)), str(out)], capture_output=True, text=True,
                          timeout=SIMULATION_TIMEOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert (done.returncode, done.stdout, done.stderr) == (128 + sig, "", "gwlab: simulate interrupted: nothing written\n")
    assert not out.exists()


SIGNALLED_LATE = """
import os, sys, time
import gwlab.cli, gwlab.report

def signalled(*args, **kwargs):  # the signal comes at the chosen stage, as from Ctrl-C or kill
    os.kill(os.getpid(), int(sys.argv[1]))
    time.sleep(60)

if sys.argv[2] == "rendering the report":
    gwlab.report.render = signalled
else:  # as the report is renamed into place, the JSON written
    renamed = []
    replace = os.replace
    def replacing(part, target):
        renamed.append(target)
        if len(renamed) == 2:
            signalled()
        replace(part, target)
    gwlab.cli.os.replace = replacing
sys.exit(gwlab.cli.main(["simulate", "--duration", "5", "--json", sys.argv[3], "--report", sys.argv[4]]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("stage, said", [("rendering the report", "nothing written"),
                                         ("writing the report", "--json written, nothing else")])
def test_a_signal_after_the_simulation_says_what_was_written(sig, stage, said, tmp_path):
    json_out, report_out = tmp_path / "out.json", tmp_path / "out.html"
    done = subprocess.run([sys.executable, "-c", SIGNALLED_LATE, str(int(sig)), stage, str(json_out), str(report_out)],
                          capture_output=True, text=True, timeout=SIMULATION_TIMEOUT,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 128 + sig, done.stderr
    assert done.stderr == f"gwlab: simulate interrupted: {said}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == (["out.json"] if "--json" in said else [])


@pytest.mark.parametrize("args, flag, parse", [
    (["simulate", "--duration", "1", "--json", "-"], "--json", lambda text: json.loads(text)["summary"]["offered"]),
    (["simulate", "--duration", "1", "--report", "-"], "--report", lambda text: text.startswith("<!DOCTYPE html>")),
    (["sweep", "--grid", "workload.clients=5", "--duration", "1", "--workers", "1", "--out", "-"], "--out",
     lambda text: text.startswith("workload.clients,seed,")),
])
def test_an_output_named_dash_goes_to_stdout_and_the_rest_to_stderr(args, flag, parse, tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert parse(out), out
    assert err and not err.startswith("gwlab: error"), err  # the summary, or the line saying what was written
    assert list(tmp_path.iterdir()) == []  # no file named "-"


@pytest.mark.parametrize("flag", OUTPUT_FLAGS)
def test_every_output_flag_takes_dash_for_stdout_and_dot_slash_dash_for_a_file(flag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    attribute = flag[2:].replace("-", "_")
    check_writable(flag, _output("-"))
    stdout = io.StringIO()
    _write_whole(argparse.Namespace(**{attribute: _output("-")}, stdout=stdout), flag, lambda out: out.write("text\n"))
    assert stdout.getvalue() == "text\n" and list(tmp_path.iterdir()) == []
    _write_whole(argparse.Namespace(**{attribute: _output("./-")}, stdout=stdout), flag, lambda out: out.write("file"))
    assert (tmp_path / "-").read_text() == "file" and stdout.getvalue() == "text\n"


@pytest.mark.parametrize("args, expected", [
    (["--duration", "-1"], "--duration = -1.0: expected a number >= 1e-06 and <= 31536000"),
    ([], "the following arguments are required: --duration"),
    (["--duration", "1e9"], "--duration = 1000000000.0: expected a number >= 1e-06 and <= 31536000"),
    (["--duration", "200000"], "simulate: duration = 200000: expected at most 100000 bins of bin_width = 1 s"),
    (["--duration", "5", "--seed", "-1"], "--seed = -1: expected a whole number >= 0 and <= 18446744073709551615"),
    (["--duration", "5", "--clients", "100001"], "workload.clients = 100001: expected a whole number >= 1 and <= 100000"),
    (["--duration", "5", "--rate", "1e400"], "--rate: workload.rate = inf: expected a number >= 0.001 and <= 1e+06"),
    (["--duration", "5", "--rate", "0"], "--rate: workload.rate = 0.0: expected a number >= 0.001 and <= 1e+06"),
    (["--duration", "5", "--report", "/nonexistent/dir/r.html"],
     "--report: '/nonexistent/dir/r.html': expected a file in an existing directory"),
    (["--duration", "5", "--config", "/nonexistent.toml"], "/nonexistent.toml: cannot read"),
    (["--duration", "5", "--replicas", "0"], "--replicas = 0: expected a whole number >= 1 and <= 64"),
    (["--duration", "5", "--replicas", "65"], "--replicas = 65: expected a whole number >= 1 and <= 64"),
    (["--duration", "5", "--replicas", "1.5"], "argument --replicas: expected a whole number, got '1.5'"),
    (["--duration", "5", "--seed", "x"], "argument --seed: expected a whole number, got 'x'"),
    (["--duration", "5", "--limiter-backend", "etcd"],
     "--limiter-backend: limiter.backend = 'etcd': expected one of 'local', 'redis'"),
    (["--duration", "5", "--json", "/tmp/gwlab-run.out", "--report", "/tmp/gwlab-run.out"],
     "--json and --report both name '/tmp/gwlab-run.out': expected a file of its own for each"),
    (["--duration", "5", "--json", "/tmp/gwlab-run.out", "--report", "/tmp/../tmp/gwlab-run.out"],
     "--json and --report both name '/tmp/../tmp/gwlab-run.out': expected a file of its own for each"),
    (["--duration", "5", "--config", "/tmp/gwlab-run.out", "--report", "/tmp/../tmp/gwlab-run.out"],
     "--config and --report both name '/tmp/../tmp/gwlab-run.out': expected a file of its own for each"),
    (["--duration", "5", "--json", "-", "--report", "-"], "--json and --report both name '-': expected a file of its "
     "own for each"),
    (["--duration", "5", "--json", ""], "argument --json: expected a file name, got ''"),
    (["--duration", "5", "--report", ""], "argument --report: expected a file name, got ''"),
    (["--duration", "5", "--config", ""], "argument --config: expected a file name, got ''"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, expected):
    assert main(["simulate", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.parametrize("args, refused", [
    (["--json", "out", "--scrape-config", "out", "--replicas", "2"], True),
    (["--json", "out", "--scrape-config", "out"], False),  # no replicas: no scrape configuration is written
])
def test_a_run_refuses_one_file_for_two_outputs(tmp_path, monkeypatch, capsys, args, refused):
    monkeypatch.chdir(tmp_path)
    if refused:
        assert main(["run", "--duration", "1", *args]) == 2
        assert capsys.readouterr().err == ("gwlab: error: --json and --scrape-config both name 'out': "
                                           "expected a file of its own for each\n")
    else:
        assert main(["run", "--duration", "0", *args]) == 2  # refused for its duration, after the outputs' check
        assert "--duration" in capsys.readouterr().err


def test_zero_time_closed_loop_is_refused(tmp_path, capsys):
    path = tmp_path / "instant.toml"
    path.write_text("[providers.fast]\nlatency = 0.0\n")
    assert main(["simulate", "--config", str(path), "--duration", "5"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "think_time" in err, err


def test_a_scenario_file_with_an_integer_beyond_floats_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text("[limiter]\nrate = 1" + "0" * 400 + "\n")
    done = _gwlab("simulate", "--config", str(path), "--duration", "1")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"gwlab: error: {path}: limiter.rate = 1E+400: expected a number >= 0.001 and <= 1e+06\n"


def test_many_closed_loop_clients_against_an_empty_bucket_finish_and_obey_the_limiter(tmp_path):
    # 2,000 clients each retrying at the advertised wait used to retry at the same instant
    # for ever (a wait of 1e-17 s). Now each 429 waits at least a microsecond, and the
    # gateway admits exactly burst + rate x duration.
    out = tmp_path / "run.json"
    done = _gwlab("simulate", "--clients", "2000", "--duration", "0.1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())["summary"]
    taken = sum(n for code, n in summary["codes"].items() if code != "429")
    assert abs(taken - (1000 + 1000 * 0.1)) <= 1
    assert summary["codes"]["429"] > 2000


@pytest.mark.parametrize("backend, buckets", [("local", 4), ("redis", 1)])
def test_replicas_with_local_or_shared_limits(tmp_path, capsys, backend, buckets):
    # The seed's limit (1000/s, a burst of 1000) and 4 replicas offered 6000/s for 10 s: each
    # replica receives about 1500/s, more than a bucket refills, so every bucket binds:
    # local ones let 4 x 11,000 through (less a few tokens wasted while a bucket is full),
    # the shared one 11,000.
    path = tmp_path / "run.json"
    argv = ["simulate", "--duration", "10", "--rate", "6000", "--replicas", "4", "--limiter-backend", backend,
            "--seed", "2", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    states = [line.rsplit("  state ", 1)[1].split() for line in out.splitlines() if line.startswith("p")]
    assert len(states) == 3 and all(sum(int(s.split("×")[1]) for s in each) == 4 for each in states)  # by replica
    summary = json.loads(path.read_text())["summary"]
    through = summary["offered"] - summary["codes"]["429"]
    assert 0.99 * buckets * 11_000 <= through <= buckets * 11_001
    assert summary["scenario"]["limiter"].get("backend", "local") == backend and len(summary["replicas"]) == 4


SCENARIO_TEXT = '[workload]\nmode = "open"\nrate = 40\n\n[providers.p1]\nerror_rate = 0.3\n'
"""A scenario file's text, read from a file or from standard input."""


@pytest.mark.parametrize("args, output", [
    (["simulate", "--duration", "5", "--seed", "4", "--json", "-", "--config"], json.loads),
    (["sweep", "--grid", "workload.rate=20,30", "--duration", "3", "--workers", "1", "--out", "-"], str),
])
def test_a_scenario_read_from_standard_input_runs_as_its_file_does(args, output, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SCENARIO_TEXT)
    (tmp_path / "-").write_text("[workload]\nrate = 1\n")  # named ./- only; - alone is standard input
    runs = {}
    for named in ("s.toml", "-"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(SCENARIO_TEXT.encode())))
        assert main([*args, named]) == 0
        runs[named] = output(capsys.readouterr().out)
    assert runs["-"] == runs["s.toml"]
    assert main([*args, "./-"]) == 0
    assert output(capsys.readouterr().out) != runs["-"]  # the file named -, at 1 request/s


@pytest.mark.parametrize("stdin, expected", [
    (b"x = \n", "standard input: not valid TOML: Invalid value (at line 1, column 5)"),
    (b"[workload]\nrate = -1\n", "standard input: workload.rate = -1: expected a number >= 0.001 and <= 1e+06"),
    (b"\xff", "standard input: byte 0xff at offset 0: expected UTF-8 text"),
    (b"#" * 65, "standard input: more than 64 bytes: expected a scenario file of at most 64 bytes"),
    (None, "standard input: cannot read: there is none (it is closed)"),
])
@pytest.mark.parametrize("command", [
    ["simulate", "--duration", "1", "--config", "-"],
    ["run", "--duration", "1", "--config", "-"],
    ["serve", "--config", "-"],
    ["sweep", "-", "--grid", "workload.rate=1", "--duration", "1"],
])
def test_a_bad_scenario_on_standard_input_is_one_line_naming_it_and_exit_2(command, stdin, expected, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr(config, "MAX_SCENARIO_BYTES", 64)
    monkeypatch.setattr(sys, "stdin", None if stdin is None else io.TextIOWrapper(io.BytesIO(stdin)))
    assert main(command) == 2  # before any server or worker starts
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"gwlab: error: {expected}"), err


def test_a_scenario_piped_into_the_command_runs_as_its_file_does(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO_TEXT)
    command = [sys.executable, "-m", "gwlab", "simulate", "--duration", "5", "--json", "-", "--config"]
    piped = subprocess.run([*command, "-"], cwd=ROOT, input=SCENARIO_TEXT, capture_output=True, text=True,
                           timeout=120)
    named = subprocess.run([*command, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == named.stdout and json.loads(piped.stdout)["summary"]["scenario"]["workload"]["rate"] == 40


def _reading_its_pipe(pid: int) -> bool:
    """Whether process ``pid`` is blocked reading a pipe: Linux's wait channel names the pipe's
    read (``pipe_read``, ``anon_pipe_read``, or ``pipe_wait`` on older kernels)."""
    return "pipe_" in Path(f"/proc/{pid}/wchan").read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", [
    ["simulate", "--duration", "1", "--config", "-"],
    ["serve", "--config", "-", "--port", "0", "--metrics-port", "0"],
    ["sweep", "-", "--grid", "workload.rate=1", "--duration", "1"],
])
def test_a_signal_while_the_scenario_is_awaited_on_standard_input_ends_with_one_line(command, sig):
    with subprocess.Popen([sys.executable, "-m", "gwlab", *command], cwd=ROOT, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 60
        while not _reading_its_pipe(process.pid):  # the writer sends nothing and keeps the pipe open
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.05)
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 128 + sig, err
    assert err == "gwlab: reading standard input interrupted: nothing written\n" and out == ""


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler of its own for ``sig`` (Linux's ``SigCgt`` mask)."""
    caught = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (sig - 1) & 1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", [
    ["serve", "--port", "0", "--metrics-port", "0"],
    ["run", "--port", "0", "--metrics-port", "0", "--duration", "5"],
    ["simulate", "--duration", "1"],
])
def test_a_signal_while_the_command_loads_ends_it_with_one_line(command, sig):
    """Ctrl-C or SIGTERM as soon as the entry point handles them, while the command line and
    what it needs load (a tenth of a second and more): one line and the signal's status, no
    traceback (SIGINT's default) and no silent death (SIGTERM's)."""
    with subprocess.Popen([sys.executable, "-m", "gwlab", *command], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        deadline = time.monotonic() + 60
        while not _catches(process.pid, signal.SIGTERM):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + sig, err
    assert err == "gwlab: interrupted as it started: nothing written\n" and out == ""
