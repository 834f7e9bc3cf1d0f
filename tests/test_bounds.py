"""What a client can hold of the gateway: idle, head and body time, and connections.

Each bound is shown doing its job with small limits over raw sockets (slowloris, slow
bodies, idle keep-alive, floods of connections), and one gateway runs as a process under a
descriptor limit of 256 while 300 sockets are held open against it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from gwlab import config
from gwlab.connections import GatewayServer, connection_cap
from tests.support import CHAT, serving
from tests.test_server import single

pytestmark = pytest.mark.timeout(60)

BODY = json.dumps(CHAT).encode()
HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(BODY))


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[bytes, float]:
    """Everything the gateway sends until it closes the connection, and the seconds that took."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), timeout)
    return data, time.monotonic() - started


def status_and_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]


def requests_total(gw, code: int) -> float | None:
    return gw.metrics.registry.get_sample_value("gwlab_requests_total", {"code": str(code), "provider": "none"})


async def answered_then_closed(port: int) -> tuple[bytes, float]:
    """Send a chat request on a new connection, check that it is answered 200, then wait
    for the gateway to close the connection: what it sent after the answer, and how long
    it kept the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + BODY)
    answer = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    try:
        return await read_until_closed(reader)
    finally:
        writer.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout():
    async def main():
        async with serving(single(), keepalive_timeout=0.3) as (gw, _):
            rest, waited = await answered_then_closed(gw.port)
            assert rest == b""
            assert 0.25 <= waited < 2.0
            # A connection that never sends a byte is idle from the start.
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            rest, waited = await read_until_closed(reader)
            writer.close()
            assert (rest, 0.25 <= waited < 2.0) == (b"", True)

    asyncio.run(main())


def test_a_head_sent_slowly_is_answered_408_and_closed():
    """Slowloris: a byte of the head every 50 ms, for ever."""
    async def main():
        async with serving(single(), header_timeout=0.3) as (gw, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            started = time.monotonic()

            async def drip() -> None:
                for byte in HEAD + b"X-Slow: " + b"a" * 1000:
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.05)

            dripping = asyncio.create_task(drip())
            answer, _ = await read_until_closed(reader)
            waited = time.monotonic() - started
            dripping.cancel()
            writer.close()
            status, error = status_and_error(answer)
            assert (status, error["code"]) == (408, "request_timeout")
            assert b"Connection: close\r\n" in answer
            assert 0.25 <= waited < 2.0
            assert requests_total(gw, 408) == 1

    asyncio.run(main())


@pytest.mark.parametrize("answered_before", [False, True])
def test_a_head_begun_is_timed_by_the_head_timeout_alone(answered_before):
    """A shorter keep-alive timeout does not close a connection whose head has begun (on a
    new connection, or after an answer): the head timeout answers it, 408."""
    async def main():
        async with serving(single(), keepalive_timeout=0.2, header_timeout=0.8) as (gw, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            if answered_before:
                writer.write(HEAD + BODY)
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                await reader.readexactly(int(re.search(rb"Content-Length: (\d+)", head)[1]))
            writer.write(HEAD[:20])
            answer, waited = await read_until_closed(reader)
            writer.close()
            status, error = status_and_error(answer)
            assert (status, error["code"]) == (408, "request_timeout")
            assert 0.7 <= waited < 2.0
            assert requests_total(gw, 408) == 1

    asyncio.run(main())


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_sent_slowly_or_cut_short_is_answered_408_and_closed(framing):
    """A body that stops half-way (truncated) never hangs the connection: the body timeout
    answers it."""
    async def main():
        async with serving(single(), body_timeout=0.3) as (gw, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            if framing == "length":
                writer.write(HEAD + BODY[:10])
            else:
                writer.write(HEAD.replace(b"Content-Length: %d" % len(BODY), b"Transfer-Encoding: chunked")
                             + b"%x\r\n%s\r\n" % (10, BODY[:10]))
            answer, waited = await read_until_closed(reader)
            writer.close()
            status, error = status_and_error(answer)
            assert (status, error["code"]) == (408, "request_timeout")
            assert b"Connection: close\r\n" in answer  # as the README's table of statuses says
            assert 0.25 <= waited < 2.0
            assert gw.snapshot().tokens == config.BURST
            assert requests_total(gw, 408) == 1

    asyncio.run(main())


def test_the_timeouts_never_cut_an_answer_being_prepared():
    """A provider call longer than every timeout still answers 200 on the same connection,
    and the connection is then idle-timed from the answer on."""
    async def main():
        async with serving(single(latency=0.6), keepalive_timeout=0.2, header_timeout=0.2,
                           body_timeout=0.2) as (gw, _):
            rest, waited = await answered_then_closed(gw.port)
            assert rest == b"" and 0.15 <= waited < 2.0

    asyncio.run(main())


def test_at_the_connection_limit_the_gateway_stops_accepting_until_one_closes(caplog, monkeypatch):
    """Three connections busy sending their heads fill a limit of 3: twenty more wait in the
    backlog, unanswered, and the log says so once; when one of the three leaves, the
    waiting clients are served (each answered one closed, once idle, for the next)."""
    monkeypatch.setattr(config, "MIN_IDLE_TO_CLOSE", 0.05)

    async def main():
        async with serving(single(), max_connections=3, header_timeout=30) as (gw, _):
            busy = []
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\n")  # a head never finished
                busy.append((reader, writer))
            await asyncio.sleep(0.1)  # the heads have begun: none of the three is idle
            waiting = []
            with caplog.at_level(logging.DEBUG, logger="gwlab.server"):
                for _ in range(20):
                    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)  # the kernel's backlog
                    writer.write(HEAD + BODY)
                    waiting.append((reader, writer))
                await asyncio.sleep(0.3)
                assert gw._runners[0].open == 3
                for reader, _ in waiting:
                    assert not reader.at_eof() and len(reader._buffer) == 0  # not answered, not closed
                busy[0][1].close()
                for reader, _ in waiting:
                    answer = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
                    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
                    # (served one at a time: each answered client stays connected and idle,
                    # and is closed to make room for the next)
            limit_lines = [r for r in caplog.records if "its limit" in r.getMessage()]
            assert len(limit_lines) == 1 and limit_lines[0].levelno == logging.WARNING
            for _, writer in busy[1:] + waiting:
                writer.close()

    asyncio.run(main())


def test_at_the_connection_limit_idle_connections_make_room_for_new_clients():
    async def main():
        async with serving(single(), max_connections=3) as (gw, http):
            idle = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(3)]
            await asyncio.sleep(0.1)
            async with http.post("/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200
            await asyncio.sleep(0.1)
            closed = [reader.at_eof() or await _closed_now(reader) for reader, _ in idle]
            for _, writer in idle:
                writer.close()
            assert closed == [True, False, False]  # the oldest idle one made room

    asyncio.run(main())


def test_at_the_connection_limit_no_client_loses_its_request_to_make_room_for_another():
    """Twenty clients at once against a limit of three, each sending its request a moment
    after it connects, as over a network: a connection just accepted has received nothing
    yet, and closing it to make room for the next client in the backlog (and that one for
    the next) would answer none of them. Every one is answered."""
    async def client(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await asyncio.sleep(0.05)
            writer.write(HEAD + BODY)
            return (await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)).split(b" ")[1]
        except (ConnectionError, asyncio.IncompleteReadError):
            return b"closed unanswered"
        finally:
            writer.close()

    async def main():
        async with serving(single(latency=0.02), max_connections=3) as (gw, _):
            return await asyncio.gather(*[client(gw.port) for _ in range(20)])

    assert asyncio.run(main()) == [b"200"] * 20


def test_at_the_connection_limit_an_answered_connection_makes_room_before_one_yet_to_send_its_request(monkeypatch):
    """Of two idle connections, the one already answered is closed for a new client, though
    the other, whose client has sent nothing yet, has been idle longer: closing that one
    would lose the request its client may be about to send."""
    monkeypatch.setattr(config, "MIN_IDLE_TO_CLOSE", 0.1)

    async def main():
        async with serving(single(), max_connections=2) as (gw, http):
            silent = await asyncio.open_connection("127.0.0.1", gw.port)
            await asyncio.sleep(0.05)
            answered = await asyncio.open_connection("127.0.0.1", gw.port)
            answered[1].write(HEAD + BODY)
            await asyncio.wait_for(answered[0].readuntil(b"}}"), 5)
            await asyncio.sleep(0.2)
            async with http.post("/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200
            closed = [await _closed_now(reader) for reader, _ in (silent, answered)]
            for _, writer in (silent, answered):
                writer.close()
            assert closed == [False, True]

    asyncio.run(main())


async def _closed_now(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 0.1) == b""
    except TimeoutError:
        return False


def test_the_connection_cap_leaves_the_descriptor_reserve_free(caplog):
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_cap(10**6) == soft - config.FD_RESERVE
    assert connection_cap(5) == 5

    async def server(asked: int) -> None:
        GatewayServer(lambda request: None, None, max_connections=asked, keepalive_timeout=1.0, header_timeout=1.0,
                      send_timeout=1.0, refused=lambda status: None)

    for asked in (5, 10**6):
        asyncio.run(server(asked))
    # Cut to what the descriptors allow, it says so (once: 5 is allowed as asked).
    assert [r.getMessage() for r in caplog.records if r.name == "gwlab.server"] == [
        f"max connections 1000000: the descriptor limit (ulimit -n) less the {config.FD_RESERVE} kept free "
        f"allows {soft - config.FD_RESERVE}, the most held at once"]


OUT_OF_DESCRIPTORS = """
import asyncio, os, sys, time
from gwlab import config
from gwlab.server import Gateway

