"""The gateway's client of a real upstream (``kind = "openai"``): its URL, its key and its
bounded pool of connections.

The key is read from the environment variable the provider names (``api_key_env``) when
the gateway is made, so that a missing one is an error before anything starts, naming the
variable and never a value. It goes upstream only as ``Authorization: Bearer``; no
``repr``, log line, metric or answer of the gateway holds it.

Each upstream gets one ``aiohttp.ClientSession`` whose connector holds at most
``connections`` connections (a call that finds them all busy waits for one, within its
``gateway.timeout``), each given ``connect_timeout`` seconds to open; a connection idle for
longer than :data:`~gwlab.config.UPSTREAM_KEEPALIVE` is closed rather than used again. The
session keeps no cookies: an upstream's ``Set-Cookie`` is not sent back with later calls,
which are other clients' (proxies such as nginx and Envoy keep none). What the answers mean
is :mod:`gwlab.observe`'s.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping

from gwlab.needs import needs

needs("gwlab.forward", ("aiohttp",))

import aiohttp

from gwlab import config
from gwlab.config import ConfigError, ProviderConfig
from gwlab.observe import InvalidAnswer


def keys(scenario: config.Scenario, source: str = "scenario",
         environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The API key of each real upstream of ``scenario`` that names a variable, by provider,
    from ``environ``. Raises :class:`ConfigError` naming ``source``, the provider and the
    variable (never a value) when it is not set, empty or holds a line break (which would
    end the header that carries it: aiohttp refuses such a header on every call)."""
    found = {}
    for p in scenario.providers:
        if p.kind == "openai" and p.api_key_env:
            key = environ.get(p.api_key_env, "")
            if not key:
                raise ConfigError(f"{source}: providers.{p.name}.api_key_env = {p.api_key_env!r}: the environment "
                                  f"variable {p.api_key_env} is not set (or empty); expected it to hold the "
                                  "upstream's API key")
            if "\r" in key or "\n" in key:
                raise ConfigError(f"{source}: providers.{p.name}.api_key_env = {p.api_key_env!r}: the environment "
                                  f"variable {p.api_key_env} holds a line break; expected the upstream's API key "
                                  "alone, on one line")
            found[p.name] = key
    return found


class Forwarder:
    """One real upstream's client: :meth:`start` opens its pool, :meth:`post` sends a chat
    request, :meth:`close` ends its connections. ``key`` is its API key (``None``: none);
    its URL and pool are fixed (``base_url`` and ``connections`` cannot change at runtime).
    ``keepalive`` is the seconds a connection may sit idle and still be used again."""

    __slots__ = ("name", "url", "connections", "keepalive", "_headers", "_session")

    def __init__(self, provider: ProviderConfig, key: str | None,
                 keepalive: float = config.UPSTREAM_KEEPALIVE) -> None:
        self.name = provider.name
        self.url = provider.base_url.rstrip("/") + "/chat/completions"
        self.connections = provider.connections
        self.keepalive = keepalive
        self._headers = {"Content-Type": "application/json"}
        if key is not None:
            self._headers["Authorization"] = f"Bearer {key}"
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Forwarder({self.name!r}, {self.url!r})"

    async def start(self) -> None:
        """Open the pool (on the running loop). Does nothing if it is open."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0,
                                             keepalive_timeout=self.keepalive)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers,
                                                  cookie_jar=aiohttp.DummyCookieJar(),
                                                  timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        """Close the pool's connections. Does nothing if it is closed."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def post(self, request: dict[str, Any], provider: ProviderConfig) -> Any:
        """Send ``request`` (the client's chat request, as JSON data) with the model name of
        ``provider`` (its parameters now) when it sets one, connecting within its
        ``connect_timeout``; awaited, the response once its head has arrived. A redirect is not
        followed: its 3xx is the answer (a 502, as any status DESIGN does not list). The
        body sent is ``request`` serialised again, not the client's bytes: those may hold a
        key twice (the gateway checked the last, an upstream may read the first) or be in
        another encoding JSON allows."""
        if provider.model:
            request = {**request, "model": provider.model}
        assert self._session is not None, "Forwarder.post before start"
        return self._session.post(self.url, data=json.dumps(request).encode(), allow_redirects=False,
                                  timeout=_connect_within(provider.connect_timeout))


@functools.lru_cache(maxsize=64)
def _connect_within(seconds: float) -> aiohttp.ClientTimeout:
    """A call's timeouts: ``seconds`` to connect, and none in all (the gateway's own bound
    the call). One object per value, made once: the values change only with a patch."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds)


async def read_body(response: aiohttp.ClientResponse, limit: int = config.UPSTREAM_MAX_BODY) -> bytes:
    """The whole body of ``response``; :class:`InvalidAnswer` past ``limit`` bytes. A short
    answer has nearly always arrived whole with its head: it is then taken in one step."""
    content = response.content
    if content.is_eof() and content.total_bytes <= limit:
        return content.read_nowait()
    body = bytearray()
    async for piece in content.iter_any():
        body += piece
        if len(body) > limit:
            raise InvalidAnswer(f"the upstream's answer is longer than {limit} bytes")
    return bytes(body)
