"""The end of a live run (``gwlab run``, :func:`gwlab.cli._run`): the clients stop sending and
the gateway alone decides which of the requests in flight answer within the grace
(:meth:`gwlab.server.Gateway.cut_off_after`); the clients wait a margin longer
(:data:`gwlab.config.CUT_OFF_MARGIN`), so that each request counts alike on both sides,
however late either side's loop runs at the grace's end."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import pytest

from gwlab import config
from gwlab.clients import Driver, open_session
from gwlab.config import WorkloadConfig
from gwlab.server import Gateway
from gwlab.stats import CUT_OFF

pytestmark = pytest.mark.timeout(60)

GRACE = 0.5
SENDING = 1.0
"""Seconds of sending before the stop."""


async def _counted(scenario: dict, workload: WorkloadConfig, sending: float,
                   lag: float = 0.0) -> tuple[Counter, Counter]:
    """Drive a gateway running ``scenario`` by ``workload`` for ``sending`` seconds, then end
    the run as ``gwlab run`` does while the loop stalls for ``lag`` seconds across the
    grace's end. The answers counted by the gateway and by its clients, by status, each
    cut-off as :data:`~gwlab.stats.CUT_OFF`."""
    gateway = Gateway(config.from_dict(scenario, "test scenario"), seed=1)
    await gateway.start(port=0, metrics_port=0)
    loop = asyncio.get_running_loop()
    client: Counter = Counter()
    try:
        async with open_session() as http:
            driver = Driver(http, gateway.url, 1, "arrivals/0", time.monotonic, lambda: None,
                            lambda scheduled, done, status, *_: client.update([status]), lambda: None)
            driver.apply(workload)
            await asyncio.sleep(sending)
            loop.call_later(GRACE - lag / 2, time.sleep, lag)  # the loop stalls across the grace's end
            cut, _ = await asyncio.gather(driver.stop(GRACE + config.CUT_OFF_MARGIN), gateway.cut_off_after(GRACE))
            client[CUT_OFF] += cut
            async with asyncio.timeout(5):
                while gateway.snapshot().in_flight:
                    await asyncio.sleep(0.01)
    finally:
        await gateway.stop(grace=0)
    served: Counter = Counter()
    for (status, _), n in gateway.metrics.answers.items():
        served[status] += n
    return +served, +client


async def _end_of_run(lag: float, streaming: bool) -> tuple[Counter, Counter]:
    """:func:`_counted` at 300 requests a second for :data:`SENDING` seconds, the calls
    taking as long as the grace (one in ten three times that), or streams of about twice the
    grace."""
    providers = ({"p1": {"weight": 9.0, "latency": GRACE}, "p2": {"weight": 1.0, "latency": 3 * GRACE}}
                 if not streaming else {"p1": {"ttft": GRACE / 2, "decode_rate": 20.0, "output_tokens": 10.0}})
    workload = WorkloadConfig(mode="open", rate=300.0, max_in_flight=10_000, stream_share=1.0 if streaming else 0.0)
    return await _counted({"providers": providers, "limiter": {"rate": 10_000.0, "burst": 10_000.0}}, workload,
                          SENDING, lag)


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("lag", [0.0, 0.01, 0.1, 0.4])
def test_the_requests_in_flight_at_the_end_count_alike_for_the_gateway_and_its_client(lag, streaming):
    served, client = asyncio.run(_end_of_run(lag, streaming))
    assert served == client
    assert served[200] > 0 and served[CUT_OFF] > 0


BETWEEN_TWO_WAITS = {
    "retried": ({"providers": {"p1": {"latency": 0.6 * GRACE, "error_rate": 1.0}},
                 "retry": {"attempts": 3, "base_delay": 0.001, "max_delay": 0.001, "jitter": "none"},
                 "breaker": {"enabled": False}}, 1, Counter({CUT_OFF: 1})),
    "queued": ({"providers": {"p1": {"latency": 0.6 * GRACE, "capacity": 1, "queue": 1}}}, 2,
               Counter({200: 1, CUT_OFF: 1})),
}
"""Scenarios whose last handler in flight goes from one wait to the next within the grace:
a call failing after 0.6 of it, which the gateway retries (one client), or a call queued
for the slot of another that ends then (two clients); the closed loop's clients, and what
each side counts."""


@pytest.mark.parametrize("case", BETWEEN_TWO_WAITS)
def test_a_request_between_two_waits_as_the_grace_runs_is_still_cut_off_at_its_end(case):
    # For an instant between two waits no handler waited: the cut-off returned then, and the
    # retry (the queued call) ran past the grace to its 502 (its 200).
    scenario, clients, counted = BETWEEN_TWO_WAITS[case]
    workload = WorkloadConfig(mode="closed", clients=clients, think_time=0.0)
    served, client = asyncio.run(_counted(scenario, workload, 0.1 * GRACE))
    assert served == client == counted


LATE_PROVIDERS = {
    "whole": {"p1": {"latency": 20 * GRACE}},
    "streamed": {"p1": {"ttft": 0.2 * GRACE, "decode_rate": 2.0, "output_tokens": 20.0}},
}
"""Calls that would take 20 times the grace: whole, or streamed a token every half second after
a first token at a fifth of it."""


async def _late(providers: dict, late: float, stream: bool) -> tuple[float, BaseException | None, Counter]:
    """A gateway running ``providers`` begins to cut off with nothing in flight (so
    :meth:`~gwlab.server.Gateway.cut_off_after` returns at once); ``late`` seconds later a
    request comes. When that request ended, counted from the cut-off's start, what its client
    saw go wrong (``None`` for a whole answer), and the gateway's answers by status."""
    gateway = Gateway(config.from_dict({"providers": providers}, "test scenario"), seed=1)
    await gateway.start(port=0, metrics_port=0)
    loop = asyncio.get_running_loop()
    failed = None
    try:
        began = loop.time()
        async with asyncio.timeout(1):
            await gateway.cut_off_after(GRACE)
        await asyncio.sleep(late)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        async with open_session() as http:
            try:
                async with asyncio.timeout(GRACE + 5):  # the call alone takes 10 s
                    async with http.post(f"{gateway.url}/v1/chat/completions", json=body) as response:
                        await response.read()
            except aiohttp.ClientError as error:
                failed = error
        ended = loop.time() - began
    finally:
        await gateway.stop(grace=0)
    served: Counter = Counter()
    for (status, _), n in gateway.metrics.answers.items():
        served[status] += n
    return ended, failed, +served


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("late", [0.0, 0.5 * GRACE, 2 * GRACE], ids=["at_once", "within_the_grace", "after_it"])
def test_a_request_that_comes_once_the_cut_off_has_begun_ends_by_the_grace(late, stream):
    # A request sent as the clients heard the stop can reach the gateway after its cut-off
    # found nothing to wait for: it waited out its whole call.
    ended, failed, served = asyncio.run(_late(LATE_PROVIDERS["streamed" if stream else "whole"], late, stream))
    assert isinstance(failed, aiohttp.ClientError)
    assert served == Counter({CUT_OFF: 1})
    # Cut off at the grace's end, or on arrival after it: long before its call's 10 s.
    assert ended < max(late, GRACE) + 1.0


