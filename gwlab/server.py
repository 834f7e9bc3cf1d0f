"""The gateway as a real HTTP server: an aiohttp shell around one :class:`Router`.

Two servers run on one asyncio loop: the OpenAI-compatible gateway (``POST
/v1/chat/completions``, port 8080 by default) and the Prometheus metrics server (``GET
/metrics``, port 9090). A chat completion request is validated first, so a bad one costs no
token; then the router decides (429, or a provider call decided in advance), the shell
sleeps for the call's duration and reports its end to the router at the gateway clock's
``now``. All policy lives in the router; this module only carries its decisions out, speaks
HTTP and counts.

:class:`Gateway` also offers the runtime controls the notebooks and the admin routes use
(:meth:`Gateway.configure`, :meth:`Gateway.reset`, :meth:`Gateway.snapshot`). They may be
called from any thread: when the gateway's loop runs in another thread, the call is carried
out on that loop and waited for.

Admin routes (``GET``/``PATCH /admin/config``, ``POST /admin/reset``) are served only when the
gateway is bound to a loopback address, unless an admin token is given; with a token they
require ``Authorization: Bearer TOKEN`` on any address.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hmac
import ipaddress
import itertools
import json
import logging
import os
import time
from typing import Any, Awaitable, Callable, Mapping, TypeVar

from aiohttp import HttpVersion11, hdrs, web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gwlab import config
from gwlab.breaker import State, Transition
from gwlab.config import ConfigError, Scenario
from gwlab.errors import NO_PROVIDER, PROVIDER_HEADER, ROUTE_HEADER, ApiError, error_response
from gwlab.limiter import retry_after_header, retry_after_ms_header
from gwlab.metrics import Metrics
from gwlab.router import Rejected, Route, Router, Snapshot

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_JSON = "application/json"
_NONE_HEADERS = {PROVIDER_HEADER: NO_PROVIDER}
_CLOSED_STATES = {State.HEALTHY, State.FAILING}


class PortInUse(OSError):
    """A port the gateway should listen on is taken by another socket."""

    def __init__(self, port: int, host: str) -> None:
        super().__init__(f"port {port} is already in use on {host}")
        self.errno = errno.EADDRINUSE
        self.port = port
        self.host = host


def log_transition(event: Transition) -> None:
    """Breaker listener: openings and recoveries at INFO, HEALTHY <-> FAILING at DEBUG."""
    level = logging.DEBUG if {event.source, event.target} <= _CLOSED_STATES else logging.INFO
    cooldown = f" (cooldown {event.cooldown:g} s)" if event.target is State.OPEN else ""
    log.log(level, "breaker %s: %s -> %s%s", event.provider, event.source.value, event.target.value, cooldown)


class Gateway:
    """Gateway HTTP server and metrics HTTP server around one Router, on one asyncio loop.

    ``clock`` gives the ``now`` of every decision (monotonic seconds); tests inject a fake one.
    After :meth:`start`, ``url`` and ``metrics_url`` say where to connect and ``port`` and
    ``metrics_port`` are the ports actually bound (the last ones bound, after a failed start).
    A ``scenario`` holding a value out of its range raises :class:`ConfigError`.
    """

    def __init__(self, scenario: Scenario, seed: int = config.SEED, *,
                 admin_token: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        config.check(scenario, "Gateway(scenario=...)")
        self.clock = clock
        self.seed = seed
        self.admin_token = admin_token
        self.router = Router(scenario, seed, clock())
        self.router.subscribe(log_transition)
        self.metrics = Metrics(self.router, clock)
        self.url = ""
        self.metrics_url = ""
        self.port = 0
        self.metrics_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runners: tuple[web.BaseRunner, web.AppRunner] | None = None
        self._handlers: dict[str, dict[str, _Handler]] = {}
        """Handlers by path, then method (set when the gateway starts)."""
        self._waiting: set[asyncio.Task] = set()
        """Handler tasks sleeping through a provider call (cut off if a stop runs out of time)."""
        self._idle: asyncio.Event | None = None
        self._stopping = False
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex().encode()
        self._replies = {u.name: _reply(u.name) for u in self.router.upstreams}
        self._route_headers = {  # case-insensitive dicts already: aiohttp copies them fastest
            (u.name, fallback): CIMultiDict({hdrs.CONTENT_TYPE: _JSON, PROVIDER_HEADER: u.name,
                                             ROUTE_HEADER: "fallback" if fallback else "weighted"})
            for u in self.router.upstreams for fallback in (False, True)
        }

    @property
    def scenario(self) -> Scenario:
        """The scenario in force (changed by :meth:`configure`)."""
        return self.router.scenario

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, host: str = config.HOST, port: int = config.PORT,
                    metrics_port: int = config.METRICS_PORT) -> None:
        """Listen on ``host``: the gateway on ``port``, metrics on ``metrics_port`` (0 picks a
        free port). Does nothing if already started. Raises :class:`PortInUse` with nothing
        left bound."""
        if self._runners is not None:
            return
        self._loop = asyncio.get_running_loop()
        admin = self.admin_token is not None or _is_loopback(host)
        gateway = web.ServerRunner(self._gateway_server(admin), access_log=None, shutdown_timeout=config.STOP_GRACE)
        metrics = web.AppRunner(self._metrics_app(), access_log=None)
        self.port = await _listen(gateway, host, port)
        try:
            self.metrics_port = await _listen(metrics, host, metrics_port)
        except BaseException:
            await gateway.cleanup()
            raise
        self._runners = (gateway, metrics)
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
        gateway, metrics = self._runners
        self._runners = None
        self._stopping = True
        try:
            for site in list(gateway.sites):
                await site.stop()
            if self._waiting:
                self._idle = asyncio.Event()
                try:
                    await asyncio.wait_for(self._idle.wait(), grace)
                except TimeoutError:
                    log.info("cutting off %d requests still in flight", len(self._waiting))
                    for task in self._waiting:
                        task.cancel()
                    await self._idle.wait()
            await gateway.cleanup()
            await metrics.cleanup()
        finally:
            self._idle = None
            self._stopping = False

    # -- runtime controls (any thread) --------------------------------------------------

    def configure(self, patch: Mapping[str, Any], source: str = "Gateway.configure") -> Scenario:
        """Merge ``patch`` into the scenario (validated like a scenario file; raises
        :class:`ConfigError` naming ``source``) and apply it from now on. Returns the new
        scenario."""
        return self._on_loop(self._configure, patch, source)

    def reset(self) -> None:
        """A full bucket and healthy breakers with no history."""
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
            routes["/admin/config"] = {"GET": self._admin(self._get_config), "PATCH": self._admin(self._patch_config)}
            routes["/admin/reset"] = {"POST": self._admin(self._reset)}
        for methods in routes.values():
            if "GET" in methods:
                methods["HEAD"] = methods["GET"]
        return routes

    def _gateway_server(self, admin: bool) -> web.Server:
        """aiohttp's low-level server with :meth:`_serve` as its one handler.

        No application router, middleware chain or signals stand between the socket and the
        handler: with a fixed handful of paths, one dictionary lookup routes a request, and
        one ``try`` answers every error. The same handler served this way costs less CPU per
        request than behind an ``Application`` (the ``_low_level`` rows of
        ``benchmarks/README.md``)."""
        self._handlers = self._routes(admin)
        loop = asyncio.get_running_loop()

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=config.MAX_BODY)

        return web.Server(self._serve, request_factory=make_request)

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route ``request`` by path and method; every 4xx/5xx as an OpenAI-style JSON error,
        counted; never a traceback."""
        try:
            methods = self._handlers.get(request.path)
            if methods is None:
                raise ApiError(404, f"unknown path {request.path!r}; see GET /v1/models and POST /v1/chat/completions",
                               "unknown_url")
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(methods)
                raise ApiError(405, f"method {request.method} is not allowed on {request.path!r}; allowed: {allowed}",
                               "method_not_allowed", headers={"Allow": allowed})
            if hdrs.EXPECT in request.headers:
                await _expect(request)
            return await handler(request)
        except ApiError as exc:
            error = exc
        except web.HTTPRequestEntityTooLarge:  # raised by request.read() past MAX_BODY
            error = ApiError(413, f"request body is larger than {config.MAX_BODY} bytes", "request_too_large")
        except ConnectionResetError:
            raise  # the client went away mid-request: there is nobody to answer
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            error = ApiError(500, "internal error in the gateway; see its log", "internal_error")
        self.metrics.refused(error.status)
        return error.response()

    async def _chat(self, request: web.BaseRequest) -> web.Response:
        arrived = self.clock()
        _check_json_content_type(request)
        model, prompt_tokens = _chat_request(_parse_json(await _read_body(request)))
        if self._stopping:
            raise ApiError(503, "the gateway is shutting down", "shutting_down")
        now = self.clock()
        decision = self.router.handle(now)
        if type(decision) is Rejected:
            return self._reject(decision, arrived)
        route: Route = decision  # type: ignore[assignment]
        self.metrics.routed(route)
        if route.call.duration > 0:  # a call that takes no time ends at once: no trip through the loop
            task = asyncio.current_task()
            self._waiting.add(task)
            try:
                await asyncio.sleep(route.call.duration)
            except BaseException:
                self.router.abandon(route)
                self.metrics.cut_off(route)
                raise
            finally:
                self._waiting.discard(task)
                if self._idle is not None and not self._waiting:
                    self._idle.set()
        ended = self.clock()
        status = self.router.complete(route, ended)
        self.metrics.completed(route, ended - arrived, ended - now)
        name = route.upstream.name
        headers = self._route_headers[name, route.fallback]
        if status == 200:
            return web.Response(body=self._completion(model, name, prompt_tokens), headers=headers)
        if status == 504:
            message = f"provider {name} did not answer within {route.call.duration:g} s"
            return error_response(504, message, "provider_timeout", headers=headers)
        return error_response(502, f"provider {name} failed", "provider_error", headers=headers)

    def _reject(self, rejected: Rejected, arrived: float) -> web.Response:
        wait = rejected.retry_after
        bucket = self.router.bucket
        headers = {
            PROVIDER_HEADER: NO_PROVIDER,
            "Retry-After": retry_after_header(wait),
            "retry-after-ms": retry_after_ms_header(rejected.retry_after_us),
        }
        message = (f"rate limit exceeded: the gateway admits {bucket.rate:g} requests/s with bursts of "
                   f"{bucket.burst:g}; retry in {wait:.3f} s")
        self.metrics.rejected(self.clock() - arrived)
        return error_response(429, message, "rate_limit_exceeded", headers=headers)

    def _completion(self, model: str, provider: str, prompt_tokens: int) -> bytes:
        content, completion_tokens = self._replies[provider]
        return _COMPLETION % (self._id_prefix, next(self._ids), int(time.time()), _json_string(model), content,
                              prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)

    async def _models(self, request: web.BaseRequest) -> web.Response:
        models = [{"id": config.MODEL, "object": "model", "created": 0, "owned_by": "gwlab"}]
        return _json({"object": "list", "data": models})

    async def _healthz(self, request: web.BaseRequest) -> web.Response:
        return _json({"status": "ok"})

    # -- admin --------------------------------------------------------------------------

    def _admin(self, handler: _Handler) -> _Handler:
        """``handler`` behind the admin token, if there is one."""
        token = self.admin_token
        if token is None:
            return handler
        expected = f"Bearer {token}".encode()

        async def guarded(request: web.BaseRequest) -> web.StreamResponse:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                raise ApiError(401, "admin routes need the header 'Authorization: Bearer <admin token>'",
                               "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            return await handler(request)

        return guarded

    async def _get_config(self, request: web.BaseRequest) -> web.Response:
        return _json(self.scenario.to_dict())

    async def _patch_config(self, request: web.BaseRequest) -> web.Response:
        patch = await _read_json(request)
        try:
            scenario = self._configure(patch, "PATCH /admin/config")
        except ConfigError as exc:
            raise ApiError(400, str(exc), "invalid_config") from None
        return _json(scenario.to_dict())

    async def _reset(self, request: web.BaseRequest) -> web.Response:
        self.router.reset(self.clock())
        return _json(self._state())

    # -- the metrics app ----------------------------------------------------------------

    def _metrics_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/", self._index)
        return app

    async def _scrape(self, request: web.BaseRequest) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _index(self, request: web.BaseRequest) -> web.Response:
        return web.Response(text=_INDEX, content_type="text/html")


_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>gwlab metrics</title></head>
<body><h1>gwlab metrics</h1>
<p>The gateway's Prometheus metrics are at <a href="/metrics">/metrics</a>.</p>
</body></html>
"""


async def _listen(runner: web.BaseRunner, host: str, port: int) -> int:
    """Serve ``runner`` on ``host:port``; the port actually bound. On failure nothing of
    ``runner`` is left open."""
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException as exc:
        await runner.cleanup()
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise PortInUse(port, host) from None
        raise
    return site.port


async def _expect(request: web.BaseRequest) -> None:
    """Answer an ``Expect`` header as aiohttp's application router does: ``100 Continue``
    (curl asks for it before sending a body over 1 KiB, and would otherwise wait a second),
    417 for any other expectation."""
    expect = request.headers[hdrs.EXPECT]
    if request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise ApiError(417, f"unknown Expect header {expect!r}; only 100-continue is supported",
                       "expectation_failed")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response's size


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


@functools.lru_cache(maxsize=64)
def _json_string(text: str) -> bytes:
    """``text`` as an encoded JSON string. Cached: clients name the same few models again
    and again."""
    return json.dumps(text).encode()


def _reply(provider: str) -> tuple[bytes, int]:
    """The simulated assistant message of ``provider`` as an encoded JSON string, and its
    length in (word) tokens."""
    text = f"This is a simulated answer from gwlab provider {provider}."
    return _json_string(text), len(text.split())


_COMPLETION = (
    b'{"id": "chatcmpl-%s%08x", "object": "chat.completion", "created": %d, "model": %s, '
    b'"choices": [{"index": 0, "message": {"role": "assistant", "content": %s}, "logprobs": null, '
    b'"finish_reason": "stop"}], '
    b'"usage": {"prompt_tokens": %d, "completion_tokens": %d, "total_tokens": %d}}'
)
"""A chat.completion body exactly as ``json.dumps`` writes it, filled in per answer (the
id, the time, the model and message as encoded JSON strings, the token counts): formatting
one byte string costs a fraction of serialising the nested dict each time."""


# -- request validation ---------------------------------------------------------------------


MAX_MODEL_LENGTH = 256
"""The longest model name accepted (model names are a few dozen characters). It bounds the
memory held by the cache of :func:`_json_string`."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""Strict JSON, made once: ``json.loads`` with an argument builds a new decoder per call."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, list):
        return "an empty array" if not value else "an array"
    return "an object"


