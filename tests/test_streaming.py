"""Streaming through the live gateway (``stream: true``), with the clients people use: the
official ``openai`` SDK (async and sync) and LangChain's ``ChatOpenAI``; and raw sockets for
what no SDK does (going away mid-stream).

Timing assertions are one-sided: a frame may be late on a busy machine, never early.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI

from gwlab import config
from gwlab.breaker import State
from gwlab.wire import error_frame, reply_pieces
from tests.conftest import require_tool
from tests.support import reset_unread, serving

MESSAGES = [{"role": "user", "content": "hello there"}]
"""Its 11 characters are 3 prompt tokens."""
SLACK = 0.005
"""Seconds a frame may come before its time by the clocks' differences (the test's and the
gateway's are both monotonic, read a few microseconds apart)."""


def provider(**fields: Any) -> config.Scenario:
    """One provider ``p1`` with token timing: the first token after 0.2 s, then one every
    50 ms, 12 of them: a stream lasts 0.75 s."""
    return config.from_dict({"providers": {"p1": {"ttft": 0.2, "decode_rate": 20.0, "output_tokens": 12.0,
                                                  **fields}}})


def sdk(gw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)


async def frames(client: openai.AsyncOpenAI, **kwargs: Any) -> list[tuple[float, Any]]:
    """Every chunk of one streamed completion, with the seconds since the request."""
    start = time.monotonic()
    stream = await client.chat.completions.create(model="gwlab-sim", messages=MESSAGES, stream=True, **kwargs)
    return [(time.monotonic() - start, chunk) async for chunk in stream]


def test_the_async_sdk_streams_every_token_at_the_providers_pace():
    async def main():
        async with serving(provider()) as (gw, _), sdk(gw) as client:
            return await frames(client, stream_options={"include_usage": True})

    got = asyncio.run(main())
    chunks = [chunk for _, chunk in got]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    content = [(t, c.choices[0].delta.content) for t, c in got if c.choices and c.choices[0].delta.content]
    assert "".join(text for _, text in content) == "".join(reply_pieces("p1", 12))
    assert len(content) == 12  # 20 tokens/s is slower than a frame per 20 ms: a frame per token
    for i, (at, _) in enumerate(content):
        assert at >= 0.2 + i * 0.05 - SLACK
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 12, 15)


def test_fast_decoding_is_grouped_into_frames_20_ms_apart():
    async def main():
        async with serving(provider(decode_rate=1000.0, output_tokens=200.0)) as (gw, _), sdk(gw) as client:
            return await frames(client)

    content = [c.choices[0].delta.content for _, c in asyncio.run(main()) if c.choices and c.choices[0].delta.content]
    assert "".join(content) == "".join(reply_pieces("p1", 200))
    assert len(content) == 10  # 20 tokens a frame: 1000 tokens/s for 20 ms


def test_max_tokens_cuts_the_stream_with_finish_reason_length():
    async def main():
        async with serving(provider()) as (gw, _), sdk(gw) as client:
            streamed = await frames(client, max_tokens=5)
            whole = await client.chat.completions.create(model="gwlab-sim", messages=MESSAGES,
                                                         max_completion_tokens=5)
            return streamed, whole

    streamed, whole = asyncio.run(main())
    content = [c.choices[0].delta.content for _, c in streamed if c.choices and c.choices[0].delta.content]
    assert "".join(content) == "".join(reply_pieces("p1", 5))
    assert streamed[-1][1].choices[0].finish_reason == "length"
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 5
    assert whole.choices[0].message.content == "".join(reply_pieces("p1", 5))


@pytest.mark.parametrize("cap, finish_reason", [(1, "length"), (8, "length"), (9, "stop"), (50, "stop")])
@pytest.mark.parametrize("timing", [{}, {"ttft": 0.01}, {"ttft": 0.01, "stream_error_rate": 1e-12}],
                         ids=["plain", "ttft", "ttft-and-stream-errors"])
