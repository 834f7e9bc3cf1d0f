"""The reference server: bare aiohttp doing the least a chat endpoint must do.

It reads the request, parses its JSON and answers 200 with a fixed JSON body of the size
the gateway's answers have (``--body-size``), with access logs off like the gateway. The
gateway's throughput is measured against this one: an ``aiohttp.web.Application`` with one
route, as anyone would write it. With ``--low-level`` the same handler runs on aiohttp's
low-level ``web.Server`` (no application router), as the gateway does: the floor of what
aiohttp costs per request.

With ``--completion`` it answers a ``chat.completion`` body of a gwlab reply instead (an
OpenAI-compatible upstream, which a gateway with a ``kind = "openai"`` provider can forward to).

With ``--forward URL`` it is the bare proxy: on aiohttp's low-level server, it reads and parses
the request, sends its bytes to ``URL`` (an upstream's base URL, ``/v1`` and the chat path
added) through one ``aiohttp.ClientSession`` and answers with the upstream's body: the floor of
what aiohttp costs per forwarded request, which the gateway's forwarding is compared with.

Run as ``python -m benchmarks.bare (--body-size N | --completion | --forward URL) [--low-level]
[--port P] [--uvloop]``; prints ``PORT <n>`` once listening, then serves until terminated.
"""

from __future__ import annotations

import argparse
import json
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web

from benchmarks.serving import serve
from gwlab.wire import completion, reply

PATH = "/v1/chat/completions"


def body_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least 12)."""
    if size < 12:
        raise ValueError(f"--body-size = {size}: must be at least 12")
    return json.dumps({"pad": "x" * (size - 11)}).encode()


def completion_body() -> bytes:
    """A ``chat.completion`` answering with provider ``upstream``'s reply (9 tokens)."""
    content, tokens = reply("upstream")
    return completion(b"bare", 1, 0, "gwlab-sim", content, 3, tokens, "stop")


def handler(size: int) -> Callable[[web.BaseRequest], Awaitable[web.Response]]:
    """The chat handler: parse the request, answer a fixed body of ``size`` bytes (0: the
    :func:`completion_body`)."""
    body = body_of_size(size) if size else completion_body()

    async def chat(request: web.BaseRequest) -> web.Response:
        json.loads(await request.read())
        return web.Response(body=body, content_type="application/json")

    return chat


def forwarder(upstream: str, session: aiohttp.ClientSession) -> Callable[[web.BaseRequest], Awaitable[web.Response]]:
    """The proxy's handler: parse the request, post its bytes to ``upstream``'s chat path over
    ``session`` and answer the upstream's status and body."""
    url = upstream.rstrip("/") + PATH

    async def chat(request: web.BaseRequest) -> web.Response:
        data = await request.read()
        json.loads(data)
        async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as answer:
            body = await answer.read()
        return web.Response(status=answer.status, body=body, content_type="application/json")

    return chat


def app(size: int) -> web.Application:
    application = web.Application()
    application.router.add_post(PATH, handler(size))
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    body = parser.add_mutually_exclusive_group(required=True)
    body.add_argument("--body-size", type=int)
    body.add_argument("--completion", action="store_true", help="answer a chat.completion body")
    body.add_argument("--forward", metavar="URL", help="forward each request to the upstream at URL")
    parser.add_argument("--low-level", action="store_true", help="serve on aiohttp's low-level web.Server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.forward:
        serve(lambda: _forward(args.forward, args.port), args.uvloop)
        return
    size = 0 if args.completion else args.body_size
    serve(lambda: _start(size, args.port, args.low_level), args.uvloop)


async def _start(size: int, port: int, low_level: bool) -> int:
    if low_level:
        runner: web.BaseRunner = web.ServerRunner(web.Server(handler(size)), access_log=None)
    else:
        runner = web.AppRunner(app(size), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return site.port


async def _forward(upstream: str, port: int) -> int:
    session = aiohttp.ClientSession()
    runner = web.ServerRunner(web.Server(forwarder(upstream, session)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return site.port


if __name__ == "__main__":
    main()