def test_a_call_that_takes_no_time_still_answers_after_the_grace():
    ended, failed, served = asyncio.run(_late({"p1": {"latency": 0.0}}, 2 * GRACE, False))
    assert failed is None and served == Counter({200: 1})


def test_a_second_cut_off_brings_the_end_forward_and_never_back():
    async def ends(first: float, second: float) -> float:
        gateway = Gateway(config.from_dict({"providers": {"p1": {"latency": 10.0}}}, "test scenario"), seed=1)
        await gateway.start(port=0, metrics_port=0)
        loop = asyncio.get_running_loop()
        try:
            async with open_session() as http:
                body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                sent = asyncio.create_task(http.post(f"{gateway.url}/v1/chat/completions", json=body))
                async with asyncio.timeout(5):
                    while not gateway.snapshot().in_flight:
                        await asyncio.sleep(0.01)
                began = loop.time()
                async with asyncio.timeout(5):
                    await asyncio.gather(gateway.cut_off_after(first), gateway.cut_off_after(second))
                    with pytest.raises(aiohttp.ClientError):
                        await sent
                return loop.time() - began
        finally:
            await gateway.stop(grace=0)

    # Each ends near the shorter grace (0.2 s), not the longer (3 s).
    assert asyncio.run(ends(3.0, 0.2)) < 1.5
    assert asyncio.run(ends(0.2, 3.0)) < 1.5
