"""Parameter sweeps: one simulation per grid point and seed, run in parallel, as a table.

::

    from gwlab.sweep import sweep
    table = sweep("scenarios/seed.toml", {"workload.rate": [500, 1000, 2000], "retry.attempts": [1, 3]},
                  duration=60, seeds=5)

simulates every combination of the grid's values (3 x 2 points here) with each seed (1 to 5)
for 60 simulated seconds, and returns one row per run: the grid's values, the seed, and what
the measure took from the run (by default :func:`summary_measure`: offered, admitted,
goodput, availability, latency p50 and p99, trips ...).

A run is a pure function of its point and its seed (:func:`gwlab.simulate` gives the same
result for the same scenario and seed in any process), and each row is placed by its index,
never by the order in which runs finish: the rows are the same, value for value, whoever
runs them, this process (``workers=1``), a pool of processes (the default) or any
:class:`concurrent.futures.Executor` given, such as a dask cluster's
(``distributed.Client(cluster).get_executor()``).

The grid is checked whole before anything runs (:class:`Plan`): every point's scenario is
built and checked as :func:`gwlab.simulate` checks it, and as the measure's own ``check``
does (:data:`gwlab.metastability.judge` needs a trigger it can judge), so a bad value fails
at once with a :class:`~gwlab.config.ConfigError` naming the path, the value and what is
allowed, not after an hour of runs. A sweep holds at most :data:`gwlab.config.MAX_SWEEP_RUNS` runs, and hands
an executor at most two runs per worker at a time: a large grid is never queued whole, and
its scenarios are built again as their runs are handed out rather than kept.

Rows go to a CSV file and come back, each value of its type, with :func:`write_csv` and
:func:`read_csv` (``gwlab sweep --out`` writes one).
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
import os
import pickle
import signal
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set, Sized
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import IO, Any, Callable, Union

from gwlab import config, sim
from gwlab.config import ConfigError, Scenario
from gwlab.sim import SimResult, simulate

Value = Union[float, int, bool, str, None]
"""What a measure may put in a row: a number, a boolean, a string or ``None`` (nothing to
measure, such as a latency with no request admitted)."""
Measure = Callable[[SimResult], Mapping[str, Value]]
Row = dict[str, Any]
SEED = "seed"
"""The column of each row's seed, between the grid's paths and the measure's keys."""


def summary_measure(result: SimResult) -> dict[str, Value]:
    """The default measure: a flat dict from ``result.summary()``.

    - ``offered``, ``admitted``: requests (ints); ``goodput`` (200 / offered) and
      ``availability`` (200 / admitted), floats from 0 to 1, ``None`` over no request;
    - ``latency_p50``, ``latency_p99``: seconds, over the admitted requests, ``None`` when
      none was admitted;
    - ``trips``: breaker openings, all providers;
    - ``saturated``: open-loop arrivals not sent for ``workload.max_in_flight`` (0 when none);
    - ``retries``: failed attempts the gateway tried again (0 when it did not retry);
    - ``user_goodput`` and ``attempts_per_request``: for clients that time out or retry, the
      summary's ``user_requests.goodput`` and ``attempts_per_request`` (``None`` otherwise).

    The summary has more (per provider, per status, tokens): a measure of your own can take
    any of it, or anything else of the :class:`~gwlab.sim.SimResult`."""
    s = result.summary()
    return {
        "offered": s["offered"],
        "admitted": s["admitted"],
        "goodput": s["goodput"],
        "availability": s["availability"],
        "latency_p50": s["latency"]["p50"],
        "latency_p99": s["latency"]["p99"],
        "trips": s["trips"],
        "saturated": s.get("saturated", 0),
        "retries": s.get("retries", {}).get("retry", 0),
        "user_goodput": s.get("user_requests", {}).get("goodput"),
        "attempts_per_request": s.get("user_requests", {}).get("attempts_per_request"),
    }


