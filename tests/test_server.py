"""The aiohttp gateway: statuses, headers and bodies of every answer, bad input, shutdown,
thread-safe controls and port conflicts. Every server listens on an ephemeral port.

Providers with ``latency`` 0 and ``error_rate`` 0 or 1 make each outcome certain; a fake
clock (``clock=lambda: t[0]``) makes the bucket's token count exact.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import socket
import threading
import zlib
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlab import config
from gwlab.config import ConfigError
from gwlab.server import _DECODER, Gateway, PortInUse, _parse_json, _read_body
from gwlab.wire import ApiError
from tests.support import CHAT, port_is_free, serving

JSON = {"Content-Type": "application/json"}


def single(gateway: dict[str, Any] | None = None, limiter: dict[str, Any] | None = None,
           breaker: dict[str, Any] | None = None, **p1: Any) -> config.Scenario:
    """A scenario with one provider ``p1`` (latency 0 unless given)."""
    data: dict[str, Any] = {"providers": {"p1": {"latency": 0.0, **p1}}}
    for name, section in (("gateway", gateway), ("limiter", limiter), ("breaker", breaker)):
        if section is not None:
            data[name] = section
    return config.from_dict(data)


async def post(http: aiohttp.ClientSession, body: Any = CHAT, path: str = "/v1/chat/completions",
               **kwargs: Any) -> tuple[int, Any, Any]:
    async with http.post(path, json=body, **kwargs) as r:
        return r.status, r.headers, await r.json()


@pytest.mark.parametrize("rate", [config.MIN_RATE, config.MAX_RATE])
def test_the_rate_limits_extreme_rates_answer_429_with_finite_waits(rate):
    t = [0.0]

    async def main():
        async with serving(single(limiter={"rate": rate, "burst": 1}), clock=lambda: t[0]) as (gw, http):
            assert (await post(http))[0] == 200
            status, headers, _ = await post(http)
            return status, headers["Retry-After"], float(headers["retry-after-ms"])

    status, retry_after, retry_after_ms = asyncio.run(main())
    assert status == 429
    assert retry_after == ("1000" if rate == config.MIN_RATE else "1")
    assert retry_after_ms == pytest.approx(1000 / rate)


def test_success_is_a_chat_completion():
    async def main():
        async with serving(single()) as (gw, http):
            for path in ("/v1/chat/completions", "/chat/completions"):
                status, headers, body = await post(http, {**CHAT, "model": "my-model"}, path)
                assert status == 200
                assert headers["x-gwlab-provider"] == "p1"
                assert headers["x-gwlab-route"] == "weighted"
                assert body["object"] == "chat.completion"
                assert body["id"].startswith("chatcmpl-")
                assert body["model"] == "my-model"
                assert isinstance(body["created"], int)
                choice = body["choices"][0]
                assert choice["index"] == 0 and choice["finish_reason"] == "stop"
                assert choice["message"]["role"] == "assistant"
                assert "p1" in choice["message"]["content"]
                usage = body["usage"]
                # "hello there" is 11 characters: ceil(11 / 4) = 3 prompt tokens.
                assert usage["prompt_tokens"] == 3
                assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            ids = set()
            for _ in range(3):
                ids.add((await post(http))[2]["id"])
            assert len(ids) == 3

    asyncio.run(main())


def test_completion_body_is_exactly_what_json_dumps_writes():
    """The body is formatted from cached pieces: it must still be the very bytes that
    ``json.dumps`` writes for it, model names that need escaping included."""
    async def main():
        async with serving(single()) as (gw, http):
            for model in ("gwlab-default", 'm\u00f6del "x"\n\\', "gwlab-default"):
                async with http.post("/v1/chat/completions", json={**CHAT, "model": model}) as r:
                    raw = await r.read()
                body = json.loads(raw)
                assert body["model"] == model
                assert raw == json.dumps(body).encode()

    asyncio.run(main())


def test_rate_limited_request_gets_429_with_retry_after():
    t = [0.0]

    async def main():
        # burst 1, 0.5 tokens/s: the second request at the same instant waits 2 s for a token.
        async with serving(single(limiter={"rate": 0.5, "burst": 1}), clock=lambda: t[0]) as (gw, http):
            assert (await post(http))[0] == 200
            status, headers, body = await post(http)
            assert status == 429
            assert headers["Retry-After"] == "2"
            assert headers["retry-after-ms"] == "2000"
            assert headers["x-gwlab-provider"] == "none"
            assert "x-gwlab-route" not in headers
            assert body["error"]["type"] == "rate_limit_error"
            assert body["error"]["code"] == "rate_limit_requests"
            assert "rate limit exceeded" in body["error"]["message"]
            t[0] = 1.5  # 0.75 tokens: 0.25 short, i.e. 0.5 s; Retry-After rounds up to 1
            status, headers, _ = await post(http)
            assert (status, headers["Retry-After"], headers["retry-after-ms"]) == (429, "1", "500")
            t[0] = 2.0
            assert (await post(http))[0] == 200

    asyncio.run(main())


def test_provider_error_is_502():
    async def main():
        async with serving(single(error_rate=1.0)) as (gw, http):
            status, headers, body = await post(http)
            assert status == 502
            assert (headers["x-gwlab-provider"], headers["x-gwlab-route"]) == ("p1", "weighted")
            assert body["error"] == {"message": "provider p1 failed", "type": "api_error",
                                     "param": None, "code": "provider_error"}

    asyncio.run(main())


def test_provider_timeout_is_504():
    async def main():
        async with serving(single(gateway={"timeout": 0.01}, outage="hang")) as (gw, http):
            status, headers, body = await post(http)
            assert status == 504
            assert (headers["x-gwlab-provider"], headers["x-gwlab-route"]) == ("p1", "weighted")
            assert body["error"]["code"] == "provider_timeout"
            assert body["error"]["type"] == "api_error"
            assert body["error"]["message"] == "provider p1 did not answer within 0.01 s"

    asyncio.run(main())


def test_fallback_route_is_named_in_the_header():
    t = [0.0]

    async def main():
        scenario = single(error_rate=1.0, breaker={"failure_threshold": 1})
        async with serving(scenario, clock=lambda: t[0]) as (gw, http):
            assert (await post(http))[1]["x-gwlab-route"] == "weighted"  # opens p1's breaker
            status, headers, _ = await post(http)  # nothing eligible: p1 is called as a probe
            assert (status, headers["x-gwlab-provider"], headers["x-gwlab-route"]) == (502, "p1", "fallback")
            snap = gw.snapshot().providers["p1"]
            assert (gw.metrics.fallbacks["p1"], snap.trips, snap.state.value, snap.cooldown_left) == (1, 2, "open", 2.0)

    asyncio.run(main())


def test_models_and_healthz():
    async def main():
        async with serving(single()) as (gw, http):
            async with http.get("/v1/models") as r:
                body = await r.json()
                assert (r.status, r.headers["x-gwlab-provider"]) == (200, "none")
            assert body["object"] == "list"
            assert [m["id"] for m in body["data"]] == [config.MODEL]
            async with http.get("/healthz") as r:
                assert (r.status, await r.json()) == (200, {"status": "ok"})
            for path in ("/healthz", "/v1/models"):
                async with http.head(path) as r:
                    assert (r.status, r.content_type, await r.read()) == (200, "application/json", b"")

    asyncio.run(main())


async def exchange(port: int, head: bytes, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send ``head`` over a raw connection and read what the gateway answers before the
    body is sent; then send ``body`` and read the rest until the gateway closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(body)
        rest = await asyncio.wait_for(reader.read(), 5)
        return first, rest
    finally:
        writer.close()


def test_expect_100_continue_is_answered_before_the_body_is_sent():
    """curl sends ``Expect: 100-continue`` before a body over 1 KiB and waits for this
    interim answer; the gateway gives it at once, then reads the body and answers as usual."""
    async def main():
        async with serving(single()) as (gw, _):
            payload = json.dumps(CHAT).encode()
            head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            first, rest = await exchange(gw.port, head.encode(), payload)
            assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
            assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
            assert json.loads(rest.partition(b"\r\n\r\n")[2])["object"] == "chat.completion"

            head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                    "Content-Length: 2\r\nExpect: teapot\r\nConnection: close\r\n\r\n")
            first, rest = await exchange(gw.port, head.encode(), b"{}")
            assert first.startswith(b"HTTP/1.1 417 Expectation Failed\r\n")
            assert json.loads(rest)["error"]["code"] == "expectation_failed"

    asyncio.run(main())


def test_a_body_still_arriving_is_waited_for_and_read_whole():
    """A body that has all arrived is taken from the buffer at once; one still on its way
    (sent in two pieces, with or without chunked encoding) is waited for. 40 characters of
    content make 10 prompt tokens only if the gateway read every byte."""
    async def main():
        async with serving(single()) as (gw, _):
            payload = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 40}]}).encode()
            half = len(payload) // 2
            start = "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            sent_as = {
                "length": (f"{start}Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                           + payload[:half], payload[half:]),
                "chunked": (f"{start}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
                            + b"%x\r\n%s\r\n" % (half, payload[:half]),
                            b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload) - half, payload[half:])),
            }
            for first, second in sent_as.values():
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                try:
                    writer.write(first)
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.write(second)
                    answer = await asyncio.wait_for(reader.read(), 5)
                finally:
                    writer.close()
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
                assert json.loads(answer.partition(b"\r\n\r\n")[2])["usage"]["prompt_tokens"] == 10

    asyncio.run(main())


def test_the_body_limit_is_the_same_whether_the_body_has_arrived_or_not():
    """Exactly MAX_BODY bytes are accepted and one more is a 413, whether the body is taken
    from the buffer at once (it has all arrived) or waited for."""
    async def read(size: int, arrived: bool) -> bytes:
        loop = asyncio.get_running_loop()
        payload = StreamReader(mock.Mock(), 2**16, loop=loop)
        request = make_mocked_request("POST", "/v1/chat/completions", payload=payload,
                                      client_max_size=config.MAX_BODY)

        def deliver() -> None:
            payload.feed_data(b"x" * size)
            payload.feed_eof()

        if arrived:
            deliver()
        else:
            loop.call_soon(deliver)
        return await _read_body(request, config.BODY_TIMEOUT)

    async def main():
        for arrived in (True, False):
            assert len(await read(config.MAX_BODY, arrived)) == config.MAX_BODY
            with pytest.raises(web.HTTPRequestEntityTooLarge):
                await read(config.MAX_BODY + 1, arrived)

    asyncio.run(main())


def raw(data: bytes, content_type: str | None = "application/json") -> dict[str, Any]:
    if content_type is None:
        return {"data": data, "skip_auto_headers": ["Content-Type"]}
    return {"data": data, "headers": {"Content-Type": content_type}}


def body(**changes: Any) -> dict[str, Any]:
    out = {**CHAT, **changes}
    return {"json": {k: v for k, v in out.items() if v is not DROP}}


DROP = object()
BIG = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * config.MAX_BODY + b'"}]}'
VALID = json.dumps(CHAT)

BAD_INPUTS = [
    # id, method, path, request kwargs, status, code, text in the message
    ("malformed", "POST", "/v1/chat/completions", raw(b'{"model": '), 400, "invalid_json", "not valid JSON"),
    ("empty", "POST", "/v1/chat/completions", raw(b""), 400, "invalid_json", "not valid JSON"),
    ("nan", "POST", "/v1/chat/completions", raw(VALID[:-1].encode() + b', "temperature": NaN}'),
     400, "invalid_json", "NaN is not allowed in JSON"),
    ("infinity", "POST", "/v1/chat/completions", raw(VALID[:-1].encode() + b', "top_p": Infinity}'),
     400, "invalid_json", "Infinity is not allowed in JSON"),
    ("-infinity", "POST", "/v1/chat/completions", raw(VALID[:-1].encode() + b', "top_p": -Infinity}'),
     400, "invalid_json", "-Infinity is not allowed in JSON"),
    ("not utf-8", "POST", "/v1/chat/completions", raw(b'{"model": "\xff"}'), 400, "invalid_json", "not valid JSON"),
    ("too deep", "POST", "/v1/chat/completions", raw(b"[" * 100_000 + b"]" * 100_000), 400, "invalid_json",
     "nested too deeply"),
    ("array body", "POST", "/v1/chat/completions", {"json": [CHAT]}, 400, "invalid_request_body",
     "must be a JSON object, got an array"),
    ("string body", "POST", "/v1/chat/completions", {"json": "hi"}, 400, "invalid_request_body",
     "must be a JSON object, got a string"),
    ("no model", "POST", "/v1/chat/completions", body(model=DROP), 400, "missing_required_parameter",
     "'model' is required"),
    ("model number", "POST", "/v1/chat/completions", body(model=42), 400, "invalid_type",
     "'model' must be a non-empty string, got a number"),
    ("model empty", "POST", "/v1/chat/completions", body(model=""), 400, "invalid_type", "got an empty string"),
    ("model too long", "POST", "/v1/chat/completions", body(model="m" * 257), 400, "invalid_value",
     "'model' must be at most 256 characters long, got 257"),
    ("no messages", "POST", "/v1/chat/completions", body(messages=DROP), 400, "missing_required_parameter",
     "'messages' is required"),
    ("messages object", "POST", "/v1/chat/completions", body(messages={"role": "user"}), 400, "invalid_type",
     "'messages' must be a non-empty array of message objects, got an object"),
    ("messages empty", "POST", "/v1/chat/completions", body(messages=[]), 400, "invalid_type", "got an empty array"),
    ("message string", "POST", "/v1/chat/completions", body(messages=["hi"]), 400, "invalid_type",
     "'messages[0]' must be an object, got a string"),
    ("no role", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": "a"}, {"content": "b"}]),
     400, "invalid_type", "'messages[1].role' must be a string, got null"),
    ("content number", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": 5}]), 400,
     "invalid_type", "'messages[0].content' must be a string or an array of content parts, got a number"),
    ("max_tokens zero", "POST", "/v1/chat/completions", body(stream=True, max_tokens=0), 400,
     "integer_below_min_value", "'max_tokens' must be an integer >= 1 or null, got 0"),
    ("stream string", "POST", "/v1/chat/completions", body(stream="yes"), 400, "invalid_type",
     "'stream' must be true or false, got a string"),
    ("stream_options without stream", "POST", "/v1/chat/completions", body(stream_options={"include_usage": True}),
     400, "invalid_parameter_combination", "'stream_options' is only allowed when 'stream' is true"),
    ("max_tokens 2.0", "POST", "/v1/chat/completions", body(max_tokens=2.0), 400, "invalid_type",
     "'max_tokens' must be an integer >= 1 or null, got 2.0"),
    ("text/plain", "POST", "/v1/chat/completions", raw(VALID.encode(), "text/plain"), 415,
     "unsupported_media_type", "Content-Type must be application/json; got 'text/plain'"),
    ("no content type", "POST", "/chat/completions", raw(VALID.encode(), None), 415, "unsupported_media_type",
     "got no Content-Type"),
    *[(f"Content-Encoding {coding!r}", "POST", "/v1/chat/completions",
       {"data": VALID.encode(), "headers": {"Content-Type": "application/json", "Content-Encoding": coding}}, 415,
       "unsupported_content_encoding", f"Content-Encoding must be gzip, deflate or identity; got {coding!r}")
      for coding in ("bogus", "x-gzip", "compress", "gzip, identity", "identity, gzip", "gzip;q=1")],
    ("too large", "POST", "/v1/chat/completions", raw(BIG), 413, "request_too_large",
     f"request body is larger than {config.MAX_BODY} bytes"),
    ("unknown path", "POST", "/v1/completions", body(), 404, "unknown_url", "unknown path '/v1/completions'"),
    ("wrong method", "GET", "/v1/chat/completions", {}, 405, "method_not_allowed",
     "method GET is not allowed on '/v1/chat/completions'; allowed: POST"),
    ("put", "PUT", "/chat/completions", body(), 405, "method_not_allowed", "method PUT is not allowed"),
]


@pytest.mark.parametrize("method,path,kwargs,status,code,text", [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_an_openai_error_and_costs_no_token(method, path, kwargs, status, code, text):
    t = [0.0]

    async def main():
        async with serving(single(), clock=lambda: t[0]) as (gw, http):
            async with http.request(method, path, **kwargs) as r:
                assert r.status == status
                assert r.headers["x-gwlab-provider"] == "none"
                assert r.content_type == "application/json"
                error = (await r.json())["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] == "invalid_request_error"
            assert error["code"] == code
            assert text in error["message"]
            assert gw.snapshot().tokens == config.BURST
            assert gw.metrics.registry.get_sample_value(
                "gwlab_requests_total", {"code": str(status), "provider": "none"}) == 1
            # The server keeps serving; the next good request takes the first token.
            assert (await post(http))[0] == 200
            assert gw.snapshot().tokens == config.BURST - 1

    asyncio.run(main())


def test_an_unexpected_exception_is_a_500_with_an_openai_body(caplog):
    async def main():
        async with serving(single()) as (gw, http):
            def broken(*args: object) -> None:
                raise RuntimeError("boom")

            healthy = gw.router.route
            gw.router.route = broken
            with caplog.at_level(logging.ERROR, logger="gwlab.server"):
                status, headers, body = await post(http)
            assert status == 500
            assert headers["x-gwlab-provider"] == "none"
            assert body["error"]["type"] == "server_error"
            assert body["error"]["code"] == "internal_error"
            assert "boom" not in json.dumps(body)
            assert "boom" in caplog.text and "Traceback" in caplog.text
            gw.router.route = healthy
            assert (await post(http))[0] == 200

    asyncio.run(main())


def test_breaker_transitions_are_logged(caplog):
    t = [0.0]

    async def main():
        scenario = single(error_rate=1.0, breaker={"failure_threshold": 2})
        async with serving(scenario, clock=lambda: t[0]) as (gw, http):
            with caplog.at_level(logging.DEBUG, logger="gwlab.server"):
                await post(http)
                await post(http)
                t[0] = 1.0
                gw.snapshot()
        records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "gwlab.server"
                   and r.getMessage().startswith("breaker")]
        assert records == [
            (logging.DEBUG, "breaker p1: healthy -> failing"),
            (logging.INFO, "breaker p1: failing -> open (cooldown 1 s)"),
            (logging.INFO, "breaker p1: open -> half_open"),
        ]

    asyncio.run(main())


async def wait_for_in_flight(gw: Gateway, n: int) -> None:
    """Until ``n`` requests are in flight (they arrive over real sockets)."""
    for _ in range(500):
        if gw.snapshot().in_flight == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {n} requests in flight: {gw.snapshot()}")


def in_flight_gauge(gw: Gateway) -> float | None:
    return gw.metrics.registry.get_sample_value("gwlab_in_flight_requests")


def test_stop_cuts_off_requests_that_outlast_the_grace():
    async def main():
        gw = Gateway(single(latency=5.0))
        await gw.start(port=0, metrics_port=0)
        async with aiohttp.ClientSession(gw.url) as http:
            calls = [asyncio.create_task(post(http)) for _ in range(3)]
            await wait_for_in_flight(gw, 3)
            assert in_flight_gauge(gw) == 3
            await gw.stop(grace=0.05)
            results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, aiohttp.ClientError) for r in results), results
        assert in_flight_gauge(gw) == 0
        sample = gw.metrics.registry.get_sample_value
        assert sample("gwlab_requests_total", {"code": "499", "provider": "p1"}) == 3
        assert sample("gwlab_requests_total", {"code": "200", "provider": "p1"}) == 0
        for outcome in ("success", "error", "timeout"):
            assert sample("gwlab_provider_requests_total", {"provider": "p1", "outcome": outcome}) == 0
        assert gw.snapshot().providers["p1"].state.value == "healthy"
        await gw.stop()  # a second stop does nothing

    asyncio.run(main())


def test_stop_lets_requests_within_the_grace_finish():
    async def main():
        gw = Gateway(single(latency=0.2))
        await gw.start(port=0, metrics_port=0)
        async with aiohttp.ClientSession(gw.url) as http:
            calls = [asyncio.create_task(post(http)) for _ in range(2)]
            await wait_for_in_flight(gw, 2)
            await gw.stop(grace=5.0)
            results = await asyncio.gather(*calls)
            assert [status for status, _, _ in results] == [200, 200]
            with pytest.raises(aiohttp.ClientConnectionError):
                await post(http)  # no longer listening
        assert in_flight_gauge(gw) == 0

    asyncio.run(main())


def test_requests_arriving_while_stopping_get_503():
    async def main():
        gw = Gateway(single(latency=0.3))
        await gw.start(port=0, metrics_port=0)
        async with aiohttp.ClientSession(gw.url) as slow, aiohttp.ClientSession(gw.url) as late:
            async with late.get("/healthz") as r:  # opens a keep-alive connection
                assert r.status == 200
            call = asyncio.create_task(post(slow))
            await wait_for_in_flight(gw, 1)
            stopping = asyncio.create_task(gw.stop(grace=5.0))
            await asyncio.sleep(0)  # one loop turn: stop() runs until it waits for the slow request
            status, headers, body = await post(late)
            assert (status, headers["x-gwlab-provider"], body["error"]["code"]) == (503, "none", "shutting_down")
            assert headers["Connection"] == "close"  # a keep-alive client must not come back
            assert (await call)[0] == 200
            await stopping
        assert gw.metrics.registry.get_sample_value("gwlab_requests_total", {"code": "503", "provider": "none"}) == 1

    asyncio.run(main())


def test_start_twice_is_a_no_op_and_a_stopped_gateway_starts_again():
    async def main():
        gw = Gateway(single())
        await gw.start(port=0, metrics_port=0)
        first = (gw.url, gw.metrics_url)
        await gw.start(port=0, metrics_port=0)
        assert (gw.url, gw.metrics_url) == first
        assert gw.url == f"http://127.0.0.1:{gw.port}"
        assert gw.metrics_url == f"http://127.0.0.1:{gw.metrics_port}/metrics"
        await gw.stop()
        await gw.start(port=0, metrics_port=0)
        async with aiohttp.ClientSession(gw.url) as http:
            assert (await post(http))[0] == 200
        await gw.stop()

    asyncio.run(main())


def test_controls_from_another_thread_run_on_the_loop_thread():
    started = threading.Event()
    done: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    gw = Gateway(single())
    configured_on: list[int] = []
    router_configure = gw.router.configure

    def spy(scenario, now):
        configured_on.append(threading.get_ident())
        router_configure(scenario, now)

    gw.router.configure = spy

    async def serve():
        nonlocal done, loop
        done, loop = asyncio.Event(), asyncio.get_running_loop()
        await gw.start(port=0, metrics_port=0)
        started.set()
        await done.wait()
        await gw.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert started.wait(10)
        scenario = gw.configure({"providers": {"p1": {"weight": 5}}, "limiter": {"rate": 50}})
        assert scenario.provider("p1").weight == 5 and gw.scenario is scenario
        assert configured_on == [thread.ident]
        snap = gw.snapshot()
        assert (snap.rate, snap.providers["p1"].weight) == (50.0, 5.0)
        with pytest.raises(ConfigError, match=r"^Gateway.configure: limiter.rate = -1: expected a number >= 0\.001 and <= 1e\+06$"):
            gw.configure({"limiter": {"rate": -1}})
        assert gw.scenario is scenario
        gw.reset()
        assert gw.snapshot().tokens == config.BURST
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(10)
    assert not thread.is_alive()


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock




def test_gateway_port_in_use():
    async def main():
        with listening_socket() as taken:
            port = taken.getsockname()[1]
            gw = Gateway(single())
            with pytest.raises(PortInUse) as info:
                await gw.start(port=port, metrics_port=0)
        assert info.value.port == port
        assert str(info.value) == f"port {port} is already in use on 127.0.0.1"

    asyncio.run(main())


def test_metrics_port_in_use_releases_the_gateway_port():
    async def main():
        with listening_socket() as taken:
            port = taken.getsockname()[1]
            gw = Gateway(single())
            with pytest.raises(PortInUse) as info:
                await gw.start(port=0, metrics_port=port)
            assert info.value.port == port
            assert str(info.value) == f"port {port} is already in use on 127.0.0.1"
            assert gw.port != 0 and port_is_free(gw.port)
            # Not half started: a later start binds both servers.
            await gw.start(port=0, metrics_port=0)
            async with aiohttp.ClientSession(gw.url) as http:
                assert (await post(http))[0] == 200
            await gw.stop()

    asyncio.run(main())


# -- every bad request is a 4xx in the OpenAI shape, once -------------------------------------


async def answer_to(port: int, *writes: bytes) -> bytes:
    """What the gateway answers to ``writes``, sent 50 ms apart on one raw connection (an
    empty one is not sent), until it closes the connection (5 s at most; its keep-alive
    timeout is far longer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i, data in enumerate(data for data in writes if data):
            if i:
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(data)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def answers(raw_bytes: bytes) -> list[tuple[int, dict]]:
    """The statuses and bodies of the answers in ``raw_bytes``."""
    out = []
    while raw_bytes:
        head, _, rest = raw_bytes.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        out.append((int(head.split(b" ", 2)[1]), json.loads(rest[:length])))
        raw_bytes = rest[length:]
    return out


PAYLOAD = json.dumps(CHAT).encode()
POST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n")

MALFORMED = [
    # id, bytes sent, bytes sent 50 ms later, status, code
    ("bad gzip", POST + b"Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello", b"", 400, "invalid_request_body"),
    ("bad deflate", POST + b"Content-Encoding: deflate\r\nContent-Length: 5\r\n\r\nhello", b"", 400,
     "invalid_request_body"),
    ("bad chunk after the body began", POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"mod\r\n", b"zz\r\n", 400,
     "invalid_request_body"),
    ("bad chunk at once", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", b"", 400, "invalid_http_request"),
    ("unknown method", b"FOO / HTTP/1.1\r\nHost: gw\r\n\r\n", b"", 400, "invalid_http_request"),
    ("bad header", b"GET /healthz HTTP/1.1\r\nHost: gw\r\nBad Header: x\r\n\r\n", b"", 400, "invalid_http_request"),
    ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32 + b"\r\n\r\n", b"", 400,
     "invalid_http_request"),
    # Codings aiohttp decodes only with a library gwlab does not need (Brotli, backports.zstd).
    ("Content-Encoding br", POST + b"Content-Encoding: br\r\nContent-Length: 5\r\n\r\nhello", b"", 415,
     "unsupported_content_encoding"),
    ("Content-Encoding zstd", POST + b"Content-Encoding: ZSTD\r\nContent-Length: 5\r\n\r\nhello", b"", 415,
     "unsupported_content_encoding"),
    ("HTTP/2.0", b"GET /healthz HTTP/2.0\r\nHost: gw\r\n\r\n", b"", 505, "http_version_not_supported"),
    ("HTTP/0.9", POST.replace(b"HTTP/1.1", b"HTTP/0.9") + b"Content-Length: 2\r\n\r\n{}", b"", 505,
     "http_version_not_supported"),
    ("HTTP/1.2", b"GET /healthz HTTP/1.2\r\nHost: gw\r\n\r\n", b"", 400, "invalid_http_request"),
]


@pytest.mark.parametrize("data,then,status,code", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_request_is_answered_in_the_openai_shape_counted_and_logged_once_at_debug(
        data, then, status, code, caplog):
    async def main():
        async with serving(single()) as (gw, _):
            with caplog.at_level(logging.DEBUG):
                answer = await answer_to(gw.port, data, then)
            [(got, body)] = answers(answer)
            assert (got, body["error"]["code"], body["error"]["type"]) == (status, code, "invalid_request_error")
            assert b"Content-Type: application/json" in answer
            # The answer says the connection closes after it: HTTP/1.1 with Connection: close,
            # or HTTP/1.0 (aiohttp's answer to a request line it could not read), where
            # closing is the default.
            version = answer[:8]
            assert b"Connection: close\r\n" in answer if version == b"HTTP/1.1" else version == b"HTTP/1.0"
            assert gw.metrics.registry.get_sample_value(
                "gwlab_requests_total", {"code": str(status), "provider": "none"}) == 1
            assert gw.snapshot().tokens == config.BURST
        records = [r for r in caplog.records if r.name.startswith(("gwlab", "aiohttp"))
                   and not r.getMessage().startswith("gateway on")]
        assert [(r.levelno, r.exc_info) for r in records] in ([], [(logging.DEBUG, None)])

    asyncio.run(main())


@pytest.mark.parametrize("coding,encode", [
    (None, bytes), ("identity", bytes), ("", bytes), ("gzip", gzip.compress), ("GZIP", gzip.compress),
    ("deflate", zlib.compress), ("Deflate", zlib.compress),
])
def test_a_body_in_a_coding_the_gateway_decodes_is_answered(coding, encode):
    headers = {"Content-Type": "application/json"}
    if coding is not None:
        headers["Content-Encoding"] = coding

    async def main():
        async with serving(single()) as (gw, http):
            async with http.post("/v1/chat/completions", data=encode(json.dumps(CHAT).encode()),
                                 headers=headers) as r:
                return r.status, (await r.json())["usage"]["prompt_tokens"]

    assert asyncio.run(main()) == (200, 3)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                      "utf-32-le", "utf-32-be"])
