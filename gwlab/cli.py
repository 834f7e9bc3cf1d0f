"""The ``gwlab`` command: ``gwlab run``, ``gwlab serve``, ``gwlab simulate`` and ``gwlab sweep``.

``run`` starts the gateway, its metrics server and the load generator's client processes,
shows a live status once a second and, at the end (``--duration`` or Ctrl-C / SIGTERM), a
summary, optionally written as JSON; the scenario's scripted events apply at their times, as
in a simulation. ``serve`` runs the gateway and metrics server alone, for
outside clients. ``simulate`` replays the scenario in virtual time, with no sockets, and
prints the same summary. ``sweep`` simulates the scenario at every combination of the
values of its ``--grid`` flags, with each seed, in parallel processes, and writes one CSV row
per run (:mod:`gwlab.sweep`).

A bad scenario file or flag exits with status 2 and one line on stderr naming the file or
flag, the value and what is allowed, before any port is bound or any run starts; so does a
port in use, or a ``--json``, ``--report`` or ``--out`` file that cannot be written.

``run`` always ends: after ``--duration`` or the first Ctrl-C / SIGTERM it exits within
:data:`EXIT_BOUND` seconds (:data:`REPLICAS_EXIT_BOUND` with replicas) whatever its workers,
the gateway or its replicas do (a worker or replica that does not stop in time is killed and
named); a second Ctrl-C or SIGTERM ends it at once. ``run`` and ``serve`` with replicas also
end, with exit status 1, once every replica has ended unexpectedly: nothing serves the port
any more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
import tomllib
from pathlib import Path
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from gwlab import __version__, config
from gwlab.children import ChildError
from gwlab.config import ConfigError, Event, Scenario
from gwlab.entry import status, terminated
from gwlab.live import LiveView, status_lines, summary_lines
from gwlab.needs import FullInstallNeeded, needs
from gwlab.router import Snapshot
from gwlab.summary import Trips, summarise
from gwlab.timeline import Player, check_reservations, describe, follow, follows_users, steps

if TYPE_CHECKING:
    from gwlab.loadgen import LoadGenerator
    from gwlab.replicas import Replicas
    from gwlab.server import Gateway

REFRESH = 1.0
"""Seconds between two updates of the live status."""
PROGRESS_AFTER = 2.0
"""Seconds after which a running simulation starts showing its progress."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EXIT_USAGE = 2
EXIT_BOUND = (config.CLIENT_GRACE + config.CUT_OFF_MARGIN + 2 * config.CHILD_EXIT_TIMEOUT + config.STOP_GRACE
              + config.FINAL_SCRAPE)
"""Most seconds ``gwlab run`` takes to exit after its duration or the first signal: the
clients' grace and their wait past it for the gateway's cut-off, their workers' time to
report and exit or be killed
(:meth:`gwlab.loadgen.LoadGenerator.stop`), the gateway's stop grace and the metrics' final
scrape."""
REPLICAS_EXIT_BOUND = EXIT_BOUND + config.REPLICA_REPLY_TIMEOUT + 2 * config.CHILD_EXIT_TIMEOUT
"""The same with ``--replicas``: the replicas' time to send what they counted for the summary
(:meth:`gwlab.replicas.Replicas.ends`, asked at once with their snapshots), and their time to
exit or be killed and seen gone (:meth:`gwlab.replicas.Replicas.stop`)."""



