"""What a real upstream's answers mean (:mod:`gwlab.observe`): the outcome of each status,
retry-after, tokens of a completion, and a stream cut into frames however its bytes arrive."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from gwlab.observe import Frame, Frames, InvalidAnswer, completion_tokens, outcome, retry_after
from gwlab.providers import Outcome
from gwlab.upstream import MIN_RETRY_AFTER


@pytest.mark.parametrize("status, expected", [
    (200, Outcome.SUCCESS), (201, Outcome.SUCCESS), (299, Outcome.SUCCESS),
    (429, Outcome.RATE_LIMITED),
    (400, None), (404, None), (422, None),
    (401, Outcome.ERROR), (403, Outcome.ERROR), (408, Outcome.ERROR), (409, Outcome.ERROR), (413, Outcome.ERROR),
    (300, Outcome.ERROR), (500, Outcome.ERROR), (502, Outcome.ERROR), (503, Outcome.ERROR), (504, Outcome.ERROR),
    (599, Outcome.ERROR),
])
def test_outcome_of_each_status(status, expected):
    assert outcome(status) is expected


@pytest.mark.parametrize("headers, wait_us", [
    ({"retry-after-ms": "1500"}, 1_500_000),
    ({"Retry-After-Ms": "999.123"}, 999_123),
    ({"Retry-After": "3"}, 3_000_000),
    ({"retry-after": "2", "retry-after-ms": "250"}, 250_000),  # the exact one first
    ({"retry-after-ms": "soon", "Retry-After": "4"}, 4_000_000),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1000),  # a date: no clock here
    ({"Retry-After": "0"}, 1000),
    ({"Retry-After": "-5"}, 1000),
    ({"retry-after-ms": "nan"}, 1000),
    ({"retry-after-ms": "inf"}, 3_600_000_000),  # clamped to UPSTREAM_MAX_RETRY_AFTER
    ({"retry-after-ms": "1e300"}, 3_600_000_000),
    ({"Retry-After": "1e15"}, 3_600_000_000),
    ({"Retry-After": "3600"}, 3_600_000_000),
    ({"retry-after-ms": "-inf"}, 1000),
    ({}, 1000),
])
def test_retry_after(headers, wait_us):
    # In whole microseconds as the gateway's 429 says them (a float's error rounded away).
    assert math.ceil(round(retry_after(CIMultiDict(headers)) * 1e6, 3)) == wait_us
    assert MIN_RETRY_AFTER == 0.001


def _completion(content, usage=None):
    body = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


@pytest.mark.parametrize("body, tokens", [
    (_completion("four words are here", {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}), 7),
    (_completion("0123456789"), 3),  # no usage: ten characters, three tokens by the estimate
    (_completion(None), 0),
    (_completion("x", {"completion_tokens": "7"}), 1),  # usage that is not a count is no usage
    (b'{"choices": []}', 0),
    # Reasoning models' text before the answer (DeepSeek, vLLM, llama.cpp; Ollama, OpenRouter), a refusal.
    (json.dumps({"choices": [{"message": {"content": "0123", "reasoning_content": "01234567"}}]}).encode(), 3),
    (json.dumps({"choices": [{"message": {"content": None, "reasoning": "012345678"}}]}).encode(), 3),
    (json.dumps({"choices": [{"message": {"content": None, "refusal": "01234"}}]}).encode(), 2),
    (json.dumps({"choices": [{"message": {"content": "0123", "reasoning_content": 5}}]}).encode(), 1),
    # The same reasoning under both names (vLLM sends both): counted once, the longer.
    (json.dumps({"choices": [{"message": {"content": "0123", "reasoning_content": "01234567",
                                          "reasoning": "01234567"}}]}).encode(), 3),
    (json.dumps({"choices": [{"message": {"content": "", "reasoning_content": "0123", "reasoning": "01234567"}}]}).encode(), 2),
    (json.dumps({"choices": [{"message": {"reasoning_content": "01234567"}, "index": 0},
                             {"message": {"content": "0123"}, "index": 1}]}).encode(), 3),
])
def test_completion_tokens(body, tokens):
    assert completion_tokens(body) == tokens


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"object": "chat.completion"}', b'{"choices": 1}',
                                  b'{"choices": [1]}',
                                  b"[" * 100_000])
def test_invalid_completions(body):
    with pytest.raises(InvalidAnswer):
        completion_tokens(body)


def _chunk(content=None, usage=None, finish=None):
    choices = [] if usage is not None else [{"index": 0, "delta": {} if content is None else {"content": content},
                                             "finish_reason": finish}]
    return b"data: " + json.dumps({"object": "chat.completion.chunk", "choices": choices, "usage": usage}).encode()


STREAM = [
    (_chunk(""), Frame(_chunk("") + b"\n\n")),  # the role frame: no content yet
    (b": keep-alive", None),
    (_chunk("Hello"), Frame(_chunk("Hello") + b"\n\n", content=True)),
    (b"event: message\n" + _chunk(" world"), Frame(b"event: message\n" + _chunk(" world") + b"\n\n", content=True)),
    (_chunk(finish="stop"), Frame(_chunk(finish="stop") + b"\n\n")),
    (_chunk(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
     Frame(_chunk(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}) + b"\n\n", usage=2)),
    (b"data: [DONE]", Frame(b"data: [DONE]\n\n", done=True)),
]
WIRE = b"".join(event + b"\n\n" for event, _ in STREAM)
FRAMES = [frame for _, frame in STREAM if frame is not None]


@given(st.lists(st.integers(0, len(WIRE)), max_size=20), st.booleans())
def test_frames_do_not_depend_on_how_the_bytes_arrive(cuts, crlf):
    wire = WIRE.replace(b"\n", b"\r\n") if crlf else WIRE
    cuts = sorted(min(c, len(wire)) for c in cuts)
    frames = Frames(1000)
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)]):
        got += frames.feed(wire[start:end])
    assert got == FRAMES


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"data: ", b"[DONE]", b": c", b"x", _chunk("Hi")]),
                max_size=40), st.lists(st.integers(0, 400), max_size=20))
def test_any_bytes_give_the_same_frames_however_they_are_cut(pieces, cuts):
    """Line ends of every kind, split anywhere (a ``\r\n`` across two reads included): the
    frames are those of the bytes read at once, and so is the event left under way."""
    wire = b"".join(pieces)
    whole = Frames(10**6)
    expected = whole.feed(wire) + whole.feed(b"\n\n")
    cuts = sorted(min(c, len(wire)) for c in cuts)
    frames = Frames(10**6)
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)]):
        got += frames.feed(wire[start:end])
    assert got + frames.feed(b"\n\n") == expected


@pytest.mark.parametrize("event, frame", [
    (b'data: {"error": {"message": "boom"}}',
     Frame(b'data: {"error": {"message": "boom"}}\n\n', error="the upstream sent an error frame")),
    (b'data: {"error": null, "choices": []}', Frame(b'data: {"error": null, "choices": []}\n\n')),  # as the SDK
    (b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]}',
     Frame(b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]}\n\n', content=True)),
    (b'data: {"choices": [{"delta": {"refusal": "no"}}]}',
     Frame(b'data: {"choices": [{"delta": {"refusal": "no"}}]}\n\n', content=True)),
    (b'data: {"choices": [{"delta": {"reasoning_content": "hm"}}]}',
     Frame(b'data: {"choices": [{"delta": {"reasoning_content": "hm"}}]}\n\n', content=True)),
    (b'data: {"choices": [{"delta": {"content": null, "reasoning": "hm"}}]}',
     Frame(b'data: {"choices": [{"delta": {"content": null, "reasoning": "hm"}}]}\n\n', content=True)),
    (b'data: {"choices": [{"delta": {"reasoning_content": ""}}]}',
     Frame(b'data: {"choices": [{"delta": {"reasoning_content": ""}}]}\n\n')),
    (b'data:{"choices": [{"delta": {"content": "x"}}]}',
     Frame(b'data:{"choices": [{"delta": {"content": "x"}}]}\n\n', content=True)),
    (b'data: {"choices": [{"delta": {"content": ""}}]}', Frame(b'data: {"choices": [{"delta": {"content": ""}}]}\n\n')),
])
def test_frame_kinds(event, frame):
    assert Frames(1000).feed(event + b"\n\n") == [frame]


NOT_JSON = "an event of the upstream's stream is not JSON"
NOT_OBJECT = "an event of the upstream's stream is not a JSON object"
NOT_CHUNK = "an event of the upstream's stream is not a chat.completion.chunk object"


@pytest.mark.parametrize("event, error", [
    (b"data: garbage", NOT_JSON),
    (b'data: {"choices": ', NOT_JSON),
    (b"data: " + b"[" * 100_000, NOT_JSON),
    (b"data: [1]", NOT_OBJECT),
    (b'data: "text"', NOT_OBJECT),
    (b'data: {"foo": 1}', NOT_CHUNK),
    (b'data: {"choices": null}', NOT_CHUNK),
    (b'data: {"choices": {"0": {"delta": {"content": "x"}}}}', NOT_CHUNK),
    (b'data: {"choices": [1]}', NOT_CHUNK),
    (b'data: {"choices": [{"delta": {"content": "x"}}, "x"]}', NOT_CHUNK),
    (b'data: {"error": {}}', NOT_CHUNK),  # an empty error is none to the SDK: then a chunk it must be
])
def test_invalid_frames(event, error):
    assert Frames(10**6).feed(event + b"\n\n") == [Frame(event + b"\n\n", error=error)]


def test_the_frames_before_an_invalid_one_are_given_with_it():
    wire = _chunk("Hello") + b"\n\n" + b'data: {"foo": 1}\n\n' + _chunk(" world") + b"\n\n"
    assert Frames(1000).feed(wire) == [Frame(_chunk("Hello") + b"\n\n", content=True),
                                       Frame(b'data: {"foo": 1}\n\n', error=NOT_CHUNK),
                                       Frame(_chunk(" world") + b"\n\n", content=True)]


def test_an_event_longer_than_the_limit_is_invalid():
    frames = Frames(100)
    assert frames.feed(b"data: " + b"x" * 94) == []  # 100 bytes held: at the limit
    with pytest.raises(InvalidAnswer, match="longer than 100 bytes"):
        frames.feed(b"x")
