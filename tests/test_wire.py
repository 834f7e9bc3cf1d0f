"""The OpenAI wire format: what a chat completion request must be, each input class at its
edges; the completion body, the frames of a stream and the error bodies, read back with the
official SDK's own models. The answers the server sends are tested in test_server.py and,
through the SDK, in test_openai_sdk.py."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gwlab.wire import (DONE, ApiError, ChatRequest, Chunks, completion, error_body, error_frame, error_type,
                        _message, ratelimit_headers, reply, reply_pieces, reset_duration, validate)

CHAT = {"model": "gwlab-sim", "messages": [{"role": "user", "content": "hello there"}]}
"""A valid request; its 11-character message is 3 prompt tokens."""
DROP = object()


def chat(**changes: Any) -> dict[str, Any]:
    """:data:`CHAT` with fields changed, or dropped when given :data:`DROP`."""
    return {k: v for k, v in {**CHAT, **changes}.items() if v is not DROP}


def refusal(body: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        validate(body)
    assert info.value.status == 400
    return info.value


VALID = [
    # id, changes, (stream, include_usage, max_tokens)
    ("plain", {}, (False, False, None)),
    ("stream null", {"stream": None}, (False, False, None)),
    ("stream false", {"stream": False}, (False, False, None)),
    ("stream true", {"stream": True}, (True, False, None)),
    ("stream_options null without stream", {"stream_options": None}, (False, False, None)),
    ("stream_options null", {"stream": True, "stream_options": None}, (True, False, None)),
    ("stream_options empty", {"stream": True, "stream_options": {}}, (True, False, None)),
    ("include_usage true", {"stream": True, "stream_options": {"include_usage": True}}, (True, True, None)),
    ("include_usage false", {"stream": True, "stream_options": {"include_usage": False}}, (True, False, None)),
    ("other stream option", {"stream": True, "stream_options": {"include_obfuscation": False}}, (True, False, None)),
    ("max_tokens null", {"max_tokens": None}, (False, False, None)),
    ("max_tokens 1", {"max_tokens": 1}, (False, False, 1)),
    ("max_tokens huge", {"max_tokens": 10**30}, (False, False, 10**30)),
    ("max_completion_tokens null", {"max_completion_tokens": None}, (False, False, None)),
    ("max_completion_tokens 1", {"max_completion_tokens": 1}, (False, False, 1)),
    ("max_completion_tokens huge", {"max_completion_tokens": 10**30}, (False, False, 10**30)),
    ("both, max_tokens smaller", {"max_tokens": 3, "max_completion_tokens": 5}, (False, False, 3)),
    ("both, max_completion_tokens smaller", {"max_tokens": 5, "max_completion_tokens": 3}, (False, False, 3)),
    ("both equal", {"max_tokens": 4, "max_completion_tokens": 4}, (False, False, 4)),
    ("max_tokens with null max_completion_tokens", {"max_tokens": 5, "max_completion_tokens": None},
     (False, False, 5)),
    ("everything", {"stream": True, "stream_options": {"include_usage": True}, "max_completion_tokens": 9},
     (True, True, 9)),
]


@pytest.mark.parametrize("changes,expected", [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_a_valid_request_gives_what_the_gateway_needs(changes, expected):
    assert validate(chat(**changes)) == ChatRequest("gwlab-sim", 3, *expected)


CAPS = ("max_tokens", "max_completion_tokens")
INVALID = [
    # id, changes, param, code, the message
    ("stream string", {"stream": "yes"}, "stream", "invalid_type", "'stream' must be true or false, got a string"),
    ("stream 1", {"stream": 1}, "stream", "invalid_type", "'stream' must be true or false, got a number"),
    ("stream 0", {"stream": 0}, "stream", "invalid_type", "'stream' must be true or false, got a number"),
    ("stream_options string", {"stream": True, "stream_options": "usage"}, "stream_options", "invalid_type",
     "'stream_options' must be an object or null, got a string"),
    ("stream_options array", {"stream": True, "stream_options": []}, "stream_options", "invalid_type",
     "'stream_options' must be an object or null, got an empty array"),
    ("stream_options true", {"stream": True, "stream_options": True}, "stream_options", "invalid_type",
     "'stream_options' must be an object or null, got a boolean"),
    *[(f"stream_options with stream {shown}", {"stream": stream, "stream_options": {"include_usage": True}},
       "stream_options", "invalid_parameter_combination",
       "'stream_options' is only allowed when 'stream' is true; leave it out or set it to null")
      for shown, stream in (("absent", DROP), ("null", None), ("false", False))],
    ("include_usage null", {"stream": True, "stream_options": {"include_usage": None}},
     "stream_options.include_usage", "invalid_type",
     "'stream_options.include_usage' must be true or false, got null"),
    ("include_usage string", {"stream": True, "stream_options": {"include_usage": "true"}},
     "stream_options.include_usage", "invalid_type",
     "'stream_options.include_usage' must be true or false, got a string"),
    ("include_usage 1", {"stream": True, "stream_options": {"include_usage": 1}},
     "stream_options.include_usage", "invalid_type",
     "'stream_options.include_usage' must be true or false, got a number"),
    *[(f"{field} {json.dumps(value)}", {field: value}, field, code,
       f"'{field}' must be an integer >= 1 or null, got {shown}")
      for field in CAPS
      for value, code, shown in (
          (0, "integer_below_min_value", "0"),
          (-1, "integer_below_min_value", "-1"),
          (-10**30, "integer_below_min_value", str(-10**30)),
          (-10**4000, "integer_below_min_value", "-1E+4000"),  # rounded, as a scenario's values are
          (2.0, "invalid_type", "2.0"),
          (1.5, "invalid_type", "1.5"),
          (1e300, "invalid_type", "1e+300"),
          (True, "invalid_type", "true"),
          (False, "invalid_type", "false"),
          ("5", "invalid_type", "a string"),
          ([5], "invalid_type", "an array"),
          ({}, "invalid_type", "an object"),
      )],
    ("both, one bad", {"max_tokens": 5, "max_completion_tokens": 0}, "max_completion_tokens",
     "integer_below_min_value", "'max_completion_tokens' must be an integer >= 1 or null, got 0"),
]


@pytest.mark.parametrize("changes,param,code,message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_an_invalid_field_is_a_400_naming_it_its_value_and_what_is_allowed(changes, param, code, message):
    error = refusal(chat(**changes))
    assert (error.param, error.code, error.message) == (param, code, message)


BODIES = [
    # id, body, param, code, text in the message
    ("array", [CHAT], None, "invalid_request_body", "request body must be a JSON object, got an array"),
    ("null", None, None, "invalid_request_body", "request body must be a JSON object, got null"),
    ("no model", chat(model=DROP), "model", "missing_required_parameter", "'model' is required"),
    ("model number", chat(model=42), "model", "invalid_type", "'model' must be a non-empty string, got a number"),
    ("model empty", chat(model=""), "model", "invalid_type", "got an empty string"),
    ("model of 256 characters", chat(model="m" * 256), None, None, None),
    ("model of 257 characters", chat(model="m" * 257), "model", "invalid_value",
     "'model' must be at most 256 characters long, got 257"),
    ("model with a lone surrogate", chat(model="m\udc80"), "model", "invalid_value", "lone surrogate"),
    ("no messages", chat(messages=DROP), "messages", "missing_required_parameter", "'messages' is required"),
    ("messages empty", chat(messages=[]), "messages", "invalid_type", "got an empty array"),
]


@pytest.mark.parametrize("body,param,code,text", [c[1:] for c in BODIES], ids=[c[0] for c in BODIES])
def test_the_body_and_the_model_are_checked(body, param, code, text):
    if code is None:
        assert validate(body).model == body["model"]
        return
    error = refusal(body)
    assert (error.param, error.code) == (param, code)
    assert text in error.message


CONTENT_CASES = [
    # id, messages, param of the 400 (None: valid)
    ("role banana", [{"role": "banana", "content": "hi"}], "messages[0].role"),
    ("parts of numbers and null", [{"role": "user", "content": [1, None]}], "messages[0].content[0]"),
    ("text not a string", [{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0].text"),
    ("no text", [{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
    ("unknown part type", [{"role": "user", "content": [{"type": "video", "video": {}}]}],
     "messages[0].content[0].type"),
    ("image part for system", [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "messages[0].content[0].type"),
    ("image_url not an object", [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
     "messages[0].content[0].image_url"),
    ("empty parts", [{"role": "user", "content": []}], "messages[0].content"),
    ("user without content", [{"role": "user"}], "messages[0].content"),
    ("user with null content", [{"role": "user", "content": None}], "messages[0].content"),
    ("assistant without content or tool_calls", [{"role": "assistant"}], "messages[0].content"),
    ("tool without tool_call_id", [{"role": "tool", "content": "42"}], "messages[0].tool_call_id"),
    ("tool_call_id a number", [{"role": "tool", "content": "42", "tool_call_id": 7}], "messages[0].tool_call_id"),
    ("name a number", [{"role": "user", "content": "hi", "name": 1}], "messages[0].name"),
    ("function without name", [{"role": "function", "content": "x"}], "messages[0].name"),
    ("function with parts", [{"role": "function", "name": "f", "content": [{"type": "text", "text": "x"}]}],
     "messages[0].content"),
    ("lone surrogate", [{"role": "user", "content": "\ud800"}], "messages[0].content"),
    ("lone surrogate in a part", [{"role": "user", "content": [{"type": "text", "text": "a\udfffb"}]}],
     "messages[0].content[0].text"),
    ("string", [{"role": "user", "content": "hi"}], None),
    ("text parts", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], None),
    ("every user part type", [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "f"}}]}], None),
    ("system and developer", [{"role": "system", "content": "be brief"},
                              {"role": "developer", "content": [{"type": "text", "text": "really"}]},
                              {"role": "user", "content": "hi", "name": "ann"}], None),
    ("assistant with tool_calls and a tool answer", [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], None),
    ("assistant refusal part", [{"role": "user", "content": "x"},
                                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}], None),
    ("function message", [{"role": "function", "name": "f", "content": None}], None),
    ("emoji", [{"role": "user", "content": "h\U0001f600i"}], None),
]


@pytest.mark.parametrize("messages,param", [c[1:] for c in CONTENT_CASES], ids=[c[0] for c in CONTENT_CASES])
def test_messages_are_checked_as_openai_checks_them(messages, param):
    if param is None:
        assert validate(chat(messages=messages)).model == "gwlab-sim"
    else:
        error = refusal(chat(messages=messages))
        assert (error.param, error_type(error.status)) == (param, "invalid_request_error")


@pytest.mark.parametrize("messages,tokens", [
    ([{"role": "user", "content": ""}], 1),
    ([{"role": "user", "content": "abcd"}], 1),
    ([{"role": "user", "content": "abcde"}], 2),
    ([{"role": "system", "content": "abcd"}, {"role": "user", "content": [
        {"type": "text", "text": "ab"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        {"type": "text", "text": "cde"}]}], 3),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}], 1),
], ids=["empty", "four characters", "five characters", "text of every message and part", "no text"])
def test_prompt_tokens_are_one_per_four_characters_of_text_at_least_one(messages, tokens):
    assert validate(chat(messages=messages)).prompt_tokens == tokens


RICH = {
    "model": "gwlab-sim", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 9,
    "max_completion_tokens": 7,
    "messages": [
        {"role": "system", "content": "be brief", "name": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}], "tool_calls": []},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        {"role": "function", "content": None, "name": "f"},
    ],
}
"""A valid request that uses every field the gateway reads."""
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6)
"""Any JSON value Python's parser gives (NaN and the infinities included, as it reads them)."""


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    """The path of ``value`` itself and of everything inside it."""
    inner = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [path] + [p for key, child in inner for p in _paths(child, (*path, key))]


