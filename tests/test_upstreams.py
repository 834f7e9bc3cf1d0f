"""Real upstreams (``kind = "openai"``), with real servers on loopback: a second gateway as the
upstream, whose simulated errors, limits and latencies drive the first one's breakers, and
small aiohttp apps that misbehave (a garbage body, a reset mid-stream, a hang, 4xx)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import tomllib
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import openai
import pytest
from aiohttp import web

from gwlab import config
from gwlab.breaker import State
from gwlab.cli import main
from gwlab.config import ConfigError
from gwlab.errors import PROVIDER_HEADER
from gwlab.forward import Forwarder, read_body
from gwlab.observe import InvalidAnswer
from gwlab.providers import Call, Outcome
from gwlab.router import Router
from gwlab.server import Gateway
from gwlab.sim import simulate
from gwlab.stats import STREAM_ERROR
from gwlab.wire import error_frame
from tests.conftest import SIMULATION_TIMEOUT
from tests.support import CHAT, reset_unread, serving

pytestmark = pytest.mark.timeout(SIMULATION_TIMEOUT)  # it simulates, once, to be refused

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "upstream.toml"
KEY = "sk-test-0123456789abcdef"
"""The API key the tests put in the environment: it must reach the upstream and nothing else."""


def real(url: str, **fields: Any) -> dict[str, Any]:
    """A provider table of a real upstream at ``url``."""
    return {"kind": "openai", "base_url": url, **fields}


def front(providers: dict[str, dict[str, Any]], **sections: Any) -> config.Scenario:
    return config.from_dict({"providers": providers, **sections})


@contextlib.asynccontextmanager
async def upstream_gateway(providers: dict[str, dict[str, Any]], **sections: Any) -> AsyncIterator[Gateway]:
    """A second gateway, the upstream, on free ports."""
    gw = Gateway(config.from_dict({"providers": providers, **sections}))
    await gw.start(port=0, metrics_port=0)
    try:
        yield gw
    finally:
        await gw.stop()


@contextlib.asynccontextmanager
async def upstream_app(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A small aiohttp app answering ``POST /v1/chat/completions`` with ``handler``; its base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
    finally:
        await runner.cleanup()


def state(gw: Gateway, name: str = "up") -> State:
    return gw.snapshot().providers[name].state


def chunk(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def post(http: aiohttp.ClientSession, body: dict[str, Any] = CHAT) -> tuple[int, Any, bytes]:
    async with http.post("/v1/chat/completions", json=body) as r:
        return r.status, r.headers, await r.read()


# -- a second gateway as the upstream -----------------------------------------------------------


def test_an_upstream_whose_provider_always_fails_trips_the_breaker_after_the_threshold():
    async def main_():
        async with upstream_gateway({"b": {"latency": 0.0, "error_rate": 1.0}}) as back:
            scenario = front({"up": real(back.url + "/v1")}, gateway={"fallback": "reject"})
            async with serving(scenario) as (gw, http):
                seen = []
                for _ in range(4):
                    status, headers, _ = await post(http)
                    seen.append((status, headers["x-gwlab-provider"], state(gw).value))
                async with aiohttp.ClientSession() as direct:
                    async with direct.get(gw.metrics_url) as r:
                        scraped = (await r.text()).splitlines()
                return seen, back.metrics.answers[502, "b"], gw.snapshot().providers["up"].trips, scraped

    seen, upstream_502s, trips, scraped = asyncio.run(main_())
    assert config.FAILURE_THRESHOLD == 3
    assert seen == [(502, "up", "failing"), (502, "up", "failing"), (502, "up", "open"), (503, "none", "open")]
    assert (upstream_502s, trips) == (3, 1)  # the fourth never left the front gateway
    # Counted as a simulated provider's calls are.
    assert {'gwlab_requests_total{code="502",provider="up"} 3.0', 'gwlab_requests_total{code="503",provider="none"} 1.0',
            'gwlab_provider_requests_total{outcome="error",provider="up"} 3.0',
            'gwlab_breaker_transitions_total{from_state="failing",provider="up",to_state="open"} 1.0'} <= set(scraped)


def test_an_upstream_slower_than_the_gateway_timeout_is_a_504_and_a_breaker_failure():
    async def main_():
        async with upstream_gateway({"b": {"latency": 0.5}}) as back:
            scenario = front({"up": real(back.url + "/v1")}, gateway={"timeout": 0.2}, breaker={"failure_threshold": 1})
            async with serving(scenario) as (gw, http):
                started = time.monotonic()
                status, _, body = await post(http)
                return status, json.loads(body)["error"]["message"], time.monotonic() - started, state(gw)

    status, message, took, breaker = asyncio.run(main_())
    assert (status, message, breaker) == (504, "provider up did not answer within 0.2 s", State.OPEN)
    assert 0.2 <= took < 0.5  # the upstream's 0.5 s answer is not waited for


def test_the_upstreams_429_and_its_retry_after_reach_the_client():
    async def main_():
        async with upstream_gateway({"b": {"latency": 0.0}}, limiter={"rate": 0.5, "burst": 1}) as back:
            scenario = front({"up": real(back.url + "/v1")}, breaker={"count_rate_limited": False})
            async with serving(scenario) as (gw, http):
                first = await post(http)
                async with aiohttp.ClientSession() as direct:  # what the upstream says now, asked directly
                    async with direct.post(back.url + "/v1/chat/completions", json=CHAT) as r:
                        upstream = r.status, r.headers["retry-after-ms"]
                status, headers, body = await post(http)
                return first[0], upstream, status, headers, json.loads(body), state(gw)

    first, upstream, status, headers, body, breaker = asyncio.run(main_())
    assert first == 200
    assert upstream[0] == 429
    assert status == 429 and headers["x-gwlab-provider"] == "up"
    assert body["error"]["code"] == "provider_rate_limited"
    # Both ask for the rest of the same 2 s refill: the later answer asks no longer.
    assert 0 < float(headers["retry-after-ms"]) <= float(upstream[1]) <= 2000
    assert headers["Retry-After"] == "2"
    assert breaker is State.HEALTHY  # count_rate_limited = false


def test_streams_pass_through_both_gateways_to_the_openai_sdk():
    tokens = 5  # one frame each at the default 50 tokens/s

    async def main_():
        async with upstream_gateway({"b": {"ttft": 0.01, "output_tokens": tokens}}) as back:
            async with serving(front({"up": real(back.url + "/v1")})) as (gw, _):
                async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as sdk:
                    stream = await sdk.chat.completions.create(
                        model="gwlab-sim", messages=CHAT["messages"], stream=True,
                        stream_options={"include_usage": True})
                    chunks = [c async for c in stream]

                def sync() -> list[Any]:
                    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
                        return list(client.chat.completions.create(model="gwlab-sim", messages=CHAT["messages"],
                                                                   stream=True))

                plain = await asyncio.to_thread(sync)
                return chunks, plain, gw.metrics

    chunks, plain, metrics = asyncio.run(main_())
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) == tokens
    assert chunks[-1].usage.completion_tokens == tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len([c for c in plain if c.choices and c.choices[0].delta.content]) == tokens
    assert metrics.answers[200, "up"] == 2
    assert metrics.tokens["up", "completion"] == 2 * tokens  # the usage frame's count, and the frames' count
    assert sum(metrics.ttft["up"].counts) == 2


def test_a_stream_that_fails_upstream_after_its_first_token_is_a_stream_error():
    async def main_():
        async with upstream_gateway({"b": {"ttft": 0.01, "output_tokens": 4, "stream_error_rate": 1.0}}) as back:
            async with serving(front({"up": real(back.url + "/v1")})) as (gw, http):
                status, _, body = await post(http, {**CHAT, "stream": True})
                return status, body, gw.metrics.answers[STREAM_ERROR, "up"], gw.snapshot().providers["up"]

    status, body, stream_errors, provider = asyncio.run(main_())
    frames = [f for f in body.split(b"\n\n") if f]
    assert (status, stream_errors) == (200, 1)
    assert json.loads(frames[-1].removeprefix(b"data: "))["error"]["code"] == "provider_stream_error"
    assert provider.state is State.FAILING


def test_simulated_and_real_providers_mix_and_a_retry_goes_from_one_to_the_other():
    async def main_():
        async with upstream_gateway({"b": {"latency": 0.0}}) as good, \
                upstream_gateway({"b": {"latency": 0.0, "error_rate": 1.0}}) as bad:
            mixed = front({"sim": {"latency": 0.0}, "up": real(good.url + "/v1")},
                          gateway={"balancer": "round_robin"})
            async with serving(mixed) as (_, http):
                alternating = [(await post(http))[1]["x-gwlab-provider"] for _ in range(4)]
            retried = front({"up": real(bad.url + "/v1", weight=100.0), "sim": {"latency": 0.0, "weight": 1e-6}},
                            retry={"attempts": 2, "base_delay": 0.001, "max_delay": 0.001})
            async with serving(retried) as (gw, http):
                status, headers, body = await post(http)
                return alternating, status, headers, json.loads(body), gw.metrics.attempts

    alternating, status, headers, body, attempts = asyncio.run(main_())
    assert sorted(alternating) == ["sim", "sim", "up", "up"] and alternating[0] != alternating[1]
    assert (status, headers["x-gwlab-provider"], headers["x-gwlab-attempts"]) == (200, "sim", "2")
    assert "provider sim" in body["choices"][0]["message"]["content"]
    assert attempts == {(502, "up"): 1}


def test_a_real_upstreams_own_limits_apply_at_the_gateway_without_a_call():
    async def main_():
        async with upstream_gateway({"b": {"latency": 0.0}}) as back:
            async with serving(front({"up": real(back.url + "/v1", rpm=1)})) as (_, http):
                answers = [await post(http) for _ in range(3)]
                return [(status, json.loads(body).get("error", {}).get("code")) for status, _, body in answers], \
                    back.metrics.answers[200, "b"]

    answers, forwarded = asyncio.run(main_())
    assert answers == [(200, None), (429, "provider_rate_limited"), (429, "provider_rate_limited")]
    assert forwarded == 1


def claiming(tokens: int) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An upstream answering one token of content and a usage of ``tokens`` output tokens,
    whole or streamed (a content frame, a usage frame, ``[DONE]``) as asked."""
    usage = {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": tokens + 3}

    async def handler(request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.json_response({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                                   "finish_reason": "stop"}], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        usage_frame = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
                       "usage": usage}
        await response.write(chunk("hi") + b"data: " + json.dumps(usage_frame).encode() + b"\n\n" + b"data: [DONE]\n\n")
        return response

    return handler


@pytest.mark.parametrize("claimed, max_tokens, counted", [
    (10**30, 10, 10),  # far past any bound
    (11, 10, 10),  # one past the cap
    (10, 10, 10),
    (7, 10, 7),  # within the cap: as reported
    (10**30, None, config.MAX_OUTPUT_TOKENS),
    (2_000, None, 2_000),
    (0, 10, 0),  # an answer of no tokens: its prompt still counts
])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_upstreams_usage_is_counted_up_to_the_requests_cap(claimed, max_tokens, counted, stream):
    """However many output tokens an upstream reports, the gateway counts at most what its
    request allowed: the tokens counter, and a tokens limit that a wrong usage would
    otherwise lock for hours, take no more."""
    limits = {"limiter": {"tpm": 100}} if max_tokens is not None else {}
    body = {**CHAT, "stream": stream, **({} if max_tokens is None else {"max_tokens": max_tokens})}

    async def main_():
        async with upstream_app(claiming(claimed)) as url:
            async with serving(front({"up": real(url)}, **limits)) as (gw, http):
                statuses = [(await post(http, body))[0] for _ in range(2)]
                return statuses, gw.metrics.tokens["up", "completion"], gw.metrics.tokens["up", "prompt"]

    statuses, tokens, prompt = asyncio.run(main_())
    assert statuses == [200, 200]  # 2 x (3 + 10) of 100 tokens a minute: no 429
    assert (tokens, prompt) == (2 * counted, 2 * 3)


# -- upstreams that misbehave ---------------------------------------------------------------------


async def garbage(request: web.Request) -> web.Response:
    return web.Response(body=b"<html>not json</html>", content_type="text/html")


def status_answer(status: int) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        body = {"error": {"message": f"upstream says {status}", "type": "invalid_request_error",
                          "param": "messages", "code": f"code_{status}"}}
        return web.json_response(body, status=status, headers={"x-upstream": "yes"})
    return handler


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [400, 404, 422])
def test_the_upstreams_400_404_422_pass_through_and_charge_no_breaker(status, stream):
    async def main_():
        async with upstream_app(status_answer(status)) as url:
            async with serving(front({"up": real(url)}, breaker={"failure_threshold": 1})) as (gw, http):
                async with aiohttp.ClientSession() as direct:
                    async with direct.post(url + "/chat/completions", json=CHAT) as r:
                        upstream = await r.read()
                answered = await post(http, {**CHAT, "stream": stream})
                return upstream, answered, state(gw), gw.metrics.answers[status, "up"]

    upstream, (got, headers, body), breaker, counted = asyncio.run(main_())
    assert (got, body) == (status, upstream)
    assert headers["Content-Type"].startswith("application/json") and headers["x-gwlab-provider"] == "up"
    assert breaker is State.HEALTHY and counted == 1


