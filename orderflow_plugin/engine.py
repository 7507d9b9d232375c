"""Order-flow metrics from the clean trade sequence: exact, windowed, bounded. No I/O.

Per trade: cumulative volume delta (CVD) and running taker buy/sell volume and notional. Per
window (aligned to the epoch, driven by trade time ``T``): OHLC, taker buy/sell volume and
notional, delta, VWAP, counts, imbalance, trades per second, largest trade, CVD at close and a
footprint (volume at price by side, point of control, value area). Whale trades by absolute
notional or by percentile of the recent notional distribution.

Sums are exact integers (``fixed``: prices and quantities in units of 10^-8, notionals in units of
10^-16), never rounded; a ``Decimal`` is made only where a value leaves the engine (a whale, a
snapshot), from the integers or from the trade's own decimals. A closed :class:`~orderflow_plugin.metrics.Bar`
holds its sums and footprint as integers and makes each ``Decimal`` when it is read (most 1 s bars never are).

Compiled, ``FlowEngine`` is a C extension type whose per-trade step works on C integers (``engine.pxd``
and ``openbar.pxd`` say which, and why none can overflow); this source is the pure path, the same code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from . import fixed
from . import openbar as _openbar
from .fixed import FixedPointError, from_e8, from_e16, to_e8
from .metrics import _EXACT, Bar, Footprint, Snapshot, Whale, closed_bar
from .models import Metric, Trade
from .openbar import OpenBar
from .ranking import Ranked

__all__ = ["Bar", "FlowEngine", "Footprint", "Snapshot", "Whale", "Window", "parse_window"]

_MAX_UNITS = 9_223_372_036_854_775_807  # fixed.LIMIT - 1: the largest price or quantity in units (a C long long)
_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True)
class Window:
    """A bar length: ``name`` as written (``"1m"``) and ``ms``."""

    name: str
    ms: int


def parse_window(text: str) -> Window:
    """``"1s"``, ``"15m"``, ``"4h"``, ``"1d"`` -> Window; ValueError otherwise."""
    match = re.fullmatch(r"([1-9][0-9]*)([smhd])", text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"window {text!r} is not a number followed by s, m, h or d (e.g. 1s, 1m, 5m, 1h)")
    return Window(text.strip(), int(match.group(1)) * _UNITS[match.group(2)])


class FlowEngine:
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
        try:
            self._tick = None if self.tick is None else to_e8(self.tick)  # in units of 10^-8
        except FixedPointError as exc:
            raise ValueError(f"footprint_tick {footprint_tick} is not a price: {exc}") from None
        self._tick_units = self._tick or 0  # the same, 0 for none (a C integer when compiled)
        if not 0 < value_area <= 1:
            raise ValueError(f"value_area must be in (0, 1], got {value_area}")
        self.value_area = Decimal(str(value_area))
        self.whale_notional = Decimal(str(whale_notional)) if whale_notional else None
        # In units of 10^-16, rounded up: a notional (a whole number of units) is at or over it exactly when its
        # Decimal is at or over whale_notional.
        self._whale = None if self.whale_notional is None else int(
            _EXACT.scaleb(self.whale_notional, 16).to_integral_value(rounding=ROUND_CEILING))
        self.whale_percentile = whale_percentile or None
        self.whale_window = whale_window
        # Totals of the closed bars of the finest window (always updated per trade); the open bar adds the rest.
        # Buy volume, sell volume (units of 10^-8), buy notional, sell notional (units of 10^-16).
        self._closed_totals = [0, 0, 0, 0]
        self._units = fixed._UNITS  # a trade's price or quantity -> units of 10^-8, filled by fixed.decimal
        self.trades = 0
        self.last: Trade | None = None
        # The last trade's price and quantity in units of 10^-8 (fixed), for readers that sum integers after the
        # engine (FlowSignals): read them instead of looking the trade's Decimals up again.
        self.last_price_units = self.last_qty_units = 0
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
        self._trade_of: Callable[[int], Trade] | None = None  # add_many: the Trade of row _row, when one is needed
        self._row = 0

    def _totals(self) -> list[int]:
        """Buy volume, sell volume (units of 10^-8), buy notional and sell notional (10^-16) so far."""
        totals = self._closed_totals
        bar = self._open[0]
        if bar is None:
            return list(totals)
        return [totals[0] + bar.buy_volume, totals[1] + bar.sell_volume,
                totals[2] + bar.buy_notional, totals[3] + bar.sell_notional]

    @property
    def buy_volume(self) -> Decimal:
        """Taker buy volume of every trade so far."""
        return from_e8(self._totals()[0])

    @property
    def sell_volume(self) -> Decimal:
        """Taker sell volume of every trade so far."""
        return from_e8(self._totals()[1])

    @property
    def buy_notional(self) -> Decimal:
        """Taker buy notional (price x quantity) of every trade so far."""
        return from_e16(self._totals()[2])

    @property
    def sell_notional(self) -> Decimal:
        """Taker sell notional of every trade so far."""
        return from_e16(self._totals()[3])

    @property
    def cvd(self) -> Decimal:
        """Cumulative volume delta: taker buy volume minus taker sell volume so far."""
        return from_e8(self._cvd())

    def _cvd(self) -> int:
        """The CVD in units of 10^-8."""
        totals, bar = self._closed_totals, self._open[0]  # read at every bar close: only the two volumes
        if bar is None:
            return totals[0] - totals[1]
        return totals[0] + bar.buy_volume - totals[1] - bar.sell_volume

    @staticmethod
    def _unit(trade: Trade, value: Decimal) -> int:
        """``value`` (the trade's price or quantity) in units of 10^-8; FixedPointError naming the trade."""
        try:
            return fixed.units(value)
        except FixedPointError as exc:
            raise FixedPointError(f"{trade.symbol} trade {trade.id}: {exc}") from None

    def add(self, trade: Trade) -> Sequence[Metric]:
        """Take the next trade; return the metrics it produced (closed bars first, then a whale).

        Raises FixedPointError (an ArithmeticError) for a price or quantity that is not a whole number
        of 10^-8 below ``fixed.LIMIT``; the engine is unchanged then.
        """
        price, decimal_qty = trade.price, trade.qty
        units = self._units
        price_obj = units.get(price)
        if price_obj is None:
            price_obj = self._unit(trade, price)
        qty_obj = units.get(decimal_qty)
        if qty_obj is None:
            qty_obj = self._unit(trade, decimal_qty)
        return self._add_trade(trade, price_obj, qty_obj, price, decimal_qty)

    def add_units(self, trade: Trade, price_units: int, qty_units: int) -> Sequence[Metric]:
        """:meth:`add`, given ``trade``'s price and quantity in units of 10^-8 (as the decoder parsed them from
        the frame's digits): no lookup by Decimal. They must be ``trade``'s; FixedPointError if out of range."""
        try:
            price = price_units
            qty = qty_units
        except OverflowError:  # compiled: past 2^63
            price = qty = -1
        if price < 0 or qty < 0 or price > _MAX_UNITS or qty > _MAX_UNITS:
            raise FixedPointError(f"{trade.symbol} trade {trade.id}: {price_units} or {qty_units} units of 10^-8 "
                                  "is out of range")
        return self._add_trade(trade, price_units, qty_units, trade.price, trade.qty)

    def _add_trade(self, trade: Trade, price_obj: int, qty_obj: int, price: Decimal,
                   decimal_qty: Decimal) -> Sequence[Metric]:
        """``trade``'s step at ``price_obj`` x ``qty_obj`` units (``price`` and ``decimal_qty`` its Decimals), the
        rest of its fields read here: what :meth:`add` and :meth:`add_units` share (a C call when compiled)."""
        count = trade.last_id
        count = count - trade.first_id + 1  # 128 bits when compiled: no id range overflows it
        return self._step(trade, price_obj, qty_obj, price, decimal_qty, trade.time, trade.id, count,
                          trade.side == "buy")

    def add_many(self, ids: Sequence[int], prices: Sequence[int], quantities: Sequence[int],
                 first_ids: Sequence[int], last_ids: Sequence[int], times: Sequence[int], sells: Sequence[bool],
                 price_decimals: Sequence[Decimal], qty_decimals: Sequence[Decimal],
                 trade_of: Callable[[int], Trade]) -> list[Metric]:
        """Take trades given as columns (sequences; tuples are used as they are), in id order: what :meth:`add` of
        each row's trade returns, in one list.

        Row ``i`` is the trade with id ``ids[i]``, price ``prices[i]`` and quantity ``quantities[i]`` in units
        of 10^-8 (``price_decimals[i]`` and ``qty_decimals[i]`` as Decimals, the bar's prices), ``first_ids[i]``
        to ``last_ids[i]``, time ``times[i]`` (ms), the taker a seller when ``sells[i]``. No :class:`Trade` is
        made but ``trade_of(i)``'s, for a whale, a late trade and the last row (:attr:`last`). A row out of
        range is a FixedPointError naming its id: the rows before it are taken, as :meth:`add` would have.
        """
        # Tuples: a tuple of numbers leaves the garbage collector's lists at its first pass, where a list of millions
        # would be scanned again by every collection the bars' allocations set off (half the time, measured).
        ids, prices, quantities, first_ids, last_ids = tuple(ids), tuple(prices), tuple(quantities), tuple(
            first_ids), tuple(last_ids)
        times, sells, price_decimals, qty_decimals = tuple(times), tuple(sells), tuple(price_decimals), tuple(
            qty_decimals)
        count_rows = len(ids)
        for column in (prices, quantities, first_ids, last_ids, times, sells, price_decimals, qty_decimals):
            if len(column) != count_rows:
                raise ValueError(f"add_many: columns of {count_rows} and {len(column)} rows")
        return self._add_rows(ids, prices, quantities, first_ids, last_ids, times, sells, price_decimals,
                              qty_decimals, trade_of)

    def _add_rows(self, ids: tuple[int, ...], prices: tuple[int, ...], quantities: tuple[int, ...],
                  first_ids: tuple[int, ...], last_ids: tuple[int, ...], times: tuple[int, ...],
                  sells: tuple[bool, ...], price_decimals: tuple[Decimal, ...], qty_decimals: tuple[Decimal, ...],
                  trade_of: Callable[[int], Trade]) -> list[Metric]:
        """:meth:`add_many`'s loop, over columns of equal length."""
        count_rows = len(ids)
        out: list[Metric] = []
        self._trade_of = trade_of
        row = 0
        try:
            for row in range(count_rows):
                price_obj = prices[row]
                qty_obj = quantities[row]
                try:
                    price_units = price_obj
                    qty = qty_obj
                except OverflowError:  # compiled: past 2^63
                    price_units = qty = -1
                if price_units < 0 or qty < 0 or price_units > _MAX_UNITS or qty > _MAX_UNITS:
                    raise FixedPointError(f"{self.symbol} trade {ids[row]}: {price_obj} or {qty_obj} units of "
                                          "10^-8 is out of range")
                count = last_ids[row]
                count = count - first_ids[row] + 1
                self._row = row
                metrics = self._step(None, price_obj, qty_obj, price_decimals[row], qty_decimals[row], times[row],
                                     ids[row], count, not sells[row])
                if metrics:
                    out.extend(metrics)
            row = count_rows
        finally:
            if row:  # the last row taken
                self.last = trade_of(row - 1)
            self._trade_of = None
        return out

    def _trade(self, trade: Trade | None) -> Trade:
        """``trade``, or the :meth:`add_many` row's, made now."""
        return self._trade_of(self._row) if trade is None else trade  # type: ignore[misc]

    def _step(self, trade: Trade | None, price_obj: int, qty_obj: int, price: Decimal, decimal_qty: Decimal,
              time_ms: int, agg_id: int, count: int, buy: bool) -> Sequence[Metric]:
        """One trade's step: ``trade`` (None for a row of :meth:`add_many`) at ``price_obj`` x ``qty_obj`` units."""
        # Compiled, these are C integers (below fixed.LIMIT = 2^63, checked by fixed.units); the notional stays a
        # Python integer (up to 2^126), as the whale ranking keeps it.
        price_units = price_obj
        qty = qty_obj
        notional = price_obj * qty_obj
        self.trades += 1
        self.last_price_units, self.last_qty_units = price_units, qty
        metrics = ()  # most trades close nothing: no list for them
        tick = self._tick_units
        opened = self._open
        late = None
        for index, ms in self._direct:
            bar = opened[index]
            if bar is None or time_ms >= bar.start + ms:
                if bar is None and self._closed_holds(index, time_ms):
                    late = [*(late or ()), index]
                    continue
                if bar is not None:
                    if not metrics:
                        metrics = []
                    cvd = self._cvd()  # before this trade: only the finest bar (index 0, first here) has taken it yet
                    if index:
                        cvd = cvd - qty if buy else cvd + qty
                    self._close(index, time_ms, "trade", cvd, metrics)  # type: ignore[arg-type]
                bar = OpenBar(time_ms - time_ms % ms, price, price_units, agg_id)
                opened[index] = bar
            if price_units > bar.high_units:
                bar.high_units, bar.high = price_units, price
            elif price_units < bar.low_units:
                bar.low_units, bar.low = price_units, price
            bar.close = price
            if buy:
                bar.buy_volume += qty
                bar.buy_notional += notional
            else:
                bar.sell_volume += qty
                bar.sell_notional += notional
            bar.trades += 1
            bar.trade_count += count
            if qty > bar.largest_units:
                bar.largest_units, bar.largest_qty = qty, decimal_qty
                bar.largest_id = agg_id
            if tick:
                level = bar.level
                # The last trade's bucket: price - floor, never floor + tick (which could pass 2^63 when compiled).
                if level is None or price_units < bar.floor or price_units - bar.floor >= tick:
                    level = _level(bar, price_units, tick)
                if buy:
                    level[0] += qty_obj
                else:
                    level[1] += qty_obj
        if trade is not None:
            self.last = trade
        if late is not None:
            trade = self._trade(trade)
            metrics = [*metrics, *revise_late(self, trade, price_obj, qty_obj, notional, late)]
        whale = self._whale
        if whale is not None and notional >= whale:
            metrics = [*metrics, Whale(symbol=self.symbol, trade=self._trade(trade), notional=from_e16(notional),
                                       rule="absolute",
                                       threshold=self.whale_notional)]  # type: ignore[arg-type]
        elif (ranked := self._ranked) is not None:  # trades under whale_notional make the distribution
            threshold = ranked.threshold  # ranked before this trade joined it
            current = ranked.current
            current.append(notional)
            if len(current) >= ranked.every:
                ranked.rank()
            if threshold is not None and notional >= threshold:
                metrics = [*metrics, Whale(symbol=self.symbol, trade=self._trade(trade), notional=from_e16(notional),
                                           rule="percentile", threshold=from_e16(threshold))]
        return metrics

    def _close(self, index: int, now: int, closed_by: str, cvd: int, out: list[Metric]) -> None:
        """Close window ``index``'s bar, fold it into its parent, and close the parent if ``now`` is past it."""
        bar = self._open[index]
        assert bar is not None
        self._open[index] = None
        self._last_closed[index] = bar
        if index == 0:  # the finest window carries the totals
            totals = self._closed_totals
            totals[:] = [totals[0] + bar.buy_volume, totals[1] + bar.sell_volume,
                         totals[2] + bar.buy_notional, totals[3] + bar.sell_notional]
        out.append(self._closed(bar, self.windows[index], closed_by, cvd))
        parent_index = self._parent[index]
        if parent_index is None:
            return
        ms = self.windows[parent_index].ms
        parent = self._open[parent_index]
        if parent is not None and bar.start >= parent.start + ms:  # a parent left open by a quiet stretch
            # It ended before this bar began: its CVD is the one before this bar's trades.
            self._close(parent_index, now, closed_by, cvd - (bar.buy_volume - bar.sell_volume), out)
            parent = None
        if parent is None and self._closed_holds(parent_index, bar.start):  # the timer closed it: a late trade's
            self._revise(parent_index, bar, cvd, out, now, closed_by)
            return
        if parent is None:
            parent = self._open[parent_index] = OpenBar.over(bar, bar.start - bar.start % ms)
        _openbar.fold(parent, bar)
        if now >= parent.start + ms:
            self._close(parent_index, now, closed_by, cvd, out)

    def _closed_holds(self, index: int, time_ms: int) -> bool:
        """Whether window ``index``'s last closed bar spans ``time_ms`` (a trade found after the timer closed it)."""
        bar = self._last_closed[index]
        return bar is not None and bar.start <= time_ms < bar.start + self.windows[index].ms

    def _late(self, trade: Trade, price: int, qty: int, notional: int, indexes: list[int]) -> list[Metric]:
        """Count a trade whose bar the timer already closed: the bar is revised and emitted again."""
        if 0 in indexes:  # the finest window carries the totals
            totals = self._closed_totals
            if trade.side == "buy":
                totals[0] += qty
                totals[2] += notional
            else:
                totals[1] += qty
                totals[3] += notional
        out: list[Metric] = []
        cvd = self._cvd()
        bucket = None if self._tick is None else price // self._tick
        for index in indexes:
            ms = self.windows[index].ms
            late = OpenBar.of(trade, trade.time - trade.time % ms, price, qty, notional, bucket)
            self._revise(index, late, cvd, out)
        return out

    def _revise(self, index: int, late: OpenBar, cvd: int, out: list[Metric], now: int = -1,
                closed_by: str = "trade") -> None:
        """Fold ``late`` into window ``index``'s last closed bar, emit it again (``closed_by="revised"``), and
        carry it on to the parent window's bar: the open one (closed too if ``now`` is past it), or the
        closed one, revised the same way."""
        bar = self._last_closed[index]
        assert bar is not None
        # Its levels went out with the Bar it closed as (``_closed``): that Bar keeps them, this one gets a copy.
        bar.levels = {bucket: list(level) for bucket, level in bar.levels.items()}
        _openbar.fold(bar, late)
        out.append(self._closed(bar, self.windows[index], "revised", cvd))
        parent_index = self._parent[index]
        if parent_index is None:
            return
        parent = self._open[parent_index]
        if parent is not None and late.start >= parent.start:
            _openbar.fold(parent, late)
            if now >= parent.start + self.windows[parent_index].ms:
                self._close(parent_index, now, closed_by, cvd, out)
        elif self._closed_holds(parent_index, late.start):
            self._revise(parent_index, late, cvd, out, now, closed_by)

    def close_until(self, trade_time: int) -> list[Bar]:
        """Close every open bar that ended at or before ``trade_time`` (a quiet market's timer)."""
        closed: list[Metric] = []
        cvd = self._cvd()
        # Open bars as they are now (closing one below folds it into its parent): start and delta.
        opened = [None if b is None else (b.start, b.buy_volume - b.sell_volume) for b in self._open]
        for index, window in enumerate(self.windows):
            bar = self._open[index]
            if bar is not None and bar.start + window.ms <= trade_time:
                end = bar.start + window.ms
                # A coarse bar left open by a quiet stretch has the CVD at its own end: without the trades
                # of its finer windows' open bars that began after it ended (each trade is in one of them).
                at_end = cvd
                for finer in self._descendants[index]:
                    if (state := opened[finer]) is not None and state[0] >= end:
                        at_end -= state[1]
                self._close(index, trade_time, "timer", at_end, closed)
        return closed  # type: ignore[return-value]

    def snapshot(self) -> Snapshot:
        """The rolling state, with the bar in progress per window (finer open bars folded in)."""
        bars = {}
        cvd = self._cvd()
        for index, window in enumerate(self.windows):
            merged = self._merged(index)
            if merged is not None:
                bars[window.name] = self._closed(merged, window, "open", cvd)
        last = self.last
        buy, sell, buy_notional, sell_notional = self._totals()
        return Snapshot(
            symbol=self.symbol, time=last.time if last else 0, last_price=last.price if last else None,
            cvd=from_e8(buy - sell), buy_volume=from_e8(buy), sell_volume=from_e8(sell),
            buy_notional=from_e16(buy_notional), sell_notional=from_e16(sell_notional), trades=self.trades, bars=bars,
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
            own = OpenBar.over(child, child.start - child.start % ms)
        else:
            own = own.copy()
        if child is not None:
            _openbar.fold(own, child)
        return own

    def _closed(self, bar: OpenBar, window: Window, closed_by: str, cvd: int) -> Bar:
        """The public Bar of ``bar``: its integers, made Decimals when read (``metrics.closed_bar``). The bar's
        footprint levels go with it: a closed bar's levels are never changed again (``_revise`` copies them)."""
        return closed_bar(window.name, bar.start, bar.start + window.ms, bar.open, bar.high, bar.low, bar.close,
                          bar.buy_volume, bar.sell_volume, bar.buy_notional, bar.sell_notional, bar.trades,
                          bar.trade_count, bar.largest_qty, bar.largest_id, cvd,
                          None if self.tick is None else bar.levels, self.tick, self._tick_units, self.value_area,
                          closed_by, self.symbol)


def _level(bar: OpenBar, price: int, tick: int) -> list[int]:
    """``bar``'s footprint level for ``price`` (made if new), cached with its bucket's lowest price (in units)."""
    bucket = price // tick
    level = bar.levels.get(bucket)
    if level is None:
        level = bar.levels[bucket] = [0, 0]
    bar.floor, bar.level = bucket * tick, level
    return level


def revise_late(engine: FlowEngine, trade: Trade, price: int, qty: int, notional: int,
                indexes: list[int]) -> list[Metric]:
    """A trade whose bar the timer already closed: ``engine``'s bars revised (a plain function even when compiled,
    looked up at each call, so the simulation can plant a bug here: a compiled class takes no patches)."""
    return engine._late(trade, price, qty, notional, indexes)