async def main():
    gw = Gateway(config.from_dict({"providers": {"p1": {"latency": 0.0}}}))
    await gw.start(port=0, metrics_port=0)
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    print(gw.port, flush=True)
    await asyncio.sleep(float(sys.argv[1]))  # a client connects meanwhile: accepting it fails
    os.close(held.pop())
    print(time.monotonic(), flush=True)
    await asyncio.sleep(3 * config.ACCEPT_RETRY)
    await gw.stop()

asyncio.run(main())
"""


def test_out_of_descriptors_the_gateway_accepts_again_within_the_accept_retry():
    """Every descriptor of the gateway's process taken by files, not connections: a client
    that connects waits in the backlog. One file closes (no connection does, which would
    wake the accept loop): the client is accepted and answered within ACCEPT_RETRY."""
    held_for = 1.5 * config.ACCEPT_RETRY
    process = subprocess.Popen([sys.executable, "-c", OUT_OF_DESCRIPTORS, str(held_for)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        port = int(process.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(HEAD + BODY)
            freed = float(process.stdout.readline())
            answer = client.recv(65536)
            answered = time.monotonic()
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert 0 <= answered - freed < config.ACCEPT_RETRY + 0.5
    finally:
        process.kill()
        _, stderr = process.communicate(timeout=10)
    assert "the gateway is out of descriptors (Too many open files)" in stderr


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.mark.parametrize("flooded", ["gateway", "metrics"])
def test_300_idle_sockets_under_256_descriptors_leave_the_gateway_and_metrics_reachable(flooded):
    """``gwlab serve`` as a process limited to 256 descriptors; 300 sockets connect to the
    gateway's port, or to the metrics port, and stay idle. /metrics answers, a chat request
    is served (idle connections make room), and the log holds a line or two, not one per
    socket."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gwlab", "serve", "--port", "0", "--metrics-port", "0", "--log-level", "DEBUG"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit_descriptors,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    sockets = []
    try:
        urls = [process.stdout.readline().decode() for _ in range(2)]
        port = int(re.search(r":(\d+)", urls[0].split()[1]).group(1))
        metrics_url = urls[1].split()[1]
        flood = port if flooded == "gateway" else int(re.search(r":(\d+)", metrics_url).group(1))
        for _ in range(300):
            sockets.append(socket.create_connection(("127.0.0.1", flood), timeout=5))
        time.sleep(0.5)

        async def check() -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                async with http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT) as r:
                    assert r.status == 200
                # Behind a flood of the metrics port, the scrape waits in the backlog while
                # the flood gives way, METRICS_MAX_CONNECTIONS sockets at a time.
                waits = 300 / config.METRICS_MAX_CONNECTIONS * config.MIN_IDLE_TO_CLOSE if flooded == "metrics" else 0
                async with http.get(metrics_url, timeout=aiohttp.ClientTimeout(total=5 + waits)) as r:
                    assert r.status == 200
                    assert "gwlab_requests_total" in await r.text()

        asyncio.run(check())
    finally:
        for sock in sockets:
            sock.close()
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert "Traceback" not in stderr.decode()
    assert len(stderr) < 4000, stderr.decode()[-2000:]


