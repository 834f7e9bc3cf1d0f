"""The gateway as a real HTTP server: an aiohttp shell around one :class:`Router`.

Two servers run on one asyncio loop: the OpenAI-compatible gateway (``POST
/v1/chat/completions``, port 8080 by default) and the Prometheus metrics server (``GET
/metrics``, port 9090). A chat completion request is validated first, so a bad one costs no
token; then the router decides (429, or a provider call decided in advance), the shell
sleeps for the call's duration and reports its end to the router at the gateway clock's
``now``. A call to a real upstream (``kind = "openai"``) is forwarded instead, and the router
is told the outcome observed (:mod:`gwlab.observe`, :mod:`gwlab.forward`). All policy lives
in the router; this module only carries its decisions out, speaks HTTP and counts.

:class:`Gateway` also offers the runtime controls the notebooks and the admin routes use
(:meth:`Gateway.configure`, :meth:`Gateway.reset`, :meth:`Gateway.snapshot`). They may be
called from any thread: when the gateway's loop runs in another thread, the call is carried
out on that loop and waited for.

Admin routes (``GET``/``PATCH /admin/config``, ``POST /admin/reset``) are served only when the
gateway is bound to a loopback address, unless an admin token is given; with a token they
require ``Authorization: Bearer TOKEN`` (the scheme in any case) on any address, checked
before anything else about the request.

What a client can hold (connections, idle time, time to send a request, time to read an
answer) is bounded by :mod:`gwlab.connections`; the body's time here, where it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import itertools
import json
import logging
import math
import os
import socket
import time
from typing import Any, Awaitable, Callable, Mapping, TypeVar

from gwlab.needs import needs

needs("gwlab.server")

import aiohttp
from aiohttp import HttpVersion10, HttpVersion11, hdrs, web
from multidict import CIMultiDict
from prometheus_client.aiohttp import make_aiohttp_handler

from gwlab import config, observe
from gwlab.admission import FAILED_OPEN, LIMITER_UNAVAILABLE
from gwlab.breaker import State, Transition
from gwlab.config import ConfigError, Scenario
from gwlab.connections import CODINGS, GatewayServer, bind, coding_error, parse_error_reason
from gwlab.errors import ATTEMPTS_HEADER, NO_PROVIDER, PROVIDER_HEADER, ROUTE_HEADER, answer, error_response
from gwlab.forward import Forwarder, keys, read_body
from gwlab.limiter import retry_after_header, retry_after_ms_header
from gwlab.metrics import Metrics
from gwlab.observe import Frame, Frames, InvalidAnswer
from gwlab.providers import Call, Outcome
from gwlab.router import (ALL_COOLING_DOWN, CONTEXT_EXCEEDS_LIMIT, RATE_LIMIT_TOKENS, Attempts, Rejected, Route,
                          Router, Snapshot)
from gwlab.timeseries import is_listed
from gwlab.wire import (DONE, ApiError, ChatRequest, Chunks, completion, error_frame, ratelimit_headers, reply,
                        reply_pieces, validate)

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_JSON = "application/json"
_MERGE_PATCH = "application/merge-patch+json"
_CODINGS = frozenset(("", "identity", *CODINGS))
_VERSIONS = (HttpVersion11, HttpVersion10)
"""The HTTP versions the gateway speaks."""
_NONE_HEADERS = {PROVIDER_HEADER: NO_PROVIDER}


class PortInUse(OSError):
    """A port the gateway should listen on is taken by another socket."""

    def __init__(self, port: int, host: str) -> None:
        super().__init__(f"port {port} is already in use on {host}")
        self.errno = errno.EADDRINUSE
        self.port = port
        self.host = host


def log_transition(event: Transition) -> None:
    """Breaker listener: openings and recoveries at INFO, HEALTHY <-> FAILING at DEBUG."""
    level = logging.INFO if is_listed(event) else logging.DEBUG
    cooldown = f" (cooldown {event.cooldown:g} s)" if event.target is State.OPEN else ""
    log.log(level, "breaker %s: %s -> %s%s", event.provider, event.source.value, event.target.value, cooldown)


class Gateway:
    """Gateway HTTP server and metrics HTTP server around one Router, on one asyncio loop.

    ``clock`` gives the ``now`` of every decision (monotonic seconds); tests inject a fake one.
    ``max_connections``, ``keepalive_timeout``, ``header_timeout``, ``body_timeout`` and
    ``send_timeout`` bound what clients can hold (:mod:`gwlab.connections`).
    After :meth:`start`, ``url`` and ``metrics_url`` say where to connect and ``port`` and
    ``metrics_port`` are the ports actually bound (the last ones bound, after a failed start).
    A ``scenario`` holding a value out of its range, or a real upstream whose key variable is
    not set (:func:`gwlab.forward.keys`), raises :class:`ConfigError`.
    """

    def __init__(self, scenario: Scenario, seed: int = config.SEED, *,
                 admin_token: str | None = None, clock: Callable[[], float] = time.monotonic,
                 max_connections: int = config.MAX_CONNECTIONS, keepalive_timeout: float = config.KEEPALIVE_TIMEOUT,
                 header_timeout: float = config.HEADER_TIMEOUT, body_timeout: float = config.BODY_TIMEOUT,
                 send_timeout: float = config.SEND_TIMEOUT) -> None:
        config.check(scenario, "Gateway(scenario=...)")
        self.clock = clock
        self.max_connections = max_connections
        self.keepalive_timeout = keepalive_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self.seed = seed
        self.admin_token = admin_token
        found = keys(scenario, "Gateway(scenario=...)")
        self._forwarders = {p.name: Forwarder(p, found.get(p.name)) for p in scenario.providers if p.kind == "openai"}
        """The client of each real upstream, by provider (their pools open as the gateway starts)."""
        self._remote = _admission(scenario, clock)
        """The admission kept in Redis (``limiter.backend = "redis"``), awaited; ``None``:
        the router's own buckets, which answer at once."""
        self.router = Router(scenario, seed, clock(), self._remote)
        self.router.subscribe(log_transition)
        self.metrics = Metrics(self.router, clock)
        self.url = ""
        self.metrics_url = ""
        self.port = 0
        self.metrics_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runners: tuple[GatewayServer, asyncio.Task, GatewayServer, asyncio.Task] | None = None
        """The gateway's server and the task accepting its connections, the metrics server's
        and its task."""
        self._handlers: dict[str, dict[str, _Handler]] = {}
        """Handlers by path, then method (set when the gateway starts)."""
        self._protected: frozenset[str] = frozenset()
        """Paths that need the admin token (none without one)."""
        self._waiting: set[_Waiting] = set()
        """Handlers sleeping through a provider call (cut off if a stop runs out of time)."""
        self._idle: asyncio.Event | None = None
        """Set (and dropped) as the last waiting handler leaves: what the cut-offs under way await."""
        self._cut_at: float | None = None
        """When every wait is cut off, on the loop's clock, once :meth:`cut_off_after` is called
        (until the gateway stops)."""
        self._cut_offs = 0
        """Waits cut off so far (each counted as its timer cuts it)."""
        self._starting: dict[Route, asyncio.Future[None]] = {}
        """Futures of the handlers whose routes wait for a provider's slot."""
        self.router.on_start = self._started
        self.fan_out: Callable[[str, Any], Awaitable[Scenario | None]] | None = None
        """Set in a replica (:mod:`gwlab.replicas`): the admin API's changes, ``("configure",
        patch)``, and resets, ``("reset", None)``, go through it to the parent, which applies
        them to every replica and returns the new scenario (raising :class:`ConfigError` for
        a patch it refuses)."""
        self._stopping = False
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex().encode()
        self._replies = {u.name: reply(u.name) for u in self.router.upstreams}
        self._route_headers = {  # case-insensitive dicts already: aiohttp copies them fastest
            (u.name, fallback, panic): CIMultiDict({hdrs.CONTENT_TYPE: _JSON, PROVIDER_HEADER: u.name,
                                                    ROUTE_HEADER: _ROUTE_KINDS[fallback, panic],
                                        ATTEMPTS_HEADER: "1"})
            for u in self.router.upstreams for fallback, panic in _ROUTE_KINDS
        }
        self._stream_headers = {
            key: CIMultiDict({**headers, hdrs.CONTENT_TYPE: "text/event-stream", hdrs.CACHE_CONTROL: "no-cache"})
            for key, headers in self._route_headers.items()
        }
        self._full: tuple[int, dict[tuple[str, bool, bool], CIMultiDict]] = (0, {})
        """The headers of an answer given while the requests bucket is full and no tokens
        limit is on, which is how a gateway under its limit answers nearly always, for the
        capacity they were written for: only then do the rate-limit headers' values repeat."""

    @property
    def scenario(self) -> Scenario:
        """The scenario in force (changed by :meth:`configure`)."""
        return self.router.scenario

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, host: str = config.HOST, port: int = config.PORT,
                    metrics_port: int = config.METRICS_PORT, reuse_port: bool = False) -> None:
        """Listen on ``host``: the gateway on ``port``, metrics on ``metrics_port`` (0 picks a
        free port); with ``reuse_port``, beside the other replicas on ``port``
        (:mod:`gwlab.replicas`). Does nothing if already started. Raises :class:`PortInUse`
        with nothing left bound."""
        if self._runners is not None:
            return
        self._loop = asyncio.get_running_loop()
        admin = self.admin_token is not None or _is_loopback(host)
        try:
            sock = bind(host, port, reuse_port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(port, host) from None
            raise
        self.port = sock.getsockname()[1]
        try:
            metrics_sock = bind(host, metrics_port)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(metrics_port, host) from None
            raise
        self.metrics_port = metrics_sock.getsockname()[1]
        for forwarder in self._forwarders.values():
            await forwarder.start()
        gateway = self._gateway_server(admin)
        metrics = self._metrics_server()
        self._runners = (gateway, asyncio.create_task(self._accept(gateway, sock)),
                         metrics, asyncio.create_task(self._accept(metrics, metrics_sock)))
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self.metrics_url = f"http://{shown}:{self.metrics_port}/metrics"
        log.info("gateway on %s, metrics on %s", self.url, self.metrics_url)

    async def stop(self, grace: float = config.STOP_GRACE) -> None:
        """Stop listening, let requests in flight finish within ``grace`` seconds and cut off
        the rest (their routes are abandoned: no provider outcome is recorded). Does nothing
        if not started."""
        if self._runners is None:
            return
        gateway, accepting, metrics, scraped = self._runners
        self._runners = None
        self._stopping = True
        try:
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
            await self.cut_off_after(grace)
            await asyncio.sleep(0)  # requests that arrived before the close begin to be handled
            gateway.pre_shutdown()
            await gateway.shutdown(config.STOP_GRACE)
            scraped.cancel()
            await asyncio.gather(scraped, return_exceptions=True)
            await metrics.shutdown(config.STOP_GRACE)
            for forwarder in self._forwarders.values():
                await forwarder.close()
            if self._remote is not None:
                await self._remote.aclose()
        finally:
            self._stopping = False
            self._cut_at = None

    async def cut_off_after(self, grace: float) -> None:
        """Let the requests in flight finish within ``grace`` seconds, then cut off those
        still waiting on a provider (or to retry): each counts 499 and its connection
        closes, so that its client sees the cut-off as the gateway counts it. From now until
        the gateway stops, no wait outlasts the grace's end, whenever its request came: one
        that comes later, or is between two waits as this is called, is cut off as it would
        have been had it waited now; one that begins after the grace is cut off at once.
        A call that takes no time still answers. Returns once no handler waits. The gateway
        goes on serving: :meth:`stop` does this once it stops listening, and ``gwlab run`` as
        its clients stop, the clients waiting :data:`~gwlab.config.CUT_OFF_MARGIN` longer, for
        what the gateway decided, rather than deciding themselves at the same instant. A
        second call with an earlier end brings the cut-off forward; a later one leaves it."""
        deadline = asyncio.get_running_loop().time() + grace
        if self._cut_at is None or deadline < self._cut_at:
            self._cut_at = deadline
            for waiting in self._waiting:
                waiting.cut_at(deadline)
        # Whether any handler waits is looked at again as this wakes: one between two waits (an
        # attempt and its retry, a slot and its call) leaves none waiting for an instant.
        told = False
        before = self._cut_offs
        while self._waiting:
            if self._idle is None:  # shared by every cut-off under way
                self._idle = asyncio.Event()
            try:
                async with asyncio.timeout_at(None if told else self._cut_at):
                    await self._idle.wait()
            except TimeoutError:  # each wait's own timer, due as this one, has cut it off
                log.info("requests still in flight cut off: %d", self._cut_offs - before)
                told = True

    # -- runtime controls (any thread) --------------------------------------------------

    def configure(self, patch: Mapping[str, Any], source: str = "Gateway.configure") -> Scenario:
        """Merge ``patch`` into the scenario (validated like a scenario file; raises
        :class:`ConfigError` naming ``source``) and apply it from now on. Returns the new
        scenario."""
        return self._on_loop(self._configure, patch, source)

    def reset(self) -> None:
        """Full buckets and healthy breakers with no history. With ``limiter.backend =
        "redis"`` the buckets are the shared ones: full for every gateway that uses them."""
        self._on_loop(lambda: self.router.reset(self.clock()))

    def snapshot(self) -> Snapshot:
        """The router's state now (:meth:`Router.snapshot` at the gateway clock's ``now``)."""
        return self._on_loop(lambda: self.router.snapshot(self.clock()))

    def _configure(self, patch: Mapping[str, Any], source: str) -> Scenario:
        scenario = config.merge(self.router.scenario, patch, source)
        self.router.configure(scenario, self.clock())
        return scenario

    def _state(self) -> dict[str, Any]:
        """What the admin routes answer with: the router's snapshot as JSON, each provider
        with its ``fallbacks`` (counted by the metrics since the gateway was created; ``trips``
        count since the provider's last recovery)."""
        state = self.router.snapshot(self.clock()).to_dict()
        for name, provider in state["providers"].items():
            provider["fallbacks"] = self.metrics.fallbacks[name]
        return state

    def _on_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn`` on the gateway's loop thread and return its result; directly when that
        loop is not running or is the caller's own."""
        loop = self._loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            return fn(*args)

        async def call() -> _T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), loop).result()

    # -- the gateway's HTTP server ------------------------------------------------------

    def _routes(self, admin: bool) -> dict[str, dict[str, _Handler]]:
        """The gateway's handlers by path, then method. GET routes answer HEAD too."""
        routes: dict[str, dict[str, _Handler]] = {
            "/chat/completions": {"POST": self._chat},
            "/v1/chat/completions": {"POST": self._chat},
            "/v1/models": {"GET": self._models},
            "/healthz": {"GET": self._healthz},
        }
        if admin:
            routes["/admin/config"] = {"GET": self._get_config, "PATCH": self._patch_config}
            routes["/admin/reset"] = {"POST": self._reset}
        for methods in routes.values():
            if "GET" in methods:
                methods["HEAD"] = methods["GET"]
        return routes

    @staticmethod
    async def _accept(gateway: GatewayServer, sock: socket.socket) -> None:
        """Accept ``gateway``'s connections on ``sock`` until cancelled; then close ``sock``."""
        with sock:
            await gateway.accept(sock)

    def _gateway_server(self, admin: bool) -> GatewayServer:
        """aiohttp's low-level server with :meth:`_serve` as its one handler.

        No application router, middleware chain or signals stand between the socket and the
        handler: with a fixed handful of paths, one dictionary lookup routes a request, and
        one ``try`` answers every error. The same handler served this way costs less CPU per
        request than behind an ``Application`` (the ``_low_level`` rows of
        ``benchmarks/README.md``)."""
        self._handlers = self._routes(admin)
        self._protected = frozenset(p for p in self._handlers if p.startswith("/admin/") and self.admin_token is not None)
        loop = asyncio.get_running_loop()

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            if message.version in _VERSIONS:
                return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=config.MAX_BODY)
            return _OtherVersion(message, payload, protocol, writer, task, loop)

        return GatewayServer(self._serve, make_request, max_connections=self.max_connections,
                             keepalive_timeout=self.keepalive_timeout, header_timeout=self.header_timeout,
                             send_timeout=self.send_timeout, refused=self.metrics.refused)

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route ``request`` by path and method; every 4xx/5xx as an OpenAI-style JSON error,
        counted; never a traceback. The admin token is checked before anything else about an
        admin request (its method, its ``Expect``), so a caller without it learns nothing.
        An error answered before the whole body has arrived closes the connection (the
        client need not send the rest), and so does every answer while the gateway stops."""
        try:
            if request.__class__ is _OtherVersion:
                raise ApiError(505, f"HTTP/{request.asked} is not supported: the gateway speaks HTTP/1.1 (and 1.0)",
                               "http_version_not_supported")
            methods = self._handlers.get(request.path)
            if methods is None:
                raise ApiError(404, f"unknown path {request.path!r}; see GET /v1/models and POST /v1/chat/completions",
                               "unknown_url")
            if self._protected and request.path in self._protected:
                self._authorize(request)
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(methods)
                raise ApiError(405, f"method {request.method} is not allowed on {request.path!r}; allowed: {allowed}",
                               "method_not_allowed", headers={"Allow": allowed})
            if hdrs.EXPECT in request.headers:
                await _expect(request)
            response = await handler(request)
            if self._stopping:
                response.force_close()
            return response
        except ApiError as exc:
            error = exc
        except web.HTTPRequestEntityTooLarge:  # raised by request.read() past MAX_BODY
            error = _too_large()
        except ConnectionError:
            # The client went away mid-request: there is nobody to answer. A write it left
            # raises ConnectionResetError, or, when it was waiting for the client to read,
            # aiohttp's ConnectionError("Connection lost").
            raise
        except asyncio.CancelledError:
            if self._stopping and request.writer.output_size > 0:
                # A stream (only a stream has sent anything yet) cut off by a stop that ran
                # out of grace: its client gets the error frame and a proper end, rather than
                # a connection closed mid-body. aiohttp's shutdown bounds the writes.
                with contextlib.suppress(ConnectionError):
                    await request.writer.write(_STOPPED)
                    await request.writer.write_eof()
            raise
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            error = ApiError(500, "internal error in the gateway; see its log", "internal_error")
        self.metrics.refused(error.status)
        response = answer(error)
        if self._stopping or not request.content.is_eof() or request.protocol.closing:
            response.force_close()
            if hdrs.EXPECT in request.headers and not request.content.is_eof():
                _stop_reading(request)  # refused before "100 Continue": no body is coming
        return response

    async def _chat(self, request: web.BaseRequest) -> web.Response:
        arrived = self.clock()
        _check_body_type(request)
        data = _parse_json(await _read_body(request, self.body_timeout))
        chat = validate(data)
        if self._stopping:
            raise ApiError(503, "the gateway is shutting down", "shutting_down")
        now = self.clock()
        router = self.router
        reserved = router.reservation(chat.prompt_tokens, chat.max_tokens) if router.counts_tokens else 0
        unreserved = False
        if self._remote is None:
            # A request that reserves nothing is never oversized, the one check Router.admit
            # makes before asking the admission (as sim._admitters): one call less for it.
            rejected = router.admit(now, reserved) if reserved else router.admission.admit(now, 0)
        else:
            rejected = router.oversized(reserved) or await self._remote.admit(now, reserved)
            if rejected is FAILED_OPEN:  # admitted without Redis: the gateway's bucket holds nothing of it
                rejected, unreserved = None, True
        if rejected is not None:
            return self._reject(rejected, arrived, chat, reserved)
        attempts = router.attempts(now) if router.budget is not None else None  # None while it does not retry
        protocol: Any = request.protocol
        while True:  # an attempt
            route = router.route(now, chat.stream, chat.max_tokens, reserved, attempts, False, unreserved)
            if route.__class__ is Rejected:  # every provider is cooling down: 503
                return self._reject(route, arrived, chat, reserved, attempts)
            if route.fallback or route.panic:
                self.metrics.routed(route)
            gave_up = route.waiting and not await self._slot(request, route)
            if route.upstream.real:
                if gave_up or route.call.outcome is Outcome.RATE_LIMITED:
                    # Never sent: no slot came in time, or its own capacity or limits refused it.
                    forwarded = Outcome.TIMEOUT if gave_up else Outcome.RATE_LIMITED, b""
                else:
                    forwarded = await self._forward(request, chat, data, route, now, arrived, attempts)
                if forwarded.__class__ is not tuple:  # the answer: a stream under way, or passed through
                    return forwarded
                outcome, body = forwarded
            else:
                outcome = Outcome.TIMEOUT if gave_up else route.call.outcome
                if chat.stream and (outcome is Outcome.SUCCESS or outcome is Outcome.STREAM_ERROR):  # a first token
                    return await self._stream(request, chat, route, arrived, attempts)  # never retried from here
                if not gave_up and route.call.duration > 0:  # a call that takes no time ends at once: no trip through the loop
                    with _Waiting(self, route):
                        await protocol.pause(route.call.duration, notice=False)  # served, even to a client gone
            ended = self.clock()
            status = router.give_up(route, ended) if gave_up else router.complete(route, ended, outcome)
            if attempts is None or status == 200:
                break
            retry = router.retry(attempts, route, ended, status)
            self.metrics.decided(retry.reason)
            if retry.wait is None:
                break
            router.refund(route, ended, chat.prompt_tokens)  # its provider's reservation: the prompt alone
            self.metrics.attempted(route, outcome, ended - now)
            with _Waiting(self, None):
                await protocol.pause(retry.wait, notice=False)
            now = self.clock()
        if protocol.transport is None:  # its client left: the work is done, for no one
            if reserved:
                router.refund(route, ended, chat.prompt_tokens)
            self.metrics.attempted(route, outcome, ended - now)
            self.metrics.cut_off(route)
            raise ConnectionResetError("the client left before its answer")
        name = route.upstream.name
        key = name, route.fallback, route.panic
        if status == 200:  # the provider's fixed reply, or as many tokens of it as the call gave
            call = route.call
            if route.upstream.real:  # the upstream's own answer, as _forward read it
                tokens = call.tokens
            else:
                content, tokens = reply(name, call.tokens) if call.tokens else self._replies[name]
                body = completion(self._id_prefix, next(self._ids), int(time.time()), chat.model, content,
                                  chat.prompt_tokens, tokens, "length" if call.capped else "stop")
            if reserved:  # what the answer used: the prompt and the reply's tokens
                router.refund(route, ended, chat.prompt_tokens + tokens)
            self.metrics.completed(route, outcome, ended - arrived, ended - now, chat.prompt_tokens, tokens)
            admission = router.admission  # its buckets read once, not through the router's two properties
            if admission.tokens is None:
                remaining, reset_us = admission.requests.status(ended)
                if not reset_us:  # a full bucket: the headers are written already
                    full = self._full
                    if full[0] != remaining:
                        full = self._full = self._full_headers(remaining)
                    headers = full[1][key]
                    return web.Response(body=body,
                                        headers=headers if attempts is None else _attempted(headers, attempts))
            headers = self._route_headers[key]
            response = web.Response(body=body, headers=headers if attempts is None else _attempted(headers, attempts))
            response.headers.extend(self._ratelimit(ended))
            return response
        headers = self._route_headers[key]
        if attempts is not None:
            headers = _attempted(headers, attempts)
        if reserved:  # an answer with no reply used its prompt alone
            router.refund(route, ended, chat.prompt_tokens)
        self.metrics.completed(route, outcome, ended - arrived, ended - now)
        if status == 504:
            waited = "had no free slot" if gave_up else "did not answer"
            message = f"provider {name} {waited} within {self.scenario.gateway.timeout:g} s"
            response = error_response(504, message, "provider_timeout", headers=headers)
        elif status == 429:
            wait = route.call.retry_after
            message = (f"provider {name} refused the call: it is at capacity or over its own rate limit; "
                       f"retry in {wait:.3f} s")
            # Whole microseconds, a float's error rounded away first (as the router's waits):
            # an upstream's retry-after-ms of 999.123 reaches the client as it was.
            refused = {**headers, "Retry-After": retry_after_header(wait),
                       "retry-after-ms": retry_after_ms_header(math.ceil(round(wait * 1e6, 3)))}
            response = error_response(429, message, "provider_rate_limited", headers=refused)
        else:
            response = error_response(502, f"provider {name} failed", "provider_error", headers=headers)
        response.headers.extend(self._ratelimit(ended))
        return response

    async def _slot(self, request: web.BaseRequest, route: Route) -> bool:
        """Wait until ``route``, queued for a slot of its provider, starts (``True``), or the
        gateway's timeout, counted from its routing, runs out (``False``), whether or not its
        client is still there (it is served until it is written to); a stop that runs out of
        grace abandons it (499)."""
        started = self._loop.create_future()
        self._starting[route] = started
        try:
            with _Waiting(self, route):
                protocol: Any = request.protocol
                left = route.routed + self.scenario.gateway.timeout - self.clock()
                return await protocol.pause(left, started, notice=False)
        finally:
            self._starting.pop(route, None)

    def _started(self, route: Route, now: float) -> None:
        """The router started ``route``, which waited for a slot: its handler goes on."""
        started = self._starting.get(route)
        if started is not None and not started.done():
            started.set_result(None)

    def _full_headers(self, limit: int) -> tuple[int, dict[tuple[str, bool, bool], CIMultiDict]]:
        """The headers of each provider's answers while the requests bucket, of ``limit``
        whole tokens, is full (and no tokens limit is on)."""
        full = ratelimit_headers("requests", limit, limit, 0)
        return limit, {key: CIMultiDict([*headers.items(), *full]) for key, headers in self._route_headers.items()}

    def _ratelimit(self, now: float) -> list[tuple[str, str]]:
        """OpenAI's rate-limit headers at ``now``: the requests bucket's, and the tokens
        bucket's when that limit is on. The limit is the most whole requests (tokens) a full
        bucket admits at once."""
        router = self.router
        bucket = router.bucket
        remaining, reset_us = bucket.status(now)
        headers = ratelimit_headers("requests", int(bucket.burst), remaining, reset_us)
        tokens = router.tokens
        if tokens is not None:
            remaining, reset_us = tokens.status(now)
            headers += ratelimit_headers("tokens", tokens.limit, remaining, reset_us)
        return headers

    def _reject(self, rejected: Rejected, arrived: float, chat: ChatRequest, reserved: int,
                attempts: Attempts | None = None) -> web.Response:
        """The answer to a request the gateway refused itself: 429 with the wait, the 503
        of every provider cooling down under ``gateway.fallback = "reject"``, with the wait
        until the soonest reopens and, in ``x-gwlab-attempts``, the provider calls made
        before it (0 but for a request the gateway retries), or the 400 of a request that
        reserves more tokens than a tokens limit holds (an ApiError, answered and counted
        as every 400 is)."""
        now = self.clock()
        limits = self._ratelimit(now)
        if rejected.code == CONTEXT_EXCEEDS_LIMIT:  # max_tokens may have thousands of digits: shown rounded
            asked = f"max_tokens {config.shown_value(chat.max_tokens)}" if chat.max_tokens else (
                f"limiter.default_max_tokens {self.scenario.limiter.default_max_tokens} (no max_tokens)")
            raise ApiError(400, f"this request reserves {config.shown_value(reserved)} tokens ({chat.prompt_tokens} "
                                "of the prompt and "
                                f"{asked}), more than {self._token_limits(reserved)} can ever admit; lower "
                                "max_tokens or shorten the prompt",
                           CONTEXT_EXCEEDS_LIMIT, "max_tokens" if chat.max_tokens else "messages", headers=dict(limits))
        wait = rejected.retry_after
        headers = [
            (PROVIDER_HEADER, NO_PROVIDER),
            ("Retry-After", retry_after_header(wait)),
            ("retry-after-ms", retry_after_ms_header(rejected.retry_after_us)),
            *limits,
        ]
        if rejected.code == ALL_COOLING_DOWN:  # it reached the routing step: the provider calls it made
            headers.append((ATTEMPTS_HEADER, str(attempts.made if attempts is not None else 0)))
            message = (f"every provider's circuit breaker is open (gateway.fallback = reject); the soonest "
                       f"reopens in {wait:.3f} s")
            self.metrics.refused(503)
            return error_response(503, message, ALL_COOLING_DOWN, headers=dict(headers))
        if rejected.code == LIMITER_UNAVAILABLE:
            message = (f"the gateway's rate limiter cannot reach its Redis (limiter.redis_failure = closed); "
                       f"retry in {wait:.3f} s")
        elif rejected.code == RATE_LIMIT_TOKENS:
            limit = self.router.tokens.limit
            message = (f"rate limit exceeded: this request reserves {reserved} tokens and the gateway admits "
                       f"{limit} tokens per minute; retry in {wait:.3f} s")
        else:
            bucket = self.router.bucket
            message = (f"rate limit exceeded: the gateway admits {bucket.rate:g} requests/s with bursts of "
                       f"{bucket.burst:g}; retry in {wait:.3f} s")
        self.metrics.rejected(now - arrived, rejected.code)
        return error_response(429, message, rejected.code, headers=dict(headers))

    def _token_limits(self, reserved: int) -> str:
        """The tokens limits that refuse a request reserving ``reserved`` tokens: the
        gateway's, or else every provider's own."""
        tokens = self.router.tokens
        if tokens is not None and reserved > tokens.limit:
            return f"the gateway's limit of {tokens.limit} tokens per minute"
        limits = ", ".join(f"{p.name} {p.tpm}" for p in self.scenario.providers if p.weight > 0)
        return f"the providers' own limits in tokens per minute ({limits})"

    async def _stream(self, request: web.BaseRequest, chat: ChatRequest, route: Route,
                      arrived: float, attempts: Attempts | None = None) -> web.StreamResponse:
        """Answer ``stream: true`` for a call that gives a first token: 200 and
        ``text/event-stream`` at the first token, its frames at the call's pace (a token
        each, or grouped :data:`~gwlab.config.STREAM_FRAME_INTERVAL` apart), then the end of
        the reply or, for a mid-stream error, an error frame. Either way the body ends
        properly and the connection stays open for the next request: closing it after a
        body its client has read whole would race that client's reuse of it.

        The breaker hears the stream once, at its end. A client that goes away before the
        first token is noticed when it is written, one that goes away later at once
        (:meth:`_Connection.pause`, or the write that fails): the call is abandoned (no
        outcome: its probe slot is freed) and counted as 499, as is a stream cut off by a
        stop that runs out of time."""
        call, name = route.call, route.upstream.name
        start = self.clock()  # the provider call begins
        tokens = call.tokens or self._replies[name][1]  # a fixed reply comes whole
        gap = (call.duration - call.ttft) / (call.tokens - 1) if call.tokens > 1 else 0.0
        size = max(1, int(config.STREAM_FRAME_INTERVAL / gap)) if gap > 0 else tokens
        pieces = reply_pieces(name, tokens, size)
        protocol: Any = request.protocol
        with _Waiting(self, route):
            await protocol.pause(start + call.ttft - self.clock(), notice=False)  # a client gone: seen at the first write
            response = await self._stream_response(request, route, attempts)
            first = self.clock()
            chunks = Chunks(self._id_prefix, next(self._ids), int(time.time()), chat.model, chat.include_usage)
            await response.write(chunks.first() + chunks.content(pieces[0]))
            for i in range(1, len(pieces)):  # each frame when its first token is due
                await protocol.pause(start + call.ttft + i * size * gap - self.clock())
                await response.write(chunks.content(pieces[i]))
            await protocol.pause(start + call.duration - self.clock())  # the last token, or the failure
        outcome = call.outcome
        self._streamed(route, outcome, chat, arrived, start, first, tokens)
        try:
            if outcome is Outcome.STREAM_ERROR:
                # A stream whose next token would come past the idle timeout fails that long
                # after its first, the one token it gave (Provider.call); any other failure
                # ends at the token it fails after.
                idle = self.scenario.gateway.stream_idle_timeout if call.tokens == 1 and call.duration > call.ttft \
                    else None
                await response.write(_broken(name, tokens, idle))
            else:
                end = chunks.finish("length" if call.capped else "stop")
                if chat.include_usage:
                    end += chunks.usage(chat.prompt_tokens, tokens)
                await response.write(end + DONE)
            await response.write_eof()
        except ConnectionError:
            pass  # the client left as the stream ended: the outcome stands
        return response

    async def _stream_response(self, request: web.BaseRequest, route: Route,
                               attempts: Attempts | None) -> web.StreamResponse:
        """The 200 of a stream to ``route``'s provider, its headers sent."""
        headers = self._stream_headers[route.upstream.name, route.fallback, route.panic]
        response = web.StreamResponse(headers=headers if attempts is None else _attempted(headers, attempts))
        response.headers.extend(self._ratelimit(self.clock()))
        await response.prepare(request)
        return response

    def _streamed(self, route: Route, outcome: Outcome, chat: ChatRequest, arrived: float, start: float,
                  first: float, tokens: int) -> None:
        """The stream of ``route``, whose call began at ``start`` and gave its first token at
        ``first``, ends now with ``outcome`` after ``tokens`` tokens: the breaker, the tokens
        limits and the metrics hear it."""
        ended = self.clock()
        self.router.complete(route, ended, outcome)
        self.router.refund(route, ended, chat.prompt_tokens + tokens)
        self.metrics.completed(route, outcome, ended - arrived, ended - start, chat.prompt_tokens, tokens)
        self.metrics.streamed(route, ended - arrived, first - arrived, tokens)

    # -- real upstreams -------------------------------------------------------------------

    async def _forward(self, request: web.BaseRequest, chat: ChatRequest, data: dict[str, Any], route: Route,
                       now: float, arrived: float, attempts: Attempts | None) -> Any:
        """Forward the attempt begun at ``now`` of the chat request ``data`` to ``route``'s
        real upstream, and observe how it ends (:mod:`gwlab.observe`). Returns ``(outcome,
        body)`` for a call that ended before anything was sent to the client (``body``: the
        upstream's answer to a 200; ``route.call`` then holds its tokens and retry-after)
        for :meth:`_chat` to complete as any call, or the answer itself: a stream that gave
        its first token (relayed whole, :meth:`_relay`) or the upstream's 400, 404 or 422
        passed through. The gateway's timeout runs from ``now`` to the answer, or to a
        stream's first content frame."""
        name = route.upstream.name
        start = self.clock()
        answer = None
        body, tokens, wait = b"", 0, 0.0
        with _Waiting(self, route) as waiting:
            try:
                try:
                    async with asyncio.timeout(now + self.scenario.gateway.timeout - start) as deadline:
                        answer = await self._forwarders[name].post(data, route.upstream.host.provider.config)
                        outcome = observe.outcome(answer.status)
                        if chat.stream and outcome is Outcome.SUCCESS:
                            frames = Frames(config.UPSTREAM_MAX_BODY)
                            tally = _Tally()
                            head = await _first_token(answer, frames, tally)
                            deadline.reschedule(None)  # the stream's first token came in time
                        else:
                            body = await read_body(answer)
                            if outcome is Outcome.SUCCESS:
                                tokens = observe.counted(observe.completion_tokens(body), chat.max_tokens)
                            elif outcome is Outcome.RATE_LIMITED:
                                wait = observe.retry_after(answer.headers)
                except aiohttp.ClientError as exc:  # before TimeoutError: a connect timeout is a failure
                    outcome, reason = Outcome.ERROR, f"{type(exc).__name__}: {exc}"
                except TimeoutError:
                    outcome, reason = Outcome.TIMEOUT, "timeout"
                except (OSError, InvalidAnswer) as exc:
                    outcome, reason = Outcome.ERROR, f"{type(exc).__name__}: {exc}"
                else:
                    if outcome is None:
                        return self._passed(route, answer, body, chat, arrived, start, attempts)
                    if chat.stream and outcome is Outcome.SUCCESS:
                        return await self._relay(request, chat, route, answer, frames, tally, head, arrived, start,
                                                 attempts, waiting)
                    reason = f"status {answer.status}"
                if outcome is not Outcome.SUCCESS:
                    log.debug("upstream %s: %s", name, reason)
            finally:
                if answer is not None:
                    answer.release()  # the connection goes back to the pool, or is closed if the answer is unread
        route.call = Call(self.clock() - start, outcome, 0.0, tokens, False, wait)
        return outcome, body

    def _passed(self, route: Route, answer: aiohttp.ClientResponse, body: bytes, chat: ChatRequest, arrived: float,
                start: float, attempts: Attempts | None) -> web.Response:
        """The upstream's 400, 404 or 422, passed to the client as it came: the request was at
        fault, so its breaker hears nothing (the route is abandoned) and the gateway's headers
        are added."""
        ended = self.clock()
        self.router.abandon(route, ended)
        self.router.refund(route, ended, chat.prompt_tokens)
        self.metrics.passed(route, answer.status, ended - arrived, ended - start)
        headers = self._route_headers[route.upstream.name, route.fallback, route.panic]
        response = web.Response(status=answer.status, body=body,
                                headers=headers if attempts is None else _attempted(headers, attempts))
        response.content_type = answer.content_type or _JSON
        response.headers.extend(self._ratelimit(ended))
        return response

    async def _relay(self, request: web.BaseRequest, chat: ChatRequest, route: Route,
                     answer: aiohttp.ClientResponse, frames: Frames, tally: _Tally, head: bytes, arrived: float,
                     start: float, attempts: Attempts | None, waiting: _Waiting) -> web.StreamResponse:
        """Relay the stream of a real upstream from its first content frame (``head``, the
        frames up to it): 200 and the frames as they arrive, then the upstream's end, or, when
        it fails (an error frame, a reset, an invalid frame, no token within
        ``gateway.stream_idle_timeout``, an end without ``[DONE]``), the error frame of a
        mid-stream failure. The idle timeout runs from each content frame to the next one or
        to ``[DONE]``: nothing else the upstream sends (comments, blank lines, frames without
        a token, bytes that complete no event) holds the stream open past it. A client that
        leaves is noticed at once: the upstream request is closed and the route abandoned
        (499, the breaker not charged)."""
        first = self.clock()
        response = await self._stream_response(request, route, attempts)
        await response.write(head)
        protocol: Any = request.protocol
        idle = self.scenario.gateway.stream_idle_timeout
        due = first + idle  # the next token, or the end
        failed = tally.error
        stalled = False
        while not (tally.done or failed):
            read = asyncio.ensure_future(answer.content.readany())
            try:
                ready = await protocol.pause(due - self.clock(), read)  # ConnectionError: the client left
            except BaseException:
                read.cancel()
                answer.close()
                raise
            if not ready:
                read.cancel()
                failed, stalled = f"no token within {idle:g} s", True
                break
            before = tally.counted
            try:
                data = read.result()
                if not data:
                    raise InvalidAnswer("the upstream's stream ended without [DONE]")
                out = tally.take(frames.feed(data))
            except (aiohttp.ClientError, OSError, InvalidAnswer) as exc:
                failed = f"{type(exc).__name__}: {exc}"
                break
            if tally.counted > before:
                due = self.clock() + idle
            failed = tally.error
            if out:
                await response.write(out)  # ConnectionError: the client left
        if failed:
            log.debug("upstream %s: %s after the first token", route.upstream.name, failed)
            answer.close()
        outcome = Outcome.STREAM_ERROR if failed else Outcome.SUCCESS
        tokens = observe.counted(tally.tokens, chat.max_tokens)
        self._streamed(route, outcome, chat, arrived, start, first, tokens)
        waiting.end()  # the call has ended: writing its end is not cut off
        try:
            if failed:
                await response.write(_broken(route.upstream.name, tokens, idle if stalled else None))
            await response.write_eof()
        except ConnectionError:
            pass  # the client left as the stream ended: the outcome stands
        return response

    async def _models(self, request: web.BaseRequest) -> web.Response:
        models = [{"id": config.MODEL, "object": "model", "created": 0, "owned_by": "gwlab"}]
        return _json({"object": "list", "data": models})

    async def _healthz(self, request: web.BaseRequest) -> web.Response:
        return _json({"status": "ok"})

    # -- admin --------------------------------------------------------------------------

    def _authorize(self, request: web.BaseRequest) -> None:
        """401 unless ``request`` carries ``Authorization: Bearer <admin token>``; the
        scheme's case does not matter (RFC 9110, section 11.1)."""
        assert self.admin_token is not None
        scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        given = credentials.strip(" ").encode("utf-8", "surrogateescape")
        if not (hmac.compare_digest(given, self.admin_token.encode()) and scheme.lower() == "bearer"):
            raise ApiError(401, "admin routes need the header 'Authorization: Bearer <admin token>'",
                           "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def _get_config(self, request: web.BaseRequest) -> web.Response:
        return _json(config.shown(self.scenario.to_dict()))

    async def _patch_config(self, request: web.BaseRequest) -> web.Response:
        """Merge the body into the scenario: a JSON merge patch (RFC 7396), sent as
        ``application/merge-patch+json`` or ``application/json``; ``config.merge`` is that
        deep merge already, except that ``null`` (remove a field) is refused, as every field
        has a value."""
        _check_body_type(request, _MERGE_PATCH)
        patch = _parse_json(await _read_body(request, self.body_timeout))
        source = "PATCH /admin/config"
        try:
            if self.fan_out is None:
                scenario = self._configure(patch, source)
            else:
                scenario = await self.fan_out("configure", patch)
        except ConfigError as exc:
            raise ApiError(400, str(exc), "invalid_config") from None
        return _json(config.shown(scenario.to_dict()))

    async def _reset(self, request: web.BaseRequest) -> web.Response:
        if self.fan_out is None:
            self.router.reset(self.clock())
        else:
            await self.fan_out("reset", None)
        return _json(self._state())

    # -- the metrics server -------------------------------------------------------------

    def _metrics_server(self) -> GatewayServer:
        """The metrics server: ``GET /metrics`` and a page linking it at ``/``, in a server
        with the gateway's bounds on what a client can hold, but its own cap on connections,
        :data:`~gwlab.config.METRICS_MAX_CONNECTIONS`, and answers counted nowhere."""
        # prometheus_client's handler: the text format or OpenMetrics as the scraper's Accept
        # asks, gzip when its Accept-Encoding allows, ``name[]`` to restrict the families.
        handlers: dict[str, _Handler] = {"/metrics": make_aiohttp_handler(self.metrics.registry), "/": self._index}
        loop = asyncio.get_running_loop()

        async def serve(request: web.BaseRequest) -> web.StreamResponse:
            handler = handlers.get(request.path)
            if handler is None:
                error = ApiError(404, f"unknown path {request.path!r}; see GET /metrics", "unknown_url")
            elif request.method not in ("GET", "HEAD"):
                error = ApiError(405, f"method {request.method} is not allowed on {request.path!r}; allowed: GET, HEAD",
                                 "method_not_allowed", headers={"Allow": "GET, HEAD"})
            else:
                return await handler(request)
            return answer(error)

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, loop)

        return GatewayServer(serve, make_request, max_connections=config.METRICS_MAX_CONNECTIONS,
                             keepalive_timeout=self.keepalive_timeout, header_timeout=self.header_timeout,
                             send_timeout=self.send_timeout, refused=_uncounted)

    async def _index(self, request: web.BaseRequest) -> web.Response:
        return web.Response(text=_INDEX, content_type="text/html")