def test_max_tokens_cuts_a_fixed_reply_too(cap, finish_reason, timing):
    """A provider without a length model (the seed's, or one with token timing alone)
    answers its fixed reply of 9 tokens: a smaller cap cuts it, streamed or whole, and the
    usage counts what was sent."""
    async def main():
        scenario = config.from_dict({"providers": {"p1": {"latency": 0.01, **timing}}})
        async with serving(scenario) as (gw, _), sdk(gw) as client:
            streamed = await frames(client, max_tokens=cap, stream_options={"include_usage": True})
            whole = await client.chat.completions.create(model="gwlab-sim", messages=MESSAGES, max_tokens=cap)
            return streamed, whole

    streamed, whole = asyncio.run(main())
    expected = "".join(reply_pieces("p1", min(cap, 9)))
    chunks = [c for _, c in streamed]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish_reason
    assert chunks[-1].usage.completion_tokens == min(cap, 9)
    assert whole.choices[0].message.content == expected
    assert (whole.choices[0].finish_reason, whole.usage.completion_tokens) == (finish_reason, min(cap, 9))


def test_the_sync_sdk_streams_too():
    async def main():
        async with serving(provider()) as (gw, _):
            def run() -> list[str]:
                with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
                    stream = client.chat.completions.create(model="gwlab-sim", messages=MESSAGES, stream=True)
                    return [c.choices[0].delta.content or "" for c in stream if c.choices]
            return await asyncio.to_thread(run)

    assert "".join(asyncio.run(main())) == "".join(reply_pieces("p1", 12))


def test_langchain_chat_openai_streams_through_the_gateway():
    async def main():
        async with serving(provider()) as (gw, _):
            model = ChatOpenAI(base_url=gw.url + "/v1", api_key="x", model="gwlab-sim", max_retries=0,
                               stream_usage=True)
            return await asyncio.to_thread(lambda: list(model.stream("hello there")))

    chunks = asyncio.run(main())
    assert "".join(c.content for c in chunks) == "".join(reply_pieces("p1", 12))
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] == 12


def test_a_provider_without_token_timing_streams_its_reply_whole_after_its_latency():
    async def main():
        scenario = config.from_dict({"providers": {"p1": {"latency": 0.1}}})
        async with serving(scenario) as (gw, _), sdk(gw) as client:
            return await frames(client)

    got = asyncio.run(main())
    content = [(t, c.choices[0].delta.content) for t, c in got if c.choices and c.choices[0].delta.content]
    assert [text for _, text in content] == ["".join(reply_pieces("p1"))]
    assert content[0][0] >= 0.1 - SLACK


def test_a_mid_stream_error_reaches_the_sdk_charges_the_breaker_and_counts_apart():
    async def main():
        scenario = config.merge(provider(stream_error_rate=1.0), {"breaker": {"failure_threshold": 1}})
        async with serving(scenario) as (gw, http), sdk(gw) as client:
            received: list[str] = []
            with pytest.raises(openai.APIError) as error:
                stream = await client.chat.completions.create(model="gwlab-sim", messages=MESSAGES, stream=True)
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        received.append(chunk.choices[0].delta.content)
            state = gw.snapshot().providers["p1"].state
            metrics = await (await http.get(gw.metrics_url)).text()
            return error.value, received, state, metrics

    error, received, state, metrics = asyncio.run(main())
    assert "p1 failed after" in error.message and error.code == "provider_stream_error"
    assert received  # the failure came after the first token
    assert state is State.OPEN
    assert 'gwlab_requests_total{code="stream_error",provider="p1"} 1.0' in metrics
    assert 'gwlab_provider_requests_total{outcome="stream_error",provider="p1"} 1.0' in metrics
    assert 'gwlab_requests_total{code="200",provider="p1"} 0.0' in metrics


@pytest.mark.parametrize("fields, gateway, message", [
    ({"stream_error_rate": 1.0, "output_tokens": 1.0}, {}, "provider p1 failed after 1 token"),
    ({"decode_rate": 2.0}, {"stream_idle_timeout": 0.1},
     "provider p1 failed after 1 token: no token within gateway.stream_idle_timeout = 0.1 s"),
], ids=["a failure", "the idle timeout"])
def test_a_mid_stream_error_says_how_many_tokens_came_and_whether_the_idle_timeout_ran_out(fields, gateway, message):
    async def main():
        scenario = config.merge(provider(**fields), {"gateway": gateway})
        async with serving(scenario) as (gw, _), sdk(gw) as client:
            with pytest.raises(openai.APIError) as error:
                await frames(client)
            return error.value

    assert asyncio.run(main()).message == message


