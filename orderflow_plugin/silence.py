"""A silent stream on a live path: found by each symbol's learned deadline and confirmed over REST.

A dead path is the keepalive's job (:mod:`.keepalive`). Here a symbol silent past its learned
deadline (:mod:`.liveness`), or a shard silent past ``timeouts.stall``, is checked against REST:
newer trades there mean the stream went silent (the connection is failed, so it is replaced and
the hole backfilled); none mean the market is quiet (nothing happens: no reconnect for quiet).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from .backfill import Backfiller, BackfillFailed
from .driver import Driver
from .errors import Stalled
from .liveness import QUIET_CHECKS, TRADE_GRACE, no_new_trades
from .loopclock import loop_time
from .options import Sequencing, Timeouts
from .shards import Shard
from .wsconnection import WsConnection

__all__ = ["QuietAtConnect", "SilenceWatch"]

logger = logging.getLogger("orderflow_plugin.stream")
CEILING_SPACING = 1.0  # seconds between two looks, on one shard, at symbols whose deadline is the stall timeout


class QuietAtConnect:
    """The first_message stage's judgement: a connection with no trade yet is a quiet market, or a dead stream.

    Half way through the stage it notes REST's newest ids; at the deadline it asks again. Ids that did not
    move mean a quiet market (the connection stays). What REST shows beyond the last delivered id is fetched.
    """

    def __init__(self, driver: Driver, backfiller: Backfiller | None, timeouts: Timeouts,
                 listed: Mapping[str, str]) -> None:
        self.driver = driver  # every input into the pipeline goes through it
        self.pipeline = driver.pipeline
        self.backfiller = backfiller
        self.timeouts = timeouts
        self.listed = listed  # exchangeInfo's statuses, as the stream learns them

    def _fill_tails(self, newest: dict[str, int | None]) -> None:
        """Start fetching, for each symbol, what REST shows beyond the last delivered id (a look at connect)."""
        now = loop_time()
        for symbol, latest in newest.items():
            if latest is not None:
                self.driver.fill_tail(symbol, latest, now)

    async def baseline(self, shard: Shard, connection: WsConnection) -> None:
        """Half way through first_message with no trade yet (or at the silence deadline, if sooner): note
        REST's newest ids, and fetch what they show beyond the last delivered ones (never raises)."""
        shard.quiet_before = None
        # As soon as the silence watch would look, counted from each symbol's last trade, not from this connect:
        # trades REST has and we lack are not left for first_message, nor for ever when connections keep dying
        # sooner than a deadline (a flapping link on a quiet market).
        liveness, now = self.pipeline.liveness, loop_time()
        waits = (liveness.deadline(s) - (now - liveness.last_at[s]) if s in liveness.last_at else liveness.deadline(s)
                 for s in shard.symbols)
        await asyncio.sleep(max(0.0, min(self.timeouts.first_message / 2, *waits)))
        if connection.stage != "first_message" or self.backfiller is None:
            return
        try:
            async with asyncio.timeout(self.timeouts.first_message / 2):
                shard.quiet_before = await self._newest_ids(shard)
        except Exception as exc:  # REST trouble, or a bug: the stage then fails at its deadline, as without
            logger.warning("%s; cannot tell a quiet market from a dead stream", exc)
            return
        self._fill_tails(shard.quiet_before)

    async def quiet_market(self, shard: Shard, connection: WsConnection) -> bool:
        """At the first_message deadline: True when REST's newest ids did not move since half way (a quiet
        market: the connection stays), False when they did or nobody can tell (the stage fails)."""
        before, shard.quiet_before = shard.quiet_before, None
        if before is None or self.backfiller is None:
            return False
        try:
            async with asyncio.timeout(self.timeouts.rest):  # the stage is already past its deadline
                after = await self._newest_ids(shard)
        except (BackfillFailed, TimeoutError) as exc:
            logger.warning("%s; cannot tell a quiet market from a dead stream", exc or "REST took too long")
            return False
        self._fill_tails(after)  # REST's newest ids against what was delivered, not only against the first look
        if not no_new_trades(before, after):
            await asyncio.sleep(TRADE_GRACE)  # a trade REST already shows may still be on its way to us
            return False  # open_connection keeps the connection all the same if that trade came
        for symbol, newest in after.items():  # the silence watch compares with these until a trade comes
            if newest is not None:
                self.pipeline.liveness.baseline[symbol] = newest
        return True

    async def _newest_ids(self, shard: Shard) -> dict[str, int | None]:
        """REST's newest id of up to QUIET_CHECKS of the shard's symbols, asked at once."""
        assert self.backfiller is not None
        symbols = [s for s in shard.symbols if self.listed.get(s) != "unknown"][:QUIET_CHECKS]
        return dict(zip(symbols, await asyncio.gather(*(self.backfiller.latest_id(s) for s in symbols)), strict=True))


