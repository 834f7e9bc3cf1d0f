"""Replicas: N gateway processes on one port (SO_REUSEPORT), each with its metrics port, under
one parent that fans admin changes out to all and takes them down with it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from collections import Counter

import aiohttp
import pytest

from gwlab import config
from gwlab.breaker import State
from gwlab.cli import REPLICAS_EXIT_BOUND
from gwlab.live import status_lines
from gwlab.redis_server import RedisServer
from gwlab.replicas import ReplicaError, Replicas, _ending, scrape_config
from gwlab.streams import replica_seed
from gwlab.router import ProviderState, Snapshot
from gwlab.server import PortInUse
from gwlab.stats import Tally
from gwlab.summary import summarise
from tests.conftest import SIMULATION_TIMEOUT, require_tool
from tests.support import CHAT, alive
from tests.test_cli import BOUNDARY_SCENARIO, Process, _wait_gone, scraped_codes

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

REPLICA_LINE = re.compile(r"^metrics  (http://\S+) \(replica (\d+), pid (\d+)\)$")


def test_replica_0_keeps_the_seed_and_the_others_get_seeds_of_their_own():
    seeds = [replica_seed(7, i) for i in range(8)]
    assert seeds[0] == 7
    assert len(set(seeds)) == 8 and all(0 <= s < 2**63 for s in seeds)
    assert seeds == [replica_seed(7, i) for i in range(8)]  # the same in every process
    assert replica_seed(8, 1) != seeds[1]


def test_the_scrape_configuration_is_valid_for_promtool_and_labels_each_replica(tmp_path):
    promtool = require_tool("promtool")
    rules = Path(__file__).resolve().parent.parent / "prometheus" / "rules.yml"
    text = scrape_config(["127.0.0.1:9090", "127.0.0.1:9091"], rules=str(rules))
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    checked = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'targets: ["127.0.0.1:9091"]\n        labels: {replica: "1"}' in text
    assert "SUCCESS: 1 rule files found" in checked.stdout + checked.stderr
    # The repository's own prometheus.yml, which the README runs, is one of these.
    repository = (rules.parent.parent / "prometheus.yml").read_text()
    assert "".join(line + "\n" for line in repository.splitlines() if not line.startswith("#")) == scrape_config(
        ["127.0.0.1:9090"], rules="prometheus/rules.yml")


@pytest.mark.parametrize("count", [0, config.MAX_REPLICAS + 1])
def test_a_count_out_of_range_is_refused_naming_the_range(count):
    with pytest.raises(config.ConfigError, match=f"replicas = {count}: allowed are 1 to {config.MAX_REPLICAS}"):
        Replicas(config.Scenario(), 1, count)


async def _post_on_new_connections(url: str, n: int) -> list[int]:
    """``n`` chat requests, each on a connection of its own; their statuses."""
    statuses = []
    for _ in range(n):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.post(f"{url}/v1/chat/completions", json=CHAT) as answer:
                await answer.read()
                statuses.append(answer.status)
    return statuses


async def _thresholds(url: str, n: int) -> list[int]:
    """The breakers' failure threshold that ``GET /admin/config`` reads, ``n`` times, each on
    a connection of its own."""
    thresholds = []
    for _ in range(n):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.get(f"{url}/admin/config") as answer:
                thresholds.append((await answer.json())["breaker"]["failure_threshold"])
    return thresholds


async def _answered(http: aiohttp.ClientSession, metrics_url: str) -> float:
    """The requests a replica has answered, from its own metrics."""
    async with http.get(metrics_url) as answer:
        text = await answer.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("gwlab_requests_total{"))


def test_replicas_share_one_port_and_apply_every_admin_change_together():
    async def scenario() -> None:
        instant = config.from_dict({"providers": {name: {"latency": 0.0, "error_rate": 0.0} for name in ("p1", "p2", "p3")}})
        replicas = Replicas(instant, 1, 3)
        await replicas.start("127.0.0.1", 0, 0)
        try:
            assert len(set(replicas.metrics_ports)) == 3 and replicas.port not in replicas.metrics_ports
            # 60 connections, each hashed by the kernel to one of 3 listeners: a replica is
            # left without any with probability at most 3 * (2/3)**60 < 1e-10.
            assert await _post_on_new_connections(replicas.url, 60) == [200] * 60
            async with aiohttp.ClientSession() as http:
                answered = [await _answered(http, url) for url in replicas.metrics_urls]
                assert sum(answered) == 60 and min(answered) > 0, answered
                # A change through the one address reaches every replica; a refused one none.
                limiter = {"rate": 1, "burst": 2}
                async with http.patch(f"{replicas.url}/admin/config", json={"limiter": limiter}) as answer:
                    assert answer.status == 200 and (await answer.json())["limiter"] == limiter
                assert [(s.rate, s.burst) for s in (await replicas.snapshots()).values()] == [(1.0, 2.0)] * 3
                async with http.patch(f"{replicas.url}/admin/config", json={"limiter": {"rate": -1}}) as answer:
                    assert answer.status == 400 and "limiter.rate = -1" in (await answer.json())["error"]["message"]
                assert [s.rate for s in (await replicas.snapshots()).values()] == [1.0] * 3
                assert replicas.scenario.limiter.rate == 1
                # 30 requests: some replica takes 10 or more, against 2 tokens and 1 a second.
                assert 429 in await _post_on_new_connections(replicas.url, 30)
                # A reset through the one address refills every replica's bucket.
                async with http.post(f"{replicas.url}/admin/reset") as answer:
                    assert answer.status == 200
                assert [s.tokens for s in (await replicas.snapshots()).values()] == [2.0] * 3
            # A change made by the parent (as scripted events are) reaches every replica:
            # 30 connections leave one unasked with probability 3 * (2/3)**30 < 2e-5.
            replicas.configure({"breaker": {"failure_threshold": 9}})
            assert replicas.scenario.breaker.failure_threshold == 9
            await replicas.sync()
            assert set(await _thresholds(replicas.url, 30)) == {9}
        finally:
            await replicas.stop()
        assert [p.exitcode for p in replicas._processes] == [0, 0, 0]
        assert replicas.pids and not any(alive(pid) for pid in replicas.pids)

    asyncio.run(scenario())


def test_a_port_taken_by_anything_fails_the_start_with_no_replica_left(caplog):
    async def start(port: int, metrics_port: int, taken: str) -> None:
        replicas = Replicas(config.Scenario(), 1, 2)
        with pytest.raises(PortInUse, match=f"port {taken} is already in use"):
            await replicas.start("127.0.0.1", port, metrics_port)
        assert not any(alive(pid) for pid in replicas.pids)
        # The others are ended at once, which is no fault of theirs: no warning says they
        # did not exit in time.
        assert [r.getMessage() for r in caplog.records if r.name == "gwlab.replicas"] == []

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even a socket that shares
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        held = sock.getsockname()[1]
        asyncio.run(start(held, 0, str(held)))  # the gateway's port
        # Replica 0's metrics port. Replica 1's, held + 1, may be taken too, by anything (the
        # free port this start's gateway was given among them): then either may be named.
        asyncio.run(start(0, held, f"({held}|{held + 1})"))


def test_serve_with_replicas_writes_the_scrape_configuration_and_ends_on_sigterm(tmp_path):
    scrape = tmp_path / "scrape.yml"
    process = Process("serve", "--replicas", "2", "--port", "0", "--metrics-port", "0",
                      "--scrape-config", str(scrape), cwd=tmp_path)
    assert re.match(r"^gateway  http://127\.0\.0\.1:\d+ \(2 replicas\)$", process.line(60))
    metrics = [REPLICA_LINE.match(process.line()).groups() for _ in range(2)]
    assert [index for _, index, _ in metrics] == ["0", "1"]
    assert process.line() == f"Prometheus scrape configuration: {scrape}"
    ports = [url.rsplit(":", 1)[1].removesuffix("/metrics") for url, _, _ in metrics]
    assert scrape.read_text() == scrape_config([f"127.0.0.1:{port}" for port in ports])
    children = process.children()
    replicas = [pid for pid in children if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert len(replicas) == 2
    began = time.monotonic()
    process.popen.send_signal(signal.SIGTERM)
    status, _, stderr = process.finish()
    assert status == 0, stderr
    assert time.monotonic() - began < config.STOP_GRACE
    assert _wait_gone(replicas, 1) == []


def test_serve_ends_with_status_1_once_every_replica_has_died(tmp_path):
    process = Process("serve", "--replicas", "2", "--port", "0", "--metrics-port", "0",
                      "--scrape-config", str(tmp_path / "scrape.yml"), cwd=tmp_path)
    url = process.line(60).split()[1]
    replicas = [pid for pid in process.children() if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert len(replicas) == 2
    for pid, sig in zip(replicas, (signal.SIGKILL, signal.SIGSEGV)):
        os.kill(pid, sig)
    status, _, stderr = process.finish(timeout=config.CHILD_EXIT_TIMEOUT + config.STOP_GRACE)
    assert status == 1, stderr
    named = [re.sub(r"pid \d+", "pid N", line) for line in stderr.splitlines() if line.startswith("WARNING gwlab.replicas")]
    # Named as each is reaped, in either order; each line counts the replicas left as it is
    # written (the second death may come before the first line: then both say 0).
    assert sorted(line.split("; ")[0] for line in named) == [
        "WARNING gwlab.replicas: replica 0 (pid N) ended unexpectedly (killed by SIGKILL)",
        "WARNING gwlab.replicas: replica 1 (pid N) ended unexpectedly (killed by SIGSEGV)"]
    assert [line.split("; ")[1] for line in named] in (["the other 1 go on", "the other 0 go on"],
                                                       ["the other 0 go on"] * 2)
    assert stderr.rstrip().endswith(f"gwlab: error: every one of the 2 replicas ended unexpectedly; nothing serves {url}")


def test_the_replicas_die_with_their_parent_killed(tmp_path):
    process = Process("serve", "--replicas", "2", "--port", "0", "--metrics-port", "0",
                      "--scrape-config", str(tmp_path / "scrape.yml"), cwd=tmp_path)
    process.line(60)
    replicas = [pid for pid in process.children() if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert len(replicas) == 2
    process.popen.kill()
    process.popen.wait(5)
    assert _wait_gone(replicas, 5) == []


@pytest.mark.parametrize("argv, expected", [
    (["--replicas", "0"], f"--replicas = 0: expected 1 to {config.MAX_REPLICAS}"),
    (["--replicas", "3", "--metrics-port", "65534"], "--metrics-port = 65534: the replicas' metrics ports 65534 to 65536"),
    (["--replicas", "2", "--scrape-config", "/"], "--scrape-config: '/' is a directory"),
    (["--port", "40001", "--metrics-port", "40001"],
     "--port = 40001 and --metrics-port = 40001: the gateway and its metrics need a port each"),
    (["--replicas", "2", "--port", "40002", "--metrics-port", "40001"],
     "--port = 40002 is the metrics port of replica 1 (--metrics-port = 40001, plus 1): the gateway and its "
     "metrics need a port each"),
])
def test_bad_replica_flags_exit_2_with_one_line_naming_them(argv, expected, tmp_path):
    process = Process("serve", "--port", "0", *argv, cwd=tmp_path)
    status, lines, stderr = process.finish()
    assert (status, lines) == (2, [])
    assert stderr.startswith(f"gwlab: error: {expected}") and stderr.count("\n") == 1, stderr


async def _offer(url: str, seconds: float, concurrency: int) -> list[tuple[float, float, int]]:
    """Chat requests from ``concurrency`` clients for ``seconds``, each request on a
    connection of its own (so the kernel spreads them over the replicas): each one's send
    and answer times (``time.monotonic()``) and status."""
    answers: list[tuple[float, float, int]] = []
    end = time.monotonic() + seconds

    async def client() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            while (sent := time.monotonic()) < end:
                async with http.post(f"{url}/v1/chat/completions", json=CHAT) as answer:
                    await answer.read()
                    answers.append((sent, time.monotonic(), answer.status))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return answers


RATE, BURST, REPLICAS_N = 20.0, 10.0, 4
"""The lesson's limiter (each replica's, or the one they share) and replicas."""


@pytest.fixture
def redis_url():
    with RedisServer(require_tool("redis-server")) as server:
        yield server.url


def _lesson(limiter: dict, seconds: float = 4.0) -> list[tuple[float, float, int]]:
    """4 replicas with ``limiter`` (rate 20/s, burst 10, and its backend), offered several
    times what they admit for ``seconds`` on connections the kernel spreads over them; the
    answers."""
    scenario = config.from_dict({
        "providers": {name: {"latency": 0.0, "error_rate": 0.0} for name in ("p1", "p2", "p3")},
        "limiter": {"rate": RATE, "burst": BURST, **limiter},
    })

    async def offer() -> list[tuple[float, float, int]]:
        replicas = Replicas(scenario, 1, REPLICAS_N)
        await replicas.start("127.0.0.1", 0, 0)
        try:
            return await _offer(replicas.url, seconds, concurrency=16)
        finally:
            await replicas.stop()

    answers = asyncio.run(offer())
    statuses = Counter(status for _, _, status in answers)
    # Offered at least 1.5 times what was admitted (on a quiet machine, several times): a
    # loaded one slows the clients, not the buckets.
    assert set(statuses) == {200, 429} and statuses[429] >= statuses[200] / 2, statuses
    return answers


def test_replicas_with_local_limiters_admit_n_times_the_rate():
    """The lesson of replicas: a limit each replica keeps for itself lets N times the rate
    through. Each replica's bucket admits at most its burst plus rate x T (T: the offer's
    time), and at least that less the tokens it could not hold, which it only loses while no
    request comes for a whole burst's time (0.5 s, against an offer several times the rate)."""
    answers = _lesson({})
    took = max(answered for _, answered, _ in answers) - min(sent for sent, _, _ in answers)
    one_limit = BURST + RATE * took
    admitted = sum(status == 200 for _, _, status in answers)
    assert 0.9 * REPLICAS_N * one_limit <= admitted <= REPLICAS_N * one_limit, (admitted, took)


