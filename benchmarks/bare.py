"""The reference server: bare aiohttp doing the least a chat endpoint must do.

It reads the request, parses its JSON and answers 200 with a fixed JSON body of the size
the gateway's answers have (``--body-size``), with access logs off like the gateway. The
gateway's throughput is measured against this one.

Run as ``python -m benchmarks.bare --body-size N [--port P] [--uvloop]``; prints
``PORT <n>`` once listening, then serves until terminated.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

from benchmarks.serving import serve

PATH = "/v1/chat/completions"


def body_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least 12)."""
    if size < 12:
        raise ValueError(f"--body-size = {size}: must be at least 12")
    return json.dumps({"pad": "x" * (size - 11)}).encode()


def app(size: int) -> web.Application:
    body = body_of_size(size)

    async def chat(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.Response(body=body, content_type="application/json")

    application = web.Application()
    application.router.add_post(PATH, chat)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body-size", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    serve(lambda: _start(args.body_size, args.port), args.uvloop)


async def _start(size: int, port: int) -> int:
    runner = web.AppRunner(app(size), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return site.port


if __name__ == "__main__":
    main()
