"""A bar being built: the engine's mutable, private working state for one window. No I/O.

Volumes and footprint levels are integers of 10^-8, notionals integers of 10^-16 (``fixed``):
exact, and cheap to add. Prices are kept twice where they are compared (``high``, ``low``): as
units for the comparison, and as the trade's own ``Decimal`` for the bar, so a bar's prices are
the very values the exchange sent.

Compiled, ``OpenBar`` is a C extension type with C integer fields (``openbar.pxd`` says which and why
none can overflow); this source is the pure path and must keep to what both read the same way.
"""

from __future__ import annotations

from decimal import Decimal

from .models import Trade

__all__ = ["OpenBar", "fold"]

_ZERO = Decimal(0)


class OpenBar:
    """A bar being built; mutable and private. Sums are fixed-point integers (see ``fixed``)."""

    __slots__ = ("buy_notional", "buy_volume", "close", "floor", "high", "high_units", "largest_id", "largest_qty",
                 "largest_units", "level", "levels", "low", "low_units", "open", "sell_notional", "sell_volume",
                 "start", "trade_count", "trades")

    def __init__(self, start: int, price: Decimal, units: int, first_id: int) -> None:
        self.start = start
        self.open = self.high = self.low = self.close = price
        self.high_units = self.low_units = units
        self.buy_volume = self.sell_volume = self.buy_notional = self.sell_notional = 0
        self.trades = self.trade_count = 0
        self.largest_qty, self.largest_units = _ZERO, 0
        self.largest_id = first_id
        self.levels: dict[int, list[int]] = {}  # footprint: bucket number (price // tick) -> [buy volume, sell volume]
        # The footprint level the last trade went to, and its bucket's lowest price in units: most trades fall
        # in the same one (the engine compares ``price - floor < tick``: no sum that could pass 2^63).
        self.floor = 0
        self.level: list[int] | None = None

    @classmethod
    def of(cls, trade: Trade, start: int, units: int, qty: int, notional: int, bucket: int | None) -> OpenBar:
        """A bar holding just ``trade`` (a late trade, folded into the bar the timer already closed)."""
        bar = cls(start, trade.price, units, trade.id)
        if trade.side == "buy":
            bar.buy_volume, bar.buy_notional = qty, notional
        else:
            bar.sell_volume, bar.sell_notional = qty, notional
        bar.trades, bar.trade_count = 1, trade.last_id - trade.first_id + 1
        bar.largest_qty, bar.largest_units = trade.qty, qty
        if bucket is not None:
            bar.levels[bucket] = [qty, 0] if trade.side == "buy" else [0, qty]
        return bar

    @classmethod
    def over(cls, child: OpenBar, start: int) -> OpenBar:
        """An empty coarse bar from ``start`` with ``child``'s prices, for ``child`` to be folded into."""
        bar = cls(start, child.open, child.high_units, child.largest_id)
        bar.high, bar.low, bar.low_units = child.high, child.low, child.low_units
        return bar

    def fold(self, child: OpenBar) -> None:
        """Add a closed, later, finer bar's content (coarse bars are rolled up from fine ones)."""
        if child.high_units > self.high_units:
            self.high_units, self.high = child.high_units, child.high
        if child.low_units < self.low_units:
            self.low_units, self.low = child.low_units, child.low
        self.close = child.close
        self.buy_volume += child.buy_volume
        self.sell_volume += child.sell_volume
        self.buy_notional += child.buy_notional
        self.sell_notional += child.sell_notional
        self.trades += child.trades
        self.trade_count += child.trade_count
        if child.largest_units > self.largest_units:  # strictly: the earliest of equal trades stays
            self.largest_units, self.largest_qty = child.largest_units, child.largest_qty
            self.largest_id = child.largest_id
        levels = self.levels
        for bucket, (buy, sell) in child.levels.items():
            level = levels.get(bucket)
            if level is None:
                levels[bucket] = [buy, sell]
            else:
                level[0] += buy
                level[1] += sell

    def copy(self) -> OpenBar:
        """A copy to fold more into without changing this one (for snapshots)."""
        other = OpenBar(self.start, self.open, self.high_units, self.largest_id)
        other.high, other.low, other.close, other.low_units = self.high, self.low, self.close, self.low_units
        other.buy_volume, other.sell_volume = self.buy_volume, self.sell_volume
        other.buy_notional, other.sell_notional = self.buy_notional, self.sell_notional
        other.trades, other.trade_count = self.trades, self.trade_count
        other.largest_qty, other.largest_units = self.largest_qty, self.largest_units
        other.levels = {bucket: list(level) for bucket, level in self.levels.items()}  # not the one cached
        return other


def fold(bar: OpenBar, child: OpenBar) -> None:
    """``bar.fold(child)``: the engine folds bars through this one name (a plain function even when compiled)."""
    bar.fold(child)