def _replaced(body: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    copy = dict(body) if isinstance(body, dict) else list(body)
    copy[path[0]] = _replaced(body[path[0]], path[1:], value)
    return copy


@given(where=st.sampled_from(_paths(RICH)), value=JSON_VALUES, dropped=st.booleans())
def test_any_value_anywhere_is_taken_or_refused_as_a_400_naming_a_field(where, value, dropped):
    """Whatever a client puts in a field the gateway reads (or leaves out): a request, or a 400
    whose param is a field of the body; never another exception (a 500 and a traceback)."""
    validate(RICH)
    body = _replaced(RICH, where, value)
    if dropped and where and isinstance(value, (dict, list)):
        body = _replaced(RICH, where, type(value)())  # an empty object or array there
    try:
        request = validate(body)
    except ApiError as error:
        assert error.status == 400 and error.message
        assert error.param is None or error.param.split(".")[0].split("[")[0] in RICH
    else:
        assert isinstance(request, ChatRequest)


_TEXTS = st.text(st.sampled_from("a \u00e9\ud800\U0001f600"), max_size=3)
"""Text of ASCII, other characters and a lone surrogate."""
_MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot", ""]),
         "content": _TEXTS},
        optional={"name": _TEXTS, "tool_call_id": _TEXTS})
    | st.dictionaries(st.sampled_from(["role", "content", "name"]), JSON_VALUES | _TEXTS, max_size=3)
    | JSON_VALUES,
    min_size=1, max_size=4)


