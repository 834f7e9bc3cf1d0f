"""This checkout's gateway against another checkout's, the same request on the same core:
how many more requests a CPU second answers here (above 1: this one is cheaper).

An aim such as "no slower than before this change" compares two commits, not a commit and
bare aiohttp. Each server runs in its own checkout (``git worktree add ../before COMMIT``,
served with this venv) as :mod:`benchmarks.gateway_server` ``--zero-latency``, both pinned
to core 0 and loaded at once, each by its own ``wrk -t1 -c64`` on core 1, as
``throughput_ratio_same_core`` is measured, with its rounds in pairs of the two starting
orders (:func:`benchmarks.throughput.paired_ratios`).

A process's speed depends on where its memory landed, on its hash seed and on whether it
was started first, by a percent or two, which no number of rounds within one process
averages out. So the comparison starts :data:`PAIRS` fresh pairs of processes, the other
checkout's first in every second one; a pair of processes gives the median of its pairs of
rounds, two pairs of processes in turn (one in each starting order) their geometric mean,
and the median of those counts.

Run as ``python -m benchmarks.versus OTHER [--loop asyncio|uvloop] [--pairs N] [--rounds R]
[--seconds S]``; prints each process pair's ratio, then the result; exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

from benchmarks import common
from benchmarks.bare import PATH
from benchmarks.common import ROOT, Server
from benchmarks.serving import has_uvloop
from benchmarks.throughput import CONNECTIONS, at_once, geometric_pairs, paired_ratios
from gwlab.clients import BODY

PAIRS = 10
"""Pairs of server processes started (an even number: half with each checkout's first)."""
ROUNDS = 6
"""Rounds each pair of processes is loaded (an even number: half with each one's wrk first)."""
SECONDS = 2.0
"""Seconds a round lasts."""
WARM_SECONDS = 1
"""Seconds each server is loaded alone before its rounds."""


def compare(other: Path, loop: str, pairs: int, rounds: int, seconds: float) -> list[float]:
    """For each of ``pairs`` fresh process pairs (the gateway of ``other`` and this one's,
    ``other``'s started first in the first, third, ... pair), the median over ``rounds`` // 2
    pairs of rounds of ``other``'s CPU time per request over this one's."""
    extra = ("--uvloop",) if loop == "uvloop" else ()
    ratios = []
    for p in range(pairs):
        roots = (other, ROOT) if p % 2 == 0 else (ROOT, other)
        with contextlib.ExitStack() as stack:  # each server started is stopped, whatever fails after it
            servers = [stack.enter_context(Server("benchmarks.gateway_server", "--zero-latency", *extra, root=root))
                       for root in roots]
            for server in servers:
                common.wrk(server.url + PATH, BODY, WARM_SECONDS, CONNECTIONS, server.pid)
            together = [at_once(tuple(servers), seconds, CONNECTIONS, reverse=i % 2 == 1) for i in range(rounds)]
        _, paired = paired_ratios(together)
        ratio = statistics.median(paired)
        ratios.append(ratio if roots[0] == other else 1 / ratio)
        print(f"pair {p + 1} of {pairs} (started first: {roots[0]}): {ratios[-1]:.3f}", flush=True)
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus", description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="another checkout of gwlab (its root directory)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--pairs", type=int, default=PAIRS,
                        help=f"process pairs started, an even number (default {PAIRS})")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"rounds per process pair, an even number (default {ROUNDS})")
    parser.add_argument("--seconds", type=float, default=SECONDS, help=f"seconds a round lasts (default {SECONDS:g})")
    args = parser.parse_args(argv)
    if not (args.other / "benchmarks" / "gateway_server.py").is_file():
        parser.error(f"OTHER = {args.other}: not a checkout of gwlab (it has no benchmarks/gateway_server.py)")
    if args.pairs < 2 or args.pairs % 2:
        parser.error(f"--pairs = {args.pairs}: must be an even number, at least 2")
    if args.rounds < 2 or args.rounds % 2:
        parser.error(f"--rounds = {args.rounds}: must be an even number, at least 2")
    if not args.seconds >= 1:
        parser.error(f"--seconds = {args.seconds}: must be at least 1 (wrk counts whole seconds)")
    if args.loop == "uvloop" and not has_uvloop():
        parser.error("--loop uvloop: uvloop is not installed (pip install -e '.[bench]')")
    balanced = geometric_pairs(compare(args.other.resolve(), args.loop, args.pairs, args.rounds, args.seconds))
    print(f"{args.loop}: {args.other}'s CPU time per request over this checkout's, the median of "
          f"{len(balanced)} geometric means of two process pairs: {statistics.median(balanced):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
