"""The checks of notebook 10: each passes the right answer and its worked solution, and fails
the characteristic wrong ones with a message that names what is off; the models they judge
by are the gateway's (real token buckets, a real redis-server stopped and started)."""

from __future__ import annotations

import asyncio
import math

import pytest

from gwlab import config
from gwlab.admission import FAILED_OPEN
from gwlab.exercises import scale_out
from gwlab.redis_server import RedisServer
from tests.conftest import require_module, require_tool
from tests.support import assert_verdict, solution

pytestmark = pytest.mark.timeout(60)

SHARE = 0.7664031982421875
"""(R / C) E[min(k, C / R)] for 4 replicas and 8 connections, k ~ Binomial(8, 1/4): 50227 / 65536."""


def test_split_share_reference_values():
    assert scale_out.split_share() == SHARE == 50227 / 65536
    assert scale_out.split_share(1, 5) == 1.0  # one replica holds every connection
    assert scale_out.split_share(2, 2) == 0.75  # both on one replica half the time: it serves one


@pytest.mark.parametrize("seed", [2, 3])
def test_real_token_buckets_admit_the_share_the_formula_gives(seed):
    # On seeds the check does not use: within 4 standard errors, each under 0.5 % of the share.
    measured, error = scale_out.simulated_split_share(seed)
    assert abs(measured - SHARE) <= 4 * error and error < 0.005


@pytest.mark.parametrize("answer, ok, named", [
    (lambda: solution("10_scale_out")["split_answer"], True, ["0.766 (real token buckets", "77%"]),
    (lambda: 0.77, True, ["0.766"]),
    (lambda: 1.0, False, ["too high", "even spread"]),
    (lambda: 0.9, False, ["too high", "any connection at all"]),
    (lambda: 0.679, False, ["too low", "share of the replicas within their limit"]),
    (lambda: 0.5, False, ["too low", "Binomial(8, 1/4)"]),
    (lambda: None, False, ["expected the share of the requests admitted"]),
    (lambda: True, False, ["expected the share"]),
    (lambda: 1.5, False, ["expected the share"]),
    (lambda: math.nan, False, ["expected the share"]),
])
def test_split_share_check(answer, ok, named):
    assert_verdict(scale_out.check_split_share(answer()), ok, *named)


@pytest.mark.parametrize("outage, back", [(0.05, 0.1), (0.25, 0.3), (1.0, 1.5), (5.0, 5.1), (12.0, 13.1)])
def test_back_in_use_reference_values(outage, back):
    assert config.REDIS_RECONNECT_BASE == 0.1 and config.REDIS_RECONNECT_MAX == 2.0
    assert scale_out.back_in_use(outage) == pytest.approx(back, abs=1e-9)


@pytest.mark.parametrize("outage", [0.25, 5.0])
def test_a_gateway_uses_a_redis_back_from_an_outage_when_back_in_use_says(outage):
    """:class:`RedisAdmission` on a fake clock that steps by ``STEP``: the real redis-server is
    stopped at the first failed call and started once the outage has passed; the first
    admission answered by Redis comes at the model's time, to within a step."""
    require_module("redis")
    from gwlab.redis_bucket import RedisAdmission

    step = 0.01
    clock = [1000.0]

    async def main(server: RedisServer) -> float:
        limiter = config.from_dict({"limiter": {"backend": "redis", "redis_url": server.url, "redis_timeout": 1.0,
                                                "redis_prefix": "reconnect"}}).limiter
        admission = RedisAdmission(limiter, lambda: clock[0])
        try:
            assert await admission.admit(clock[0], 0) is None
            server.stop()
            start = clock[0]
            assert await admission.admit(start, 0) is FAILED_OPEN
            for i in range(1, 10_000):
                clock[0] = start + i * step
                if i * step >= outage:
                    server.start()
                if await admission.admit(clock[0], 0) is not FAILED_OPEN:
                    return i * step
        finally:
            await admission.aclose()
        raise AssertionError("Redis was never used again")

    with RedisServer(require_tool("redis-server")) as server:
        back = asyncio.run(main(server))
    assert abs(back - scale_out.back_in_use(outage)) <= step + 1e-9


@pytest.mark.parametrize("answer, ok, named", [
    (lambda: solution("10_scale_out")["reconnect_answer"], True, ["0, 0.1, 0.3, 0.7 s", "5.1 s"]),
    (lambda: scale_out.back_in_use, True, ["never more than 2 s past its end"]),
    (lambda: (lambda outage: outage), False, ["outage of 0.05 s", "tried at every request"]),
    (lambda: (lambda outage: scale_out.back_in_use(outage, longest=math.inf)), False,
     ["outage of 5 s", "gives 6.3 s", "stop doubling at 2 s"]),
    (lambda: (lambda outage: scale_out.back_in_use(outage, longest=0.1)), False,
     ["outage of 1 s", "doubles after each failure"]),
    (lambda: (lambda outage: outage + 0.1), False, ["outage of 0.05 s your function gives 0.15 s, the gateway uses Redis again after 0.1 s"]),
    (lambda: (lambda outage: 1 / 0), False, ["raised ZeroDivisionError"]),
    (lambda: None, False, ["expected a function of the outage"]),
    (lambda: 5.1, False, ["expected a function of the outage"]),
])
def test_reconnect_check(answer, ok, named):
    assert_verdict(scale_out.check_reconnect(answer()), ok, *named)
