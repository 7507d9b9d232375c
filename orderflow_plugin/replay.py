"""A recorded tape straight into the stream's :class:`~orderflow_plugin.pipeline.Pipeline`: no socket, no simulator.

Each row becomes the :class:`~orderflow_plugin.models.Trade` the frame Binance sent decodes to (the
tape checked its decimals when it was read), and goes through the same sequence, engine and dispatch
as a live trade, to the same plugins and signals, through the same
:class:`~orderflow_plugin.driver.Driver` (with no backfiller, no connection to rotate and no timer:
the replay ticks the pipeline itself at the driver's :attr:`~orderflow_plugin.driver.Driver.due`).
No frame is made only to be decoded again. A hole in the tape is reported as a gap and never fetched
(a replay sends nothing to any network).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

from .config import Settings
from .driver import Driver
from .models import Trade
from .stream import OrderFlow
from .tape import Tape

__all__ = ["BATCH", "ReplayResult", "offline", "replay"]

BATCH = 1024  # trades of an unpaced replay taken as one input at one time, as a socket read's frames are


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: frames fed, seconds the pipeline took for them, and so frames per second."""

    frames: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Frames through the pipeline per second of its own time (pacing sleeps excluded)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class TapeFeed:
    """The connection a replay's frames come from, as the driver addresses it: a file has nothing to pause,
    resume or subscribe, so each action on it is a no-op."""

    def __init__(self, name: str) -> None:
        self.endpoint = name

    def first_trade(self) -> None:
        """Nothing waits for it."""

    def subscribed(self, reply_id: int | None, error: Any) -> None:
        """A tape has no subscription."""

    def pause(self) -> None:
        """A file is read on: what waits behind a hole is held by the sequencer, within its limits."""

    def resume(self) -> None:
        """Nothing was held back."""


def _unpaced(driver: Driver, connection: TapeFeed, trades: list[Trade], batch: int) -> tuple[int, float]:
    """Every trade of ``trades`` into ``driver``, ``batch`` at a time: how many, and the seconds it took."""
    receive, tick, clock, timer = driver.receive_trades, driver.tick, time.monotonic, time.perf_counter
    total = len(trades)
    position = 0
    busy = 0.0
    while position < total:
        begin = timer()
        now = clock()
        stop = min(position + batch, total)
        while position < stop:  # a trade that queued an action ends an input early: the rest go in at once
            position = receive(connection, trades, position, stop, now)
            if now >= driver.due:
                tick(now)
        busy += timer() - begin
    return total, busy


async def offline(flow: OrderFlow) -> OrderFlow:
    """``flow`` with backfill off: a replay reports holes, it never asks a REST server."""
    if flow.backfiller is not None:
        await flow.backfiller.aclose()
    flow.backfiller = flow.driver.backfiller = None
    flow.pipeline.backfill = False
    flow.sequencing = dataclasses.replace(flow.sequencing, backfill=False)
    return flow


async def replay(flow: OrderFlow, tape: Tape, *, speed: float = 0.0, duration: float = 0.0,
                 batch: int = BATCH) -> ReplayResult:
    """Feed ``tape`` into ``flow``'s pipeline; ``speed`` > 0 paces it by trade time (1 = as recorded).

    Unpaced, up to ``batch`` trades go in as one input read at one time, as the frames of one socket read do
    (:meth:`~orderflow_plugin.driver.Driver.receive_trades`: each trade's actions are still carried out before
    the next trade); ``batch=1`` gives each trade its own input and time."""
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"replay: batch must be a whole number of trades >= 1, not {batch!r}")
    await offline(flow)
    connection = TapeFeed(tape.source)
    # A file has nothing to pause, resume, rotate or fetch; the pipeline's deadlines are read from driver.due.
    driver = Driver(flow.pipeline, emit=flow.dispatcher.emit)
    trades = list(tape.trades())  # as the decoder makes them from the frames
    pipeline, dispatcher = flow.pipeline, flow.dispatcher
    dispatcher.emit("on_startup", settings=flow.settings if flow.settings is not None else Settings.defaults_for(flow))
    receive, tick, clock = driver.receive_trade, driver.tick, time.monotonic
    busy = 0.0
    started = clock()
    first_time = tape.rows[0].time if tape.rows else 0
    fed = 0
    if speed <= 0 and batch > 1:
        fed, busy = _unpaced(driver, connection, trades, batch)
    paced = zip(tape.rows, trades, strict=True) if fed == 0 else ()
    for row, trade in paced:
        if speed > 0:
            wait = started + (row.time - first_time) / 1000.0 / speed - clock()
            if duration and clock() - started + max(wait, 0.0) > duration:
                break
            if wait > 0:
                await asyncio.sleep(wait)
        begin = time.perf_counter()
        now = clock()
        receive(connection, trade, now)
        if now >= driver.due:
            tick(now)
        busy += time.perf_counter() - begin
        fed += 1
    tick(clock())
    while driver.due < math.inf:  # holes still open: their windows end now, and each is reported as a gap
        tick(driver.due)
    for engine in flow.engines.values():  # the final state, as stop() sends it
        if engine.trades:
            pipeline.metric(engine.snapshot())
    dispatcher.emit("on_shutdown", summary=flow.summary())
    await dispatcher.aclose(timeout=0.5)
    return ReplayResult(fed, busy)