@pytest.mark.parametrize("status", [401, 403, 408, 500, 503])
def test_the_upstreams_401_403_408_5xx_are_a_502_and_a_breaker_failure(status):
    async def main_():
        async with upstream_app(status_answer(status)) as url:
            async with serving(front({"up": real(url)}, breaker={"failure_threshold": 1})) as (gw, http):
                return await post(http), state(gw)

    (got, headers, body), breaker = asyncio.run(main_())
    assert got == 502 and headers["x-gwlab-provider"] == "up"
    assert json.loads(body)["error"]["code"] == "provider_error"
    assert breaker is State.OPEN


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_but_a_502_and_a_breaker_failure(status):
    # Followed, it would reach a path the upstream does not serve (a 404 or 405, passed through).
    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": "/elsewhere"})

    async def main_():
        async with upstream_app(redirect) as url:
            async with serving(front({"up": real(url)}, breaker={"failure_threshold": 1})) as (gw, http):
                return await post(http), state(gw)

    (got, _, body), breaker = asyncio.run(main_())
    assert got == 502 and json.loads(body)["error"]["code"] == "provider_error"
    assert breaker is State.OPEN


@pytest.mark.parametrize("stream", [False, True])
def test_a_garbage_body_is_a_502(stream):
    async def main_():
        async with upstream_app(garbage) as url:
            async with serving(front({"up": real(url)}, breaker={"failure_threshold": 1})) as (gw, http):
                return await post(http, {**CHAT, "stream": stream}), state(gw)

    (got, _, body), breaker = asyncio.run(main_())
    assert got == 502 and json.loads(body)["error"]["code"] == "provider_error"
    assert breaker is State.OPEN


