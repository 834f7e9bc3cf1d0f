"""A closed loop of streaming clients, each holding one stream at a time, and the time each
waits for its first token.

``N`` clients each open a keep-alive connection, send ``stream: true`` chat requests one
after another (the next as soon as a stream ends: a closed loop) and read the server-sent
frames. Their first requests are spread evenly over one stream's duration, so that
requests and frames arrive evenly, not in step. Time to first token (TTFT) is counted
client-side, from the moment a request is written to the moment the bytes holding its first
content frame (``"delta": {"content": ...}``) are read.

What a client does per frame is kept to the least (an ``asyncio.Protocol`` that looks for
that marker in new bytes and for the end of the chunked answer), so that one process on
one core keeps up with far more frames than a server can send; uvloop runs it when
installed. The process watches itself for being the bottleneck: its CPU share over the
measured window, and the lateness of a 10 ms ticker on its own event loop (a loop too busy
to read frames at once would add that delay to the TTFT it counts).

It also reads, from ``/proc/stat``, how busy the server's core and its own were over the
window, beyond what the server and itself used: what other processes took of them.

Run as ``python -m benchmarks.streamload --port P --streams N --period S --settle S
--window S --server-pid PID``, pinned to the load core by its caller; prints one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import LOAD_CORE, SERVER_CORE, cpu_seconds
from benchmarks.serving import has_uvloop
from gwlab.config import MODEL

PATH = "/v1/chat/completions"  # benchmarks.bare.PATH, without importing aiohttp here
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "stream": True}).encode()
CONTENT = b'"delta": {"content": '
"""What a content frame holds and no other frame does (the opening frame's delta starts with
``"role"``)."""
END = b"\r\n0\r\n\r\n"
"""The last chunk of a chunked HTTP answer: the stream has ended."""
OK = b"HTTP/1.1 200 "
TAIL = max(len(CONTENT), len(END))
CONNECT_BATCH = 64
"""Connections opened at once (the servers' listen backlog is 511)."""
TICK = 0.01
"""Seconds between two ticks of the lateness probe."""
GRACE = 2.0
"""Seconds beyond one stream's duration that the streams under way at the end of the window
get to end."""
_TICKS = os.sysconf("SC_CLK_TCK")


class Stream(asyncio.Protocol):
    """One client: a connection carrying one stream after another."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.first = 0.0
        self.head = True
        self.tail = b""
        self.bytes = 0
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        if self.transport is None or self.transport.is_closing() or self.load.stopping:
            return
        self.head, self.tail, self.bytes, self.first, self.done = True, b"", 0, 0.0, False
        self.sent = time.perf_counter()
        self.load.on_sent(self)
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.bytes += len(data)
        if self.head:
            self.head = False
            if not data.startswith(OK):
                self.load.on_failed(self, data[:12])
                self.done = True
                self.transport.close()
                return
        seen = self.tail + data
        if not self.first and CONTENT in seen:
            self.first = now
            self.load.on_first(self, now)
        if seen.endswith(END):
            self.done = True
            self.load.on_done(self, now)
            self.send()
        else:
            self.tail = seen[-TAIL:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.load.stopping:
            self.load.lost += 1


class Load:
    """``streams`` clients of the server at ``host:port``; the window's books."""

    def __init__(self, host: str, port: int, streams: int) -> None:
        self.host, self.port, self.streams = host, port, streams
        self.request = (f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
        self.stopping = False
        self.w0 = self.w1 = math.inf
        self.sent = 0
        """Streams sent in the window."""
        self.ttft: list[float] = []
        self.durations: list[float] = []
        self.sizes: set[int] = set()
        self.failed: dict[str, int] = {}
        self.lost = 0
        self.lateness: list[float] = []

    def _in_window(self, stream: Stream) -> bool:
        return self.w0 <= stream.sent < self.w1

    def on_sent(self, stream: Stream) -> None:
        if self._in_window(stream):
            self.sent += 1

    def on_first(self, stream: Stream, now: float) -> None:
        if self._in_window(stream):
            self.ttft.append(now - stream.sent)

    def on_done(self, stream: Stream, now: float) -> None:
        if self._in_window(stream):
            self.durations.append(now - stream.sent)
            self.sizes.add(stream.bytes)

    def on_failed(self, stream: Stream, head: bytes) -> None:
        key = head.decode("latin-1").strip()
        self.failed[key] = self.failed.get(key, 0) + 1

    async def run(self, period: float, settle: float, window: float, server_pid: int, server_core: int,
                  load_core: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        clients: list[Stream] = []
        for i in range(0, self.streams, CONNECT_BATCH):
            opened = await asyncio.gather(*(loop.create_connection(lambda: Stream(self), self.host, self.port)
                                            for _ in range(min(CONNECT_BATCH, self.streams - i))))
            clients += [protocol for _, protocol in opened]
        t0 = loop.time()
        for i, client in enumerate(clients):
            loop.call_at(t0 + i * period / self.streams, client.send)
        ticker = asyncio.create_task(self._tick())
        await asyncio.sleep(period + settle)
        server0, own0 = cpu_seconds(server_pid), time.process_time()
        core0, load0 = core_busy(server_core), core_busy(load_core)
        self.w0 = time.perf_counter()
        self.lateness.clear()
        await asyncio.sleep(window)
        self.w1 = time.perf_counter()
        elapsed = self.w1 - self.w0
        server_cpu = (cpu_seconds(server_pid) - server0) / elapsed
        own_cpu = (time.process_time() - own0) / elapsed
        others = max(0.0, (core_busy(server_core) - core0) / elapsed - server_cpu)
        load_others = max(0.0, (core_busy(load_core) - load0) / elapsed - own_cpu)
        lateness = sorted(self.lateness)
        ticker.cancel()
        # Send nothing more and let every stream end, so that no server sees a client leave
        # mid-stream; a stream that has not ended within the grace is cut off.
        self.stopping = True
        deadline = loop.time() + period + GRACE
        while any(client.sent and not client.done for client in clients) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        unfinished = sum(1 for client in clients if client.sent and not client.done)
        for client in clients:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(0)
        ttft = sorted(self.ttft)
        missing = self.sent - len(ttft) - sum(self.failed.values())
        durations = sorted(self.durations)
        return {
            "streams": self.streams, "window_s": elapsed, "sent": self.sent,
            "ttft": {f"p{q}": quantile(ttft, q / 100) for q in (50, 90, 99)} | {"max": ttft[-1] if ttft else None},
            "ttft_p99_with_missing": _finite(quantile(ttft + [math.inf] * max(0, missing), 0.99)),
            "missing_first_frames": missing, "failed": self.failed, "lost_connections": self.lost,
            "unfinished_at_end": unfinished,
            "duration": {"p50": quantile(durations, 0.5), "p99": quantile(durations, 0.99)},
            "completed": len(durations), "bytes_per_stream": sorted(self.sizes),
            "server_cpu": server_cpu, "others_on_server_core": others, "load_generator_cpu": own_cpu,
            "others_on_load_core": load_others,
            "lateness": {"p99": quantile(lateness, 0.99), "max": lateness[-1] if lateness else None},
            "event_loop": "uvloop" if has_uvloop() else "asyncio",
        }

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += TICK
            await asyncio.sleep(due - loop.time())
            late = loop.time() - due
            self.lateness.append(late)
            if late > TICK:
                due = loop.time()


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` by the nearest rank (``None`` when empty);
    ``inf`` stays ``inf``."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def core_busy(core: int) -> float:
    """Seconds core ``core`` has spent busy (anything but idle and I/O wait) since boot, by
    ``/proc/stat``: with a process's own CPU time, what others took of that core."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(x) for x in line.split()[1:]]
            return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICKS
    return 0.0


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--period", type=float, required=True, help="seconds over which the first requests spread")
    parser.add_argument("--settle", type=float, required=True, help="seconds after the spread before the window")
    parser.add_argument("--window", type=float, required=True, help="seconds measured")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--server-core", type=int, default=SERVER_CORE)
    parser.add_argument("--load-core", type=int, default=LOAD_CORE)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.streams + 64  # a descriptor per stream, and room for the rest
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    load = Load(args.host, args.port, args.streams)
    run = load.run(args.period, args.settle, args.window, args.server_pid, args.server_core,
                   args.load_core)
    if has_uvloop():
        import uvloop

        result = uvloop.run(run)
    else:
        result = asyncio.run(run)
    print(json.dumps(result, allow_nan=False))


if __name__ == "__main__":
    main()
