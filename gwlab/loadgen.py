"""Real HTTP clients for the live shells, in their own processes.

The clients run in worker processes so that they never compete with the gateway for its
event loop: at thousands of requests per second one Python process cannot both send and
serve. The parent process (which runs the gateway) starts the workers, tells them to go and
to stop, and merges the :class:`~gwlab.stats.Tally` deltas they send about twice a second.
Each worker runs one :class:`~gwlab.clients.Driver` (closed-loop clients or open-loop
Poisson arrivals, from the random stream ``arrivals/<index>``; which requests stream, from
``workload/stream/<index>``; the jitter of its clients' retries, from
``workload/retry/<index>``, and adaptive throttling's draws, from
``workload/throttle/<index>``, one throttle per worker) and tallies its answers, with the
time to first token and the output tokens of LLM traffic (:func:`gwlab.clients.book`), and,
for clients that time out or retry, its user requests (:func:`gwlab.clients.book_user`).

Scripted events change the workload while the clients run (:meth:`LoadGenerator.apply`):
the parent splits the new workload over the same workers as at the start and sends each its
new :class:`WorkerPlan`, which its driver follows from then on.

Every request a worker starts is counted exactly once: with its HTTP status and the
``x-gwlab-provider`` header, with :data:`~gwlab.stats.TRANSPORT_ERROR` when no HTTP answer
came, or, when it is still unanswered a bounded time after the stop, as
:data:`~gwlab.stats.CUT_OFF` (499). An open-loop arrival a worker could not send, its share
of the workload's ``max_in_flight`` being full, is counted apart as saturated.

A run always ends: :meth:`LoadGenerator.stop` gives the workers the grace and
:data:`~gwlab.config.CHILD_EXIT_TIMEOUT` seconds to report and exit, then kills the ones
left (stopped, hung) and names them. The workers die with the parent on every path: the kernel kills them when
it ends, even by SIGKILL (Linux's parent-death signal), and a worker also stops when the
pipe from the parent closes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from gwlab.needs import needs

needs("gwlab.loadgen", ("aiohttp",))

from gwlab import config
from gwlab.children import ChildError, die_with, end, resolve, spawn, started
from gwlab.clients import RETRIES, STREAMS, THROTTLE, Driver, book, book_user, open_session
from gwlab.config import WorkloadConfig
from gwlab.stats import CUT_OFF, NO_PROVIDER, Tally
from gwlab.summary import requested_rate

log = logging.getLogger(__name__)

OPEN_RATE_PER_WORKER = 1500.0
"""Open-loop requests per second one worker process offers at most."""
CLOSED_CLIENTS_PER_WORKER = 500
"""Closed-loop clients one worker process runs at most."""
REPORT_INTERVAL = 0.5
"""Seconds between two tally deltas a worker sends to the parent."""
SHORTFALL = 0.95
"""An achieved offered rate below this fraction of the requested one is reported."""


def worker_count(workload: WorkloadConfig, cpus: int | None = None) -> int:
    """How many worker processes carry ``workload``: one for a closed loop of up to
    :data:`CLOSED_CLIENTS_PER_WORKER` clients, enough to keep each open-loop worker at or
    below :data:`OPEN_RATE_PER_WORKER` (but not more than ``max_in_flight``, so that each
    has a share of the cap); never more than the CPUs."""
    cpus = max(1, cpus or os.cpu_count() or 1)
    if workload.mode == "open":
        wanted = min(math.ceil(workload.rate / OPEN_RATE_PER_WORKER), workload.max_in_flight)
    else:
        wanted = math.ceil(workload.clients / CLOSED_CLIENTS_PER_WORKER)
    return max(1, min(cpus, wanted))


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker process sends: ``clients`` closed-loop clients, or open-loop arrivals
    at ``rate`` per second drawn from the stream ``arrivals/<index>`` of ``seed``, at most
    ``max_in_flight`` of them outstanding; a share ``stream_share`` of its requests stream
    (drawn from the stream ``workload/stream/<index>``), each capped at ``max_tokens`` output
    tokens (0: no cap), each with a prompt of ``prompt_tokens`` tokens. Its clients time out and retry as the workload's fields of the same
    names say (:class:`~gwlab.config.WorkloadConfig`). A worker gets a new plan when the
    workload changes."""

    url: str
    index: int
    mode: str
    clients: int
    rate: float
    think_time: float
    max_in_flight: int
    seed: int
    grace: float
    stream_share: float = 0.0
    max_tokens: int = 0
    prompt_tokens: int = config.PROMPT_TOKENS
    retry_policy: str = config.CLIENT_RETRY_POLICY
    retries: int = config.CLIENT_RETRIES
    retry_delay: float = config.CLIENT_RETRY_DELAY
    retry_max_delay: float = config.CLIENT_RETRY_MAX_DELAY
    timeout: float = config.CLIENT_TIMEOUT
    adaptive_k: float = config.ADAPTIVE_K
    adaptive_window: int = config.ADAPTIVE_WINDOW
    follow_users: bool = False
    """Whether the worker's clients follow their user requests from the start
    (:class:`~gwlab.clients.Driver`'s ``follow_users``)."""


