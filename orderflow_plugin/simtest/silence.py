"""The shell's silence watch (``silence.SilenceWatch``), played in virtual time with the same rule.

The watch is asyncio code in the shell, so the harness plays its part as it plays the rest of the
shell's: at each regular tick, a symbol of a streaming shard silent past its learned deadline
(``Liveness.deadline``, the real one) is checked against REST. REST ahead of what was delivered:
after ``TRADE_GRACE`` with no trade, the tail is fetched with the real ``Pipeline.fill_tail`` (when it
can start: backfill on, a last id to go on from); then REST is asked again, and only if it moved while
nothing came live is the connection failed with :class:`~orderflow_plugin.errors.Stalled` (a muted
stream). The shard-wide stall check is this
same look for a symbol at the ``timeouts.stall`` ceiling. REST's newest id answers after a draw from a
generator of its own, so seeds that never look keep every other draw they had.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from ..errors import Stalled
from ..liveness import TRADE_GRACE
from .messages import ENDPOINT, URL

if TYPE_CHECKING:
    from .harness import Shard, Simulation
    from .network import SimConnection

__all__ = ["SilenceLook"]


class SilenceLook:
    """Per symbol: when it may next be checked, and the checks under way."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.rng = random.Random(f"silence {sim.seed}")
        self.quiet_until: dict[str, float] = {}
        self.waiting: dict[str, tuple[Shard, SimConnection, str, int, float]] = {}  # symbol -> a check awaiting a fill

    def look(self) -> None:
        """One look, as ``SilenceWatch._check_silence`` makes at each regular tick."""
        sim = self.sim
        pipeline = sim.pipeline
        last_at = pipeline.liveness.last_at
        for shard in sim.shards:
            connection = shard.sup.connection
            if shard.sup.state != "streaming" or connection is None or connection.ended or connection.paused:
                continue
            if any(pipeline.busy(s) for s in shard.symbols):
                continue  # trades are arriving and waiting behind a hole: the feed is alive
            for symbol in shard.symbols:
                deadline = pipeline.liveness.deadline(symbol)
                since = sim.now - max(connection.receiving_since, last_at.get(symbol, 0.0))
                if since >= deadline and sim.now >= self.quiet_until.get(symbol, 0.0):
                    self.quiet_until[symbol] = math.inf
                    sim.at(sim.now + self._rtt(), self._asked, shard, connection, symbol, deadline,
                           last_at.get(symbol, 0.0))

    def filled(self, symbol: str) -> None:
        """A backfill answer of ``symbol`` was handed to the pipeline: a check waiting for it goes on."""
        if symbol in self.waiting and symbol not in self.sim.pipeline.filling:
            shard, connection, _, newest, deadline = self.waiting.pop(symbol)
            self.sim.at(self.sim.now + self._rtt(), self._asked_again, shard, connection, symbol, newest, deadline,
                        self.sim.pipeline.liveness.last_at.get(symbol, 0.0))

    # The steps of one check

    def _asked(self, shard: Shard, connection: SimConnection, symbol: str, deadline: float, heard: float) -> None:
        pipeline = self.sim.pipeline
        newest = self._newest(symbol)
        last = pipeline.sequencers[symbol].last_delivered
        if last is None:
            last = pipeline.liveness.baseline.get(symbol)
            if last is None and newest is not None:
                pipeline.liveness.baseline[symbol] = newest
        if newest is None or last is None or newest <= last:
            if newest is not None and newest == pipeline.sequencers[symbol].last_delivered:
                pipeline.caught_up(symbol)
            self._done(symbol, deadline)
            return
        self.sim.at(self.sim.now + TRADE_GRACE, self._graced, shard, connection, symbol, deadline, heard, newest)

    def _graced(self, shard: Shard, connection: SimConnection, symbol: str, deadline: float, heard: float,
                newest: int) -> None:
        pipeline = self.sim.pipeline
        if pipeline.liveness.last_at.get(symbol, 0.0) != heard or pipeline.busy(symbol):
            self._done(symbol, deadline)
            return
        if pipeline.fill_tail(symbol, newest, self.sim.now):
            self.waiting[symbol] = (shard, connection, symbol, newest, deadline)
            return
        self.sim.at(self.sim.now + self._rtt(), self._asked_again, shard, connection, symbol, newest, deadline,
                    pipeline.liveness.last_at.get(symbol, 0.0))

    def _asked_again(self, shard: Shard, connection: SimConnection, symbol: str, newest: int, deadline: float,
                     heard: float) -> None:
        again = self._newest(symbol)
        if again is None or again <= newest:  # filled, and nothing traded since: a quiet market
            if self.sim.pipeline.sequencers[symbol].last_delivered == newest:
                self.sim.pipeline.caught_up(symbol)
            self._done(symbol, deadline)
            return
        self.sim.at(self.sim.now + TRADE_GRACE, self._graced_again, shard, connection, symbol, deadline, heard, again)

    def _graced_again(self, shard: Shard, connection: SimConnection, symbol: str, deadline: float, heard: float,
                      again: int) -> None:
        pipeline = self.sim.pipeline
        if pipeline.liveness.last_at.get(symbol, 0.0) != heard or pipeline.busy(symbol):
            self._done(symbol, deadline)
            return
        self._fail(shard, connection, symbol, deadline, again, pipeline.sequencers[symbol].last_delivered)

    # Ends

    def _done(self, symbol: str, deadline: float) -> None:
        self.quiet_until[symbol] = self.sim.now + deadline

    def _fail(self, shard: Shard, connection: SimConnection, symbol: str, deadline: float, newest: int,
              last: int | None) -> None:
        """The stream went silent while the market traded: the connection is failed and replaced."""
        self.quiet_until[symbol] = self.sim.now
        if connection.ended or shard.sup.connection is not connection:
            return
        silent = self.sim.now - max(connection.receiving_since, self.sim.pipeline.liveness.last_at.get(symbol, 0.0))
        connection.end(Stalled(f"{symbol}: no trade from {ENDPOINT} for {silent:.1f} s (deadline {deadline:.1f} s) "
                               f"while REST has trades up to id {newest}, we delivered up to {last}: the stream "
                               "went silent", url=URL, stage="streaming", silent_for=silent))

    def _newest(self, symbol: str) -> int | None:
        """REST's newest id now: it knows the trades published ``rest_lag`` ago."""
        timeline = self.sim.exchange.timelines[symbol]
        count = timeline.published(self.sim.now - self.sim.world.rest_lag)
        return timeline.rows[count - 1].id if count else None

    def _rtt(self) -> float:
        return self.rng.uniform(0.005, self.sim.world.rest_latency)