@pytest.mark.parametrize("fields, status, code", [
    ({"error_rate": 1.0}, 502, "provider_error"),
    ({"ttft": 5.0}, 504, "provider_timeout"),
])
def test_a_failure_before_the_first_token_is_an_ordinary_http_error(fields, status, code):
    async def main():
        scenario = config.merge(provider(**fields), {"gateway": {"timeout": 0.3}})
        async with serving(scenario) as (_, http):
            response = await http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES,
                                                                     "stream": True})
            return response.status, response.headers["Content-Type"], await response.json()

    got_status, content_type, body = asyncio.run(main())
    assert (got_status, content_type, body["error"]["code"]) == (status, "application/json", code)


def _stream_request(stream: bool = True) -> bytes:
    body = json.dumps({"model": "m", "messages": MESSAGES, "stream": stream}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def test_a_client_that_goes_away_mid_stream_frees_the_call_at_once_and_charges_no_breaker(caplog):
    """The next token is 100 s away: only noticing the closed connection frees the call."""
    async def main():
        scenario = config.merge(provider(ttft=0.05, decode_rate=0.01), {"breaker": {"failure_threshold": 1}})
        async with serving(scenario) as (gw, http):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(_stream_request())
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"200 OK" in head and b"text/event-stream" in head
            assert b'"role": "assistant"' in await reader.readuntil(b"\n\n")
            assert gw.snapshot().in_flight == 1
            writer.transport.abort()  # a reset, as a killed client leaves it
            left = time.monotonic()
            while gw.snapshot().in_flight and time.monotonic() - left < 5:
                await asyncio.sleep(0.005)
            freed = time.monotonic() - left
            metrics = await (await http.get(gw.metrics_url)).text()
            return freed, gw.snapshot(), metrics

    with caplog.at_level(logging.DEBUG):
        freed, snapshot, metrics = asyncio.run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a client leaving is no error
    assert snapshot.in_flight == 0 and freed < 1.0
    assert snapshot.providers["p1"].state is State.HEALTHY
    assert 'gwlab_requests_total{code="499",provider="p1"} 1.0' in metrics
    assert 'gwlab_provider_requests_total{outcome="success",provider="p1"} 0.0' in metrics


def test_a_client_that_resets_while_the_gateway_waits_for_it_to_read_counts_499_alone(caplog):
    """A stream far longer than the buffers, to a client that reads nothing then resets: the
    gateway's write, waiting for the client, fails with aiohttp's ConnectionError, which is
    the client gone as much as a ConnectionResetError (not a 500 besides its 499)."""
    async def main():
        async with serving(provider(ttft=0.01, decode_rate=1e5, output_tokens=1e5)) as (gw, _):
            await reset_unread(gw.port, _stream_request())
            left = time.monotonic()
            while gw.snapshot().in_flight and time.monotonic() - left < 5:
                await asyncio.sleep(0.005)
            return {key: n for key, n in gw.metrics.answers.items() if n}, gw.snapshot()

    with caplog.at_level(logging.DEBUG):
        answers, snapshot = asyncio.run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (answers, snapshot.in_flight) == ({(499, "p1"): 1}, 0)  # no 500 under provider none


@pytest.mark.parametrize("leave, outcome", [("before the first token", "success"), ("not streaming", "success"),
                                            ("not streaming", "error")])
def test_a_client_that_goes_away_before_its_answer_is_served_until_the_gateway_writes_to_it(leave, outcome, caplog):
    """DESIGN, "Retries and fallbacks": the gateway keeps serving a request whose client has
    left until it writes to it. The call (its first token 0.6 s away, or its whole answer)
    holds its slot to its end; then the answer finds no one, a 499. A whole answer's call ran
    its course, so its provider's calls and its breaker count its outcome; a stream's first
    token found no one to go to, so it is abandoned there, its breaker told nothing."""
    async def main():
        fields = {"ttft": 0.6, "decode_rate": 0.01 if leave != "not streaming" else 1000.0}
        if outcome == "error":
            fields["error_rate"] = 1.0
        scenario = config.merge(provider(**fields), {"breaker": {"failure_threshold": 1}})
        async with serving(scenario) as (gw, http):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(_stream_request(leave != "not streaming"))
            await asyncio.sleep(0.2)
            writer.transport.abort()
            left = time.monotonic()
            await asyncio.sleep(0.2)
            served_on = gw.snapshot().in_flight
            while gw.snapshot().in_flight and time.monotonic() - left < 5:
                await asyncio.sleep(0.005)
            freed = time.monotonic() - left
            metrics = await (await http.get(gw.metrics_url)).text()
            return served_on, freed, gw.snapshot(), metrics

    with caplog.at_level(logging.DEBUG):
        served_on, freed, snapshot, metrics = asyncio.run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert served_on == 1 and 0.3 <= freed < 2.0  # held to its end, 0.4 s after the client left
    assert snapshot.in_flight == 0
    assert 'gwlab_requests_total{code="499",provider="p1"} 1.0' in metrics
    counted = leave == "not streaming"
    assert f'gwlab_provider_requests_total{{outcome="{outcome}",provider="p1"}} {float(counted)}' in metrics
    assert snapshot.providers["p1"].state is (State.OPEN if counted and outcome == "error" else State.HEALTHY)


def test_a_stop_cuts_off_a_long_stream_after_its_grace(caplog):
    async def main():
        async with serving(provider(decode_rate=0.01)) as (gw, http):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(_stream_request())
            await reader.readuntil(b"\n\n")
            before = time.monotonic()
            await gw.stop(grace=0.2)
            took = time.monotonic() - before
            rest = await reader.read()  # the connection ends
            writer.close()
            return took, rest, gw.metrics.answers.get((499, "p1"), 0)

    with caplog.at_level(logging.INFO, logger="gwlab.server"):
        took, rest, cut_off = asyncio.run(main())
    assert took < 2.0 and cut_off == 1
    assert "requests still in flight cut off: 1" in [r.getMessage() for r in caplog.records]
    assert b"[DONE]" not in rest
    # The stream's last frame says why, and its body ends properly (chunked: a last, empty chunk).
    stopped = error_frame(503, "the gateway stopped before the stream ended", "gateway_stopped")
    assert rest.endswith(b"%x\r\n%s\r\n0\r\n\r\n" % (len(stopped), stopped))


def test_the_sdk_reading_a_stream_a_stop_cuts_off_raises_the_gateways_error():
    async def main():
        async with serving(provider(decode_rate=2.0, output_tokens=100.0)) as (gw, http), sdk(gw) as client:
            got: list[Any] = []

            async def read() -> None:
                stream = await client.chat.completions.create(model="gwlab-sim", messages=MESSAGES, stream=True)
                async for chunk in stream:
                    got.append(chunk)

            reading = asyncio.create_task(read())
            while not got:
                await asyncio.sleep(0.01)
            await gw.stop(grace=0.1)
            with pytest.raises(openai.APIError, match="the gateway stopped before the stream ended"):
                await reading
            return len(got)

    assert 1 <= asyncio.run(main()) < 100


def test_stream_metrics_count_ttft_time_per_token_and_tokens():
    async def main():
        async with serving(provider()) as (gw, http), sdk(gw) as client:
            for _ in range(3):
                await frames(client)
            await client.chat.completions.create(model="gwlab-sim", messages=MESSAGES)
            return await (await http.get(gw.metrics_url)).text()

    metrics = asyncio.run(main())
    assert 'gwlab_time_to_first_token_seconds_count{provider="p1"} 3.0' in metrics
    assert 'gwlab_time_to_first_token_seconds_bucket{le="0.1026",provider="p1"} 0.0' in metrics
    assert 'gwlab_time_per_output_token_seconds_count{provider="p1"} 3.0' in metrics
    assert 'gwlab_time_per_output_token_seconds_bucket{le="0.07566",provider="p1"} 3.0' in metrics
    assert 'gwlab_tokens_total{kind="completion",provider="p1"} 48.0' in metrics  # 4 answers of 12
    assert 'gwlab_tokens_total{kind="prompt",provider="p1"} 12.0' in metrics
    promtool = require_tool("promtool")
    checked = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def test_raw_frames_are_server_sent_events_ending_in_done():
    async def main():
        async with serving(provider()) as (_, http):
            response = await http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES,
                                                                     "stream": True})
            return response.status, response.headers, await response.read()

    status, headers, body = asyncio.run(main())
    assert status == 200
    assert (headers["Content-Type"], headers["Cache-Control"]) == ("text/event-stream", "no-cache")
    assert (headers["x-gwlab-provider"], headers["x-gwlab-route"]) == ("p1", "weighted")
    events = body.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    assert all(e.startswith(b"data: ") for e in events[:-2])
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 13 + ["stop"]