_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>gwlab metrics</title></head>
<body><h1>gwlab metrics</h1>
<p>The gateway's Prometheus metrics are at <a href="/metrics">/metrics</a>.</p>
</body></html>
"""


def _uncounted(status: int) -> None:
    """What the metrics server does with its own errors' statuses: they are no gateway answers."""


async def _expect(request: web.BaseRequest) -> None:
    """Answer an ``Expect`` header as aiohttp's application router does: ``100 Continue``
    (curl asks for it before sending a body over 1 KiB, and would otherwise wait a second),
    417 for any other expectation, and 413 at once for a declared body over MAX_BODY, which
    the client then need not send."""
    expect = request.headers[hdrs.EXPECT]
    if request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise ApiError(417, f"unknown Expect header {expect!r}; only 100-continue is supported",
                       "expectation_failed")
    if (request.content_length or 0) > config.MAX_BODY:
        raise _too_large()
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response's size


def _admission(scenario: Scenario, clock: Callable[[], float]) -> Any:
    """The shared admission of ``limiter.backend = "redis"`` (:mod:`gwlab.redis_bucket`,
    which needs the ``redis`` extra), or ``None`` for the router's own buckets."""
    if scenario.limiter.backend != "redis":
        return None
    from gwlab.redis_bucket import RedisAdmission

    return RedisAdmission(scenario.limiter, clock)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _json(data: Any) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type=_JSON, headers=_NONE_HEADERS)


