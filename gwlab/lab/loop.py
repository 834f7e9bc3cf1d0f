"""An asyncio event loop in a background thread, driven from synchronous code.

A notebook cell that runs synchronously (``time.sleep``, a long computation, ``lab.run_for``)
holds the kernel's own event loop: tasks scheduled there do not progress until the cell ends.
The lab's servers and clients therefore live on a loop of their own, in a daemon thread,
and the notebook talks to it through :meth:`LoopThread.call` (blocking) or
:meth:`LoopThread.call_async` (awaitable from the kernel's loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine, TypeVar

_T = TypeVar("_T")


class LoopThread:
    """A new event loop running forever in a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._closing = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Schedule ``coro`` on the loop; its future, usable from any thread. Raises
        :class:`RuntimeError` once :meth:`close` has begun: a coroutine handed to a stopping
        loop might never run, and its caller would wait for ever."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("cannot wait for the lab's loop from its own thread")
        with self._lock:
            if self._closing:
                coro.close()
                raise RuntimeError("this lab is stopped; gwlab.lab.start() starts a new one")
            return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the loop and wait for its result. An interrupt (Ctrl-C, the
        notebook's stop button) cancels it. Raises :class:`RuntimeError` when the loop is
        closed (the lab stopped) before ``coro`` ends."""
        future = self.submit(coro)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise
        except concurrent.futures.CancelledError:
            raise _stopped() from None

    async def call_async(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the loop; await its result from another loop. Raises
        :class:`RuntimeError` as :meth:`call` does; cancelling the awaiting task cancels
        ``coro``."""
        try:
            return await asyncio.wrap_future(self.submit(coro))
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise
            raise _stopped() from None

    def close(self) -> None:
        """Stop the loop (pending tasks are cancelled, so every future handed out ends) and
        wait for the thread to end."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def _stopped() -> RuntimeError:
    return RuntimeError("the lab was stopped while this call ran, so it has no result; "
                        "gwlab.lab.start() starts a new one")