def test_a_body_in_any_encoding_json_allows_is_answered(encoding):
    # UTF-16-LE and UTF-32-LE bodies open with "{" too, a NUL after it: not taken for UTF-8.
    async def main():
        async with serving(single()) as (gw, http):
            async with http.post("/v1/chat/completions", data=json.dumps(CHAT).encode(encoding), headers=JSON) as r:
                return r.status, (await r.json())["usage"]["prompt_tokens"]

    assert asyncio.run(main()) == (200, 3)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
_JSON_SPACE = st.text(" \t\n\r", max_size=2)


def _strictly(raw: bytes) -> Any:
    """What the gateway's JSON has always been: the encoding json.detect_encoding tells, then
    the strict decoder; the value, or the words of its error."""
    try:
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except ValueError as exc:
        return f"request body is not valid JSON: {exc}"


@settings(max_examples=400, deadline=None)
@given(value=_JSON_VALUES, before=_JSON_SPACE, after=_JSON_SPACE,
       tail=st.sampled_from(["", "}", "x}", ", 1}", "{}", "NaN}", " }"]), cut=st.integers(0, 8),
       encoding=st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]),
       odd=st.sampled_from([b"", b"{\x00", b"{\x00\x00", b"\xff", b"\x00"]))
def test_a_body_parses_as_detect_encoding_and_the_strict_decoder_parse_it(value, before, after, tail, cut, encoding,
                                                                         odd):
    # The short cut for a UTF-8 object that ends the body must give what the whole way gives:
    # the same value, or the same error, whatever space, cut, encoding or stray bytes surround it.
    text = before + json.dumps(value) + after + tail
    raw = odd + text[:len(text) - cut].encode(encoding, "surrogatepass")
    expected = _strictly(raw)
    if isinstance(expected, str) and expected.startswith("request body is not valid JSON: "):
        with pytest.raises(ApiError) as raised:
            _parse_json(raw)
        assert (raised.value.status, raised.value.message) == (400, expected)
    else:
        assert _parse_json(raw) == expected