def test_replicas_sharing_the_redis_bucket_admit_the_rate_once(redis_url):
    """The same replicas with the one bucket in Redis admit the rate once between them: from
    its first admission (which created it full) to its last, the bucket admits exactly burst
    + rate x that time, and less than one token more (the clock's tolerance). Each is known
    to lie between its request's send and its answer, which brackets the count; and it is
    within 1 % of the middle of the bracket. The bracket is as wide as those two requests'
    latencies, whatever the offer's length: an offer of 8 s keeps 1 % of the count above
    half of it while they stay under 80 ms each, on a loaded machine too."""
    # A timeout of 1 s: on this small machine, four replicas and their clients can keep Redis
    # from answering within the default 50 ms, and the replicas would then admit unlimited
    # (failing open, as they should).
    answers = _lesson({"backend": "redis", "redis_url": redis_url, "redis_prefix": "lesson", "redis_timeout": 1.0}, 8.0)
    admitted = sorted((sent, answered) for sent, answered, status in answers if status == 200)
    first_sent, first_answered = min(sent for sent, _ in admitted), min(answered for _, answered in admitted)
    last_sent, last_answered = max(sent for sent, _ in admitted), max(answered for _, answered in admitted)
    shortest, longest = max(0.0, last_sent - first_answered), last_answered - first_sent
    assert BURST + RATE * shortest <= len(admitted) < BURST + RATE * longest + 1, (len(admitted), shortest, longest)
    assert len(admitted) == pytest.approx(BURST + RATE * (shortest + longest) / 2, rel=0.01)


