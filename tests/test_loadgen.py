"""The load generator: how it splits the work, and its counts against a real gateway's; the
client driver it shares with the lab, run in the test's own loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import aiohttp
import pytest
from aiohttp import web
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from prometheus_client.parser import text_string_to_metric_families

from gwlab import config
from gwlab.children import ChildError
from gwlab.clients import BODY, PATH, Driver, open_session, prompt, read_stream, request_body
from gwlab.config import WorkloadConfig
from gwlab.loadgen import LoadGenerator, plan, worker_count
from gwlab.server import Gateway
from gwlab.stats import CUT_OFF, NO_PROVIDER, RELATIVE_ERROR, STREAM_ERROR, TRANSPORT_ERROR
from gwlab.summary import summarise
from gwlab.wire import reply
from gwlab.streams import stream
from gwlab.workload import next_arrival
from tests.support import alive

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("workload", "cpus", "expected"),
    [
        (WorkloadConfig(mode="closed", clients=100), 2, 1),
        (WorkloadConfig(mode="closed", clients=500), 8, 1),
        (WorkloadConfig(mode="closed", clients=501), 8, 2),
        (WorkloadConfig(mode="closed", clients=5000), 4, 4),
        (WorkloadConfig(mode="open", rate=100.0), 2, 1),
        (WorkloadConfig(mode="open", rate=1500.0), 2, 1),
        (WorkloadConfig(mode="open", rate=3000.0), 2, 2),
        (WorkloadConfig(mode="open", rate=3000.0), 1, 1),
        (WorkloadConfig(mode="open", rate=10000.0), 8, 7),
    ],
)
def test_worker_count_caps_the_rate_per_worker_and_the_cpus(workload, cpus, expected):
    assert worker_count(workload, cpus) == expected


def test_plan_splits_clients_evenly_and_the_rate_in_equal_parts():
    closed = plan("http://h:1", WorkloadConfig(mode="closed", clients=7, think_time=0.5), 9, 3)
    assert [p.clients for p in closed] == [3, 2, 2]
    assert [p.index for p in closed] == [0, 1, 2]
    assert {(p.mode, p.think_time, p.seed, p.url, p.grace) for p in closed} == {
        ("closed", 0.5, 9, "http://h:1", config.CLIENT_GRACE)}
    opened = plan("http://h:1", WorkloadConfig(mode="open", rate=3000.0), 9, 2, grace=0.5)
    assert [p.rate for p in opened] == [1500.0, 1500.0]
    assert {p.grace for p in opened} == {0.5}


def _scenario(**sections) -> config.Scenario:
    return config.from_dict(sections, "test scenario")


async def _scrape(gateway: Gateway) -> dict[str, dict[tuple, float]]:
    """The gateway's metrics over HTTP: {sample name: {sorted label items: value}}."""
    async with aiohttp.ClientSession() as session, session.get(gateway.metrics_url) as response:
        text = await response.text()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def _server_counts(samples) -> Counter:
    return Counter({(int(dict(labels)["code"]), dict(labels)["provider"]): int(v)
                    for labels, v in samples["gwlab_requests_total"].items() if v})


async def _drive(scenario: config.Scenario, seconds: float, grace: float = config.CLIENT_GRACE):
    gateway = Gateway(scenario, seed=3)
    await gateway.start(port=0, metrics_port=0)
    clients = LoadGenerator(gateway.url, scenario.workload, seed=3, grace=grace)
    try:
        await clients.start()
        await asyncio.sleep(seconds)
        await clients.stop()
        samples = await _scrape(gateway)
    finally:
        await clients.stop()
        await gateway.stop()
    return clients, samples


def test_closed_loop_tallies_equal_the_scraped_counters_exactly():
    # Fast providers answering 200, 502 (errors) and 504 (p3 hangs past the timeout).
    scenario = _scenario(
        gateway={"timeout": 0.05},
        providers={"p1": {"weight": 60, "latency": 0.005, "error_rate": 0.2},
                   "p2": {"weight": 30, "latency": 0.01, "error_rate": 0.5},
                   "p3": {"weight": 10, "outage": "hang"}},
        workload={"mode": "closed", "clients": 20},
    )
    clients, samples = asyncio.run(_drive(scenario, 1.0))
    tally = clients.tally.by_status
    assert {status for status, _ in tally} >= {200, 502, 504}
    assert not {status for status, _ in tally} & {CUT_OFF, TRANSPORT_ERROR}
    assert tally == _server_counts(samples)
    assert clients.sent == clients.tally.count() > 100
    assert samples["gwlab_in_flight_requests"][()] == 0