@settings(max_examples=400)
@given(messages=_MESSAGES)
def test_a_message_of_a_role_and_text_is_judged_as_every_other_message_is(messages):
    """validate tells a message of a role and ASCII text without _message: the same prompt
    tokens, or the same 400, as _message gives for any message."""
    def outcome(judge):
        try:
            return judge()
        except ApiError as error:
            return error.status, error.message, error.code, error.param

    told = outcome(lambda: validate({"model": "m", "messages": messages}).prompt_tokens)
    expected = outcome(lambda: (sum(_message(m, f"messages[{i}]") for i, m in enumerate(messages)) + 3) // 4 or 1)
    assert told == expected


@pytest.mark.parametrize("status,type_", [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "invalid_request_error"), (429, "rate_limit_error"), (500, "server_error"), (502, "api_error"),
    (503, "api_error"), (504, "api_error"), (505, "invalid_request_error"), (507, "server_error"),
])
def test_error_body_has_the_openai_shape(status, type_):
    body = json.loads(error_body(status, "went wrong", "some_code", "messages[0]"))
    assert body == {"error": {"message": "went wrong", "type": type_, "param": "messages[0]", "code": "some_code"}}


def test_the_completion_body_is_the_seeds_to_the_byte():
    """The body the server has always sent for these inputs: the seed's answers do not change."""
    content, tokens = reply("p1")
    assert completion(b"0a1b2c3d", 7, 1700000000, "gwlab-sim", content, 12, tokens, "stop") == (
        b'{"id": "chatcmpl-0a1b2c3d00000007", "object": "chat.completion", "created": 1700000000, '
        b'"model": "gwlab-sim", "choices": [{"index": 0, "message": {"role": "assistant", "content": '
        b'"This is a simulated answer from gwlab provider p1."}, "logprobs": null, "finish_reason": "stop"}], '
        b'"usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}')