# -- reading a request ---------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""Strict JSON, made once: ``json.loads`` with an argument builds a new decoder per call."""
_SCAN = _DECODER.scan_once
"""The decoder's scanner (C), which its ``decode`` calls between two Python frames and two
matches of a whitespace pattern: given the text and an index, the value found there and the
index after it; ``StopIteration`` if no value begins there."""


def _too_large() -> ApiError:
    return ApiError(413, f"request body is larger than {config.MAX_BODY} bytes", "request_too_large")


async def _read_body(request: web.BaseRequest, timeout: float) -> bytes:
    """The request body. A request has nearly always arrived whole by the time it is
    handled; its body is then taken from aiohttp's buffer in one step, where
    ``BaseRequest.read`` would gather it in two awaited reads (the saving is in
    ``benchmarks/README.md``). A body still arriving, or larger than MAX_BODY, goes
    through ``BaseRequest.read``, which waits for it and answers 413 past MAX_BODY (the same
    bound: at most MAX_BODY bytes are accepted either way), within ``timeout`` seconds (408
    after). A body aiohttp cannot decode (a bad chunk, ``Content-Encoding`` that is not what
    it says) is a 400. After a 408 or 400 the connection reads nothing more and closes."""
    content = request.content
    try:
        if content.is_eof() and content.total_bytes <= config.MAX_BODY:
            return content.read_nowait()
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        error = ApiError(408, f"the request body did not arrive within {timeout:g} s", "request_timeout")
    except web.RequestPayloadError as exc:
        reason = parse_error_reason(exc)
        error = ApiError(400, f"request body could not be read: {reason}", "invalid_request_body")
    _stop_reading(request)
    raise error


