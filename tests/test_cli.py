"""The command line: flags and scenario building, the live view, and `gwlab run` / `gwlab
serve` as real processes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from gwlab import config
from gwlab.cli import EXIT_BOUND, build_parser, main, scenario_from_args
from gwlab.config import ConfigError
from gwlab.live import LiveView, status_lines, summary_lines
from gwlab.breaker import State
from gwlab.router import ProviderState, Snapshot
from gwlab.stats import RELATIVE_ERROR, STREAM_ERROR, Tally
from gwlab.summary import summarise
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import alive
from tests.test_config import BAD_HOSTS

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

URL_LINE = re.compile(r"^(gateway|metrics)  (http://\S+)$")


# -- scenario flags ---------------------------------------------------------------------


def _args(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_no_flags_give_the_seed_scenario():
    args = _args()
    assert scenario_from_args(args) == config.Scenario()
    assert args.seed == config.SEED


def test_clients_and_rate_set_the_workload_mode():
    closed = scenario_from_args(_args("--clients", "7")).workload
    assert (closed.mode, closed.clients, closed.rate) == ("closed", 7, config.OPEN_RATE)
    opened = scenario_from_args(_args("--rate", "2500")).workload
    assert (opened.mode, opened.clients, opened.rate) == ("open", config.CLIENTS, 2500.0)


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[workload]\nmode = "open"\nrate = 50.0\n[limiter]\nburst = 10.0\n')
    from_file = scenario_from_args(_args("--config", str(path)))
    assert (from_file.workload.mode, from_file.workload.rate, from_file.limiter.burst) == ("open", 50.0, 10.0)
    overridden = scenario_from_args(_args("--config", str(path), "--clients", "3"))
    assert (overridden.workload.mode, overridden.workload.clients, overridden.limiter.burst) == ("closed", 3, 10.0)


def test_the_stream_flags_set_the_workload_over_the_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[workload]\nstream_share = 0.25\nmax_tokens = 100\n")
    from_file = scenario_from_args(_args("--config", str(path))).workload
    assert (from_file.stream_share, from_file.max_tokens) == (0.25, 100)
    flags = scenario_from_args(_args("--config", str(path), "--stream-share", "1", "--max-tokens", "0")).workload
    assert (flags.stream_share, flags.max_tokens) == (1.0, 0)
    simulated = build_parser().parse_args(["simulate", "--duration", "1", "--stream-share", "0.5", "--max-tokens", "7"])
    assert (scenario_from_args(simulated).workload.stream_share, scenario_from_args(simulated).workload.max_tokens) == (
        0.5, 7)


def test_the_retry_flags_set_how_the_clients_retry_and_time_out_over_the_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[workload]\nretry_policy = "fixed"\nretry_delay = 0.05\n')
    flags = scenario_from_args(_args("--config", str(path), "--retry-policy", "adaptive", "--client-timeout", "1.5"))
    assert (flags.workload.retry_policy, flags.workload.timeout, flags.workload.retry_delay) == ("adaptive", 1.5, 0.05)
    simulated = build_parser().parse_args(["simulate", "--duration", "1", "--retry-policy", "openai_sdk"])
    assert scenario_from_args(simulated).workload.retry_policy == "openai_sdk"


def test_the_limiter_flags_set_where_a_gateway_keeps_its_limits_over_the_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[limiter]\nbackend = "redis"\nredis_prefix = "lab"\n')
    from_file = scenario_from_args(_args("--config", str(path))).limiter
    assert (from_file.backend, from_file.redis_url, from_file.redis_prefix) == ("redis", config.REDIS_URL, "lab")
    flags = scenario_from_args(_args("--config", str(path), "--limiter-backend", "local",
                                     "--redis-url", "redis://10.0.0.5:6380/2")).limiter
    assert (flags.backend, flags.redis_url, flags.redis_prefix) == ("local", "redis://10.0.0.5:6380/2", "lab")
    served = build_parser().parse_args(["serve", "--limiter-backend", "redis"])
    assert scenario_from_args(served).limiter.backend == "redis"


def test_a_bad_flag_value_reads_like_a_config_error_naming_the_flag():
    with pytest.raises(ConfigError) as error:
        scenario_from_args(_args("--rate", "-5"))
    assert str(error.value) == "--rate: workload.rate = -5.0: expected a number >= 0.001 and <= 1e+06"


@pytest.fixture
def held_port():
    """A port this test holds, so a command that binds before validating fails on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