def test_a_connection_reset_mid_stream_ends_the_stream_with_the_error_frame():
    async def reset(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk("") + chunk("Hello") + chunk(" there"))
        await asyncio.sleep(0.05)
        request.transport.abort()  # a reset, mid-stream
        return response

    async def main_():
        async with upstream_app(reset) as url:
            async with serving(front({"up": real(url)})) as (gw, http):
                got = await post(http, {**CHAT, "stream": True})
                return got, gw.metrics, gw.snapshot().providers["up"]

    (status, _, body), metrics, provider = asyncio.run(main_())
    frames = [f for f in body.split(b"\n\n") if f]
    assert status == 200
    assert [f + b"\n\n" for f in frames[:3]] == [chunk(""), chunk("Hello"), chunk(" there")]
    error = json.loads(frames[3].removeprefix(b"data: "))["error"]
    assert (error["code"], error["message"]) == ("provider_stream_error", "provider up failed after 2 tokens")
    assert len(frames) == 4
    assert metrics.answers[STREAM_ERROR, "up"] == 1 and sum(metrics.ttft["up"].counts) == 1
    assert provider.state is State.FAILING


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_hangs_is_a_504_within_the_gateway_timeout(stream):
    timeout = 0.3

    async def hang(request: web.Request) -> web.StreamResponse:
        if stream:  # the head and a role frame, then nothing: no first content token
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(chunk(""))
        await asyncio.sleep(30)
        return web.Response()

    async def main_():
        async with upstream_app(hang) as url:
            scenario = front({"up": real(url)}, gateway={"timeout": timeout}, breaker={"failure_threshold": 1})
            async with serving(scenario) as (gw, http):
                started = time.monotonic()
                got = await post(http, {**CHAT, "stream": stream})
                return got, time.monotonic() - started, state(gw)

    (status, _, body), took, breaker = asyncio.run(main_())
    assert status == 504 and json.loads(body)["error"]["code"] == "provider_timeout"
    assert timeout <= took < timeout + 0.5
    assert breaker is State.OPEN


def test_an_upstream_stream_idle_past_the_idle_timeout_is_a_stream_error():
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk("Hello"))
        await asyncio.sleep(30)
        return response

    async def main_():
        async with upstream_app(stall) as url:
            scenario = front({"up": real(url)}, gateway={"stream_idle_timeout": 0.2})
            async with serving(scenario) as (gw, http):
                started = time.monotonic()
                got = await post(http, {**CHAT, "stream": True})
                return got, time.monotonic() - started, gw.metrics.answers[STREAM_ERROR, "up"]

    (status, _, body), took, stream_errors = asyncio.run(main_())
    assert status == 200
    assert b"provider up failed after 1 token: no token within gateway.stream_idle_timeout = 0.2 s" in body
    assert 0.2 <= took < 0.7 and stream_errors == 1


KEEPALIVE = b": keepalive\n\n"
DRIBBLE = b" "
"""A byte at a time of an event that never ends (after ``data: ``): never a frame."""
BLANK = b"\n"
NO_TOKEN = chunk("")
"""A chunk whose delta carries no token."""
DONE = b"data: [DONE]\n\n"
NO_CHOICES = b'data: {"foo": 1}\n\n' + DONE
CHOICES_NOT_A_LIST = b'data: {"choices": {"0": {"delta": {"content": "x"}}}}\n\n' + DONE
AN_ARRAY = b'data: [{"choices": []}]\n\n' + DONE
IDLE = 0.3
"""The gateway's ``timeout`` and ``stream_idle_timeout`` in the relay's tests: seconds."""
MARGIN = 0.3
"""Seconds a stream may end past its bound on a loaded machine."""