async def _read_json(request: web.BaseRequest) -> Any:
    """The request body as strict JSON (no NaN or Infinity); 415/413/400 otherwise."""
    _check_json_content_type(request)
    return _parse_json(await _read_body(request))


async def _read_body(request: web.BaseRequest) -> bytes:
    """The request body. A request has nearly always arrived whole by the time it is
    handled; its body is then taken from aiohttp's buffer in one step, where
    ``BaseRequest.read`` would gather it in two awaited reads (the saving is in
    ``benchmarks/README.md``). A body still arriving, or larger than MAX_BODY, goes
    through ``BaseRequest.read``, which waits for it and answers 413 past MAX_BODY (the same
    bound: at most MAX_BODY bytes are accepted either way)."""
    content = request.content
    if content.is_eof() and content.total_bytes <= config.MAX_BODY:
        return content.read_nowait()
    return await request.read()


def _check_json_content_type(request: web.BaseRequest) -> None:
    """415 unless the request says its body is JSON."""
    given = request.headers.get(hdrs.CONTENT_TYPE)
    if given != _JSON and request.content_type != _JSON:  # the exact header needs no parsing
        shown = f"got {given!r}" if given else "got no Content-Type"
        raise ApiError(415, f"Content-Type must be {_JSON}; {shown}", "unsupported_media_type")


