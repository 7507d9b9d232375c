"""The asyncio side of the data path: frames into the pipeline, its actions carried out, its clock driven.

:class:`~orderflow_plugin.pipeline.Pipeline` decides (deliver, hold, fetch, pause); this hands it
every frame with the time, runs the REST requests it asks for (:mod:`.backfill`), pauses and
resumes connections, and ticks it: at its deadlines (:class:`~orderflow_plugin.actions.WakeAt`)
and every quarter second, when the silence watch looks too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .actions import Action, Backfill, FirstTrade, PauseReading, ResumeReading, Rotate, Subscribed, WakeAt
from .backfill import BackfillFailed
from .checkpoint import CheckpointError
from .loopclock import loop_time
from .models import Trade
from .transport import WsConnection

if TYPE_CHECKING:
    from .stream import OrderFlow

__all__ = ["CallSink", "PipelineDriver", "discard", "tell_connection"]

logger = logging.getLogger("orderflow_plugin.stream")


@dataclass(slots=True)
class CallSink:
    """A :class:`~orderflow_plugin.actions.Sink` made of three callables (the stream's: the dispatcher's)."""

    trade: Callable[[Trade], None]
    metric: Callable[[Any], None]
    event: Callable[..., None]


def tell_connection(action: Action) -> bool:
    """Carry out an action addressed to the connection it names; False when it is not one of those.

    The stream, the doctor and the transport tests all open connections whose stages end on what
    the pipeline decoded (the subscription reply, the first trade): this is that glue, once.
    """
    kind = type(action)
    if kind is FirstTrade:
        action.source.first_trade()  # type: ignore[union-attr]
    elif kind is Subscribed:
        action.source.subscribed(action.reply_id, action.error)  # type: ignore[union-attr]
    elif kind is PauseReading:
        action.source.pause()  # type: ignore[union-attr]
    elif kind is ResumeReading:
        for connection in action.sources:  # type: ignore[union-attr]
            connection.resume()
    else:
        return False
    return True


def discard(*args: Any, **kwargs: Any) -> None:
    """A sink output nobody reads (the doctor's, a test's)."""


class PipelineDriver:
    """OrderFlow's data path (a mixin: it runs on the stream's pipeline, shards and backfiller)."""

    def _gone(self: OrderFlow, connection: WsConnection) -> None:
        self._live.discard(connection)
        self.pipeline.forget(connection)

    def _act(self: OrderFlow, action: Action) -> None:
        """Carry out what the pipeline asked for."""
        kind = type(action)
        if tell_connection(action):
            return
        if kind is WakeAt:
            assert self._loop is not None
            self._loop.call_later(max(0.0, action.when - loop_time()), self._tick_once, False)  # type: ignore[union-attr]
        elif kind is Backfill:
            earlier = self._fills.get(action.symbol)  # type: ignore[union-attr]
            if earlier is not None:  # a hole given up while its chunk was being fetched: that answer is moot
                earlier.cancel()
            self._fills[action.symbol] = self._spawn(self._fetch(action), f"orderflow backfill {action.symbol}")  # type: ignore[union-attr]
        elif kind is Rotate:
            logger.info("%s announced %s: replacing the connection", action.source.endpoint, action.reason)  # type: ignore[union-attr]
            for shard in self._shards:
                if shard.machine.connection is action.source:  # type: ignore[union-attr]
                    self._tell(shard, lambda shard=shard: shard.machine.rotate(action.source, loop_time()))  # type: ignore[union-attr]

    async def _fetch(self: OrderFlow, request: Backfill) -> None:
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
                                            url=self.rest_url, symbol=symbol, first=first, last=last), []
        if self._fills.get(symbol) is asyncio.current_task():
            del self._fills[symbol]
        self.pipeline.backfilled(symbol, first, last, trades, failed, loop_time())

    def _checkpoint_failed(self: OrderFlow, exc: CheckpointError) -> None:
        """Trades go on; say that a restart is no longer exact until a write succeeds again."""
        logger.error("%s; trades go on, but a restart may now repeat trades without source=\"replay\"", exc)
        self._emit("on_error", error=exc, where="checkpoint")

    async def _tick(self: OrderFlow) -> None:
        """Drive the pipeline's clock (gaps, bars, snapshots, checkpoints) and look for silent feeds."""
        while True:
            await asyncio.sleep(self.pipeline.tick_interval)
            self._tick_once()

    def _tick_once(self: OrderFlow, look: bool = True) -> None:
        """One tick of the pipeline, after telling it what each connection last read; ``look``: and a look
        for silent feeds (the regular tick; a WakeAt, for a reorder or pause deadline, only ticks)."""
        if self._state != "running":
            return
        now = loop_time()
        try:
            if self.timeouts.ping_interval > 0:  # without pings a quiet connection reads nothing to go by
                for shard in self._shards:
                    connection = shard.machine.connection
                    if connection is not None and shard.machine.state == "streaming":
                        self.pipeline.heard(shard.symbols, connection.last_received)
            self.pipeline.tick(now)
            if look:
                self._check_silence(now)
        except Exception as exc:  # a bug here must not end the ticker: report it and look again
            logger.error("stream ticker failed; it goes on", exc_info=exc)
            self._emit("on_error", error=exc, where="task:orderflow ticker")
