"""A recorded tape straight into the stream's :class:`~orderflow_plugin.pipeline.Pipeline`: no socket, no simulator.

Each row becomes the :class:`~orderflow_plugin.models.Trade` the frame Binance sent decodes to (the
tape checked its decimals when it was read), and goes through the same sequence, engine and dispatch
as a live trade, to the same plugins and signals: no frame is made only to be decoded again. A hole
in the tape is reported as a gap and never fetched (a replay sends nothing to any network).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from dataclasses import dataclass

from .actions import Action, WakeAt
from .config import Settings
from .stream import OrderFlow
from .tape import Tape

__all__ = ["ReplayResult", "offline", "replay"]


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: frames fed, seconds the pipeline took for them, and so frames per second."""

    frames: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Frames through the pipeline per second of its own time (pacing sleeps excluded)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


async def offline(flow: OrderFlow) -> OrderFlow:
    """``flow`` with backfill off: a replay reports holes, it never asks a REST server."""
    if flow.backfiller is not None:
        await flow.backfiller.aclose()
    flow.backfiller = None
    flow.pipeline.backfill = False
    flow.sequencing = dataclasses.replace(flow.sequencing, backfill=False)
    return flow


async def replay(flow: OrderFlow, tape: Tape, *, speed: float = 0.0, duration: float = 0.0) -> ReplayResult:
    """Feed ``tape`` into ``flow``'s pipeline; ``speed`` > 0 paces it by trade time (1 = as recorded)."""
    await offline(flow)
    source = tape.source
    due = math.inf  # the pipeline's nearest deadline (a hole's reorder window), from its WakeAt actions

    def act(action: Action) -> None:  # a file has nothing to pause, resume, rotate or fetch
        nonlocal due
        if type(action) is WakeAt:
            due = min(due, action.when)

    flow.pipeline.act = act
    trades = list(tape.trades())  # as the decoder makes them from the frames
    pipeline, dispatcher = flow.pipeline, flow.dispatcher
    dispatcher.emit("on_startup", settings=flow.settings if flow.settings is not None else Settings.defaults_for(flow))
    receive, clock = pipeline.receive_trade, time.monotonic
    busy = 0.0
    started = clock()
    first_time = tape.rows[0].time if tape.rows else 0
    fed = 0
    for row, trade in zip(tape.rows, trades, strict=True):
        if speed > 0:
            wait = started + (row.time - first_time) / 1000.0 / speed - clock()
            if duration and clock() - started + max(wait, 0.0) > duration:
                break
            if wait > 0:
                await asyncio.sleep(wait)
        begin = time.perf_counter()
        now = clock()
        receive(source, trade, now)
        if now >= due:
            due = math.inf
            pipeline.tick(now)
        busy += time.perf_counter() - begin
        fed += 1
    pipeline.tick(clock())
    while due < math.inf:  # holes still open: their windows end now, and each is reported as a gap
        now, due = due, math.inf
        pipeline.tick(now)
    for engine in flow.engines.values():  # the final state, as stop() sends it
        if engine.trades:
            pipeline.metric(engine.snapshot())
    dispatcher.emit("on_shutdown", summary=flow.summary())
    await dispatcher.aclose(timeout=0.5)
    return ReplayResult(fed, busy)