_CARRIED = ("think_time", "stream_share", "max_tokens", "prompt_tokens", "retry_policy", "retries", "retry_delay", "retry_max_delay",
            "timeout", "adaptive_k", "adaptive_window")
"""The fields of a workload that every worker's plan carries as they are."""


def plan(url: str, workload: WorkloadConfig, seed: int, workers: int,
         grace: float = config.CLIENT_GRACE, follow_users: bool = False) -> list[WorkerPlan]:
    """Split ``workload`` over ``workers`` processes: clients and the in-flight cap as
    evenly as whole numbers allow, and the open-loop rate in proportion to each worker's cap
    (independent Poisson streams add up to a Poisson stream at the total rate), so that no
    worker saturates before the cap in total is reached, and a worker without a share of the
    cap sends nothing. Every worker streams the same share of its requests, with the same
    cap on tokens, and its clients time out and retry alike, following their user requests
    from the start with ``follow_users``."""
    base, extra = divmod(workload.clients, workers)
    cap, more = divmod(workload.max_in_flight, workers)
    caps = [cap + (i < more) for i in range(workers)]
    carried = {name: getattr(workload, name) for name in _CARRIED}
    return [
        WorkerPlan(url=url, index=i, mode=workload.mode, clients=base + (i < extra),
                   rate=workload.rate * caps[i] / workload.max_in_flight, max_in_flight=caps[i], seed=seed,
                   grace=grace, follow_users=follow_users, **carried)
        for i in range(workers)
    ]