def sweep(
    scenario: Scenario | Mapping[str, Any] | str | Path | None,
    grid: Mapping[str, Iterable[Any]],
    duration: float,
    seeds: int | Iterable[int],
    *,
    measure: Measure | None = None,
    executor: Executor | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    bin_width: float = config.BIN_WIDTH,
):
    """Simulate ``scenario`` at every point of ``grid`` with every seed; one row per run.

    - ``scenario``: what :func:`gwlab.simulate` accepts (a Scenario, plain data in the TOML
      shape, a TOML file's path, ``None`` for the seed scenario).
    - ``grid``: dotted paths into the scenario's TOML shape (see :class:`Plan`), each with a
      non-empty list of distinct values (or a 1-dimensional NumPy array, or any iterable but a
      set, whose order changes with the process: at most :data:`gwlab.config.MAX_SWEEP_RUNS`
      values are read); the points are every combination
      of the values, the first path varying slowest. An empty grid is one point: the
      scenario as it is.
    - ``duration``: simulated seconds of each run; ``bin_width`` as :func:`gwlab.simulate`
      takes it.
    - ``seeds``: a whole number n (seeds 1 to n) or a list of distinct seeds (or an array or
      an iterable of them, as a grid's values).
    - ``measure(result) -> dict``: what a run's row holds besides its point and seed, the
      same keys for every run, each value a number, a boolean, a string or ``None``
      (default :func:`summary_measure`). It runs in the worker processes, so it must be
      picklable: a function defined at the top level of a module, or an instance of a class
      defined there (a lambda or a nested function works only with ``workers=1`` or an
      executor of threads; a :class:`~concurrent.futures.ProcessPoolExecutor` given needs it
      picklable too). A measure with a method ``check(scenario, duration, bin_width,
      source)``, such as :data:`gwlab.metastability.judge`, has it called for every point
      before any run: it raises :class:`~gwlab.config.ConfigError` naming ``source`` for a
      point whose runs it could not measure.
    - ``executor``: any :class:`concurrent.futures.Executor` to run on (a dask cluster's
      ``Client(cluster).get_executor()``); it is used, not shut down. Without one, a
      :class:`~concurrent.futures.ProcessPoolExecutor` of ``workers`` processes (default
      ``os.cpu_count()``) is started and shut down at the end, its processes stopped even
      when a run fails or the sweep is interrupted, however early (its workers ignore Ctrl-C,
      which a terminal sends them too: this process stops them); ``workers=1`` runs in this
      process, with no pool (a NumPy integer does as an int). ``workers`` also sets how many runs an
      executor given holds at a time (two per worker).
    - ``progress``: a progress bar (tqdm; a widget in a notebook) when true; ``None``, when
      stderr is a terminal.

    Returns the rows in the order of the points, then of the seeds: the grid's paths as
    columns, then ``seed``, then the measure's keys. A ``pandas.DataFrame`` when pandas is
    installed (the ``sweep`` extra: ``pip install gwlab[sweep]``), else a list of dicts with
    the same columns as keys.

    Raises :class:`~gwlab.config.ConfigError` for a bad scenario, grid, duration, seeds or
    workers, or a point the measure's ``check`` refuses, before any run; :class:`TypeError`
    for a measure that is not callable or cannot reach the worker processes, or that returns
    other keys or values than above; and whatever a run raised (or the executor, refusing
    it: one shut down), with a note naming its point and seed: of the runs that fail, the
    first in the rows' order, the same whatever the executor and the number of workers."""
    plan = Plan(scenario, grid, duration, seeds, measure=measure, bin_width=bin_width)
    rows = plan.run(executor=executor, workers=workers, progress=progress)
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows, columns=list(rows[0]))


def write_csv(rows: Sequence[Mapping[str, Value]], out: IO[str]) -> None:
    """``rows`` (:meth:`Plan.run`'s, or :func:`sweep`'s as a list of dicts) as CSV to the text
    stream ``out`` (opened with ``newline=""``), a header line first: ``None`` as an empty
    field, booleans as ``True`` and ``False``, floats as Python writes them, a table or an
    array (a grid's value may be one) as JSON (so that :func:`read_csv` reads them back
    exactly, an array as a list). Lines end in CRLF, as RFC 4180 has them: the
    csv module quotes a field holding a line break only if the break is part of the line
    ending, and a string with a lone ``\\r`` would otherwise split its row. ``gwlab sweep``
    writes its rows with it. No rows make an empty file, which :func:`read_csv` reads as no rows."""
    if not rows:
        return
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({key: _field(value) for key, value in row.items()} for row in rows)


