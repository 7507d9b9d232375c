"""Bugs planted into the code under test, to show that the harness catches them.

A harness is only as good as the bugs it finds. Each plant monkeypatches one small, plausible
mistake into the running process only (``--plant NAME``), for the duration of a ``with planted(name)``
block, and the docs record how many seeds the harness needs to catch it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import openbar, pipeline, sequencer, supervisor
from . import network

__all__ = ["PLANTS", "Plant", "planted"]


@dataclass(frozen=True)
class Plant:
    """A named bug: where it goes, what it does, and which invariant should catch it."""

    name: str
    target: str
    description: str
    caught_by: str
    apply: Callable[[], Callable[[], None]]  # patch; returns the undo


def _patch(owner: Any, name: str, replacement: Callable[..., Any]) -> Callable[[], None]:
    original = owner.__dict__[name]
    setattr(owner, name, replacement)
    return lambda: setattr(owner, name, original)


def _drop_one_in_10000() -> Callable[[], None]:
    push = sequencer.Sequencer.push

    def dropping_push(self: sequencer.Sequencer, trade: Any) -> int:
        if trade.id % 10_000 == 4_321 and trade.id == self.expected and not self.held:
            self.expected = trade.id + 1  # skipped, as if it had been delivered: nobody hears of it
            return sequencer.DUPLICATE
        return push(self, trade)

    return _patch(sequencer.Sequencer, "push", dropping_push)


def _backoff_gives_up_after_5() -> Callable[[], None]:
    open_failed = supervisor.Supervisor.open_failed

    def giving_up(self: supervisor.Supervisor, error: Any, now: float) -> list[Any]:
        if self.attempt >= 5 and not self.replacing:
            self._in_flight = False
            self.state = "backoff"  # says it will retry; no retry is scheduled and nothing is reported
            return []
        return open_failed(self, error, now)

    return _patch(supervisor.Supervisor, "open_failed", giving_up)


def _watchdog_after_first_trade() -> Callable[[], None]:
    arm_watch = network.SimConnection.arm_watch

    def late_watch(self: network.SimConnection, stage: str) -> None:
        if stage in ("subscribed", "first_message") and not self.got_trade:
            return  # armed only once a trade arrived: a connection that never sends one waits forever
        arm_watch(self, stage)

    return _patch(network.SimConnection, "arm_watch", late_watch)


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


def _resume_forgotten() -> Callable[[], None]:
    def forgetful_resume(self: pipeline.Pipeline, *, expired: bool) -> None:
        self._pause_ends = None
        self._may_pause = not expired
        self.paused.clear()  # believes the connections were resumed; never tells them

    return _patch(pipeline.Pipeline, "_resume", forgetful_resume)


def _tail_never_fetched() -> Callable[[], None]:
    def never(self: pipeline.Pipeline, symbol: str, newest: int, now: float) -> bool:
        return False  # the code before issue #32: only a live trade past a hole started a backfill

    return _patch(pipeline.Pipeline, "fill_tail", never)


PLANTS = {plant.name: plant for plant in (
    Plant("drop-one-in-10000", "sequencer.Sequencer.push",
          "silently skips the id when id % 10000 == 4321 (as if delivered)", "2 gap report", _drop_one_in_10000),
    Plant("backoff-gives-up-after-5", "supervisor.Supervisor.open_failed",
          "after 5 failed attempts in a row, schedules no retry and reports nothing", "4 supervision",
          _backoff_gives_up_after_5),
    Plant("watchdog-after-first-trade", "simtest.network.SimConnection.arm_watch (the transport's stage watch)",
          "the subscribed / first_message deadline is armed only after the first trade", "4 supervision",
          _watchdog_after_first_trade),
    Plant("fold-buy-into-sell", "openbar.fold",
          "rolling a fine bar up adds its taker buy volume to the coarse bar's sell volume", "6 metrics",
          _fold_buy_into_sell),
    Plant("hole-never-declared", "pipeline.Pipeline._hole_opened",
          "asks to be woken at the end of the reorder window but forgets why: the hole is never filled nor reported",
          "3 liveness", _hole_never_declared),
    Plant("resume-forgotten", "pipeline.Pipeline._resume",
          "ends a pause without sending ResumeReading: the paused connection never reads again", "3 liveness",
          _resume_forgotten),
    Plant("tail-never-fetched", "pipeline.Pipeline.fill_tail",
          "REST's newest id beyond the last delivered is never fetched (issue #32's old code): the trades the socket "
          "skipped before a quiet stretch wait for a live trade that does not come", "3 liveness",
          _tail_never_fetched),
)}


@contextlib.contextmanager
def planted(name: str | None) -> Iterator[None]:
    """Run the block with the bug ``name`` planted (``None``: nothing planted)."""
    if name is None:
        yield
        return
    undo = PLANTS[name].apply()
    try:
        yield
    finally:
        undo()

