"""The OpenAI wire format of chat completions: what a request must be, and the completion
body, the frames of a streamed completion and the error bodies the gateway answers with, as
values and bytes. No I/O and no clock: the shells (:mod:`gwlab.server`,
:mod:`gwlab.errors`) send what this module writes.

A request is checked as OpenAI's request schema (API reference, "Create chat completion")
defines it, so that a request the API would refuse is a 400 here too (and costs no token).
Checked: ``model``; ``messages``, each by its ``role`` (system, developer, user, assistant,
tool, function) with that role's content rules, its content parts by their ``type``, and
the strings it holds (``name``, ``tool_call_id``); ``stream``; ``stream_options`` and its
``include_usage``; ``max_tokens`` and ``max_completion_tokens``. Every string checked must be
valid Unicode: a lone surrogate (``"\\ud800"``) is refused. Every other field the API
defines (``temperature``, ``tools`` ...) is accepted and ignored: the simulated providers
have no use for it. The README lists both.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal, Mapping, NamedTuple

from gwlab.config import MAX_MODEL_LENGTH, shown_value
from gwlab.providers import REPLY


class ApiError(Exception):
    """A request the gateway answers with an error: HTTP status, message, OpenAI ``code``,
    the offending parameter (``param``, if any) and headers of the answer (if any).
    :func:`gwlab.errors.answer` turns it into an HTTP answer with :func:`error_body`."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers


_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
    505: "invalid_request_error",  # the client's HTTP version, not the server's fault
}
"""OpenAI error ``type`` by status; every other 4xx is an ``invalid_request_error``."""


def error_type(status: int) -> str:
    """The OpenAI error ``type`` for an HTTP status."""
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def error_body(status: int, message: str, code: str, param: str | None = None) -> bytes:
    """The JSON body of an error answer, in the shape of OpenAI's:
    ``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``."""
    error = {"message": message, "type": error_type(status), "param": param, "code": code}
    return json.dumps({"error": error}).encode()



_TEXT_ONLY = frozenset({"text"})
_PARTS = {
    "system": _TEXT_ONLY,
    "developer": _TEXT_ONLY,
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": _TEXT_ONLY,
}
"""The content part types each role may send (``function`` messages take a string only)."""
_PART_FIELD = {"text": "text", "refusal": "refusal", "image_url": "image_url", "input_audio": "input_audio",
               "file": "file"}
"""The field each part type must carry: a string for text and refusal, an object for the others."""
_ROLES = ", ".join(repr(r) for r in (*_PARTS, "function"))
_TEXT_ROLES = frozenset(("system", "developer", "user", "assistant"))
"""The roles whose message may be text alone (a tool message needs its call's id, a function
message its name)."""


class ChatRequest(NamedTuple):
    """What the gateway needs of a valid chat completion request."""

    model: str
    prompt_tokens: int
    """An estimate of the prompt's tokens: one per four characters of its text, at least 1."""
    stream: bool
    """Whether the answer is to be streamed (``stream: true``)."""
    include_usage: bool
    """Whether a stream ends with a usage frame (``stream_options.include_usage``)."""
    max_tokens: int | None
    """The most tokens the reply may have (at least 1: the smaller of ``max_tokens`` and
    ``max_completion_tokens``), or None for no cap."""


