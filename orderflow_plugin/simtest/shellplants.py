"""Bugs planted in the REAL shell (keepalive, connect, silence watch, shard supervision, dispatch).

Each plant monkeypatches one plausible mistake into the running process's own modules, for the
duration of ``with shell_planted(name)``; :func:`seeds_to_catch` counts the seeds of the real-shell
simulation (:mod:`.shell`) until the first one that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import checkpointer, connect, dispatch, shards, silence, transport
from ..errors import StreamError
from .plants import _patch

__all__ = ["SHELL_PLANTS", "ShellPlant", "seeds_to_catch", "shell_planted"]


@dataclass(frozen=True)
class ShellPlant:
    """A named bug in a real shell module, and what it does."""

    name: str
    target: str
    description: str
    apply: Callable[[], Callable[[], None]]  # patch; returns the undo


def _ping_never_fails() -> Callable[[], None]:
    async def pinging_only(connection: Any, idle: float, timeout: float) -> None:
        clock = asyncio.get_running_loop().time
        while True:
            await asyncio.sleep(idle)
            if clock() - connection.last_received >= idle:
                connection.protocol.send_ping(b"ping")  # asks, and never holds the answer's absence against it
                connection._flush()

    return _patch(transport, "ping_when_quiet", pinging_only)


class _NoDeadlines:
    """The asyncio module as connect.py sees it, but every ``asyncio.timeout`` waits forever."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def timeout(delay: float | None) -> Any:
        return asyncio.timeout(None)


def _stages_without_deadline() -> Callable[[], None]:
    return _patch(connect, "asyncio", _NoDeadlines())


def _silence_always_quiet() -> Callable[[], None]:
    async def always_quiet(self: Any, connection: Any, symbol: str, deadline: float, *,
                           shard_wide: bool) -> None:
        return None  # "the market is quiet", whatever REST says

    return _patch(silence.SilenceWatch, "_silent_stream", always_quiet)


def _crashed_shard_not_restarted() -> Callable[[], None]:
    async def supervise_once(self: Any, shard: Any) -> None:
        try:
            await self._drive(shard)
        except Exception as exc:  # reported, its connections closed, and its task ends: nobody starts it again
            error = StreamError(f"connection supervisor {shard.number} failed ({exc})", url=self.ws_url,
                                stage="supervise")
            logging.getLogger("orderflow_plugin.stream").error("%s", error)
            self._emit("on_error", error=error, where=f"task:orderflow shard {shard.number}")
            for connection in list(shard.live):
                connection.fail(error)
            for task in shard.opens:
                task.cancel()
            self.pipeline.feed_lost(shard.symbols)

    return _patch(shards.ShardSupervision, "_supervise", supervise_once)


def _slow_hook_wrong_plugin() -> Callable[[], None]:
    emitter = dispatch.Dispatcher.emitter

    def clock_read_once(self: dispatch.Dispatcher, hook: str, argname: str) -> Callable[[Any], None]:
        emit = self._emitters.get((hook, argname))
        if emit is not None or hook != "on_trade":
            return emit or emitter(self, hook, argname)

        def emit_with_one_start(value: Any) -> None:
            clock = self.clock
            start = clock()  # read once: each call is timed from the first one's start
            for name, function, argnames in self._hook_calls(hook):
                try:
                    function(value) if argnames else function()
                except Exception as exc:
                    self._reported(name, hook, clock() - start, exc)
                    continue
                if clock() - start > self._budget:
                    self._reported(name, hook, clock() - start)

        self._emitters[hook, argname] = emit_with_one_start
        return emit_with_one_start

    return _patch(dispatch.Dispatcher, "emitter", clock_read_once)


def _checkpoint_ahead_of_delivery() -> Callable[[], None]:
    tag = checkpointer.Checkpointer.tag

    def tag_ahead(self: checkpointer.Checkpointer, trade: Any, now: float) -> Any:
        tagged = tag(self, trade, now)
        checkpoint = self.checkpoint
        # the id the lease promises is written as delivered: the checkpoint runs ahead of delivery
        checkpoint.delivered(trade.symbol, max(trade.id, checkpoint.lease(trade.symbol)))
        return tagged

    return _patch(checkpointer.Checkpointer, "tag", tag_ahead)


SHELL_PLANTS = {plant.name: plant for plant in (
    ShellPlant("ping-never-fails", "keepalive.ping_when_quiet (as transport calls it)",
               "pings a quiet connection but never fails it when no answer comes", _ping_never_fails),
    ShellPlant("stages-without-deadline", "connect.open_connection's stage deadlines",
               "every connect stage (DNS, TCP, TLS, upgrade, subscribe, first trade) waits with no deadline",
               _stages_without_deadline),
    ShellPlant("silent-stream-judged-quiet", "silence.SilenceWatch._silent_stream",
               "a stream silent past its deadline is always judged a quiet market", _silence_always_quiet),
    ShellPlant("crashed-shard-not-restarted", "shards.ShardSupervision._supervise",
               "a shard task that meets a bug reports it and ends; it is not started again",
               _crashed_shard_not_restarted),
    ShellPlant("slow-hook-wrong-plugin", "dispatch.Dispatcher.emitter",
               "the per-trade clock is read once per trade, so a slow plugin's time is charged to those after it",
               _slow_hook_wrong_plugin),
    ShellPlant("checkpoint-before-delivery", "checkpointer.Checkpointer.tag",
               "the checkpoint records trades as delivered up to its lease, before they are delivered",
               _checkpoint_ahead_of_delivery),
)}


@contextlib.contextmanager
def shell_planted(name: str | None) -> Iterator[None]:
    """Run the block with the shell bug ``name`` planted (``None``: nothing planted)."""
    if name is None:
        yield
        return
    undo = SHELL_PLANTS[name].apply()
    try:
        yield
    finally:
        undo()


def seeds_to_catch(name: str, start: int = 0, limit: int = 200) -> int | None:
    """How many real-shell seeds from ``start`` run until the first failure with ``name`` planted (None: not caught)."""
    from .shell import run_shell_seed

    with shell_planted(name):
        for count, seed in enumerate(range(start, start + limit), 1):
            if not run_shell_seed(seed).ok:
                return count
    return None