# -- what a run with replicas shows -------------------------------------------------------

def _snapshot(tokens: float, p1: State, cooldown: float = 0.0) -> Snapshot:
    return Snapshot(3.0, tokens, 1000.0, 1000.0, 0, {"p1": ProviderState(p1, cooldown, 70.0, 0, 0),
                                                     "p2": ProviderState(State.HEALTHY, 0.0, 30.0, 0, 0)})


def test_the_status_counts_each_breakers_states_over_the_replicas_and_sums_their_tokens():
    tally = Tally()
    for _ in range(3):
        tally.record(200, "p1", 0.1)
    tally.record(200, "p2", 0.1)
    snapshots = [_snapshot(900.0, State.HEALTHY), _snapshot(12.4, State.OPEN, 2.5), _snapshot(50.0, State.OPEN, 0.75)]
    lines = status_lines(tally, 1.0, 4, tally, snapshots, 3.0)
    assert lines[1] == "        p1 75.0% healthy×1 open×2 2.5s   p2 25.0% healthy×3"
    assert lines[2].startswith("        tokens 962/3000 in 3 replicas  latency ")
    assert status_lines(tally, 1.0, 4, tally, snapshots[1:2], 3.0)[1] == "        p1 75.0% open 2.5s   p2 25.0% healthy"