def _stop_reading(request: web.BaseRequest) -> None:
    """Read nothing more from ``request``'s connection: it closes once answered, without
    waiting for the rest of a body (aiohttp would read and drop it for up to 10 s)."""
    request.protocol.close()
    request.content.feed_eof()


def _check_body_type(request: web.BaseRequest, also: str | None = None) -> None:
    """415 unless the request says its body is JSON (or of the media type ``also``), in a
    content coding the gateway decodes or in none: a body in another one would be read as
    it is, as if it were JSON."""
    headers = request.headers
    given = headers.get(hdrs.CONTENT_TYPE)
    if given != _JSON and request.content_type not in (_JSON, also):  # the exact header needs no parsing
        shown = f"got {given!r}" if given else "got no Content-Type"
        allowed = _JSON if also is None else f"{_JSON} or {also}"
        raise ApiError(415, f"Content-Type must be {allowed}; {shown}", "unsupported_media_type")
    if hdrs.CONTENT_ENCODING in headers:  # nearly every body has none: no list made
        codings = headers.getall(hdrs.CONTENT_ENCODING)
        if len(codings) > 1 or codings[0].lower() not in _CODINGS:
            raise coding_error(", ".join(codings))  # several lines are one list (RFC 9110 §5.3)


def _parse_json(raw: bytes) -> Any:
    """``raw`` as strict JSON (no NaN or Infinity), in any of the encodings JSON allows; 400
    otherwise."""
    try:
        # A body that opens with "{" and a byte other than NUL is UTF-8 by json.detect_encoding's
        # own rules (no byte order mark begins with "{"; UTF-16 and UTF-32 put a NUL beside it).
        # One that also ends with "}", nearly every body, is an object with no space around it,
        # given by the scanner at once (its bytes indexed, not sliced: no slice objects).
        if len(raw) > 1 and raw[0] == 0x7B and raw[1] and raw[-1] == 0x7D:
            text = raw.decode("utf-8", "surrogatepass")
            try:
                parsed, end = _SCAN(text, 0)
            except StopIteration:  # a value missing inside: decode says where
                pass
            else:
                if end == len(text):
                    return parsed
        else:
            text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        return _DECODER.decode(text)
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON: nested too deeply", "invalid_json") from None
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None