def _field(value: Any) -> Any:
    """A row's value as :func:`write_csv` hands it to the csv module: a table or an array as
    JSON, anything else as it is."""
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    return value


def read_csv(path: str | Path) -> list[Row]:
    """The rows of a CSV file :func:`write_csv` wrote (``gwlab sweep --out``), each field
    typed back: empty as ``None``, ``True``/``False`` as booleans, a whole number as an int,
    another number as a float (``nan`` and ``inf`` included), a JSON array or object as a list
    or a dict, anything else as a string. A string that reads as one of the others (``"7"``,
    ``"[1]"``) comes back as that. A list of dicts,
    without pandas (``pandas.DataFrame(rows)`` makes a table of them); :func:`gwlab.plots.phase_diagram`
    takes it as it is. Raises :class:`OSError` when the file cannot be read, and
    :class:`UnicodeDecodeError` (a :class:`ValueError`) when it is not UTF-8."""
    with open(path, encoding="utf-8", newline="") as f:
        return [{key: _typed(text) for key, text in row.items()} for row in csv.DictReader(f)]


def _typed(text: str) -> Value:
    """One field of :func:`write_csv` as the value it was written from."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text[0] in "[{":
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than it reads
            pass
    return text


class Plan:
    """The runs of a sweep, checked: the same arguments as :func:`sweep` takes, every point's
    scenario built and checked here, before any run. :meth:`run` runs them.

    A grid path is a dotted key of the scenario's TOML shape
    (:meth:`gwlab.config.Scenario.to_dict`): ``workload.rate``, ``limiter.burst``,
    ``providers.p1.latency``, ``retry.attempts``. A whole number indexes the scenario's
    events, in time order: ``events.0.at``, ``events.1.providers.p1.outage``. A point sets
    its paths' values on the scenario, as a patch would, and leaves the rest as it was (a
    path may also set a table: ``workload`` = ``{"mode": "open", "rate": 500}``); its
    scenario is refused, naming the path and value, wherever :func:`gwlab.simulate` would
    refuse it, or wherever the measure's ``check`` refuses it (see :func:`sweep`). ``source``
    starts the messages about the grid (``--grid`` for the command line)."""

    def __init__(
        self,
        scenario: Scenario | Mapping[str, Any] | str | Path | None,
        grid: Mapping[str, Iterable[Any]],
        duration: float,
        seeds: int | Iterable[int],
        *,
        measure: Measure | None = None,
        bin_width: float = config.BIN_WIDTH,
        source: str = "sweep: grid",
    ) -> None:
        if measure is not None and not callable(measure):
            raise TypeError(f"sweep: measure = {measure!r}: expected a function of a SimResult returning a dict")
        self.measure = measure
        """What each run's row holds besides its point and seed (``None``: :func:`summary_measure`)."""
        self.base = sim.as_scenario(scenario)
        """The scenario the points change."""
        self.duration, self.bin_width = sim.run_arguments(duration, bin_width, "sweep")
        self.seeds: Sequence[int] = _seeds(seeds)
        self.source = source
        if not isinstance(grid, Mapping):
            raise ConfigError(f"{source}: {_kind(grid)}: expected a mapping of dotted paths to lists "
                              "of values, like {'workload.rate': [500, 1000]}")
        self.paths: tuple[str, ...] = tuple(grid)
        """The grid's paths, in its order: the first columns of every row."""
        self._parts = [self._path(path) for path in self.paths]
        self._check_overlaps()
        axes = [self._values(path, grid[path]) for path in self.paths]
        points = math.prod(len(axis) for axis in axes)
        runs = points * len(self.seeds)
        if runs > config.MAX_SWEEP_RUNS:
            raise ConfigError(f"sweep: {_count(points, 'point')} x {_count(len(self.seeds), 'seed')} = {runs} runs: "
                              f"expected at most {config.MAX_SWEEP_RUNS} (gwlab.config.MAX_SWEEP_RUNS): split it")
        self.points: list[tuple[Any, ...]] = list(itertools.product(*axes))
        """Each point's values, in the order of :attr:`paths`; the points in the grid's order."""
        for point in self.points:
            self.scenario(point)  # checked now; built again when its runs are handed out

    def __len__(self) -> int:
        """The number of runs: points x seeds."""
        return len(self.points) * len(self.seeds)

    def scenario(self, point: Sequence[Any]) -> Scenario:
        """The scenario of ``point`` (values in the order of :attr:`paths`), checked as
        :func:`gwlab.simulate` checks it. Raises :class:`~gwlab.config.ConfigError` naming
        the point, the field, the value and what is allowed."""
        where = f"{self.source} point {_describe(self.paths, point)}" if self.paths else \
            f"{self.source} (empty): the scenario as it is"
        patch: dict[str, Any] = {}
        events = []
        for parts, value in zip(self._parts, point):
            if parts[0] == "events":
                events.append((parts[1:], value))
            else:
                _put(patch, parts, value)
        scenario = config.merge(self.base, patch, where, at_start=True) if patch else self.base
        if events:
            # A patch cannot change events: they are set in the scenario's data, checked whole.
            data = scenario.to_dict()
            for parts, value in events:
                data["events"] = _assign(data.get("events", []), parts, value)  # none: to_dict() leaves it out
            scenario = config.from_dict(data, where)
        sim.check_runnable(scenario, where)
        check = getattr(self.measure, "check", None)
        if check is not None:
            check(scenario, self.duration, self.bin_width, where)
        return scenario

    def run(self, *, executor: Executor | None = None, workers: int | None = None,
            progress: bool | None = None) -> list[Row]:
        """Run every point with every seed, each measured by :attr:`measure`; the rows as a
        list of dicts (see :func:`sweep`, which takes the same arguments and raises the same
        errors)."""
        measure = self.measure
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(f"sweep: executor = {executor!r}: expected a concurrent.futures.Executor")
        workers = config.whole_number(workers)
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"sweep: workers = {workers!r}: expected a whole number >= 1, or None for one per core")
        count = workers or os.cpu_count() or 1
        pooled = executor is None and count > 1
        if (pooled or isinstance(executor, ProcessPoolExecutor)) and measure is not None:
            try:
                pickle.dumps(measure)
            except Exception as exc:
                instead = "workers=1" if pooled else "an executor of threads, or workers=1 and no executor"
                raise TypeError(f"sweep: measure = {measure!r} cannot be sent to the worker processes ({exc}): "
                                "expected a function defined at the top level of a module, or an instance of a "
                                f"class defined there, which a process imports (or {instead})") from None
        table = _Table(self)
        bar = _bar(progress, len(self))
        try:
            tasks = self._tasks()
            if executor is not None:
                self._execute(executor.submit, tasks, config.SWEEP_OUTSTANDING_PER_WORKER * count, table, bar)
            elif not pooled:
                for index, task in enumerate(tasks):
                    table.put(index, self._result(index, lambda: _run(*task)))
                    _tick(bar)
            else:
                pool = ProcessPoolExecutor(max_workers=min(count, len(self)), initializer=_worker_signals)
                try:
                    self._execute(functools.partial(_submit_held, pool), tasks,
                                  config.SWEEP_OUTSTANDING_PER_WORKER * count, table, bar)
                except BaseException:
                    _stop(pool)
                    raise
                pool.shutdown()
        finally:
            if bar is not None:
                bar.close()
        return table.done()

    def where(self, index: int) -> str:
        """The point and seed of run ``index``, for messages."""
        point, seed = divmod(index, len(self.seeds))
        values = _describe(self.paths, self.points[point]) or "the scenario as it is"
        return f"sweep: point {point} ({values}), seed {self.seeds[seed]}"

    def _tasks(self) -> Iterator[tuple]:
        """The arguments of :func:`_run` for every run, in order; each point's scenario is
        built when its first run is handed out."""
        for point in self.points:
            scenario = self.scenario(point)
            for seed in self.seeds:
                yield scenario, self.duration, seed, self.bin_width, self.measure

    def _execute(self, submit: Callable[..., Future], tasks: Iterator[tuple], limit: int, table: _Table,
                 bar: Any) -> None:
        """Run ``tasks`` through ``submit``, at most ``limit`` at a time, into ``table``.

        When a run fails, none is handed out any more, and the failure raised is the first
        in the runs' order, whatever the order they end in (so the same whatever the executor
        and the number of workers): runs are handed out in order, so every run before the
        first failing one was handed out before any failure was seen, and only those are
        waited for; the runs after it are cancelled (the caller stops those running)."""
        queued = enumerate(tasks)
        pending: dict[Future, int] = {}
        failed: tuple[int, BaseException] | None = None

        def hand_out(n: int) -> None:
            for index, task in itertools.islice(queued, n):
                pending[self._result(index, lambda: submit(_run, *task))] = index  # an executor may refuse it

        try:
            hand_out(limit)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        table.put(index, self._result(index, future.result))
                    except BaseException as exc:  # raised by the run (or its measure), not here
                        if failed is None or index < failed[0]:
                            failed = index, exc
                    _tick(bar)
                if failed is None:
                    hand_out(len(done))
                    continue
                for future in [f for f, index in pending.items() if index > failed[0]]:
                    future.cancel()
                    del pending[future]
            if failed is not None:
                raise failed[1]
        finally:
            for future in pending:
                future.cancel()

    def _result(self, index: int, get: Callable[[], Any]) -> Any:
        try:
            return get()
        except BaseException as exc:
            exc.add_note(self.where(index))
            raise

    def _path(self, path: Any) -> list[str]:
        parts = path.split(".") if isinstance(path, str) else []
        if not parts or not all(parts):
            raise ConfigError(f"{self.source} {path!r}: expected a dotted path of the scenario's TOML shape, like "
                              "'workload.rate' or 'providers.p1.latency'")
        if parts[0] == "events" and len(parts) > 1:
            n, index = len(self.base.events), parts[1]
            if not (index.isascii() and index.isdigit() and str(int(index)) == index and int(index) < n):
                expected = f"expected a whole number from 0 to {n - 1}, written without leading zeros " \
                    f"({_count(n, 'event')} in the scenario)" if n else "the scenario has no events"
                raise ConfigError(f"{self.source} {path!r}: events index {index!r}: {expected}")
        return parts

    def _check_overlaps(self) -> None:
        paths = set(self.paths)  # each path's own prefixes looked up: not every pair compared
        for b, parts in zip(self.paths, self._parts):
            for a in (".".join(parts[:n]) for n in range(1, len(parts))):
                if a in paths:
                    raise ConfigError(f"{self.source} {a!r} and {b!r}: the first holds the second: expected paths of "
                                      "which none holds another")

    def _values(self, path: str, values: Any) -> list[Any]:
        where = f"{self.source} {path!r}"
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
            raise ConfigError(f"{where}: expected a list of values, not {_kind(values)}")
        listed = _listed(values, where)
        if not listed:
            raise ConfigError(f"{where}: no values: expected at least one")
        first: dict[Any, int] = {}
        for i, value in enumerate(listed):
            j = first.setdefault(_same(value), i)
            if j != i:
                raise ConfigError(f"{where}: values[{i}] = {_shown(value)} equals values[{j}] = {_shown(listed[j])}: "
                                  "expected distinct values (a point gives the same runs every time)")
        return listed