def test_open_loop_rate_limited_answers_are_counted_equally_on_both_sides():
    # A small bucket (5 tokens, 20 per second) under 200 requests per second.
    scenario = _scenario(
        limiter={"rate": 20, "burst": 5},
        providers={"p1": {"weight": 1, "latency": 0.001}},
        workload={"mode": "open", "rate": 200},
    )
    clients, samples = asyncio.run(_drive(scenario, 1.0))
    tally = clients.tally
    limited = tally.by_status[429, NO_PROVIDER]
    assert limited == samples["gwlab_rate_limited_total"][()] == tally.count([429]) > 0
    assert tally.by_status == _server_counts(samples)
    assert tally.count([200]) > 0
    assert clients.requested_rate == 200
    assert clients.achieved_rate == clients.sent / clients.elapsed


def test_requests_unanswered_after_the_grace_count_as_499():
    # Every call hangs for 30 s: nothing is answered, so every request sent is cut off.
    scenario = _scenario(
        gateway={"timeout": 30},
        providers={"p1": {"weight": 1, "outage": "hang"}},
        workload={"mode": "closed", "clients": 5},
    )

    async def scenario_run():
        gateway = Gateway(scenario, seed=3)
        await gateway.start(port=0, metrics_port=0)
        clients = LoadGenerator(gateway.url, scenario.workload, grace=0.2)
        try:
            await clients.start()
            await asyncio.sleep(0.3)
            began = time.monotonic()
            await clients.stop()
            stopping = time.monotonic() - began
        finally:
            await gateway.stop(grace=0)
        in_flight = gateway.metrics.registry.get_sample_value("gwlab_in_flight_requests")
        return clients, stopping, in_flight

    clients, stopping, in_flight = asyncio.run(scenario_run())
    # Each closed-loop client has exactly one request in flight, and none is ever answered.
    assert dict(clients.tally.by_status) == {(CUT_OFF, NO_PROVIDER): 5}
    assert clients.sent == 5
    assert clients.tally.latency.count == 0
    assert 0.2 <= stopping < 0.2 + 3.0
    assert in_flight == 0


def test_stop_is_idempotent_and_a_second_start_is_a_no_op():
    scenario = _scenario(providers={"p1": {"weight": 1, "latency": 0.001}},
                         workload={"mode": "closed", "clients": 1})

    async def twice():
        gateway = Gateway(scenario, seed=3)
        await gateway.start(port=0, metrics_port=0)
        clients = LoadGenerator(gateway.url, scenario.workload)
        try:
            await clients.start()
            processes = clients.processes
            await clients.start()
            assert clients.processes == processes
            await asyncio.sleep(0.2)
            await clients.stop()
            counted = clients.tally.count()
            await clients.stop()
        finally:
            await gateway.stop()
        return clients, counted, processes

    clients, counted, processes = asyncio.run(twice())
    assert clients.tally.count() == counted == clients.sent > 0
    assert [p.exitcode for p in processes] == [0]


def test_apply_before_the_start_replaces_the_workload_and_its_split_over_the_workers():
    clients = LoadGenerator("http://h:1/", WorkloadConfig(mode="open", rate=3000.0), seed=9, workers=2)
    clients.apply(WorkloadConfig(mode="closed", clients=5, think_time=0.1))
    assert [(p.mode, p.clients, p.think_time, p.index) for p in clients.plans] == [
        ("closed", 3, 0.1, 0), ("closed", 2, 0.1, 1)]
    assert clients.requested_rate is None
    clients.apply(WorkloadConfig(mode="open", rate=500.0))
    assert [(p.mode, p.rate) for p in clients.plans] == [("open", 250.0), ("open", 250.0)]
    assert clients.requested_rate == 500.0


def test_every_worker_plan_carries_the_stream_share_the_token_cap_and_the_prompt():
    clients = LoadGenerator("http://h:1/", WorkloadConfig(mode="open", rate=3000.0), seed=9, workers=2)
    assert {(p.stream_share, p.max_tokens, p.prompt_tokens) for p in clients.plans} == {(0.0, 0, 2)}
    clients.apply(WorkloadConfig(mode="open", rate=3000.0, stream_share=0.25, max_tokens=64, prompt_tokens=300))
    assert [(p.stream_share, p.max_tokens, p.prompt_tokens) for p in clients.plans] == [(0.25, 64, 300)] * 2