class LoadGenerator:
    """Worker processes driving ``url`` with ``workload``, and the merged tally of answers.

    Call :meth:`start`, :meth:`apply` and :meth:`stop` from the asyncio loop of the parent
    process. :attr:`tally` holds every answer received so far, :attr:`sent` the requests sent
    and :attr:`saturated` the open-loop arrivals not sent because the cap was full;
    :meth:`take_interval` the same since its previous call (the live view's "last second").
    :attr:`lost` names the workers that had to be killed at the stop. ``workers`` defaults to
    :func:`worker_count` of ``workload``; a run whose workload will change should pass the
    most any of its workloads needs, as the number of workers is fixed at the start, and
    ``follow_users`` when any of them times out or retries (:func:`gwlab.timeline.follows_users`)."""

    def __init__(self, url: str, workload: WorkloadConfig, seed: int = config.SEED, *,
                 workers: int | None = None, grace: float = config.CLIENT_GRACE, follow_users: bool = False) -> None:
        self.url = url.rstrip("/")
        self.workload = workload
        self.seed = seed
        self.grace = grace
        self.follow_users = follow_users
        self.plans = plan(self.url, workload, seed, workers or worker_count(workload), grace, follow_users)
        self.workloads: list[tuple[float, WorkloadConfig]] = [(0.0, workload)]
        """Each workload with the seconds of sending after which it applied."""
        self.tally = Tally()
        self.sent = 0
        self.saturated = 0
        self.lost: list[int] = []
        """Pids of the workers that did not report and exit in time and were killed."""
        self._interval = Tally()
        self._interval_sent = 0
        self._interval_saturated = 0
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._ready: list[asyncio.Future] = []
        self._final: list[asyncio.Future] = []
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._stopping = False

    @property
    def requested_rate(self) -> float | None:
        """The offered rate asked for, averaged over the time of sending when it changed;
        ``None`` when any part of the run was a closed loop
        (:func:`gwlab.summary.requested_rate`)."""
        return requested_rate(self.workloads, self.elapsed)

    @property
    def processes(self) -> tuple[multiprocessing.process.BaseProcess, ...]:
        """The worker processes started so far (their pids, exit codes)."""
        return tuple(self._processes)

    @property
    def started_at(self) -> float | None:
        """``time.monotonic()`` when the workers were told to go; they report their tallies
        :data:`REPORT_INTERVAL` apart from then."""
        return self._started_at

    @property
    def elapsed(self) -> float:
        """Seconds of sending so far (from the go to the stop)."""
        if self._started_at is None:
            return 0.0
        return (self._stopped_at or time.monotonic()) - self._started_at

    @property
    def achieved_rate(self) -> float | None:
        """Requests actually sent per second of sending."""
        elapsed = self.elapsed
        return self.sent / elapsed if elapsed > 0 else None

    async def start(self) -> None:
        """Start the workers, wait until every one is ready, then let them all go at once.
        Raises :class:`~gwlab.children.ChildError` when a worker ends or does not say it is
        ready within :data:`~gwlab.config.CHILD_START_TIMEOUT`; then no worker is left
        running."""
        if self._processes:
            return
        loop = asyncio.get_running_loop()
        for worker_plan in self.plans:
            process, mine = spawn(_worker_main, worker_plan, f"gwlab-loadgen-{worker_plan.index}")
            self._processes.append(process)
            self._conns.append(mine)
            self._ready.append(loop.create_future())
            self._final.append(loop.create_future())
            loop.add_reader(mine.fileno(), self._receive, len(self._conns) - 1)
        try:
            await started(self._ready, "load generator processes")
        except BaseException:
            await self._end(time.monotonic())
            raise
        self._started_at = time.monotonic()
        for conn in self._conns:
            conn.send(("go", self._started_at))

    def apply(self, workload: WorkloadConfig) -> None:
        """Send ``workload`` from now on: split over the same workers as at the start, as
        :func:`plan` does, and sent to each of them (before :meth:`start`, it simply replaces
        the initial workload). Does nothing once stopping."""
        if self._stopping or workload == self.workload:
            return
        self.workload = workload
        self.plans = plan(self.url, workload, self.seed, len(self.plans), self.grace, self.follow_users)
        if self._started_at is None:
            self.workloads = [(0.0, workload)]
        else:
            self.workloads.append((self.elapsed, workload))
        for conn, worker_plan in zip(self._conns, self.plans):
            try:
                conn.send(("plan", worker_plan))
            except OSError:
                log.warning("load generator process %d is gone; it cannot take the new workload",
                            worker_plan.index)

    async def stop(self) -> None:
        """Stop sending; wait for the workers' final tallies (requests still unanswered after
        the grace count as 499) and for their exit, at most the grace and
        :data:`~gwlab.config.CHILD_EXIT_TIMEOUT` seconds, then kill the workers left
        (:attr:`lost`). Ends within the grace and twice that bound whatever the workers do.
        Safe to call twice."""
        if self._stopping or not self._processes:
            return
        self._stopping = True
        if self._started_at is not None:
            self._stopped_at = time.monotonic()
        for conn, final in zip(self._conns, self._final):
            if not final.done():
                try:
                    conn.send(("stop",))
                except OSError:
                    pass
        deadline = time.monotonic() + max(p.grace for p in self.plans) + config.CHILD_EXIT_TIMEOUT
        await asyncio.wait(self._final, timeout=deadline - time.monotonic())
        await self._end(deadline)
        rate, requested = self.achieved_rate, self.requested_rate
        # A saturated run says so itself ("can't keep up"); this is for any other shortfall.
        if requested and rate is not None and rate < SHORTFALL * requested and not self.saturated:
            log.warning("achieved offered rate %.0f/s is below %.0f%% of the requested %.0f/s",
                        rate, SHORTFALL * 100, requested)

    def take_interval(self) -> tuple[Tally, int, int]:
        """The answers, the requests sent and the arrivals not sent (saturated) since the
        previous call."""
        interval, sent, saturated = self._interval, self._interval_sent, self._interval_saturated
        self._interval, self._interval_sent, self._interval_saturated = Tally(), 0, 0
        return interval, sent, saturated

    def _receive(self, index: int) -> None:
        conn = self._conns[index]
        try:
            while conn.poll():
                kind, *payload = conn.recv()
                if kind == "ready":
                    resolve(self._ready[index])
                else:
                    delta, sent, saturated = Tally.from_dict(payload[0]), payload[1], payload[2]
                    self.tally.merge(delta)
                    self._interval.merge(delta)
                    self.sent += sent
                    self._interval_sent += sent
                    self.saturated += saturated
                    self._interval_saturated += saturated
                    if kind == "final":
                        resolve(self._final[index])
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            error = ChildError(f"load generator process {index} ended unexpectedly")
            for future in (self._ready[index], self._final[index]):
                if not future.done():
                    future.set_exception(error)
                    future.exception()

    async def _end(self, deadline: float) -> None:
        """End the workers as :func:`gwlab.children.end` does: a worker still running takes
        its closed pipe as a stop, and is killed at ``deadline`` (a ``time.monotonic()``
        reading). A worker that did not report its final tally or had to be killed is named
        in a warning and, if killed, in :attr:`lost`."""
        for process, done in await end(self._processes, self._conns, deadline - time.monotonic()):
            self.lost.append(process.pid)
            log.warning("load generator process %s (pid %d) did not exit in time: %s", process.name,
                        process.pid, "killed" if done else "killed, and still not gone")
        for process, final in zip(self._processes, self._final):
            if self._started_at is None or final.done() and final.exception() is None or process.pid in self.lost:
                continue
            log.warning("load generator process %s (pid %d) ended (exit code %s) without its final tally; "
                        "its last requests are missing", process.name, process.pid, process.exitcode)


