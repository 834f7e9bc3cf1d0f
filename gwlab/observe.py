"""What a real upstream's answer means to the gateway: the outcome of its status, its
retry-after, the tokens of its completion, and the frames of its stream. No I/O: the server
(:mod:`gwlab.server`) feeds in the bytes and headers it received.

The outcomes follow DESIGN ("Upstreams and replicas"):

======================================  =========================  ====================
upstream answer                         gateway answers            breaker
======================================  =========================  ====================
2xx with a valid body                   200, the upstream's body   success
429                                     429, its retry-after kept  failure (by default)
400, 404, 422                           the same, passed through   not charged
401, 403 (a misconfigured key)          502                        failure
408, 5xx, any other status              502                        failure
an invalid body, a reset, no connection 502                        failure
no answer (stream: no first content     504                        failure
token) within ``gateway.timeout``
======================================  =========================  ====================

A stream (Server-Sent Events, as OpenAI's) is cut into its events by :class:`Frames`; each
event's ``data`` is one ``chat.completion.chunk`` object, an ``{"error": ...}`` object or
``[DONE]``. Line ends may be ``\\n`` or ``\\r\\n``. A body and a chunk have the same
shape: a JSON object whose ``choices`` is a list of objects (a usage frame's is empty). An
``error`` that is there and not empty makes an error frame, as the ``openai`` SDK reads one
(it raises ``APIError`` for it).
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, NamedTuple

from gwlab.config import MAX_OUTPUT_TOKENS, UPSTREAM_MAX_RETRY_AFTER
from gwlab.providers import Outcome
from gwlab.upstream import MIN_RETRY_AFTER

PASSED_THROUGH = frozenset({400, 404, 422})
"""Upstream statuses the client gets as they are: the request was at fault, not the upstream."""


class InvalidAnswer(ValueError):
    """An upstream's body or stream that is not what the OpenAI API sends (a failure: 502)."""


def outcome(status: int) -> Outcome | None:
    """The outcome of an upstream's answer with HTTP ``status``; ``None`` for a status
    passed through to the client (:data:`PASSED_THROUGH`), which says nothing of the
    upstream's health."""
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status == 429:
        return Outcome.RATE_LIMITED
    if status in PASSED_THROUGH:
        return None
    return Outcome.ERROR


def retry_after(headers: Mapping[str, str]) -> float:
    """The seconds a 429's headers (a case-insensitive mapping) ask to wait: its
    ``retry-after-ms`` (OpenAI's, exact), else its ``Retry-After`` in seconds (RFC 9110; a
    date counts as absent: reading it would need a clock), at least
    :data:`~gwlab.upstream.MIN_RETRY_AFTER` and at most
    :data:`~gwlab.config.UPSTREAM_MAX_RETRY_AFTER` whatever they say."""
    for name, per_second in (("retry-after-ms", 1000.0), ("Retry-After", 1.0)):
        try:
            wait = float(headers.get(name, "")) / per_second
        except ValueError:
            continue
        if not math.isnan(wait):
            return min(max(MIN_RETRY_AFTER, wait), UPSTREAM_MAX_RETRY_AFTER)
    return MIN_RETRY_AFTER


_DELTA_FIELDS = ("content", "reasoning_content", "reasoning", "refusal", "tool_calls")
"""The fields of a stream's delta that carry a token or more: the answer, the reasoning that
reasoning models send before it (``reasoning_content`` as DeepSeek's API, vLLM and llama.cpp
name it, ``reasoning`` as Ollama and OpenRouter do), a refusal and a tool call."""


