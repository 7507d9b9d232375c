"""Bugs planted in the real code (keepalive, connect, silence watch, shard supervision, dispatch, checkpoints,
and the cores under them: pipeline, supervisor, sequencer, bars).

A harness is only as good as the bugs it finds. Each plant monkeypatches one plausible mistake
into the running process's own modules, for the duration of ``with planted(name)`` (``--plant
NAME``: each worker process, for its lifetime);
:func:`~orderflow_plugin.simtest.runner.seeds_to_catch` counts the seeds until the first one that fails.
docs/simtest.md has the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import (
    checkpointer,
    connect,
    dispatch,
    engine,
    openbar,
    pipeline,
    sequencer,
    shards,
    silence,
    supervisor,
    wsconnection,
)
from ..errors import StreamError

__all__ = ["PLANTS", "Plant", "planted"]


@dataclass(frozen=True)
class Plant:
    """A named bug in a real shell module, and what it does."""

    name: str
    target: str
    description: str
    apply: Callable[[], Callable[[], None]]  # patch; returns the undo


def _patch(owner: Any, name: str, replacement: Callable[..., Any]) -> Callable[[], None]:
    original = owner.__dict__[name]
    setattr(owner, name, replacement)
    return lambda: setattr(owner, name, original)


def _ping_never_fails() -> Callable[[], None]:
    async def pinging_only(connection: Any, idle: float, timeout: float) -> None:
        clock = asyncio.get_running_loop().time
        while True:
            await asyncio.sleep(idle)
            if clock() - connection.last_received >= idle:
                connection.protocol.send_ping(b"ping")  # asks, and never holds the answer's absence against it
                connection._flush()

    return _patch(wsconnection, "ping_when_quiet", pinging_only)


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


def _late_trade_not_revised() -> Callable[[], None]:
    def dropped(flow_engine: Any, trade: Any, price: int, qty: int, notional: int, indexes: list[int]) -> list[Any]:
        return []  # a trade found after the timer closed its bar: delivered, and its bar left as it was

    return _patch(engine, "revise_late", dropped)


# Carried over from the Pipeline simulation (part 10): the same mistakes, now under the real shell.

def _drop_one_in_1000() -> Callable[[], None]:
    push = sequencer.Sequencer.push

    def dropping_push(self: sequencer.Sequencer, trade: Any) -> int:
        if trade.id % 1000 == 321 and trade.id == self.expected and not self.held:
            self.expected = trade.id + 1  # skipped, as if it had been delivered: nobody hears of it
            return sequencer.DUPLICATE
        return push(self, trade)

    return _patch(sequencer.Sequencer, "push", dropping_push)


def _backoff_gives_up_after_3() -> Callable[[], None]:
    open_failed = supervisor.Supervisor.open_failed

    def giving_up(self: supervisor.Supervisor, error: Any, now: float) -> list[Any]:
        if self.attempt >= 3 and not self.replacing:
            self._in_flight = False
            self.state = "backoff"  # says it will retry; no retry is scheduled and nothing is reported
            return []
        return open_failed(self, error, now)

    return _patch(supervisor.Supervisor, "open_failed", giving_up)


def _fold_buy_into_sell() -> Callable[[], None]:
    fold = openbar.fold  # the engine's one name for folding: OpenBar compiled is a C type, closed to patches

    def wrong_fold(bar: Any, child: Any) -> None:
        fold(bar, child)
        bar.buy_volume -= child.buy_volume  # integers of 10^-8 (fixed.py)
        bar.sell_volume += child.buy_volume

    return _patch(openbar, "fold", wrong_fold)


def _hole_never_declared() -> Callable[[], None]:
    hole_opened = pipeline.Pipeline._hole_opened

    def forgetting(self: pipeline.Pipeline, sequencer: Any) -> None:
        hole_opened(self, sequencer)
        self._gap_due.pop(sequencer.symbol, None)  # the WakeAt went out; the deadline it was for is lost

    return _patch(pipeline.Pipeline, "_hole_opened", forgetting)


PLANTS = {plant.name: plant for plant in (
    Plant("ping-never-fails", "keepalive.ping_when_quiet (as wsconnection calls it)",
               "pings a quiet connection but never fails it when no answer comes", _ping_never_fails),
    Plant("stages-without-deadline", "connect.open_connection's stage deadlines",
               "every connect stage (DNS, TCP, TLS, upgrade, subscribe, first trade) waits with no deadline",
               _stages_without_deadline),
    Plant("silent-stream-judged-quiet", "silence.SilenceWatch._silent_stream",
               "a stream silent past its deadline is always judged a quiet market", _silence_always_quiet),
    Plant("crashed-shard-not-restarted", "shards.ShardSupervision._supervise",
               "a shard task that meets a bug reports it and ends; it is not started again",
               _crashed_shard_not_restarted),
    Plant("slow-hook-wrong-plugin", "dispatch.Dispatcher.emitter",
               "the per-trade clock is read once per trade, so a slow plugin's time is charged to those after it",
               _slow_hook_wrong_plugin),
    Plant("checkpoint-before-delivery", "checkpointer.Checkpointer.tag",
               "the checkpoint records trades as delivered up to its lease, before they are delivered",
               _checkpoint_ahead_of_delivery),
    Plant("late-trade-not-revised", "engine.revise_late",
          "a trade found after the timer closed its bar is delivered, and the bar is not revised",
          _late_trade_not_revised),
    Plant("drop-one-in-1000", "sequencer.Sequencer.push",
          "silently skips the id when id % 1000 == 321 (as if delivered)", _drop_one_in_1000),
    Plant("backoff-gives-up-after-3", "supervisor.Supervisor.open_failed",
          "after 3 failed attempts in a row, schedules no retry and reports nothing", _backoff_gives_up_after_3),
    Plant("fold-buy-into-sell", "openbar.fold",
          "rolling a fine bar up adds its taker buy volume to the coarse bar's sell volume", _fold_buy_into_sell),
    Plant("hole-never-declared", "pipeline.Pipeline._hole_opened",
          "asks to be woken at the end of the reorder window but forgets why: the hole is never filled nor reported",
          _hole_never_declared),
)}


@contextlib.contextmanager
def planted(name: str | None) -> Iterator[None]:
    """Run the block with the shell bug ``name`` planted (``None``: nothing planted)."""
    if name is None:
        yield
        return
    undo = PLANTS[name].apply()
    try:
        yield
    finally:
        undo()
