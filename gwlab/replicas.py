"""Several gateways behind one port: replica processes and the parent that controls them.

``gwlab serve --replicas N`` runs N full gateways (:class:`~gwlab.server.Gateway`), each in
a process of its own, listening on one port with ``SO_REUSEPORT``: Linux spreads new
connections over the sockets listening on a port by a hash of their addresses, as real
gateways' replicas are spread by a load balancer in front of them. Each replica serves its
metrics on a port of its own (``metrics_port + i``, or a free port each when it is 0), and
Prometheus adds the ``replica`` label from its scrape configuration
(:func:`scrape_config`), not gwlab.

What a replica has of its own (DESIGN, "Upstreams and replicas"): its breakers (as Envoy's
hosts are ejected per proxy), its limiter unless the limiter's backend is shared, and its
copy of each simulated provider, so that simulated capacities and provider limits multiply
by N. Replica 0 draws from the run's seed, replica i from a seed of its own derived from it
(:func:`replica_seed`), so that replicas do not fail in step.

The parent keeps a pipe to each replica, read by its event loop. It fans configuration
changes and resets out to all (an admin request that reaches one replica is passed up and
applied to all; the reply says what all now run), gathers their snapshots, and stops them.
Replicas die with the parent: the kernel kills them when it ends (Linux's parent-death
signal), and a replica whose pipe closes stops at once.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import multiprocessing
import signal
import socket
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Mapping

from gwlab.needs import needs

needs("gwlab.replicas")

from gwlab import config
from gwlab.children import ChildError, Outbox, die_with, end, exited, spawn, started
from gwlab.config import ConfigError, Scenario
from gwlab.router import Snapshot
from gwlab.metrics import Scrapes
from gwlab.server import Gateway, PortInUse
from gwlab.summary import Trips
from gwlab.streams import replica_seed
from gwlab.wire import ApiError

log = logging.getLogger(__name__)

REPLICAS_UNAVAILABLE = "replicas_unavailable"
"""The ``code`` of the 503 an admin change gets when a replica did not confirm it (it was
sent to all: a stalled replica applies it when it resumes)."""


def scrape_config(targets: list[str], interval: float = config.SCRAPE_INTERVAL, rules: str | None = None,
                  job: str = "gwlab") -> str:
    """Prometheus's configuration (YAML, shaped as the repository's ``prometheus.yml``) that
    scrapes the metrics servers at ``targets`` (``host:port``, in replica order), each
    labelled ``replica="i"``, every ``interval`` seconds, evaluating the rules of the file
    ``rules`` (a path as Prometheus reads it: relative to the configuration's folder) if
    given."""
    lines = ["global:", f"  scrape_interval: {interval:g}s", f"  evaluation_interval: {interval:g}s", ""]
    if rules is not None:
        lines += ["rule_files:", f"  - {json.dumps(rules)}", ""]
    lines += ["scrape_configs:", f"  - job_name: {job}", "    static_configs:"]
    for index, target in enumerate(targets):
        lines += [f"      - targets: [{json.dumps(target)}]", f"        labels: {{replica: \"{index}\"}}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Plan:
    """What a replica process is started with."""

    index: int
    scenario: Scenario
    seed: int
    host: str
    port: int
    metrics_port: int
    admin_token: str | None
    bounds: Mapping[str, float]


class ReplicaError(ChildError):
    """A replica failed to start, to answer in time, or ended unexpectedly."""


class Replicas:
    """``count`` gateway replicas of ``scenario`` sharing one port, from their parent.

    ``bounds`` are :class:`~gwlab.server.Gateway`'s keyword bounds (``max_connections`` ...),
    each replica's own. After :meth:`start`, ``url`` is the one address of all, ``port`` the
    port they share, ``metrics_urls`` and ``metrics_ports`` each replica's."""

    def __init__(self, scenario: Scenario, seed: int, count: int, *, admin_token: str | None = None,
                 **bounds: float) -> None:
        if not 1 <= count <= config.MAX_REPLICAS:
            raise ConfigError(f"replicas = {count}: allowed are 1 to {config.MAX_REPLICAS}")
        config.check(scenario, "Replicas(scenario=...)")
        self._scenario = scenario
        self.seed = seed
        self.count = count
        self.admin_token = admin_token
        self.bounds = bounds
        self.url = ""
        self.port = 0
        self._host = config.HOST
        self.metrics_urls: list[str] = []
        self.metrics_ports: list[int] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._outboxes: list[Outbox] = []
        """What is sent to each replica, by index: never waiting for a replica to read it."""
        self._started: list[asyncio.Future] = []
        self._replies: dict[int, tuple[int, asyncio.Future]] = {}
        """Requests awaiting a replica's reply, by number: the replica's index and the future."""
        self.lost: list[int] = []
        """Replicas that ended unexpectedly, by index: the others go on without them."""
        self.gone = asyncio.Event()
        """Set once every replica has ended unexpectedly and been named in the log."""
        self._named = 0
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        """Admin requests passed up by a replica, being fanned out."""
        self._stopping = False

    @property
    def scenario(self) -> Scenario:
        """The scenario every replica runs."""
        return self._scenario

    @property
    def pids(self) -> list[int]:
        """The replicas' process ids, in replica order."""
        return [p.pid for p in self._processes]

    async def start(self, host: str = config.HOST, port: int = config.PORT,
                    metrics_port: int = config.METRICS_PORT) -> None:
        """Start the replicas on ``host:port`` (0: a free port, the same for all) and wait
        until every one listens. Raises :class:`~gwlab.server.PortInUse` when ``port`` (or a
        replica's metrics port) is taken, :class:`ReplicaError` when a replica fails to
        start within :data:`~gwlab.config.CHILD_START_TIMEOUT`; then no replica is left
        running."""
        if self._stopping:
            raise ReplicaError("these replicas were stopped: make a new Replicas to start again")
        if self._processes:
            return
        self.port = _free_to_share(host, port)
        self._host = host
        loop = asyncio.get_running_loop()
        for index in range(self.count):
            plan = _Plan(index, self._scenario, replica_seed(self.seed, index), host, self.port,
                         metrics_port + index if metrics_port else 0, self.admin_token, self.bounds)
            process, mine = spawn(_replica_main, plan, f"gwlab-replica-{index}")
            self._processes.append(process)
            self._conns.append(mine)
            self._outboxes.append(Outbox(mine, config.REPLICA_BACKLOG, lambda index=index: self._overrun(index)))
            self._started.append(loop.create_future())
            loop.add_reader(mine.fileno(), self._receive, index)
        try:
            ports = await self._listening()
        except BaseException:
            await self._end(0.0, overdue=False)
            raise
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self.metrics_ports = list(ports)
        self.metrics_urls = [f"http://{shown}:{p}/metrics" for p in ports]

    async def _listening(self) -> list[int]:
        """Each replica's metrics port, once every one listens (:func:`gwlab.children.started`)."""
        return await started(self._started, "replicas", ReplicaError)

    def targets(self) -> list[str]:
        """Each replica's metrics server as ``host:port``, as Prometheus scrapes it."""
        return [url.removeprefix("http://").removesuffix("/metrics") for url in self.metrics_urls]

    def configure(self, patch: Mapping[str, Any], source: str = "Replicas.configure") -> Scenario:
        """Merge ``patch`` into the scenario (validated here first: a :class:`ConfigError`
        naming ``source`` changes no replica) and send it to every replica still running,
        which apply it in the order sent (:meth:`sync` waits until they have). Returns the
        new scenario. Must be called on the loop that started the replicas; raises
        :class:`ReplicaError` once they are stopped."""
        scenario = config.merge(self._scenario, patch, source)
        self._tell_all("configure", patch, source)
        self._scenario = scenario
        return scenario

    def reset(self) -> None:
        """Full buckets and healthy breakers with no history, in every replica (sent as
        :meth:`configure` sends)."""
        self._tell_all("reset")

    async def sync(self) -> list[int]:
        """Wait, at most :data:`~gwlab.config.REPLICA_REPLY_TIMEOUT`, until every replica
        still running has applied every change sent so far; the replicas that have not
        (stalled: they apply it when they resume), by index."""
        return (await self._wait(list(self._replies.values())))[1]

    async def snapshots(self, timeout: float | None = None) -> dict[int, Snapshot]:
        """The router state now of every replica that answers within ``timeout`` seconds
        (:data:`~gwlab.config.REPLICA_REPLY_TIMEOUT` by default), by index (in replica
        order)."""
        return (await self._wait(self._tell_all("snapshot"), timeout))[0]

    async def ends(self) -> dict[int, dict[str, Any]]:
        """What each replica that answers within :data:`~gwlab.config.REPLICA_REPLY_TIMEOUT`
        counted since it started, by index, for a run's summary: its breakers' openings
        (``trips``, by provider), its ``fallbacks`` and retry ``decisions`` (as its
        :class:`~gwlab.metrics.Metrics` counts them) and its requests in flight."""
        return (await self._wait(self._tell_all("ends")))[0]

    async def cut_off_after(self, grace: float) -> None:
        """Have every replica still running let its requests in flight finish within
        ``grace`` seconds and cut off the rest, as :meth:`Gateway.cut_off_after` does, going on
        serving; return once they have, or :data:`~gwlab.config.CUT_OFF_MARGIN` seconds
        after the grace (as long as the clients wait) for those that do not say so."""
        await self._wait(self._tell_all("cut_off", grace), grace + config.CUT_OFF_MARGIN)

    async def stop(self, grace: float = config.STOP_GRACE, final_scrape: bool = False) -> None:
        """Stop every replica as :meth:`Gateway.stop` does (requests in flight get ``grace``
        seconds; with ``final_scrape``, a replica whose metrics were scraped first waits for
        one more scrape, at most :data:`~gwlab.config.FINAL_SCRAPE` seconds, as ``gwlab run``
        does), wait for them to exit, and kill those still running
        :data:`~gwlab.config.CHILD_EXIT_TIMEOUT` seconds later. Safe to call twice."""
        if self._stopping or not self._processes:
            self._stopping = True
            return
        self._stopping = True
        for outbox in self._outboxes:
            outbox.send(("stop", grace, final_scrape))
        await self._end(grace + (config.FINAL_SCRAPE if final_scrape else 0.0) + config.CHILD_EXIT_TIMEOUT)

    def _tell_all(self, kind: str, *args: Any) -> list[tuple[int, asyncio.Future]]:
        """Send every replica still running a request; each one's index with the future of
        its reply."""
        if self._stopping:
            raise ReplicaError("these replicas are stopped")
        loop = asyncio.get_running_loop()
        sent = []
        for index, outbox in enumerate(self._outboxes):
            if index in self.lost:
                continue
            number = next(self._ids)
            reply = loop.create_future()
            self._replies[number] = index, reply
            reply.add_done_callback(lambda _, number=number: self._replies.pop(number, None))
            if outbox.send((kind, number, *args)):
                sent.append((index, reply))
            else:
                reply.cancel()
        return sent

    async def _wait(self, replies: list[tuple[int, asyncio.Future]],
                    timeout: float | None = None) -> tuple[dict[int, Any], list[int]]:
        """Wait at most ``timeout`` seconds (:data:`~gwlab.config.REPLICA_REPLY_TIMEOUT` by
        default) for ``replies``, each a replica's index with the future of its reply: the
        replies received, by index (in replica order), and the replicas that did not answer
        (a replica lost meanwhile is neither)."""
        if replies:
            await asyncio.wait([reply for _, reply in replies],
                               timeout=config.REPLICA_REPLY_TIMEOUT if timeout is None else timeout)
        answered = {index: reply.result() for index, reply in replies if reply.done() and not reply.cancelled()}
        return dict(sorted(answered.items())), sorted({index for index, reply in replies if not reply.done()})

    def _receive(self, index: int) -> None:
        conn = self._conns[index]
        try:
            while conn.poll():
                kind, *payload = conn.recv()
                if kind == "reply":
                    number, result = payload
                    _, future = self._replies.get(number, (index, None))
                    if future is not None and not future.done():
                        future.set_result(result)
                elif kind == "started":
                    if not self._started[index].done():
                        self._started[index].set_result(payload[0])
                elif kind == "failed":
                    taken, message = payload  # the port in use, or None
                    self._fail(index, ReplicaError(f"replica {index} did not start: {message}") if taken is None
                               else PortInUse(taken, self._host))
                else:  # "admin": a replica's admin API asks for a change of all
                    task = asyncio.create_task(self._admin(index, *payload))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            self._fail(index, ReplicaError(f"replica {index} ended unexpectedly"))
            if self._started[index].done() and not self._stopping:
                self._lose(index)

    def _lose(self, index: int) -> None:
        """Replica ``index`` ended unexpectedly: go on without it (its requests awaiting a
        reply get none), reap it at once (no zombie is left until the end) and say so once,
        with how it ended."""
        self.lost.append(index)
        self._outboxes[index].close()
        for number, (owner, future) in list(self._replies.items()):
            if owner == index:
                future.cancel()
        task = asyncio.create_task(self._reap(index))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap(self, index: int) -> None:
        process = self._processes[index]
        await exited(process, config.CHILD_EXIT_TIMEOUT)
        # The replicas left as the line is written: replicas that died together may be
        # reaped, and named, in another order than their pipes closed.
        log.warning("replica %d (pid %d) ended unexpectedly (%s); the other %d go on", index, process.pid,
                    _ending(process.exitcode), self.count - len(self.lost))
        self._named += 1
        if self._named == self.count:
            self.gone.set()

    def _overrun(self, index: int) -> None:
        """Replica ``index`` read nothing while :data:`~gwlab.config.REPLICA_BACKLOG` bytes
        waited for it: it could no longer be kept in step with the others, and is killed
        (then lost, as a replica that died)."""
        process = self._processes[index]
        log.warning("replica %d (pid %d) read none of the last %d bytes sent to it: killed", index, process.pid,
                    config.REPLICA_BACKLOG)
        process.kill()

    def _fail(self, index: int, error: BaseException) -> None:
        started = self._started[index]
        if not started.done():
            started.set_exception(error)
            started.exception()

    async def _admin(self, index: int, number: int, kind: str, patch: Any) -> None:
        """Apply an admin request that replica ``index`` passed up, in every replica, and
        answer it: ``None`` when done, else ``("refused", message)`` for a patch that does not
        fit or ``("unavailable", message)`` when a replica did not confirm it."""
        try:
            if kind == "configure":
                self.configure(patch, "PATCH /admin/config")
            else:
                self.reset()
            late = await self.sync()
            answer = None if not late else (
                "unavailable", f"the change was sent to every replica, but replicas {', '.join(map(str, late))} did "
                               f"not confirm it within {config.REPLICA_REPLY_TIMEOUT:g} s (they apply it when they "
                               "resume)")
        except ConfigError as exc:
            answer = "refused", str(exc)
        except ReplicaError as exc:
            answer = "unavailable", str(exc)
        self._outboxes[index].send(("answer", number, answer))

    async def _end(self, wait: float, overdue: bool = True) -> None:
        """Drop the admin requests being fanned out, then end the replicas as
        :func:`gwlab.children.end` does: a replica still running takes its closed pipe as a
        stop, and is killed once ``wait`` seconds have passed, and named in a warning. Not
        when they are not ``overdue`` (a start that failed kills the others at once, no
        fault of theirs), unless one is still not gone after its kill."""
        for task in self._tasks:
            task.cancel()
        for outbox in self._outboxes:
            outbox.close()
        for process, done in await end(self._processes, self._conns, wait):
            if overdue or not done:
                log.warning("replica %d (pid %d) did not exit in time: %s", self._processes.index(process),
                            process.pid, "killed" if done else "killed, and still not gone")


def _ending(code: int | None) -> str:
    """How a process ended, from its exit code as :mod:`multiprocessing` gives it (``-N``:
    killed by signal N; ``None``: not reaped yet)."""
    if code is None:
        return "not reaped yet"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _free_to_share(host: str, port: int) -> int:
    """The port the replicas will share: ``port``, or a free one for 0. Raises
    :class:`PortInUse` when anything listens there already, another set of replicas
    included (a plain bind, without ``SO_REUSEPORT``, fails on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family) as probe:
            return probe.getsockname()[1]
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(port, host) from None
        raise


def _send(conn: Connection, message: tuple) -> bool:
    """Send ``message`` on ``conn``; ``False`` when the other end is gone."""
    try:
        conn.send(message)
    except OSError:
        return False
    return True


def _replica_main(conn: Connection, plan: _Plan, parent: int) -> None:
    """Entry point of replica process ``plan.index``, started by the process ``parent``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with(parent)
    asyncio.run(_Replica(conn, plan).run())


class _Replica:
    """One replica process: its gateway and its conversation with the parent."""

    def __init__(self, conn: Connection, plan: _Plan) -> None:
        self.conn = conn
        self.plan = plan
        self.gateway = Gateway(plan.scenario, plan.seed, admin_token=plan.admin_token, **plan.bounds)
        self.gateway.fan_out = self._fan_out
        self.trips = Trips()
        self.gateway.router.subscribe(self.trips)
        self.scrapes = Scrapes()
        self.gateway.metrics.registry.register(self.scrapes)
        self.final_scrape = False
        self.stop = asyncio.Event()
        self.grace = config.STOP_GRACE
        self._cutting: asyncio.Task | None = None
        """The cut-off the parent asked for (:meth:`Replicas.cut_off_after`), while it runs."""
        self._answers: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        plan = self.plan
        try:
            await self.gateway.start(plan.host, plan.port, plan.metrics_port, reuse_port=True)
        except OSError as exc:
            _send(self.conn, ("failed", exc.port if isinstance(exc, PortInUse) else None, str(exc)))
            return
        loop.add_reader(self.conn.fileno(), self._command)
        if _send(self.conn, ("started", self.gateway.metrics_port)):
            await self.stop.wait()
        loop.remove_reader(self.conn.fileno())
        if self._cutting is not None:  # the stop cuts off in its own grace
            self._cutting.cancel()
            await asyncio.gather(self._cutting, return_exceptions=True)
        if self.final_scrape:
            await self.scrapes.final(self.stop)
        await self.gateway.stop(self.grace)
        self.conn.close()

    def _command(self) -> None:
        try:
            while self.conn.poll():
                kind, *payload = self.conn.recv()
                if kind == "stop":
                    self.grace, self.final_scrape = payload
                    self.stop.set()
                    return
                number, *args = payload
                if kind == "answer":
                    future = self._answers.get(number)
                    if future is not None and not future.done():
                        future.set_result(args[0])
                elif kind == "snapshot":
                    _send(self.conn, ("reply", number, self.gateway.snapshot()))
                elif kind == "ends":
                    _send(self.conn, ("reply", number, self._ends()))
                elif kind == "cut_off":
                    self._cutting = asyncio.create_task(self._cut_off(number, *args))
                else:
                    if kind == "configure":
                        self.gateway.configure(*args)
                    else:
                        self.gateway.reset()
                    _send(self.conn, ("reply", number, None))
        except (EOFError, OSError):
            self.stop.set()

    async def _cut_off(self, number: int, grace: float) -> None:
        await self.gateway.cut_off_after(grace)
        _send(self.conn, ("reply", number, None))

    def _ends(self) -> dict[str, Any]:
        metrics = self.gateway.metrics
        return {"trips": dict(self.trips.counts), "fallbacks": dict(metrics.fallbacks),
                "decisions": dict(metrics.decisions),
                "in_flight": metrics.registry.get_sample_value("gwlab_in_flight_requests")}

    async def _fan_out(self, kind: str, patch: Any) -> Scenario:
        """Pass an admin request up to the parent and wait for it to be applied in every
        replica (this one included); the scenario now in force. Raises :class:`ConfigError`
        for a patch the parent refuses, and an :class:`~gwlab.wire.ApiError` 503 when a
        replica did not confirm it or the parent is gone."""
        number = next(self._ids)
        answer = self._answers[number] = asyncio.get_running_loop().create_future()
        try:
            if not _send(self.conn, ("admin", number, kind, patch)):
                raise ApiError(503, "the replicas' parent is gone: nothing was changed", REPLICAS_UNAVAILABLE)
            outcome = await asyncio.wait_for(answer, config.REPLICA_REPLY_TIMEOUT * 2)
        except TimeoutError:
            raise ApiError(503, f"the replicas' parent did not answer within "
                                f"{config.REPLICA_REPLY_TIMEOUT * 2:g} s", REPLICAS_UNAVAILABLE) from None
        finally:
            self._answers.pop(number, None)
        if outcome is not None:
            refusal, message = outcome
            if refusal == "refused":
                raise ConfigError(message)
            raise ApiError(503, message, REPLICAS_UNAVAILABLE)
        return self.gateway.scenario