class _Table:
    """The rows of a sweep, filled by run index as results come, each result checked as it
    comes, and its keys compared with the first run's once every run before it has come: so
    a run that gives other keys is named as the first in the runs' order, whatever order they
    came in, as early as that is known."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rows: list[Row | None] = [None] * len(plan)
        self.compared = 0
        """How many rows, from the first on, have come and have the first row's keys."""

    def put(self, index: int, measured: Any) -> None:
        plan = self.plan
        point, seed = divmod(index, len(plan.seeds))
        where = plan.where(index)
        if not isinstance(measured, Mapping):
            raise TypeError(f"{where}: the measure returned {_kind(measured)}: expected a dict")
        measured = {key: config.plain_scalar(value) for key, value in measured.items()}
        taken = [key for key in measured if key in plan.paths or key == SEED or not isinstance(key, str)]
        if taken:
            raise TypeError(f"{where}: the measure returned the key {taken[0]!r}: expected strings other than "
                            f"{SEED!r} and the grid's paths")
        for key, value in measured.items():
            if not (value is None or isinstance(value, (bool, int, float, str))):
                raise TypeError(f"{where}: the measure returned {key!r} = {value!r}: expected a number, a boolean, "
                                "a string or None")
        self.rows[index] = {**dict(zip(plan.paths, plan.points[point])), SEED: plan.seeds[seed], **measured}
        rows = self.rows
        while self.compared < len(rows) and rows[self.compared] is not None:
            keys, first = set(rows[self.compared]), set(rows[0])
            if keys != first:
                raise TypeError(f"{plan.where(self.compared)}: the measure returned the keys "
                                f"{sorted(keys - {SEED, *plan.paths})}: expected the keys of the first run, "
                                f"{sorted(first - {SEED, *plan.paths})}")
            self.compared += 1

    def done(self) -> list[Row]:
        """Every row, its columns in the order of the first row's."""
        columns = list(self.rows[0])
        return [row if list(row) == columns else {key: row[key] for key in columns} for row in self.rows]


