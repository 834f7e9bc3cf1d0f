"""The gateway's connections: how many it holds, and how long one may take or wait.

aiohttp's low-level server bounds neither: it accepts every connection the kernel hands it,
keeps an idle keep-alive connection for an hour and waits for a request's head and body for
ever. :class:`GatewayServer` adds the bounds of ``config.py`` (the README's "Bounds"):

- **Connections.** It runs its own accept loop and holds at most :func:`connection_cap`
  connections: :data:`~gwlab.config.MAX_CONNECTIONS`, lowered to leave
  :data:`~gwlab.config.FD_RESERVE` descriptors free under the process's ``RLIMIT_NOFILE``
  (for the metrics server, the log, the loop). At the cap it closes the connections that
  sit idle between requests, those that have been answered before those that never sent a
  request, the one idle the longest first (nginx does the same when its connections run
  out), once it has been idle :data:`~gwlab.config.MIN_IDLE_TO_CLOSE`
  seconds, so a flood of idle sockets cannot lock out new clients or the admin routes, and
  a connection just accepted is not closed before its request has had time to arrive; when
  none is idle it stops calling ``accept()`` until a connection closes, and new clients wait
  in the listen backlog instead of being accepted and dropped. It says so in the log once per
  :data:`~gwlab.config.LIMIT_LOG_INTERVAL`, not once per socket.
- **Idle.** aiohttp's own keep-alive timer, set to :data:`~gwlab.config.KEEPALIVE_TIMEOUT`,
  closes a connection that waits that long for its next request.
- **Head.** A request whose head has not all arrived
  :data:`~gwlab.config.HEADER_TIMEOUT` seconds after its first byte is answered 408 and its
  connection closed (slowloris).
- **Body.** The gateway reads a body within :data:`~gwlab.config.BODY_TIMEOUT` (in
  ``server.py``, where it reads).
- **Sending.** A connection whose client has read nothing of an answer for
  :data:`~gwlab.config.SEND_TIMEOUT` seconds while the socket's buffers are full (the
  transport paused the writes, and what it holds has not shrunk since) is reset: closed
  at once with what the kernel still holds for it dropped (``SO_LINGER`` 0; a plain close
  would leave megabytes queued, sent on to a client that reads them as slowly as ever), and
  the handler's next write or pause raises ConnectionResetError, as for a client gone
  (nginx's ``send_timeout``, which also sees a client's reads only as the kernel takes more
  bytes).

None of these cuts an answer its client reads, however slowly: the idle and head timers only
act while the connection waits for a request, never while a handler runs, and the send timer
only while the writes wait for the client.

Every answer aiohttp's parser gives (a malformed request line or header, a bad chunk) is
an OpenAI-style JSON error too, counted like any other and logged in one line at DEBUG:
a stranger's garbage must not write tracebacks into the log.

**Pipelining.** A client may send requests without waiting for the answers; each is
answered in turn, as nginx does. aiohttp's C parser loses some of them. It hands over the
requests of one feed only when the feed ends, so bytes it cannot parse lose the whole
requests before them in the same packet (it raises, and aiohttp answers only 400). And after
a request asking to switch protocols (``Upgrade:`` other than websocket) it pauses and drops
the rest of the packet, so the next request is never answered. The gateway's parser
(:class:`_PipelineParser`) stops after each request and hands it over:

- every request before bytes that are not HTTP is answered, then the 400, which closes the
  connection; an error inside the body being read is that request's 400;
- a request asking to switch protocols (any ``Upgrade:``, ``CONNECT``) is answered like any
  other, and what follows it is read as more requests: the gateway speaks HTTP/1.1 only
  (RFC 9110 §7.8);
- a connection still queues about as many parsed requests as aiohttp lets it (32).

Nothing is parsed twice; a request per packet costs one empty feed of the parser more.
Not recovered: after a body that aiohttp cannot decode (a ``Content-Encoding`` that is not
what it says) its parser reads nothing more, so that request's 400 closes the connection and
requests pipelined after it go unanswered. aiohttp's pure-Python parser (with
``AIOHTTP_NO_EXTENSIONS``) stops between requests differently and is left as aiohttp builds
it: the first kind of loss remains there.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import resource
import select
import socket
import struct
from time import monotonic
from typing import Any, Callable, Sequence, Sized

from gwlab.needs import needs

needs("gwlab.connections", ("aiohttp",))

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.http_parser import HttpRequestParser, HttpRequestParserPy
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo

from gwlab import config
from gwlab.errors import answer
from gwlab.wire import ApiError

log = logging.getLogger("gwlab.server")

_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def connection_cap(max_connections: int) -> int:
    """The most connections the gateway may hold: ``max_connections``, or fewer when the
    process's descriptor limit minus :data:`~gwlab.config.FD_RESERVE` is lower (at least 1)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - config.FD_RESERVE))


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking socket listening on ``host:port`` with the gateway's backlog; with
    ``reuse_port``, one of several (``SO_REUSEPORT``: the kernel spreads new connections over
    the sockets listening on the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=config.BACKLOG, reuse_port=reuse_port)
    sock.setblocking(False)
    return sock