def validate(body: Any) -> ChatRequest:
    """The :class:`ChatRequest` of the JSON value ``body``; :class:`ApiError` 400 naming the
    offending field otherwise.

    ``max_tokens`` (deprecated by OpenAI) and ``max_completion_tokens`` both cap the reply;
    when both are given, the smaller one does (OpenAI's own API answers the pair with a 400,
    ``invalid_parameter_combination``, for its current models)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, got {kind(body)}", "invalid_request_body")
    if "model" not in body:
        raise ApiError(400, "'model' is required", "missing_required_parameter", "model")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise ApiError(400, f"'model' must be a non-empty string, got {kind(model)}", "invalid_type", "model")
    if len(model) > MAX_MODEL_LENGTH:
        raise ApiError(400, f"'model' must be at most {MAX_MODEL_LENGTH} characters long, got {len(model)}",
                       "invalid_value", "model")
    if not model.isascii():  # most names are: no call
        _unicode(model, "model")
    if "messages" not in body:
        raise ApiError(400, "'messages' is required", "missing_required_parameter", "messages")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"'messages' must be a non-empty array of message objects, got {kind(messages)}",
                       "invalid_type", "messages")
    chars = 0
    for i, message in enumerate(messages):
        # Nearly every message is a role and ASCII text, nothing else, and is told so here: no
        # call, and no name of the field to spell. Any other goes through _message.
        if message.__class__ is dict and len(message) == 2:
            role, content = message.get("role"), message.get("content")
            if role.__class__ is str and role in _TEXT_ROLES and content.__class__ is str and content.isascii():
                chars += len(content)
                continue
        chars += _message(message, f"messages[{i}]")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, f"'stream' must be true or false, got {kind(stream)}", "invalid_type", "stream")
    streaming = stream is True
    options = body.get("stream_options")
    include_usage = options is not None and _include_usage(options, streaming)
    cap = None
    if "max_tokens" in body or "max_completion_tokens" in body:  # most requests set neither
        caps = [c for c in (_cap(body, "max_tokens"), _cap(body, "max_completion_tokens")) if c is not None]
        cap = min(caps, default=None)
    prompt_tokens = (chars + 3) // 4 or 1  # ceil(chars / 4), at least 1: integer arithmetic is cheaper
    # Built as ChatRequest(...) builds it, without its Python-level __new__: this runs for every request.
    return _new_request(ChatRequest, (model, prompt_tokens, streaming, include_usage, cap))


_new_request = tuple.__new__


def _include_usage(options: Any, stream: bool) -> bool:
    """Whether ``stream_options`` (not null) asks for a usage frame; 400 unless it is an
    object sent with ``stream: true`` whose ``include_usage`` (if any) is a boolean. OpenAI
    refuses ``stream_options`` without ``stream: true`` too."""
    if not isinstance(options, dict):
        raise ApiError(400, f"'stream_options' must be an object or null, got {kind(options)}", "invalid_type",
                       "stream_options")
    if not stream:
        raise ApiError(400, "'stream_options' is only allowed when 'stream' is true; leave it out or set it to null",
                       "invalid_parameter_combination", "stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise ApiError(400, f"'stream_options.include_usage' must be true or false, got {kind(include_usage)}",
                       "invalid_type", "stream_options.include_usage")
    return include_usage


def _cap(body: dict[str, Any], field: str) -> int | None:
    """The token cap ``body[field]``: an integer >= 1, or None when absent or null; 400
    otherwise, for a number written with a point or an exponent (``2.0``) and a boolean too."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f"'{field}' must be an integer >= 1 or null, got {_shown(value)}", "invalid_type", field)
    if value < 1:
        raise ApiError(400, f"'{field}' must be an integer >= 1 or null, got {_shown(value)}",
                       "integer_below_min_value", field)
    return value