@pytest.mark.parametrize("lines,shown", [
    ([b"gzip", b"identity"], "'gzip, identity'"),  # two lines are one list
    ([b"identity", b"identity"], "'identity, identity'"),
    ([b"\xff\xfe"], "'\\xff\\xfe'"),  # shown as the bytes sent
    ([b"x" * 7000], "'" + "x" * 64 + "'..."),  # at most 64 bytes repeated
])
def test_a_coding_of_several_lines_or_odd_bytes_is_a_415_showing_it_short(lines, shown):
    payload = gzip.compress(json.dumps(CHAT).encode())
    head = b"".join(b"Content-Encoding: %s\r\n" % line for line in lines)
    data = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n" + head +
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(payload) + payload)

    async def main():
        async with serving(single()) as (gw, _):
            return await answer_to(gw.port, data)

    [(status, body)] = answers(asyncio.run(main()))
    assert (status, body["error"]["message"]) == (415, f"Content-Encoding must be gzip, deflate or identity; got {shown}")


def test_the_415_for_a_coding_names_those_the_gateway_decodes_and_the_505_answers_in_http_1_1():
    async def main():
        async with serving(single()) as (gw, http):
            codings = []
            for path, method, media in (("/v1/chat/completions", "POST", "application/json"),
                                        ("/admin/config", "PATCH", "application/merge-patch+json")):
                async with http.request(method, path, data=b"{}", headers={
                        "Content-Type": media, "Content-Encoding": "br"}) as r:
                    codings.append((r.status, r.headers["Accept-Encoding"]))
            version = await answer_to(gw.port, b"GET /healthz HTTP/2.0\r\nHost: gw\r\n\r\n")
            return codings, version

    codings, version = asyncio.run(main())
    assert codings == [(415, "gzip, deflate")] * 2
    # RFC 9110 §6.2: the highest version the server speaks below the one asked for.
    assert version.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert b"Connection: close\r\n" in version


