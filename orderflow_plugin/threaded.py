"""Run an OrderFlow on its own thread and event loop, for hosts whose main loop is synchronous.

Hooks and signal receivers run on that thread, not the host's: keep them thread-safe (append to
a queue, set a flag). The host reads the latest metrics and the health from its own thread
through :meth:`FlowThread.latest` and :meth:`FlowThread.health`, which run on the stream's loop
and wait for the answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .errors import OrderFlowError
from .options import Timeouts

__all__ = ["FlowThread", "Runnable"]

T = TypeVar("T")


class Runnable(Protocol):
    """What a FlowThread runs: an OrderFlow (its start/stop on the thread's loop, its views from the host's)."""

    timeouts: Timeouts

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def health(self) -> dict[str, Any]: ...
    def latest(self, symbol: str) -> dict[str, Any]: ...


class FlowThread:
    """A running OrderFlow on a daemon thread; ``stop()`` ends it cleanly."""

    def __init__(self, flow: Runnable) -> None:
        self.flow = flow
        self._lock = threading.Lock()  # orders a stop request against the thread publishing its loop
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._started = False  # flow.start() returned; read and written on the stream's loop only
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="orderflow", daemon=True)

    def start(self, timeout: float = 10.0) -> FlowThread:
        """Start the thread and the stream; return once the stream's tasks run.

        A start that takes longer than ``timeout`` is cancelled and the thread joined before
        OrderFlowError is raised; if the thread still runs then (a hook blocks its loop), the
        error says so and ``stop()`` can end it later.
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            self._request_stop()
            wait = self._stop_wait()
            self._thread.join(wait)
            still = f", nor stop within {wait:.1f} s after (its loop is blocked): stop() it" if self.running else ""
            raise OrderFlowError(f"the orderflow thread did not start within {timeout} s{still}")
        if self._error is not None:
            raise OrderFlowError(f"the orderflow thread failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the stream (closing connections within ``timeouts.close``) and join the thread."""
        if not self._thread.is_alive():
            return
        self._request_stop()
        wait = timeout if timeout is not None else self._stop_wait()
        self._thread.join(wait)
        if self._thread.is_alive():
            raise OrderFlowError(f"the orderflow thread did not stop within {wait:.1f} s")

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """``flow.health()``, computed on the stream's loop."""
        return self._call(self.flow.health, timeout)

    def latest(self, symbol: str, timeout: float = 5.0) -> dict[str, Any]:
        """``flow.latest(symbol)``: the newest trade, snapshot, whale and bars."""
        return self._call(lambda: self.flow.latest(symbol), timeout)

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()

    def _stop_wait(self) -> float:
        return self.flow.timeouts.close + 2.0

    def _request_stop(self) -> None:
        with self._lock:
            self._stop_requested = True
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the thread is ending anyway
                loop.call_soon_threadsafe(self._stop_on_loop)

    def _stop_on_loop(self) -> None:
        if self._started and self._stopping is not None:
            self._stopping.set()  # the normal way out: flow.stop() closes the connections
        elif self._task is not None:
            self._task.cancel()  # flow.start() still runs (a slow source, a hook): end it where it waits

    def _call(self, function: Callable[[], T], timeout: float) -> T:
        loop = self._loop
        if loop is None or not self._thread.is_alive():
            raise OrderFlowError("the orderflow thread is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function())
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise OrderFlowError(f"the orderflow loop did not answer within {timeout} s (is it blocked?)") from None

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to start(); never lost with the thread
            self._error = exc
            self._ready.set()

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        with self._lock:
            if self._stop_requested:  # start() gave up before this thread got here
                return
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        try:
            await self.flow.start()
        except BaseException as exc:  # CancelledError too: a start that timed out
            self._error = exc
            self._ready.set()
            return
        self._started = True
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.flow.stop()
