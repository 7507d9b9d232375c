"""Say where it is stuck: the event-loop watchdog thread and stack formatting.

An in-loop timer cannot fire while the loop is blocked, so :class:`LoopWatchdog` runs a daemon
thread watching a heartbeat the loop updates. When the loop misses ``threshold`` seconds, the
thread takes the loop thread's current Python stack (``sys._current_frames()``) and logs at once
"event loop blocked for 2.3 s; loop thread is at host_bot.py:42 in on_tick: time.sleep(3)";
when the loop runs again, ``on_blocked`` is called on the loop with the total time and the stack.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

__all__ = ["LoopWatchdog", "describe_frame", "task_stack"]

logger = logging.getLogger(__name__)


def describe_frame(frame: FrameType | None) -> str:
    """``path:line in function: source`` for the innermost frame, path relative to the working directory."""
    if frame is None:
        return "an unknown place"
    summary = traceback.extract_stack(frame, limit=1)[-1]
    path = summary.filename
    try:
        relative = os.path.relpath(path)
        path = relative if not relative.startswith("..") else path
    except ValueError:
        pass
    return f"{path}:{summary.lineno} in {summary.name}: {(summary.line or '').strip()}"


def task_stack(task: asyncio.Task[object] | None, limit: int = 40) -> str:
    """The awaiting stack of ``task``: every coroutine in its await chain, outermost first.

    ``Task.get_stack()`` shows only the task's own coroutine when it is suspended; the chain of
    ``cr_await`` links down to the future it waits for is what says where it is stuck.
    """
    if task is None:
        return "(no task)"
    if task.done():
        return f"(task {task.get_name()} is done)"
    frames = []
    awaited: object = task.get_coro()
    while awaited is not None and len(frames) < limit:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    if not frames:
        return f"(task {task.get_name()} has no stack)"
    waits_for = f"\n  waiting for {awaited!r}" if awaited is not None else ""
    lines = traceback.format_list(traceback.StackSummary.extract((f, f.f_lineno) for f in frames))
    return f"task {task.get_name()!r} is waiting at:\n" + "".join(lines).rstrip() + waits_for[:300]


class LoopWatchdog:
    """Watch ``loop`` from a daemon thread; report blocks longer than ``threshold`` seconds."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_blocked: Callable[[float, str], None],
        *,
        threshold: float = 1.0,
    ) -> None:
        self.loop = loop
        self.on_blocked = on_blocked
        self.threshold = threshold
        self.interval = threshold / 4
        self.beat = time.monotonic()
        self.lag = 0.0  # how late the last heartbeat ran, seconds
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._blocked_since: float | None = None
        self._stack = ""
        self._thread = threading.Thread(target=self._watch, name="orderflow-loop-watchdog", daemon=True)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start beating on the loop (call from the loop's thread) and watching from the thread."""
        self._loop_thread = threading.get_ident()
        self.beat = time.monotonic()
        self._handle = self.loop.call_later(self.interval, self._beat, self.beat + self.interval)
        self._thread.start()

    def stop(self) -> None:
        """Stop both sides."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread.is_alive() and threading.get_ident() != self._thread.ident:
            self._thread.join(timeout=1.0)

    def _beat(self, due: float) -> None:
        now = time.monotonic()
        self.lag = max(0.0, now - due)
        self.beat = now
        since = self._blocked_since
        if since is not None:  # the loop runs again: report on the loop, with the whole duration
            self._blocked_since = None
            try:
                self.on_blocked(now - since, self._stack)
            except Exception:  # the report must never kill the heartbeat
                logger.exception("reporting a blocked loop failed")
        if not self._stop.is_set():
            self._handle = self.loop.call_later(self.interval, self._beat, now + self.interval)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if self.loop.is_closed():  # its stream was never stopped: nothing left to watch
                return
            silent = time.monotonic() - self.beat
            if silent < self.threshold or self._blocked_since is not None:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            where = describe_frame(frame)
            self._stack = "".join(traceback.format_stack(frame)).rstrip() if frame is not None else ""
            self._blocked_since = self.beat
            logger.warning("event loop blocked for %.1f s; loop thread is at %s\n%s", silent, where, self._stack)