def _parse_json(raw: bytes) -> Any:
    """``raw`` as strict JSON (no NaN or Infinity), in any of the encodings JSON allows; 400
    otherwise."""
    try:
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON: nested too deeply", "invalid_json") from None
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None


def _chat_request(body: Any) -> tuple[str, int]:
    """Validate a chat completion request; its model and an estimate of its prompt tokens
    (about four characters each)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, got {_kind(body)}", "invalid_request_body")
    if "model" not in body:
        raise ApiError(400, "'model' is required", "missing_required_parameter", "model")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise ApiError(400, f"'model' must be a non-empty string, got {_kind(model)}", "invalid_type", "model")
    if len(model) > MAX_MODEL_LENGTH:
        raise ApiError(400, f"'model' must be at most {MAX_MODEL_LENGTH} characters long, got {len(model)}",
                       "invalid_value", "model")
    if "messages" not in body:
        raise ApiError(400, "'messages' is required", "missing_required_parameter", "messages")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"'messages' must be a non-empty array of message objects, got {_kind(messages)}",
                       "invalid_type", "messages")
    chars = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(400, f"'messages[{i}]' must be an object, got {_kind(message)}", "invalid_type",
                           f"messages[{i}]")
        if not isinstance(message.get("role"), str):
            raise ApiError(400, f"'messages[{i}].role' must be a string, got {_kind(message.get('role'))}",
                           "invalid_type", f"messages[{i}].role")
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        elif content is not None:
            raise ApiError(400, f"'messages[{i}].content' must be a string, an array or null, got {_kind(content)}",
                           "invalid_type", f"messages[{i}].content")
    stream = body.get("stream")
    if stream is True:
        raise ApiError(400, "streaming is not supported yet; leave 'stream' out or set it to false",
                       "unsupported_parameter", "stream")
    if stream is not None and stream is not False:
        raise ApiError(400, f"'stream' must be true or false, got {_kind(stream)}", "invalid_type", "stream")
    return model, (chars + 3) // 4 or 1  # ceil(chars / 4), at least 1: integer arithmetic is cheaper
