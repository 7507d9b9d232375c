"""The values the engine produces: closed bars with their footprint, whale trades and snapshots.

Sums use the engine's private 80-digit decimal context (``Inexact`` trapped), so reading a bar's
volume or value area never rounds silently either; the ratios (VWAP, imbalance) keep 34 digits.
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation

import msgspec

from .models import Metric, Trade

__all__ = ["Bar", "Footprint", "Snapshot", "Whale"]

_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation])
_add = _EXACT.add
_sub = _EXACT.subtract
_mul = _EXACT.multiply
_QUOTIENT = Context(prec=34)  # VWAP and imbalance are ratios: 34 digits, far past 1e-12
_ZERO = Decimal(0)


class Footprint(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Volume at price by taker side for one bar, bucketed by ``tick``.

    ``poc`` and the value area are computed when read (most 1 s bars are never asked).
    """

    tick: Decimal
    levels: tuple[tuple[Decimal, Decimal, Decimal], ...]  # (bucket price, buy volume, sell volume), ascending
    value_area_share: Decimal = Decimal("0.7")

    @property
    def poc(self) -> Decimal | None:
        """Point of control: the bucket with the most volume (the lower price on ties)."""
        if not self.levels:
            return None
        totals = [_add(buy, sell) for _, buy, sell in self.levels]
        return self.levels[max(range(len(totals)), key=lambda i: (totals[i], -i))][0]

    @property
    def value_area(self) -> tuple[Decimal, Decimal] | None:
        """The smallest run of buckets around the POC holding ``value_area_share`` of the volume: (low, high)."""
        levels = self.levels
        if not levels:
            return None
        totals = [_add(buy, sell) for _, buy, sell in levels]
        poc = max(range(len(totals)), key=lambda i: (totals[i], -i))
        target = _mul(sum(totals, _ZERO), self.value_area_share)
        low = high = poc
        covered = totals[poc]
        while covered < target:
            below = totals[low - 1] if low > 0 else None
            above = totals[high + 1] if high + 1 < len(totals) else None
            if above is not None and (below is None or above >= below):
                high += 1
                covered = _add(covered, above)
            else:
                low -= 1
                covered = _add(covered, below)  # type: ignore[arg-type]
        return levels[low][0], levels[high][0]


class Bar(Metric, frozen=True, gc=False):
    """One closed window of one symbol. Ratios (``vwap``, ``imbalance``) are computed when read.

    Its own fields may be given by position, in this order (the engine does: it is several times
    faster than keywords); ``symbol``, from :class:`Metric`, by keyword only.
    """

    kind = "bar"
    window: str
    start: int  # ms, inclusive
    end: int  # ms, exclusive
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    buy_volume: Decimal
    sell_volume: Decimal
    buy_notional: Decimal
    sell_notional: Decimal
    trades: int  # aggregate trades
    trade_count: int  # underlying trades (l - f + 1 summed)
    largest_qty: Decimal
    largest_id: int
    cvd: Decimal  # cumulative volume delta at the close
    footprint: Footprint | None
    # "trade" (the first trade past the end), "timer" (a quiet market), "open" (in a snapshot), or "revised" (a
    # trade found after the timer closed the bar: the bar again, with it, replacing the one with the same start)
    closed_by: str

    @property
    def volume(self) -> Decimal:
        """Buy plus sell volume."""
        return _add(self.buy_volume, self.sell_volume)

    @property
    def delta(self) -> Decimal:
        """Taker buy volume minus taker sell volume."""
        return _sub(self.buy_volume, self.sell_volume)

    @property
    def vwap(self) -> Decimal:
        """Volume-weighted average price (34 significant digits)."""
        volume = self.volume
        return _QUOTIENT.divide(_add(self.buy_notional, self.sell_notional), volume) if volume else self.close

    @property
    def imbalance(self) -> Decimal:
        """delta / volume, in [-1, 1] (34 significant digits)."""
        volume = self.volume
        return _QUOTIENT.divide(self.delta, volume) if volume else _ZERO

    @property
    def trades_per_second(self) -> float:
        """Aggregate trades per second of the window."""
        return self.trades * 1000.0 / (self.end - self.start)


class Whale(Metric, frozen=True, kw_only=True):
    """A trade at or over a notional threshold; ``rule`` says which one it met."""

    kind = "whale"
    trade: Trade
    notional: Decimal
    rule: str  # "absolute" or "percentile"
    threshold: Decimal


class Snapshot(Metric, frozen=True, kw_only=True):
    """The rolling state of one symbol, for dashboards."""

    kind = "snapshot"
    time: int  # trade time of the last trade, ms
    last_price: Decimal | None
    cvd: Decimal
    buy_volume: Decimal
    sell_volume: Decimal
    buy_notional: Decimal
    sell_notional: Decimal
    trades: int
    bars: dict[str, Bar]  # the bar in progress per window (closed_by "open")
