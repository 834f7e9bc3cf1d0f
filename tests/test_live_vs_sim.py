"""The live gateway and the simulator agree: one policy core, two shells.

The live run and the simulation of the same scenario draw different random numbers (the
clients' arrivals come from other streams, and real timing interleaves requests
differently), so their counts are not equal; but every request is an independent trial of
the same probabilities, so their shares must agree within sampling noise.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import aiohttp
import pytest

from gwlab import balancer, config, simulate
from gwlab.clients import BODY, PATH, PROVIDER_HEADER
from gwlab.loadgen import LoadGenerator
from gwlab.server import Gateway
from gwlab.stats import ADMITTED, CLIENT_TIMEOUT, STREAM_ERROR, Tally
from gwlab.summary import user_requests
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import serving

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)

SEED = 11
DURATION = 5.0
RATE = 200.0
SCENARIO = config.from_dict({
    "breaker": {"enabled": False},
    "providers": {
        "p1": {"weight": 70, "latency": 0.01, "error_rate": 0.05},
        "p2": {"weight": 20, "latency": 0.03, "error_rate": 0.10},
        "p3": {"weight": 10, "latency": 0.05, "error_rate": 0.20},
    },
    "workload": {"mode": "open", "rate": RATE},
}, "test scenario")


def _agree(x: int, n: int, y: int, m: int) -> bool:
    """Whether the shares x/n and y/m agree within 4 sigma.

    Under the hypothesis that both runs have the same probability p, the difference of the
    two shares has mean 0 and variance p(1-p)(1/n + 1/m); p is estimated by the pooled share
    (x+y)/(n+m). A normal variable strays beyond 4 sigma with probability 6e-5, so the
    handful of comparisons below fail by chance about once in several thousand runs. The
    price is resolution: at n = m = 1000 and p = 0.1 the band is +-5.4 percentage points, so
    the test catches a wrong weight or error rate of that size or more, not a subtle one."""
    p = (x + y) / (n + m)
    return abs(x / n - y / m) <= 4 * math.sqrt(p * (1 - p) * (1 / n + 1 / m))


async def _live_tally(scenario: config.Scenario = SCENARIO) -> tuple[Tally, float, Counter]:
    """A live run of ``scenario`` for :data:`DURATION` seconds, its clients in one worker
    process: their tally, the seconds they sent for, and the gateway's answers by (status,
    provider), 499s included."""
    gateway = Gateway(scenario, seed=SEED)
    await gateway.start(port=0, metrics_port=0)
    clients = LoadGenerator(gateway.url, scenario.workload, seed=SEED, workers=1)
    try:
        await clients.start()
        await asyncio.sleep(DURATION)
        await clients.stop()
    finally:
        await clients.stop()
        await gateway.stop()
    return clients.tally, clients.elapsed, Counter({key: n for key, n in gateway.metrics.answers.items() if n})


def test_live_and_simulated_runs_agree_on_status_and_provider_shares():
    """Breakers off, so every request picks its provider by weight and fails by that
    provider's error rate, independently of all others. Shares are of the answered admitted
    requests (200, 502, 504): the simulation cuts off the few calls in flight at its end
    (499), the live run lets them finish. The bucket (1000/s) never empties at 200/s."""
    live, elapsed, _ = asyncio.run(_live_tally())
    sim = simulate(SCENARIO, DURATION, SEED).timeseries().total()

    for tally, seconds in ((live, elapsed), (sim, DURATION)):
        # The Poisson count of arrivals, within 4 sigma of its mean (sigma = sqrt(mean)).
        expected = RATE * seconds
        assert abs(tally.count() - expected) <= 4 * math.sqrt(expected)
        assert tally.count([429, 504]) == 0
    assert live.count() == live.count(ADMITTED)

    n, m = live.count(ADMITTED), sim.count(ADMITTED)
    for status in (200, 502):
        assert _agree(live.count([status]), n, sim.count([status]), m), status
    for name in ("p1", "p2", "p3"):
        assert _agree(live.count(ADMITTED, name), n, sim.count(ADMITTED, name), m), name


TOKENS = 5
LLM_SCENARIO = config.from_dict({
    "breaker": {"enabled": False},
    "providers": {
        "p1": {"weight": 70, "ttft": 0.01, "decode_rate": 1000.0, "output_tokens": float(TOKENS),
               "error_rate": 0.05, "stream_error_rate": 0.1},
        "p2": {"weight": 30, "ttft": 0.03, "decode_rate": 1000.0, "output_tokens": float(TOKENS),
               "error_rate": 0.10, "stream_error_rate": 0.3},
    },
    "workload": {"mode": "open", "rate": RATE, "stream_share": 0.5},
}, "test scenario")
"""Half the requests stream; a stream fails after its first token at its provider's
``stream_error_rate`` (a stream_error), a request that does not stream at the same rate (a
502), and any request before its first token at the provider's ``error_rate`` (a 502)."""