@pytest.mark.parametrize("model", ["gwlab-sim", 'm\u00f6del "x"\n\\', "\U0001f600"])
@pytest.mark.parametrize("finish_reason", ["stop", "length"])
def test_the_completion_body_is_a_chat_completion_as_json_dumps_writes_it(model, finish_reason):
    content, tokens = reply("p_2")
    raw = completion(b"ffffffff", 2**32 + 5, 0, model, content, 1, tokens, finish_reason)
    assert raw == json.dumps(json.loads(raw)).encode()
    body = ChatCompletion.model_validate_json(raw)
    assert (body.id, body.object, body.created, body.model) == ("chatcmpl-ffffffff100000005", "chat.completion", 0,
                                                                model)
    [choice] = body.choices
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, finish_reason, None)
    assert (choice.message.role, choice.message.content) == ("assistant", json.loads(content))
    assert (body.usage.prompt_tokens, body.usage.completion_tokens, body.usage.total_tokens) == (1, 9, 10)


def test_the_reply_is_nine_word_tokens_once_and_repeated_or_cut_to_any_length():
    once = "This is a simulated answer from gwlab provider p1."
    assert reply_pieces("p1") == ["This", " is", " a", " simulated", " answer", " from", " gwlab", " provider", " p1."]
    assert reply("p1") == (json.dumps(once).encode(), 9)
    assert reply_pieces("p1", 1) == ["This"]
    assert reply_pieces("p1", 11, 4) == ["This is a simulated", " answer from gwlab provider", " p1. This is"]
    assert reply_pieces("p1", 9, 100) == [once]
    assert reply("p1", 12) == (json.dumps(once + " This is a").encode(), 12)


@pytest.mark.parametrize("tokens,size", [(0, 1), (-1, 1), (1, 0)])
def test_a_reply_of_no_tokens_or_in_empty_pieces_is_an_error(tokens, size):
    with pytest.raises(ValueError):
        reply_pieces("p1", tokens, size)


@given(provider=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True),
       tokens=st.integers(1, 400), size=st.integers(1, 60))
