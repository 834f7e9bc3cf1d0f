"""The benchmarks in smoke mode: every measurement runs once at a tiny size through the
command line, and the JSON it writes is checked for its schema and for what must hold
whatever the timing (every answer a 200, the bodies compared are the same size). Timing
numbers are never asserted: they depend on the machine."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import urllib.request
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks import bare, forwarding, replicas, simulator, streaming, sweep, throughput, versus
from benchmarks.common import LOAD_CORE, ROOT, ROW_FIELDS, SERVER_CORE, Server, WrkResult, WrkRun, can_pin, pin, post
from benchmarks.gateway_server import forwarding_scenario, scenario
from benchmarks.serving import has_uvloop
from gwlab import simulate
from gwlab.clients import BODY
from lite import check
from tests.conftest import require_tool

LOOPS = ["asyncio", "uvloop"] if has_uvloop() else ["asyncio"]
EXPECTED_ROWS = {
    *(f"throughput_{kind}_{loop}" for loop in LOOPS
      for kind in ("bare", "bare_low_level", "gateway", "ratio", "ratio_low_level", "ratio_same_core")),
    "overhead_own_time_p99", "overhead_client_p50_vs_bare", "overhead_client_p99_vs_bare",
    "limiter_admitted_vs_expected", "lab_seed_closed_rps", "lab_open_loop_offered_error", "lab_virtual_cpu",
    "sim_requests_per_wall_second", "sim_hour_wall_seconds", "sim_peak_memory", "memory_growth_smoke",
    "instructions_bare", "instructions_bare_low_level", "instructions_gateway", "instructions_ratio",
    "streams_at_20tps_bare", "streams_at_20tps_gateway", "streams_at_20tps_ratio", "streams_cpu_ratio_same_core",
    "sim_llm_mix_requests_per_wall_second", "sim_retries_attempts_per_wall_second",
    "sim_sweep_runs_per_minute_one_process", "sim_sweep_runs_per_minute_processes", "sim_sweep_speedup",
    "replicas_one_throughput", "replicas_many_throughput", "replicas_many_vs_one_ratio",
    "forwarding_throughput_direct", "forwarding_throughput_gateway", "forwarding_throughput_ratio",
    "forwarding_added_latency_p50", "forwarding_added_latency_p99",
    "redis_limiter_throughput_local", "redis_limiter_throughput_redis", "redis_limiter_throughput_ratio",
    "redis_limiter_added_latency_p50", "redis_limiter_added_latency_p99",
    "lite_first_output_seconds", "sim_pyodide_requests_per_wall_second", "sim_pyodide_vs_cpython",
}
SMOKE_TIMEOUT = 400 + check.FIRST_OUTPUT + 4 * check.WIDGETS
"""Seconds the smoke run gets: the measurements, and the browser site's page (its check site is
built by tests/test_lite.py before, or reused)."""

pytestmark = pytest.mark.timeout(SMOKE_TIMEOUT + 60)  # the first test sets the smoke run up
MACHINE_FIELDS = {"cpu": str, "cores": int, "pinned": bool, "python": str, "platform": str,
                  "load_average_1m": float, "date": str}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    require_tool("wrk")
    require_tool("valgrind")
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    data["_stdout"] = done.stdout
    return data


def rows(results: dict) -> dict[str, dict]:
    return {row["name"]: row for row in results["rows"]}


def test_every_measurement_writes_its_rows(results):
    assert results["smoke"] is True
    assert set(rows(results)) == EXPECTED_ROWS
    assert len(results["rows"]) == len(EXPECTED_ROWS)


def test_rows_follow_the_schema(results):
    for row in results["rows"]:
        assert tuple(row) == ROW_FIELDS, row["name"]
        assert isinstance(row["value"], float) and math.isfinite(row["value"]), row["name"]
        assert isinstance(row["unit"], str) and row["unit"], row["name"]
        assert row["target"] is None or isinstance(row["target"], str)
        assert row["met"] is None or isinstance(row["met"], bool)
        if row["met"] is not None:
            assert row["target"] is not None, f"{row['name']}: met without a target"
        for key in ("offered_rate", "achieved_rate", "server_cpu"):
            assert row[key] is None or (isinstance(row[key], float) and row[key] >= 0), (row["name"], key)
        assert row["connections"] is None or (isinstance(row["connections"], int) and row["connections"] > 0)
        assert row["limited_by_load_generator"] is None or isinstance(row["limited_by_load_generator"], bool)
        assert isinstance(row["detail"], dict)
        assert row["load_generator"], f"{row['name']}: which load generator produced it?"


def test_rows_from_real_traffic_carry_what_makes_them_trustworthy(results):
    for name, row in rows(results).items():
        if name.startswith(("sim_", "instructions_", "lite_")):  # virtual time; counted, not timed; a page's load
            continue
        assert row["achieved_rate"] > 0, name
        assert row["server_cpu"] > 0, name
        assert row["limited_by_load_generator"] is not None, name


def test_the_machine_is_described(results):
    machine = results["machine"]
    assert set(machine) == set(MACHINE_FIELDS)
    for key, kind in MACHINE_FIELDS.items():
        assert isinstance(machine[key], kind), key
    assert isinstance(results["seconds"], float) and isinstance(results["load_average_1m_at_end"], float)
    json.dumps({k: v for k, v in results.items() if k != "_stdout"}, allow_nan=False)


def test_wrk_runs_got_only_200s_and_compared_bodies_of_one_size(results):
    table = rows(results)
    for loop in LOOPS:
        gateway = table[f"throughput_gateway_{loop}"]
        for row in (gateway, table[f"throughput_bare_{loop}"], table[f"throughput_bare_low_level_{loop}"]):
            assert row["detail"]["non_2xx"] == 0 and row["detail"]["socket_errors"] == 0, row["name"]
            assert sum(row["detail"]["rounds"]) > 0
            assert row["detail"]["response_bytes"] == gateway["detail"]["response_bytes"]
        same_core = table[f"throughput_ratio_same_core_{loop}"]["detail"]
        assert same_core["non_2xx"] == 0 and same_core["socket_errors"] == 0
        assert min(same_core["bare_rounds"]) > 0 and min(same_core["gateway_rounds"]) > 0
    assert table["memory_growth_smoke"]["detail"]["non_2xx"] == 0
    assert table["memory_growth_smoke"]["detail"]["requests"] >= 2000


def test_instruction_counts_are_per_request_and_consistent(results):
    table = rows(results)
    counts = {name: table[f"instructions_{name}"]["value"] for name in ("bare", "bare_low_level", "gateway")}
    # Serving a request runs Python through aiohttp's parser and writer: tens of thousands of
    # instructions at least, and far fewer than the interpreter's start-up (about a billion),
    # which the difference of two runs must have cancelled.
    assert all(10_000 < count < 10_000_000 for count in counts.values()), counts
    # The gateway does everything the low-level bare server does, and more.
    assert counts["gateway"] > counts["bare_low_level"], counts
    assert table["instructions_ratio"]["value"] == counts["bare"] / counts["gateway"]


def test_simulated_traffic_is_the_requested_open_loop(results):
    row = rows(results)["sim_requests_per_wall_second"]
    seconds = row["detail"]["simulated_seconds"]
    # Poisson count over the run: mean rate × seconds, standard deviation its square root;
    # the seed is fixed, and 4 sigma leaves room for a change of streams, not of rate.
    assert abs(row["detail"]["requests"] - 1000 * seconds) <= 4 * math.sqrt(1000 * seconds)


@pytest.mark.parametrize("walls, median", [
    ([2.0], 2.0),
    ([3.0, 1.0, 2.0], 2.0),  # the middle one, whatever the order they ran in
    ([1.0, 5.0, 5.0], 5.0),
    ([4.0, 1.0, 3.0, 2.0], 3.0),  # an even count: the upper of the two in the middle
])
def test_a_simulator_row_takes_its_median_run_and_keeps_every_wall_time(walls, median):
    runs = [{"wall": wall, "requests": 100, "run": i} for i, wall in enumerate(walls)]
    out = simulator._median(runs)
    assert out["wall"] == median and out["walls"] == walls
    assert runs[out["run"]]["wall"] == median and "walls" not in runs[out["run"]]  # the run itself, not changed


def test_the_simulator_rows_time_one_run_each_in_smoke_mode(results):
    for name in ("sim_requests_per_wall_second", "sim_llm_mix_requests_per_wall_second",
                 "sim_retries_attempts_per_wall_second"):
        detail = rows(results)[name]["detail"]
        assert len(detail["walls_s"]) == simulator.SMOKE_ROUNDS and detail["wall_s"] in detail["walls_s"], name


def test_llm_mix_is_simulated_whole_and_admitted_whole(results):
    row = rows(results)["sim_llm_mix_requests_per_wall_second"]
    detail = row["detail"]
    expected = simulator.llm_mix().workload.rate * detail["simulated_seconds"]
    assert abs(detail["requests"] - expected) <= 4 * math.sqrt(expected)
    assert detail["rejected"] == 0 and detail["saturated"] == 0  # the limiter admits the whole mix
    assert all(p["requests"] > 0 for p in detail["providers"].values()), detail["providers"]
    assert detail["output_tokens"] > 0 and detail["ttft_p50_s"] > 0  # LLM traffic: tokens and streams


def test_the_retries_row_counts_the_attempts_the_gateway_made(results):
    detail = rows(results)["sim_retries_attempts_per_wall_second"]["detail"]
    retries = detail["retries"]
    assert retries["retry"] > 0  # the seed's providers fail: the gateway retried
    assert detail["attempts"] == detail["requests"] + retries["retry"]


def test_the_sweep_rows_time_one_grid_both_ways_with_the_same_rows(results):
    table = rows(results)
    speedup = table["sim_sweep_speedup"]
    detail = speedup["detail"]
    assert detail["identical_rows"] is True  # processes or not, the same rows
    assert detail["runs"] == detail["points"] * detail["seeds"] == sweep.SMOKE_RATES * sweep.SEEDS
    one, many = (table[f"sim_sweep_runs_per_minute_{name}"] for name in ("one_process", "processes"))
    assert (one["detail"]["workers"], many["detail"]["workers"]) == (1, detail["cores"])
    [only] = detail["rounds"]  # smoke: one round, whose numbers are the rows'
    assert (one["detail"]["wall_s"], many["detail"]["wall_s"]) == (only["one"]["wall"], only["pool"]["wall"])
    assert speedup["value"] == only["speedup"] == only["one"]["wall"] / only["pool"]["wall"]
    assert speedup["met"] == (speedup["value"] >= sweep.SHARE_OF_CORES * detail["cores"])


def test_every_stream_was_answered_whole_with_the_same_bytes_by_both_servers(results):
    table = rows(results)
    sizes = []
    for name in ("bare", "gateway"):
        row = table[f"streams_at_20tps_{name}"]
        detail = row["detail"]
        assert row["value"] in (0.0, float(streaming.SMOKE_STREAMS)), name
        assert detail["search_complete"] and detail["trials"] >= 1, name
        assert isinstance(detail["disturbed"], bool), name
        assert detail["failed"] == {} and detail["lost_connections"] == 0, name
        assert detail["missing_first_frames"] == 0 and detail["unfinished_at_end"] == 0, name
        assert detail["streams_sent_in_window"] > 0 and detail["streams_completed"] > 0, name
        # No first token before the provider's, no stream shorter than its tokens take.
        assert detail["ttft_ms"]["p50"] >= streaming.TTFT * 1e3, name
        assert detail["stream_seconds"]["p50"] >= detail["stream_seconds"]["configured"], name
        assert len(detail["bytes_per_stream"]) == 1, name
        assert detail["cpu_ms_per_stream"] > 0, name
        sizes.append(detail["bytes_per_stream"])
    assert sizes[0] == sizes[1]
    ratio = table["streams_at_20tps_ratio"]
    bare_n, gateway_n = (table[f"streams_at_20tps_{n}"]["value"] for n in ("bare", "gateway"))
    assert ratio["value"] == (gateway_n / bare_n if bare_n else 0.0)
    assert isinstance(ratio["detail"]["valid"], bool)
    assert ratio["met"] is None or ratio["detail"]["valid"]
    same_core = table["streams_cpu_ratio_same_core"]["detail"]
    assert same_core["lost_connections"] == 0 and same_core["failed"] == {"bare": [{}], "gateway": [{}]}
    assert same_core["bytes_per_stream"] == {"bare": sizes[0], "gateway": sizes[0]}
    assert min(same_core["cpu_ms_per_stream"]["bare"] + same_core["cpu_ms_per_stream"]["gateway"]) > 0


def _verdicts(threshold: int, **bounds) -> tuple[streaming.Search, list[int]]:
    """Run a search against a server that passes every N up to ``threshold``."""
    search, tried = streaming.Search(**bounds), []
    while (n := search.next()) is not None:
        tried.append(n)
        search.record(n, n <= threshold)
    return search, tried


def test_stream_search_doubles_then_bisects_to_its_resolution():
    search, tried = _verdicts(1000)
    assert tried == [128, 256, 512, 1024, 768, 896, 960, 992]
    assert (search.passed, search.failed, search.complete) == (992, 1024, True)
    search, tried = _verdicts(70)  # START fails: halving, then bisection
    assert tried == [128, 64, 96, 80, 72, 68]
    assert (search.passed, search.failed, search.complete) == (68, 72, True)
    search, tried = _verdicts(10)  # nothing passes down to MIN_STREAMS
    assert tried == [128, 64, 32, 16]
    assert (search.passed, search.complete) == (0, True)
    search, tried = _verdicts(10**6)  # everything passes up to MAX_STREAMS
    assert tried == [128, 256, 512, 1024, 2048, 4096, 8192]
    assert (search.passed, search.complete) == (8192, True)
    search, tried = _verdicts(1000, max_trials=5)  # out of trials: stopped short of the resolution
    assert len(tried) == 5 and (search.passed, search.failed, search.complete) == (768, 1024, False)
    search, tried = _verdicts(10, start=16, least=16, most=16)  # smoke: one trial
    assert tried == [16] and search.complete


@pytest.mark.parametrize("order_factor", [1.0, 1.05, 1 / 1.12, 1.3])
def test_the_same_core_ratio_cancels_what_the_starting_order_does_to_a_round(order_factor):
    """Bare costs 100 µs a request and the gateway 125 µs (the true ratio 0.8); the server
    whose wrk starts first pays ``order_factor`` more a request, and each pair of rounds
    runs on a machine of another speed. The row reports 0.8, where the rounds with one
    order alone would report 0.8 times the factor, or over it."""
    rounds = []
    for speed in (1.0, 0.7, 1.3, 0.9, 1.1):
        for bare_first in (True, False):
            bare_us = 100 * speed * (order_factor if bare_first else 1)
            gateway_us = 125 * speed * (1 if bare_first else order_factor)
            rate = 4000.0 / speed  # requests a second each, with half the core each
            rounds.append([WrkResult(int(rate * 2), 2.0, 0, 0, 0.001, 0.002, rate * us / 1e6, 0.3)
                           for us in (bare_us, gateway_us)])
    row = throughput._same_core_row(rounds, "asyncio", 64, 2.0)
    assert row.value == pytest.approx(0.8, rel=1e-12)
    assert row.detail["pair_ratios"] == [0.8] * 5 and row.detail["rounds"] == 10
    assert row.detail["bare_first_ratios"] == [round(0.8 * order_factor, 3)] * 5
    assert row.detail["gateway_first_ratios"] == [round(0.8 / order_factor, 3)] * 5


class _Checkout:
    """A stand-in for a server of a checkout whose requests cost ``COSTS[root]`` CPU seconds
    each, pinned to the one core whatever starts first."""
    COSTS = {ROOT: 100e-6, Path("/other"): 110e-6}

    started: list[Path] = []
    closed: list[Path] = []

    def __init__(self, module: str, *args: str, root: Path) -> None:
        if root not in self.COSTS:
            raise RuntimeError(f"{module} did not start")
        self.root, self.url, self.pid = root, "http://127.0.0.1:1", 0
        self.started.append(root)

    def __enter__(self) -> _Checkout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed.append(self.root)


def _loaded_at_once(servers, seconds, connections, reverse):
    """Rounds as :func:`throughput.at_once` gives them: the server whose load starts first
    costs 3 % less a request (as uvloop's do)."""
    first = servers[-1] if reverse else servers[0]
    rate = 3000.0
    return [WrkResult(int(rate * seconds), seconds, 0, 0, 0.001, 0.002,
                      rate * _Checkout.COSTS[s.root] * (0.97 if s is first else 1), 0.3) for s in servers]


def test_versus_gives_the_other_checkouts_cost_over_this_ones_whichever_starts_first(monkeypatch, capsys):
    monkeypatch.setattr(versus, "Server", _Checkout)
    monkeypatch.setattr(_Checkout, "started", [])
    monkeypatch.setattr(_Checkout, "closed", [])
    monkeypatch.setattr(versus, "at_once", _loaded_at_once)
    monkeypatch.setattr(versus.common, "wrk", lambda *args: None)
    ratios = versus.compare(Path("/other"), "asyncio", 4, 2, 1.0)
    assert ratios == [pytest.approx(1.1, rel=1e-12)] * 4
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("first: ")[1].split(")")[0] for line in printed] == ["/other", str(ROOT)] * 2
    assert _Checkout.closed == [ROOT, Path("/other"), Path("/other"), ROOT] * 2  # each stopped once


