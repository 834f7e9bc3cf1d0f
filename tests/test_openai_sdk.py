"""The official ``openai`` SDK pointed at the gateway works unchanged, its exceptions included.

``max_retries=0`` so that every status reaches the test as the SDK's own exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import openai
import pytest
from openai.types.chat import ChatCompletion

from gwlab import config
from gwlab.server import Gateway

MESSAGES = [{"role": "user", "content": "hello"}]


def single(**sections: Any) -> config.Scenario:
    provider = sections.pop("p1", {})
    return config.from_dict({"providers": {"p1": {"latency": 0.0, **provider}}, **sections})


@contextlib.asynccontextmanager
async def client(scenario: config.Scenario, **kwargs: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    gw = Gateway(scenario, **kwargs)
    await gw.start(port=0, metrics_port=0)
    try:
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as sdk:
            yield sdk
    finally:
        await gw.stop()


def test_success_is_a_chat_completion():
    async def main():
        async with client(single()) as sdk:
            completion = await sdk.chat.completions.create(model="gwlab-sim", messages=MESSAGES)
            raw = await sdk.chat.completions.with_raw_response.create(model="gwlab-sim", messages=MESSAGES)
            models = await sdk.models.list()
        return completion, raw, models

    completion, raw, models = asyncio.run(main())
    assert isinstance(completion, ChatCompletion)
    assert completion.model == "gwlab-sim"
    assert completion.choices[0].message.role == "assistant"
    assert "p1" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert (raw.headers["x-gwlab-provider"], raw.headers["x-gwlab-route"]) == ("p1", "weighted")
    assert [m.id for m in models.data] == [config.MODEL]


def test_rate_limit_error():
    t = [0.0]

    async def main():
        async with client(single(limiter={"rate": 0.5, "burst": 1}), clock=lambda: t[0]) as sdk:
            await sdk.chat.completions.create(model="gwlab-sim", messages=MESSAGES)
            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(model="gwlab-sim", messages=MESSAGES)
        return info.value

    error = asyncio.run(main())
    assert error.status_code == 429
    assert (error.code, error.type) == ("rate_limit_requests", "rate_limit_error")
    assert error.response.headers["retry-after-ms"] == "2000"


@pytest.mark.parametrize("scenario,status,code", [
    (single(p1={"error_rate": 1.0}), 502, "provider_error"),
    (single(p1={"outage": "hang"}, gateway={"timeout": 0.01}), 504, "provider_timeout"),
], ids=["502", "504"])
def test_provider_failures_are_internal_server_errors(scenario, status, code):
    async def main():
        async with client(scenario) as sdk:
            with pytest.raises(openai.InternalServerError) as info:
                await sdk.chat.completions.create(model="gwlab-sim", messages=MESSAGES)
        return info.value

    error = asyncio.run(main())
    assert (error.status_code, error.code, error.type) == (status, code, "api_error")
    assert error.response.headers["x-gwlab-provider"] == "p1"


@pytest.mark.parametrize("kwargs,text", [
    ({"stream": True, "max_tokens": 0}, "'max_tokens' must be an integer >= 1"),
    ({"messages": []}, "'messages' must be a non-empty array"),
    ({"messages": [{"role": "user", "content": 5}]}, "'messages[0].content' must be a string"),
    ({"model": ""}, "'model' must be a non-empty string"),
], ids=["max_tokens", "no messages", "content number", "empty model"])
def test_bad_requests_are_bad_request_errors(kwargs, text):
    async def main():
        async with client(single()) as sdk:
            with pytest.raises(openai.BadRequestError) as info:
                await sdk.chat.completions.create(**{"model": "gwlab-sim", "messages": MESSAGES, **kwargs})
        return info.value

    error = asyncio.run(main())
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    assert text in error.message


def test_unknown_endpoint_is_not_found():
    async def main():
        async with client(single()) as sdk:
            with pytest.raises(openai.NotFoundError) as info:
                await sdk.completions.create(model="gwlab-sim", prompt="hello")
        return info.value

    error = asyncio.run(main())
    assert (error.status_code, error.code) == (404, "unknown_url")


RATELIMIT = [f"x-ratelimit-{name}-{kind}" for kind in ("requests", "tokens") for name in ("limit", "remaining", "reset")]


def test_raw_responses_carry_openais_rate_limit_headers():
    t = [0.0]

    async def main():
        scenario = single(limiter={"rate": 1, "burst": 60, "tpm": 150_000})
        async with client(scenario, clock=lambda: t[0]) as sdk:
            raw = await sdk.chat.completions.with_raw_response.create(model="gwlab-sim", messages=MESSAGES,
                                                                      max_tokens=10)
            return raw.headers, raw.parse()

    headers, completion = asyncio.run(main())
    assert isinstance(completion, ChatCompletion)
    # "hello" is 2 prompt tokens; the reply 9: 11 used of the 12 reserved, at 2500 tokens a second.
    assert [headers[name] for name in RATELIMIT] == ["60", "59", "1s", "150000", "149989", "5ms"]


def test_a_request_short_of_tokens_is_a_rate_limit_error_naming_that_limit():
    t = [0.0]

    async def main():
        async with client(single(limiter={"tpm": 60}), clock=lambda: t[0]) as sdk:
            await sdk.chat.completions.create(model="gwlab-sim", messages=MESSAGES, max_tokens=40)
            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(model="gwlab-sim", messages=MESSAGES, max_tokens=50)
        return info.value

    error = asyncio.run(main())
    assert (error.status_code, error.code, error.type) == (429, "rate_limit_tokens", "rate_limit_error")
    # 60 - 11 = 49 tokens left; 52 needed: 3 s at a token a second.
    headers = error.response.headers
    assert (headers["retry-after-ms"], headers["x-ratelimit-remaining-tokens"]) == ("3000", "49")


def test_a_request_larger_than_the_tokens_limit_is_a_bad_request_error():
    async def main():
        async with client(single(limiter={"tpm": 60})) as sdk:
            with pytest.raises(openai.BadRequestError) as info:
                await sdk.chat.completions.create(model="gwlab-sim", messages=MESSAGES)  # reserves 2 + 4096
        return info.value

    error = asyncio.run(main())
    assert (error.status_code, error.code, error.param) == (400, "context_exceeds_limit", "messages")