def completion_tokens(body: bytes) -> int:
    """The output tokens of a ``chat.completion`` body: its ``usage.completion_tokens``, or
    without usage an estimate from the characters of its messages' text (answer, reasoning
    and refusal: one token per four, rounded up, as the gateway estimates prompts). Raises :class:`InvalidAnswer` for a body that
    is not a JSON object with a ``choices`` list of objects."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidAnswer("the upstream's answer is not JSON") from None
    if not _shaped(answer):
        raise InvalidAnswer("the upstream's answer is not a chat.completion object")
    used = _usage(answer)
    if used is not None:
        return used
    chars = sum(_characters(c["message"]) for c in answer["choices"] if isinstance(c.get("message"), dict))
    return (chars + 3) // 4


def _characters(message: dict[str, Any]) -> int:
    """The characters of a message's text: its answer, its refusal and its reasoning, once
    (a server may send the same reasoning under both names, as vLLM does while it moves
    from ``reasoning_content`` to ``reasoning``: the longer counts)."""
    def length(field: str) -> int:
        text = message.get(field)
        return len(text) if isinstance(text, str) else 0

    return length("content") + length("refusal") + max(length("reasoning_content"), length("reasoning"))


def counted(tokens: int, max_tokens: int | None) -> int:
    """The output tokens the gateway counts for an upstream's answer that reports (or
    gives) ``tokens``: at most the request's ``max_tokens``, which an upstream honours, or
    :data:`~gwlab.config.MAX_OUTPUT_TOKENS` for a request without one. An upstream's usage,
    however wrong, then takes from a tokens limit no more than its request could use."""
    return min(tokens, MAX_OUTPUT_TOKENS if max_tokens is None else max_tokens)


def _shaped(answer: Any) -> bool:
    """Whether ``answer`` (parsed JSON) is a JSON object whose ``choices`` is a list of objects."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    return isinstance(choices, list) and all(isinstance(c, dict) for c in choices)


def _usage(chunk: dict[str, Any]) -> int | None:
    usage = chunk.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


class Frame(NamedTuple):
    """One event of an upstream's stream: ``raw``, its bytes to pass on (ending in a blank
    line); whether it carries ``content`` (a delta of the answer, of reasoning, a refusal or
    a tool call: one token or more), the ``usage`` it reports (its ``completion_tokens``, else ``None``),
    whether it is the stream's end (``done``: ``[DONE]``), and ``error``: why the stream
    fails at it, an error frame or an event that is not a chunk ("": it does not)."""

    raw: bytes
    content: bool = False
    usage: int | None = None
    done: bool = False
    error: str = ""


class Frames:
    """Cuts a Server-Sent Events stream into :class:`Frame` objects as its bytes arrive.
    An event longer than ``limit`` bytes raises :class:`InvalidAnswer`; one whose data is
    neither a chunk, an error nor ``[DONE]`` is a frame with its ``error`` (the frames before
    it in the same bytes are still given). Events without data (comments, keep-alives) are
    dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: list[bytes] = []
        """The bytes of the event under way (line ends made ``\n``), as they came: joined
        only once the event ends, so that an event arriving in many reads costs time in
        proportion to its length, not to its square."""
        self._size = 0
        self._cr = False
        """Whether the last read ended in ``\r``, held back: the first half of a ``\r\n``."""

    def feed(self, data: bytes) -> list[Frame]:
        """The events that ``data`` completes, in order."""
        if self._cr:
            data = b"\r" + data
        self._cr = data.endswith(b"\r")
        data = (data[:-1] if self._cr else data).replace(b"\r\n", b"\n")
        held = self._held
        if b"\n\n" not in data and not (data[:1] == b"\n" and held and held[-1].endswith(b"\n")):
            if data:
                held.append(data)
                self._size += len(data)
            self._check()
            return []
        *events, rest = (b"".join(held) + data).split(b"\n\n")
        self._held = [rest] if rest else []
        self._size = len(rest)
        self._check()
        frames = []
        for event in events:
            frame = _frame(event)
            if frame is not None:
                frames.append(frame)
        return frames

    def _check(self) -> None:
        if self._size + self._cr > self.limit:
            raise InvalidAnswer(f"an event of the upstream's stream is longer than {self.limit} bytes")


def _frame(event: bytes) -> Frame | None:
    """The frame of one event (its lines, without the blank line that ended it)."""
    data = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not data:
        return None
    payload = b"\n".join(data)
    raw = event + b"\n\n"
    if payload.strip() == b"[DONE]":
        return Frame(raw, done=True)
    try:
        chunk = json.loads(payload)
    except (ValueError, RecursionError):
        return Frame(raw, error="an event of the upstream's stream is not JSON")
    if not isinstance(chunk, dict):
        return Frame(raw, error="an event of the upstream's stream is not a JSON object")
    if chunk.get("error"):
        return Frame(raw, error="the upstream sent an error frame")
    if not _shaped(chunk):
        return Frame(raw, error="an event of the upstream's stream is not a chat.completion.chunk object")
    content = any(isinstance(c.get("delta"), dict) and any(c["delta"].get(f) for f in _DELTA_FIELDS)
                  for c in chunk["choices"])
    return Frame(raw, content, _usage(chunk))