def _run(scenario: Scenario, duration: float, seed: int, bin_width: float, measure: Measure | None) -> dict:
    """One run, in whichever process: the simulation, then its measure."""
    measured = (measure or summary_measure)(simulate(scenario, duration, seed, bin_width=bin_width))
    return dict(measured) if isinstance(measured, Mapping) else measured  # anything else is refused where it comes


def _seeds(seeds: Any) -> Sequence[int]:
    seeds = config.whole_number(seeds)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if not 1 <= seeds <= config.MAX_SWEEP_RUNS:
            raise ConfigError(f"sweep: seeds = {seeds}: expected a whole number from 1 to {config.MAX_SWEEP_RUNS} "
                              "(seeds 1 to n), or a list of seeds")
        return range(1, seeds + 1)
    if isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, Iterable):
        raise ConfigError(f"sweep: seeds = {seeds!r}: expected a whole number n (seeds 1 to n) or a list of seeds")
    listed = tuple(config.run_argument("seed", s, f"sweep: seeds[{i}]")
                   for i, s in enumerate(_listed(seeds, "sweep: seeds")))
    if not listed:
        raise ConfigError("sweep: seeds = []: expected at least one seed")
    twice = [s for s, n in itertools.groupby(sorted(listed)) if len(list(n)) > 1]
    if twice:
        raise ConfigError(f"sweep: seeds: {twice[0]} is given twice: expected distinct seeds (a seed gives the "
                          "same run every time)")
    return listed


