"""OpenAI-style error answers.

Every 4xx and 5xx the gateway sends has the body OpenAI's API uses,
``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``, so that SDKs and
frameworks pointed at the gateway raise their usual exceptions with a readable message.
:class:`ApiError` is raised inside the gateway's handlers and turned into such an answer
where the gateway routes requests.
"""

from __future__ import annotations

import json
from typing import Mapping

from aiohttp import hdrs, web
from multidict import CIMultiDict

PROVIDER_HEADER = "x-gwlab-provider"
ROUTE_HEADER = "x-gwlab-route"
NO_PROVIDER = "none"
"""The ``x-gwlab-provider`` value of answers no provider took part in (429, 4xx)."""

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}
"""OpenAI error ``type`` by status; every other 4xx is an ``invalid_request_error``."""


def error_type(status: int) -> str:
    """The OpenAI error ``type`` for an HTTP status."""
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


class ApiError(Exception):
    """A request the gateway answers with an error: status, message, OpenAI code and the
    offending parameter (if any)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers

    def response(self) -> web.Response:
        """The answer: OpenAI-style JSON body, ``x-gwlab-provider: none`` unless the error's
        own headers name a provider."""
        headers = {PROVIDER_HEADER: NO_PROVIDER}
        if self.headers:
            headers.update(self.headers)
        return error_response(self.status, self.message, self.code, self.param, headers)


def error_body(status: int, message: str, code: str, param: str | None = None) -> bytes:
    """The JSON body of an error answer."""
    error = {"message": message, "type": error_type(status), "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def error_response(status: int, message: str, code: str, param: str | None = None,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    """An error answer with the OpenAI-style JSON body (``headers`` may set Content-Type,
    as long as they set it to JSON)."""
    answer_headers = CIMultiDict({hdrs.CONTENT_TYPE: "application/json"})
    if headers:
        answer_headers.update(headers)
    return web.Response(status=status, body=error_body(status, message, code, param), headers=answer_headers)