def test_live_and_simulated_llm_traffic_agree_on_streams_stream_errors_and_shares():
    """Each request streams or not by its own draw (a different stream of the seed live and
    simulated), then meets the same provider probabilities: the shares agree within 4 sigma
    (see :func:`_agree`). A stream counts its time to first token once it has its first
    token (200 or stream_error), on both sides."""
    live, _, _ = asyncio.run(_live_tally(LLM_SCENARIO))
    sim = simulate(LLM_SCENARIO, DURATION, SEED).timeseries().total()
    assert live.count() == live.count(ADMITTED)
    n, m = live.count(ADMITTED), sim.count(ADMITTED)
    assert n > 500 and m > 500  # 1000 expected
    # Streams among the answers, and failures among the streams.
    assert _agree(live.ttft.count, n, sim.ttft.count, m)
    assert _agree(live.count([STREAM_ERROR]), live.ttft.count, sim.count([STREAM_ERROR]), sim.ttft.count)
    for status in (200, 502, STREAM_ERROR):
        assert _agree(live.count([status]), n, sim.count([status]), m), status
    for name in ("p1", "p2"):
        assert _agree(live.count(ADMITTED, name), n, sim.count(ADMITTED, name), m), name
    # Output tokens: every 200 carries 5, live and simulated. A stream_error's tokens are
    # known to the simulator (between 1 and 5), not to a live client (0).
    assert live.output_tokens == TOKENS * live.count([200])
    failed = sim.count([STREAM_ERROR])
    assert failed <= sim.output_tokens - TOKENS * sim.count([200]) <= TOKENS * failed


RETRY_SCENARIO = config.from_dict({
    "breaker": {"enabled": False},
    "providers": {
        "p1": {"weight": 70, "latency": 0.01, "error_rate": 0.2},
        "p2": {"weight": 30, "latency": 1.0},
    },
    "workload": {"mode": "open", "rate": 100.0, "retry_policy": "fixed", "retries": 2, "retry_delay": 0.05,
                 "timeout": 0.5},
}, "test scenario")
"""Clients that give an attempt up after 0.5 s and retry it twice: an attempt fails with
probability q = 0.44, at p2 (a client timeout, p2 answering in 1 s) or at p1 (a 502). The
providers have no capacity limit, so that what the gateway does with an attempt given up
cannot change the next ones' odds. p1 answers 0.49 s before the timeout: a machine busy
with other tests would have to stall the loop that long to turn its answer into a timeout."""