def _describe(paths: Sequence[str], point: Sequence[Any]) -> str:
    """A point as messages show it: ``workload.rate=500, providers.p1.outage="error"``, its
    first :data:`gwlab.config.SHOWN_PATHS` paths named and the others counted."""
    shown = ", ".join(f"{path}={_shown(value)}" for path, value in zip(paths[:config.SHOWN_PATHS], point))
    more = len(paths) - config.SHOWN_PATHS
    return f"{shown} and {_count(more, 'more path')}" if more > 0 else shown


def _shown(value: Any) -> str:
    """A grid's value as messages show it: as JSON (``"error"``, ``{"rate": 5}``), cut as
    :func:`gwlab.config.cut` cuts it."""
    return config.cut(json.dumps(value, default=repr))


def _same(value: Any) -> Any:
    """A key equal for two values of a grid's path that set its field alike: a number as
    itself whatever its type (``500`` and ``500.0``; a boolean apart), a table or an array as
    its JSON, the tables' keys sorted (as they come when they cannot be sorted)."""
    try:
        hash(value)
        return type(value) is bool, value
    except TypeError:
        pass
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except TypeError:
        return repr(value)


def _kind(value: Any) -> str:
    """``value``'s type as messages name it: "an int", "a str"."""
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _listed(values: Iterable[Any], where: str) -> list[Any]:
    """The elements of ``values`` (a list, a tuple, a 1-dimensional NumPy array, any iterable,
    even an endless one), each made plain (:func:`gwlab.config.plain_scalar`). Raises
    :class:`~gwlab.config.ConfigError` "``where``: ..." for a set (its order, string hashes',
    changes with the process), an array of another dimension, or more than
    :data:`gwlab.config.MAX_SWEEP_RUNS` elements, reading one more at most."""
    if isinstance(values, Set):
        raise ConfigError(f"{where}: {_kind(values)}: expected a list, or an iterable in an order (a set's changes "
                          "from one process to the next, and the rows follow it)")
    ndim = getattr(values, "ndim", 1)
    if ndim != 1:
        raise ConfigError(f"{where}: an array of shape {tuple(values.shape)}: expected a list of values, or an array "
                          "of one dimension")
    listed = [config.plain_scalar(v) for v in itertools.islice(values, config.MAX_SWEEP_RUNS + 1)]
    if len(listed) > config.MAX_SWEEP_RUNS:
        many = len(values) if isinstance(values, Sized) else f"more than {config.MAX_SWEEP_RUNS}"
        raise ConfigError(f"{where}: {many} values: expected at most {config.MAX_SWEEP_RUNS} "
                          "(gwlab.config.MAX_SWEEP_RUNS)")
    return listed