_ROUTE_KINDS = {(False, False): "weighted", (True, False): "fallback", (False, True): "panic"}
"""``x-gwlab-route`` by a route's (``fallback``, ``panic``)."""


def _attempted(headers: CIMultiDict, attempts: Attempts) -> CIMultiDict:
    """A copy of ``headers`` (which say one attempt) saying how many attempts a request the
    gateway may retry made."""
    copy = CIMultiDict(headers)
    copy[ATTEMPTS_HEADER] = str(attempts.made)
    return copy


_STOPPED = error_frame(503, "the gateway stopped before the stream ended", "gateway_stopped")
"""The error frame of a stream cut off by a stop that ran out of grace."""


def _broken(provider: str, tokens: int, idle: float | None = None) -> bytes:
    """The error frame of a stream whose provider failed after ``tokens`` tokens; ``idle``:
    the ``gateway.stream_idle_timeout`` in seconds that ran out, when that was the failure."""
    reason = f": no token within gateway.stream_idle_timeout = {idle:g} s" if idle is not None else ""
    return error_frame(502, f"provider {provider} failed after {tokens} token{'' if tokens == 1 else 's'}{reason}",
                       "provider_stream_error")


class _Tally:
    """What a real upstream's stream has given so far: its frames' tokens (its usage frame's
    count when it sends one, else one per content frame), whether it has ended (``done``),
    and why it failed, at an error frame or an invalid one (``error``; "": it has not)."""

    __slots__ = ("counted", "usage", "done", "error")

    def __init__(self) -> None:
        self.counted = 0
        self.usage: int | None = None
        self.done = False
        self.error = ""

    @property
    def tokens(self) -> int:
        return self.counted if self.usage is None else self.usage

    def take(self, frames: list[Frame]) -> bytes:
        """The bytes of ``frames`` to pass on, counted, up to the end or a frame that fails
        the stream (neither passed on: the end is the stream's, a failure becomes the
        gateway's)."""
        out = []
        for frame in frames:
            if frame.error:
                self.error = frame.error
                break
            out.append(frame.raw)
            self.counted += frame.content
            if frame.usage is not None:
                self.usage = frame.usage
            if frame.done:
                self.done = True
                break
        return b"".join(out)