def test_the_status_shows_a_bucket_the_replicas_share_in_redis_once_as_last_read():
    tally = Tally()
    tally.record(200, "p1", 0.1)
    snapshots = [dataclasses.replace(_snapshot(tokens, State.HEALTHY), at=at)
                 for tokens, at in ((900.0, 3.0), (12.4, 3.5), (50.0, 3.2))]
    assert status_lines(tally, 1.0, 1, tally, snapshots, 3.0, shared=True)[2].startswith(
        "        tokens 12/1000 shared by 3 replicas  latency ")
    assert status_lines(tally, 1.0, 1, tally, snapshots[:1], 3.0, shared=True)[2].startswith(
        "        tokens 900/1000  latency ")


def test_a_summary_with_replicas_gives_totals_and_each_replicas_breakers():
    tally = Tally()
    tally.record(200, "p1", 0.1)
    scenario = config.Scenario()
    ends = [{"replica": 0, "end": _snapshot(1.0, State.HEALTHY), "trips": {"p1": 2}, "fallbacks": {"p2": 1}},
            {"replica": 2, "end": _snapshot(1.0, State.OPEN), "trips": {"p1": 3, "p2": 1}, "fallbacks": {}}]
    result = summarise(tally, mode="live", seed=1, scenario=scenario, duration=1.0, sent=1, saturated=0,
                       workloads=[(0.0, scenario.workload)], end=ends[0]["end"], trips={"p1": 5, "p2": 1},
                       fallbacks={"p2": 1}, events_refused=0, retries={}, replicas=ends)
    assert (result["trips"], result["fallbacks"]) == (6, 1)
    assert [(p["state"], p["trips"], p["fallbacks"]) for p in result["providers"].values()] == [
        ("healthy×1 open×1", 5, 0), ("healthy×2", 1, 1)]
    assert result["replicas"] == [
        {"replica": 0, "providers": {"p1": {"state": "healthy", "trips": 2, "fallbacks": 0},
                                     "p2": {"state": "healthy", "trips": 0, "fallbacks": 1}}},
        {"replica": 2, "providers": {"p1": {"state": "open", "trips": 3, "fallbacks": 0},
                                     "p2": {"state": "healthy", "trips": 1, "fallbacks": 0}}},
    ]
    assert "replicas" not in summarise(tally, mode="live", seed=1, scenario=scenario, duration=1.0, sent=1,
                                       saturated=0, workloads=[(0.0, scenario.workload)], end=ends[0]["end"],
                                       trips={}, fallbacks={}, events_refused=0, retries={})