class UsageError(Exception):
    """A bad command line or scenario: one line for stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump), raised, not exited."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that build a scenario (``--config``, ``--clients | --rate``,
    ``--max-in-flight``, ``--stream-share``, ``--max-tokens``, ``--retry-policy``,
    ``--client-timeout``, ``--seed``, ``--json``): shared by every command that runs one;
    read them with :func:`scenario_from_args`."""
    parser.add_argument("--config", metavar="FILE", type=_input,
                        help="scenario TOML file, - for stdin (default: the seed scenario; flags override it)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--clients", metavar="N", type=_whole,
                      help=f"closed loop: N clients, each waiting for its answer (default {config.CLIENTS})")
    load.add_argument("--rate", metavar="RPS", type=float,
                      help="open loop: Poisson arrivals at RPS requests per second in total")
    parser.add_argument("--max-in-flight", metavar="N", type=_whole,
                        help="open loop: requests outstanding at most, in total; an arrival finding N "
                             f"is not sent and counted as saturated (default {config.MAX_IN_FLIGHT})")
    parser.add_argument("--stream-share", metavar="SHARE", type=float,
                        help="share of the requests that ask for a stream (stream: true), from 0 to 1 "
                             "(default 0: none)")
    parser.add_argument("--max-tokens", metavar="N", type=_whole,
                        help="each request's max_tokens, the cap on its output tokens (default 0: none)")
    parser.add_argument("--retry-policy", metavar="POLICY",
                        help="how the clients retry a failed or timed-out request: "
                             f"{', '.join(config.CLIENT_RETRY_POLICIES)} (default {config.CLIENT_RETRY_POLICY})")
    parser.add_argument("--client-timeout", metavar="SECONDS", type=float,
                        help="seconds a client waits for an answer before it gives the request up and retries "
                             "by its policy (default 0: it waits for the gateway)")
    parser.add_argument("--seed", metavar="N", type=_whole, default=config.SEED,
                        help=f"random seed (default {config.SEED})")
    parser.add_argument("--json", metavar="FILE", type=_output,
                        help="write the final summary to FILE as JSON (- for stdout)")


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=config.HOST,
                        help=f"address to listen on (default {config.HOST})")
    parser.add_argument("--port", metavar="PORT", type=_whole, default=config.PORT,
                        help=f"gateway port, 0 for any free one (default {config.PORT})")
    parser.add_argument("--metrics-port", metavar="PORT", type=_whole, default=config.METRICS_PORT,
                        help=f"Prometheus metrics port, 0 for any free one (default {config.METRICS_PORT})")
    parser.add_argument("--admin-token", metavar="TOKEN",
                        help="serve /admin/* on any address, to requests with 'Authorization: Bearer "
                             "TOKEN' (without it, /admin/* is served on a loopback address only)")
    bounds = parser.add_argument_group("bounds on what clients can hold (see the README's Bounds)")
    bounds.add_argument("--max-connections", metavar="N", type=_whole, default=config.MAX_CONNECTIONS,
                        help=f"client connections held at once, at most the descriptor limit minus "
                             f"{config.FD_RESERVE} (default {config.MAX_CONNECTIONS})")
    for flag, default, what in (("--keepalive-timeout", config.KEEPALIVE_TIMEOUT, "an idle connection is kept"),
                                ("--header-timeout", config.HEADER_TIMEOUT, "a request's head may take"),
                                ("--body-timeout", config.BODY_TIMEOUT, "a request's body may take"),
                                ("--send-timeout", config.SEND_TIMEOUT,
                                 "an answer may wait for a client that reads nothing")):
        bounds.add_argument(flag, metavar="SECONDS", type=float, default=default,
                            help=f"seconds {what} (default {default:g})")
    parser.add_argument("--replicas", metavar="N", type=_whole, default=config.REPLICAS,
                        help=f"gateway processes sharing --port (SO_REUSEPORT), each with its own metrics port "
                             f"(--metrics-port + i, or any free one for 0), 1 to {config.MAX_REPLICAS} "
                             f"(default {config.REPLICAS})")
    parser.add_argument("--scrape-config", metavar="FILE", type=_output, default=Path(config.SCRAPE_CONFIG),
                        help="with --replicas, where to write Prometheus's scrape configuration for the "
                             f"replicas' metrics (default {config.SCRAPE_CONFIG}; - for stdout)")
    limiter = parser.add_argument_group("where the limits are kept (see the README's Shared limits)")
    limiter.add_argument("--limiter-backend", metavar="BACKEND",
                         help=f"limiter.backend: {' or '.join(config.LIMITER_BACKENDS)} (one bucket shared by every "
                              f"gateway using the same Redis; default {config.LIMITER_BACKEND})")
    limiter.add_argument("--redis-url", metavar="URL",
                         help=f"limiter.redis_url, the Redis of --limiter-backend redis (default {config.REDIS_URL})")
    parser.add_argument("--log-level", default=config.LOG_LEVEL, type=str.upper, choices=LOG_LEVELS,
                        help=f"log level on stderr (default {config.LOG_LEVEL}; INFO adds every "
                             "breaker opening and recovery, DEBUG also healthy<->failing)")


def _whole(text: str) -> int:
    """An argparse type: a whole number, as ``int`` reads it, or a number of a whole value
    (``2.0``, ``1e3``) as a scenario's field of whole numbers takes it
    (:func:`gwlab.config.whole_number`); its range is checked with the other arguments'."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = config.whole_number(float(text))
    except ValueError:
        value = None
    if not isinstance(value, int):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return value


def _above_zero(kind: type) -> Callable[[str], float]:
    """An argparse type: a finite number of ``kind`` greater than 0."""
    def parse(text: str) -> float:
        value = (_whole if kind is int else kind)(text)
        if not 0 < value < float("inf"):
            raise ValueError(text)
        return value

    parse.__name__ = f"{kind.__name__} > 0"  # named in argparse's "invalid ... value" message
    return parse


def _bounds(args: argparse.Namespace) -> dict[str, float]:
    """The :class:`Gateway` arguments of the bounds flags."""
    return {"max_connections": args.max_connections, "keepalive_timeout": args.keepalive_timeout,
            "header_timeout": args.header_timeout, "body_timeout": args.body_timeout,
            "send_timeout": args.send_timeout}


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The scenario the flags describe: ``--config`` (or the defaults), then ``--clients N``
    (closed loop of N clients) or ``--rate R`` (open loop at R per second),
    ``--max-in-flight N``, ``--stream-share S``, ``--max-tokens N``, ``--retry-policy P``
    and ``--client-timeout S`` (``workload.timeout``), and a gateway's ``--limiter-backend``
    and ``--redis-url`` (``limiter.backend``, ``limiter.redis_url``) merged in and validated
    like the file,
    so an error names the flag and its value. Also checks that the
    ``--json`` file can be written. Raises :class:`ConfigError`."""
    scenario = read_scenario(args.config) if args.config else Scenario()
    if args.clients is not None:
        scenario = config.merge(scenario, {"workload": {"mode": "closed", "clients": args.clients}}, "--clients")
    if args.rate is not None:
        scenario = config.merge(scenario, {"workload": {"mode": "open", "rate": args.rate}}, "--rate")
    for flag, field in (("--max-in-flight", "max_in_flight"), ("--stream-share", "stream_share"),
                        ("--max-tokens", "max_tokens"), ("--retry-policy", "retry_policy"),
                        ("--client-timeout", "timeout")):
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            scenario = config.merge(scenario, {"workload": {field: value}}, flag)
    for flag, field in (("--limiter-backend", "backend"), ("--redis-url", "redis_url")):
        value = getattr(args, flag[2:].replace("-", "_"), None)  # --redis-url: a gateway's flag, not simulate's
        if value is not None:
            scenario = config.merge(scenario, {"limiter": {field: value}}, flag, at_start=True)
    check_writable("--json", args.json)
    return scenario