async def _first_token(answer: aiohttp.ClientResponse, frames: Frames, tally: _Tally) -> bytes:
    """The frames of a stream up to its first content frame, or its end when it has none;
    :class:`InvalidAnswer` for an error frame or an invalid one before it, or a stream that
    ends without ``[DONE]`` (a failure before the first byte: an ordinary 502). Bounded by
    the caller's deadline, which nothing but a content frame or the end stops, and in size:
    frames without content past ``frames.limit`` bytes in all are an :class:`InvalidAnswer`
    too (they are held until the first token)."""
    head = []
    size = 0
    while True:
        data = await answer.content.readany()
        if not data:
            raise InvalidAnswer("the upstream's stream ended before its first token")
        pieces = frames.feed(data)
        before = tally.counted
        for i, frame in enumerate(pieces):
            head.append(tally.take([frame]))
            size += len(head[-1])
            if size > frames.limit:
                raise InvalidAnswer(f"the upstream's stream sent over {frames.limit} bytes before its first token")
            if tally.error:
                raise InvalidAnswer(f"{tally.error} before its first token")
            if tally.counted > before or tally.done:
                rest = tally.take(pieces[i + 1:])  # frames that came in the same read
                return b"".join(head) + rest


class _OtherVersion(web.BaseRequest):
    """A request in an HTTP version the gateway does not speak (aiohttp's parser reads
    ``HTTP/2.0`` and ``HTTP/0.9`` too), ``asked`` (e.g. ``"2.0"``): it reads as HTTP/1.1 and
    closes its connection, so that its 505 answers in HTTP/1.1 (RFC 9110 §6.2). A class of
    its own, so that telling it apart costs other requests nothing more than a comparison."""

    def __init__(self, message: Any, *args: Any) -> None:
        super().__init__(message._replace(version=HttpVersion11, should_close=True), *args,
                         client_max_size=config.MAX_BODY)
        self._asked = message.version

    @property
    def asked(self) -> str:
        return f"{self._asked.major}.{self._asked.minor}"