def _message(message: Any, where: str) -> int:
    """Check one message; the characters of its text."""
    if not isinstance(message, dict):
        raise ApiError(400, f"'{where}' must be an object, got {kind(message)}", "invalid_type", where)
    role = message.get("role")
    if not isinstance(role, str):
        raise ApiError(400, f"'{where}.role' must be a string, got {kind(role)}", "invalid_type", f"{where}.role")
    parts = _PARTS.get(role)
    if parts is None and role != "function":
        raise ApiError(400, f"'{where}.role' must be one of {_ROLES}, got {_short(role)}", "invalid_value",
                       f"{where}.role")
    if "name" in message:  # the loop over both names written out: this runs for every message
        _string(message["name"], f"{where}.name")
    if "tool_call_id" in message:
        _string(message["tool_call_id"], f"{where}.tool_call_id")
    if role == "tool" and "tool_call_id" not in message:
        raise ApiError(400, f"'{where}.tool_call_id' is required in a tool message", "missing_required_parameter",
                       f"{where}.tool_call_id")
    if role == "function" and "name" not in message:
        raise ApiError(400, f"'{where}.name' is required in a function message", "missing_required_parameter",
                       f"{where}.name")
    content = message.get("content")
    if content is None:
        if role == "function" and "content" in message:
            return 0
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return 0
        raise ApiError(400, f"'{where}.content' is required in {'an' if role == 'assistant' else 'a'} {role} message"
                       + (" without tool_calls" if role == "assistant" else ""),
                       "missing_required_parameter", f"{where}.content")
    if isinstance(content, str):
        if not content.isascii():  # most text is: no call, and no name of the field to spell
            _unicode(content, f"{where}.content")
        return len(content)
    if not isinstance(content, list) or parts is None:
        allowed = "a string" if parts is None else "a string or an array of content parts"
        raise ApiError(400, f"'{where}.content' must be {allowed}, got {kind(content)}", "invalid_type",
                       f"{where}.content")
    if not content:
        raise ApiError(400, f"'{where}.content' must not be an empty array", "invalid_value", f"{where}.content")
    chars = 0
    for j, part in enumerate(content):
        chars += _part(part, parts, f"{where}.content[{j}]", role)
    return chars


def _part(part: Any, allowed: frozenset[str], where: str, role: str) -> int:
    """Check one content part; the characters of its text."""
    if not isinstance(part, dict):
        raise ApiError(400, f"'{where}' must be a content part object, got {kind(part)}", "invalid_type", where)
    kind_ = part.get("type")
    if not isinstance(kind_, str) or kind_ not in allowed:  # a string first: an array or object is unhashable
        shown = _short(kind_) if isinstance(kind_, str) else kind(kind_)
        raise ApiError(400, f"'{where}.type' must be one of {', '.join(map(repr, sorted(allowed)))} in a {role} "
                       f"message, got {shown}", "invalid_value", f"{where}.type")
    field = _PART_FIELD[kind_]
    value = part.get(field)
    if kind_ in ("text", "refusal"):
        _string(value, f"{where}.{field}")
        return len(value)
    if not isinstance(value, dict):
        raise ApiError(400, f"'{where}.{field}' must be an object, got {kind(value)}", "invalid_type",
                       f"{where}.{field}")
    return 0


