"""Validation of a chat completion request, following OpenAI's request schema for what it
checks, so that a request the API would refuse is a 400 here too (and costs no token).

Checked: ``model``; ``messages``, each by its ``role`` (system, developer, user, assistant,
tool, function) with that role's content rules, its content parts by their ``type``, and
the strings it holds (``name``, ``tool_call_id``); ``stream``. Every string checked must be
valid Unicode: a lone surrogate (``"\\ud800"``) is refused. Every other field the API
defines (``temperature``, ``max_tokens``, ``tools`` ...) is accepted and ignored: the
simulated providers have no use for it. The README lists both.
"""

from __future__ import annotations

from typing import Any

from gwlab.errors import ApiError

MAX_MODEL_LENGTH = 256
"""The longest model name accepted (model names are a few dozen characters). It bounds the
memory held by the server's cache of encoded model names."""

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


def validate(body: Any) -> tuple[str, int]:
    """The model and an estimate of the prompt tokens (about four characters each) of a
    chat completion request; :class:`ApiError` 400 naming the offending field otherwise."""
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
    _unicode(model, "model")
    if "messages" not in body:
        raise ApiError(400, "'messages' is required", "missing_required_parameter", "messages")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"'messages' must be a non-empty array of message objects, got {kind(messages)}",
                       "invalid_type", "messages")
    chars = 0
    for i, message in enumerate(messages):
        chars += _message(message, f"messages[{i}]")
    stream = body.get("stream")
    if stream is True:
        raise ApiError(400, "streaming is not supported yet; leave 'stream' out or set it to false",
                       "unsupported_parameter", "stream")
    if stream is not None and stream is not False:
        raise ApiError(400, f"'stream' must be true or false, got {kind(stream)}", "invalid_type", "stream")
    return model, (chars + 3) // 4 or 1  # ceil(chars / 4), at least 1: integer arithmetic is cheaper


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
    for field in ("name", "tool_call_id"):
        if field in message:
            _string(message[field], f"{where}.{field}")
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
        raise ApiError(400, f"'{where}.content' is required in a{'n' if role[0] in 'aeiou' else ''} {role} message"
                       + (" without tool_calls" if role == "assistant" else ""),
                       "missing_required_parameter", f"{where}.content")
    if isinstance(content, str):
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
    if kind_ not in allowed:
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