def _put(patch: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``value`` at ``parts`` in the nested ``patch``, adding tables on the way."""
    for key in parts[:-1]:
        patch = patch.setdefault(key, {})
    patch[parts[-1]] = value


def _assign(node: Any, parts: list[str], value: Any) -> Any:
    """``node`` with ``value`` at ``parts`` (a whole number indexes a list), copied along the
    path and shared elsewhere; a table is added where there is none."""
    if not parts:
        return value
    key, rest = parts[0], parts[1:]
    if isinstance(node, list):
        copy = list(node)
        copy[int(key)] = _assign(node[int(key)], rest, value)
        return copy
    copy = dict(node) if isinstance(node, Mapping) else {}
    copy[key] = _assign(copy.get(key), rest, value)
    return copy


def _bar(progress: bool | None, total: int) -> Any:
    """A tqdm progress bar of ``total`` runs, or ``None`` for none."""
    if progress is None:
        progress = sys.stderr is not None and sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="run", desc="sweep", file=sys.stderr)


def _tick(bar: Any) -> None:
    if bar is not None:
        bar.update(1)


HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
"""The signals held back from the sweep's thread while its pool starts worker processes, and
from each worker until it has set how it takes them (:func:`_worker_signals`)."""


def _submit_held(pool: ProcessPoolExecutor, *args: Any) -> Future:
    """``pool.submit(*args)`` with :data:`HELD_SIGNALS` held back, delivered once it returns. A
    submit may fork the pool's workers, and a signal arriving then would run its handler in
    the fork's after-fork hooks, which ignore its exception (Ctrl-C or SIGTERM lost, the sweep
    running on), or in a worker before it has set its own handling; held, it reaches this
    process once the workers are known to the pool, which stops them."""
    if not hasattr(signal, "pthread_sigmask"):  # no POSIX signals: nothing to hold
        return pool.submit(*args)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        return pool.submit(*args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_signals() -> None:
    """A pool worker's first step: Ctrl-C, which a terminal sends to every process of the
    sweep, ignored (the sweep's process stops its workers), SIGTERM ending it as by default,
    then both let in (held since the worker was forked, :func:`_submit_held`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def _stop(pool: ProcessPoolExecutor) -> None:
    """End ``pool`` at once: runs not started are cancelled, running ones stopped with their
    processes (a run cannot be cancelled otherwise, and may be long)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
    else:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