def _string(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise ApiError(400, f"'{where}' must be a string, got {kind(value)}", "invalid_type", where)
    _unicode(value, where)


def _unicode(text: str, where: str) -> None:
    """400 if ``text`` holds a lone surrogate, which no UTF-8 text can carry."""
    if text.isascii():  # known without a scan: most text is ASCII
        return
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ApiError(400, f"'{where}' holds a lone surrogate: not valid Unicode text", "invalid_value",
                       where) from None


def _shown(value: Any) -> str:
    """A number or boolean as JSON spells it (a whole number of many digits rounded, as
    :func:`gwlab.config.shown_value` shows it), any other value by its kind."""
    return shown_value(value) if isinstance(value, (int, float)) else kind(value)


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def kind(value: Any) -> str:
    """What a JSON value is, as an error message says it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, list):
        return "an empty array" if not value else "an array"
    return "an object"


# -- the completion body --------------------------------------------------------------------

FinishReason = Literal["stop", "length"]
"""Why a reply ended: ``"stop"``, it is whole; ``"length"``, it was cut at the request's cap
on tokens."""

_COMPLETION = (
    b'{"id": "chatcmpl-%s%08x", "object": "chat.completion", "created": %d, "model": %s, '
    b'"choices": [{"index": 0, "message": {"role": "assistant", "content": %s}, "logprobs": null, '
    b'"finish_reason": "%s"}], '
    b'"usage": {"prompt_tokens": %d, "completion_tokens": %d, "total_tokens": %d}}'
)
"""A chat.completion body exactly as ``json.dumps`` writes it, filled in per answer: formatting
one byte string costs a fraction of serialising the nested dict each time."""


def completion(id_prefix: bytes, number: int, created: int, model: str, content: bytes, prompt_tokens: int,
               completion_tokens: int, finish_reason: FinishReason) -> bytes:
    """The body of a ``chat.completion`` (OpenAI API reference, "The chat completion object"):
    id ``chatcmpl-`` followed by ``id_prefix`` (ASCII) and ``number`` in at least 8 hex
    digits; ``created`` in whole Unix seconds; ``content`` the assistant's message as an
    encoded JSON string (:func:`reply`); the usage in tokens."""
    return _COMPLETION % (id_prefix, number, created, _json_string(model), content, _REASONS[finish_reason],
                          prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


_REASONS = {"stop": b"stop", "length": b"length"}
"""Each finish reason, encoded once."""


@functools.lru_cache(maxsize=64)
def _json_string(text: str) -> bytes:
    """``text`` as an encoded JSON string. Cached: clients name the same few models again
    and again, and the pieces of replies are a few words."""
    return json.dumps(text).encode()


def reply(provider: str, tokens: int | None = None) -> tuple[bytes, int]:
    """The simulated assistant message of ``provider`` as an encoded JSON string (the
    ``content`` of :func:`completion`), and its length in tokens: the text the pieces of
    :func:`reply_pieces` join to, for the same ``tokens``."""
    text = "".join(reply_pieces(provider, tokens))
    return json.dumps(text).encode(), len(text.split())


def reply_pieces(provider: str, tokens: int | None = None, size: int = 1) -> list[str]:
    """The simulated reply of ``provider``, ``tokens`` long, in pieces of ``size`` tokens
    (the last may hold fewer): the contents of a stream's content frames, which join to the
    reply's text.

    A token of the reply is a word: the text of N tokens has ``len(text.split()) == N``,
    and a piece carries the space before its first word, as a tokenizer's tokens do
    (``["This", " is", " a", ...]`` for ``size`` 1). ``tokens`` None is the reply once (9
    tokens: a provider's name is one word); more tokens repeat it, separated by a space,
    and fewer cut it short. ValueError if ``tokens`` or ``size`` is below 1."""
    words = REPLY.format(provider).split()
    count = len(words) if tokens is None else tokens
    if count < 1 or size < 1:
        raise ValueError(f"a reply needs at least 1 token and pieces of at least 1, got {count} and {size}")
    words = [words[i % len(words)] for i in range(count)]
    return [(" " if i else "") + " ".join(words[i:i + size]) for i in range(0, count, size)]


# -- the frames of a stream ---------------------------------------------------------------

_CHUNK = b'data: {"id": "chatcmpl-%s%08x", "object": "chat.completion.chunk", "created": %d, "model": %s, '
_FIRST = (b'"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, '
          b'"finish_reason": null}]')
_CONTENT = b'"choices": [{"index": 0, "delta": {"content": %s}, "logprobs": null, "finish_reason": null}]'
_FINISH = b'"choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "%s"}]'
_USAGE = b'"choices": [], "usage": {"prompt_tokens": %d, "completion_tokens": %d, "total_tokens": %d}}\n\n'

DONE = b"data: [DONE]\n\n"
"""The event that ends a stream."""


class Chunks:
    """The frames of one streamed completion (``stream: true``; OpenAI API reference, "The
    chat completion chunk object"), each the bytes of one server-sent event, ``data:
    <chat.completion.chunk JSON>\\n\\n``, JSON as ``json.dumps`` writes it.

    A stream sends :meth:`first`, a :meth:`content` frame per piece of the reply
    (:func:`reply_pieces`), :meth:`finish`, with ``include_usage`` a :meth:`usage` frame, and
    :data:`DONE`; a failure after the first frame is an :func:`error_frame` instead of the
    rest. Every frame carries the stream's id, ``created`` and model; with ``include_usage``
    every frame before the usage frame carries ``"usage": null``, as OpenAI's do. Arguments
    as for :func:`completion`."""

    __slots__ = ("_head", "_end")

    def __init__(self, id_prefix: bytes, number: int, created: int, model: str, include_usage: bool) -> None:
        self._head = _CHUNK % (id_prefix, number, created, _json_string(model))
        self._end = b', "usage": null}\n\n' if include_usage else b"}\n\n"

    def first(self) -> bytes:
        """The frame that opens the assistant's message: ``delta: {"role": "assistant",
        "content": ""}``."""
        return self._head + _FIRST + self._end

    def content(self, piece: str) -> bytes:
        """The frame of one piece of the reply: ``delta: {"content": piece}``."""
        return self._head + _CONTENT % _json_string(piece) + self._end

    def finish(self, finish_reason: FinishReason) -> bytes:
        """The frame after the last piece: an empty delta and the reason the reply ended."""
        return self._head + _FINISH % finish_reason.encode() + self._end

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The frame of the usage in tokens, with no choices: the last before :data:`DONE`
        when the request asked for it (``stream_options.include_usage``)."""
        return self._head + _USAGE % (prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


def error_frame(status: int, message: str, code: str, param: str | None = None) -> bytes:
    """The frame of a failure after a stream's first frame, when the status has been sent:
    the body of :func:`error_body` as one server-sent event."""
    return b"data: " + error_body(status, message, code, param) + b"\n\n"


# -- the rate-limit headers -----------------------------------------------------------------

RATELIMIT_KINDS = ("requests", "tokens")
"""The limits OpenAI's headers name: ``x-ratelimit-limit-requests``, ``...-tokens``."""
_RATELIMIT_NAMES = {kind: (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}",
                           f"x-ratelimit-reset-{kind}") for kind in RATELIMIT_KINDS}
_MILLIS = ["0s"] + [f"{ms}ms" for ms in range(1, 1000)]
"""Every duration under a second, written once: most resets of a busy gateway are."""


def reset_duration(wait_us: int) -> str:
    """A wait in whole microseconds as OpenAI writes ``x-ratelimit-reset-*``: rounded up to
    a whole millisecond (the resolution of OpenAI's values), then as Go's
    ``time.Duration.String`` writes it (``0s``, ``20ms``, ``1s``, ``1.5s``, ``6m0s``,
    ``1h0m0s``), which Go's ``time.ParseDuration`` and the clients that read these headers
    parse back. Rounded up, a client that waits it finds the limit whole again."""
    ms = -(-wait_us // 1000)
    if ms < 1000:
        return _MILLIS[ms]
    seconds, fraction = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    text = f"{seconds}.{fraction:03d}".rstrip("0") + "s" if fraction else f"{seconds}s"
    if minutes:
        hours, minutes = divmod(minutes, 60)
        text = f"{hours}h{minutes}m{text}" if hours else f"{minutes}m{text}"
    return text


def ratelimit_headers(kind: str, limit: int, remaining: int, reset_us: int) -> list[tuple[str, str]]:
    """OpenAI's rate-limit headers of one limit (``kind``, one of :data:`RATELIMIT_KINDS`),
    as ``(name, value)`` pairs: ``x-ratelimit-limit-KIND``, the most it permits before it is
    exhausted; ``x-ratelimit-remaining-KIND``, what is left of it; ``x-ratelimit-reset-KIND``,
    the time until it is whole again (:func:`reset_duration` of ``reset_us``)."""
    limit_name, remaining_name, reset_name = _RATELIMIT_NAMES[kind]
    ms = -(-reset_us // 1000)  # reset_duration(reset_us), its usual case written out: this runs for every answer
    return [(limit_name, str(limit)), (remaining_name, str(remaining)),
            (reset_name, _MILLIS[ms] if ms < 1000 else reset_duration(reset_us))]