def test_run_with_replicas_drives_them_all_and_sums_them_in_the_summary(tmp_path):
    out = tmp_path / "run.json"
    process = Process("run", "--replicas", "2", "--duration", "3", "--port", "0", "--metrics-port", "0",
                      "--scrape-config", str(tmp_path / "scrape.yml"), "--json", str(out), cwd=tmp_path)
    assert re.match(r"^gateway  http://\S+ \(2 replicas\)$", process.line(60))
    replicas = [pid for pid in process.children() if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
    status, lines, stderr = process.finish(timeout=60)
    assert status == 0, stderr
    assert any(" in 2 replicas  latency " in line for line in lines), lines
    result = json.loads(out.read_text())
    assert len(result["replicas"]) == 2
    for name, provider in result["providers"].items():
        each = [r["providers"][name] for r in result["replicas"]]
        assert provider["trips"] == sum(e["trips"] for e in each)
        assert provider["fallbacks"] == sum(e["fallbacks"] for e in each)
        assert sum(int(n) for n in re.findall(r"×(\d+)", provider["state"])) == 2
    assert result["trips"] == sum(p["trips"] for p in result["providers"].values())
    assert result["offered"] > 0 and result["gateway_in_flight_at_end"] == 0
    assert _wait_gone(replicas, 5) == []  # the load generator's workers and the replicas


def test_with_replicas_the_requests_a_run_cuts_off_count_alike_in_its_summary_and_metrics(tmp_path):
    # As with one gateway (tests/test_cli.py): each replica cuts off its own requests in
    # flight as the grace runs out, and the clients count each request as its replica did.
    scenario = tmp_path / "boundary.toml"
    scenario.write_text(BOUNDARY_SCENARIO)
    out = tmp_path / "run.json"
    process = Process("run", "--replicas", "2", "--config", str(scenario), "--duration", "2", "--port", "0",
                      "--metrics-port", "0", "--scrape-config", str(tmp_path / "scrape.yml"), "--json", str(out),
                      cwd=tmp_path)
    assert re.match(r"^gateway  http://\S+ \(2 replicas\)$", process.line(60))
    began = time.monotonic()
    urls = [REPLICA_LINE.match(process.line()).group(1) for _ in range(2)]
    scraped_codes(urls)
    time.sleep(max(0.0, began + 2 + config.CLIENT_GRACE + config.CUT_OFF_MARGIN + 1.0 - time.monotonic()))
    final = scraped_codes(urls)
    status, _, stderr = process.finish(timeout=60)
    assert status == 0, stderr
    result = json.loads(out.read_text())
    assert final == result["codes"]
    assert result["codes"]["200"] > 0 and result["codes"]["499"] > 0
    assert result["gateway_in_flight_at_end"] == 0


# -- a replica that dies or stalls ------------------------------------------------------------

def test_a_replica_that_dies_is_named_and_the_others_go_on(caplog):
    async def scenario() -> int:
        replicas = Replicas(config.Scenario(), 1, 3)
        await replicas.start("127.0.0.1", 0, 0)
        try:
            os.kill(replicas.pids[1], signal.SIGKILL)
            deadline = time.monotonic() + 5
            while not replicas.lost and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert replicas.lost == [1]
            while Path(f"/proc/{replicas.pids[1]}").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not Path(f"/proc/{replicas.pids[1]}").exists()  # reaped at once: no zombie left
            async with aiohttp.ClientSession() as http:
                for _ in range(5):  # whichever replica a connection reaches
                    async with http.patch(f"{replicas.url}/admin/config", json={"limiter": {"rate": 7}},
                                          headers={"Connection": "close"}) as answer:
                        assert answer.status == 200, await answer.text()
            assert list(await replicas.snapshots()) == [0, 2]
            assert [s.rate for s in (await replicas.snapshots()).values()] == [7.0, 7.0]
        finally:
            await replicas.stop()
        return replicas.pids[1]

    pid = asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records if r.name == "gwlab.replicas"] == [
        f"replica 1 (pid {pid}) ended unexpectedly (killed by SIGKILL); the other 2 go on"]