class _Books:
    """What a driver reports: the requests it sent and every answer."""

    def __init__(self) -> None:
        self.sent = 0
        self.saturated = 0
        self.answers: list[tuple[float, float, int, str]] = []
        self.llm: list[tuple[int, float | None, int]] = []
        """Each answer's status, time to first token and output tokens."""

    def on_sent(self) -> None:
        self.sent += 1

    def on_saturated(self) -> None:
        self.saturated += 1

    def on_answer(self, scheduled: float, done: float, status: int, provider: str, ttft: float | None,
                  tokens: int) -> None:
        self.answers.append((scheduled, done, status, provider))
        self.llm.append((status, ttft, tokens))


async def _with_driver(scenario: config.Scenario, script):
    """A gateway for ``scenario`` and a driver of it (seed 4, stream ``arrivals/0``) in this
    loop; ``script(gateway, driver, books)`` drives it. Returns the driver and its books."""
    gateway = Gateway(scenario, seed=3)
    await gateway.start(port=0, metrics_port=0)
    books = _Books()
    try:
        async with open_session() as session:
            driver = Driver(session, gateway.url, 4, "arrivals/0", asyncio.get_running_loop().time,
                            books.on_sent, books.on_answer, books.on_saturated)
            await script(gateway, driver, books)
    finally:
        await gateway.stop(grace=0)
    return driver, books


