"""The ``gwlab`` command's entry point (also ``python -m gwlab``): Ctrl-C and SIGTERM are
handled before the command line (:mod:`gwlab.cli`) and what it needs are loaded, so that
either, however early it comes, ends the command with one line and the status a shell gives
a process the signal ended (130, 143), never a traceback or, for SIGTERM, no word at all.
The commands then handle both their own way (:func:`gwlab.cli.main`)."""

from __future__ import annotations

import functools
import os
import signal
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, as SIGINT raises :class:`KeyboardInterrupt`."""


def terminated(pid: int, signum: int, frame: object) -> None:
    """SIGTERM in process ``pid``: raised there as :class:`Terminated`. In a process forked
    with this handler it ends that process, as SIGTERM does by default (the sweep's pool
    workers hold the signal back until they have set their own handling, and the pool stops
    them with it: :func:`gwlab.sweep._worker_signals`)."""
    if os.getpid() == pid:
        raise Terminated
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def status(interrupt: KeyboardInterrupt) -> int:
    """The exit status of a command that ``interrupt`` ended: 128 and the signal's number."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


def main() -> int:
    """Run the ``gwlab`` command; returns its exit status."""
    signal.signal(signal.SIGTERM, functools.partial(terminated, os.getpid()))
    try:
        from gwlab.cli import main as command

        return command()
    except KeyboardInterrupt as interrupt:
        print("gwlab: interrupted as it started: nothing written", file=sys.stderr)
        return status(interrupt)


if __name__ == "__main__":
    sys.exit(main())