def test_a_change_a_stalled_replica_does_not_confirm_is_a_503_and_it_applies_it_on_resuming(monkeypatch):
    monkeypatch.setattr(config, "REPLICA_REPLY_TIMEOUT", 1.0)

    async def scenario() -> None:
        replicas = Replicas(config.Scenario(), 1, 2)
        await replicas.start("127.0.0.1", 0, 0)
        stalled = replicas.pids[1]
        try:
            os.kill(stalled, signal.SIGSTOP)
            async with aiohttp.ClientSession() as http:
                for path, body in (("/admin/config", {"limiter": {"rate": 7}}), ("/admin/reset", None)):
                    # A connection to the stalled replica waits; one to the other gets the answer.
                    while True:
                        try:
                            async with http.request("PATCH" if body else "POST", replicas.url + path, json=body,
                                                    headers={"Connection": "close"},
                                                    timeout=aiohttp.ClientTimeout(total=3)) as answer:
                                error = (await answer.json())["error"]
                                break
                        except TimeoutError:
                            continue
                    assert answer.status == 503 and error["code"] == "replicas_unavailable", error
                    assert "replicas 1 did not confirm it within 1 s" in error["message"]
            assert list(await replicas.snapshots()) == [0]
            os.kill(stalled, signal.SIGCONT)
            assert [s.rate for s in (await replicas.snapshots()).values()] == [7.0, 7.0]
        finally:
            os.kill(stalled, signal.SIGCONT)
            await replicas.stop()

    asyncio.run(scenario())


def test_replicas_that_never_say_they_listen_fail_the_start_within_its_bound_and_are_killed(monkeypatch):
    """Replicas stopped (SIGSTOP) as soon as they are spawned never report that they listen:
    the start fails once :data:`config.CHILD_START_TIMEOUT` has passed, naming them, and
    kills them (a stopped process does not see its pipe close)."""
    monkeypatch.setattr(config, "CHILD_START_TIMEOUT", 1.0)

    async def start() -> tuple[float, list[int]]:
        replicas = Replicas(config.Scenario(), 1, 2)

        async def stall() -> None:  # runs once start() awaits: every replica is spawned
            for pid in replicas.pids:
                os.kill(pid, signal.SIGSTOP)

        stalling = asyncio.create_task(stall())
        began = time.monotonic()
        with pytest.raises(ReplicaError) as raised:
            await replicas.start("127.0.0.1", 0, 0)
        await stalling
        assert str(raised.value) == "replicas 0, 1 of 2 did not start within 1 s"
        return time.monotonic() - began, replicas.pids

    elapsed, pids = asyncio.run(start())
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)
    assert config.CHILD_START_TIMEOUT <= elapsed < config.CHILD_START_TIMEOUT + config.CHILD_EXIT_TIMEOUT


