"""Scripted events in a live run: the gateway and the clients change at the event's time.

Real time cannot be faked here (the clients are other processes), so each test reads its
counts in windows that keep a margin from the event times: the workers report every 0.5 s
on the common monotonic clock, and a window closes at least 0.25 s after the last report it
needs.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gwlab import config
from gwlab.cli import REFRESH, _OneGateway, _watch, event_player
from gwlab.live import LiveView
from gwlab.loadgen import LoadGenerator
from gwlab.server import Gateway
from gwlab.timeline import follow

pytestmark = pytest.mark.timeout(60)

STATUS_LINE = re.compile(r"^\s*\d+\.\d+s  offered ")


def _rate(line: str, code: int) -> int:
    return int(re.search(rf"\b{code} (\d+)/s", line).group(1))


def test_gwlab_run_applies_an_outage_event_at_its_time(tmp_path: Path):
    """p1 fails every call from 1.5 s on: no 502 is counted in the status line before the
    event (it holds the answers to requests finished by 1.0 s), 502s follow it, all of them
    p1's."""
    scenario = tmp_path / "outage.toml"
    scenario.write_text(
        "[breaker]\nenabled = false\n"
        "[providers.p1]\nweight = 1\nlatency = 0.005\n"
        "[providers.p2]\nweight = 1\nlatency = 0.005\n"
        '[workload]\nmode = "open"\nrate = 100.0\n'
        '[[events]]\nat = 1.5\nproviders.p1.outage = "error"\n'
    )
    out = tmp_path / "run.json"
    done = subprocess.run(
        [sys.executable, "-m", "gwlab", "run", "--config", str(scenario), "--duration", "3.5",
         "--port", "0", "--metrics-port", "0", "--log-level", "INFO", "--json", str(out)],
        capture_output=True, text=True, timeout=40,
    )
    assert done.returncode == 0, done.stderr
    expected = "event at 1.5 s: providers.p1.outage = 'error'"
    lines = done.stdout.splitlines()
    assert lines.count(expected) == 1
    assert f"INFO gwlab.timeline: {expected}" in done.stderr.splitlines()
    event = lines.index(expected)
    before = [line for line in lines[:event] if STATUS_LINE.match(line)]
    after = [line for line in lines[event:] if STATUS_LINE.match(line)]
    # Status lines at about 1.25, 2.25 and 3.25 s; the one at 2.25 s mixes both sides.
    assert len(before) == 1 and len(after) == 2
    assert _rate(before[0], 502) == 0 < _rate(before[0], 200)
    assert _rate(after[1], 502) > 0
    providers = json.loads(out.read_text())["providers"]
    assert providers["p1"]["codes"]["502"] > 0 < providers["p1"]["codes"]["200"]
    assert providers["p2"]["codes"]["502"] == 0 < providers["p2"]["codes"]["200"]


async def _live(scenario: config.Scenario, probe) -> tuple[LoadGenerator, str]:
    """Run ``scenario`` live with its events played as ``gwlab run`` plays them, while
    ``probe(gateway, clients)`` measures; returns the clients (stopped) and the view's text."""
    gateway = Gateway(scenario, seed=5)
    await gateway.start(port=0, metrics_port=0)
    clients = LoadGenerator(gateway.url, scenario.workload, seed=5, workers=1, grace=0.5)
    out = io.StringIO()
    try:
        await clients.start()
        events = event_player(scenario, gateway, clients, LiveView(out, redraw=False))
        player = asyncio.create_task(follow(events, time.monotonic, clients.started_at))
        try:
            await probe(gateway, clients)
        finally:
            player.cancel()
            await asyncio.gather(player, return_exceptions=True)
        await clients.stop()
    finally:
        await clients.stop()
        await gateway.stop()
    return clients, out.getvalue()


async def _until(clients: LoadGenerator, t: float) -> None:
    """Sleep until ``t`` seconds after the clients started sending."""
    await asyncio.sleep(max(0.0, clients.started_at + t - time.monotonic()))


def test_an_event_raising_the_open_loop_rate_raises_the_achieved_rate():
    """20 requests/s, then 100/s from 1 s on. Sends are Poisson, so each count is checked
    against its expectation within 4 sigma (sigma = sqrt(expected)): the reports due at 0.5
    and 1.0 s hold the sends of [0, 1] s (20 expected); the rest, up to the stop, is read
    from the final tallies, which the stop waits for, so that a report a loaded machine
    delivers late is still counted (100 a second from 1 s to the stop). At 100/s against
    20/s the two windows cannot be mistaken for each other: 4 sigma of the second is 0.3 of
    its expectation."""
    scenario = config.from_dict({
        "breaker": {"enabled": False},
        "providers": {"p1": {"weight": 1, "latency": 0.005}},
        "workload": {"mode": "open", "rate": 20.0},
        "events": [{"at": 1.0, "workload": {"rate": 100.0}}],
    }, "test scenario")
    windows = []

    async def probe(gateway, clients):
        await _until(clients, 1.25)
        windows.append(clients.take_interval()[1])
        await _until(clients, 3.25)

    clients, text = asyncio.run(_live(scenario, probe))
    before, = windows
    after, expected = clients.sent - before, 100 * (clients.elapsed - 1.0)
    assert abs(before - 20) <= 4 * math.sqrt(20)
    assert abs(after - expected) <= 4 * math.sqrt(expected)
    assert text.splitlines()[0] == "event at 1 s: workload.rate = 100.0"
    elapsed = clients.elapsed
    assert clients.requested_rate == pytest.approx((20 * 1.0 + 100 * (elapsed - 1.0)) / elapsed, rel=0.02)


