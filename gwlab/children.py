"""Child processes that start without Ctrl-C, die with their parent and are ended and reaped
in time: the load generator's workers and the gateway's replicas.

Both are started with :mod:`multiprocessing`'s spawn context and talk to the parent over a
pipe that the parent's event loop reads; nothing here blocks that loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import socket
import struct
import sys
import threading
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable, Iterable, Sequence

from gwlab import config

REAP_POLL = 0.005
"""Seconds between two looks for the exit status of a child whose pipes have closed (it
has exited and is about to be reapable)."""
PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process gets when its parent ends."""


class ChildError(RuntimeError):
    """A child process failed to start in time, or ended unexpectedly."""


async def started(ready: Sequence[asyncio.Future], what: str, error: type[ChildError] = ChildError) -> list[Any]:
    """The results of ``ready``, one future per child, set when that child says it is ready,
    once all are: within :data:`~gwlab.config.CHILD_START_TIMEOUT`. Raises the failure of the
    first child that could not start, or ``error`` naming the children (``what``, e.g.
    "replicas") that did not say they were ready in time."""
    await asyncio.wait(ready, timeout=config.CHILD_START_TIMEOUT, return_when=asyncio.FIRST_EXCEPTION)
    for future in ready:
        if future.done() and future.exception() is not None:
            raise future.exception()
    late = [str(index) for index, future in enumerate(ready) if not future.done()]
    if late:
        raise error(f"{what} {', '.join(late)} of {len(ready)} did not start within "
                         f"{config.CHILD_START_TIMEOUT:g} s")
    return [future.result() for future in ready]


def resolve(future: asyncio.Future) -> None:
    """Set ``future``'s result to ``None`` unless it is done already."""
    if not future.done():
        future.set_result(None)


async def exited(process: multiprocessing.process.BaseProcess, timeout: float) -> bool:
    """Whether ``process`` exits, and is reaped, within ``timeout`` seconds; the loop runs
    meanwhile."""
    if process.exitcode is not None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ended = loop.create_future()
    loop.add_reader(process.sentinel, resolve, ended)
    try:
        await asyncio.wait((ended,), timeout=max(0.0, timeout))
    finally:
        loop.remove_reader(process.sentinel)
    # The sentinel closes as the process exits, a moment before it can be reaped.
    while ended.done() and process.exitcode is None and loop.time() < deadline:
        await asyncio.sleep(REAP_POLL)
    return process.exitcode is not None


def start_ignoring_sigint(process) -> None:
    """Start ``process`` with SIGINT ignored from its first instruction.

    Ctrl-C in a terminal reaches every process of the foreground group; the children must not
    die of it half-way (tracebacks, lost tallies) but stop when the parent tells them. An
    ignored disposition survives the spawn's exec, and Python keeps SIGINT ignored when it
    starts that way. Meanwhile the parent holds SIGINT blocked, so that one coming then is
    not lost with the disposition but reaches its own handler as the start returns (Linux
    keeps a blocked signal pending even while it is ignored); the children inherit the mask,
    SIGINT blocked as well as ignored. Only the main thread can change signal handlers;
    elsewhere (a notebook running its loop in a thread) the children start with the parent's
    disposition."""
    if threading.current_thread() is not threading.main_thread():
        process.start()
        return
    resource_tracker.ensure_running()  # its first start unblocks SIGINT: done before the block
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def die_with(parent: int) -> None:
    """Have the kernel kill this process as soon as ``parent`` ends, however it ends (Linux's
    parent-death signal; a child swamped by overload could take long to see its pipe close,
    the only sign elsewhere). The signal comes when the parent's thread that started this
    process ends: start children from a thread that outlives them."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(1)


def spawn(target: Callable[..., None], plan: Any, name: str) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    """Start ``target(conn, plan, parent_pid)`` in a new process called ``name`` (spawned,
    daemonic, with SIGINT ignored from the start: :func:`start_ignoring_sigint`); the process
    and the parent's end of the duplex pipe whose other end is ``conn``."""
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe(duplex=True)
    process = context.Process(target=target, args=(theirs, plan, os.getpid()), name=name, daemon=True)
    start_ignoring_sigint(process)
    theirs.close()
    return process, mine


class Outbox:
    """What the parent sends one child over the duplex pipe ``conn`` (a Unix socket pair, as
    :func:`spawn` makes it), in order, framed as :meth:`Connection.send` frames it (the child
    reads it with ``recv``), written without ever blocking the loop: what the child does not
    take now waits here, and the loop writes it as the child reads. More than ``bound`` bytes
    waiting (a child stopped or swamped for long) calls ``overflow()``, once, and the outbox
    takes nothing more. Make it on the loop that reads ``conn``; :meth:`close` it before
    ``conn`` is closed (it holds a copy of the socket, which would keep the pipe open)."""

    def __init__(self, conn: Connection, bound: int, overflow: Callable[[], None]) -> None:
        self._socket = socket.socket(fileno=os.dup(conn.fileno()))
        self._loop = asyncio.get_running_loop()
        self._waiting = bytearray()
        self._bound = bound
        self._overflow = overflow
        self.closed = False

    def send(self, message: Any) -> bool:
        """Send ``message``, or queue what the pipe does not take now; ``False`` once the
        child is gone, the outbox closed, or past its bound."""
        if self.closed:
            return False
        data = bytes(ForkingPickler.dumps(message))
        frame = struct.pack("!i", len(data)) + data
        if not self._waiting:
            try:
                frame = frame[self._socket.send(frame, socket.MSG_DONTWAIT):]
            except BlockingIOError:
                pass
            except OSError:
                self.close()
                return False
            if frame:
                self._loop.add_writer(self._socket.fileno(), self._flush)
        self._waiting += frame
        if len(self._waiting) > self._bound:
            self.close()
            self._overflow()
            return False
        return True

    def _flush(self) -> None:
        try:
            del self._waiting[:self._socket.send(self._waiting, socket.MSG_DONTWAIT)]
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not self._waiting:
            self._loop.remove_writer(self._socket.fileno())

    def close(self) -> None:
        """Drop what waits and let go of the pipe. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._waiting.clear()
        self._loop.remove_writer(self._socket.fileno())
        self._socket.close()


async def end(processes: Sequence[multiprocessing.process.BaseProcess], conns: Iterable[Connection],
              wait: float) -> list[tuple[multiprocessing.process.BaseProcess, bool]]:
    """Close the parent's ends of the pipes ``conns`` (their readers removed from the loop; a
    child still running takes that as a stop), give ``processes`` ``wait`` seconds to exit,
    then kill the ones left and wait at most :data:`~gwlab.config.CHILD_EXIT_TIMEOUT` for
    each to be gone. The processes killed, each with whether it is gone; the loop runs
    meanwhile."""
    loop = asyncio.get_running_loop()
    for conn in conns:
        if not conn.closed:
            loop.remove_reader(conn.fileno())
            conn.close()
    ended = await asyncio.gather(*(exited(p, wait) for p in processes))
    left = [p for p, done in zip(processes, ended) if not done]
    for process in left:
        process.kill()
    return list(zip(left, await asyncio.gather(*(exited(p, config.CHILD_EXIT_TIMEOUT) for p in left))))