class SilenceWatch:
    """The streaming silence checks of the stream's shards, over its pipeline (fed through the driver) and REST.

    ``spawn`` starts a task the stream keeps and stops. A check that fetched a tail itself waits for the
    driver's backfill requests under way (``driver.fills``).
    """

    def __init__(self, shards: Sequence[Shard], driver: Driver, backfiller: Backfiller | None, timeouts: Timeouts,
                 sequencing: Sequencing, *, spawn: Callable[[Coroutine[Any, Any, Any], str], Any]) -> None:
        self.shards = shards
        self.driver = driver  # every input into the pipeline goes through it
        self.pipeline = driver.pipeline
        self.backfiller = backfiller
        self.timeouts = timeouts
        self.sequencing = sequencing
        self._spawn = spawn
        self._quiet_until: dict[str | int, float] = {}  # symbol or shard number -> no silence check before
        self._rest_newest: dict[str, tuple[int, float]] = {}  # symbol -> REST's newest id at a look, last trade then
        self._turns: dict[int, int] = {}  # shard number -> shard-wide looks so far (each looks at the next symbol)
        self._ceiling_next: dict[int, float] = {}  # shard number -> no look at a symbol at the ceiling before
        self._looked_at: dict[str, float] = {}  # symbol -> when its own look last started

    def silence_deadline(self, symbol: str) -> float:
        """Seconds without a trade after which ``symbol``'s feed is checked: learned from its own recent gaps."""
        return self.pipeline.liveness.deadline(symbol)

    def check(self, now: float) -> None:
        """One look: start the checks of feeds silent past their deadline.

        REST having newer trades than we delivered means the stream went silent: the connection is
        replaced and the hole backfilled. REST having none means the market is quiet: nothing happens
        (no reconnect for being quiet). Without REST, a shard silent for stall_timeout is replaced.
        """
        last_at = self.pipeline.liveness.last_at
        for shard in self.shards:
            connection = shard.machine.connection
            if shard.machine.state != "streaming" or connection is None or connection.done.done() or connection.paused:
                continue
            if any(self.pipeline.busy(s) for s in shard.symbols):
                continue  # trades are arriving and waiting behind a hole: the feed is alive
            newest = max(connection.opened_at, *(last_at.get(s, 0.0) for s in shard.symbols))
            shard_silent = now - newest >= self.timeouts.stall
            if shard_silent and now >= self._quiet_until.get(shard.number, 0.0):
                self._quiet_until[shard.number] = math.inf
                # each symbol in turn (one halted symbol is not the shard): the one that traded last is not always
                # it, as a tail fetched at each look counts as its trades while another's feed is lost (seed 1831)
                turn = self._turns[shard.number] = self._turns.get(shard.number, -1) + 1
                latest = shard.symbols[turn % len(shard.symbols)]
                self._spawn(self._verify_silence(shard, connection, latest, self.timeouts.stall,
                                                 key=shard.number), f"orderflow silence check {shard.number}")
                continue
            if self.backfiller is None:
                continue
            at_ceiling: list[str] = []  # due symbols whose deadline is the stall timeout
            for symbol in shard.symbols:
                deadline = self.silence_deadline(symbol)
                since = now - max(connection.opened_at, last_at.get(symbol, 0.0))
                if since < deadline or now < self._quiet_until.get(symbol, 0):
                    continue
                if deadline < self.timeouts.stall:
                    self._look(shard, connection, symbol, deadline)
                elif not shard_silent:
                    at_ceiling.append(symbol)
            # A deadline at the ceiling (nothing learned yet, as after a restart, or a very quiet symbol) is the shard
            # look's, unless another symbol of the shard trades: then no shard look comes, and such a symbol has its
            # own (seed 6459). Hundreds of them would spend the REST budget at once and the same first ones would
            # win every time: one look per shard every CEILING_SPACING s, the symbol looked at longest ago first.
            if at_ceiling and now >= self._ceiling_next.get(shard.number, 0.0):
                self._ceiling_next[shard.number] = now + CEILING_SPACING
                symbol = min(at_ceiling, key=lambda s: self._looked_at.get(s, -math.inf))
                self._look(shard, connection, symbol, self.timeouts.stall)

    def _look(self, shard: Shard, connection: WsConnection, symbol: str, deadline: float) -> None:
        """Start one symbol's silence check."""
        self._quiet_until[symbol] = math.inf
        self._looked_at[symbol] = loop_time()
        self._spawn(self._verify_silence(shard, connection, symbol, deadline, key=symbol),
                    f"orderflow silence check {symbol}")

    async def _verify_silence(self, shard: Shard, connection: WsConnection, symbol: str, deadline: float, *,
                              key: str | int) -> None:
        quiet_for = deadline  # no new check of this symbol (or shard) before that, unless the feed is replaced
        try:
            error = await self._silent_stream(connection, symbol, deadline, shard_wide=isinstance(key, int))
            if error is not None and not connection.done.done() and shard.machine.connection is connection:
                quiet_for = 0.0
                connection.fail(error)
        finally:
            self._quiet_until[key] = loop_time() + quiet_for

    async def _silent_stream(self, connection: WsConnection, symbol: str, deadline: float, *,
                             shard_wide: bool) -> Stalled | None:
        """Why the stream of a symbol silent past ``deadline`` is dead, or None if the market is just quiet."""
        sequencer = self.pipeline.sequencers[symbol]
        last_at = self.pipeline.liveness.last_at
        last, heard = sequencer.last_delivered, last_at.get(symbol, 0.0)
        if last is None:  # nothing delivered yet: compare with what REST had when the connection opened
            last = self.pipeline.liveness.baseline.get(symbol)
        if self.backfiller is None:
            seen = "there is no REST to check against"
        else:
            try:
                newest = await self.backfiller.latest_id(symbol)
            except BackfillFailed as exc:
                # REST cannot tell. A symbol, or a shard still receiving (pongs): the ping watches the path.
                # Except with backfill off: a shard silent for the stall timeout is replaced, as it always was
                # for a stream that runs without REST (a replacement loses nothing it would have filled).
                if not shard_wide or (self.sequencing.backfill
                                      and loop_time() - connection.last_received < self.timeouts.stall):
                    logger.warning("%s; cannot tell a quiet market from a silent stream", exc)
                    return None
                seen = f"REST cannot tell either ({exc})"
            else:
                if last is None and newest is not None:  # nothing to compare with yet: the next look has this
                    self.pipeline.liveness.baseline[symbol] = newest
                if newest is None or last is None or newest <= last:
                    logger.debug("%s: quiet for %.1f s, REST agrees (newest id %s)", symbol, deadline, newest)
                    if newest is not None and newest == sequencer.last_delivered:
                        self.pipeline.caught_up(symbol)
                    return None
                await asyncio.sleep(TRADE_GRACE)  # a trade REST shows may still be on its way to us
                if last_at.get(symbol, 0.0) != heard or self.pipeline.busy(symbol):
                    return None
                # What REST shows is fetched (with backfill on and a last id to go on from). The stream is silent
                # only if the market went on trading since and nothing of it came to us: REST is asked again.
                # A quiet market keeps its connection: a reconnect would not bring these trades either.
                filled = await self._fill_tail(symbol, newest)
                since_fill = last_at.get(symbol, 0.0)  # the fill's trades count as deliveries, not as news
                try:
                    again = await self.backfiller.latest_id(symbol)
                except BackfillFailed as exc:
                    logger.warning("%s; cannot tell a quiet market from a silent stream", exc)
                    return None
                if again is None or again <= newest:
                    # Not fetched (backfill off): a quiet market trades rarely, so REST seldom moves within the
                    # grace above; REST having moved since the previous look, with nothing heard, is as telling.
                    before = self._rest_newest.get(symbol)
                    self._rest_newest[symbol] = (newest, heard)
                    if filled or before is None or before[1] != heard or newest <= before[0]:
                        if filled:
                            self.pipeline.caught_up(symbol)
                        logger.log(logging.INFO if filled else logging.DEBUG,
                                   "%s: ids %d..%d, which REST has and the stream did not send, %s; nothing traded "
                                   "since", symbol, last + 1, newest, "were fetched" if filled else "are not delivered")
                        return None
                    again = newest
                    newest = before[0]
                await asyncio.sleep(TRADE_GRACE)
                if last_at.get(symbol, 0.0) != since_fill or self.pipeline.busy(symbol):
                    return None
                last, newest = sequencer.last_delivered, again
                seen = f"REST has trades up to id {newest}, we delivered up to {last}"
        silent = loop_time() - max(connection.opened_at, heard)  # since the last trade before the look
        return Stalled(f"{symbol}: no trade from {connection.endpoint} for {silent:.1f} s (deadline {deadline:.1f} s) "
                       f"while {seen}: the stream went silent", url=connection.url, stage="streaming",
                       silent_for=silent)

    async def _fill_tail(self, symbol: str, newest: int) -> bool:
        """Fetch the ids REST has beyond the last delivered one, up to ``newest``; True once all are delivered."""
        if not self.driver.fill_tail(symbol, newest, loop_time()):
            return False
        while symbol in self.pipeline.filling:  # a long tail comes in chunks, each its own request
            task = self.driver.fills.get(symbol)
            if task is None:
                break
            await asyncio.wait([task])
        last = self.pipeline.sequencers[symbol].last_delivered
        return last is not None and last >= newest