BAD_FILES = {
    "not_toml": ("this is = = not toml\n", ["not valid TOML"]),
    "negative_rate": ('[workload]\nmode = "open"\nrate = -3\n', ["workload.rate = -3", "a number >= 0.001"]),
    "integer_beyond_floats": ("[limiter]\nrate = 1" + "0" * 400 + "\n",
                              ["limiter.rate = 1E+400: expected a number >= 0.001 and <= 1e+06"]),
    "integer_of_5000_digits": ("[limiter]\nrate = 1" + "0" * 5000 + "\n", ["not valid TOML", "5001 digits"]),
    "nested_1000_deep": ("[limiter]\nrate = " + "[" * 1000 + "]" * 1000 + "\n", ["not valid TOML: nested too deeply"]),
    "zero_clients": ("[workload]\nclients = 0\n", ["workload.clients = 0", "a whole number >= 1"]),
    "typo": ("[limiter]\nbrust = 5\n", ["'limiter.brust'", "did you mean 'burst'?"]),
    "zero_weights": (
        "[providers.a]\nweight = 0\n[providers.b]\nweight = 0\n",
        ["providers.*.weight = [0.0, 0.0]", "at least one weight > 0"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_scenario_file_exits_2_with_one_line_naming_it(case, tmp_path, held_port, capsys):
    text, expected = BAD_FILES[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    status = main(["run", "--config", str(path), "--port", str(held_port)])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"gwlab: error: {path}: ")
    for part in expected:
        assert part in err


BAD_FLAGS = {
    "rate": (["--rate", "-5"], "gwlab: error: --rate: workload.rate = -5.0: expected a number >= 0.001 and <= 1e+06"),
    "clients": (["--clients", "0"], "gwlab: error: --clients: workload.clients = 0: expected a whole number >= 1 and <= 100000"),
    "both": (["--clients", "2", "--rate", "3"],
             "gwlab: error: argument --rate: not allowed with argument --clients (see gwlab run --help)"),
    "not_a_number": (["--rate", "fast"],
                     "gwlab: error: argument --rate: invalid float value: 'fast' (see gwlab run --help)"),
    "duration": (["--duration", "0"], "gwlab: error: --duration = 0.0: expected a number >= 1e-06 and <= 31536000"),
    "metrics_port": (["--metrics-port", "70000"],
                     "gwlab: error: --metrics-port = 70000: expected a port number from 0 to 65535"),
    "missing_file": (["--config", "/nonexistent/s.toml"],
                     "gwlab: error: /nonexistent/s.toml: cannot read: No such file or directory"),
    "json_dir": (["--json", "/nonexistent/out.json"],
                 "gwlab: error: --json: '/nonexistent/out.json': expected a file in an existing directory"),
    "json_is_a_dir": (["--json", "/tmp"], "gwlab: error: --json: '/tmp' is a directory: expected a file"),
    "max_in_flight": (["--rate", "100", "--max-in-flight", "0"],
                      "gwlab: error: --max-in-flight: workload.max_in_flight = 0: expected a whole number >= 1 and <= 100000"),
    "stream_share_above_1": (["--stream-share", "1.5"],
                             "gwlab: error: --stream-share: workload.stream_share = 1.5: expected a number >= 0 and <= 1"),
    "stream_share_negative": (["--stream-share", "-0.1"],
                              "gwlab: error: --stream-share: workload.stream_share = -0.1: expected a number >= 0 and <= 1"),
    "stream_share_nan": (["--stream-share", "nan"],
                         "gwlab: error: --stream-share: workload.stream_share = nan: expected a number >= 0 and <= 1"),
    "stream_share_not_a_number": (["--stream-share", "half"],
                                  "gwlab: error: argument --stream-share: invalid float value: 'half' (see gwlab run --help)"),
    "max_tokens_negative": (["--max-tokens", "-1"],
                            "gwlab: error: --max-tokens: workload.max_tokens = -1: expected a whole number >= 0 "
                            "and <= 1000000"),
    "max_tokens_too_many": (["--max-tokens", "1000001"],
                            "gwlab: error: --max-tokens: workload.max_tokens = 1000001: expected a whole number >= 0 "
                            "and <= 1000000"),
    "max_tokens_not_whole": (["--max-tokens", "2.5"],
                             "gwlab: error: argument --max-tokens: expected a whole number, got '2.5' (see gwlab run --help)"),
    "retry_policy": (["--retry-policy", "sometimes"],
                     "gwlab: error: --retry-policy: workload.retry_policy = 'sometimes': expected one of 'none', "
                     "'openai_sdk', 'fixed', 'exponential_jitter', 'adaptive'"),
    "client_timeout_negative": (["--client-timeout", "-1"],
                                "gwlab: error: --client-timeout: workload.timeout = -1.0: expected a number >= 0 "
                                "and <= 31536000"),
    "admin_token_empty": (["--admin-token", ""],
                          "gwlab: error: --admin-token: expected a token a client can send in 'Authorization: Bearer "
                          "TOKEN': not empty, printable ASCII, no spaces"),
    "admin_token_newline": (["--admin-token", "abc\ndef"],
                            "gwlab: error: --admin-token: expected a token a client can send in 'Authorization: "
                            "Bearer TOKEN': not empty, printable ASCII, no spaces"),
    "limiter_backend": (["--limiter-backend", "memcached"],
                        "gwlab: error: --limiter-backend: limiter.backend = 'memcached': expected one of 'local', "
                        "'redis'"),
    "redis_url": (["--redis-url", "127.0.0.1:6379"],
                  "gwlab: error: --redis-url: limiter.redis_url = '127.0.0.1:6379': expected a redis:// or rediss:// "
                  "URL (or unix:// for a socket)"),
    "redis_url_with_a_password": (["--redis-url", "http://:s3cret@127.0.0.1:6379"],
                                  "gwlab: error: --redis-url: limiter.redis_url = 'http://:***@127.0.0.1:6379': "
                                  "expected a redis:// or rediss:// URL (or unix:// for a socket)"),
    "log_level": (["--log-level", "loud"],
                  "gwlab: error: argument --log-level: invalid choice: 'LOUD' "
                  "(choose from 'DEBUG', 'INFO', 'WARNING', 'ERROR') (see gwlab run --help)"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_a_bad_flag_exits_2_with_one_line_naming_it(case, held_port, capsys):
    argv, expected = BAD_FLAGS[case]
    status = main(["run", *argv, "--port", str(held_port)])
    out, err = capsys.readouterr()
    assert (status, out, err) == (2, "", expected + "\n")


@pytest.mark.parametrize("command", ["run", "serve"])
@pytest.mark.parametrize("host, shown", [(host, shown) for host, shown in BAD_HOSTS if isinstance(host, str)])
def test_a_host_that_is_no_address_exits_2_as_lab_start_refuses_it(command, host, shown, held_port, capsys):
    status = main([command, f"--host={host}", "--port", str(held_port)])
    out, err = capsys.readouterr()
    assert (status, out, err) == (2, "", f"gwlab: error: --host = {shown}: expected "
                                         f"{config.RUN_ARGUMENTS['host']['allowed']}\n")


FORM = "a redis:// or rediss:// URL (or unix:// for a socket)"
BAD_REDIS_URLS = [
    # (url, as the message shows it, what it says is expected): one of each kind redis-py refuses
    ("redis://127.0.0.1:notaport/0", "redis://127.0.0.1:notaport/0",
     f"{FORM} with a port from 1 to 65535, or none for 6379"),
    ("redis://:s3cret@127.0.0.1:99999/0", "redis://:***@127.0.0.1:99999/0",
     f"{FORM} with a port from 1 to 65535, or none for 6379"),
    ("redis://[::1/0", "redis://[::1/0",
     f"{FORM} that urllib.parse can split: an IPv6 host in brackets, no other brackets"),
    ("redis://127.0.0.1:6379/0?timeout=x", "redis://127.0.0.1:6379/0?timeout=x",
     f"{FORM} with no query arguments but db, username, password (db a number from 0 to 2147483646)"),
]
REDIS_COMMANDS = [
    # (command, its flags besides the URL's, whether the URL is given in the file or by --redis-url)
    ("serve", ["--limiter-backend", "redis"], "flag"),
    ("serve", ["--limiter-backend", "redis", "--replicas", "2"], "flag"),
    ("serve", ["--replicas", "2"], "file"),
    ("run", ["--limiter-backend", "redis", "--duration", "1"], "flag"),
    ("run", ["--duration", "1"], "file"),
    ("simulate", ["--duration", "1"], "file"),
    ("simulate", ["--duration", "1", "--replicas", "2"], "file"),
]


@pytest.mark.parametrize("url, shown, expected", BAD_REDIS_URLS, ids=[u for u, _, _ in BAD_REDIS_URLS])
@pytest.mark.parametrize("command, flags, given", REDIS_COMMANDS,
                         ids=[" ".join([c, *f, g]) for c, f, g in REDIS_COMMANDS])
def test_a_redis_url_redis_py_refuses_exits_2_with_one_line_before_anything_starts(url, shown, expected, command,
                                                                                  flags, given, tmp_path, held_port,
                                                                                  capsys):
    path = tmp_path / "s.toml"
    path.write_text(f'[limiter]\nbackend = "redis"\nredis_url = "{url}"\n')
    where = ["--redis-url", url] if given == "flag" else ["--config", str(path)]
    ports = [] if command == "simulate" else ["--port", str(held_port)]
    status = main([command, *flags, *where, *ports])
    source = "--redis-url" if given == "flag" else str(path)
    assert (status, capsys.readouterr()) == (
        2, ("", f"gwlab: error: {source}: limiter.redis_url = {shown!r}: expected {expected}\n"))


@pytest.mark.parametrize("command", ["simulate", "run", "serve"])
def test_a_seed_out_of_range_is_shown_as_given(command, held_port, capsys):
    rest = ["--duration", "1"] if command == "simulate" else ["--port", str(held_port)]
    assert main([command, "--seed", "18446744073709551616", *rest]) == 2
    assert capsys.readouterr() == (
        "", "gwlab: error: --seed = 18446744073709551616: expected a whole number >= 0 and <= 18446744073709551615\n")


@pytest.mark.parametrize("command", ["simulate", "run"])
@pytest.mark.parametrize("text,where", [
    ("[limiter]\ntpm = 10\n[workload]\nmax_tokens = 100\n", ""),
    ("[workload]\nmax_tokens = 100\n[[events]]\nat = 5.0\nlimiter = {tpm = 10}\n", ": event at 5 s"),
], ids=["at-start", "after-an-event"])
def test_a_check_of_several_fields_names_the_file(command, text, where, held_port, tmp_path, capsys):
    # A live run's clients would get nothing but 400s, as a simulated run's: refused before anything starts.
    path = tmp_path / "f.toml"
    path.write_text(text)
    rest = ["--duration", "1"] if command == "simulate" else ["--duration", "1", "--port", str(held_port)]
    assert main([command, "--config", str(path), *rest]) == 2
    assert capsys.readouterr() == ("", (
        f"gwlab: error: {path}{where}: limiter.tpm = 10: each request reserves 102 tokens (workload.prompt_tokens = 2 "
        "and workload.max_tokens = 100), more than the limit can ever admit; expected a limiter.tpm >= 102, or a "
        "smaller workload.max_tokens\n"))


# -- the live view ----------------------------------------------------------------------


def _tally(*records) -> Tally:
    tally = Tally()
    for status, provider, latency, times in records:
        for _ in range(times):
            tally.record(status, provider, latency)
    return tally


SNAPSHOT = Snapshot(12.0, 12.4, 1000.0, 1000.0, 0, {"p1": ProviderState(State.HEALTHY, 0.0, 70.0, 0, 0),
                                                     "p2": ProviderState(State.OPEN, 3.25, 20.0, 0, 1)})


def test_status_lines_show_rates_shares_breakers_tokens_and_quantiles():
    interval = _tally((200, "p1", 0.1, 6), (502, "p2", 0.5, 2), (429, "none", None, 4), (499, "none", None, 2))
    total = _tally((200, "p1", 0.1, 30), (502, "p2", 0.5, 10), (429, "none", None, 4))
    lines = status_lines(interval, 2.0, 16, total, [SNAPSHOT], 12.0)
    q = {p: f"{interval.latency.quantile(p / 100):.3f}s" for p in (50, 95, 99)}
    assert lines == [
        "  12.0s  offered 8/s  200 3/s  429 2/s  502 1/s  504 0/s  499 1/s",
        "        p1 75.0% healthy   p2 25.0% open 3.2s",
        f"        tokens 12/1000  latency p50 {q[50]}  p95 {q[95]}  p99 {q[99]}",
    ]


def test_status_lines_name_transport_errors_and_say_when_the_clients_cannot_keep_up():
    interval = _tally((200, "p1", 0.1, 100), (0, "none", None, 22))
    lines = status_lines(interval, 2.0, 122, interval, [SNAPSHOT], 4.0, saturated=2878)
    assert lines[0] == ("   4.0s  offered 61/s  200 50/s  429 0/s  502 0/s  504 0/s  transport_error 11/s"
                        "  (can't keep up: 61 of 1500 per second sent)")


def test_summary_lines_say_how_many_arrivals_were_not_sent():
    tally = _tally((200, "p1", 0.25, 122))
    scenario = config.merge(config.Scenario(), {"workload": {"mode": "open", "rate": 1500, "max_in_flight": 40}})
    end = Snapshot(2.0, 0.0, 1.0, 1.0, 0, {"p1": ProviderState(State.HEALTHY, 0.0, 1.0, 0, 0)})
    result = summarise(tally, mode="live", seed=1, scenario=scenario, duration=2.0, sent=122, saturated=2878,
                       workloads=[(0.0, scenario.workload)], end=end, trips={}, fallbacks={}, events_refused=0, retries={})
    lines = summary_lines(result)
    assert lines[:3] == [
        "duration 2.0s  offered 122 (61/s, requested 1500/s)  admitted 122",
        "codes 200 122",
        "can't keep up: 61 of 1500 per second sent  (2878 arrivals not sent: the generator was saturated at 40 "
        "requests in flight)",
    ]


def _streams(tally: Tally, ttft: float, latency: float, tokens: int, times: int) -> Tally:
    for _ in range(times):
        tally.record(200, "p1", latency)
        tally.output_tokens += tokens
        tally.record_stream(latency, ttft, tokens)
    return tally


def test_status_lines_show_ttft_tokens_per_second_and_stream_errors_once_streams_are_in_play():
    interval = _streams(_tally((STREAM_ERROR, "p1", 0.3, 2), (429, "none", None, 2)), 0.2, 0.5, 31, 6)
    interval.ttft.add(0.25)  # the failed streams had their first token
    interval.ttft.add(0.25)
    lines = status_lines(interval, 2.0, 10, interval, [SNAPSHOT], 12.0)
    ttft = {p: f"{interval.ttft.quantile(p / 100):.3f}s" for p in (50, 99)}
    assert lines[0] == "  12.0s  offered 5/s  200 3/s  429 1/s  502 0/s  504 0/s  stream_error 1/s"
    assert lines[3] == f"        ttft p50 {ttft[50]}  p99 {ttft[99]}  output tokens 93/s"
    # Streams earlier in the run, none in the last seconds: the line stays, with nothing in it.
    quiet = status_lines(Tally(), 1.0, 0, interval, [SNAPSHOT], 13.0)
    assert quiet[0].endswith("504 0/s  stream_error 0/s")
    assert quiet[3] == "        ttft p50 -  p99 -  output tokens 0/s"
    # Without LLM traffic the status is what it always was: three lines.
    assert len(status_lines(_tally((200, "p1", 0.1, 6)), 2.0, 6, _tally((200, "p1", 0.1, 6)), [SNAPSHOT], 1.0)) == 3


def test_summary_lines_show_ttft_time_per_token_and_output_tokens_of_streams():
    tally = _streams(_tally((STREAM_ERROR, "p1", 0.3, 1)), 0.2, 0.5, 31, 3)
    scenario = config.merge(config.Scenario(), {"workload": {"stream_share": 1.0}})
    end = Snapshot(2.0, 0.0, 1.0, 1.0, 0, {"p1": ProviderState(State.HEALTHY, 0.0, 1.0, 0, 0)})
    result = summarise(tally, mode="live", seed=1, scenario=scenario, duration=2.0, sent=4, saturated=0,
                       workloads=[(0.0, scenario.workload)], end=end, trips={}, fallbacks={}, events_refused=0, retries={})
    ttft, tpot = tally.ttft, tally.tpot
    lines = summary_lines(result)
    assert lines[1] == "codes 200 3  stream_error 1"
    assert lines[4] == (f"ttft p50 {ttft.quantile(0.5):.3f}s  p99 {ttft.quantile(0.99):.3f}s  "
                        f"time per output token p50 {tpot.quantile(0.5):.3f}s  p99 {tpot.quantile(0.99):.3f}s  "
                        "output tokens 93 (46/s)")
    assert lines[5] == "p1  share 100.0%  200 3  502 0  504 0  stream_error 1  trips 0  fallbacks 0  state healthy"


def _users(tally: Tally, **outcomes: int) -> Tally:
    """``tally`` with user requests ended by outcome; each ``ok`` one took one attempt, the
    others three."""
    for outcome, n in outcomes.items():
        tally.users[outcome] += n
        tally.users["attempts"] += n * (1 if outcome == "ok" else 3)
    return tally


def test_status_and_summary_lines_show_user_requests_of_clients_that_retry():
    interval = _users(_tally((200, "p1", 0.1, 6), (502, "p1", 0.1, 6)), ok=6, failed=2)
    lines = status_lines(interval, 2.0, 12, interval, [SNAPSHOT], 12.0)
    assert lines[3] == "        user requests 4/s  goodput 75.0%  attempts per request 1.50"
    quiet = status_lines(Tally(), 1.0, 0, interval, [SNAPSHOT], 13.0)
    assert quiet[3] == "        user requests 0/s  goodput -  attempts per request -"
    scenario = config.merge(config.Scenario(), {"workload": {"retry_policy": "fixed"}})
    end = Snapshot(2.0, 0.0, 1.0, 1.0, 0, {"p1": ProviderState(State.HEALTHY, 0.0, 1.0, 0, 0)})
    result = summarise(interval, mode="live", seed=1, scenario=scenario, duration=2.0, sent=12, saturated=0,
                       workloads=[(0.0, scenario.workload)], end=end, trips={}, fallbacks={}, events_refused=0, retries={})
    assert summary_lines(result)[4] == ("user requests 8  goodput 75.0%  attempts per request 1.50  ok 6  failed 2  "
                                        "timed_out 0  throttled 0  cut_off 0")
    # Without user requests the lines are what they were.
    assert len(status_lines(_tally((200, "p1", 0.1, 6)), 2.0, 6, _tally((200, "p1", 0.1, 6)), [SNAPSHOT], 1.0)) == 3


def test_status_lines_before_any_answer():
    lines = status_lines(Tally(), 1.0, 0, Tally(), [SNAPSHOT], 1.0)
    assert lines[1] == "        p1 - healthy   p2 - open 3.2s"
    assert lines[2].endswith("latency p50 -  p95 -  p99 -")


def test_live_view_redraws_in_place_on_a_terminal_and_appends_plain_lines_otherwise():
    tty = io.StringIO()
    view = LiveView(tty, redraw=True)
    view.show(["a", "b"])
    view.show(["c", "d"])
    view.print(["done"])
    view.show(["e"])
    assert tty.getvalue() == "a\nb\n\x1b[2F\x1b[Jc\nd\ndone\ne\n"
    plain = io.StringIO()
    view = LiveView(plain, redraw=False)
    view.show(["  a  ", "  b"])
    view.show(["c"])
    assert plain.getvalue() == "a  |  b\nc\n"


def test_summary_lines():
    tally = _tally((200, "p1", 0.25, 3), (504, "p2", 1.0, 1))
    scenario = config.merge(config.Scenario(), {"workload": {"mode": "open", "rate": 2.5}})
    end = Snapshot(2.0, 0.0, 1.0, 1.0, 0, {"p1": ProviderState(State.HEALTHY, 0.0, 1.0, 0, 0),
                                          "p2": ProviderState(State.OPEN, 1.0, 1.0, 0, 1)})
    result = summarise(tally, mode="live", seed=1, scenario=scenario, duration=2.0, sent=4, saturated=0,
                       workloads=[(0.0, scenario.workload)], end=end, trips={"p2": 1}, fallbacks={"p1": 0},
                       events_refused=0, retries={})
    h = tally.latency
    assert summary_lines(result) == [
        "duration 2.0s  offered 4 (2/s, requested 2.5/s)  admitted 4",
        "codes 200 3  504 1",
        "availability 75.0%  goodput 75.0%",
        f"latency p50 {h.quantile(0.5):.3f}s  p95 {h.quantile(0.95):.3f}s  p99 {h.quantile(0.99):.3f}s"
        f"  mean {h.mean:.3f}s  max 1.000s",
        "p1  share 75.0%  200 3  502 0  504 0  trips 0  fallbacks 0  state healthy",
        "p2  share 25.0%  200 0  502 0  504 1  trips 1  fallbacks 0  state open",
    ]


# -- real processes ---------------------------------------------------------------------


class Process:
    """``python -m gwlab ARGS`` with its stdout read line by line in the background."""

    def __init__(self, *args: str, cwd: Path):
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "gwlab", *args], cwd=cwd, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 20) -> str:
        line = self.lines.get(timeout=timeout)
        assert line is not None, f"stdout ended; stderr: {self.popen.stderr.read()}"
        self.seen.append(line)
        return line

    def urls(self) -> dict[str, str]:
        return dict(URL_LINE.match(self.line()).groups() for _ in range(2))

    def children(self) -> list[int]:
        """Pids of this process's children (from /proc)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.popen.pid:
                pids.append(int(stat.parent.name))
        return pids

    def finish(self, timeout: float = 30) -> tuple[int, list[str], str]:
        """Wait for the exit; the exit status, every stdout line, stderr."""
        status = self.popen.wait(timeout)
        while (line := self.lines.get(timeout=5)) is not None:
            self.seen.append(line)
        return status, self.seen, self.popen.stderr.read()


def test_a_run_shows_the_password_of_its_redis_url_nowhere(tmp_path):
    """Not in the summary's scenario (``--json``), nor in a scripted event's line: the URL
    shows ``***`` in its place (the buckets are local: nothing connects to it)."""
    secret, shown = "redis://:s3cret@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"
    path = tmp_path / "scenario.toml"
    path.write_text(f'limiter.redis_url = "{secret}"\n[[events]]\nat = 0.5\nlimiter = {{ redis_url = "{secret}", '
                    'rate = 500 }\n')
    out = tmp_path / "run.json"
    process = Process("run", "--config", str(path), "--clients", "5", "--duration", "1",
                      "--port", "0", "--metrics-port", "0", "--log-level", "INFO", "--json", str(out), cwd=tmp_path)
    status, lines, stderr = process.finish()
    assert status == 0, stderr
    assert f"event at 0.5 s: limiter.redis_url = {shown!r}, limiter.rate = 500" in lines
    assert f"event at 0.5 s: limiter.redis_url = {shown!r}, limiter.rate = 500" in stderr  # the log's line
    result = json.loads(out.read_text())
    assert result["scenario"]["limiter"]["redis_url"] == shown
    assert result["scenario"]["events"] == [{"at": 0.5, "limiter": {"redis_url": shown, "rate": 500}}]
    assert "s3cret" not in out.read_text() + "\n".join(lines) + stderr


def test_run_with_a_duration_exits_0_and_writes_the_summary(tmp_path):
    out = tmp_path / "run.json"
    process = Process("run", "--duration", "3", "--port", "0", "--metrics-port", "0", "--json", str(out), cwd=tmp_path)
    status, lines, stderr = process.finish()
    assert (status, stderr) == (0, "")
    assert URL_LINE.match(lines[0]).group(1) == "gateway"
    assert URL_LINE.match(lines[1]).group(1) == "metrics"
    # Not a terminal: plain lines, one per whole second (at 1.25 and 2.25 s; the last
    # part-second is left to the summary), no cursor movement.
    live = [line for line in lines if " offered " in line and "|" in line]
    assert len(live) == 2
    assert not any("\x1b" in line for line in lines)
    result = json.loads(out.read_text())
    assert {"duration", "offered", "admitted", "codes", "rates", "availability", "goodput", "latency",
            "providers", "trips", "fallbacks", "mode", "seed", "scenario", "clients", "requested_rate",
            "achieved_offered_rate", "events_refused"} <= set(result)
    assert result["events_refused"] == 0
    assert (result["mode"], result["seed"], result["clients"], result["requested_rate"]) == ("live", 1, 100, None)
    assert result["scenario"] == config.Scenario().to_dict()
    assert set(result["providers"]) == {"p1", "p2", "p3"}
    for name, provider in result["providers"].items():
        assert provider["requests"] > 0, name
        assert set(provider) == {"requests", "share", "codes", "trips", "fallbacks", "state"}
    assert 2.9 < result["duration"] < 3.5
    assert result["offered"] == sum(result["codes"].values())
    assert result["achieved_offered_rate"] == pytest.approx(result["offered"] / result["duration"])
    assert result["gateway_in_flight_at_end"] == 0
    assert lines[-1].startswith("p3  share ")


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="writes to /dev/full, a device always full")
@pytest.mark.parametrize("args", [
    ("simulate", "--duration", "1"),
    ("run", "--duration", "1", "--clients", "1", "--port", "0", "--metrics-port", "0"),
])
def test_a_summary_that_cannot_be_written_at_the_end_is_one_line_and_exit_2(args, tmp_path):
    status, _, stderr = Process(*args, "--json", "/dev/full", cwd=tmp_path).finish()
    assert (status, stderr) == (2, "gwlab: error: --json: '/dev/full': cannot write: No space left on device\n")


def test_run_with_the_stream_flags_streams_and_shows_ttft_and_output_tokens(tmp_path):
    """Ten clients that always stream, capped at 6 tokens, to a provider whose first token
    comes after 0.05 s: each call lasts 0.1 s."""
    scenario = tmp_path / "llm.toml"
    scenario.write_text("[breaker]\nenabled = false\n"
                        "[providers.p1]\nttft = 0.05\ndecode_rate = 100.0\noutput_tokens = 50.0\n")
    out = tmp_path / "run.json"
    process = Process("run", "--config", str(scenario), "--clients", "10", "--stream-share", "1", "--max-tokens", "6",
                      "--duration", "2", "--port", "0", "--metrics-port", "0", "--json", str(out), cwd=tmp_path)
    status, lines, stderr = process.finish()
    assert (status, stderr) == (0, "")
    live = [line for line in lines if " offered " in line and "|" in line]
    assert live and all("stream_error 0/s" in line and "  |  ttft p50 " in line and " output tokens " in line
                        for line in live)
    result = json.loads(out.read_text())
    assert (result["scenario"]["workload"]["stream_share"], result["scenario"]["workload"]["max_tokens"]) == (1.0, 6)
    answered = result["codes"]["200"]
    assert result["codes"] == {"200": answered} and answered > 20
    assert result["output_tokens"]["total"] == 6 * answered
    assert result["ttft"]["p50"] >= 0.05 * (1 - RELATIVE_ERROR)  # late, never early
    assert [line for line in lines if line.startswith("ttft p50 ")][0].endswith(
        f"output tokens {6 * answered} ({result['output_tokens']['per_second']:.0f}/s)")


def test_run_with_the_retry_flags_times_out_retries_and_counts_user_requests(tmp_path):
    """Five clients that give an attempt up after 0.2 s and retry it twice, 0.05 s later, to
    a provider that takes a second: every user request makes three attempts, each abandoned
    by the gateway as its client leaves (a 499 there)."""
    scenario = tmp_path / "slow.toml"
    scenario.write_text("[breaker]\nenabled = false\n[providers.p1]\nlatency = 1.0\n[workload]\nretry_delay = 0.05\n")
    out = tmp_path / "run.json"
    process = Process("run", "--config", str(scenario), "--clients", "5", "--retry-policy", "fixed",
                      "--client-timeout", "0.2", "--duration", "2", "--port", "0", "--metrics-port", "0",
                      "--json", str(out), cwd=tmp_path)
    status, lines, stderr = process.finish()
    assert (status, stderr) == (0, "")
    live = [line for line in lines if " offered " in line and "|" in line]
    assert live and all("  |  user requests " in line for line in live)
    result = json.loads(out.read_text())
    users = result["user_requests"]
    assert users["outcomes"]["timed_out"] >= 5 and users["outcomes"]["ok"] == 0
    assert users["attempts"] == result["offered"] == result["codes"]["client_timeout"]
    assert 3 * users["outcomes"]["timed_out"] <= users["attempts"] <= 3 * users["offered"]
    assert [line for line in lines if line.startswith("user requests ")][0].startswith(
        f"user requests {users['offered']}  goodput 0.0%  ")


def test_sigterm_mid_traffic_exits_0_with_nothing_in_flight_and_no_workers_left(tmp_path):
    out = tmp_path / "run.json"
    process = Process("run", "--port", "0", "--metrics-port", "0", "--json", str(out), cwd=tmp_path)
    urls = process.urls()
    assert " offered " in process.line()  # the first live status: traffic is flowing
    children = process.children()
    assert children

    async def scrape() -> str:
        async with aiohttp.ClientSession() as session, session.get(urls["metrics"]) as response:
            return await response.text()

    assert re.search(r'^gwlab_requests_total\{code="200",provider="p1"\} [1-9]', asyncio.run(scrape()), re.M)
    process.popen.send_signal(signal.SIGTERM)
    status, lines, stderr = process.finish()
    assert (status, stderr) == (0, "")
    result = json.loads(out.read_text())
    assert result["offered"] > 0
    assert result["gateway_in_flight_at_end"] == 0
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if alive(pid)]


def test_serve_answers_clients_and_exits_0_on_sigint(tmp_path):
    process = Process("serve", "--port", "0", "--metrics-port", "0", cwd=tmp_path)
    urls = process.urls()

    async def use() -> tuple[int, str, dict, str]:
        async with aiohttp.ClientSession() as session:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            async with session.post(urls["gateway"] + "/v1/chat/completions", json=body) as response:
                answer = (response.status, response.headers["x-gwlab-provider"], await response.json())
            async with session.get(urls["metrics"]) as response:
                return (*answer, await response.text())

    status, provider, answer, metrics = asyncio.run(use())
    assert status in (200, 502)
    assert provider in ("p1", "p2", "p3")
    assert f'gwlab_requests_total{{code="{status}",provider="{provider}"}} 1.0' in metrics
    process.popen.send_signal(signal.SIGINT)
    status, lines, stderr = process.finish()
    assert (status, lines[2:], stderr) == (0, [], "")


@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_port_in_use_exits_2_with_one_line_naming_it(command, tmp_path, held_port):
    process = Process(command, "--port", "0", "--metrics-port", str(held_port), cwd=tmp_path)
    status, lines, stderr = process.finish()
    assert (status, lines) == (2, [])
    assert stderr == f"gwlab: error: port {held_port} is already in use on 127.0.0.1\n"


def test_a_bad_flag_exits_2_as_a_process(tmp_path):
    process = Process("run", "--rate", "-5", cwd=tmp_path)
    assert process.finish() == (2, [], "gwlab: error: --rate: workload.rate = -5.0: expected a number >= 0.001 and <= 1e+06\n")


def test_help_on_every_command(capsys):
    for argv in (["--help"], ["run", "--help"], ["serve", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith("usage: gwlab")


# -- every run ends, and leaves nothing behind ------------------------------------------


def _workers(process: Process) -> list[int]:
    """Pids of the load generator's workers among ``process``'s children (not
    multiprocessing's resource tracker)."""
    return [pid for pid in process.children()
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    """The ``pids`` still alive after at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def test_a_stopped_worker_is_killed_and_named_and_the_run_ends_on_time(tmp_path):
    out = tmp_path / "run.json"
    process = Process("run", "--clients", "10", "--duration", "2", "--port", "0", "--metrics-port", "0",
                      "--json", str(out), cwd=tmp_path)
    process.urls()
    assert " offered " in process.line()
    began = time.monotonic() - 1.25  # the first status comes 1.25 s after the start
    [worker] = _workers(process)
    os.kill(worker, signal.SIGSTOP)
    status, lines, stderr = process.finish(timeout=2 + EXIT_BOUND + 5)
    took = time.monotonic() - began
    assert status == 0
    assert 2 + config.CLIENT_GRACE <= took < 2 + EXIT_BOUND
    assert f"(pid {worker}) did not exit in time: killed" in stderr
    assert json.loads(out.read_text())["workers_killed"] == [worker]
    assert not alive(worker)


def test_the_workers_die_with_their_parent_killed_under_overload(tmp_path):
    process = Process("run", "--rate", "20000", "--port", "0", "--metrics-port", "0", cwd=tmp_path)
    process.urls()
    assert " offered " in process.line()
    workers = _workers(process)
    assert len(workers) == 2
    process.popen.kill()
    process.popen.wait(5)
    assert _wait_gone(workers, 5) == []


def test_sigterm_under_overload_exits_0_within_the_bound_with_the_summary(tmp_path):
    out = tmp_path / "run.json"
    process = Process("run", "--rate", "20000", "--port", "0", "--metrics-port", "0", "--json", str(out), cwd=tmp_path)
    process.urls()
    # Far more is asked than two cores can serve: within seconds the clients hold their cap.
    while "can't keep up: " not in process.line():
        pass
    workers = process.children()
    assert len(_workers(process)) == 2
    process.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    status, lines, stderr = process.finish(timeout=EXIT_BOUND + 5)
    assert (status, stderr) == (0, "")
    assert time.monotonic() - signalled < EXIT_BOUND
    result = json.loads(out.read_text())
    assert result["saturated"] > 0
    assert result["achieved_offered_rate"] < result["requested_rate"] == 20000
    assert any(line.startswith("can't keep up: ") for line in lines)
    assert "workers_killed" not in result
    assert _wait_gone(workers, 1) == []


def test_a_second_signal_ends_the_run_at_once(tmp_path):
    # Calls hang for a minute: a first signal waits for the clients' grace, a second does not.
    scenario = tmp_path / "hang.toml"
    scenario.write_text('[gateway]\ntimeout = 60.0\n[providers.p1]\nweight = 1.0\noutage = "hang"\n')
    process = Process("run", "--config", str(scenario), "--port", "0", "--metrics-port", "0", cwd=tmp_path)
    process.urls()
    assert " offered " in process.line()
    workers = process.children()
    process.popen.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    # Two signals sent at once may reach the process as one (a pending signal is not
    # queued twice), so press again, as a person would, until it has gone.
    while process.popen.poll() is None and time.monotonic() - signalled < config.CLIENT_GRACE:
        time.sleep(0.05)
        process.popen.send_signal(signal.SIGINT)
    status, _, stderr = process.finish(timeout=5)
    assert time.monotonic() - signalled < config.CLIENT_GRACE
    assert (status, stderr) == (128 + signal.SIGINT, "gwlab: SIGINT again: exiting at once\n")
    assert _wait_gone(workers, 5) == []


def scraped_codes(urls: list[str]) -> dict[str, int]:
    """The answers of ``gwlab_requests_total`` summed by code over the metrics at ``urls``
    (codes of no answer left out), as a summary's ``codes`` counts them."""
    async def scrape() -> list[str]:
        texts = []
        async with aiohttp.ClientSession() as session:
            for url in urls:
                async with session.get(url) as response:
                    texts.append(await response.text())
        return texts

    counts: dict[str, int] = {}
    for text in asyncio.run(scrape()):
        for code, value in re.findall(r'^gwlab_requests_total\{code="(\d+)",provider="[^"]*"\} (\S+)$', text, re.M):
            counts[code] = counts.get(code, 0) + int(float(value))
    return {code: n for code, n in counts.items() if n}


BOUNDARY_SCENARIO = f"""[workload]
mode = "open"
rate = 400.0
max_in_flight = 4000
[providers.p1]
weight = 1.0
latency = {config.CLIENT_GRACE}
distribution = "exponential"
"""
"""Calls whose latencies spread across the clients' grace: at the run's end some answer just
before the grace runs out and some after, and are cut off. Whether a count decided by two
clocks, the clients' and the gateway's, differs here depends on how late their loops run as
the grace ends; ``tests/test_run_end.py`` stalls a loop there to make it certain."""


def test_the_last_seconds_of_a_run_reach_a_scraper(tmp_path):
    # A scraper every few seconds, like Prometheus: one scrape during the run, the next well
    # after the clients stopped. The metrics server waits for it, and it sees every answer.
    out = tmp_path / "run.json"
    process = Process("run", "--duration", "2", "--port", "0", "--metrics-port", "0", "--json", str(out), cwd=tmp_path)
    urls = process.urls()
    assert " offered " in process.line()
    began = time.monotonic() - 1.25
    scraped_codes([urls["metrics"]])
    time.sleep(max(0.0, began + 2 + config.CLIENT_GRACE + 1.0 - time.monotonic()))
    final = scraped_codes([urls["metrics"]])
    status, _, stderr = process.finish()
    assert (status, stderr) == (0, "")
    assert final == json.loads(out.read_text())["codes"]


def test_the_requests_a_run_cuts_off_at_its_end_count_alike_in_its_summary_and_metrics(tmp_path):
    # The gateway alone decides which answers came within the grace: it cuts off the rest
    # (499) and closes their connections, and the clients, which wait a margin longer, count
    # each request as it did. Calls spread across the grace's end (BOUNDARY_SCENARIO).
    scenario = tmp_path / "boundary.toml"
    scenario.write_text(BOUNDARY_SCENARIO)
    out = tmp_path / "run.json"
    process = Process("run", "--config", str(scenario), "--duration", "2", "--port", "0", "--metrics-port", "0",
                      "--json", str(out), cwd=tmp_path)
    urls = process.urls()
    assert " offered " in process.line()
    began = time.monotonic() - 1.25
    scraped_codes([urls["metrics"]])
    time.sleep(max(0.0, began + 2 + config.CLIENT_GRACE + config.CUT_OFF_MARGIN + 1.0 - time.monotonic()))
    final = scraped_codes([urls["metrics"]])
    status, _, stderr = process.finish()
    assert (status, stderr) == (0, "")
    result = json.loads(out.read_text())
    assert final == result["codes"]
    assert result["codes"]["200"] > 0 and result["codes"]["499"] > 0
    assert result["gateway_in_flight_at_end"] == 0