_RESET = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on with a linger of 0 s: closing the socket resets the connection."""


class GatewayServer(web.Server):
    """aiohttp's low-level server with the gateway's bounds (see the module's docstring).

    ``refused(status)`` counts an answer the gateway gives outside its handler (a
    malformed request, a head too slow). Serve a listening socket with :meth:`accept`.
    """

    def __init__(self, handler: Callable, request_factory: Callable, *, max_connections: int,
                 keepalive_timeout: float, header_timeout: float, send_timeout: float,
                 refused: Callable[[int], None]) -> None:
        super().__init__(handler, request_factory=request_factory, keepalive_timeout=keepalive_timeout,
                         access_log=None)
        self.cap = connection_cap(max_connections)
        if self.cap < max_connections:
            log.warning("max connections %d: the descriptor limit (ulimit -n) less the %d kept free allows %d, "
                        "the most held at once", max_connections, config.FD_RESERVE, self.cap)
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self.refused = refused
        self.open = 0
        """Connections held now."""
        self._room: asyncio.Future[None] | None = None
        self._next_log = 0.0
        self._waits = 0
        self._closed_idle = 0

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.open += 1

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.open -= 1
        if self._room is not None:
            _wake(self._room)

    async def accept(self, sock: socket.socket) -> None:
        """Accept connections on ``sock`` for ever (cancel to stop), within the cap."""
        loop = self._loop
        while True:
            if self.open >= self.cap:
                await self._wait(sock.fileno())  # until a connection closes or a client waits
                # A wake may also come from an answer finishing: make room only for a client
                # that really waits, one idle connection per wait.
                while self.open >= self.cap and _client_waits(sock):
                    await self._make_room(f"holds {self.open} connections, its limit")
                continue
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                await self._make_room(f"is out of descriptors ({exc.strerror}) at {self.open} connections",
                                      config.ACCEPT_RETRY)
                continue
            try:
                await loop.connect_accepted_socket(self, conn)
            except OSError as exc:  # the client left before the connection was set up
                log.debug("dropped a new connection: %s", exc)
                conn.close()

    async def _make_room(self, why: str, timeout: float | None = None) -> None:
        """A client waits and there is no room for it: close an idle connection, one that
        has been answered before one that never sent a request (its client may be sending it
        yet), the one idle the longest first, if it has been idle
        :data:`~gwlab.config.MIN_IDLE_TO_CLOSE` seconds, log
        ``why`` once per interval, and wait until a connection closes or finishes an answer
        (or ``timeout`` passes, or the connection idle the longest has been idle long
        enough)."""
        now = monotonic()  # the clock of idle_since
        connections = self._connections  # type: ignore[attr-defined]
        idle = min((c for c in connections if c.idle), key=_closing_order, default=None)
        if idle is not None:
            left = idle.idle_since + config.MIN_IDLE_TO_CLOSE - now
            if left <= 0:
                idle.force_close()
                self._closed_idle += 1
            else:
                timeout = left if timeout is None else min(timeout, left)
        self._waits += 1
        if now >= self._next_log:
            log.warning("the gateway %s: new connections wait in the backlog (%d waits, %d idle connections "
                        "closed in the last %g s)", why, self._waits, self._closed_idle, config.LIMIT_LOG_INTERVAL)
            self._next_log = now + config.LIMIT_LOG_INTERVAL
            self._waits = self._closed_idle = 0
        await self._wait(timeout=timeout)

    async def _wait(self, readable: int | None = None, timeout: float | None = None) -> None:
        """Until a connection closes, or the descriptor ``readable`` can be read (a client
        waits to be accepted), or ``timeout`` passes."""
        loop = self._loop
        self._room = room = loop.create_future()
        if readable is not None:
            loop.add_reader(readable, _wake, room)
        try:
            await asyncio.wait_for(room, timeout)
        except TimeoutError:
            pass
        finally:
            self._room = None
            if readable is not None:
                loop.remove_reader(readable)


def _closing_order(connection: _Connection) -> tuple[bool, float]:
    return not connection.answered, connection.idle_since


def _client_waits(sock: socket.socket) -> bool:
    """Whether a client waits in ``sock``'s backlog (the listening socket is readable)."""
    return bool(select.select([sock], [], [], 0)[0])


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_PIECE = 16 * 1024
"""The most bytes fed to the parser at once. It copies the bytes after each request it stops
at, so a packet of many small pipelined requests costs a copy of at most this much per
request, not of the rest of the packet."""

_NOTHING: tuple[Sequence[tuple[Any, StreamReader]], bool, bytes] = ((), False, b"")
"""What the parser gives when it has nothing to give."""


def _parse_error(exc: HttpProcessingError) -> tuple[_ErrInfo, StreamReader]:
    """What aiohttp queues for bytes it could not parse: it answers them 400."""
    return _ErrInfo(status=400, exc=exc, message=exc.message), EMPTY_PAYLOAD


class _PipelineParser:
    """aiohttp's C HTTP/1.1 request parser, made to hand over every request it parses (see
    "Pipelining" in the module's docstring).

    The parser it wraps pauses at the end of each request and keeps the bytes after it
    (``max_msg_queue_size=1``), so that one feed gives at most one request and a parse error
    can lose only the request it is in. After a feed that may have stopped it there,
    :meth:`feed_data` feeds it again, with nothing, until it gives nothing more or ``limit``
    requests wait in ``queue`` (aiohttp feeds it again, with nothing, as the queue drains)."""

    __slots__ = ("_parser", "_queue", "_limit", "_last", "_careful", "_unfed", "message_consumed")

    def __init__(self, parser: HttpRequestParser, queue: Sized, limit: int) -> None:
        self._parser = parser
        self._queue = queue
        self._limit = limit
        self._last: tuple[Any, StreamReader] | None = None
        """The last request parsed, until the parser is known to have stopped after it."""
        self._careful = False
        """Whether the parser may hold bytes, or read a request whole without giving one, so
        that the next feed goes through :meth:`_feed`: the queue filled, the parser failed,
        flow control paused it inside a body (even an empty feed may end the body then), or a
        request asking to switch protocols is still arriving."""
        self._unfed = b""
        """Bytes received and not fed yet: the queue filled first."""
        self.message_consumed = parser.message_consumed

    def pause_reading(self) -> None:
        """aiohttp's flow control: pause the parser inside the body it is reading."""
        self._careful = True
        self._parser.pause_reading()

    def feed_data(self, data: bytes) -> tuple[Sequence[tuple[Any, StreamReader]], bool, bytes]:
        """The requests parsed from ``data`` (after what the parser holds), in order; a parse
        error ends them as the 400 that aiohttp answers for it (the parser raises it, losing
        the requests parsed before it in the same feed). Never an upgraded connection.

        The normal path, a request per packet, costs one empty feed more; the empty feeds
        aiohttp makes after each read of a body cost none."""
        if self._careful or len(data) > _PIECE:
            return self._feed(data, []), False, b""
        if not data:  # the parser holds no bytes
            return _NOTHING
        parser = self._parser
        messages: Sequence[tuple[Any, StreamReader]] = ()
        try:
            parsed = parser.feed_data(data)
            messages = parsed[0]
            if messages:
                self._last = messages[-1]
                if messages[-1][0].upgrade:
                    return self._feed(b"", list(messages)), False, b""
            more = parser.feed_data(b"")[0]
        except HttpProcessingError as exc:
            self._careful = True
            return [*messages, _parse_error(exc)], False, b""
        if not (more or self._careful):
            return parsed
        if more:
            self._last = more[-1]
        return self._feed(b"", [*messages, *more]), False, b""

    def _feed(self, data: bytes, messages: list[tuple[Any, StreamReader]]) -> list[tuple[Any, StreamReader]]:
        """``messages`` and the requests parsed from ``data`` (fed after the bytes held back,
        a piece at a time): the parser is fed again, with nothing, each time it has read a
        request whole, which stopped it there."""
        parser = self._parser
        self._careful = False
        if self._unfed:  # the parser stopped after a request: what it holds comes first
            rest, data, self._unfed = self._unfed + data, b"", b""
        else:
            data, rest = data[:_PIECE], data[_PIECE:]
        while True:
            last = self._last
            # Only the parser ends a body while the connection reads (the gateway ends one
            # only as it stops reading): an ended body is a request read whole.
            if last is not None and last[1].is_eof():
                self._last = None
                if last[0].upgrade:
                    data = self._after_upgrade() + data
                elif len(self._queue) + len(messages) >= self._limit:
                    self._unfed = data + rest
                    self._careful = True
                    return messages
            try:
                parsed, _, _ = parser.feed_data(data)
            except HttpProcessingError as exc:
                self._careful = True
                messages.append(_parse_error(exc))
                return messages
            if parsed:
                messages += parsed
                self._last = parsed[-1]
            elif self._last is None or not self._last[1].is_eof():  # it took all it was given
                if rest:
                    data, rest = rest[:_PIECE], rest[_PIECE:]
                    continue
                if self._last is not None and self._last[0].upgrade:
                    self._careful = True
                return messages
            data = b""

    def _after_upgrade(self) -> bytes:
        """What the client sent after a request asking to switch protocols (``Upgrade:``,
        ``CONNECT``), at whose end the parser has stopped.

        At its next feed the parser hands those bytes back as the new protocol's if that is
        websocket (or the request CONNECT), and drops them otherwise. The gateway switches to
        no protocol: it answers such a request like any other, and what follows is more
        HTTP/1.1 (RFC 9110 §7.8). ``set_upgraded(True)`` makes the parser hand the bytes back
        whatever the protocol."""
        parser = self._parser
        parser.set_upgraded(True)
        _, _, rest = parser.feed_data(b"")
        parser.set_upgraded(False)
        return rest


class _Connection(RequestHandler):
    """One client connection: aiohttp's protocol with the head timeout, every request it
    parses handed over, its parser's errors answered in the OpenAI shape, and pauses that
    may end when the client goes away (:meth:`pause`)."""

    __slots__ = ("_head_timer", "_send_timer", "_unsent", "_pause", "idle_since", "answered")

    def __init__(self, manager: GatewayServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._unsent = 0
        """The bytes the transport held when the send timer was last set."""
        self._pause: asyncio.Future[None] | None = None
        self.idle_since = monotonic()
        """When the connection last became idle (:attr:`idle`): accepted, or answered. By
        ``time.monotonic``, which asyncio's loop reads too, called directly: this is set
        after every answer."""
        self.answered = False
        """Whether it has been given an answer (else its client has not sent a request yet)."""
        if HttpRequestParser is not HttpRequestParserPy:  # the C parser (see "Pipelining")
            # aiohttp's parser, built as aiohttp builds it (from its private attributes, its
            # arguments) but for the pause after each request instead of after 32.
            parser = HttpRequestParser(self, self._loop, self._read_bufsize, max_line_size=self.max_line_size,
                                       max_field_size=self.max_field_size, max_headers=self.max_headers,
                                       payload_exception=RequestPayloadError, max_msg_queue_size=1)
            self._parser = _PipelineParser(parser, self._messages, self._max_msg_queue_size)

    @property
    def idle(self) -> bool:
        """Between requests: no request handled, none arriving."""
        return not (self._request_in_progress or self._messages or self._head_timer or self._force_close)

    @property
    def closing(self) -> bool:
        """Whether the connection closes once the answer in progress is sent (``close`` or
        ``force_close`` was called): that answer then says ``Connection: close``."""
        return self._close or self._force_close

    def log_access(self, request: web.BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        """aiohttp calls this once an answer is written (the access log is off): the
        connection is about to be idle, which an accept loop waiting for room wants to know."""
        self.idle_since = monotonic()
        self.answered = True
        manager = self._manager
        if manager is not None and manager._room is not None:
            _wake(manager._room)

    def data_received(self, data: bytes) -> None:
        RequestHandler.data_received(self, data)  # named, not super(): no super object per packet
        if self._messages or self._request_in_progress:
            if self._head_timer is not None:  # the head has arrived in time
                self._head_timer.cancel()
                self._head_timer = None
            if self._request_in_progress and self._messages and type(self._messages[-1][0]) is _ErrInfo:
                # The parser failed inside the body being read (a bad chunk): aiohttp queues
                # an answer for after the handler's and leaves the handler waiting for the
                # rest of the body; fail its read instead, so that it answers 400 now. (After
                # a body read whole, the error is in what follows, answered after it.)
                request = self._current_request
                if request is not None and not request.content.is_eof():
                    error = self._messages.pop()[0]
                    request.content.set_exception(RequestPayloadError(error.message))
        elif self._head_timer is None and data and self._manager is not None:
            # A head has begun: its own timer runs from here, and aiohttp's keep-alive timer,
            # which would close the connection without a word, stops (it starts again after
            # the answer).
            self._head_timer = self._loop.call_later(self._manager.header_timeout, self._head_too_slow)
            if self._keepalive_handle is not None:
                self._keepalive_handle.cancel()
                self._keepalive_handle = None

    async def pause(self, seconds: float, until: asyncio.Future[None] | None = None, *, notice: bool = True) -> bool:
        """Wait ``seconds`` (only a turn of the loop if <= 0), or until ``until`` is done if
        that comes first (then returns ``True``). With ``notice``, raises ConnectionResetError
        as soon as the client closes the connection, or at once if it has: aiohttp does not
        cancel a handler whose client went away, and a write notices only when it is made, so
        this is how a stream under way learns at once, however long its next token takes.
        Without, the wait goes on whatever the client does (the gateway serves a request
        until it writes to it: DESIGN, "Retries and fallbacks")."""
        if notice and self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        if until is not None and until.done():
            return True
        if seconds <= 0:  # overdue: yield all the same, so a stream that fell behind does not
            await asyncio.sleep(0)  # write its late frames back to back while others wait
            return False
        pause = self._loop.create_future()
        if notice:
            self._pause = pause
        timer = self._loop.call_later(seconds, _wake, pause)
        if until is not None:
            until.add_done_callback(lambda _: _wake(pause))
        try:
            await pause
        finally:
            timer.cancel()
            if notice:
                self._pause = None
        return until is not None and until.done()

    def pause_writing(self) -> None:
        """The transport's buffer is full: the client has until the send timeout to read."""
        super().pause_writing()
        self._send_timer_set()

    def _send_timer_set(self) -> None:
        if self._manager is not None and self.transport is not None:
            self._unsent = self.transport.get_write_buffer_size()
            self._send_timer = self._loop.call_later(self._manager.send_timeout, self._send_too_slow)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._pause is not None and not self._pause.done():
            self._pause.set_exception(ConnectionResetError("the client closed the connection"))
        super().connection_lost(exc)

    def _send_too_slow(self) -> None:
        """The send timer ran out: the client read something meanwhile (the transport holds
        less than it did), and the timer starts again, or it read nothing and is cut off."""
        self._send_timer = None
        transport, manager = self.transport, self._manager
        if transport is None or manager is None:
            return
        if transport.get_write_buffer_size() < self._unsent:
            self._send_timer_set()
        else:
            log.debug("resetting a connection whose client read nothing for %g s", manager.send_timeout)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # a reset: the kernel drops what it still holds for the client
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            transport.abort()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        manager = self._manager
        if manager is None or self.transport is None or self._messages or self._request_in_progress:
            return
        log.debug("closing a connection whose request head took over %g s", manager.header_timeout)
        manager.refused(408)
        error = ApiError(408, f"the request's head did not arrive within {manager.header_timeout:g} s",
                         "request_timeout")
        self.transport.write(raw_answer(error))
        self.force_close()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse (or, never expected, a handler
        that raised): JSON, counted, one line in the log; the connection closes after it."""
        if request.writer.output_size > 0 or isinstance(exc, ConnectionError):
            # As aiohttp: too late for another answer, or (the handler noticed the client
            # leave, and counted it) nobody to give it to; aiohttp closes the connection.
            raise ConnectionError("an answer is partly sent, or its client has gone")
        reason = parse_error_reason(exc, message)
        if isinstance(exc, ContentEncodingError):
            # Raised at the head, for a coding aiohttp decodes only with a library that is not
            # installed: "brotli (br)", "zstandard (zstd)". (A body that does not decode is
            # its request's 400: server.py.)
            named = re.search(r"\((\w+)\)", reason)
            error = coding_error(named.group(1) if named else reason)
        elif status >= 500:
            log.error("error answering a request from %s", request.remote, exc_info=exc)
            error = ApiError(status, "internal error in the gateway; see its log", "internal_error")
        else:
            log.debug("malformed request from %s: %s", request.remote, reason)
            error = ApiError(status, f"malformed HTTP request: {reason}", "invalid_http_request")
        if self._manager is not None:
            self._manager.refused(error.status)
        response = answer(error)
        response.force_close()
        return response


CODINGS = ("gzip", "deflate")
"""The content codings of a request body that the gateway decodes (aiohttp does, with the
standard library's zlib); ``identity`` (or no ``Content-Encoding``) is a body as it is."""


def coding_error(given: str) -> ApiError:
    """The 415 for a request body in the content coding ``given``, which the gateway does not
    decode, with the codings it does in ``Accept-Encoding`` (RFC 9110 §12.5.3, §15.5.16).
    One coding at most: aiohttp decodes no list of them."""
    raw = given.encode("utf-8", "surrogateescape")  # as the client sent it
    shown = repr(raw[:SHOWN_BYTES])[1:] + ("..." if len(raw) > SHOWN_BYTES else "")
    return ApiError(415, f"Content-Encoding must be {', '.join(CODINGS)} or identity; got {shown}",
                    "unsupported_content_encoding", headers={"Accept-Encoding": ", ".join(CODINGS)})


SHOWN_BYTES = 64
"""The most bytes of a header's value that an error message repeats."""


def parse_error_reason(exc: BaseException | None, message: str | None = None) -> str:
    """The first line of what aiohttp says about a request it could not parse or decode,
    without its status prefix (``400, message:``) and the quoted bytes that follow it."""
    for source in (message, getattr(exc, "message", None), getattr(exc, "__cause__", None), exc):
        text = source if isinstance(source, str) else getattr(source, "message", None) or str(source or "")
        for line in text.splitlines():
            line = line.strip().rstrip(":")
            if line and not line.endswith(", message"):
                return line
    return "unreadable request"


def raw_answer(error: ApiError) -> bytes:
    """``error`` as the bytes of a whole HTTP/1.1 answer that closes the connection, for a
    moment when no request object exists to answer through."""
    response = answer(error)
    body = response.body
    head = [f"HTTP/1.1 {response.status} {response.reason}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in response.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