def test_a_stalled_replica_never_holds_the_parent_up_and_is_killed_past_its_backlog(monkeypatch, caplog):
    """The parent writes to a replica only what its pipe takes at once, and keeps the rest:
    thousands of changes for a replica that reads none of them (stopped) keep the parent's
    loop going, reach the other replica, and, past the backlog's bound, end the stalled one."""
    monkeypatch.setattr(config, "REPLICA_BACKLOG", 64 * 1024)

    async def scenario() -> tuple[list[float], list[int], int, float, int]:
        replicas = Replicas(config.Scenario(), 1, 2)
        await replicas.start("127.0.0.1", 0, 0)
        stalled = replicas.pids[1]
        os.kill(stalled, signal.SIGSTOP)
        try:
            took, rate = [], 1.0
            async with asyncio.timeout(30):
                while not replicas.lost:
                    for _ in range(20):
                        rate = rate % 50 + 1
                        began = time.monotonic()
                        replicas.configure({"limiter": {"rate": rate}})
                        took.append(time.monotonic() - began)
                    # The loop reads the replicas' pipes and writes to them. Paced so that the
                    # replica that runs reads some of every 64 KiB on a busy machine too: it is
                    # to be killed only when it reads nothing.
                    await asyncio.sleep(0.02)
            snapshots = await replicas.snapshots()
            return took, replicas.lost, stalled, snapshots[0].rate - rate, len(snapshots)
        finally:
            with contextlib.suppress(ProcessLookupError):  # killed, and reaped already
                os.kill(stalled, signal.SIGCONT)
            await replicas.stop()

    took, lost, stalled, behind, answered = asyncio.run(scenario())
    assert lost == [1] and answered == 1 and behind == 0  # replica 0 has the last change
    assert len(took) > 300 and max(took) < 1.0  # no change waited for the stalled replica to read
    assert f"replica 1 (pid {stalled}) read none of the last 65536 bytes sent to it: killed" in \
        [r.getMessage() for r in caplog.records]
    assert not alive(stalled)


def test_a_stalled_replica_is_killed_once_the_grace_and_the_exit_bound_have_passed(monkeypatch, caplog):
    monkeypatch.setattr(config, "CHILD_EXIT_TIMEOUT", 1.0)

    async def stop() -> tuple[float, list[int]]:
        replicas = Replicas(config.Scenario(), 1, 2)
        await replicas.start("127.0.0.1", 0, 0)
        os.kill(replicas.pids[1], signal.SIGSTOP)
        began = time.monotonic()
        await replicas.stop(grace=0.5)
        return time.monotonic() - began, replicas.pids

    elapsed, pids = asyncio.run(stop())
    assert not any(alive(pid) for pid in pids)
    assert [r.getMessage() for r in caplog.records if r.name == "gwlab.replicas"] == [
        f"replica 1 (pid {pids[1]}) did not exit in time: killed"]
    # Replica 0 stops within its grace; replica 1 is killed at the grace and the bound, and
    # seen gone within the bound again.
    assert 0.5 + config.CHILD_EXIT_TIMEOUT <= elapsed < 0.5 + 2 * config.CHILD_EXIT_TIMEOUT


def _running(tmp_path, count: int, *args: str) -> tuple[Process, list[int]]:
    """``gwlab run --replicas count`` with ``args``, once its first status line is out: the
    process, and its replicas' pids."""
    process = Process("run", "--replicas", str(count), *args, "--port", "0", "--metrics-port", "0",
                      "--scrape-config", str(tmp_path / "scrape.yml"), cwd=tmp_path)
    process.line(60)
    replicas = [int(REPLICA_LINE.match(process.line()).group(3)) for _ in range(count)]
    process.line()  # the scrape configuration
    assert " offered " in process.line()  # the first status, 1.25 s after the start: the clients run
    return process, replicas


def test_run_with_a_replica_stalled_at_the_end_exits_within_its_bound_and_names_it(tmp_path):
    out = tmp_path / "run.json"
    process, replicas = _running(tmp_path, 2, "--duration", "2", "--json", str(out))
    began = time.monotonic() - 1.25
    os.kill(replicas[1], signal.SIGSTOP)
    status, lines, stderr = process.finish(timeout=2 + REPLICAS_EXIT_BOUND + 5)
    took = time.monotonic() - began
    assert status == 0, stderr
    assert 2 + config.REPLICA_REPLY_TIMEOUT <= took < 2 + REPLICAS_EXIT_BOUND
    assert f"replica 1 (pid {replicas[1]}) did not exit in time: killed" in stderr
    summary = json.loads(out.read_text())
    assert summary["replicas_lost"] == [1] and [r["replica"] for r in summary["replicas"]] == [0]
    assert not alive(replicas[1])


def test_run_with_replicas_goes_on_without_one_that_dies_and_says_so(tmp_path):
    out = tmp_path / "run.json"
    process, replicas = _running(tmp_path, 3, "--duration", "4", "--json", str(out))
    os.kill(replicas[1], signal.SIGKILL)
    status, lines, stderr = process.finish(timeout=60)
    assert status == 0, stderr
    assert f"replica 1 (pid {replicas[1]}) ended unexpectedly (killed by SIGKILL); the other 2 go on" in stderr
    result = json.loads(out.read_text())
    assert [r["replica"] for r in result["replicas"]] == [0, 2] and result["replicas_lost"] == [1]
    statuses = [line for line in lines if " offered " in line and "  tokens " in line]
    assert " in 3 replicas " in statuses[0] and " in 2 replicas " in statuses[-1]  # the lost one is no longer shown