def repeating(head: bytes, piece: bytes) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An upstream's stream: ``head``, then ``piece`` every 50 ms until the gateway leaves."""
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(head)
            while True:
                await asyncio.sleep(0.05)
                await response.write(piece)
        except ConnectionResetError:
            pass
        return response

    return handler


async def relayed(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> tuple[Any, ...]:
    """A stream through the gateway from ``handler``'s upstream, both bounds :data:`IDLE`:
    its status, frames, seconds taken, answers counted for ``up`` and breaker state."""
    async with upstream_app(handler) as url:
        scenario = front({"up": real(url)}, gateway={"timeout": IDLE, "stream_idle_timeout": IDLE})
        async with serving(scenario) as (gw, http):
            started = time.monotonic()
            status, _, body = await post(http, {**CHAT, "stream": True})
            took = time.monotonic() - started
            answers = {code: n for (code, name), n in gw.metrics.answers.items() if name == "up" and n}
            return status, [f + b"\n\n" for f in body.split(b"\n\n") if f], took, answers, state(gw)


@pytest.mark.parametrize("piece, passed_on", [
    (KEEPALIVE, False),
    (DRIBBLE, False),
    (BLANK, False),
    (NO_TOKEN, True),
], ids=["comments", "dribbled-bytes", "blank-lines", "frames-without-a-token"])
def test_nothing_but_a_token_holds_a_stream_open_past_the_idle_timeout(piece, passed_on):
    head = chunk("Hello") + (b"data: " if piece is DRIBBLE else b"")
    status, frames, took, answers, breaker = asyncio.run(relayed(repeating(head, piece)))
    assert status == 200 and frames[0] == chunk("Hello")
    assert frames[1:-1] == [piece] * (len(frames) - 2) if passed_on else len(frames) == 2
    message = f"provider up failed after 1 token: no token within gateway.stream_idle_timeout = {IDLE:g} s"
    assert frames[-1] == error_frame(502, message, "provider_stream_error")
    assert (answers, breaker) == ({STREAM_ERROR: 1}, State.FAILING)
    assert IDLE <= took < IDLE + MARGIN


@pytest.mark.parametrize("piece", [KEEPALIVE, DRIBBLE, BLANK, NO_TOKEN],
                         ids=["comments", "dribbled-bytes", "blank-lines", "frames-without-a-token"])
def test_nothing_but_a_token_holds_the_wait_for_the_first_past_the_gateway_timeout(piece):
    status, frames, took, answers, breaker = asyncio.run(relayed(repeating(b"data: " if piece is DRIBBLE else b"",
                                                                          piece)))
    assert status == 504
    assert json.loads(frames[0])["error"] == {"message": f"provider up did not answer within {IDLE:g} s",
                                              "type": "api_error", "param": None, "code": "provider_timeout"}
    assert (answers, breaker) == ({504: 1}, State.FAILING)
    assert IDLE <= took < IDLE + MARGIN


@pytest.mark.parametrize("invalid", [NO_CHOICES, CHOICES_NOT_A_LIST, AN_ARRAY],
                         ids=["no-choices", "choices-not-a-list", "an-array"])
def test_an_invalid_frame_before_the_first_token_is_a_502(invalid):
    status, frames, took, answers, breaker = asyncio.run(relayed(repeating(NO_TOKEN, invalid)))
    assert status == 502
    assert json.loads(frames[0])["error"] == {"message": "provider up failed", "type": "api_error",
                                              "param": None, "code": "provider_error"}
    assert (answers, breaker) == ({502: 1}, State.FAILING)
    assert took < IDLE  # at the frame, not at a timeout


@pytest.mark.parametrize("invalid", [NO_CHOICES, CHOICES_NOT_A_LIST, AN_ARRAY],
                         ids=["no-choices", "choices-not-a-list", "an-array"])
def test_an_invalid_frame_after_the_first_token_ends_the_stream_with_the_error_frame(invalid):
    head = chunk("Hello") + chunk(" there")
    status, frames, took, answers, breaker = asyncio.run(relayed(repeating(head, chunk("!") + invalid)))
    assert status == 200
    assert frames == [chunk("Hello"), chunk(" there"), chunk("!"),
                      error_frame(502, "provider up failed after 3 tokens", "provider_stream_error")]
    assert (answers, breaker) == ({STREAM_ERROR: 1}, State.FAILING)
    assert took < IDLE


def test_tokens_each_within_the_idle_timeout_keep_a_stream_longer_than_it():
    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ["a", "b", "c", "d", "e"]:
            await response.write(chunk(word) + KEEPALIVE)
            await asyncio.sleep(IDLE / 3)
        await response.write(chunk(finish="stop") + DONE)
        return response

    status, frames, took, answers, breaker = asyncio.run(relayed(slow))
    assert (status, answers, breaker) == (200, {200: 1}, State.HEALTHY)
    assert frames == [*(chunk(word) for word in "abcde"), chunk(finish="stop"), DONE]
    assert took > IDLE


def _reasoning(field: str, text: str) -> bytes:
    return b"data: " + json.dumps({"object": "chat.completion.chunk",
                                   "choices": [{"index": 0, "delta": {field: text}}]}).encode() + b"\n\n"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_reasoning_models_thinking_is_its_first_token_and_keeps_its_stream_open(field):
    # A reasoning model streams its reasoning before the answer, for longer than both bounds.
    async def thinking(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(6):
            await response.write(_reasoning(field, "hm"))
            await asyncio.sleep(IDLE / 3)
        await response.write(chunk("Yes") + chunk(finish="stop") + DONE)
        return response

    status, frames, took, answers, breaker = asyncio.run(relayed(thinking))
    assert (status, answers, breaker) == (200, {200: 1}, State.HEALTHY)
    assert frames == [*[_reasoning(field, "hm")] * 6, chunk("Yes"), chunk(finish="stop"), DONE]
    assert took > 2 * IDLE


def test_a_relayed_stream_a_stop_cuts_off_ends_with_the_gateways_error_frame():
    async def main_():
        async with upstream_app(repeating(chunk("Hello"), chunk(" again"))) as url:
            scenario = front({"up": real(url)}, gateway={"stream_idle_timeout": 5.0})
            gw = Gateway(scenario)
            await gw.start(port=0, metrics_port=0)
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
                        first = await r.content.readuntil(b"\n\n")
                        await gw.stop(grace=0.1)
                        rest = await r.content.read()  # the body ends properly: no error reading it
            finally:
                await gw.stop()
            return first, rest, gw.metrics.answers.get((499, "up"), 0)

    first, rest, cut_off = asyncio.run(main_())
    assert first == chunk("Hello") and cut_off == 1
    assert rest.endswith(error_frame(503, "the gateway stopped before the stream ended", "gateway_stopped"))
    assert set(rest.split(b"\n\n")[:-2]) <= {chunk(" again").rstrip(b"\n")}


@pytest.mark.timeout(10, method="thread")  # before, the gateway could not stop either
def test_a_relayed_stream_that_has_ended_is_not_cut_off_while_its_end_is_written(monkeypatch):
    # Its last token came before the cut-off: it counts 200 once, however long a slow client
    # takes to read its end (here the gateway's final write waits 0.3 s, past the cut-off).
    # Before, that write still waited under the call's cut-off, which abandoned its route a
    # second time (RouteError) and never let the cut-off return.
    write_eof = web.StreamResponse.write_eof

    async def slow(self: web.StreamResponse, data: bytes = b"") -> None:
        if PROVIDER_HEADER in self.headers:  # the gateway's answer, not the upstream's
            await asyncio.sleep(0.3)
        await write_eof(self, data)

    monkeypatch.setattr(web.StreamResponse, "write_eof", slow)

    async def ending(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk("Hello"))
        await asyncio.sleep(0.1)
        await response.write(chunk(finish="stop") + DONE)
        return response

    async def main_():
        async with upstream_app(ending) as url:
            async with serving(front({"up": real(url)})) as (gw, http):
                async with http.post("/v1/chat/completions", json={**CHAT, "stream": True}) as r:
                    await r.content.readuntil(b"\n\n")
                    async with asyncio.timeout(2):  # before, the cut-off never returned
                        await gw.cut_off_after(0.2)
                        body = await r.content.read()
                return body, {key: n for key, n in gw.metrics.answers.items() if n}, gw.snapshot().in_flight

    body, answers, in_flight = asyncio.run(main_())
    assert body.endswith(DONE)
    assert (answers, in_flight) == ({(200, "up"): 1}, 0)


def test_a_client_that_leaves_mid_stream_closes_the_upstream_request_at_once():
    async def main_():
        left = asyncio.Event()

        async def endless(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            try:
                while True:
                    await response.write(chunk("tick"))
                    await asyncio.sleep(0.02)
            except ConnectionResetError:
                left.set()
            return response

        async with upstream_app(endless) as url:
            async with serving(front({"up": real(url)}, breaker={"failure_threshold": 1})) as (gw, http):
                async with http.post("/v1/chat/completions", json={**CHAT, "stream": True}) as r:
                    await r.content.readline()
                    r.connection.transport.abort()  # the client goes away mid-stream
                started = time.monotonic()
                await asyncio.wait_for(left.wait(), 2)
                took = time.monotonic() - started
                await asyncio.sleep(0.05)
                return took, gw.metrics.answers.get((499, "up")), state(gw), gw.snapshot().in_flight

    took, cut_off, breaker, in_flight = asyncio.run(main_())
    assert took < 0.5  # a write or two of the upstream's later: not at its end (it has none)
    assert (cut_off, breaker, in_flight) == (1, State.HEALTHY, 0)


def test_a_client_that_resets_while_the_gateway_waits_for_it_to_read_counts_499_alone(caplog):
    """An upstream that streams as fast as it can, to a client that reads nothing then
    resets: 499, and neither a 500 nor an error in the log."""
    async def main_():
        async def endless(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                while True:
                    await response.write(chunk("tick " * 1000))
            return response

        async with upstream_app(endless) as url:
            async with serving(front({"up": real(url)})) as (gw, _):
                await reset_unread(gw.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: "
                                   b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                                   % (len(body := json.dumps({**CHAT, "stream": True}).encode()), body))
                left = time.monotonic()
                while gw.snapshot().in_flight and time.monotonic() - left < 5:
                    await asyncio.sleep(0.005)
                return {key: n for key, n in gw.metrics.answers.items() if n}, state(gw), gw.snapshot().in_flight

    with caplog.at_level(logging.DEBUG):
        answers, breaker, in_flight = asyncio.run(main_())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (answers, breaker, in_flight) == ({(499, "up"): 1}, State.HEALTHY, 0)


def test_the_pool_holds_at_most_connections_to_an_upstream():
    bound = 2

    async def main_():
        peers: set[Any] = set()
        held = [0, 0]  # now, most

        async def slow(request: web.Request) -> web.Response:
            peers.add(request.transport.get_extra_info("peername"))
            held[0] += 1
            held[1] = max(held)
            await asyncio.sleep(0.1)
            held[0] -= 1
            return web.json_response({"object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})

        async with upstream_app(slow) as url:
            async with serving(front({"up": real(url, connections=bound)})) as (_, http):
                answers = await asyncio.gather(*(post(http) for _ in range(3 * bound)))
                return [a[0] for a in answers], held[1], len(peers)

    statuses, most, connections = asyncio.run(main_())
    assert config.UPSTREAM_CONNECTIONS == 100
    assert statuses == [200] * (3 * bound)
    assert (most, connections) == (bound, bound)


def test_calls_that_give_up_on_a_connection_leave_the_pool_whole():
    # One connection, held past the gateway's timeout: the call on it and the one waiting
    # for it both end at the timeout (the second, handed the connection's place just before
    # its own timeout, may send its request too); the next call finds that place free.
    slow = {**CHAT, "messages": [{"role": "user", "content": "slow"}]}

    async def sometimes_slow(request: web.Request) -> web.Response:
        if (await request.json())["messages"][0]["content"] == "slow":
            await asyncio.sleep(1)
        return web.json_response({"object": "chat.completion", "choices": []})

    async def main_():
        async with upstream_app(sometimes_slow) as url:
            scenario = front({"up": real(url, connections=1)}, gateway={"timeout": 0.3})
            async with serving(scenario) as (_, http):
                timed_out = await asyncio.gather(post(http, slow), post(http, slow))
                return [a[0] for a in timed_out], (await post(http))[0]

    assert asyncio.run(main_()) == ([504, 504], 200)


async def forward_in_turn(url: str, calls: int, keepalive: float = config.UPSTREAM_KEEPALIVE) -> list[bytes]:
    """``calls`` calls of a :class:`Forwarder` to ``url``, one after the other; their answers."""
    provider = front({"up": real(url)}).providers[0]
    forwarder = Forwarder(provider, None, keepalive)
    await forwarder.start()
    bodies = []
    try:
        for _ in range(calls):
            answer = await forwarder.post(CHAT, provider)
            bodies.append(await read_body(answer))
            answer.release()
    finally:
        await forwarder.close()
    return bodies


def test_a_connection_idle_past_the_keepalive_is_closed_not_used():
    async def main_(keepalive: float) -> int:
        peers = set()

        async def record(request: web.Request) -> web.Response:
            peers.add(request.transport.get_extra_info("peername"))
            return web.json_response({"object": "chat.completion", "choices": []})

        async with upstream_app(record) as url:
            await forward_in_turn(url, 3, keepalive)
        return len(peers)

    assert config.UPSTREAM_KEEPALIVE == 15.0
    assert asyncio.run(main_(config.UPSTREAM_KEEPALIVE)) == 1
    assert asyncio.run(main_(0.0)) == 3


def test_the_upstream_gets_the_request_aiohttp_would_send():
    async def main_():
        seen = []

        async def record(request: web.Request) -> web.Response:
            seen.append((sorted(request.headers.items()), await request.read()))
            return web.json_response({"object": "chat.completion", "choices": []})

        async with upstream_app(record) as url:
            async with serving(front({"up": real(url)})) as (_, http):
                await post(http)
            async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as direct:
                async with direct.post(url + "/chat/completions", data=json.dumps(CHAT).encode()) as r:
                    await r.read()
        return seen

    through, direct = asyncio.run(main_())
    assert through == direct


def test_an_upstreams_cookie_is_not_sent_back():
    async def main_():
        cookies = []

        async def set_cookie(request: web.Request) -> web.Response:
            cookies.append(request.headers.get("Cookie"))
            response = web.json_response({"object": "chat.completion", "choices": []})
            response.set_cookie("session", "one-clients")
            return response

        async with upstream_app(set_cookie) as url:  # by name: aiohttp's jar kept no cookie of an IP address
            async with serving(front({"up": real(url.replace("127.0.0.1", "localhost"))})) as (_, http):
                statuses = [(await post(http))[0] for _ in range(2)]
        return statuses, cookies

    assert asyncio.run(main_()) == ([200, 200], [None, None])


@contextlib.asynccontextmanager
async def raw_upstream(answer: bytes) -> AsyncIterator[str]:
    """An upstream that reads a request's head and body and writes ``answer`` as it is; its
    base URL."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()


@pytest.mark.parametrize("answer, status", [
    (b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: LENGTH\r\n\r\nBODY", 200),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nHEX\r\nBODY\r\n0\r\n\r\n", 200),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nBODY", 200),  # no length: the body ends as the connection does
    (b"not an HTTP answer\r\n\r\nBODY", 502),
])
def test_the_answer_is_read_as_http_says(answer, status):
    body = json.dumps({"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "12345678"}, "finish_reason": "stop"}]}).encode()
    answer = answer.replace(b"LENGTH", b"%d" % len(body)).replace(b"HEX", b"%x" % len(body)).replace(b"BODY", body)

    async def main_():
        async with raw_upstream(answer) as url:
            async with serving(front({"up": real(url)})) as (gw, http):
                return await post(http), gw.metrics.tokens.get(("up", "completion"))

    (got, _, forwarded), tokens = asyncio.run(main_())
    assert got == status
    if status == 200:
        assert (forwarded, tokens) == (body, 2)


def test_a_compressed_answer_is_decompressed():
    body = {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "x" * 4000}, "finish_reason": "stop"}]}

    async def compressed(request: web.Request) -> web.Response:
        assert "gzip" in request.headers["Accept-Encoding"]
        response = web.json_response(body)
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async def main_():
        async with upstream_app(compressed) as url:
            async with aiohttp.ClientSession(auto_decompress=False) as direct:
                async with direct.post(url + "/chat/completions", headers={"Accept-Encoding": "gzip"}) as r:
                    encoding = r.headers["Content-Encoding"]
            async with serving(front({"up": real(url)})) as (gw, http):
                return encoding, await post(http), gw.metrics.tokens["up", "completion"]

    encoding, (status, _, answer), tokens = asyncio.run(main_())
    assert encoding == "gzip"
    assert (status, json.loads(answer), tokens) == (200, body, 1000)


def test_an_upstream_that_refuses_connections_is_a_502():
    async def main_():
        async with upstream_app(garbage) as url:
            pass  # the port is free again: nothing listens there
        async with serving(front({"up": real(url)})) as (_, http):
            started = time.monotonic()
            return await post(http), time.monotonic() - started

    (status, _, body), took = asyncio.run(main_())
    assert status == 502 and took < 1


@pytest.mark.parametrize("connect_timeout, timeout, status, took", [(0.2, 5.0, 502, 0.2), (10.0, 0.3, 504, 0.3)])
def test_a_connection_that_does_not_open_fails_at_the_connect_timeout(connect_timeout, timeout, status, took):
    with socket.socket() as listening, socket.socket() as queued:
        listening.bind(("127.0.0.1", 0))
        listening.listen(0)  # never accepted: once one connection waits, the kernel drops new SYNs
        queued.connect(listening.getsockname())
        url = f"http://127.0.0.1:{listening.getsockname()[1]}/v1"

        async def main_():
            scenario = front({"up": real(url, connect_timeout=connect_timeout)}, gateway={"timeout": timeout})
            async with serving(scenario) as (_, http):
                started = time.monotonic()
                return await post(http), time.monotonic() - started

        (got, _, _), elapsed = asyncio.run(main_())
    assert config.UPSTREAM_CONNECT_TIMEOUT == 5.0
    assert got == status  # the connect timeout's 502, or the gateway's timeout first
    assert took <= elapsed < took + 0.5


# -- the API key --------------------------------------------------------------------------------


def test_the_key_goes_upstream_as_a_bearer_token_and_nowhere_else(monkeypatch, caplog):
    monkeypatch.setenv("GWLAB_TEST_KEY", KEY)
    seen = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return await (status_answer(401) if len(seen) > 1 else garbage)(request)

    async def main_():
        async with upstream_app(record) as url:
            scenario = front({"up": real(url, api_key_env="GWLAB_TEST_KEY")})
            async with serving(scenario) as (gw, http):
                answers = [await post(http), await post(http), await post(http, {**CHAT, "stream": True})]
                async with http.get("/admin/config") as r:
                    admin = await r.read()
                async with aiohttp.ClientSession() as direct:
                    async with direct.get(gw.metrics_url) as r:
                        metrics = await r.read()
                return answers, admin, metrics, repr(gw._forwarders), repr(gw.scenario)

    caplog.set_level(logging.DEBUG)
    answers, admin, metrics, forwarders, scenario = asyncio.run(main_())
    assert seen == [f"Bearer {KEY}"] * 3
    assert [a[0] for a in answers] == [502, 502, 502]
    assert json.loads(admin)["providers"]["up"]["api_key_env"] == "GWLAB_TEST_KEY"
    assert "upstream up" in caplog.text  # the failures were logged, and without the key
    for text in (*(a[2] for a in answers), *(str(a[1]) for a in answers), admin, metrics, forwarders, scenario,
                 caplog.text):
        assert KEY not in (text.decode() if isinstance(text, bytes) else text)


def test_a_missing_key_variable_is_an_error_at_load_naming_the_variable(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("GWLAB_MISSING_KEY", raising=False)
    scenario = front({"up": real("http://127.0.0.1:9/v1", api_key_env="GWLAB_MISSING_KEY")})
    message = ("providers.up.api_key_env = 'GWLAB_MISSING_KEY': the environment variable GWLAB_MISSING_KEY is not "
               "set (or empty); expected it to hold the upstream's API key")
    with pytest.raises(ConfigError) as error:
        Gateway(scenario)
    assert str(error.value) == f"Gateway(scenario=...): {message}"
    monkeypatch.setenv("GWLAB_MISSING_KEY", "")
    with pytest.raises(ConfigError, match="GWLAB_MISSING_KEY is not set"):
        Gateway(scenario)
    path = tmp_path / "up.toml"
    path.write_text('[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
                    'api_key_env = "GWLAB_MISSING_KEY"\n')
    assert main(["serve", "--config", str(path), "--port", "0", "--metrics-port", "0"]) == 2
    assert f"{path}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["sk-1\r\nX-Injected: yes", "sk-1\n"])
def test_a_key_with_a_line_break_is_an_error_at_load(monkeypatch, key):
    monkeypatch.setenv("GWLAB_TEST_KEY", key)
    with pytest.raises(ConfigError) as error:
        Gateway(front({"up": real("http://127.0.0.1:9/v1", api_key_env="GWLAB_TEST_KEY")}))
    assert str(error.value) == ("Gateway(scenario=...): providers.up.api_key_env = 'GWLAB_TEST_KEY': the environment "
                                "variable GWLAB_TEST_KEY holds a line break; expected the upstream's API key alone, "
                                "on one line")


def test_the_repr_of_a_forwarder_holds_no_key():
    provider = front({"up": real("http://127.0.0.1:9/v1", api_key_env="K")}).providers[0]
    assert repr(Forwarder(provider, KEY)) == "Forwarder('up', 'http://127.0.0.1:9/v1/chat/completions')"


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider, message", [
    ({"kind": "openai"}, "providers.up.base_url = '': expected the upstream's URL for kind = 'openai', such as "
                         "'http://127.0.0.1:11434/v1'"),
    ({"kind": "remote"}, "providers.up.kind = 'remote': expected one of 'simulated', 'openai'"),
    (real("ftp://host/v1"), "providers.up.base_url = 'ftp://host/v1': expected an http:// or https:// URL with a "
                            "host, no user or password (the key goes in the variable api_key_env names) and no query, "
                            "such as 'http://127.0.0.1:11434/v1' (or '' for a simulated provider)"),
    # A URL with credentials, or anything where the key's variable is named: maybe a key, never shown.
    (real("http://user:sk-SECRET@host/v1"), "providers.up.base_url = (not shown: it may hold a secret): expected "
                                            "an http:// or https:// URL with a host, no user or password"),
    (real("http://sk-SECRET@host/v1"), "providers.up.base_url = (not shown: it may hold a secret)"),
    (real("http:///v1"), "providers.up.base_url = 'http:///v1': expected an http:// or https:// URL"),
    (real("http://host:port/v1"), "providers.up.base_url = 'http://host:port/v1': expected an http://"),
    (real("http://host/v1?x=1"), "providers.up.base_url = 'http://host/v1?x=1': expected an http://"),
    (real("http://h/v1", api_key_env="1KEY"), "providers.up.api_key_env = (not shown: it may hold a secret): "
                                              "expected the name of an environment variable"),
    (real("http://h/v1", api_key_env="sk-SECRET"), "providers.up.api_key_env = (not shown: it may hold a secret)"),
    (real("http://h/v1", model="m" * 257), "expected a model name of at most 256 characters"),
    (real("http://h/v1", connections=0), "providers.up.connections = 0: expected a whole number >= 1 and <= 100000"),
    (real("http://h/v1", connect_timeout=0), "providers.up.connect_timeout = 0: expected a number >= 1e-06"),
    ({"base_url": "http://h/v1"}, "providers.up.base_url = 'http://h/v1': expected '' for a simulated provider: "
                                  "set kind = 'openai' to forward to a real upstream"),
    ({"api_key_env": "K"}, "providers.up.api_key_env = 'K': expected '' for a simulated provider"),
    ({"model": "m"}, "providers.up.model = 'm': expected '' for a simulated provider"),
])
def test_bad_upstream_fields_are_refused_at_load(provider, message):
    with pytest.raises(ConfigError) as error:
        front({"up": provider})
    assert message in str(error.value) and "SECRET" not in str(error.value)


@pytest.mark.parametrize("field, value", [("kind", "simulated"), ("base_url", "http://other/v1"),
                                          ("api_key_env", "OTHER"), ("connections", 5)])
def test_what_makes_the_pool_and_key_cannot_change_at_runtime(field, value):
    scenario = front({"up": real("http://h/v1", api_key_env="K")})
    with pytest.raises(ConfigError) as error:
        config.merge(scenario, {"providers": {"up": {field: value}}}, "PATCH /admin/config")
    was = getattr(scenario.providers[0], field)
    assert str(error.value) == (f"PATCH /admin/config: providers.up.{field} = {value!r}: expected {was!r}, its value "
                                "at start: it is fixed while the gateway runs (restart it with the new value)")


def test_the_model_sent_upstream_can_change_at_runtime():
    models = []

    async def record(request: web.Request) -> web.Response:
        models.append((await request.json())["model"])
        return await status_answer(400)(request)

    async def main_():
        async with upstream_app(record) as url:
            async with serving(front({"up": real(url)})) as (gw, http):
                await post(http)
                gw.configure({"providers": {"up": {"model": "llama3.2"}}})
                await post(http)

    asyncio.run(main_())
    assert models == [CHAT["model"], "llama3.2"]


def test_the_example_scenario_forwards_to_a_second_gateway():
    data = tomllib.loads(SCENARIO.read_text(encoding="utf-8"))
    assert data["providers"]["upstream"]["base_url"] == "http://127.0.0.1:8081/v1"  # its comments' gwlab serve

    async def main_():
        async with upstream_gateway({"b": {"latency": 0.0}}) as back:
            data["providers"]["upstream"]["base_url"] = back.url + "/v1"
            async with serving(config.from_dict(data)) as (gw, http):
                answers = [await post(http) for _ in range(20)]
                return [(status, headers["x-gwlab-provider"]) for status, headers, _ in answers], back.metrics

    seen, back = asyncio.run(main_())
    forwarded = seen.count((200, "upstream"))
    assert forwarded > 0 and set(seen) <= {(200, "upstream"), (200, "local"), (502, "local")}
    assert back.answers[200, "b"] == forwarded  # every call the front sent upstream, and no other


def test_the_router_draws_nothing_for_a_real_upstream():
    off = {"enabled": False}  # no breaker opening: round robin alternates all along
    mixed = front({"sim": {"latency": 0.25, "error_rate": 0.5}, "up": real("http://h/v1")},
                  gateway={"balancer": "round_robin", "timeout": 7.0}, breaker=off)
    alone = front({"sim": {"latency": 0.25, "error_rate": 0.5}}, gateway={"timeout": 7.0}, breaker=off)
    with_real, without = Router(mixed, seed=5), Router(alone, seed=5)
    calls = []
    for i in range(40):
        route = with_real.route(float(i))
        calls.append(route.call)
        with_real.complete(route, float(i), route.call.outcome)
    assert [u.real for u in with_real.upstreams] == [False, True]
    assert calls[1::2] == [Call(7.0, Outcome.TIMEOUT, 7.0)] * 20  # the real one's: a bound, not a draw
    # The simulated provider beside it draws as it does alone.
    assert calls[0::2] == [without.route(float(i)).call for i in range(20)]


def test_a_real_upstream_cannot_be_simulated():
    with pytest.raises(ConfigError) as error:
        simulate({"providers": {"sim": {}, "up": real("http://127.0.0.1:9/v1")}}, duration=1)
    assert str(error.value) == (
        "scenario: providers.up.kind = 'openai': a real upstream cannot be simulated (it answers in real time, "
        "not virtual); expected 'simulated', or run it live with gwlab serve or gwlab run")
    with pytest.raises(ConfigError, match=f"^{SCENARIO}: providers.upstream.kind = 'openai': a real upstream"):
        simulate(SCENARIO, duration=1)


def test_an_answer_longer_than_the_bound_is_invalid():
    async def long(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 101)

    async def main_():
        async with upstream_app(long) as url, aiohttp.ClientSession() as http:
            async with http.post(url + "/chat/completions") as r:
                with pytest.raises(InvalidAnswer, match="longer than 100 bytes"):
                    await read_body(r, 100)
            async with http.post(url + "/chat/completions") as r:
                return await read_body(r, 101)

    assert asyncio.run(main_()) == b"x" * 101
    assert config.UPSTREAM_MAX_BODY == 16 * 1024 * 1024


def test_frames_without_content_before_the_first_token_are_bounded_too(monkeypatch, caplog):
    """An upstream that sends role frames for ever and never a token: the frames held until
    the first token stop at the bound, a 502, well before the gateway's timeout."""
    monkeypatch.setattr(config, "UPSTREAM_MAX_BODY", 64 * 1024)

    async def roles(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await response.write(chunk(""))
                await asyncio.sleep(0)
        return response

    async def main_():
        async with upstream_app(roles) as url:
            async with serving(front({"up": real(url)}, gateway={"timeout": 30.0})) as (gw, http):
                started = time.monotonic()
                status, _, body = await post(http, {**CHAT, "stream": True})
                return status, json.loads(body)["error"]["message"], time.monotonic() - started, gw.snapshot().in_flight

    with caplog.at_level(logging.DEBUG):
        status, message, took, in_flight = asyncio.run(main_())
    assert (status, message, in_flight) == (502, "provider up failed", 0) and took < 10
    assert any(f"the upstream's stream sent over {64 * 1024} bytes before its first token" in r.getMessage()
               for r in caplog.records)