def test_the_pieces_join_to_the_reply_of_exactly_n_tokens_that_the_body_carries(provider, tokens, size):
    pieces = reply_pieces(provider, tokens, size)
    text = "".join(pieces)
    assert len(text.split()) == tokens
    assert len(pieces) == math.ceil(tokens / size)
    assert [len(piece.split()) for piece in pieces[:-1]] == [size] * (len(pieces) - 1)
    assert 1 <= len(pieces[-1].split()) <= size
    assert all(piece.startswith(" ") for piece in pieces[1:])
    once = f"This is a simulated answer from gwlab provider {provider}."
    repeated = " ".join([once] * math.ceil(tokens / 9))
    assert repeated.startswith(text) and repeated[len(text):][:1] in ("", " ")
    content, count = reply(provider, tokens)
    assert count == tokens
    body = ChatCompletion.model_validate_json(completion(b"ab", 1, 0, "m", content, 1, count, "length"))
    assert body.choices[0].message.content == text


def frame_json(frame: bytes) -> bytes:
    """The JSON of one server-sent event ``data: <json>\\n\\n``, checked to be one event of
    one line, as ``json.dumps`` writes it."""
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    data = frame[len(b"data: "):-2]
    assert b"\n" not in data and b"\r" not in data
    assert data == json.dumps(json.loads(data)).encode()
    return data


def delta(chunk: ChatCompletionChunk) -> tuple[int, str | None, str | None, str | None]:
    """The one choice of ``chunk``: index, role, content, finish_reason."""
    [choice] = chunk.choices
    return choice.index, choice.delta.role, choice.delta.content, choice.finish_reason


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("model", ["gwlab-sim", 'm\u00f6del "x"\n\\'])
def test_every_frame_is_a_chat_completion_chunk_of_the_one_stream(include_usage, model):
    stream = Chunks(b"0a1b2c3d", 7, 1700000000, model, include_usage)
    pieces = ["This", " is", ' "quoted"\n', " \U0001f600"]
    frames = [stream.first(), *map(stream.content, pieces), stream.finish("length")]
    if include_usage:
        frames.append(stream.usage(12, 4))
    chunks = [ChatCompletionChunk.model_validate_json(frame_json(frame)) for frame in frames]
    assert {(c.id, c.object, c.created, c.model) for c in chunks} == {
        ("chatcmpl-0a1b2c3d00000007", "chat.completion.chunk", 1700000000, model)}
    assert [delta(c) for c in chunks[:len(pieces) + 2]] == [
        (0, "assistant", "", None), *[(0, None, piece, None) for piece in pieces], (0, None, None, "length")]
    bodies = [json.loads(frame_json(frame)) for frame in frames]
    assert bodies[len(pieces) + 1]["choices"][0]["delta"] == {}
    if include_usage:
        assert [body["usage"] for body in bodies[:-1]] == [None] * (len(frames) - 1)
        usage = chunks[-1].usage
        assert (bodies[-1]["choices"], usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
            [], 12, 4, 16)
    else:
        assert ["usage" in body for body in bodies] == [False] * len(frames)


def test_the_done_and_error_frames_are_as_openai_sends_them():
    assert DONE == b"data: [DONE]\n\n"
    error = json.loads(frame_json(error_frame(504, "provider p1 did not answer within 2 s", "provider_timeout")))
    assert error == {"error": {"message": "provider p1 did not answer within 2 s", "type": "api_error",
                               "param": None, "code": "provider_timeout"}}


def sdk_stream(raw: bytes) -> list[ChatCompletionChunk]:
    """The chunks the official SDK reads from a stream whose body is ``raw``."""
    import httpx2  # the HTTP client of the SDK, one of its dependencies
    request = httpx2.Request("POST", "http://gw.invalid/v1/chat/completions")
    response = httpx2.Response(200, content=raw, headers={"Content-Type": "text/event-stream"}, request=request)
    client = openai.OpenAI(api_key="x", base_url="http://gw.invalid/v1")
    return list(openai.Stream(cast_to=ChatCompletionChunk, response=response, client=client))


def test_the_sdk_reads_a_whole_stream_as_the_completion_of_the_same_reply():
    stream = Chunks(b"ab", 1, 0, "gwlab-sim", True)
    pieces = reply_pieces("p1", 20, 3)
    frames = [stream.first(), *map(stream.content, pieces), stream.finish("length"), stream.usage(3, 20), DONE]
    chunks = sdk_stream(b"".join(frames))
    assert len(chunks) == len(pieces) + 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    content, tokens = reply("p1", 20)
    assert (text, tokens) == (json.loads(content), 20)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.total_tokens == 23


