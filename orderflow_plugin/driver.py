"""The one interpreter of the pipeline's actions: inputs in, then what the pipeline queued carried out.

:class:`~orderflow_plugin.pipeline.Pipeline` decides (deliver, hold, fetch, pause, write a
checkpoint) and queues its actions; it never calls out while it runs. A :class:`Driver` hands it
each input (a frame, a backfill answer, the time, a checkpoint written) and, once the input has
returned, carries out what it queued: it tells connections they are subscribed, have their first
trade, must pause or resume (a resumed connection hands its held frames back in as new inputs),
runs the REST requests (:mod:`.backfill`), writes checkpoints, asks for a rotation and for a
wake-up. The live stream, a replay, the doctor and the Redis source all use this one class; each
differs only in the world it plugs in (a backfiller or none, how to spawn a task, rotate a
connection, be woken).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .actions import Backfill, FirstTrade, PauseReading, ResumeReading, Rotate, Subscribed, WakeAt, WriteCheckpoint
from .backfill import Backfiller, BackfillFailed
from .loopclock import loop_time
from .models import Trade
from .pipeline import Pipeline

__all__ = ["CallSink", "Driver", "discard"]

logger = logging.getLogger("orderflow_plugin.stream")


@dataclass(slots=True)
class CallSink:
    """A :class:`~orderflow_plugin.actions.Sink` made of three callables (the stream's: the dispatcher's)."""

    trade: Callable[[Trade], None]
    metric: Callable[[Any], None]
    event: Callable[..., None]


def discard(*args: Any, **kwargs: Any) -> None:
    """A sink output nobody reads (the doctor's, a test's)."""


def _spawn(coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coroutine, name=name)


class Driver:
    """Feeds ``pipeline`` its inputs and carries out the actions each one queued, after it returned.

    ``backfiller``: where :class:`Backfill` requests go (None: nowhere; the pipeline then must have
    backfill off). ``spawn(coroutine, name)``: starts a task the owner keeps and reports.
    ``rotate(connection, reason)``: replace that connection make-before-break (None: nothing to
    rotate). ``wake(when)``: call :meth:`tick` at ``when`` (None: the caller reads :attr:`due`).
    ``emit(hook, **kwargs)``: report a bug met while carrying out an action in the background.
    ``clock``: the time handed to the inputs the driver starts itself (a backfill answer, a write).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        backfiller: Backfiller | None = None,
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]] = _spawn,
        rotate: Callable[[Hashable, str], None] | None = None,
        wake: Callable[[float], None] | None = None,
        emit: Callable[..., None] = discard,
        clock: Callable[[], float] = loop_time,
    ) -> None:
        self.pipeline = pipeline
        self.backfiller = backfiller
        self._spawn = spawn
        self._rotate = rotate
        self._wake = wake
        self._emit = emit
        self.clock = clock
        self._outbox = pipeline.outbox
        self._receive = pipeline.receive  # bound once: called per frame
        self.fills: dict[str, asyncio.Task[None]] = {}  # symbol -> its backfill request under way
        self.due = math.inf  # the nearest WakeAt not yet ticked past

    # Inputs: each is the pipeline's, then what it queued is carried out

    def receive(self, connection: Hashable, frame: bytes, now: float | None = None) -> None:
        """One frame from ``connection`` (a Redis entry's, a test's)."""
        self._receive(connection, frame, now)
        if self._outbox:
            self.carry_out()

    def receive_read(self, connection: Hashable, frames: list[bytes], now: float) -> int:
        """Data frames of one read from ``connection`` (the connection's ``on_frames``), then what they queued
        carried out once: how many were taken. It stops after a frame that paused ``connection``, so that the
        pause lands before the next frame of the read, which the connection holds for its resume."""
        receive = self._receive
        paused = self.pipeline.paused
        taken = 0
        for frame in frames:
            receive(connection, frame, now)
            taken += 1
            if paused and connection in paused:
                break
        if self._outbox:
            self.carry_out()
        return taken

    def receive_trade(self, connection: Hashable, trade: Trade, now: float) -> None:
        """One trade already decoded (a tape read from a file), as :meth:`receive` takes a frame."""
        self.pipeline.receive_trade(connection, trade, now)
        if self._outbox:
            self.carry_out()

    def receive_trades(self, connection: Hashable, trades: Sequence[Trade], start: int, stop: int, now: float) -> int:
        """Decoded trades ``trades[start:stop]`` (a tape's), read at ``now``, up to the first that queued an action,
        which is then carried out (:meth:`Pipeline.receive_trades`): returns the index after the last taken."""
        index = self.pipeline.receive_trades(connection, trades, start, stop, now)
        if self._outbox:
            self.carry_out()
        return index

    def tick(self, now: float) -> None:
        """The pipeline's clock: gaps past their reorder window, a pause run out, bars, snapshots, checkpoints."""
        self.pipeline.tick(now)
        # Every deadline still pending, not only the one just met (one already past: look again now).
        self.due = max(now, self.pipeline.next_deadline())
        if self._outbox:
            self.carry_out()

    def backfilled(self, symbol: str, first: int, last: int, trades: list[Trade], failed: Exception | None,
                   now: float) -> None:
        """A :class:`Backfill` answered: the trades fetched, and why it stopped short."""
        self.pipeline.backfilled(symbol, first, last, trades, failed, now)
        if self._outbox:
            self.carry_out()

    def fill_tail(self, symbol: str, newest: int, now: float) -> bool:
        """Fetch what REST has beyond the last delivered id, up to ``newest`` (see :meth:`Pipeline.fill_tail`)."""
        started = self.pipeline.fill_tail(symbol, newest, now)
        if self._outbox:
            self.carry_out()
        return started

    def prime(self, trades: Iterable[Trade], now: float) -> int:
        """Deliver stored trades before the stream starts (see :meth:`Pipeline.prime`)."""
        count = self.pipeline.prime(trades, now)
        if self._outbox:
            self.carry_out()
        return count

    def deliver_as_is(self, trade: Trade, now: float) -> None:
        """Deliver ``trade`` unsequenced (a Redis consumer group's share)."""
        self.pipeline.deliver_as_is(trade, now)
        if self._outbox:
            self.carry_out()

    def checkpoint_written(self, pending: Any, error: BaseException | None, now: float) -> None:
        """A :class:`WriteCheckpoint` done (``error`` None) or failed."""
        self.pipeline.checkpoint_written(pending, error, now)
        if self._outbox:
            self.carry_out()

    def forget(self, connection: Hashable) -> None:
        """``connection`` ended."""
        self.pipeline.forget(connection)

    # Actions

    def carry_out(self) -> None:
        """Carry out the queued actions, oldest first, with the pipeline at rest.

        An action may hand the pipeline a new input (a resumed connection's held frames, a checkpoint
        written now): its actions join the same queue and are carried out in turn.
        """
        outbox = self._outbox
        while outbox:
            action = outbox.popleft()
            try:
                self._carry_out(action)
            except Exception as exc:  # a bug: reported, and the actions queued after it are still carried out
                logger.error("carrying out %s failed; the next actions go on", type(action).__name__, exc_info=exc)
                self._emit("on_error", error=exc, where="driver")

    def _carry_out(self, action: Any) -> None:
        kind = type(action)
        if kind is FirstTrade:
            action.connection.first_trade()
        elif kind is Subscribed:
            action.connection.subscribed(action.reply_id, action.error)
        elif kind is PauseReading:
            action.connection.pause()
        elif kind is ResumeReading:
            for connection in action.connections:
                connection.resume()
        elif kind is WakeAt:
            self.due = min(self.due, action.when)
            if self._wake is not None:
                self._wake(action.when)
        elif kind is Backfill:
            self._backfill(action)
        elif kind is WriteCheckpoint:
            self._write(action)
        elif kind is Rotate and self._rotate is not None:
            logger.info("%s announced %s: replacing the connection",
                        getattr(action.connection, "endpoint", action.connection), action.reason)
            self._rotate(action.connection, action.reason)

    def _backfill(self, request: Backfill) -> None:
        if self.backfiller is None:  # no REST here: the hole ends in a report, never open for ever
            self.backfilled(request.symbol, request.first, request.last, [], BackfillFailed(
                f"{request.symbol}: ids {request.first}..{request.last} cannot be fetched: no REST here",
                url="", symbol=request.symbol, first=request.first, last=request.last), self.clock())
            return
        earlier = self.fills.get(request.symbol)
        if earlier is not None:  # a hole given up while its chunk was being fetched: that answer is moot
            earlier.cancel()
        self.fills[request.symbol] = self._spawn(self._fetch(request), f"orderflow backfill {request.symbol}")

    async def _fetch(self, request: Backfill) -> None:
        """One backfill request: its answer, or its failure with the pages that did arrive, goes to the pipeline."""
        assert self.backfiller is not None
        symbol, first, last = request.symbol, request.first, request.last
        failed: Exception | None = None
        try:
            trades = await self.backfiller.fetch(symbol, first, last)
        except BackfillFailed as exc:
            failed, trades = exc, exc.fetched  # the pages that did arrive are delivered, not lost
        except Exception as exc:  # a bug, not REST trouble: the hole must still end, in a report
            logger.exception("%s: backfill of ids %d..%d raised", symbol, first, last)
            failed, trades = BackfillFailed(f"{symbol}: backfill of ids {first}..{last} raised {exc!r}",
                                            url=self.backfiller.rest_url, symbol=symbol, first=first, last=last), []
        if self.fills.get(symbol) is asyncio.current_task():
            del self.fills[symbol]
        self.backfilled(symbol, first, last, trades, failed, self.clock())

    def _write(self, action: WriteCheckpoint) -> None:
        checkpointer = self.pipeline.checkpointer
        pending = action.pending
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            background = False  # no loop to hear back on: write now
        else:
            background = not action.wait
        if not background:
            self.checkpoint_written(pending, checkpointer.persist(pending), self.clock())
            return
        checkpointer.persist_in_background(pending).add_done_callback(
            lambda future: self._written(pending, future))

    def _written(self, pending: Any, future: asyncio.Future[None]) -> None:
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        try:
            self.checkpoint_written(pending, error, self.clock())
        except Exception as exc:  # a callback of the loop's: nobody above would see it
            logger.error("handing a checkpoint write to the pipeline failed", exc_info=exc)
            self._emit("on_error", error=exc, where="checkpoint")