async def _until(condition) -> None:
    """Poll ``condition`` (real requests over a socket take real time); fail after 5 s."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


def test_driver_open_loop_draws_its_named_stream_and_redraws_at_a_rate_change():
    scenario = _scenario(providers={"p1": {"weight": 1, "latency": 0.0}})
    cut = []
    before_change = []

    async def script(gateway, driver, books):
        driver.apply(WorkloadConfig(mode="open", rate=200.0))
        await asyncio.sleep(0.3)
        before_change.append(books.sent)
        driver.apply(WorkloadConfig(mode="open", rate=400.0))
        await asyncio.sleep(0.3)
        cut.append(await driver.stop(grace=1.0))

    driver, books = asyncio.run(_with_driver(scenario, script))
    assert cut == [0] and books.sent == len(books.answers)
    assert {status for _, _, status, _ in books.answers} == {200}
    assert all(done >= scheduled for scheduled, done, _, _ in books.answers)
    scheduled = sorted(s for s, _, _, _ in books.answers)
    n = before_change[0]
    # At least 0.3 s at 200/s, then at 400/s: 60 and 120 expected; fewer than 10 has
    # probability below 1e-15. The replay below needs a few arrivals on each side.
    assert n >= 10 and len(scheduled) - n >= 10
    # Each arrival is the previous one plus the next draw of stream "arrivals/0", bit for bit.
    # The draw of the arrival pending at the change is spent; the first one after it starts
    # from the (unrecorded) moment of the change.
    rng = stream(4, "arrivals/0")
    rng.random()
    for i in range(1, n):
        assert scheduled[i] == next_arrival(scheduled[i - 1], 200.0, rng)
    rng.random()
    rng.random()
    assert scheduled[n] > scheduled[n - 1]
    for i in range(n + 1, len(scheduled)):
        assert scheduled[i] == next_arrival(scheduled[i - 1], 400.0, rng)


def test_driver_closed_loop_retires_surplus_clients_as_they_finish():
    scenario = _scenario(providers={"p1": {"weight": 1, "latency": 0.05}})

    async def script(gateway, driver, books):
        driver.apply(WorkloadConfig(mode="closed", clients=6))
        await _until(lambda: gateway.snapshot().in_flight == 6)
        driver.apply(WorkloadConfig(mode="closed", clients=2))
        assert driver.running == 6
        await _until(lambda: driver.running == 2)
        assert gateway.snapshot().in_flight <= 2
        # The two kept clients go on: each sends its next request after its first answer,
        # which may come after the last surplus client retires.
        await _until(lambda: books.sent >= 8)
        assert gateway.snapshot().in_flight <= 2
        assert await driver.stop(grace=1.0) == 0

    driver, books = asyncio.run(_with_driver(scenario, script))
    assert driver.running == 0
    assert books.sent == len(books.answers) >= 8


def test_driver_stop_cuts_off_what_the_grace_leaves_and_sends_nothing_more():
    # Every call hangs for 30 s: no request is ever answered.
    scenario = _scenario(gateway={"timeout": 30}, providers={"p1": {"weight": 1, "outage": "hang"}})
    results = []

    async def script(gateway, driver, books):
        driver.apply(WorkloadConfig(mode="closed", clients=4))
        await _until(lambda: gateway.snapshot().in_flight == 4)
        driver.apply(WorkloadConfig(mode="closed", clients=1))
        driver.apply(WorkloadConfig(mode="closed", clients=6))
        await _until(lambda: gateway.snapshot().in_flight == 6)
        began = time.monotonic()
        results.append(await driver.stop(grace=0.2))
        results.append(time.monotonic() - began)
        results.append(await driver.stop(grace=0.2))
        driver.apply(WorkloadConfig(mode="open", rate=1000.0))
        await asyncio.sleep(0.05)

    driver, books = asyncio.run(_with_driver(scenario, script))
    cut, stopping, again = results
    # Four clients wait on their first request; of the two more asked for, none retired.
    assert (cut, books.sent, books.answers, again, driver.running) == (6, 6, [], 0, 0)
    assert 0.2 <= stopping < 0.2 + 1.0


def test_the_in_flight_cap_is_split_over_the_workers_and_bounds_their_number():
    workload = WorkloadConfig(mode="open", rate=3000.0, max_in_flight=5)
    plans = plan("http://h:1", workload, 9, 2)
    assert [p.max_in_flight for p in plans] == [3, 2]
    assert [p.rate for p in plans] == [1800.0, 1200.0]  # in proportion: both saturate together
    # A cap lowered below the workers already running (an event, a PATCH): the rate follows
    # the cap, so a worker without a share sends nothing instead of dropping all it draws.
    fewer = plan("http://h:1", WorkloadConfig(mode="open", rate=3000.0, max_in_flight=1), 9, 2)
    assert [(p.max_in_flight, p.rate) for p in fewer] == [(1, 3000.0), (0, 0.0)]
    assert worker_count(WorkloadConfig(mode="open", rate=10000.0, max_in_flight=3), 8) == 3


HANG = {"gateway": {"timeout": 30}, "providers": {"p1": {"weight": 1, "outage": "hang"}}}
"""Every call hangs for 30 s: nothing is answered while a test runs."""


def test_driver_sends_no_more_than_its_cap_and_counts_the_arrivals_it_could_not_send():
    counts = []

    async def script(gateway, driver, books):
        driver.apply(WorkloadConfig(mode="open", rate=400.0, max_in_flight=7))
        await _until(lambda: books.saturated >= 20)
        counts.append((books.sent, gateway.snapshot().in_flight))
        await driver.stop(grace=0)

    driver, books = asyncio.run(_with_driver(_scenario(**HANG), script))
    assert counts == [(7, 7)]
    assert books.sent == 7 and books.answers == []


def test_overdue_arrivals_never_go_out_in_a_burst_beyond_the_cap():
    # The loop is starved for 0.5 s (a busy CPU): about 500 arrivals fall due meanwhile.
    # The cap is full after the first 20 of them; the rest are counted, not sent.
    counts = []

    async def script(gateway, driver, books):
        driver.apply(WorkloadConfig(mode="open", rate=1000.0, max_in_flight=20))
        await asyncio.sleep(0)  # the arrivals task takes its start time and waits
        time.sleep(0.5)
        await asyncio.sleep(0)
        counts.append(books.sent + books.saturated)
        await _until(lambda: books.sent + books.saturated >= 400)
        counts.append((books.sent, gateway.snapshot().in_flight))
        await driver.stop(grace=0)

    driver, books = asyncio.run(_with_driver(_scenario(**HANG), script))
    # One look at the loop after the stall handles a single arrival, not the ~500 overdue.
    assert counts[0] <= 1 and counts[1:] == [(20, 20)]


def test_an_overdue_arrival_under_the_cap_is_sent_late_and_its_latency_counts_from_its_schedule():
    scenario = _scenario(providers={"p1": {"weight": 1, "latency": 0.0}})
    stalled = []

    async def script(gateway, driver, books):
        driver.apply(WorkloadConfig(mode="open", rate=200.0))
        await asyncio.sleep(0)  # the arrivals task takes its start time and waits
        began = asyncio.get_running_loop().time()
        time.sleep(0.3)
        stalled.append(began + 0.3)
        await _until(lambda: len(books.answers) >= 60)
        await driver.stop(grace=1.0)

    driver, books = asyncio.run(_with_driver(scenario, script))
    assert books.saturated == 0 and books.sent == len(books.answers)
    overdue = [(s, d) for s, d, _, _ in books.answers if s < stalled[0] - 0.1]
    assert len(overdue) >= 5  # at 200/s for 0.2 s, 40 expected; fewer than 5 has odds below 1e-10
    assert all(done - scheduled >= stalled[0] - scheduled > 0.1 for scheduled, done in overdue)


def test_the_cap_is_a_total_over_the_workers_and_what_it_refuses_is_counted():
    scenario = _scenario(**HANG, workload={"mode": "open", "rate": 300, "max_in_flight": 9})

    async def run():
        gateway = Gateway(scenario, seed=3)
        await gateway.start(port=0, metrics_port=0)
        clients = LoadGenerator(gateway.url, scenario.workload, seed=3, workers=2, grace=0.0)
        try:
            await clients.start()
            await _until(lambda: clients.saturated >= 20)
            in_flight = gateway.snapshot().in_flight
            await clients.stop()
        finally:
            await gateway.stop(grace=0)
        return clients, in_flight

    clients, in_flight = asyncio.run(run())
    assert in_flight == 9 == clients.sent
    assert dict(clients.tally.by_status) == {(CUT_OFF, NO_PROVIDER): 9}
    assert clients.lost == []


# -- LLM traffic: streams, their time to first token, output tokens --------------------------

TTFT = 0.05
TOKENS = 6


def _llm(workload: dict | None = None, **provider) -> config.Scenario:
    """One provider ``p1`` with fixed token timing: the first token after :data:`TTFT`, then
    one every 10 ms, :data:`TOKENS` of them (each call lasts 0.1 s); breaker off."""
    fields = {"ttft": TTFT, "decode_rate": 100.0, "output_tokens": float(TOKENS), **provider}
    return _scenario(breaker={"enabled": False}, providers={"p1": fields},
                     workload={"mode": "closed", "clients": 5, **(workload or {})})


async def _answered(scenario: config.Scenario, answers: int, grace: float = 1.0):
    """Drive ``scenario``'s gateway with its workload through a driver in this loop until
    ``answers`` answers came; then stop it (nothing cut off). Returns the driver, its books
    and the gateway's metrics."""
    samples = {}

    async def script(gateway, driver, books):
        driver.apply(scenario.workload)
        await _until(lambda: len(books.answers) >= answers)
        assert await driver.stop(grace) == 0
        samples.update(await _scrape(gateway))

    driver, books = await _with_driver(scenario, script)
    return driver, books, samples


