"""HTTP clients of the gateway following a workload, in the current asyncio loop.

One :class:`Driver` carries the client behaviour of every real-time shell: the command
line's load generator runs one in each worker process (:mod:`gwlab.loadgen`), the notebook
lab runs one in its loop thread (:mod:`gwlab.lab.clients`). It sends chat completions to
:data:`PATH` and behaves as :mod:`gwlab.workload` says:

- closed loop: each client sends a request, awaits the answer, pauses for
  :func:`~gwlab.workload.pause_after` and sends again;
- open loop: requests arrive as a Poisson process (:func:`~gwlab.workload.next_arrival`,
  from one named random stream) whatever happens to earlier ones; each request runs as its
  own task and its latency counts from its *scheduled* send time, so a late send or a stall
  shows in the latency instead of silently lowering the offered rate (no coordinated
  omission). What the driver holds is capped: an arrival that finds the workload's
  ``max_in_flight`` requests outstanding is not sent and is reported as saturated (k6's
  dropped iterations), so a gateway that cannot keep up costs a bounded number of sockets,
  and the arrivals it could not take are counted instead of piling up.

LLM traffic, as the simulator sends it: each request sent streams (``stream: true``) with
the probability ``workload.stream_share``, drawn once per request sent from a named random
stream of the seed when the share is strictly between 0 and 1 (0 and 1 draw nothing), and
asks for at most ``workload.max_tokens`` output tokens when that is not 0; its prompt holds
``workload.prompt_tokens`` tokens by the gateway's estimate (:func:`prompt`). Without a stream
or a cap, and with the default prompt, every request is :data:`BODY`, byte for byte. A stream is read frame by frame
(:func:`read_stream`): its time to first token counts from the request's scheduled send
time, as its latency does, and its output tokens come from the usage frame it is asked to
end with (``stream_options.include_usage``).

The workload may change while the clients run (:meth:`Driver.apply`). An open loop redraws
its next arrival from the moment of the change (Poisson arrivals are memoryless); a closed
loop starts the clients it lacks at once and retires the ones it has too many of as they
finish their request (and pause); a switch between the two modes does both. A request keeps
what it was sent with.

Clients that time out or retry, as the simulator's (:func:`~gwlab.workload.follows_users`;
DESIGN, "Retries and fallbacks"): each request above is then a *user request*, one task
that sends its *attempts* one after another. With ``workload.timeout`` > 0 a client gives an
attempt up that many seconds after sending it, closes its connection and sees
:data:`~gwlab.stats.CLIENT_TIMEOUT` (the gateway serves the attempt on, and counts a 499
when it writes the answer to no one). After an attempt that did not succeed,
:class:`~gwlab.workload.ClientRetry` (its jitter from the random stream ``retries``) says
how long to wait before the next one, honouring the server's ``retry-after-ms``, or that the
user request ends. With ``retry_policy = "adaptive"`` every attempt first asks the driver's
:class:`~gwlab.retry.AdaptiveThrottle` (its draws from the stream ``throttle``), which every
attempt sent informs as it ends (a success or not, a client timeout being not); one it
rejects is never sent and ends its user request. A retry keeps its user request's body and
whether it streams; the open loop's cap counts user requests, each holding at most one
connection; a closed-loop client pauses after its whole user request, for
:func:`~gwlab.workload.pause_after` of the last attempt, or ``max(think_time,
retry_delay)`` after a local rejection.

What the driver sees it reports through callbacks and nothing else, so that each shell
keeps its own books (:func:`book` counts an answer in a tally, :func:`book_user` a user
request): ``on_sent()`` as a request (an attempt) starts, ``on_answer(scheduled, done,
status, provider, ttft, tokens)`` as its answer arrives (see :data:`OnAnswer`),
``on_saturated()`` for an arrival not sent because the cap was full, and, only for clients
that time out or retry, ``on_user(outcome, attempts)`` as a user request ends (see
:data:`OnUser`). A request still unanswered when :meth:`Driver.stop` runs out of grace gets
no answer: the stop returns how many there were, each a :data:`~gwlab.stats.CUT_OFF` (499)
for the caller; the user requests still going then end ``"cut_off"``. An attempt whose
connection is lost once the stop has begun was cut off by its gateway
(:meth:`~gwlab.server.Gateway.cut_off_after`), and is reported as a CUT_OFF as it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, AsyncIterable, Callable, Protocol

from gwlab.needs import needs

needs("gwlab.clients", ("aiohttp",))

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from gwlab import config
from gwlab.retry import AdaptiveThrottle
from gwlab.stats import CLIENT_TIMEOUT, CUT_OFF, NO_PROVIDER, STREAM_ERROR, TRANSPORT_ERROR, Tally
from gwlab.streams import stream
from gwlab.workload import ClientRetry, follows_users, next_arrival, pause_after

log = logging.getLogger(__name__)

PROVIDER_HEADER = "x-gwlab-provider"
RETRY_AFTER_MS_HEADER = "retry-after-ms"
PATH = "/v1/chat/completions"


def prompt(tokens: int) -> str:
    """A prompt of ``tokens`` tokens by the gateway's estimate (one per four characters,
    rounded up: ``4 * tokens - 3`` characters): ``"Hello"`` for the default 2, cut short or
    padded with dots otherwise."""
    return ("Hello" + "." * (4 * tokens))[:4 * tokens - 3]


BODY = json.dumps({"model": config.MODEL, "messages": [{"role": "user", "content": prompt(config.PROMPT_TOKENS)}]}).encode()
"""The request of a workload without LLM traffic (no streams, no cap on tokens, the default prompt)."""
STREAMS = "workload/stream"
"""The random stream a driver draws whether a request streams from, unless told another
(the simulator's own name for it)."""
RETRIES = "workload/retry"
"""The random stream of the retries' jitter, unless told another (the simulator's name)."""
THROTTLE = "workload/throttle"
"""The random stream of adaptive throttling's draws, unless told another (the simulator's
name)."""
_HEADERS = {"Content-Type": "application/json"}
_UNBOUNDED = contextlib.nullcontext()
"""An attempt's wait without a client timeout: nothing set up on every attempt, where
``asyncio.timeout(None)`` would make and enter a timeout each time."""
_EVENT_STREAM = "text/event-stream"

OnAnswer = Callable[[float, float, int, str, float | None, int], None]
"""``on_answer(scheduled, done, status, provider, ttft, tokens)``: a request due at
``scheduled`` (or sent at that moment, if a loop's coarse timers sent it a little earlier)
got ``status`` from ``provider`` at ``done``, clock readings. ``ttft`` is a stream's time
to first token in seconds from ``scheduled``, for a stream that ended (200, or
:data:`~gwlab.stats.STREAM_ERROR`), else ``None``; ``tokens`` the output tokens the
answer carried (0 when not known; see :func:`read_stream`)."""
OnUser = Callable[[str, int], None]
"""``on_user(outcome, attempts)``: a user request ended ``outcome`` (one of
:data:`~gwlab.stats.USER_OUTCOMES`) after sending ``attempts`` attempts to the gateway (0
when its first was rejected locally)."""


class Workload(Protocol):
    """What a driver follows: a :class:`~gwlab.config.WorkloadConfig`, or one worker's
    share of it (:class:`gwlab.loadgen.WorkerPlan`)."""

    @property
    def mode(self) -> str: ...

    @property
    def clients(self) -> int: ...

    @property
    def rate(self) -> float: ...

    @property
    def think_time(self) -> float: ...

    @property
    def max_in_flight(self) -> int: ...

    @property
    def stream_share(self) -> float: ...

    @property
    def max_tokens(self) -> int: ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def retry_policy(self) -> str: ...

    @property
    def retries(self) -> int: ...

    @property
    def retry_delay(self) -> float: ...

    @property
    def retry_max_delay(self) -> float: ...

    @property
    def timeout(self) -> float: ...

    @property
    def adaptive_k(self) -> float: ...

    @property
    def adaptive_window(self) -> int: ...


def request_body(streaming: bool, max_tokens: int, prompt_tokens: int = config.PROMPT_TOKENS) -> bytes:
    """The chat completion request a driver sends, its prompt of ``prompt_tokens`` tokens:
    :data:`BODY` unless it streams, ``max_tokens`` > 0 caps its output or its prompt is not
    the default. A stream asks for the usage frame (``stream_options.include_usage``), the
    only count of its tokens."""
    if not streaming and not max_tokens and prompt_tokens == config.PROMPT_TOKENS:
        return BODY
    body: dict[str, Any] = {"model": config.MODEL, "messages": [{"role": "user", "content": prompt(prompt_tokens)}]}
    if max_tokens:
        body["max_tokens"] = max_tokens
    if streaming:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def book(tally: Tally, status: int, provider: str, latency: float, ttft: float | None, tokens: int) -> None:
    """Count in ``tally`` what :data:`OnAnswer` reports, as the simulator counts its
    answers: the status and latency, the output tokens, and a stream's timing."""
    tally.record(status, provider, latency)
    tally.output_tokens += tokens
    if ttft is not None:
        tally.record_stream(latency, ttft, tokens)


def book_user(tally: Tally, outcome: str, attempts: int) -> None:
    """Count in ``tally`` what :data:`OnUser` reports, as the simulator counts a user
    request: its outcome, and its attempts among ``"attempts"``."""
    tally.users[outcome] += 1
    tally.users["attempts"] += attempts


def open_session() -> aiohttp.ClientSession:
    """An HTTP session for a driver: no cap on connections (aiohttp's default of 100 would
    queue requests in the client and turn an open loop into a closed one; the driver's
    ``max_in_flight`` bounds them and counts what it cannot send) and no timeout of its own
    (the gateway's provider timeout decides, or the workload's client timeout, which the
    driver sets on each attempt)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 timeout=aiohttp.ClientTimeout(total=None))


async def read_stream(lines: AsyncIterable[bytes], clock: Callable[[], float]) -> tuple[int, float | None, int]:
    """Read a streamed answer (server-sent ``chat.completion.chunk`` frames, ``data:
    ...``, a line each) to its end. Returns its status, the ``clock`` reading at its first
    content frame (``None`` before one) and its output tokens:

    - 200, when ``data: [DONE]`` came; the tokens are the usage frame's
      ``completion_tokens`` (0 without one: content frames are no count of tokens, as a
      frame may group several);
    - :data:`~gwlab.stats.STREAM_ERROR` for a stream cut by an error frame (``data:
      {"error": ...}``); its tokens are not known and count 0 (the simulator counts those
      given before the failure);
    - :data:`~gwlab.stats.TRANSPORT_ERROR` for a stream that ended with neither (the
      connection dropped: aiohttp raises a ``ClientPayloadError`` from ``lines``, for the
      caller) or that cannot be read (a frame that is not a JSON object, or a line longer
      than aiohttp buffers: ``LineTooLong`` past twice the session's read buffer, 512 KiB
      with aiohttp's default ``read_bufsize``).

    After [DONE] the rest is read and ignored, so that the connection can serve another
    request; an error frame ends the reading (the server closes the connection after it, and
    so should the caller). A frame is parsed only when it can tell something: until the
    first content frame, then those that name an error or a usage count."""
    first: float | None = None
    tokens = 0
    status: int | None = None
    try:
        async for line in lines:
            if status is not None or not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                status = 200
                continue
            if first is not None and b'"error"' not in data and b'"completion_tokens"' not in data:
                continue  # one more content frame
            frame = json.loads(data)
            if not isinstance(frame, dict):
                raise TypeError(f"a frame of {type(frame).__name__}, not an object")
            if "error" in frame:
                return STREAM_ERROR, first, 0
            if first is None and _has_content(frame):
                first = clock()
            usage = frame.get("usage")
            if usage:
                tokens = int(usage["completion_tokens"])
    except (ValueError, TypeError, KeyError, AttributeError, HttpProcessingError) as exc:
        log.debug("unreadable stream: %r", exc)
        return TRANSPORT_ERROR, first, tokens
    return (TRANSPORT_ERROR if status is None else status), first, tokens


def _has_content(frame: dict[str, Any]) -> bool:
    """Whether a chunk carries content: a choice whose ``delta.content`` is not empty (the
    first frame's ``delta`` has only the role and an empty content)."""
    return any((choice.get("delta") or {}).get("content") for choice in frame.get("choices") or ())


def _completion_tokens(body: bytes) -> int:
    """The ``usage.completion_tokens`` of a completion's JSON body; 0 when it has none."""
    try:
        return int(json.loads(body)["usage"]["completion_tokens"])
    except (ValueError, TypeError, KeyError) as exc:
        log.debug("no usage in a completion: %r", exc)
        return 0


_REJECTED = (-1, 0.0, "throttled")
"""What a closed-loop client makes of a user request whose first attempt its adaptive
throttling rejected: no status, no retry-after, the outcome."""


class _User:
    """A user request in progress: its ``retry`` decisions (``None`` when its clients
    neither time out nor retry: it is not followed), whether it is ``streaming``, its
    ``body``, whether its answers are read for tokens (``llm``), the attempts it sent and
    whether one is ``sending``."""

    __slots__ = ("retry", "streaming", "body", "llm", "attempts", "sending")

    def __init__(self, retry: ClientRetry | None, streaming: bool, body: bytes, llm: bool) -> None:
        self.retry, self.streaming, self.body, self.llm = retry, streaming, body, llm
        self.attempts = 0
        self.sending = False


class Driver:
    """Clients of the gateway at ``url`` sending through ``session``; open-loop arrivals
    come from the stream ``arrivals`` of ``seed``, whether a request streams from its
    stream ``streams``, the retries' jitter from ``retries`` and adaptive throttling's draws
    from ``throttle``; times are readings of ``clock``. ``on_user`` hears the user requests
    of clients that time out or retry (nothing else calls it; ``None``: no one listens).

    The driver's clients share one :class:`~gwlab.retry.AdaptiveThrottle` (in the command
    line's load generator, the clients of one worker process): it sees every attempt they
    send, as the simulator's one throttle sees all of its clients'. Nothing is sent before
    the first :meth:`apply`. Call every method from the loop the driver runs in."""

    def __init__(self, session: aiohttp.ClientSession, url: str, seed: int, arrivals: str,
                 clock: Callable[[], float], on_sent: Callable[[], None], on_answer: OnAnswer,
                 on_saturated: Callable[[], None], *, streams: str = STREAMS, retries: str = RETRIES,
                 throttle: str = THROTTLE, on_user: OnUser | None = None, follow_users: bool = False) -> None:
        self.session = session
        self.url = url.rstrip("/") + PATH
        self.clock = clock
        self.on_sent = on_sent
        self.on_answer = on_answer
        self.on_saturated = on_saturated
        self.on_user = on_user
        self.workload: Workload | None = None
        self._rng = stream(seed, arrivals)
        self._stream_rng = stream(seed, streams)
        self._retry_rng = stream(seed, retries)
        self._throttle_rng = stream(seed, throttle)
        self._throttle: AdaptiveThrottle | None = None
        self._followed = follow_users
        """Whether user requests are followed: from the start with ``follow_users`` (a run
        whose scripted events will make its clients time out or retry:
        :func:`gwlab.timeline.follows_users`), else once a workload times out or retries;
        to the end either way, as the simulator follows them."""
        self._share = 0.0
        self._bodies = (BODY, BODY)
        """The request sent without and with a stream."""
        self._llm = False
        """Whether the workload streams or caps tokens: then answers are read for their tokens."""
        self._clients = 0
        self._arrivals: asyncio.Task | None = None
        self._rate = 0.0
        self._drivers: set[asyncio.Task] = set()
        """The closed-loop clients and the open-loop arrivals task."""
        self._requests: dict[asyncio.Task, _User] = {}
        """The user requests in progress, each its task."""
        self._stopped = False

    @property
    def running(self) -> int:
        """Closed-loop clients running, counting those about to retire."""
        return self._clients

    def apply(self, workload: Workload) -> None:
        """Follow ``workload`` from now on. Does nothing once stopped."""
        if self._stopped:
            return
        self.workload = workload
        self._share = workload.stream_share
        self._bodies = tuple(request_body(streaming, workload.max_tokens, workload.prompt_tokens)
                             for streaming in (False, True))
        self._llm = workload.stream_share > 0 or workload.max_tokens > 0
        self._followed = self._followed or follows_users(workload)
        throttle = self._throttle
        if workload.retry_policy != "adaptive":
            self._throttle = None
        elif throttle is None or (throttle.k, throttle.window) != (workload.adaptive_k, workload.adaptive_window):
            self._throttle = AdaptiveThrottle(workload.adaptive_k, workload.adaptive_window, self._throttle_rng)
        if workload.mode == "open" and workload.rate > 0:  # rate 0: a worker without a share of the cap
            if self._arrivals is None or workload.rate != self._rate:
                if self._arrivals is not None:
                    self._arrivals.cancel()
                self._rate = workload.rate
                self._arrivals = self._spawn(self._open_loop(workload.rate))
        elif self._arrivals is not None:
            self._arrivals.cancel()
            self._arrivals = None
        for _ in range(self._wanted() - self._clients):
            self._clients += 1
            self._spawn(self._client())

    async def stop(self, grace: float) -> int:
        """Send nothing more; let the requests in flight finish within ``grace`` seconds,
        then cut off the rest. Returns how many were cut off (0 when already stopped). The
        user requests that have not ended by then (waiting to retry, or with an attempt cut
        off) end ``"cut_off"``."""
        if self._stopped:
            return 0
        self._stopped = True
        waiting = [task for task, user in self._requests.items() if not user.sending]  # to retry: nothing more
        stopped = [*self._drivers, *waiting]
        for task in stopped:
            task.cancel()
        await asyncio.gather(*stopped, return_exceptions=True)
        if self._requests and grace > 0:
            await asyncio.wait(self._requests, timeout=grace)
        remaining = [task for task in self._requests if not task.done()]
        for task in remaining:
            task.cancel()
        await asyncio.gather(*remaining, return_exceptions=True)
        return len(remaining)

    def _wanted(self) -> int:
        """Closed-loop clients the workload asks for."""
        w = self.workload
        return w.clients if w is not None and w.mode == "closed" else 0

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._drivers.add(task)
        task.add_done_callback(self._drivers.discard)
        return task

    def _launch(self, scheduled: float) -> asyncio.Task | None:
        """Start a user request as its own task: a client cancelled at the stop leaves it
        in flight, for the grace to decide. Whether it streams is drawn here, once per user
        request, as the simulator draws it. ``None`` when adaptive throttling rejected its
        first attempt: nothing is sent, and the user request has ended."""
        share = self._share
        streaming = share == 1.0 or (share > 0.0 and self._stream_rng.random() < share)
        retry = ClientRetry(self.workload, self._retry_rng) if self._followed else None
        user = _User(retry, streaming, self._bodies[streaming], self._llm)
        if not self._admits():
            self._ended(user, "throttled")
            return None
        self._send(user)
        task = asyncio.create_task(self._user(user, scheduled))
        self._requests[task] = user
        task.add_done_callback(self._requests.pop)
        return task

    def _admits(self) -> bool:
        """Whether an attempt may go out now: adaptive throttling, when on, may reject it."""
        throttle = self._throttle
        return throttle is None or throttle.admits(self.clock())

    def _send(self, user: _User) -> None:
        """``user`` sends an attempt now."""
        user.attempts += 1
        user.sending = True
        self.on_sent()

    def _ended(self, user: _User, outcome: str) -> None:
        if user.retry is not None and self.on_user is not None:
            self.on_user(outcome, user.attempts)

    async def _open_loop(self, rate: float) -> None:
        """Poisson arrivals at ``rate`` from now on; the one arrival stream goes on across
        rate changes.

        Each arrival waits for its time, or only yields to the loop when it is overdue (the
        loop was busy): the answers that came meanwhile are counted before it looks at the
        cap, and overdue arrivals never go out in one burst. Under the cap it is sent, late
        if need be, its latency still counted from its schedule; with the cap full it is
        not sent, and reported as saturated."""
        scheduled = self.clock()
        while True:
            scheduled = next_arrival(scheduled, rate, self._rng)
            await asyncio.sleep(max(0.0, scheduled - self.clock()))
            if len(self._requests) < self.workload.max_in_flight:
                self._launch(scheduled)
            else:
                self.on_saturated()

    async def _client(self) -> None:
        """One closed-loop client; it retires before sending when the workload wants fewer."""
        try:
            while self._clients <= self._wanted():
                request = self._launch(self.clock())
                if request is not None:
                    await asyncio.wait((request,))
                status, retry_after, outcome = _REJECTED if request is None else request.result()
                w = self.workload
                pause = max(w.think_time, w.retry_delay) if outcome == "throttled" else \
                    pause_after(status, retry_after, w.think_time)
                if pause > 0:
                    await asyncio.sleep(pause)
        finally:
            self._clients -= 1

    async def _user(self, user: _User, scheduled: float) -> tuple[int, float, str | None]:
        """Send ``user``'s attempts, the first (sent already) due at ``scheduled``, until it
        ends; report its end. Returns the last attempt's status and retry-after in seconds,
        and the user request's outcome (``None`` when it is not followed), which a
        closed-loop client pauses after. Cancelled (at the stop), a followed user request
        ends ``"cut_off"``."""
        try:
            while True:
                status, retry_after, done = await self._request(scheduled, user)
                user.sending = False
                if user.retry is None:  # not followed: one attempt
                    return status, retry_after, None
                if self._throttle is not None:
                    self._throttle.answered(done, status == 200)
                wait = None if status == 200 else user.retry.after(status, retry_after)
                if wait is None:
                    outcome = ("ok" if status == 200 else "timed_out" if status == CLIENT_TIMEOUT
                               else "cut_off" if status == CUT_OFF else "failed")
                    break
                if self._stopped:  # nothing more is sent
                    outcome = "cut_off"
                    break
                scheduled = done + wait
                await asyncio.sleep(wait)  # a stop meanwhile cancels it
                if not self._admits():
                    outcome = "throttled"
                    break
                self._send(user)
        except asyncio.CancelledError:
            self._ended(user, "cut_off")
            raise
        self._ended(user, outcome)
        return status, retry_after, outcome

    async def _request(self, scheduled: float, user: _User) -> tuple[int, float, float]:
        """Send one attempt of ``user`` and report its answer. Returns the status, the
        server's retry-after in seconds (0 when absent) and the clock reading at its end.

        Its times count from ``scheduled``, or from its sending if that came first: a loop
        whose timers count whole milliseconds (uvloop's) may wake an arrival a little before
        its time, and a time to first token is never shorter than the provider's. A stream
        (an event stream answering a request that asked for one) is read frame by frame
        (:func:`read_stream`); any other answer whole, and parsed for its tokens only when
        the workload streams or caps tokens. With the workload's ``timeout`` > 0 the attempt
        is given up that many seconds after its sending, its connection closed: a
        :data:`~gwlab.stats.CLIENT_TIMEOUT`."""
        scheduled = min(scheduled, self.clock())
        first: float | None = None
        tokens = 0
        timeout = self.workload.timeout
        try:
            async with asyncio.timeout(timeout) if timeout else _UNBOUNDED:
                async with self.session.post(self.url, data=user.body, headers=_HEADERS) as response:
                    status = response.status
                    provider = response.headers.get(PROVIDER_HEADER, NO_PROVIDER)
                    retry_ms = response.headers.get(RETRY_AFTER_MS_HEADER)
                    if user.streaming and status == 200 and response.content_type == _EVENT_STREAM:
                        status, first, tokens = await read_stream(response.content, self.clock)
                    elif user.llm and status == 200:
                        tokens = _completion_tokens(await response.read())
                    else:
                        await response.read()
        except aiohttp.ClientError as exc:
            log.debug("request failed: %s", exc)
            # Once stopping, a connection lost after it was made is the gateway cutting the
            # request off as its grace ran out (Gateway.cut_off_after), and counts as it does.
            cut = self._stopped and not isinstance(exc, aiohttp.ClientConnectorError)
            status, retry_ms = CUT_OFF if cut else TRANSPORT_ERROR, None
        except TimeoutError:
            status, retry_ms = CLIENT_TIMEOUT, None
        # No answer came whole: none of it counts.
        if status == TRANSPORT_ERROR or status == CLIENT_TIMEOUT or status == CUT_OFF:
            provider, first, tokens = NO_PROVIDER, None, 0
        ttft = None if first is None else first - scheduled
        done = self.clock()
        self.on_answer(scheduled, done, status, provider, ttft, tokens)
        return status, float(retry_ms) / 1000 if retry_ms else 0.0, done
