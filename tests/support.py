"""Helpers shared by the tests that talk to a real gateway over HTTP."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

import aiohttp

from gwlab import config
from gwlab.server import Gateway

CHAT = {"model": "gwlab-sim", "messages": [{"role": "user", "content": "hello there"}]}
"""A valid chat completion request; its 11-character message is 3 prompt tokens."""


@contextlib.asynccontextmanager
async def serving(scenario: config.Scenario, host: str = config.HOST,
                  **kwargs: Any) -> AsyncIterator[tuple[Gateway, aiohttp.ClientSession]]:
    """A gateway for ``scenario`` (``kwargs`` go to :class:`Gateway`) listening on free ports
    of ``host``, and an HTTP session to it over the IPv4 loopback, which a gateway on any
    IPv4 address of this machine answers. The gateway stops on the way out."""
    gw = Gateway(scenario, **kwargs)
    await gw.start(host=host, port=0, metrics_port=0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gw.port}") as http:
            yield gw, http
    finally:
        await gw.stop()
