"""The reference of streaming: a bare aiohttp server sending the frames the gateway sends.

Per request it reads and parses the JSON body, sleeps the time to first token, then writes a
``chat.completion.chunk`` stream with :class:`gwlab.wire.Chunks` and
:func:`gwlab.wire.reply_pieces`, exactly as the gateway frames a call of its streaming
provider (``benchmarks.gateway_server --ttft ...``): the opening frame and the first piece in
one write at the first token, then a frame per piece when its first token is due (a token
each, or as many as come in :data:`gwlab.config.STREAM_FRAME_INTERVAL`), then the finish
frame and ``[DONE]`` at the last token. The answer's headers are the gateway's too, so the
bytes on the wire are the same but for each stream's id and ``created``. No policy, no
metrics, no validation: an ``aiohttp.web.Application`` with one route, as anyone would
write it, and access logs off like the gateway.

Run as ``python -m benchmarks.bare_sse --ttft T --decode-rate R --output-tokens K [--port P]
[--uvloop]``; prints ``PORT <n>`` once listening, then serves until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from typing import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from benchmarks.bare import PATH
from benchmarks.serving import serve
from gwlab.config import BACKLOG, STREAM_FRAME_INTERVAL
from gwlab.limiter import MAX_BURST
from gwlab.wire import DONE, Chunks, ratelimit_headers, reply_pieces

STREAMING_PROVIDER = "p1"
"""The provider the gateway streams from when serving ``--ttft ...``: the streams' text is
its reply."""
HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("x-gwlab-provider", STREAMING_PROVIDER),
    ("x-gwlab-route", "weighted"),
    ("x-gwlab-attempts", "1"),
    ("Cache-Control", "no-cache"),
    # OpenAI's rate-limit headers as the benchmark's gateway sends them: its requests bucket
    # (benchmarks.gateway_server's default, the largest) is full again at every first token.
    *ratelimit_headers("requests", int(MAX_BURST), int(MAX_BURST), 0),
]
"""The headers of the gateway's streamed answers from its one provider."""


def handler(ttft: float, decode_rate: float,
            output_tokens: int) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The chat handler: parse the request, then stream ``output_tokens`` tokens, the first
    after ``ttft`` seconds and ``decode_rate`` per second after it."""
    gap = 1.0 / decode_rate
    size = max(1, int(STREAM_FRAME_INTERVAL / gap))  # tokens per frame, as the gateway groups them
    pieces = reply_pieces(STREAMING_PROVIDER, output_tokens, size)
    duration = ttft + (output_tokens - 1) * gap
    prefix = os.urandom(4).hex().encode()
    ids = itertools.count(1)

    async def chat(request: web.Request) -> web.StreamResponse:
        model = json.loads(await request.read())["model"]
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(ttft)
        response = web.StreamResponse(headers=CIMultiDict(HEADERS))
        await response.prepare(request)
        chunks = Chunks(prefix, next(ids), int(time.time()), model, False)
        await response.write(chunks.first() + chunks.content(pieces[0]))
        for i in range(1, len(pieces)):
            await asyncio.sleep(start + ttft + i * size * gap - loop.time())
            await response.write(chunks.content(pieces[i]))
        await asyncio.sleep(start + duration - loop.time())
        await response.write(chunks.finish("stop") + DONE)
        await response.write_eof()
        return response

    return chat


def app(ttft: float, decode_rate: float, output_tokens: int) -> web.Application:
    application = web.Application()
    application.router.add_post(PATH, handler(ttft, decode_rate, output_tokens))
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft", type=float, required=True)
    parser.add_argument("--decode-rate", type=float, required=True)
    parser.add_argument("--output-tokens", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    serve(lambda: _start(args), args.uvloop)


async def _start(args: argparse.Namespace) -> int:
    runner = web.AppRunner(app(args.ttft, args.decode_rate, args.output_tokens), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=BACKLOG)
    await site.start()
    return site.port


if __name__ == "__main__":
    main()