def _worker_main(conn: Connection, worker_plan: WorkerPlan, parent: int) -> None:
    """Entry point of a worker process started by the process ``parent``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with(parent)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_Worker(conn, worker_plan).run())
    else:
        uvloop.run(_Worker(conn, worker_plan).run())


class _Worker:
    """One worker process: its driver, its tally delta and its conversation with the parent."""

    def __init__(self, conn: Connection, worker_plan: WorkerPlan) -> None:
        self.conn = conn
        self.plan = worker_plan
        self.delta = Tally()
        self.sent = 0
        self.saturated = 0
        self.driver: Driver | None = None
        """Made at the go; it follows every plan received from then until the stop."""
        self.started_at = 0.0
        self.go = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.conn.fileno(), self._command)
        self.loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        async with open_session() as session:
            if not self._send("ready"):
                return
            await _first(self.go.wait(), self.stop.wait())
            if not self.stop.is_set():
                # Times from the monotonic clock itself: uvloop's loop.time() counts whole
                # milliseconds, as of the loop's last wake-up.
                index = self.plan.index
                self.driver = Driver(session, self.plan.url, self.plan.seed, f"arrivals/{index}",
                                     time.monotonic, self._sent, self._answered, self._saturated,
                                     streams=f"{STREAMS}/{index}", retries=f"{RETRIES}/{index}",
                                     throttle=f"{THROTTLE}/{index}", on_user=self._user,
                                     follow_users=self.plan.follow_users)
                self.driver.apply(self.plan)
                reporter = asyncio.create_task(self._report())
                await self.stop.wait()
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
                for _ in range(await self.driver.stop(self.plan.grace)):
                    self.delta.record(CUT_OFF, NO_PROVIDER, None)
            self._send("final")
        self.loop.remove_reader(self.conn.fileno())
        self.conn.close()

    def _sent(self) -> None:
        self.sent += 1

    def _saturated(self) -> None:
        self.saturated += 1

    def _answered(self, scheduled: float, done: float, status: int, provider: str, ttft: float | None,
                  tokens: int) -> None:
        book(self.delta, status, provider, done - scheduled, ttft, tokens)

    def _user(self, outcome: str, attempts: int) -> None:
        book_user(self.delta, outcome, attempts)

    def _command(self) -> None:
        try:
            while self.conn.poll():
                kind, *payload = self.conn.recv()
                if kind == "go":
                    self.started_at = payload[0]
                    self.go.set()
                elif kind == "plan":
                    self.plan = payload[0]
                    if self.driver is not None and not self.stop.is_set():
                        self.driver.apply(self.plan)
                else:
                    self.stop.set()
        except (EOFError, OSError):
            self.loop.remove_reader(self.conn.fileno())
            self.stop.set()

    def _send(self, kind: str) -> bool:
        """Send a message (with the tally delta and the sent and saturated counts, except
        "ready") to the parent; ``False`` when the parent is gone."""
        message = (kind,) if kind == "ready" else (kind, self.delta.to_dict(), self.sent, self.saturated)
        try:
            self.conn.send(message)
        except OSError:
            return False
        self.delta, self.sent, self.saturated = Tally(), 0, 0
        return True

    async def _report(self) -> None:
        """Send the tally delta every :data:`REPORT_INTERVAL` seconds after the common start
        time (the monotonic clock is shared by the processes), so that every worker's
        reports fall at the same moments and a one-second view holds exactly two of each."""
        due = self.started_at
        while True:
            due += REPORT_INTERVAL
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not self._send("tally"):
                self.stop.set()


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
