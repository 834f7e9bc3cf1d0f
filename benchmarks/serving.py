"""Running a server under test in its own process: the event loop (uvloop on request, when
installed), the ``PORT <n>`` line the parent waits for, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import sys
from typing import Awaitable, Callable


def has_uvloop() -> bool:
    """Whether uvloop is installed (it is optional)."""
    return importlib.util.find_spec("uvloop") is not None


def serve(start: Callable[[], Awaitable[int]], use_uvloop: bool) -> None:
    """Run ``start`` (which listens and returns its port) on a new event loop, print the
    port, and serve until SIGTERM or SIGINT."""

    async def main() -> None:
        port = await start()
        print(f"PORT {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
    sys.stdout.flush()