OUTPUT_FLAGS = ("--json", "--report", "--scrape-config", "--out")
"""The flags naming a file a command writes."""
STDOUT = "-"
"""What an output flag names for standard output, as Unix commands read ``-``: the output goes
there, and what the command prints there otherwise goes to stderr (``./-`` names a file
``-``)."""


def _file(text: str) -> Path:
    """An argparse type: a file's path, not empty (``Path("")`` is the working directory)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    return Path(text)


def _output(text: str) -> Path | str:
    """An argparse type: the file an output flag names, or :data:`STDOUT`."""
    return STDOUT if text == STDOUT else _file(text)


STDIN = "-"
"""What ``--config`` or ``gwlab sweep``'s ``SCENARIO`` names for standard input, as Unix
commands read ``-`` (``./-`` names a file ``-``)."""
STDIN_SOURCE = "standard input"
"""What messages name a scenario read from standard input by."""


def _input(text: str) -> Path | str:
    """An argparse type: the scenario file an input argument names, or :data:`STDIN`."""
    return STDIN if text == STDIN else _file(text)


def _input_name(named: Path | str) -> str:
    """A scenario's file, or standard input, as messages name it."""
    return STDIN_SOURCE if named == STDIN else str(named)


def read_scenario(named: Path | str) -> Scenario:
    """The scenario in the file ``named``, or on standard input for :data:`STDIN` (read to
    its end, at most :data:`~gwlab.config.MAX_SCENARIO_BYTES` as for a file). Raises
    :class:`ConfigError` naming the file or standard input, and :class:`_Interrupted` for
    Ctrl-C or SIGTERM while it waits (on a terminal, a pipe, a FIFO)."""
    with _interruptible(f"reading {_input_name(named)}"):
        if named != STDIN:
            return config.load(named)
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:
            raise ConfigError(f"{STDIN_SOURCE}: cannot read: there is none (it is closed)")
        try:
            raw = stdin.read(config.MAX_SCENARIO_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{STDIN_SOURCE}: cannot read: {exc.strerror or exc}") from None
        return config.parse(raw, STDIN_SOURCE)


INPUT_ARGUMENTS = {"config": "--config", "scenario": "SCENARIO"}
"""The arguments naming the scenario file a command reads (by their ``args`` attribute)."""


def _outputs(args: argparse.Namespace) -> Iterator[tuple[str, Path | str]]:
    """The flags of :data:`OUTPUT_FLAGS` given in ``args``, each with its file: the scrape
    configuration only where it is written, with ``--replicas``."""
    for flag in OUTPUT_FLAGS:
        path = getattr(args, flag[2:].replace("-", "_"), None)
        if path is not None and not (flag == "--scrape-config" and getattr(args, "replicas", 1) == 1):
            yield flag, path


def check_distinct_outputs(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` when two of :data:`OUTPUT_FLAGS` name the same file (or both
    :data:`STDOUT`), or one names the scenario file read (:data:`INPUT_ARGUMENTS`): the second
    written would replace the first, the output the scenario."""
    seen: dict[Path | str, str] = {path.resolve(): name for attribute, name in INPUT_ARGUMENTS.items()
                             if isinstance(path := getattr(args, attribute, None), Path)}
    for flag, path in _outputs(args):
        same = seen.setdefault(path if path == STDOUT else path.resolve(), flag)
        if same != flag:
            raise UsageError(f"{same} and {flag} both name {str(path)!r}: expected a file of its own for each")


def _source(args: argparse.Namespace) -> str:
    """What messages about the scenario of ``args`` name it by: its file, standard input, or
    ``scenario``."""
    return _input_name(args.config) if args.config else "scenario"


def check_writable(flag: str, path: Path | str | None) -> None:
    """Raise :class:`ConfigError` naming ``flag`` unless ``path`` (if given) is a file that
    can be written (or is :data:`STDOUT`): checked before a run, so that its end is not lost to
    a typo."""
    if path is None or path == STDOUT:
        return
    if path.is_dir():
        raise ConfigError(f"{flag}: {str(path)!r} is a directory: expected a file")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag}: {str(path)!r}: expected a file in an existing directory")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise ConfigError(f"{flag}: {str(path)!r}: not writable")


def _check_server_args(args: argparse.Namespace) -> None:
    config.run_argument("host", args.host, "--host")
    for flag, port in (("--port", args.port), ("--metrics-port", args.metrics_port)):
        if not 0 <= port <= config.MAX_PORT:
            raise UsageError(f"{flag} = {port}: expected a port number from 0 to {config.MAX_PORT}")
    config.distinct_ports(args.port, args.metrics_port, args.replicas)
    for flag, value in (("--keepalive-timeout", args.keepalive_timeout), ("--header-timeout", args.header_timeout),
                        ("--body-timeout", args.body_timeout), ("--send-timeout", args.send_timeout)):
        config.run_argument("timeout", value, flag)
    config.run_argument("max_connections", args.max_connections, "--max-connections")
    token = args.admin_token
    if token is not None and not (token and token.isascii() and token.isprintable() and " " not in token):
        # The value is a secret: never shown.
        raise UsageError("--admin-token: expected a token a client can send in 'Authorization: Bearer TOKEN': "
                         "not empty, printable ASCII, no spaces")


def _check_replicas_args(args: argparse.Namespace) -> None:
    if not 1 <= args.replicas <= config.MAX_REPLICAS:
        raise UsageError(f"--replicas = {args.replicas}: expected 1 to {config.MAX_REPLICAS}")
    if args.metrics_port and args.metrics_port + args.replicas - 1 > config.MAX_PORT:
        raise UsageError(f"--metrics-port = {args.metrics_port}: the replicas' metrics ports "
                         f"{args.metrics_port} to {args.metrics_port + args.replicas - 1} must be at most "
                         f"{config.MAX_PORT}")
    check_writable("--scrape-config", args.scrape_config)


def _check_run_args(args: argparse.Namespace) -> None:
    if args.duration is not None:
        config.run_argument("duration", args.duration, "--duration")


def build_parser() -> argparse.ArgumentParser:
    """The ``gwlab`` argument parser with its subcommands."""
    parser = _Parser(prog="gwlab", description="The resilience patterns of an LLM API gateway, live.")
    parser.add_argument("--version", action="version", version=f"gwlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    run = commands.add_parser(
        "run", help="gateway + metrics + load generator, with a live status",
        description="Run the gateway and its metrics server, drive them with client processes "
                    "(closed loop by default, open loop with --rate) and show a live status every "
                    "second. Stops after --duration, or on Ctrl-C / SIGTERM, then prints a summary.")
    add_scenario_arguments(run)
    run.add_argument("--duration", metavar="SECONDS", type=float,
                     help="stop after SECONDS (default: run until Ctrl-C or SIGTERM)")
    _add_server_arguments(run)
    run.set_defaults(handler=_run)
    serve = commands.add_parser(
        "serve", help="gateway + metrics only, for outside clients",
        description="Run the gateway and its metrics server for outside clients (curl, the OpenAI "
                    "SDK, wrk, a browser) until Ctrl-C or SIGTERM.")
    serve.add_argument("--config", metavar="FILE", type=_input,
                       help="scenario TOML file, - for stdin (default: the seed scenario)")
    serve.add_argument("--seed", metavar="N", type=_whole, default=config.SEED,
                       help=f"random seed (default {config.SEED})")
    _add_server_arguments(serve)
    serve.set_defaults(handler=_serve, clients=None, rate=None, max_in_flight=None, stream_share=None,
                       max_tokens=None, retry_policy=None, client_timeout=None, json=None)
    simulate = commands.add_parser(
        "simulate", help="replay the scenario in virtual time, deterministically",
        description="Run the scenario's gateway, providers and clients as a discrete-event "
                    "simulation: no sockets, virtual time, the same seed giving the same numbers. "
                    "Prints the summary; --json writes summary, time series and breaker "
                    "transitions; --report writes an HTML page with the figures that opens offline.")
    add_scenario_arguments(simulate)
    simulate.add_argument("--duration", metavar="SECONDS", type=float, required=True,
                          help="simulated seconds to run")
    simulate.add_argument("--report", metavar="FILE.html", type=_output,
                          help="write an offline HTML report with the run's figures (- for stdout)")
    simulate.add_argument("--replicas", metavar="N", type=_whole, default=config.REPLICAS,
                          help=f"gateways sharing the providers, each request reaching one drawn at random, "
                               f"1 to {config.MAX_REPLICAS} (default {config.REPLICAS})")
    simulate.add_argument("--limiter-backend", metavar="BACKEND",
                          help=f"limiter.backend: {' or '.join(config.LIMITER_BACKENDS)} (redis: one bucket "
                               f"for every replica, kept exactly in virtual time; default {config.LIMITER_BACKEND})")
    _add_sweep_parser(commands)
    return parser


def _add_sweep_parser(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep", help="simulate every combination of parameter values, in parallel; a CSV row per run",
        description="Simulate SCENARIO (default: the seed scenario) for --duration at every combination of "
                    "the --grid values, with each seed, in parallel processes, and write one CSV row per run: "
                    "the grid's values, the seed, offered, admitted, goodput, availability, latency_p50 and "
                    "latency_p99 (seconds), trips, saturated and retries. The rows are the same whatever "
                    "--workers. A progress bar goes to stderr when it is a terminal.")
    sweep.add_argument("scenario", metavar="SCENARIO", nargs="?", type=_input,
                       help="scenario TOML file, - for stdin (default: the seed scenario)")
    sweep.add_argument("--grid", metavar="PATH=V1,V2,...", action="append", required=True,
                       help="a dotted field of the scenario and its values, e.g. workload.rate=500,1000 or "
                            "providers.p1.outage=none,error (events.0.at for the first event's time); each value "
                            "typed as TOML types it: 1000 a whole number, 0.5 a number, true a boolean, [502, 504] "
                            "an array, anything else a string. Repeat for more fields: every combination runs")
    sweep.add_argument("--duration", metavar="SECONDS", type=float, required=True,
                       help="simulated seconds of each run")
    seeds = sweep.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", metavar="N", type=_whole, default=1,
                       help="run each point with seeds 1 to N (default 1)")
    seeds.add_argument("--seed-list", metavar="S1,S2,...",
                       help="run each point with these seeds")
    sweep.add_argument("--workers", metavar="N", type=_above_zero(int),
                       help=f"processes running simulations (default: one per core, {os.cpu_count()} here; "
                            "1 runs them in this process)")
    sweep.add_argument("--measure", choices=("summary", "recovery"), default="summary",
                       help="what each row takes from its run: summary (the columns above) or recovery (the run "
                            "judged around its trigger, from the scenario's first event to its second: trigger, "
                            "baseline, persists, recovered, recovered_after; DESIGN's definitions)")
    sweep.add_argument("--out", metavar="FILE.csv", type=_output,
                       help="write the CSV to FILE (default, or -: stdout)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # Whoever read the output has gone (``gwlab simulate ... | head``): stop quietly,
        # with stdout pointed at /dev/null so the interpreter's final flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_distinct_outputs(args)
    except UsageError as exc:
        return _fail(str(exc))
    args.stdout = sys.stdout  # where an output naming STDOUT goes
    if any(path == STDOUT for _, path in _outputs(args)):
        with contextlib.redirect_stdout(sys.stderr):
            return _command(args)
    return _command(args)


def _command(args: argparse.Namespace) -> int:
    try:
        if args.command == "sweep":
            return _sweep(args)
        config.run_argument("seed", args.seed, "--seed")
        if args.command == "simulate":
            _check_run_args(args)
            config.run_argument("replicas", args.replicas, "--replicas")
            check_writable("--report", args.report)
            return _simulate(args, scenario_from_args(args))
        # run and serve open sockets: their modules are imported only here, after a check that
        # says in one line what is missing (in the browser site, or an install without them).
        needs(f"gwlab {args.command}")
        from gwlab.forward import keys

        _check_server_args(args)
        if args.command == "run":
            _check_run_args(args)
        if args.replicas != 1:
            _check_replicas_args(args)
        scenario = scenario_from_args(args)
        keys(scenario, _source(args))  # a real upstream's key: there before anything starts
        if args.command == "run":  # its clients' requests, which the limits must be able to admit
            check_reservations(scenario, _source(args))
    except (UsageError, ConfigError, FullInstallNeeded) as exc:
        return _fail(str(exc))
    except _Interrupted as exc:
        print(f"gwlab: {exc}", file=sys.stderr)
        return exc.status
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(args.handler(args, scenario))
    except ChildError as exc:  # the clients' processes did not start; every replica gone at the end of a run
        print(f"gwlab: error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # an output that could not be written (--json, --scrape-config), as simulate's
        return _fail(str(exc))


def _simulate(args: argparse.Namespace, scenario: Scenario) -> int:
    """``gwlab simulate``: raises :class:`ConfigError` for a bad duration or scenario."""
    from gwlab import report
    from gwlab.sim import simulate

    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    written: list[str] = []
    with _interruptible("simulate", written):
        result = simulate(scenario, args.duration, args.seed, progress=progress, replicas=args.replicas,
                          source=_source(args))
        # Every output is made before any is written (a report takes seconds to render), so
        # that an interrupt then leaves none.
        outputs = {flag: make() for flag, make in (("--json", lambda: result.to_json() + "\n"),
                                                   ("--report", lambda: report.render(result)))
                   if getattr(args, flag[2:]) is not None}
        for line in summary_lines(result.summary()):
            print(line)
        for flag, text in outputs.items():
            _write_whole(args, flag, lambda out: out.write(text))
            written.append(flag)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """``gwlab sweep``: raises :class:`UsageError` or :class:`ConfigError` for a bad flag or
    scenario, before any run."""
    from gwlab.metastability import judge
    from gwlab.sweep import Plan, write_csv

    config.run_argument("duration", args.duration, "--duration")
    check_writable("--out", args.out)
    grid: dict[str, list] = {}
    for text in args.grid:
        path, values = _grid_flag(text)
        if path in grid:
            raise UsageError(f"--grid {path}: given twice: expected each path once, its values separated by commas")
        grid[path] = values
    measure = judge if args.measure == "recovery" else None
    seeds = _seeds_flag(args)
    with _interruptible("sweep"):  # its worker processes stopped, by SIGTERM too
        scenario = read_scenario(args.scenario) if args.scenario else None
        plan = Plan(scenario, grid, args.duration, seeds, measure=measure, source="--grid")
        rows = plan.run(workers=args.workers)
        if args.out is not None:
            _write_whole(args, "--out", lambda out: write_csv(rows, out))
    if args.out is None:
        write_csv(rows, sys.stdout)
    else:
        print(f"{len(rows)} runs ({len(plan.points)} points x {len(plan.seeds)} seeds) written to {_named(args.out)}")
    return 0


def _write_whole(args: argparse.Namespace, flag: str, write: Callable[[Any], None]) -> None:
    """``write(out)`` into the file ``flag`` names in ``args``, whole or not at all: into a file
    beside it, renamed over it once complete, so that an interrupt or a full disk leaves no file
    that looks complete (only the one there before, if any). :data:`STDOUT` is standard output;
    what is not a regular file (``/dev/stdout``, a pipe) is written as it is. Raises
    :class:`ConfigError` naming ``flag`` when it cannot be written (a reader of standard output
    gone raises :class:`BrokenPipeError`, as a print does)."""
    path = getattr(args, flag[2:].replace("-", "_"))
    try:
        if path == STDOUT:
            write(args.stdout)
            args.stdout.flush()
            return
        target = Path(os.path.realpath(path))  # a link is followed, not replaced
        whole = not target.exists() or target.is_file()
        part = target.with_name(f"{target.name}.part") if whole else target
        try:
            with part.open("w", encoding="utf-8", newline="") as out:
                write(out)
            if whole:
                os.replace(part, target)
        except BaseException:
            if whole:
                part.unlink(missing_ok=True)
            raise
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise ConfigError(f"{flag}: {str(path)!r}: cannot write: {exc.strerror or exc}") from None


def _named(path: Path | str) -> str:
    """An output file as a line on the terminal names it."""
    return "standard output" if path == STDOUT else str(path)


class _Interrupted(Exception):
    """A command ended by Ctrl-C or SIGTERM, having written nothing or what its line names: its
    line for stderr, and its exit status (``status``: 130 or 143, as a shell gives a process the
    signal ended)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@contextlib.contextmanager
def _interruptible(command: str, written: Sequence[str] = ()) -> Iterator[None]:
    """The block of ``command`` (a command, or what one does: ``reading FILE``) ended by
    Ctrl-C or by SIGTERM alike (kill, a scheduler ending the job: by default SIGTERM would end
    this process alone, with no word, and any worker processes would run on), raising
    :class:`_Interrupted` rather than a traceback. Its message says which outputs the block
    had ``written`` by then (the flags naming them), or that it wrote nothing."""
    previous = signal.signal(signal.SIGTERM, functools.partial(terminated, os.getpid()))
    try:
        yield
    except KeyboardInterrupt as interrupt:
        done = f"{' and '.join(written)} written, nothing else" if written else "nothing written"
        raise _Interrupted(f"{command} interrupted: {done}", status(interrupt)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _grid_flag(text: str) -> tuple[str, list]:
    """``PATH=V1,V2,...`` as the path and its values, each typed as TOML types it, or a string
    when it is not TOML (``none,error``)."""
    path, equals, values = text.partition("=")
    path = path.strip()
    if not equals or not path:
        raise UsageError(f"--grid {text!r}: expected PATH=V1,V2,..., like workload.rate=500,1000")
    try:
        return path, _toml_values(values)
    except ValueError as exc:
        raise UsageError(f"--grid {text!r}: not TOML ({exc}): expected values as TOML writes them, a string "
                         "holding brackets, braces or quotes in quotes") from None


def _toml_values(text: str) -> list:
    """``V1,V2,...`` as TOML reads the array ``[V1,V2,...]``, or else each value as
    :func:`_toml` reads it. Raises :class:`ValueError` with TOML's reason when that array is
    not TOML and the text has brackets, braces or quotes: a table, an array or a string meant
    (a comma inside one would split it)."""
    try:
        document = tomllib.loads(f"v = [{text}]")
    except tomllib.TOMLDecodeError as exc:
        if any(mark in text for mark in "[]{}\"'"):
            raise ValueError(re.sub(r" \(at (line \d+, column \d+|end of document)\)$", "", str(exc))) from None
    else:
        if list(document) == ["v"]:
            return document["v"]
    return [_toml(item.strip()) for item in text.split(",")]


def _toml(text: str) -> object:
    """``text`` as TOML reads the value ``v = text``, or ``text`` itself when it is not one."""
    try:
        document = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return document["v"] if list(document) == ["v"] else text


def _seeds_flag(args: argparse.Namespace) -> int | list[int]:
    if args.seed_list is None:
        if not 1 <= args.seeds <= config.MAX_SWEEP_RUNS:
            raise UsageError(f"--seeds = {args.seeds}: expected a whole number from 1 to {config.MAX_SWEEP_RUNS} "
                             "(seeds 1 to N)")
        return args.seeds
    seeds = []
    for item in args.seed_list.split(","):
        seed = config.whole_number(_toml(item.strip()))
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UsageError(f"--seed-list {args.seed_list!r}: expected whole numbers separated by commas, like 1,2,3")
        seeds.append(config.run_argument("seed", seed, "--seed-list"))
    if len(set(seeds)) < len(seeds):
        raise UsageError(f"--seed-list {args.seed_list!r}: expected distinct seeds (a seed gives the same run every "
                         "time)")
    return seeds


class _Progress:
    """Progress of a simulation on a terminal: one line rewritten in place, shown only once
    the run has taken more than :data:`PROGRESS_AFTER` seconds."""

    def __init__(self, out) -> None:
        self.out = out
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, done: float) -> None:
        elapsed = time.monotonic() - self.started
        if not self.shown and elapsed < PROGRESS_AFTER:
            return
        self.shown = True
        end = "\n" if done >= 1.0 else ""
        self.out.write(f"\rsimulating {done:6.1%}  {elapsed:5.1f}s{end}")
        self.out.flush()


def _fail(message: str) -> int:
    print(f"gwlab: error: {message}", file=sys.stderr)
    return EXIT_USAGE


async def _start(gateway: Gateway, args: argparse.Namespace) -> bool:
    """Start ``gateway`` and print its URLs; ``False`` (after one line on stderr) when it
    cannot listen."""
    try:
        await gateway.start(args.host, args.port, args.metrics_port)
    except OSError as exc:
        where = f"{args.host} (ports {args.port} and {args.metrics_port})"
        _fail(str(exc) if exc.strerror is None else f"cannot listen on {where}: {exc.strerror}")
        return False
    print(f"gateway  {gateway.url}", flush=True)
    print(f"metrics  {gateway.metrics_url}", flush=True)
    return True


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (instead of KeyboardInterrupt or death). A second
    signal ends the process at once, killing its child processes (the load generator's
    workers) first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_or_quit(sig: signal.Signals) -> None:
        if not stop.is_set():
            stop.set()
            return
        for child in multiprocessing.active_children():
            child.kill()
        print(f"gwlab: {sig.name} again: exiting at once", file=sys.stderr, flush=True)
        os._exit(128 + sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_or_quit, sig)
    return stop


async def _serve(args: argparse.Namespace, scenario: Scenario) -> int:
    from gwlab.server import Gateway

    if args.replicas != 1:
        return await _serve_replicas(args, scenario)
    stop = _stop_on_signals()
    gateway = Gateway(scenario, args.seed, admin_token=args.admin_token, **_bounds(args))
    if not await _start(gateway, args):
        return EXIT_USAGE
    try:
        await stop.wait()
    finally:
        await gateway.stop()
    return 0


async def _start_replicas(replicas: Replicas, args: argparse.Namespace) -> bool:
    """Start ``replicas``, write their scrape configuration and print their URLs; ``False``
    (after one line on stderr) when they cannot start."""
    from gwlab.replicas import ReplicaError, scrape_config

    try:
        await replicas.start(args.host, args.port, args.metrics_port)
    except (OSError, ReplicaError) as exc:
        where = f"{args.host} (port {args.port}, metrics ports from {args.metrics_port})"
        _fail(str(exc) if not isinstance(exc, OSError) or exc.strerror is None
              else f"cannot listen on {where}: {exc.strerror}")
        return False
    _write_whole(args, "--scrape-config", lambda out: out.write(scrape_config(replicas.targets())))
    print(f"gateway  {replicas.url} ({replicas.count} replicas)", flush=True)
    for index, (url, pid) in enumerate(zip(replicas.metrics_urls, replicas.pids)):
        print(f"metrics  {url} (replica {index}, pid {pid})", flush=True)
    print(f"Prometheus scrape configuration: {_named(args.scrape_config)}", flush=True)
    return True


async def _serve_replicas(args: argparse.Namespace, scenario: Scenario) -> int:
    """``gwlab serve --replicas N``: N gateways on one port, until a signal, or until every
    one has ended unexpectedly (exit status 1: nothing serves the port any more)."""
    from gwlab.replicas import Replicas

    stop = _stop_on_signals()
    replicas = Replicas(scenario, args.seed, args.replicas, admin_token=args.admin_token, **_bounds(args))
    try:
        if not await _start_replicas(replicas, args):
            return EXIT_USAGE
        await _first_of(stop, replicas.gone)
    finally:
        await replicas.stop()
    return _gone(replicas) if not stop.is_set() else 0


async def _first_of(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Wait until one of ``events`` is set, or ``timeout`` seconds have passed."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _gone(served: _Served) -> int:
    """The exit status of a command whose gateways are ``served``: 1 (after one line on
    stderr) once every one of them has ended unexpectedly, else 0."""
    if not served.gone.is_set():
        return 0
    _fail(f"every one of the {len(served.lost)} replicas ended unexpectedly; nothing serves {served.url}")
    return 1


class _Served(Protocol):
    """What ``gwlab run`` drives its clients at: the gateways at ``url``, either
    :class:`~gwlab.replicas.Replicas` or one gateway (:class:`_OneGateway`, replica 0 of
    one), of which those in ``lost`` (by index) ended unexpectedly; ``gone`` is set once every
    one has."""

    url: str
    lost: list[int]
    gone: asyncio.Event

    @property
    def scenario(self) -> Scenario:
        """The scenario the gateways run now, ``PATCH /admin/config``'s changes included."""

    def configure(self, patch: Mapping[str, Any], source: str) -> Scenario:
        """Apply ``patch`` in every gateway; the scenario they now run."""

    async def snapshots(self, timeout: float | None = None) -> dict[int, Snapshot]:
        """The router state of every gateway that answers within ``timeout`` seconds, by
        index."""

    async def ends(self) -> dict[int, dict[str, Any]]:
        """What each gateway counted for the run's summary, by index: its breakers'
        openings (``trips``), ``fallbacks``, retry ``decisions`` and the requests it holds now
        (``in_flight``, read as the run's cut-off ends)."""

    async def cut_off_after(self, grace: float) -> None:
        """Have every gateway cut off the requests still in flight after ``grace`` seconds
        (:meth:`Gateway.cut_off_after`)."""

    async def stop(self, *, final_scrape: bool = False) -> None:
        """Stop every gateway, after one last scrape of each scraped one with
        ``final_scrape``."""


class _OneGateway:
    """One gateway served as :class:`_Served`: replica 0 of one, never lost (it runs in this
    process), so never ``gone``. ``signalled`` ends the wait for a final scrape."""

    def __init__(self, gateway: Gateway, signalled: asyncio.Event) -> None:
        from gwlab.metrics import Scrapes

        self.gateway = gateway
        self.url = gateway.url
        self.lost: list[int] = []
        self.gone = asyncio.Event()
        self.trips = Trips()
        gateway.router.subscribe(self.trips)
        self.scrapes = Scrapes()
        gateway.metrics.registry.register(self.scrapes)
        self.signalled = signalled

    @property
    def scenario(self) -> Scenario:
        return self.gateway.scenario

    def configure(self, patch: Mapping[str, Any], source: str) -> Scenario:
        return self.gateway.configure(patch, source)

    async def snapshots(self, timeout: float | None = None) -> dict[int, Snapshot]:
        """The gateway's router state, at once: it runs on this loop, so it answers within
        any ``timeout``."""
        return {0: self.gateway.snapshot()}

    async def ends(self) -> dict[int, dict[str, Any]]:
        metrics = self.gateway.metrics
        return {0: {"trips": self.trips.counts, "fallbacks": metrics.fallbacks, "decisions": metrics.decisions,
                    "in_flight": metrics.registry.get_sample_value("gwlab_in_flight_requests")}}

    async def cut_off_after(self, grace: float) -> None:
        await self.gateway.cut_off_after(grace)

    async def stop(self, final_scrape: bool = False) -> None:
        if final_scrape:
            await self.scrapes.final(self.signalled)
        await self.gateway.stop()


async def _run(args: argparse.Namespace, scenario: Scenario) -> int:
    from gwlab.loadgen import LoadGenerator, worker_count
    from gwlab.replicas import ReplicaError, Replicas
    from gwlab.server import Gateway

    stop = _stop_on_signals()
    if args.replicas == 1:
        gateway = Gateway(scenario, args.seed, admin_token=args.admin_token, **_bounds(args))
        if not await _start(gateway, args):
            return EXIT_USAGE
        served: _Served = _OneGateway(gateway, stop)
    else:
        replicas = Replicas(scenario, args.seed, args.replicas, admin_token=args.admin_token, **_bounds(args))
        if not await _start_replicas(replicas, args):
            await replicas.stop()
            return EXIT_USAGE
        served = replicas
    view = LiveView(sys.stdout, redraw=sys.stdout.isatty())
    workloads = (scenario.workload, *(step.scenario.workload for step in steps(scenario)))
    # The gateway decides which answers came within the clients' grace; they wait past it
    # for what it decided, and count each request as it does.
    clients = LoadGenerator(served.url, scenario.workload, args.seed, workers=max(map(worker_count, workloads)),
                            grace=config.CLIENT_GRACE + config.CUT_OFF_MARGIN, follow_users=follows_users(scenario))
    player = event_player(scenario, served, clients, view)
    ended = False
    try:
        player.play(0.0)
        await clients.start()
        playing = asyncio.create_task(follow(player, time.monotonic, clients.started_at))
        try:
            await _watch(clients, served, view, stop, args.duration)
        finally:
            playing.cancel()
            await asyncio.gather(playing, return_exceptions=True)
        await asyncio.gather(clients.stop(), served.cut_off_after(config.CLIENT_GRACE))
        snapshots, ends = await asyncio.gather(served.snapshots(), served.ends())
        answered = sorted(set(snapshots) & set(ends))
        if not answered and not served.gone.is_set():
            raise ReplicaError("no replica answered at the end of the run: there is no summary to give")
        if answered:
            result = summarise(
                clients.tally, mode="live", seed=args.seed, scenario=scenario, duration=clients.elapsed,
                sent=clients.sent, saturated=clients.saturated, workloads=clients.workloads,
                end=snapshots[answered[0]], trips=_total(ends[i]["trips"] for i in answered),
                fallbacks=_total(ends[i]["fallbacks"] for i in answered), events_refused=player.refused,
                retries=_total(ends[i]["decisions"] for i in answered),
                replicas=[{"replica": i, "end": snapshots[i], **ends[i]} for i in answered] if args.replicas > 1
                else (),
            )
            result["gateway_in_flight_at_end"] = sum(ends[i]["in_flight"] for i in answered)
            missing = sorted(set(range(args.replicas)) - set(answered))
            if missing:
                result["replicas_lost"] = missing
            ended = True
    finally:
        await clients.stop()
        await served.stop(final_scrape=ended)
    if ended:  # else every replica ended unexpectedly before it could answer: there is no summary to give
        if clients.lost:
            result["workers_killed"] = clients.lost
        view.print(summary_lines(result))
        if args.json is not None:
            text = json.dumps(result, indent=2, sort_keys=True) + "\n"
            _write_whole(args, "--json", lambda out: out.write(text))
    return _gone(served)


def _total(counts: Iterable[Mapping[str, int]]) -> Counter[str]:
    """The sum of ``counts``, key by key."""
    total: Counter[str] = Counter()
    for each in counts:
        total.update(each)
    return total


def event_player(scenario: Scenario, gateway: Gateway | _Served, clients: LoadGenerator,
                 view: LiveView) -> Player:
    """The player of ``scenario``'s events in ``gwlab run``: an event's patch goes to the
    gateway's scenario as it stands (``PATCH /admin/config`` may have changed it), or to every
    replica's, the resulting workload to the clients, and the event's line to ``view``."""

    def apply(event: Event, source: str) -> None:
        changed = gateway.configure(event.patch, source)
        if "workload" in event.patch:
            clients.apply(changed.workload)
        view.print([describe(event)])

    return Player(scenario, apply)


async def _watch(clients: LoadGenerator, served: _Served, view: LiveView,
                 stop: asyncio.Event, duration: float | None) -> None:
    """Redraw the live status every :data:`REFRESH` seconds until ``stop`` is set, every
    gateway of ``served`` is ``gone`` or ``duration`` seconds of sending have passed, however
    late the loop wakes up; at each, the clients follow the workload the gateways run (a
    ``PATCH /admin/config`` may have changed it). The ticks
    fall half-way between two tally reports of the workers, so each view counts whole
    report intervals."""
    from gwlab.loadgen import REPORT_INTERVAL

    start = clients.started_at or time.monotonic()
    end = None if duration is None else start + duration
    tick = last = start + REPORT_INTERVAL / 2
    shown: dict[int, Snapshot] = {}
    """Each gateway's router state as the status shows it, by index."""
    while not (stop.is_set() or served.gone.is_set()):
        tick += REFRESH
        while tick < time.monotonic():  # a busy loop fell behind: skip the ticks it missed
            tick += REFRESH
        wake = tick if end is None else min(tick, end)
        await _first_of(stop, served.gone, timeout=max(0.0, wake - time.monotonic()))
        now = time.monotonic()
        if now < tick:
            # Stopped between two ticks: a part-interval would hold a whole or no report of
            # each worker and show rates that were never there. The summary follows.
            break
        clients.apply(served.scenario.workload)  # a PATCH /admin/config of the workload: within a refresh
        interval, sent, saturated = clients.take_interval()
        # A replica that does not answer within half a refresh is shown as it last was; one
        # that ended, no longer.
        shown.update(await served.snapshots(REFRESH / 2))
        for index in served.lost:
            shown.pop(index, None)
        if shown:
            snapshots = [shown[index] for index in sorted(shown)]
            view.show(status_lines(interval, now - last, sent, clients.tally, snapshots, now - start, saturated,
                                   shared=served.scenario.limiter.backend == "redis"))
        last = now
        if end is not None and now >= end:
            break