def test_a_stream_share_of_1_streams_every_request_and_reports_ttft_and_usage_tokens():
    driver, books, samples = asyncio.run(_answered(_llm({"stream_share": 1.0}), 30))
    assert books.sent == len(books.answers) >= 30
    assert {status for status, _, _ in books.llm} == {200}
    # Every request streamed: the gateway timed the first token of each.
    assert samples["gwlab_time_to_first_token_seconds_count"][(("provider", "p1"),)] == books.sent
    for (scheduled, done, _, _), (_, ttft, tokens) in zip(books.answers, books.llm):
        # Late, never early: the first token leaves the gateway TTFT after the call starts,
        # which is after the request was due.
        assert TTFT <= ttft <= done - scheduled
        assert tokens == TOKENS  # from the usage frame: the content came in fewer frames
    # A share of 1 draws nothing from the stream that decides.
    assert driver._stream_rng.getstate() == stream(4, "workload/stream").getstate()


def test_a_share_between_0_and_1_is_drawn_once_per_request_sent_from_the_named_stream():
    share = 0.5
    scenario = _llm({"stream_share": share, "clients": 10}, ttft=0.001, decode_rate=1000.0)
    driver, books, _ = asyncio.run(_answered(scenario, 400))
    n = books.sent
    assert n == len(books.answers)
    streamed = sum(ttft is not None for _, ttft, _ in books.llm)
    # The i-th request sent streams when the i-th draw of "workload/stream" is below the share.
    rng = stream(4, "workload/stream")
    assert streamed == sum(rng.random() < share for _ in range(n))
    # Binomial(n, 1/2): beyond 4 standard deviations once in 15,000 runs.
    assert abs(streamed - n * share) <= 4 * math.sqrt(n * share * (1 - share))
    # Tokens of answers whole and streamed alike: the whole ones from their body's usage.
    assert {(status, tokens) for status, _, tokens in books.llm} == {(200, TOKENS)}