def test_the_sdk_raises_its_api_error_for_an_error_frame():
    stream = Chunks(b"ab", 1, 0, "gwlab-sim", False)
    raw = stream.first() + stream.content("This") + error_frame(502, "provider p1 failed", "provider_error") + DONE
    with pytest.raises(openai.APIError) as info:
        sdk_stream(raw)
    assert (info.value.message, info.value.code, info.value.type) == ("provider p1 failed", "provider_error",
                                                                      "api_error")


# -- the rate-limit headers -----------------------------------------------------------------


@pytest.mark.parametrize(("wait_us", "text"), [
    (0, "0s"),  # whole already
    (1, "1ms"),  # a microsecond rounds up to a millisecond, never to 0s
    (999, "1ms"),
    (1000, "1ms"),
    (1001, "2ms"),
    (20_000, "20ms"),
    (999_000, "999ms"),
    (999_001, "1s"),
    (1_000_000, "1s"),  # OpenAI's sample
    (1_500_000, "1.5s"),
    (1_020_000, "1.02s"),
    (1_000_001, "1.001s"),
    (59_999_000, "59.999s"),
    (60_000_000, "1m0s"),
    (61_500_000, "1m1.5s"),
    (360_000_000, "6m0s"),  # OpenAI's sample
    (3_599_999_000, "59m59.999s"),
    (3_600_000_000, "1h0m0s"),
    (3_661_001_000, "1h1m1.001s"),
    (90_061_000_000, "25h1m1s"),  # Go writes hours however many
    (31_536_000_000_000, "8760h0m0s"),  # a year, the longest time a scenario holds
])
def test_reset_durations_are_whole_milliseconds_rounded_up_as_go_writes_them(wait_us, text):
    assert reset_duration(wait_us) == text


_GO_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?")


def parse_go_duration(text: str) -> float:
    """Seconds in a duration as Go's ``time.ParseDuration`` reads the forms Go writes."""
    match = _GO_DURATION.fullmatch(text)
    assert match and text, text
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


@given(st.integers(0, 31_536_000_000_000))
def test_a_reset_duration_reads_back_as_the_wait_rounded_up_to_a_millisecond(wait_us):
    millis = round(parse_go_duration(reset_duration(wait_us)) * 1000)
    assert millis == -(-wait_us // 1000)
    assert millis * 1000 >= wait_us  # never early


@pytest.mark.parametrize(("kind", "limit", "remaining", "reset_us", "headers"), [
    ("requests", 60, 59, 1_000_000, [("x-ratelimit-limit-requests", "60"), ("x-ratelimit-remaining-requests", "59"),
                                      ("x-ratelimit-reset-requests", "1s")]),
    ("tokens", 150_000, 149_984, 360_000_000, [("x-ratelimit-limit-tokens", "150000"),
                                               ("x-ratelimit-remaining-tokens", "149984"),
                                               ("x-ratelimit-reset-tokens", "6m0s")]),
    ("requests", 1, 0, 1, [("x-ratelimit-limit-requests", "1"), ("x-ratelimit-remaining-requests", "0"),
                           ("x-ratelimit-reset-requests", "1ms")]),
    ("tokens", 150_000_000, 150_000_000, 0, [("x-ratelimit-limit-tokens", "150000000"),
                                             ("x-ratelimit-remaining-tokens", "150000000"),
                                             ("x-ratelimit-reset-tokens", "0s")]),
], ids=["openai's requests sample", "openai's tokens sample", "empty", "full"])
def test_the_ratelimit_headers_are_openais(kind, limit, remaining, reset_us, headers):
    assert ratelimit_headers(kind, limit, remaining, reset_us) == headers


@pytest.mark.parametrize("role, article", [("system", "a"), ("developer", "a"), ("user", "a"), ("assistant", "an"),
                                           ("tool", "a")])
def test_a_missing_content_is_named_with_its_role(role, article):
    message = {"role": role, "tool_call_id": "c"} if role == "tool" else {"role": role}
    error = refusal(chat(messages=[message]))
    assert error.message.startswith(f"'messages[0].content' is required in {article} {role} message")
    assert error.param == "messages[0].content"