# -- pipelined requests: each is answered in order, whatever follows it ------------------------


def upgrade(request: bytes, protocol: bytes) -> bytes:
    """``request`` asking to switch the connection to ``protocol``."""
    return request.replace(b"Host: gw\r\n", b"Host: gw\r\nConnection: Upgrade\r\nUpgrade: %s\r\n" % protocol, 1)


VALID = POST + b"Content-Length: %d\r\n\r\n" % len(PAYLOAD) + PAYLOAD
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(PAYLOAD), PAYLOAD)
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
LONG_PAYLOAD = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 40_000}]}).encode()
LONG = POST + b"Content-Length: %d\r\n\r\n" % len(LONG_PAYLOAD) + LONG_PAYLOAD
LAST = HEALTHZ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
"""A last request, sent after the others: the connection was still open and in step."""
GARBAGE = b"GARBAGE\r\n\r\n"

PIPELINES = [
    # id, bytes sent (each write 50 ms after the one before), statuses answered in order
    # before the gateway closes the connection
    ("three valid", [VALID * 3, LAST], [200, 200, 200, 200]),
    ("valid then garbage", [VALID + GARBAGE], [200, 400]),
    ("two valid then garbage", [VALID * 2 + GARBAGE], [200, 200, 400]),
    ("valid split across two writes then garbage", [VALID[:40], VALID[40:] + GARBAGE], [200, 400]),
    ("body split across two writes then garbage", [VALID[:-10], VALID[-10:] + GARBAGE], [200, 400]),
    ("chunked body split, then valid, then garbage", [CHUNKED[:-20], CHUNKED[-20:] + VALID + GARBAGE],
     [200, 200, 400]),
    ("more than the queue holds, then garbage", [HEALTHZ * 40 + GARBAGE], [200] * 40 + [400]),
    ("a write of many small requests, then garbage", [HEALTHZ * 1000 + GARBAGE], [200] * 1000 + [400]),
    ("a request of 40 kB, then garbage", [LONG + GARBAGE], [200, 400]),
    ("POST with Upgrade: h2c then valid", [upgrade(VALID, b"h2c") + VALID, LAST], [200, 200, 200]),
    ("GET with Upgrade: h2c then valid", [upgrade(HEALTHZ, b"h2c") + VALID, LAST], [200, 200, 200]),
    ("Upgrade: h2c with its body split, then valid",
     [upgrade(VALID, b"h2c")[:-10], upgrade(VALID, b"h2c")[-10:] + VALID, LAST], [200, 200, 200]),
    ("POST with Upgrade: websocket then valid", [upgrade(VALID, b"websocket") + VALID, LAST], [200, 200, 200]),
    ("Upgrade: websocket then valid then garbage", [upgrade(HEALTHZ, b"websocket") + VALID + GARBAGE],
     [200, 200, 400]),
    ("Upgrade then garbage", [upgrade(HEALTHZ, b"h2c") + GARBAGE], [200, 400]),
    ("CONNECT then valid", [b"CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n" + VALID, LAST], [404, 200, 200]),
    ("valid, then a bad chunk, then valid", [VALID + POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + VALID],
     [200, 400]),
    # aiohttp reads nothing after a body it cannot decode: its 400 closes the connection
    ("a body that does not decode, then valid",
     [POST + b"Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello" + VALID], [400]),
]