def test_max_tokens_caps_every_answer_streamed_or_not():
    scenario = _llm({"stream_share": 0.5, "max_tokens": 4}, output_tokens=50.0, decode_rate=1000.0)
    _, books, _ = asyncio.run(_answered(scenario, 40))
    assert {(status, tokens) for status, _, tokens in books.llm} == {(200, 4)}
    kinds = {ttft is None for _, ttft, _ in books.llm}
    assert kinds == {True, False}  # 40 answers all of one kind: odds 2e-12


def test_a_stream_cut_by_an_error_frame_counts_apart_with_its_ttft_and_no_tokens():
    """After an error frame the stream's body ends as any other and its connection serves
    the next request: no request that follows is lost to it (a transport error), however
    soon it is sent."""
    workload = {"stream_share": 1.0, "mode": "open", "rate": 200.0}
    _, books, samples = asyncio.run(_answered(_llm(workload, stream_error_rate=1.0), 150))
    assert {(status, tokens) for status, _, tokens in books.llm} == {(STREAM_ERROR, 0)}
    assert all(ttft >= TTFT for _, ttft, _ in books.llm)
    code = samples["gwlab_requests_total"][(("code", "stream_error"), ("provider", "p1"))]
    assert code == books.sent == len(books.answers)


def test_a_fixed_reply_counts_its_tokens_live_whether_it_streams_or_not():
    """A provider without a length model answers its fixed reply, streamed whole after its
    latency: the live clients count its tokens from its usage, as the simulator does (see
    gwlab.summary.summarise)."""
    scenario = _scenario(providers={"p1": {"latency": 0.02}},
                         workload={"mode": "closed", "clients": 2, "stream_share": 0.5})
    _, books, _ = asyncio.run(_answered(scenario, 20))
    fixed = reply("p1")[1]
    assert {(status, tokens) for status, _, tokens in books.llm} == {(200, fixed)}
    streamed = [ttft for _, ttft, _ in books.llm if ttft is not None]
    assert streamed and all(ttft >= 0.02 for ttft in streamed)  # none of 20 streaming: odds 1e-6


@pytest.mark.parametrize("tokens", [1, 2, 3, 4, 5, 99, 1000, config.MAX_PROMPT_TOKENS])
def test_a_prompt_is_as_many_tokens_as_the_gateway_estimates(tokens):
    # The gateway's estimate: one token per four characters of the text, rounded up.
    text = prompt(tokens)
    assert ((len(text) + 3) // 4, (len(text) - 1) // 4) == (tokens, tokens - 1)  # and one character less is fewer
    body = request_body(True, config.MAX_OUTPUT_TOKENS, tokens)
    assert json.loads(body)["messages"] == [{"role": "user", "content": text}] and len(body) <= config.MAX_BODY


def test_the_live_clients_send_the_workloads_prompt_and_the_gateway_counts_it():
    scenario = _llm({"prompt_tokens": 37, "max_tokens": 4}, output_tokens=50.0, decode_rate=1000.0)
    _, books, samples = asyncio.run(_answered(scenario, 10))
    prompt_tokens = samples["gwlab_tokens_total"][(("kind", "prompt"), ("provider", "p1"))]
    assert prompt_tokens == 37 * len(books.answers)


def test_without_llm_traffic_the_request_is_body_byte_for_byte():
    assert request_body(False, 0) is BODY
    assert json.loads(request_body(False, 7)) == {**json.loads(BODY), "max_tokens": 7}
    assert json.loads(request_body(True, 0)) == {**json.loads(BODY), "stream": True,
                                                 "stream_options": {"include_usage": True}}


def _lines(*frames: bytes):
    """An answer's lines as aiohttp yields them: each event, then the blank line after it."""
    async def lines():
        for frame in frames:
            yield frame + b"\n"
            yield b"\n"
    return lines()


_ROLE = b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": null}'
_CONTENT = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi there"}}], "usage": null}'
_FINISH = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": null}'
_USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}}'
_ERROR = b'data: {"error": {"message": "provider p1 failed", "code": "provider_stream_error"}}'
_DONE = b"data: [DONE]"


