"""A bar being built: the engine's mutable, private working state for one window. No I/O."""

from __future__ import annotations

from decimal import Decimal

from .metrics import _ZERO, _add
from .models import Trade

__all__ = ["OpenBar"]


class OpenBar:
    """A bar being built; mutable and private."""

    __slots__ = ("buy_notional", "buy_volume", "close", "edge", "floor", "high", "largest_id", "largest_qty", "level",
                 "levels", "low", "open", "sell_notional", "sell_volume", "start", "trade_count", "trades")

    def __init__(self, start: int, price: Decimal, first_id: int) -> None:
        self.start = start
        self.open = self.high = self.low = self.close = price
        self.buy_volume = self.sell_volume = self.buy_notional = self.sell_notional = _ZERO
        self.trades = self.trade_count = 0
        self.largest_qty = _ZERO
        self.largest_id = first_id
        self.levels: dict[Decimal, list[Decimal]] = {}  # footprint: bucket price -> [buy volume, sell volume]
        # The level the last trade went to, and its bucket's edges: most trades fall in the same one.
        self.floor = self.edge = _ZERO
        self.level: list[Decimal] | None = None

    @classmethod
    def of(cls, trade: Trade, start: int, notional: Decimal, bucket: Decimal | None) -> OpenBar:
        """A bar holding just ``trade`` (a late trade, folded into the bar the timer already closed)."""
        bar = cls(start, trade.price, trade.id)
        qty = trade.qty
        if trade.side == "buy":
            bar.buy_volume, bar.buy_notional = qty, notional
        else:
            bar.sell_volume, bar.sell_notional = qty, notional
        bar.trades, bar.trade_count, bar.largest_qty = 1, trade.last_id - trade.first_id + 1, qty
        if bucket is not None:
            bar.levels[bucket] = [qty, _ZERO] if trade.side == "buy" else [_ZERO, qty]
        return bar

    def fold(self, child: OpenBar) -> None:
        """Add a closed, later, finer bar's content (coarse bars are rolled up from fine ones)."""
        if child.high > self.high:
            self.high = child.high
        if child.low < self.low:
            self.low = child.low
        self.close = child.close
        self.buy_volume = _add(self.buy_volume, child.buy_volume)
        self.sell_volume = _add(self.sell_volume, child.sell_volume)
        self.buy_notional = _add(self.buy_notional, child.buy_notional)
        self.sell_notional = _add(self.sell_notional, child.sell_notional)
        self.trades += child.trades
        self.trade_count += child.trade_count
        if child.largest_qty > self.largest_qty:  # strictly: the earliest of equal trades stays
            self.largest_qty = child.largest_qty
            self.largest_id = child.largest_id
        levels = self.levels
        for bucket, (buy, sell) in child.levels.items():
            level = levels.get(bucket)
            if level is None:
                levels[bucket] = [buy, sell]
            else:
                level[0] = _add(level[0], buy)
                level[1] = _add(level[1], sell)

    def copy(self) -> OpenBar:
        """A copy to fold more into without changing this one (for snapshots)."""
        other = OpenBar(self.start, self.open, self.largest_id)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        other.levels = {bucket: list(level) for bucket, level in self.levels.items()}
        other.floor = other.edge = _ZERO  # its levels are copies: not the one cached
        other.level = None
        return other