class _Waiting:
    """A handler waiting on its provider call (for a slot, for the call, for a stream's
    tokens), or with no call (``route`` ``None``) for its next attempt, as a ``with`` block: a
    stop that runs out of grace cuts it off (cancels it), and any exception out of the wait
    (its client gone, the cut-off) abandons the call and counts it 499 before it propagates
    (under provider ``none`` between attempts). Once the gateway cuts off
    (:meth:`Gateway.cut_off_after`), a wait ends at the cut-off's time at the latest."""

    __slots__ = ("gateway", "route", "task", "timer")

    def __init__(self, gateway: Gateway, route: Route | None) -> None:
        self.gateway = gateway
        self.route = route
        self.task = asyncio.current_task()
        self.timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> _Waiting:
        gateway = self.gateway
        gateway._waiting.add(self)
        if gateway._cut_at is not None:
            self.cut_at(gateway._cut_at)
        return self

    def cut_at(self, when: float) -> None:
        """Cut this wait off at ``when`` (the loop's clock; at once if it has passed)."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_at(when, self._cut)

    def _cut(self) -> None:
        self.gateway._cut_offs += 1
        self.task.cancel()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> bool:
        gateway = self.gateway
        if self not in gateway._waiting:  # left already, its call counted (end)
            return False
        try:
            if kind is not None and self.route is None:
                gateway.metrics.gone()
            elif kind is not None:
                gateway.router.abandon(self.route, gateway.clock())
                gateway.metrics.cut_off(self.route)
        finally:  # whatever the counting raises, a cut-off does not wait for this wait for ever
            self.end()
        return False

    def end(self) -> None:
        """Leave the gateway's waits: at the block's end, or earlier once the call ended and
        was counted within it (a relayed stream's last token came), so that what follows, the
        answer's last writes to a client that may read slowly, is no wait on the provider,
        and neither cut off nor counted again."""
        gateway = self.gateway
        if self.timer is not None:
            self.timer.cancel()
        gateway._waiting.discard(self)
        if gateway._idle is not None and not gateway._waiting:
            gateway._idle.set()
            gateway._idle = None