@pytest.mark.parametrize("frames, expected", [
    ((_ROLE, _CONTENT, _CONTENT, _FINISH, _USAGE, _DONE), (200, True, 5)),
    ((_ROLE, _CONTENT, _FINISH, _DONE), (200, True, 0)),  # no usage frame: no count of tokens
    ((_ROLE, _CONTENT, _ERROR), (STREAM_ERROR, True, 0)),
    ((_ROLE, _CONTENT, _USAGE, _ERROR), (STREAM_ERROR, True, 0)),
    ((_ROLE, _ERROR), (STREAM_ERROR, False, 0)),
    ((_ROLE, _CONTENT, _FINISH, _USAGE), (TRANSPORT_ERROR, True, 5)),  # ended without [DONE]
    ((_ROLE, _CONTENT, b"data: {not json"), (TRANSPORT_ERROR, True, 0)),
    ((_ROLE, b"data: [1, 2]"), (TRANSPORT_ERROR, False, 0)),
    ((_ROLE, _CONTENT, b'data: "an error"'), (TRANSPORT_ERROR, True, 0)),
    ((_ROLE, _CONTENT, _DONE, _ERROR, b"data: {not json"), (200, True, 0)),  # nothing after [DONE] counts
    ((b": a comment", b"event: message", _CONTENT, _USAGE, _DONE), (200, True, 5)),
], ids=["usage", "no_usage", "error", "usage_then_error", "error_first", "no_done", "not_json", "not_an_object",
        "a_string", "after_done", "other_lines"])
def test_read_stream_tells_the_end_of_a_stream_its_first_content_and_its_tokens(frames, expected):
    ticks = iter(range(1, 100))
    status, first, tokens = asyncio.run(read_stream(_lines(*frames), lambda: next(ticks)))
    assert (status, first is not None, tokens) == expected
    if first is not None:  # the clock is read once, at the first frame with content
        assert first == 1 and next(ticks) == 2


async def _from_server(handler) -> list[tuple[int, float | None, int]]:
    """One streamed request of a driver to a server answering with ``handler``."""
    app = web.Application()
    app.router.add_post(PATH, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    books = _Books()
    try:
        async with open_session() as session:
            driver = Driver(session, f"http://127.0.0.1:{site.port}", 4, "arrivals/0",
                            asyncio.get_running_loop().time, books.on_sent, books.on_answer, books.on_saturated)
            driver.apply(WorkloadConfig(mode="closed", clients=1, stream_share=1.0))
            await _until(lambda: books.answers)
            await driver.stop(grace=0)
    finally:
        await runner.cleanup()
    return books.llm[:1]


async def _begin_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_ROLE + b"\n\n" + _CONTENT + b"\n\n")
    return response


def test_a_stream_whose_connection_drops_is_a_transport_error(caplog):
    async def drop(request):
        response = await _begin_stream(request)
        request.transport.close()  # no [DONE], no error frame: the chunked body never ends
        return response

    with caplog.at_level(logging.DEBUG, "gwlab.clients"):
        assert asyncio.run(_from_server(drop)) == [(TRANSPORT_ERROR, None, 0)]
    assert "request failed: Response payload is not completed" in caplog.text


def test_a_stream_line_longer_than_aiohttp_buffers_is_a_transport_error(caplog):
    async def long_line(request):
        response = await _begin_stream(request)
        # aiohttp buffers a line of twice its read buffer at most; then the stream ends well.
        long = b'data: {"choices": [], "padding": "' + b"x" * 2 * DEFAULT_CHUNK_SIZE + b'"}\n\n'
        with contextlib.suppress(ConnectionError):
            await response.write(long + _USAGE + b"\n\n" + _DONE + b"\n\n")
        return response

    with caplog.at_level(logging.DEBUG, "gwlab.clients"):
        assert asyncio.run(_from_server(long_line)) == [(TRANSPORT_ERROR, None, 0)]
    assert "unreadable stream: <LineTooLong" in caplog.text