@pytest.mark.parametrize("writes,statuses", [c[1:] for c in PIPELINES], ids=[c[0] for c in PIPELINES])
def test_pipelined_requests_are_each_answered_in_order_before_a_malformed_one(writes, statuses, caplog):
    """As nginx does: every whole request before bytes that are not HTTP is answered, then
    the 400 for those bytes, which closes the connection at once (reading until it closes
    takes no timeout). The gateway speaks no protocol but HTTP/1.1, so a request asking to
    switch (``Upgrade:``, ``CONNECT``) is answered like any other and what follows it is read
    as more requests (RFC 9110 §7.8): the connection stays open for a last request."""
    async def main():
        async with serving(single()) as (gw, _):
            with caplog.at_level(logging.DEBUG):
                got = [status for status, _ in answers(await answer_to(gw.port, *writes))]
            assert got == statuses
            refused = gw.metrics.registry.get_sample_value("gwlab_requests_total", {"code": "400", "provider": "none"})
            assert (refused or 0) == statuses.count(400)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    asyncio.run(main())


def test_expect_100_continue_with_a_declared_body_over_the_limit_is_413_at_once():
    async def main():
        async with serving(single()) as (gw, _):
            head = POST + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (5 * 2**20)
            [(status, body)] = answers(await answer_to(gw.port, head))
            assert (status, body["error"]["code"]) == (413, "request_too_large")

    asyncio.run(main())


