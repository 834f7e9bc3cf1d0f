"""OpenAI-style error answers over HTTP.

Every 4xx and 5xx the gateway sends has the body OpenAI's API uses
(:func:`gwlab.wire.error_body`), so that SDKs and frameworks pointed at the gateway raise
their usual exceptions with a readable message. :class:`~gwlab.wire.ApiError` is raised
inside the gateway's handlers and turned into such an answer by :func:`answer` where the
gateway routes requests.
"""

from __future__ import annotations

from typing import Mapping

from gwlab.needs import needs

needs("gwlab.errors", ("aiohttp", "multidict"))

from aiohttp import hdrs, web
from multidict import CIMultiDict

from gwlab.wire import ApiError, error_body

PROVIDER_HEADER = "x-gwlab-provider"
ROUTE_HEADER = "x-gwlab-route"
ATTEMPTS_HEADER = "x-gwlab-attempts"
"""How many provider calls a request took (more than one when the gateway retried it)."""
NO_PROVIDER = "none"
"""The ``x-gwlab-provider`` value of answers no provider took part in (429, 4xx)."""


def answer(error: ApiError) -> web.Response:
    """The answer to ``error``: OpenAI-style JSON body, ``x-gwlab-provider: none`` unless the
    error's own headers name a provider."""
    headers = {PROVIDER_HEADER: NO_PROVIDER}
    if error.headers:
        headers.update(error.headers)
    return error_response(error.status, error.message, error.code, error.param, headers)


def error_response(status: int, message: str, code: str, param: str | None = None,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    """An error answer with the OpenAI-style JSON body (``headers`` may set Content-Type,
    as long as they set it to JSON)."""
    answer_headers = CIMultiDict({hdrs.CONTENT_TYPE: "application/json"})
    if headers:
        answer_headers.update(headers)
    return web.Response(status=status, body=error_body(status, message, code, param), headers=answer_headers)