@pytest.mark.parametrize("signals, endings", [
    ((signal.SIGKILL, signal.SIGSEGV), ("killed by SIGKILL", "killed by SIGSEGV")),
    ((signal.SIGTERM, signal.SIGTERM), ("exit status 0", "exit status 0")),  # stopped, but not by gwlab run
])
def test_run_ends_with_status_1_once_every_replica_has_died(tmp_path, signals, endings):
    """As ``gwlab serve`` does: its clients stopped, and no summary (no replica is left to give
    its end), where a run with no ``--duration`` would go on for ever."""
    out = tmp_path / "run.json"
    process, replicas = _running(tmp_path, 2, "--clients", "10", "--json", str(out))
    url = process.seen[0].split()[1]
    workers = [pid for pid in process.children() if pid not in replicas]
    assert workers
    for pid, sig in zip(replicas, signals):
        os.kill(pid, sig)
    status, lines, stderr = process.finish(timeout=config.CHILD_EXIT_TIMEOUT + REPLICAS_EXIT_BOUND)
    assert status == 1, stderr
    named = sorted(re.sub(r"pid \d+", "pid N", line).split("; ")[0] for line in stderr.splitlines()
                   if line.startswith("WARNING gwlab.replicas"))
    assert named == [f"WARNING gwlab.replicas: replica {i} (pid N) ended unexpectedly ({ending})"
                     for i, ending in enumerate(endings)]
    assert stderr.rstrip().endswith(f"gwlab: error: every one of the 2 replicas ended unexpectedly; nothing serves {url}")
    assert not out.exists() and not any(line.startswith(("duration ", "codes ")) for line in lines), lines
    assert _wait_gone(workers + replicas, 5) == []


def test_runs_status_shows_a_stalled_replica_as_it_last_was(tmp_path):
    process = Process("run", "--replicas", "2", "--clients", "10", "--duration", "4", "--port", "0",
                      "--metrics-port", "0", "--scrape-config", str(tmp_path / "scrape.yml"), cwd=tmp_path)
    process.line(60)
    replicas = [int(REPLICA_LINE.match(process.line()).group(3)) for _ in range(2)]
    process.line()  # the scrape configuration
    assert " in 2 replicas " in process.line()  # the first status, taken from both replicas
    os.kill(replicas[1], signal.SIGSTOP)
    try:
        status = process.line()  # the next one, which replica 1 does not answer
    finally:
        os.kill(replicas[1], signal.SIGCONT)
    assert " offered " in status and " in 2 replicas " in status, status
    exit_status, _, stderr = process.finish(timeout=60)
    assert exit_status == 0, stderr


def test_a_replica_that_was_scraped_waits_for_one_last_scrape_when_a_run_ends():
    """As ``gwlab run`` with one gateway: a replica scraped during the run stays up, at the
    run's end, until its next scrape (at most FINAL_SCRAPE); one never scraped does not wait."""
    async def stop_after(scraped: bool, again: bool) -> float:
        replicas = Replicas(config.Scenario(), 1, 2)
        await replicas.start("127.0.0.1", 0, 0)
        async with aiohttp.ClientSession() as http:
            if scraped:
                async with http.get(replicas.metrics_urls[0]) as answer:
                    assert answer.status == 200
            began = time.monotonic()
            stopping = asyncio.create_task(replicas.stop(final_scrape=True))
            if again:
                await asyncio.sleep(0.5)
                async with http.get(replicas.metrics_urls[0]) as answer:
                    assert answer.status == 200  # the last scrape is served
            await stopping
        return time.monotonic() - began

    assert asyncio.run(stop_after(scraped=True, again=True)) < config.FINAL_SCRAPE - 1
    assert asyncio.run(stop_after(scraped=False, again=False)) < config.FINAL_SCRAPE - 1
    assert asyncio.run(stop_after(scraped=True, again=False)) >= config.FINAL_SCRAPE


@pytest.mark.parametrize("code,said", [
    (None, "not reaped yet"), (0, "exit status 0"), (3, "exit status 3"), (-9, "killed by SIGKILL"),
    (-15, "killed by SIGTERM"), (-11, "killed by SIGSEGV"), (-99, "killed by signal 99"),
])
def test_how_a_replica_ended_is_said_from_its_exit_code(code, said):
    assert _ending(code) == said