def test_the_fields_the_api_allows_are_accepted_and_ignored():
    fields = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 5, "max_completion_tokens": 5, "n": 1,
              "stop": ["\n"], "user": "u", "seed": 3, "presence_penalty": 0, "frequency_penalty": 0,
              "logit_bias": {"50256": -100}, "response_format": {"type": "json_object"},
              "tools": [{"type": "function", "function": {"name": "w", "parameters": {}}}], "tool_choice": "auto",
              "parallel_tool_calls": True, "stream": False, "metadata": {"k": "v"}, "store": False,
              "reasoning_effort": "low", "logprobs": False}

    async def main():
        async with serving(single()) as (gw, http):
            status, _, body = await post(http, {**CHAT, **fields})
            assert (status, body["object"]) == (200, "chat.completion")

    asyncio.run(main())


def test_the_access_log_is_off_at_info(caplog):
    async def main():
        async with serving(single()) as (gw, http):
            with caplog.at_level(logging.INFO):
                for _ in range(3):
                    assert (await post(http))[0] == 200
        assert [r for r in caplog.records if r.name.startswith("aiohttp")] == []

    asyncio.run(main())


# -- the tokens-per-minute limit and OpenAI's rate-limit headers ----------------------------

RATELIMIT = ("limit", "remaining", "reset")


