"""The order-flow engine as it was before fixed-point integers (issue #28): every sum a Decimal.

Kept, unchanged but for its name, as the reference the differential test (tests/test_fixed_differential.py)
compares the fixed-point engine with, field by field. Not part of the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Context, Decimal, Inexact, InvalidOperation

from orderflow_plugin.engine import Window, parse_window
from orderflow_plugin.metrics import Bar, Footprint, Snapshot, Whale
from orderflow_plugin.models import Metric, Trade
from orderflow_plugin.ranking import Ranked

__all__ = ["DecimalFlowEngine"]

# Exact sums in a context of its own (as the engine's metrics.py does): an inexact result raises.
_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation])
_add, _sub, _mul = _EXACT.add, _EXACT.subtract, _EXACT.multiply
_ZERO = Decimal(0)

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


_bucket_of = _EXACT.divide_int  # never the host's context: a host may lower getcontext().prec


class DecimalFlowEngine:
    """Order-flow state of one symbol; feed it trades in id order with :meth:`add`.

    Each trade updates only the finest window; a coarser window whose length is a multiple of a
    finer one (1s, 1m, 5m) is rolled up from the finer bars as they close, which is exact
    because bars are aligned to the epoch. A window that divides no other is updated per trade.
    """

    def __init__(
        self,
        symbol: str,
        *,
        windows: Sequence[str] = ("1s", "1m", "5m"),
        footprint_tick: Decimal | str | None = Decimal(10),
        value_area: float = 0.7,
        whale_notional: Decimal | str | int | None = Decimal(100_000),
        whale_percentile: float | None = 99.9,
        whale_window: int = 1000,
    ) -> None:
        self.symbol = symbol
        self.windows = sorted((parse_window(w) for w in windows), key=lambda w: w.ms)
        if len({w.ms for w in self.windows}) != len(self.windows):
            raise ValueError(f"windows {list(windows)} repeat a length")
        self.tick = Decimal(str(footprint_tick)) if footprint_tick else None
        if self.tick is not None and not self.tick > 0:
            raise ValueError(f"footprint_tick must be > 0, got {footprint_tick}")
        if not 0 < value_area <= 1:
            raise ValueError(f"value_area must be in (0, 1], got {value_area}")
        self.value_area = Decimal(str(value_area))
        self.whale_notional = Decimal(str(whale_notional)) if whale_notional else None
        self.whale_percentile = whale_percentile or None
        self.whale_window = whale_window
        # Totals of the closed bars of the finest window (always updated per trade); the open bar adds the rest.
        self._closed_totals = [_ZERO, _ZERO, _ZERO, _ZERO]  # buy volume, sell volume, buy notional, sell notional
        self.trades = 0
        self.last: Trade | None = None
        # parent[i]: the index of the window rolled up from window i (or None); direct: updated per trade
        self._parent: list[int | None] = [None] * len(self.windows)
        rolled = set()
        for i, fine in enumerate(self.windows):
            for j in range(i + 1, len(self.windows)):
                if j not in rolled and self.windows[j].ms % fine.ms == 0:
                    self._parent[i] = j
                    rolled.add(j)
                    break
        self._direct = [(i, self.windows[i].ms) for i in range(len(self.windows)) if i not in rolled]
        # descendants[i]: the windows rolled up, directly or not, into window i
        self._descendants: list[list[int]] = [[] for _ in self.windows]
        for i in range(len(self.windows)):
            ancestor = self._parent[i]
            while ancestor is not None:
                self._descendants[ancestor].append(i)
                ancestor = self._parent[ancestor]
        self._open: list[OpenBar | None] = [None] * len(self.windows)
        self._last_closed: list[OpenBar | None] = [None] * len(self.windows)  # revised by a late trade
        self._ranked = Ranked(whale_window, self.whale_percentile) if self.whale_percentile else None

    def _totals(self) -> list[Decimal]:
        """Buy volume, sell volume, buy notional and sell notional of every trade so far."""
        totals = self._closed_totals
        bar = self._open[0]
        if bar is None:
            return list(totals)
        return [_add(totals[0], bar.buy_volume), _add(totals[1], bar.sell_volume),
                _add(totals[2], bar.buy_notional), _add(totals[3], bar.sell_notional)]

    @property
    def buy_volume(self) -> Decimal:
        """Taker buy volume of every trade so far."""
        return self._totals()[0]

    @property
    def sell_volume(self) -> Decimal:
        """Taker sell volume of every trade so far."""
        return self._totals()[1]

    @property
    def buy_notional(self) -> Decimal:
        """Taker buy notional (price x quantity) of every trade so far."""
        return self._totals()[2]

    @property
    def sell_notional(self) -> Decimal:
        """Taker sell notional of every trade so far."""
        return self._totals()[3]

    @property
    def cvd(self) -> Decimal:
        """Cumulative volume delta: taker buy volume minus taker sell volume so far."""
        totals, bar = self._closed_totals, self._open[0]  # read at every bar close: only the two volumes
        if bar is None:
            return _sub(totals[0], totals[1])
        return _sub(_add(totals[0], bar.buy_volume), _add(totals[1], bar.sell_volume))

    def add(self, trade: Trade) -> Sequence[Metric]:
        """Take the next trade; return the metrics it produced (closed bars first, then a whale)."""
        price, qty = trade.price, trade.qty
        notional = _mul(price, qty)
        buy = trade.side == "buy"
        self.trades += 1
        metrics: list[Metric] | tuple[()] = ()  # most trades close nothing: no list for them
        time_ms = trade.time
        tick = self.tick
        opened = self._open
        late: list[int] | None = None
        for index, ms in self._direct:
            bar = opened[index]
            if bar is None or time_ms >= bar.start + ms:
                if bar is None and self._closed_holds(index, time_ms):
                    late = [*(late or ()), index]
                    continue
                if bar is not None:
                    if not metrics:
                        metrics = []
                    cvd = self.cvd  # before this trade: only the finest bar (index 0, first here) has taken it yet
                    if index:
                        cvd = _sub(cvd, qty) if buy else _add(cvd, qty)
                    self._close(index, time_ms, "trade", cvd, metrics)  # type: ignore[arg-type]
                bar = opened[index] = OpenBar(time_ms - time_ms % ms, price, trade.id)
            if price > bar.high:
                bar.high = price
            elif price < bar.low:
                bar.low = price
            bar.close = price
            if buy:
                bar.buy_volume = _add(bar.buy_volume, qty)
                bar.buy_notional = _add(bar.buy_notional, notional)
            else:
                bar.sell_volume = _add(bar.sell_volume, qty)
                bar.sell_notional = _add(bar.sell_notional, notional)
            bar.trades += 1
            bar.trade_count += trade.last_id - trade.first_id + 1
            if qty > bar.largest_qty:
                bar.largest_qty = qty
                bar.largest_id = trade.id
            if tick is not None:
                if bar.floor <= price < bar.edge:  # the last trade's bucket
                    level = bar.level
                else:
                    level = self._level(bar, price, tick)
                if buy:
                    level[0] = _add(level[0], qty)  # type: ignore[index]
                else:
                    level[1] = _add(level[1], qty)  # type: ignore[index]
        self.last = trade
        if late is not None:
            metrics = [*metrics, *self._late(trade, notional, late)]
        whale_notional = self.whale_notional
        if whale_notional is not None and notional >= whale_notional:
            metrics = [*metrics, Whale(symbol=self.symbol, trade=trade, notional=notional, rule="absolute",
                                       threshold=whale_notional)]
        elif (ranked := self._ranked) is not None:  # trades under whale_notional make the distribution
            threshold = ranked.threshold  # ranked before this trade joined it
            current = ranked.current
            current.append(notional)
            if len(current) >= ranked.every:
                ranked.rank()
            if threshold is not None and notional >= threshold:
                metrics = [*metrics, Whale(symbol=self.symbol, trade=trade, notional=notional, rule="percentile",
                                           threshold=threshold)]
        return metrics

    @staticmethod
    def _level(bar: OpenBar, price: Decimal, tick: Decimal) -> list[Decimal]:
        """``bar``'s footprint level for ``price`` (made if new), cached with its bucket's edges."""
        floor = _mul(_bucket_of(price, tick), tick)
        level = bar.levels.get(floor)
        if level is None:
            level = bar.levels[floor] = [_ZERO, _ZERO]
        bar.floor, bar.edge, bar.level = floor, _add(floor, tick), level
        return level

    def _close(self, index: int, now: int, closed_by: str, cvd: Decimal, out: list[Metric]) -> None:
        """Close window ``index``'s bar, fold it into its parent, and close the parent if ``now`` is past it."""
        bar = self._open[index]
        assert bar is not None
        self._open[index] = None
        self._last_closed[index] = bar
        if index == 0:  # the finest window carries the totals
            totals = self._closed_totals
            totals[:] = [_add(totals[0], bar.buy_volume), _add(totals[1], bar.sell_volume),
                         _add(totals[2], bar.buy_notional), _add(totals[3], bar.sell_notional)]
        out.append(self._closed(bar, self.windows[index], closed_by, cvd))
        parent_index = self._parent[index]
        if parent_index is None:
            return
        ms = self.windows[parent_index].ms
        parent = self._open[parent_index]
        if parent is not None and bar.start >= parent.start + ms:  # a parent left open by a quiet stretch
            # It ended before this bar began: its CVD is the one before this bar's trades.
            self._close(parent_index, now, closed_by, _sub(cvd, _sub(bar.buy_volume, bar.sell_volume)), out)
            parent = None
        if parent is None and self._closed_holds(parent_index, bar.start):  # the timer closed it: a late trade's
            self._revise(parent_index, bar, cvd, out, now, closed_by)
            return
        if parent is None:
            parent = self._open[parent_index] = OpenBar(bar.start - bar.start % ms, bar.open, bar.largest_id)
            parent.high, parent.low = bar.high, bar.low
        parent.fold(bar)
        if now >= parent.start + ms:
            self._close(parent_index, now, closed_by, cvd, out)

    def _closed_holds(self, index: int, time_ms: int) -> bool:
        """Whether window ``index``'s last closed bar spans ``time_ms`` (a trade found after the timer closed it)."""
        bar = self._last_closed[index]
        return bar is not None and bar.start <= time_ms < bar.start + self.windows[index].ms

    def _late(self, trade: Trade, notional: Decimal, indexes: list[int]) -> list[Metric]:
        """Count a trade whose bar the timer already closed: the bar is revised and emitted again."""
        if 0 in indexes:  # the finest window carries the totals
            totals = self._closed_totals
            if trade.side == "buy":
                totals[0], totals[2] = _add(totals[0], trade.qty), _add(totals[2], notional)
            else:
                totals[1], totals[3] = _add(totals[1], trade.qty), _add(totals[3], notional)
        out: list[Metric] = []
        cvd = self.cvd
        bucket = None if self.tick is None else _mul(_bucket_of(trade.price, self.tick), self.tick)
        for index in indexes:
            ms = self.windows[index].ms
            self._revise(index, OpenBar.of(trade, trade.time - trade.time % ms, notional, bucket), cvd, out)
        return out

    def _revise(self, index: int, late: OpenBar, cvd: Decimal, out: list[Metric], now: int = -1,
                closed_by: str = "trade") -> None:
        """Fold ``late`` into window ``index``'s last closed bar, emit it again (``closed_by="revised"``), and
        carry it on to the parent window's bar: the open one (closed too if ``now`` is past it), or the
        closed one, revised the same way."""
        bar = self._last_closed[index]
        assert bar is not None
        bar.fold(late)
        out.append(self._closed(bar, self.windows[index], "revised", cvd))
        parent_index = self._parent[index]
        if parent_index is None:
            return
        parent = self._open[parent_index]
        if parent is not None and late.start >= parent.start:
            parent.fold(late)
            if now >= parent.start + self.windows[parent_index].ms:
                self._close(parent_index, now, closed_by, cvd, out)
        elif self._closed_holds(parent_index, late.start):
            self._revise(parent_index, late, cvd, out, now, closed_by)

    def close_until(self, trade_time: int) -> list[Bar]:
        """Close every open bar that ended at or before ``trade_time`` (a quiet market's timer)."""
        closed: list[Metric] = []
        cvd = self.cvd
        # Open bars as they are now (closing one below folds it into its parent): start and delta.
        opened = [None if b is None else (b.start, _sub(b.buy_volume, b.sell_volume)) for b in self._open]
        for index, window in enumerate(self.windows):
            bar = self._open[index]
            if bar is not None and bar.start + window.ms <= trade_time:
                end = bar.start + window.ms
                # A coarse bar left open by a quiet stretch has the CVD at its own end: without the trades
                # of its finer windows' open bars that began after it ended (each trade is in one of them).
                at_end = cvd
                for finer in self._descendants[index]:
                    if (state := opened[finer]) is not None and state[0] >= end:
                        at_end = _sub(at_end, state[1])
                self._close(index, trade_time, "timer", at_end, closed)
        return closed  # type: ignore[return-value]

    def snapshot(self) -> Snapshot:
        """The rolling state, with the bar in progress per window (finer open bars folded in)."""
        bars = {}
        for index, window in enumerate(self.windows):
            merged = self._merged(index)
            if merged is not None:
                bars[window.name] = self._closed(merged, window, "open", self.cvd)
        last = self.last
        buy, sell, buy_notional, sell_notional = self._totals()
        return Snapshot(
            symbol=self.symbol, time=last.time if last else 0, last_price=last.price if last else None,
            cvd=_sub(buy, sell), buy_volume=buy, sell_volume=sell,
            buy_notional=buy_notional, sell_notional=sell_notional, trades=self.trades, bars=bars,
        )

    def _merged(self, index: int) -> OpenBar | None:
        """Window ``index``'s open bar with its children's open bars folded into a copy."""
        own = self._open[index]
        children = [i for i, parent in enumerate(self._parent) if parent == index]
        child = self._merged(children[0]) if children else None
        ms = self.windows[index].ms
        if own is not None and child is not None and child.start >= own.start + ms:
            own = None  # ended in a quiet stretch (the timer closes it): the bar in progress is the child's
        if own is None:
            if child is None:
                return None
            own = OpenBar(child.start - child.start % ms, child.open, child.largest_id)
            own.high, own.low = child.high, child.low
        else:
            own = own.copy()
        if child is not None:
            own.fold(child)
        return own

    def _closed(self, bar: OpenBar, window: Window, closed_by: str, cvd: Decimal) -> Bar:
        footprint = None
        tick = self.tick
        if tick is not None:
            footprint = Footprint(tick=tick, value_area_share=self.value_area,
                                  levels=tuple((price, buy, sell) for price, (buy, sell) in sorted(bar.levels.items())))
        # Positional, in Bar's field order: a bar closes every second per window, and 19 keywords cost 0.6 us.
        return Bar(window.name, bar.start, bar.start + window.ms, bar.open, bar.high, bar.low, bar.close,
                   bar.buy_volume, bar.sell_volume, bar.buy_notional, bar.sell_notional, bar.trades, bar.trade_count,
                   bar.largest_qty, bar.largest_id, cvd, footprint, closed_by, symbol=self.symbol)