@pytest.mark.parametrize("stream_error_rate", [0.0, 1.0])
def test_the_load_generators_summary_shows_the_streams_ttft_tokens_and_stream_errors(stream_error_rate):
    """Worker processes, as ``gwlab run`` runs them: their tallies reach the parent's
    summary with the streams' timing and tokens."""
    scenario = _llm({"stream_share": 1.0, "clients": 10}, stream_error_rate=stream_error_rate)

    async def run():
        gateway = Gateway(scenario, seed=3)
        await gateway.start(port=0, metrics_port=0)
        clients = LoadGenerator(gateway.url, scenario.workload, seed=3)
        try:
            await clients.start()
            await asyncio.sleep(1.0)
            await clients.stop()
            samples = await _scrape(gateway)
            end = gateway.snapshot()
        finally:
            await clients.stop()
            await gateway.stop()
        return summarise(clients.tally, mode="live", seed=3, scenario=scenario, duration=clients.elapsed,
                         sent=clients.sent, saturated=0, workloads=clients.workloads, end=end, trips={},
                         fallbacks={}, events_refused=0, retries={}), samples

    summary, samples = asyncio.run(run())
    answered = summary["offered"]
    assert answered == summary["admitted"] > 20  # 10 clients, 0.1 s a call, for 1 s: about 100
    # Every request streamed: every one has a time to first token, late and never early.
    assert summary["ttft"]["max"] <= summary["latency"]["max"]
    assert samples["gwlab_time_to_first_token_seconds_count"][(("provider", "p1"),)] == answered
    for q in ("p50", "p99", "max"):
        assert summary["ttft"][q] >= TTFT * (1 - RELATIVE_ERROR)  # the histogram's accuracy
    if stream_error_rate:
        assert summary["codes"] == {"stream_error": answered}
        assert "output_tokens" not in summary and "time_per_output_token" not in summary
    else:
        assert summary["codes"] == {"200": answered}
        assert summary["output_tokens"]["total"] == answered * TOKENS
        # From the first content frame to the end, both as late as the machine makes them:
        # no one-sided bound, but every stream of 6 tokens has one.
        assert summary["time_per_output_token"]["p50"] > 0


def test_workers_that_never_say_they_are_ready_fail_the_start_within_its_bound_and_are_ended(monkeypatch):
    # Workers stopped (SIGSTOP) as soon as they are spawned never report that they are ready.
    monkeypatch.setattr(config, "CHILD_START_TIMEOUT", 1.0)
    monkeypatch.setattr(config, "CHILD_EXIT_TIMEOUT", 1.0)

    async def start() -> tuple[float, list[int]]:
        clients = LoadGenerator("http://127.0.0.1:9", WorkloadConfig(mode="open", rate=6000.0), workers=2)

        async def stall() -> None:  # runs once start() awaits: every worker is spawned
            for process in clients.processes:
                os.kill(process.pid, signal.SIGSTOP)

        stalling = asyncio.create_task(stall())
        began = time.monotonic()
        with pytest.raises(ChildError) as raised:
            await clients.start()
        await stalling
        assert str(raised.value) == "load generator processes 0, 1 of 2 did not start within 1 s"
        return time.monotonic() - began, [process.pid for process in clients.processes]

    elapsed, pids = asyncio.run(start())
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)
    assert config.CHILD_START_TIMEOUT <= elapsed < config.CHILD_START_TIMEOUT + 2 * config.CHILD_EXIT_TIMEOUT


SIGINT_AS_A_WORKER_STARTS = """
import multiprocessing, os, signal
from gwlab.children import start_ignoring_sigint

class Starting(multiprocessing.get_context("spawn").Process):
    def start(self):
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C as the process starts
        super().start()

if __name__ == "__main__":
    process = Starting(target=os.getpid, daemon=True)
    try:
        start_ignoring_sigint(process)
    except KeyboardInterrupt:
        print("interrupted")
    process.join()
"""
"""A process's first worker started as a Ctrl-C comes: the first, as multiprocessing's own
resource tracker starts with it."""


def test_a_ctrl_c_while_a_worker_starts_reaches_the_parent(tmp_path):
    # The parent ignored SIGINT while it started a worker (which starts ignoring it): one
    # that came then was lost, and a run stopped by one Ctrl-C as its workers started ran on.
    script = tmp_path / "starting.py"
    script.write_text(SIGINT_AS_A_WORKER_STARTS)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert (done.returncode, done.stdout, done.stderr) == (0, "interrupted\n", "")
