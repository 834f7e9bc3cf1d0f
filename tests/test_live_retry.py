"""Live clients that time out and retry, against a real gateway on loopback: the rules the
simulator follows (:class:`gwlab.workload.ClientRetry`, :class:`gwlab.retry.AdaptiveThrottle`)
carried out by :class:`gwlab.clients.Driver` over real sockets, in the test's own loop, and
through the lab's recorder and the load generator's plans."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Callable

import aiohttp
import pytest

import gwlab.lab
from gwlab import config
from gwlab.breaker import State
from gwlab.clients import Driver, open_session
from gwlab.config import WorkloadConfig
from gwlab.loadgen import LoadGenerator
from gwlab.server import Gateway
from gwlab.stats import CLIENT_TIMEOUT, NO_PROVIDER, STREAM_ERROR, USER_OUTCOMES
from gwlab.streams import stream

pytestmark = pytest.mark.timeout(60)

SEED = 4
SLACK = 0.2
"""Seconds a timer of the test's loop may fire late on a loaded two-core machine, at most
(asyncio never fires one early by more than its clock's resolution)."""


class _Books:
    """What a driver reports, with the clock's reading at each attempt sent."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.sent: list[float] = []
        self.answers: list[tuple[float, float, int, str]] = []
        self.users: list[tuple[str, int]] = []

    def on_sent(self) -> None:
        self.sent.append(self.clock())

    def on_answer(self, scheduled: float, done: float, status: int, provider: str, ttft: float | None,
                  tokens: int) -> None:
        self.answers.append((scheduled, done, status, provider))

    def on_user(self, outcome: str, attempts: int) -> None:
        self.users.append((outcome, attempts))

    def ended(self) -> list[tuple[str, int]]:
        """The user requests that ended before the stop."""
        return [user for user in self.users if user[0] != "cut_off"]


class _Run:
    """A gateway for a scenario and a driver of it (seed :data:`SEED`) in this loop, stopped
    once ``enough(books)`` holds; what came of it."""

    def __init__(self, books: _Books, cut: int, gateway: Gateway, stopping: float) -> None:
        self.books, self.cut, self.gateway, self.stopping = books, cut, gateway, stopping
        self.served = Counter({key: n for key, n in gateway.metrics.answers.items() if n})
        """The gateway's answers by (status, provider), 499s included: every attempt it saw."""


async def _drive(scenario: config.Scenario, workload: WorkloadConfig, enough: Callable[[_Books], bool], *,
                 grace: float = 2.0, session: aiohttp.ClientSession | None = None, follow_users: bool = False) -> _Run:
    gateway = Gateway(scenario, seed=3)
    await gateway.start(port=0, metrics_port=0)
    clock = asyncio.get_running_loop().time
    books = _Books(clock)
    try:
        async with session or open_session() as http:
            driver = Driver(http, gateway.url, SEED, "arrivals/0", clock, books.on_sent, books.on_answer,
                            lambda: None, on_user=books.on_user, follow_users=follow_users)
            driver.apply(workload)
            async with asyncio.timeout(20):
                while not enough(books):
                    await asyncio.sleep(0.01)
            began = time.monotonic()
            cut = await driver.stop(grace)
            stopping = time.monotonic() - began
            async with asyncio.timeout(5):  # the gateway ends the calls of the last clients that left
                while gateway.snapshot().in_flight:
                    await asyncio.sleep(0.01)
    finally:
        await gateway.stop(grace=0)
    return _Run(books, cut, gateway, stopping)


def _scenario(*, breaker: bool = False, **providers: dict[str, Any]) -> config.Scenario:
    return config.from_dict({"breaker": {"enabled": breaker}, "providers": providers}, "test scenario")


FAILING = _scenario(p1={"latency": 0.005, "error_rate": 1.0})
SLOW = _scenario(p1={"latency": 1.0})
"""Every call takes a second."""
STREAM_FAILS = _scenario(p1={"ttft": 0.01, "decode_rate": 1000.0, "output_tokens": 5.0, "stream_error_rate": 1.0})
"""Every stream fails after its first token."""
HEALTHY = _scenario(p1={"latency": 0.005})


def _closed(clients: int = 4, **fields: Any) -> WorkloadConfig:
    return WorkloadConfig(mode="closed", clients=clients, think_time=0.0, **fields)


# Each case: a scenario, its clients, what every user request that ended before the stop
# came to (outcome, attempts), and the (status, provider) of every answer the clients saw.
CASES = {
    "fixed_retries_a_failure_twice": (FAILING, _closed(retry_policy="fixed", retries=2, retry_delay=0.01),
                                      ("failed", 3), {(502, "p1")}),
    "retries_end_at_the_first_success": (HEALTHY, _closed(retry_policy="exponential_jitter"), ("ok", 1),
                                         {(200, "p1")}),
    "a_stream_that_failed_after_its_first_byte_is_not_retried": (
        STREAM_FAILS, _closed(retry_policy="fixed", retry_delay=0.01, stream_share=1.0), ("failed", 1),
        {(STREAM_ERROR, "p1")}),
    "timed_out_attempts_are_retried_and_end_timed_out": (
        SLOW, _closed(retry_policy="fixed", retries=2, retry_delay=0.01, timeout=0.2), ("timed_out", 3),
        {(CLIENT_TIMEOUT, NO_PROVIDER)}),
    "a_timeout_without_retries_ends_at_the_first": (
        SLOW, _closed(timeout=0.2), ("timed_out", 1), {(CLIENT_TIMEOUT, NO_PROVIDER)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_user_request_makes_the_attempts_its_policy_allows(case):
    scenario, workload, ended, answers = CASES[case]
    run = asyncio.run(_drive(scenario, workload, lambda books: len(books.ended()) >= 8))
    books = run.books
    assert set(books.ended()) == {ended}
    assert {(status, provider) for _, _, status, provider in books.answers} == answers
    # Every attempt sent was answered (the grace outlasts each) and reached the gateway once,
    # and every one belongs to a user request, ended or cut off by the stop.
    assert run.cut == 0
    assert len(books.sent) == len(books.answers) == sum(attempts for _, attempts in books.users)
    assert sum(run.served.values()) == len(books.sent)
    assert {outcome for outcome, _ in books.users} <= {ended[0], "cut_off"}
    assert len([1 for outcome, _ in books.users if outcome == "cut_off"]) <= workload.clients


def test_a_client_that_times_out_leaves_its_call_running_and_the_gateway_counts_499_when_it_is_done():
    """DESIGN, "Retries and fallbacks": an attempt given up at the client's timeout is served
    on, its call running its course (a second), and counted 499 when its answer finds no one;
    its provider did the work, so its calls count the successes. The simulated gateway does
    the same (its ``user_requests.wasted``)."""
    scenario = config.merge(SLOW, {"breaker": {"enabled": True, "failure_threshold": 1}})
    workload = _closed(retry_policy="fixed", retries=2, retry_delay=0.05, timeout=0.2)
    run = asyncio.run(_drive(scenario, workload, lambda books: len(books.ended()) >= 4))
    timed_out = [(scheduled, done) for scheduled, done, status, _ in run.books.answers if status == CLIENT_TIMEOUT]
    assert len(timed_out) == len(run.books.answers) >= 12
    # An attempt times out 0.2 s after its sending, which comes after its schedule once the
    # loop wakes it (a retry's wait is a timer too): two timers, each late by SLACK at most.
    for scheduled, done in timed_out:
        assert 0.2 - 1e-6 <= done - scheduled <= 0.2 + 2 * SLACK
    # Each attempt's call is served to its end, and found no one: a 499 (the stop's grace cut
    # off those still running then, also 499s, without their provider's outcome).
    assert set(run.served) == {(499, "p1")} and run.served[499, "p1"] == len(timed_out)
    assert 0 < run.gateway.metrics.attempts[200, "p1"] <= len(timed_out)
    snapshot = run.gateway.snapshot()
    assert snapshot.in_flight == 0 and snapshot.providers["p1"].state is State.HEALTHY


def test_openai_sdk_waits_the_gateways_retry_after_before_its_retry():
    """One client against a bucket of one token refilled 10 times a second: every other
    attempt is refused (429) with the exact wait in ``retry-after-ms``, and the SDK's rule
    waits that long before the retry, not its own backoff (0.375 s at least). The wait is
    measured on the driver's clock, from the answer to the next attempt sent; ``SLACK`` bounds
    how late it may be."""
    scenario = config.merge(HEALTHY, {"limiter": {"rate": 10.0, "burst": 1.0}})
    heard: list[tuple[int, float]] = []

    async def on_request_end(session, context, params) -> None:
        ms = params.response.headers.get("retry-after-ms")
        heard.append((params.response.status, float(ms) / 1000 if ms else 0.0))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)

    async def main():
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trace_configs=[trace])
        return await _drive(scenario, _closed(1, retry_policy="openai_sdk"), lambda books: len(books.users) >= 10,
                            session=session)

    run = asyncio.run(main())
    books = run.books
    statuses = [status for _, _, status, _ in books.answers]
    assert [status for status, _ in heard] == statuses and set(statuses) == {200, 429}
    assert ("ok", 2) in books.users  # a 429, then a retry admitted
    waited = 0
    for (_, done, status, _), (_, retry_after), sent in zip(books.answers, heard, books.sent[1:]):
        if status == 429:
            assert 0 < retry_after <= 0.1
            assert retry_after - 1e-6 <= sent - done <= retry_after + SLACK
            waited += 1
    assert waited >= 5


def test_exponential_jitter_draws_its_waits_from_the_named_stream():
    """One client, a provider that always fails at once: each user request's two retries
    wait the next draws of the stream ``workload/retry``, in order, to the clock's
    resolution (a retry counts its time from when it was due)."""
    workload = _closed(1, retry_policy="exponential_jitter", retries=2, retry_delay=0.01, retry_max_delay=0.015)
    run = asyncio.run(_drive(config.merge(FAILING, {"providers": {"p1": {"latency": 0.0}}}), workload,
                             lambda books: len(books.users) >= 5, grace=0.0))
    answers, rng = run.books.answers, stream(SEED, "workload/retry")
    assert [attempts for _, attempts in run.books.ended()] == [3] * len(run.books.ended())
    for first in range(0, 3 * len(run.books.ended()), 3):
        for n in (0, 1):
            waited = answers[first + n + 1][0] - answers[first + n][1]
            assert waited == pytest.approx(rng.uniform(0.0, min(0.015, 0.01 * 2 ** n)), abs=1e-6)


def test_adaptive_throttling_rejects_attempts_that_never_reach_the_gateway():
    workload = _closed(retry_policy="adaptive", retries=2, retry_delay=0.01)
    run = asyncio.run(_drive(FAILING, workload, lambda books: len(books.users) >= 200))
    books = run.books
    outcomes = Counter(outcome for outcome, _ in books.users)
    assert outcomes["throttled"] > 0 and set(outcomes) <= {"throttled", "failed", "cut_off"}
    assert ("throttled", 0) in books.users  # a first attempt rejected: nothing sent
    # The gateway saw exactly the attempts sent: fewer than the three a user request makes
    # without throttling.
    sent = sum(attempts for _, attempts in books.users)
    assert sum(run.served.values()) == len(books.sent) == sent < 3 * len(books.users)


def test_clients_that_neither_time_out_nor_retry_report_no_user_requests():
    run = asyncio.run(_drive(HEALTHY, _closed(), lambda books: len(books.answers) >= 20))
    assert run.books.users == [] and len(run.books.sent) == len(run.books.answers)


def test_clients_told_to_follow_user_requests_from_the_start_report_each_request_as_one():
    """As a run whose scripted event will make its clients retry counts its requests before
    the event (:func:`gwlab.timeline.follows_users`)."""
    run = asyncio.run(_drive(HEALTHY, _closed(), lambda books: len(books.answers) >= 20, follow_users=True))
    ended = run.books.ended()
    assert set(ended) == {("ok", 1)} and len(ended) == len(run.books.answers) >= 20


def test_the_stop_cuts_off_the_user_requests_in_flight_and_those_waiting_to_retry():
    # The calls hang until the gateway's timeout, 1 s, well past the stop's grace: the gateway
    # serves them that long for clients that have left.
    hanging = config.from_dict({"gateway": {"timeout": 1.0}, "providers": {"p1": {"outage": "hang"}}})
    in_flight = asyncio.run(_drive(hanging, _closed(retry_policy="fixed"), lambda books: len(books.sent) == 4,
                                   grace=0.2))
    assert (in_flight.cut, in_flight.books.users, in_flight.books.answers) == (4, [("cut_off", 1)] * 4, [])
    # A first attempt failed, the retry 30 s away: the stop sends nothing more and ends at once.
    waiting = asyncio.run(_drive(FAILING, _closed(retry_policy="fixed", retry_delay=30.0),
                                 lambda books: len(books.answers) == 4))
    assert (waiting.cut, waiting.books.users) == (0, [("cut_off", 1)] * 4)
    assert waiting.stopping < 1.0 and len(waiting.books.sent) == 4


def test_the_lab_books_user_requests_in_its_bins_and_its_summaries():
    scenario = {"breaker": {"enabled": False}, "providers": {"p1": {"latency": 0.01, "error_rate": 1.0}},
                "workload": {"clients": 5, "retry_policy": "fixed", "retry_delay": 0.01}}
    lab = gwlab.lab.start(scenario, port=0, metrics_port=0)
    try:
        users = lab.run_for(1.0)["user_requests"]
        # Every user request that ended in the window made its three attempts, however many
        # of them came before it.
        assert users["outcomes"] == {**dict.fromkeys(USER_OUTCOMES, 0), "failed": users["offered"]} and \
            users["offered"] > 10
        assert users["attempts"] == 3 * users["offered"]
        columns = lab.timeseries().columns()
        assert sum(columns["user_requests"]) > 0
        assert {g for g in columns["user_goodput"] if g is not None} == {0.0}
    finally:
        gwlab.lab.stop()


def test_a_lab_whose_event_will_make_its_clients_retry_counts_user_requests_from_the_start():
    scenario = {"breaker": {"enabled": False}, "providers": {"p1": {"latency": 0.01}}, "workload": {"clients": 2},
                "events": [{"at": 600.0, "workload": {"retry_policy": "fixed"}}]}
    lab = gwlab.lab.start(scenario, port=0, metrics_port=0)
    try:
        summary = lab.run_for(1.0)
        users = summary["user_requests"]
        assert users["offered"] > 10 and users["outcomes"]["ok"] == users["offered"] == users["attempts"]
    finally:
        gwlab.lab.stop()


def test_the_dashboard_sets_how_the_lab_clients_retry_and_time_out():
    lab = gwlab.lab.start(clients=2, port=0, metrics_port=0)
    try:
        dashboard = lab.dashboard()
        assert dashboard.controls["workload", "retry_policy"].value == "none"
        dashboard.controls["workload", "retry_policy"].value = "adaptive"
        dashboard.controls["workload", "timeout"].value = 0.5
        assert (lab.scenario.workload.retry_policy, lab.scenario.workload.timeout) == ("adaptive", 0.5)
        assert dashboard.error.value == ""
        lab.configure({"workload": {"retry_policy": "fixed"}})
        assert dashboard.controls["workload", "retry_policy"].value == "fixed"
    finally:
        gwlab.lab.stop()


def test_every_worker_plan_carries_how_the_clients_time_out_and_retry():
    workload = WorkloadConfig(mode="open", rate=3000.0, retry_policy="adaptive", retries=4, retry_delay=0.2,
                              retry_max_delay=3.0, timeout=1.5, adaptive_k=1.5, adaptive_window=10)
    clients = LoadGenerator("http://h:1/", WorkloadConfig(), seed=9, workers=2, follow_users=True)
    assert [p.follow_users for p in clients.plans] == [True, True]
    clients.apply(workload)
    assert [p.follow_users for p in clients.plans] == [True, True]
    fields = ("retry_policy", "retries", "retry_delay", "retry_max_delay", "timeout", "adaptive_k", "adaptive_window")
    assert [tuple(getattr(p, f) for f in fields) for p in clients.plans] == \
        [tuple(getattr(workload, f) for f in fields)] * 2