STREAM = json.dumps({**CHAT, "stream": True}).encode()
LONG_STREAM = single(ttft=0.01, decode_rate=config.MAX_RATE, output_tokens=config.MAX_OUTPUT_TOKENS)
"""A provider whose streams are about 6 MB, more than the sockets' buffers hold, sent in a second."""


async def stream_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with a small receive buffer that has sent a request for a stream."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(HEAD.replace(b"%d" % len(BODY), b"%d" % len(STREAM)) + STREAM)
    return reader, writer


def test_a_client_that_stops_reading_is_cut_off_after_the_send_timeout():
    """A client that reads nothing more of a long stream is cut off (499) once its writes
    have waited the send timeout, and its provider call is abandoned; one that reads through
    the same small buffer, whose writes wait on it again and again, gets the whole stream."""
    async def main():
        async with serving(LONG_STREAM, send_timeout=0.3) as (gw, _):
            reader, writer = await stream_request(gw.port)
            started = time.monotonic()
            while gw.metrics.answers.get((499, "p1")) != 1:
                assert time.monotonic() - started < 5, "the stream still waits for its client"
                await asyncio.sleep(0.05)
            assert gw.snapshot().providers["p1"].in_flight == 0
            # The connection is reset: the client gets what its own small buffer held, not
            # the megabytes the gateway's kernel had queued for it (a plain close sends them on).
            data = b""
            with pytest.raises(ConnectionResetError):
                while chunk := await asyncio.wait_for(reader.read(1 << 16), 5):
                    data += chunk
            writer.close()
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"[DONE]" not in data and len(data) < 1_000_000

            reader, writer = await stream_request(gw.port)
            data = b""
            while not data.endswith(b"0\r\n\r\n") and not reader.at_eof():
                data += await asyncio.wait_for(reader.read(1 << 16), 5)
            writer.close()
            assert data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
            assert gw.metrics.answers[200, "p1"] == 1

    asyncio.run(main())