def limits(headers: Any, kind: str = "requests") -> tuple[str, str, str] | None:
    """The ``x-ratelimit-{limit,remaining,reset}-KIND`` values of an answer (None if absent)."""
    values = tuple(headers.get(f"x-ratelimit-{name}-{kind}") for name in RATELIMIT)
    assert values == (None,) * 3 or None not in values, values  # all three or none
    return None if values[0] is None else values


def capped(max_tokens: int) -> dict[str, Any]:
    """``CHAT`` (3 prompt tokens) with ``max_tokens``: it reserves 3 + max_tokens tokens."""
    return {**CHAT, "max_tokens": max_tokens}


@pytest.mark.parametrize(("provider", "status"), [({}, 200), ({"error_rate": 1.0}, 502),
                                                  ({"outage": "hang"}, 504)], ids=["200", "502", "504"])
def test_every_answer_carries_the_requests_limits_headers_and_no_tokens_ones_while_tpm_is_off(provider, status):
    t = [0.0]

    async def main():
        scenario = single(gateway={"timeout": 0.01}, limiter={"rate": 2, "burst": 10}, **provider)
        async with serving(scenario, clock=lambda: t[0]) as (gw, http):
            first = await post(http)
            t[0] = 0.25  # half a token back
            second = await post(http)
            for _ in range(8):
                await post(http)
            return first, second, await post(http)

    first, second, refused = asyncio.run(main())
    assert first[0] == status and limits(first[1]) == ("10", "9", "500ms")
    assert limits(first[1], "tokens") is None
    assert limits(second[1]) == ("10", "8", "750ms")  # 8.5 tokens: 8 whole ones, full in 0.75 s
    assert refused[0] == 429 and limits(refused[1]) == ("10", "0", "4.75s")
    assert limits(refused[1], "tokens") is None


def test_a_streamed_answer_carries_the_headers_with_its_200_and_gives_back_what_it_did_not_use():
    t = [0.0]

    async def main():
        async with serving(single(limiter={"rate": 1, "burst": 10, "tpm": 600}), clock=lambda: t[0]) as (gw, http):
            async with http.post("/v1/chat/completions", json={**capped(20), "stream": True}) as r:
                status, headers = r.status, r.headers
                events = await r.read()
            after = await post(http, capped(20))
            return status, headers, events, after

    status, headers, events, after = asyncio.run(main())
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    assert events.endswith(b"data: [DONE]\n\n")
    assert limits(headers) == ("10", "9", "1s")
    # Sent at the first token: the reservation (3 + 20) is held while the stream runs.
    assert limits(headers, "tokens") == ("600", "577", "2.3s")
    # The stream used 3 + 9 (the fixed reply); the next request reserved 23 and used 12 too.
    assert after[0] == 200 and limits(after[1], "tokens") == ("600", "576", "2.4s")


@pytest.mark.parametrize(("provider", "used", "reset"), [({}, 12, "1.2s"), ({"error_rate": 1.0}, 3, "300ms")],
                         ids=["200", "502"])
def test_the_unused_reservation_comes_back_before_the_answer_is_sent(provider, used, reset):
    t = [0.0]

    async def main():
        async with serving(single(limiter={"tpm": 600}, **provider), clock=lambda: t[0]) as (gw, http):
            return await post(http, capped(100))

    _, headers, _ = asyncio.run(main())
    # 103 reserved; the prompt's 3 and the reply's 9 (none for a failure) used; 10 tokens a second.
    assert limits(headers, "tokens") == ("600", str(600 - used), reset)
    assert limits(headers) == ("1000", "999", "1ms")


def test_a_request_short_of_tokens_is_a_429_rate_limit_tokens_with_that_buckets_wait():
    t = [0.0]

    async def main():
        # 60 tokens a minute: one a second. Each request reserves 3 + 40 and uses 3 + 9.
        async with serving(single(limiter={"rate": 1, "burst": 10, "tpm": 60}), clock=lambda: t[0]) as (gw, http):
            answers = [await post(http, capped(40)) for _ in range(3)]
            t[0] = 7.0
            answers.append(await post(http, capped(40)))
            return answers

    answers = asyncio.run(main())
    assert [a[0] for a in answers] == [200, 200, 429, 200]
    status, headers, body = answers[2]
    # 60 - 12 - 12 = 36 tokens; 43 are needed: 7 s.
    assert (headers["Retry-After"], headers["retry-after-ms"]) == ("7", "7000")
    assert body["error"]["code"] == "rate_limit_tokens" and body["error"]["type"] == "rate_limit_error"
    assert "reserves 43 tokens" in body["error"]["message"] and "60 tokens per minute" in body["error"]["message"]
    assert limits(headers, "tokens") == ("60", "36", "24s")
    assert limits(headers) == ("10", "8", "2s")  # the refused request's token went back
    assert headers["x-gwlab-provider"] == "none"


@pytest.mark.parametrize(("reserved", "code", "wait_ms"), [
    (43, "rate_limit_tokens", "7000"),  # 7 tokens short: 7 s; a request token in 2 s
    (37, "rate_limit_requests", "2000"),  # 1 token short: 1 s
    (38, "rate_limit_requests", "2000"),  # 2 tokens short: 2 s, a tie
], ids=["tokens later", "requests later", "a tie"])
def test_when_both_limits_are_short_the_429_names_the_later_one(reserved, code, wait_ms):
    t = [0.0]

    async def main():
        # Two requests empty the requests bucket (a token in 2 s) and leave 60 - 2 * 12 = 36 tokens.
        async with serving(single(limiter={"rate": 0.5, "burst": 2, "tpm": 60}), clock=lambda: t[0]) as (gw, http):
            for _ in range(2):
                assert (await post(http, capped(40)))[0] == 200
            return await post(http, capped(reserved - 3))

    status, headers, body = asyncio.run(main())
    assert (status, body["error"]["code"], headers["retry-after-ms"]) == (429, code, wait_ms)
    assert limits(headers) == ("2", "0", "4s") and limits(headers, "tokens") == ("60", "36", "24s")