@pytest.mark.parametrize("fails", ["start", "warm"])
def test_versus_stops_every_server_it_started_whatever_fails_after(fails, monkeypatch):
    """The other checkout's server starts first in the first pair; this one's (here a
    checkout that cannot start, or whose warm-up load fails) second."""
    monkeypatch.setattr(versus, "Server", _Checkout)
    monkeypatch.setattr(_Checkout, "closed", [])
    if fails == "start":
        monkeypatch.setattr(versus, "ROOT", Path("/broken"))
    else:
        def wrk(url, body, seconds, connections, pid):
            if len(_Checkout.started) == 2:
                raise RuntimeError("wrk failed (exit code 1)")
        monkeypatch.setattr(versus.common, "wrk", wrk)
    monkeypatch.setattr(_Checkout, "started", [])
    with pytest.raises(RuntimeError):
        versus.compare(ROOT, "asyncio", 2, 2, 1.0)
    assert sorted(_Checkout.closed) == sorted(_Checkout.started)
    assert len(_Checkout.started) == (1 if fails == "start" else 2)


@pytest.mark.parametrize("argv, message", [
    (["/nonexistent"], "OTHER = /nonexistent: not a checkout of gwlab"),
    ([str(ROOT), "--pairs", "0"], "--pairs = 0: must be an even number, at least 2"),
    ([str(ROOT), "--pairs", "3"], "--pairs = 3: must be an even number, at least 2"),
    ([str(ROOT), "--rounds", "3"], "--rounds = 3: must be an even number, at least 2"),
    ([str(ROOT), "--rounds", "0"], "--rounds = 0: must be an even number, at least 2"),
    ([str(ROOT), "--seconds", "0.5"], "--seconds = 0.5: must be at least 1"),
    ([str(ROOT), "--seconds", "nan"], "--seconds = nan: must be at least 1"),
])
def test_versus_refuses_bad_input_naming_it(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        versus.main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_versus_compares_two_real_gateways_on_the_machine():
    require_tool("wrk")
    done = subprocess.run([sys.executable, "-m", "benchmarks.versus", str(ROOT), "--pairs", "2", "--rounds", "2",
                           "--seconds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines[:2]] == ["pair 1 of 2", "pair 2 of 2"]
    pairs = [float(line.rsplit(": ", 1)[1]) for line in lines[:2]]
    median = float(lines[2].rsplit(": ", 1)[1])
    assert median == pytest.approx(math.sqrt(pairs[0] * pairs[1]), abs=0.002)  # each printed to 3 places
    # The same code against itself: one process pair of 1 s rounds wanders by a few percent.
    assert 0.5 < median < 2


def test_a_wrk_run_that_cannot_start_leaves_no_script_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no wrk on it
    with pytest.raises(FileNotFoundError):
        WrkRun("http://127.0.0.1:1/", BODY, 1, 1, os.getpid())
    assert list(tmp_path.iterdir()) == []


def _out(p99: float, others: float = 0.0) -> dict:
    return {"ttft_p99_with_missing": p99, "failed": {}, "lost_connections": 0, "sent": 10,
            "others_on_server_core": others}


def test_stream_searches_take_turns_and_repeat_a_disturbed_failure_once():
    searches = {"bare": streaming.Search(), "gateway": streaming.Search()}
    limits = {"bare": 1000, "gateway": 700}
    order = []

    def trial(name: str, n: int) -> streaming.Trial:
        order.append((name, n))
        ok = n <= limits[name]
        disturbed = name == "gateway" and n == 1024  # a busy moment: fails, then is tried again
        return streaming.Trial(n, _out(streaming.TTFT + (0.001 if ok else 0.05), others=0.5 if disturbed else 0.0))

    trials = streaming._search(searches, trial, deadline=math.inf)
    assert order[:4] == [("bare", 128), ("gateway", 128), ("bare", 256), ("gateway", 256)]
    assert order.count(("gateway", 1024)) == 2 and order.count(("bare", 1024)) == 1
    assert searches["bare"].passed == 992 and searches["gateway"].passed == 672
    assert len(trials["gateway"]) == searches["gateway"].trials + 1
    assert streaming._search({"bare": streaming.Search()}, trial, deadline=0.0) == {"bare": []}


def test_a_stream_trial_fails_on_an_error_a_lost_connection_or_a_missing_first_token():
    assert streaming.Trial(8, _out(streaming.TTFT + 0.009)).ok
    assert not streaming.Trial(8, _out(streaming.TTFT + 0.010)).ok
    assert not streaming.Trial(8, _out(None)).ok  # a first frame still missing after the window
    assert not streaming.Trial(8, {**_out(streaming.TTFT), "failed": {"HTTP/1.1 502": 1}}).ok
    assert not streaming.Trial(8, {**_out(streaming.TTFT), "lost_connections": 1}).ok


def test_the_table_lists_every_row(results):
    out = results["_stdout"]
    for name in EXPECTED_ROWS:
        assert name in out
    assert "Python " in out.splitlines()[0]


def test_bare_body_has_the_size_asked_and_is_json():
    for size in (12, 353, 1000):
        body = bare.body_of_size(size)
        assert len(body) == size
        json.loads(body)
    with pytest.raises(ValueError, match="--body-size = 11"):
        bare.body_of_size(11)


def test_benchmark_scenario_keeps_every_policy_and_zeroes_the_providers():
    s = scenario(5000.0, 200.0, zero_latency=True)
    assert (s.limiter.rate, s.limiter.burst) == (5000.0, 200.0)
    assert s.breaker.enabled
    assert [(p.name, p.weight, p.latency, p.error_rate) for p in s.providers] == [
        ("p1", 70.0, 0.0, 0.0), ("p2", 20.0, 0.0, 0.0), ("p3", 10.0, 0.0, 0.0)]


def test_probed_gateway_times_every_chat_request_and_counts_it():
    with Server("benchmarks.gateway_server", "--zero-latency", "--probe", "--rate", "1", "--burst", "3") as gw:
        for _ in range(3):
            json.loads(post(gw.url + bare.PATH, BODY))
        stats = gw.get("/bench/stats")
    assert stats["own_time"]["count"] == 3
    assert 0 < stats["own_time"]["p50"] < stats["own_time"]["max"] + 1e-9
    assert stats["codes"]["200"] == 3
    assert stats["first"] <= stats["last"]


def test_servers_report_their_port_and_stop_on_terminate():
    server = Server("benchmarks.bare", "--body-size", "100")
    try:
        assert len(post(server.url + bare.PATH, BODY)) == 100
    finally:
        server.close()
    assert server.process.returncode == 0
    assert Path(f"/proc/{server.pid}").exists() is False


def _stream(url: str) -> tuple[dict[str, str], bytes]:
    """POST a streamed chat request; the answer's headers (but its date) and its body with each
    stream's id and ``created`` blanked."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}).encode()
    request = urllib.request.Request(url + bare.PATH, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower() != "date"}
        data = response.read()
    return headers, re.sub(rb'"chatcmpl-[0-9a-f]{16}", "object": "chat.completion.chunk", "created": \d+',
                           b"ID", data)


def test_bare_sse_server_sends_the_gateways_stream_byte_for_byte():
    # 1000 tokens/s: the frames group 20 tokens each (20 ms of tokens), as the gateway groups them.
    timing = ["--ttft", "0.01", "--decode-rate", "1000", "--output-tokens", "45"]
    with Server("benchmarks.gateway_server", *timing, wait=False) as gateway, \
            Server("benchmarks.bare_sse", *timing, wait=False) as sse:
        gateway.wait()
        sse.wait()
        gateway_headers, gateway_body = _stream(gateway.url)
        bare_headers, bare_body = _stream(sse.url)
    assert bare_headers == gateway_headers
    assert gateway_headers["content-type"] == "text/event-stream"
    assert bare_body == gateway_body
    frames = gateway_body.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    assert sum(b'"delta": {"content": ' in frame for frame in frames) == 3  # 20 + 20 + 5 tokens
    assert gateway_body.count(b"ID") == len(frames) - 2


def test_the_replicas_rows_compare_one_gateway_with_one_per_core(results):
    table = rows(results)
    one, many = table["replicas_one_throughput"], table["replicas_many_throughput"]
    assert [one["detail"]["replicas"], many["detail"]["replicas"]] == replicas.counts()
    for row in (one, many):
        assert row["value"] > 0 and len(row["detail"]["rounds"]) == replicas.SMOKE_ROUNDS
        assert row["detail"]["non_2xx"] == row["detail"]["socket_errors"] == 0, row["name"]
    ratio = table["replicas_many_vs_one_ratio"]
    assert ratio["value"] == pytest.approx(many["value"] / one["value"], rel=1e-12)


@pytest.mark.parametrize("prefix, names", [("forwarding", ("direct", "gateway")), ("redis_limiter", ("local", "redis"))])
def test_the_pairs_compare_a_reference_with_what_adds_to_it(results, prefix, names):
    table = rows(results)
    reference, other = (table[f"{prefix}_throughput_{name}"] for name in names)
    for row in (reference, other):
        assert row["value"] > 0 and row["detail"]["non_2xx"] == row["detail"]["socket_errors"] == 0, row["name"]
    assert table[f"{prefix}_throughput_ratio"]["value"] == pytest.approx(other["value"] / reference["value"], rel=1e-12)
    for q in ("p50", "p99"):
        row = table[f"{prefix}_added_latency_{q}"]
        assert row["value"] == pytest.approx(row["detail"][names[1]][f"{q}_ms"] - row["detail"][names[0]][f"{q}_ms"])
    assert table["forwarding_added_latency_p99"]["met"] == (table["forwarding_added_latency_p99"]["value"] < 1.0)
    assert table["forwarding_added_latency_p99"]["detail"]["note"] == forwarding.LATENCY_PLACEMENT


def test_a_process_can_be_moved_to_another_core():
    if not can_pin():
        pytest.skip("needs the server core and the load core")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as process:
        try:
            pin(LOAD_CORE, process.pid)
            assert os.sched_getaffinity(process.pid) == {LOAD_CORE}
            pin(SERVER_CORE, process.pid)
            assert os.sched_getaffinity(process.pid) == {SERVER_CORE}
        finally:
            process.kill()


def test_the_bare_upstream_answers_a_completion_the_gateway_can_forward():
    body = json.loads(bare.completion_body())
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 9
    assert "kind = \"openai\"" in forwarding.scenario("http://127.0.0.1:1")


def test_the_bare_proxy_and_the_forwarding_gateway_answer_the_upstreams_body():
    with Server("benchmarks.bare", "--completion") as upstream, \
            Server("benchmarks.bare", "--forward", upstream.url) as proxy, \
            Server("benchmarks.gateway_server", "--upstream", upstream.url) as gateway:
        direct = post(upstream.url + bare.PATH, BODY)
        assert post(proxy.url + bare.PATH, BODY) == direct == post(gateway.url + bare.PATH, BODY)
    assert direct == bare.completion_body()


def test_the_forwarding_scenario_has_one_real_upstream_and_the_bucket_asked():
    s = forwarding_scenario(5000.0, 200.0, "http://127.0.0.1:1")
    assert (s.limiter.rate, s.limiter.burst) == (5000.0, 200.0)
    assert [(p.name, p.kind, p.base_url) for p in s.providers] == [("upstream", "openai", "http://127.0.0.1:1/v1")]


def test_the_browser_site_rows_ran_the_check_notebook_offline(results):
    table = rows(results)
    first = table["lite_first_output_seconds"]
    assert first["detail"]["first_output"] == f"admitted {simulate(None, 60, seed=1).summary()['admitted']}"
    assert first["detail"]["requests_outside_loopback"] == 0
    speed = table["sim_pyodide_requests_per_wall_second"]["detail"]
    assert speed["requests"] > 0.9 * check.SPEED_RATE * check.SPEED_DURATION
    ratio = table["sim_pyodide_vs_cpython"]
    assert ratio["value"] == pytest.approx(ratio["detail"]["pyodide_requests_per_wall_second"]
                                           / ratio["detail"]["cpython_requests_per_wall_second"])