def test_live_and_simulated_clients_that_time_out_and_retry_agree_on_their_user_requests():
    """User requests are independent trials: each ends ok with probability 1 - q³, timed out
    with q² × 0.3, failed with q² × 0.14, and makes 1 + q + q² attempts on average. Outcome
    shares agree within 4 sigma (:func:`_agree`), live and simulated, and ``ok`` with the
    model; attempts per request agree within 4 sigma of a variable in [1, 3], whose
    variance is at most 1. Those in progress at the end are cut off on both sides (the live
    clients let an attempt in flight finish first); the model's share of ``ok`` is of those
    that ended."""
    live, _, served = asyncio.run(_live_tally(RETRY_SCENARIO))
    sim_result = simulate(RETRY_SCENARIO, DURATION, SEED)
    sim = sim_result.timeseries().total()
    live_users, sim_users = user_requests(live), sim_result.summary()["user_requests"]
    assert set(live_users) == set(sim_users) - {"wasted"}
    n, m = live_users["offered"], sim_users["offered"]
    assert n > 300 and m > 300  # 500 expected
    q = 0.3 + 0.7 * 0.2
    for outcome in ("ok", "timed_out", "failed", "cut_off"):
        assert _agree(live_users["outcomes"][outcome], n, sim_users["outcomes"][outcome], m), outcome
    for users, offered in ((live_users, n), (sim_users, m)):
        p, ended = 1 - q ** 3, offered - users["outcomes"]["cut_off"]  # the model is of requests that ended
        assert abs(users["outcomes"]["ok"] / ended - p) <= 4 * math.sqrt(p * (1 - p) / ended)
        assert users["outcomes"]["throttled"] == 0
    assert abs(live_users["attempts_per_request"] - sim_users["attempts_per_request"]) <= 4 * math.sqrt(1 / n + 1 / m)
    # Attempts as the clients saw them: each once in the codes, a client timeout under its own
    # name. Both gateways served those on, for no one: the live one counted each a 499 when
    # it wrote its answer (all at p2, which takes twice the timeout), the simulated one counts
    # them as wasted. A client whose loop stalled past its timeout may give up on an answer
    # already sent (at p1): the gateway counted that one by its status, the client alone
    # as a timeout. Each side counts every attempt once.
    assert live.count() == live_users["attempts"] and sim.count() == sim_users["attempts"]
    assert sum(served.values()) == live.count()
    unread = {key: n - live.count([key[0]], key[1]) for key, n in served.items() if key[0] != 499}
    assert min(unread.values()) >= 0
    assert served[499, "p1"] + served[499, "p2"] + sum(unread.values()) == live.count([CLIENT_TIMEOUT])
    assert served[499, "p2"] > 0
    assert sim_users["wasted"] > 0 and (499, "p2") not in sim.by_status


class LastProvider:
    """A custom policy: always the last eligible provider that has a weight."""

    def pick(self, choices, rng):
        return next((c for c in reversed(choices) if c.weight > 0), None)


@pytest.fixture
def last_provider(monkeypatch):
    """``last_provider`` registered in a private copy of the balancer registry."""
    monkeypatch.setattr(balancer, "_REGISTRY", dict(balancer._REGISTRY))
    balancer.register("last_provider", LastProvider)
    return "last_provider"


def test_a_registered_balancer_drives_both_the_simulation_and_the_live_gateway(last_provider):
    weighted = config.merge(SCENARIO, {"providers": {name: {"error_rate": 0.0} for name in ("p1", "p2", "p3")}})
    custom = config.merge(weighted, {"gateway": {"balancer": last_provider}})

    shares = {s.gateway.balancer: simulate(s, 2.0, SEED).summary()["providers"] for s in (weighted, custom)}
    assert shares[last_provider]["p3"]["share"] == 1.0
    assert shares[last_provider]["p1"]["requests"] == shares[last_provider]["p2"]["requests"] == 0
    # Weighted random over ~400 requests: p3's share is 0.1, within 0.06 at 4 sigma.
    assert shares["weighted_random"]["p3"]["share"] < 0.5

    async def live() -> tuple[Counter, Counter, object]:
        async with serving(weighted, seed=SEED) as (gateway, http):
            before = await _answers(http, 30)
            gateway.configure({"gateway": {"balancer": last_provider}}, "test")
            after = await _answers(http, 30)
        return before, after, gateway.router.balancer

    before, after, policy = asyncio.run(live())
    assert isinstance(policy, LastProvider)
    assert after == Counter({"p3": 30})
    # With weights 70/20/10, 30 picks all of p3 have probability 1e-30.
    assert before["p3"] < 30 and before["p1"] > 0


async def _answers(http: aiohttp.ClientSession, requests: int) -> Counter:
    """The providers named in ``requests`` concurrent real HTTP answers through ``http`` (all 200)."""
    headers = {"Content-Type": "application/json"}

    async def one() -> str:
        async with http.post(PATH, data=BODY, headers=headers) as response:
            assert response.status == 200
            return response.headers[PROVIDER_HEADER]

    return Counter(await asyncio.gather(*(one() for _ in range(requests))))