@pytest.mark.parametrize(("request_body", "param", "text"), [
    (capped(58), "max_tokens", "reserves 61 tokens (3 of the prompt and max_tokens 58)"),
    (CHAT, "messages", "reserves 4099 tokens (3 of the prompt and limiter.default_max_tokens 4096 (no max_tokens))"),
    (capped(10**4000 - 1), "max_tokens", "reserves 1E+4000 tokens (3 of the prompt and max_tokens 1E+4000), more"),
], ids=["max_tokens", "the default", "max_tokens of 4000 digits, shown rounded"])
def test_a_request_larger_than_the_tokens_limit_is_a_400_that_takes_nothing(request_body, param, text):
    t = [0.0]

    async def main():
        scenario = single(limiter={"burst": 5, "tpm": 60}, breaker={"failure_threshold": 1}, error_rate=1.0)
        async with serving(scenario, clock=lambda: t[0]) as (gw, http):
            answer = await post(http, request_body)
            return answer, gw.router.snapshot(0.0), gw.metrics.answers.get((400, "none"))

    (status, headers, body), snapshot, counted = asyncio.run(main())
    assert status == 400 and body["error"]["code"] == "context_exceeds_limit"
    assert body["error"]["param"] == param and text in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error" and len(body["error"]["message"]) < 300
    # Nothing taken from either bucket, no provider called, no breaker charged.
    assert limits(headers) == ("5", "5", "0s") and limits(headers, "tokens") == ("60", "60", "0s")
    assert (snapshot.tokens, snapshot.tpm_tokens, snapshot.in_flight) == (5.0, 60.0, 0)
    assert snapshot.providers["p1"].state.value == "healthy"
    assert headers["x-gwlab-provider"] == "none" and counted == 1


def test_a_tokens_limit_switched_on_at_run_time_starts_full_and_shows_in_the_headers():
    t = [0.0]

    async def main():
        async with serving(single(), clock=lambda: t[0]) as (gw, http):
            before = await post(http, capped(20))
            gw.configure({"limiter": {"tpm": 6000}})
            after = await post(http, capped(20))
            state = await (await http.get("/admin/config")).json()
            return before, after, state

    before, after, state = asyncio.run(main())
    assert limits(before[1], "tokens") is None
    assert limits(after[1], "tokens") == ("6000", "5988", "120ms")
    assert state["limiter"]["tpm"] == 6000


def test_answers_while_the_bucket_is_full_carry_its_capacity_also_after_it_changes():
    t = [0.0]

    async def main():
        async with serving(single(limiter={"rate": 100, "burst": 10}), clock=lambda: t[0]) as (gw, http):
            answers = []
            for at, patch in ((1.0, None), (2.0, None), (3.0, {"limiter": {"burst": 20}}), (100.0, None)):
                if patch:
                    gw.configure(patch)
                t[0] = at
                answers.append(await post(http))
            return answers

    answers = asyncio.run(main())
    # Each request takes a token and the answer goes out at the same instant: 9 of 10...
    assert [limits(a[1]) for a in answers] == [("10", "9", "10ms")] * 2 + [("20", "19", "10ms")] * 2
    # ... while a provider that takes time answers once the bucket is full again.

    async def later():
        scenario = single(limiter={"rate": 1000, "burst": 10}, latency=0.05)  # refills 50 in a call
        async with serving(scenario) as (gw, http):
            first = await post(http)
            gw.configure({"limiter": {"burst": 30}})
            return first, await post(http)

    first, second = asyncio.run(later())
    assert limits(first[1]) == ("10", "10", "0s") and limits(second[1]) == ("30", "30", "0s")
    for status, headers, _ in (first, second):
        assert (status, headers["x-gwlab-provider"], headers["x-gwlab-route"]) == (200, "p1", "weighted")
        assert headers["Content-Type"] == "application/json"


def test_a_providers_429_carries_the_rate_limit_headers_and_gives_back_all_but_the_prompt():
    async def main():
        # One slot, no queue: the second request, sent while the first runs, is the provider's 429.
        async with serving(single(limiter={"tpm": 60}, latency=0.5, capacity=1, queue=0)) as (gw, http):
            first = asyncio.create_task(post(http, capped(20)))
            await asyncio.sleep(0.1)
            refused = await post(http, capped(20))
            answered = await first
            return refused, answered, gw.router.snapshot(gw.clock()).tpm_tokens

    (status, headers, body), answered, level = asyncio.run(main())
    assert (status, body["error"]["code"], headers["x-gwlab-provider"]) == (429, "provider_rate_limited", "p1")
    # 60 less the first's 23 reserved and the refused one's prompt (3): its reservation's rest went back.
    assert limits(headers, "tokens")[:2] == ("60", "34") and limits(headers)[0] == "1000"
    assert answered[0] == 200 and limits(answered[1], "tokens")[:2] == ("60", "45")
    assert 45 <= level < 47  # the prompts (3 + 3) and the reply (9) used, and under a second's refill


def test_a_call_that_gave_up_waiting_for_a_slot_carries_the_rate_limit_headers_and_uses_its_prompt():
    async def main():
        # A stream of 40 tokens holds the one slot for 0.8 s (its first token within the
        # timeout); a call that waits for the slot gives up 0.3 s after its routing.
        scenario = single(gateway={"timeout": 0.3}, limiter={"tpm": 60}, ttft=0.01, output_tokens=40.0,
                          decode_rate=50.0, capacity=1, queue=1)
        async with serving(scenario) as (gw, http):
            async def streamed():
                async with http.post("/v1/chat/completions", json={**capped(50), "stream": True}) as r:
                    return r.status, r.headers, await r.text()

            first = asyncio.create_task(streamed())
            await asyncio.sleep(0.1)
            waited = await post(http, capped(2))
            answered = await first
            return waited, answered, gw.router.snapshot(gw.clock()).tpm_tokens

    (status, headers, body), answered, level = asyncio.run(main())
    assert (status, body["error"]["code"]) == (504, "provider_timeout") and "had no free slot" in body["error"]["message"]
    # 60 less the stream's 53 reserved and the 504's prompt (3): the rest of its 5 went back.
    assert limits(headers, "tokens")[:2] == ("60", "4") and limits(headers)[0] == "1000"
    # The stream's headers at its first frame: 60 less its 53.
    assert answered[0] == 200 and limits(answered[1], "tokens")[:2] == ("60", "7")
    # Both ended: the stream's 3 + 40 used, the 504's 3, and under a second and a half's refill.
    assert 14 <= level < 15.5