def test_events_changing_the_closed_loop_clients_change_the_requests_in_flight():
    """20 clients, 4 from 1 s on, 12 from 2 s on. Every call takes 0.2 s and clients do not
    think, so a client is almost always in flight: the most requests in flight seen at the
    gateway is exactly the number of clients once the surplus ones have finished their
    request (0.2 s after the event) and retired."""
    scenario = config.from_dict({
        "breaker": {"enabled": False},
        "providers": {"p1": {"weight": 1, "latency": 0.2}},
        "workload": {"mode": "closed", "clients": 20},
        "events": [{"at": 1.0, "workload": {"clients": 4}}, {"at": 2.0, "workload": {"clients": 12}}],
    }, "test scenario")
    peaks = []

    async def probe(gateway, clients):
        for start in (0.5, 1.5, 2.5):
            seen = []
            for i in range(10):
                await _until(clients, start + i * 0.04)
                seen.append(gateway.snapshot().in_flight)
            peaks.append(max(seen))

    clients, text = asyncio.run(_live(scenario, probe))
    assert peaks == [20, 4, 12]
    assert text.splitlines() == ["event at 1 s: workload.clients = 4", "event at 2 s: workload.clients = 12"]
    assert clients.requested_rate is None


def test_an_event_turning_streams_on_reaches_the_workers():
    """Five clients of a provider with token timing (each call 0.03 s), not streaming, then
    streaming every request capped at 3 tokens from 1 s on. The reports due at 0.5 and 1.0 s
    hold only answers sent before the event: no stream, and no tokens read (no LLM traffic
    was asked for). Those due from 2.0 s on hold only streams, each of 3 tokens."""
    scenario = config.from_dict({
        "breaker": {"enabled": False},
        "providers": {"p1": {"ttft": 0.02, "decode_rate": 500.0, "output_tokens": 6.0}},
        "workload": {"mode": "closed", "clients": 5},
        "events": [{"at": 1.0, "workload": {"stream_share": 1.0, "max_tokens": 3}}],
    }, "test scenario")
    windows = []

    async def probe(gateway, clients):
        for t in (1.25, 1.75, 3.25):
            await _until(clients, t)
            windows.append(clients.take_interval()[0])

    clients, text = asyncio.run(_live(scenario, probe))
    before, _, after = windows
    assert before.count([200]) > 0 and before.ttft.count == before.output_tokens == 0
    assert after.count() == after.count([200]) == after.ttft.count > 0
    assert after.output_tokens == 3 * after.count([200])
    assert text.splitlines() == ["event at 1 s: workload.stream_share = 1.0, workload.max_tokens = 3"]


def test_gwlab_run_keeps_a_runtime_change_and_skips_an_event_that_no_longer_fits(caplog):
    """The player of ``gwlab run`` merges each event into the gateway's scenario as it
    stands: after ``PATCH /admin/config`` lowered max_cooldown, an event raising base_delay
    above it is refused (logged, counted), and the next event still applies."""
    scenario = config.from_dict({"events": [{"at": 1.0, "breaker": {"base_delay": 20.0}},
                                            {"at": 2.0, "limiter": {"rate": 500.0}}]})
    gateway = Gateway(scenario, seed=5)
    clients = LoadGenerator("http://127.0.0.1:1", scenario.workload, seed=5, workers=1)
    out = io.StringIO()
    player = event_player(scenario, gateway, clients, LiveView(out, redraw=False))
    gateway.configure({"breaker": {"max_cooldown": 10.0}}, "PATCH /admin/config")
    with caplog.at_level("WARNING", logger="gwlab.timeline"):
        player.play(2.0)
    assert player.refused == 1 and len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("event at 1 s: breaker.base_delay = 20.0: not applied: ")
    assert (gateway.scenario.limiter.rate, gateway.scenario.breaker.max_cooldown) == (500.0, 10.0)
    assert out.getvalue() == "event at 2 s: limiter.rate = 500.0\n"


def test_gwlab_runs_clients_follow_a_patch_of_the_workload_within_a_refresh():
    """``PATCH /admin/config`` of ``workload.rate`` during ``gwlab run`` (applied to the
    gateway's scenario, as the admin API does): the clients send at the new rate from the
    next refresh of the live status on, and the run's workloads record it, with no event."""
    scenario = config.from_dict({"breaker": {"enabled": False}, "providers": {"p1": {"weight": 1, "latency": 0.005}},
                                 "workload": {"mode": "open", "rate": 20.0}}, "test scenario")

    async def probe(gateway, clients):
        stop = asyncio.Event()
        watching = asyncio.create_task(_watch(clients, _OneGateway(gateway, stop), LiveView(io.StringIO(), False),
                                              stop, 3 * REFRESH))
        await _until(clients, 0.5 * REFRESH)
        gateway.configure({"workload": {"rate": 100.0}}, "PATCH /admin/config")
        await watching

    workloads = asyncio.run(_live(scenario, probe))[0].workloads
    assert [w.rate for _, w in workloads] == [20.0, 100.0]
    assert REFRESH / 2 <= workloads[1][0] <= 2 * REFRESH  # at the first refresh after the change
