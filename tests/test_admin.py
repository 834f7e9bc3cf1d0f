"""The admin routes: read and patch the running scenario, reset the policies, and who may."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from gwlab import config
from gwlab.config import ConfigError
from tests.support import CHAT, failing_at_once, serving


async def call(http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, path, **kwargs) as r:
        assert r.content_type == "application/json"
        return r.status, await r.json()


def test_get_and_patch_config():
    async def main():
        scenario = config.Scenario()
        async with serving(scenario) as (gw, http):
            assert await call(http, "GET", "/admin/config") == (200, scenario.to_dict())
            patch = {"limiter": {"rate": 5, "burst": 10}, "providers": {"p3": {"weight": 0}}}
            status, body = await call(http, "PATCH", "/admin/config", json=patch)
            expected = config.merge(scenario, patch)
            assert (status, body) == (200, expected.to_dict())
            assert gw.scenario == expected
            assert (gw.router.bucket.rate, gw.router.bucket.burst) == (5.0, 10.0)
            assert await call(http, "GET", "/admin/config") == (200, expected.to_dict())

    asyncio.run(main())


@pytest.mark.parametrize("patch", [
    {"limiter": {"rate": -1}},
    {"breaker": {"failure_treshold": 2}},
    {"providers": {"p4": {"weight": 1}}},
    {"providers": {"p1": {"weight": 0}, "p2": {"weight": 0}, "p3": {"weight": 0}}},
    [1, 2],
    {"limiter": {"rate": 10**400}},
    {"limiter": {"rate": 1e-310}},
    {"providers": {"p1": {"distribution": "lognormal", "latency": 1.0, "p99": 1e308}}},
    {"providers": {"p1": {"distribution": "lognormal", "latency": 1e-300, "p99": 1.0}}},
    {"providers": {name: {"weight": 1.7e308} for name in ("p1", "p2", "p3")}},
    {"workload": {"clients": 10**6}},
    {"limiter": {"rate": [1.0] * 10 + [[[[[1.0]]]]]}},
], ids=["negative rate", "typo", "new provider", "weights all zero", "not a table", "integer beyond floats",
        "rate near 0", "huge log-normal p99", "huge log-normal ratio", "weights summing to inf", "a million clients",
        "nested 8 deep"])
def test_bad_patch_is_400_with_the_config_error(patch):
    scenario = config.Scenario()
    with pytest.raises(ConfigError) as expected:
        config.merge(scenario, patch, "PATCH /admin/config")

    async def main():
        async with serving(scenario) as (gw, http):
            status, body = await call(http, "PATCH", "/admin/config", json=patch)
            assert gw.scenario is scenario
        return status, body

    status, body = asyncio.run(main())
    assert status == 400
    assert body["error"] == {"message": str(expected.value), "type": "invalid_request_error",
                             "param": None, "code": "invalid_config"}


@pytest.mark.parametrize("body, message", [
    # each value as the JSON sent spells it
    (b'{"limiter": {"rate": null}}', "limiter.rate = null: expected a number >= 0.001 and <= 1e+06"),
    (b'{"breaker": {"enabled": null}}', "breaker.enabled = null: expected true or false"),
    (b'{"limiter": {"rate": false}}', "limiter.rate = false: expected a number >= 0.001 and <= 1e+06"),
    (b'{"breaker": {"failure_threshold": 18446744073709551616}}',
     "breaker.failure_threshold = 18446744073709551616: expected a whole number >= 1 and <= 1000000"),
    (b'{"providers": {"p1": {"outage": null}}}', "providers.p1.outage = null: expected one of 'none', 'error', 'hang'"),
    (b'{"limiter": {"redis_url": null}}',
     "limiter.redis_url = null: expected a redis:// or rediss:// URL (or unix:// for a socket)"),
    (b'{"limiter": {"redis_url": "redis://:s3cret@127.0.0.1:notaport/0"}}',
     "limiter.redis_url = 'redis://:***@127.0.0.1:notaport/0': expected a redis:// or rediss:// URL (or unix:// for "
     "a socket) with a port from 1 to 65535, or none for 6379"),
])
def test_a_bad_patch_names_the_value_as_sent(body, message):
    async def main():
        async with serving(config.Scenario()) as (gw, http):
            return await call(http, "PATCH", "/admin/config", data=body, headers={"Content-Type": "application/json"})

    status, answer = asyncio.run(main())
    assert (status, answer["error"]["message"]) == (400, f"PATCH /admin/config: {message}")


@pytest.mark.parametrize("patch, shown", [
    ({"gateway": {"balancer": "x" * 10**5}}, "gateway.balancer = " + repr("x" * config.SHOWN_CHARS + "...")),
    ({"limiter": {"rate": 1.0, "burst": [2.5] * 10**5}}, "limiter.burst = [2.5, 2.5, "),
    ({"retry": {"retry_on": [500]}}, "retry.retry_on = [500]: expected a list of distinct statuses"),
    ({"limiter": {"rate": 1.0}, "x" * 10**5: 1}, "unknown key " + repr("x" * config.SHOWN_CHARS + "...")),
], ids=["long string", "long array of numbers", "array of whole numbers", "long key"])
def test_a_bad_patch_shows_a_long_value_cut_and_changes_nothing(patch, shown):
    """The 400 repeats what the patch sent, cut after SHOWN_CHARS characters: a patch of
    100 000 characters gets a message of a few hundred, not one as long as itself."""
    async def main():
        async with serving(config.Scenario()) as (gw, http):
            status, answer = await call(http, "PATCH", "/admin/config", json=patch)
            assert gw.scenario == config.Scenario()
            return status, answer["error"]["message"]

    status, message = asyncio.run(main())
    assert status == 400 and shown in message
    assert len(message) < 2 * config.SHOWN_CHARS


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_patch_nested_deeper_than_a_scenario_is_400_in_one_line(depth):
    body = b'{"limiter": ' + b'{"a": ' * depth + b"1" + b"}" * (depth + 1)

    async def main():
        async with serving(config.Scenario()) as (gw, http):
            status, answer = await call(http, "PATCH", "/admin/config", data=body,
                                        headers={"Content-Type": "application/json"})
            assert gw.scenario == config.Scenario()
            return status, answer

    status, answer = asyncio.run(main())
    assert status == 400 and "\n" not in answer["error"]["message"]
    assert "nested" in answer["error"]["message"] and answer["error"]["code"] in ("invalid_json", "invalid_config")


def test_patch_that_is_not_json_is_400():
    async def main():
        async with serving(config.Scenario()) as (gw, http):
            return await call(http, "PATCH", "/admin/config", data=b"rate=5",
                              headers={"Content-Type": "application/json"})

    status, body = asyncio.run(main())
    assert (status, body["error"]["code"]) == (400, "invalid_json")


def test_reset_refills_the_bucket_and_heals_the_breakers():
    t = [0.0]
    scenario = failing_at_once()

    async def main():
        async with serving(scenario, clock=lambda: t[0]) as (gw, http):
            async with http.post("/v1/chat/completions", json=CHAT) as r:
                assert r.status == 502
            before = gw.snapshot()
            status, after = await call(http, "POST", "/admin/reset")
        return before, status, after

    before, status, after = asyncio.run(main())
    assert (before.tokens, before.providers["p1"].state.value) == (config.BURST - 1, "open")
    assert status == 200
    assert (after["tokens"], after["providers"]["p1"]["state"], after["providers"]["p1"]["trips"]) == \
        (config.BURST, "healthy", 0)


@pytest.mark.parametrize("authorization,status", [
    (None, 401), ("Bearer wrong", 401), ("s3cret", 401), ("Basic s3cret", 401), ("Bearer s3cret", 200),
    ("bearer s3cret", 200), ("BEARER s3cret", 200), ("Bearer  s3cret", 200),
], ids=["none", "wrong token", "no scheme", "other scheme", "right token", "lower case", "upper case", "two spaces"])
def test_admin_token_is_required_when_given(authorization, status):
    async def main():
        async with serving(config.Scenario(), admin_token="s3cret") as (gw, http):
            headers = {"Authorization": authorization} if authorization else {}
            results = []
            for method, path in (("GET", "/admin/config"), ("POST", "/admin/reset"), ("PATCH", "/admin/config")):
                results.append(await call(http, method, path, headers=headers, json={}))
            return results

    for got, body in asyncio.run(main()):
        assert got == status
        if status == 401:
            assert body["error"]["type"] == "authentication_error"
            assert "Authorization: Bearer" in body["error"]["message"]


@pytest.mark.parametrize("token,status", [(None, 404), ("s3cret", 200)], ids=["no token", "token"])
def test_admin_routes_on_a_non_loopback_bind_need_a_token(token, status):
    async def main():
        async with serving(config.Scenario(), host="0.0.0.0", admin_token=token) as (gw, http):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return await call(http, "GET", "/admin/config", headers=headers)

    got, body = asyncio.run(main())
    assert got == status
    if status == 404:
        assert body["error"]["code"] == "unknown_url"


def test_switching_breakers_off_and_on_during_a_probe_keeps_the_provider_in_rotation():
    # A probe in flight while breakers are switched off used to keep its slot for ever: p1
    # stayed HALF_OPEN and got none of the requests after breakers were switched on again.
    t = [0.0]
    scenario = config.from_dict({
        "providers": {"p1": {"latency": 0.2}, "p2": {"weight": 0.0, "latency": 0.0}},
        "breaker": {"failure_threshold": 1},
    })

    async def chat(http: aiohttp.ClientSession) -> str:
        async with http.post("/v1/chat/completions", json=CHAT) as r:
            return f"{r.status} {r.headers['x-gwlab-provider']}"

    async def main():
        async with serving(scenario, clock=lambda: t[0]) as (gw, http):
            await call(http, "PATCH", "/admin/config", json={"providers": {"p1": {"outage": "error"}}})
            assert await chat(http) == "502 p1"  # p1 opens until t = 1
            await call(http, "PATCH", "/admin/config", json={"providers": {"p1": {"outage": "none"}}})
            t[0] = 2.0
            probe = asyncio.create_task(chat(http))
            while gw.router.upstreams[0].breaker.probes == 0:
                await asyncio.sleep(0.01)
            await call(http, "PATCH", "/admin/config", json={"breaker": {"enabled": False}})
            assert await probe == "200 p1"
            await call(http, "PATCH", "/admin/config",
                       json={"breaker": {"enabled": True}, "providers": {"p2": {"weight": 1.0}}})
            assert gw.snapshot().providers["p1"].in_flight == 0
            answers = [await chat(http) for _ in range(20)]
            assert "200 p1" in answers  # the probe that closes p1's breaker again
            answers = await asyncio.gather(*(chat(http) for _ in range(200)))
            assert answers.count("200 p1") > 50 and answers.count("200 p2") > 50

    asyncio.run(main())


@pytest.mark.parametrize("method,head", [
    ("DELETE", b""), ("PATCH", b"Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"),
], ids=["wrong method", "expect 100-continue"])
def test_without_the_token_an_admin_request_learns_nothing_and_sends_no_body(method, head):
    """401 comes before the 405 of a wrong method and before any ``100 Continue``."""
    async def main():
        async with serving(config.Scenario(), admin_token="s3cret") as (gw, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"%s /admin/config HTTP/1.1\r\nHost: gw\r\n%s\r\n" % (method.encode(), head))
            answer = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
            writer.close()
            return answer

    answer = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"100 Continue" not in answer and b"Allow:" not in answer


@pytest.mark.parametrize("content_type", ["application/merge-patch+json", "application/json",
                                          "application/merge-patch+json; charset=utf-8"])
def test_patch_accepts_a_json_merge_patch(content_type):
    async def main():
        async with serving(config.Scenario()) as (gw, http):
            status, body = await call(http, "PATCH", "/admin/config", data=b'{"limiter": {"rate": 50}}',
                                      headers={"Content-Type": content_type})
            return status, body

    status, body = asyncio.run(main())
    assert (status, body["limiter"]["rate"]) == (200, 50.0)


def test_patch_of_another_media_type_is_415_naming_both():
    async def main():
        async with serving(config.Scenario()) as (gw, http):
            return await call(http, "PATCH", "/admin/config", data=b"{}", headers={"Content-Type": "text/plain"})

    status, body = asyncio.run(main())
    assert status == 415
    assert "application/json or application/merge-patch+json" in body["error"]["message"]


SECRET_URL = "redis://user:s3cret@10.0.0.5:6379/2"
"""A Redis URL with a password (``limiter.redis_url`` is only used with ``backend = "redis"``:
the gateway here keeps its buckets locally and never connects to it)."""
SHOWN_URL = "redis://user:***@10.0.0.5:6379/2"


def test_the_admin_api_shows_the_redis_url_with_its_password_redacted_and_takes_it_back_as_shown():
    scenario = config.from_dict({"limiter": {"redis_url": SECRET_URL}})

    async def main():
        async with serving(scenario) as (gw, http):
            status, shown = await call(http, "GET", "/admin/config")
            assert status == 200 and shown["limiter"]["redis_url"] == SHOWN_URL
            assert {k: v for k, v in shown.items() if k != "limiter"} == {
                k: v for k, v in scenario.to_dict().items() if k != "limiter"}
            # The whole document sent back as shown, with one change: only that change is made.
            shown["limiter"]["rate"] = 5
            status, body = await call(http, "PATCH", "/admin/config", json=shown)
            assert status == 200 and body["limiter"]["redis_url"] == SHOWN_URL, body
            assert gw.scenario.limiter.redis_url == SECRET_URL and gw.scenario.limiter.rate == 5
            status, body = await call(http, "PATCH", "/admin/config",
                                      json={"limiter": {"redis_url": "redis://user:other@10.0.0.6:6379/2"}})
            assert status == 400 and "s3cret" not in str(body) and "other" not in str(body)
            assert body["error"]["message"] == (
                f"PATCH /admin/config: limiter.redis_url = 'redis://user:***@10.0.0.6:6379/2': expected "
                f"{SHOWN_URL!r}, its value at start: it is fixed while the gateway runs (restart it with the new "
                "value)")
            assert gw.scenario.limiter.redis_url == SECRET_URL

    asyncio.run(main())
