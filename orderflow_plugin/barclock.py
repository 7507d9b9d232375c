"""When the timer may close a quiet market's bars: never while a trade of the window may still come.

Plain code with no I/O; every method takes ``now`` (monotonic seconds). A bar ends on the trade
clock; the timer closes it ``grace`` seconds later on that clock, as learned from the last live
trade (trade time minus the time it was delivered). It waits, for a symbol, while its feed was
lost and no live trade has shown the new one caught up (a hole that trade reveals is filled
first), and until its connection has read something past that moment (a pong counts: a path
that died unnoticed closes nothing); for every symbol, one tick after the process was held up
(frames waiting in its sockets go first). The pipeline adds its own rule: never while a hole of
the symbol is open or being filled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["TICK", "BarClock"]

TICK = 0.25  # seconds between regular ticks, at most
_LATE_TICK = 1.0  # a tick this long after the last one: the process was held up and frames may wait unread


class BarClock:
    """Per symbol: the trade clock's offset, whether its feed was lost, when its connection last read."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.offset: dict[str, float] = {}  # trade time minus delivery time, ms
        self.stale: set[str] = set()  # feed lost: trades of any window may still come
        self.heard_at: dict[str, float] = {}  # when the symbol's connection last read anything
        self._last_tick = math.inf  # no tick yet: the first one is not late

    def feed_lost(self, symbols: Iterable[str]) -> None:
        """The connection carrying ``symbols`` ended."""
        self.stale.update(symbols)

    def heard(self, symbols: Iterable[str], when: float) -> None:
        """The connection carrying ``symbols`` last read a byte at ``when``."""
        for symbol in symbols:
            self.heard_at[symbol] = when

    def live_trade(self, symbol: str, trade_ms: int, delivered_at: float) -> None:
        """The last live trade of ``symbol``, traded at ``trade_ms``, was delivered at ``delivered_at``.

        A live delivery is in order after everything before it: the pipeline then also drops the
        symbol from :attr:`stale` (on its per-trade path, without this call)."""
        self.offset[symbol] = trade_ms - delivered_at * 1000.0

    def tick(self, now: float) -> bool:
        """A tick at ``now``: False when it comes late (the process was held up) and bars should wait."""
        late, self._last_tick = now - self._last_tick > _LATE_TICK, now
        return not late

    def close_before(self, symbol: str, now: float) -> int | None:
        """Bars of ``symbol`` ending at or before this trade time may close now; None: none may."""
        offset = self.offset.get(symbol)
        if offset is None or symbol in self.stale:
            return None
        heard = min(now, self.heard_at.get(symbol, now))
        return int(heard * 1000.0 + offset - self.grace * 1000)
