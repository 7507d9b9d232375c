"""The values the engine produces: closed bars with their footprint, whale trades and snapshots.

Sums use the engine's private 80-digit decimal context (``Inexact`` trapped), so reading a bar's
volume or value area never rounds silently either; the ratios (VWAP, imbalance) keep 34 digits.

A :class:`Bar` from the engine keeps its sums as exact integers (``fixed``) and makes each ``Decimal`` when
it is first read; to its readers it is the frozen struct of Decimals it always was (compared, hashed,
printed, pickled and encoded by msgspec through the dataclass protocol, field by field).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any, NamedTuple

import msgspec

from .fixed import FixedPointError, from_e8, from_e16, to_e8
from .models import Metric, Trade

__all__ = ["Bar", "BarUnits", "Footprint", "Snapshot", "Whale", "closed_bar"]

_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation])
_add = _EXACT.add
_sub = _EXACT.subtract
_mul = _EXACT.multiply
_QUOTIENT = Context(prec=34)  # VWAP and imbalance are ratios: 34 digits, far past 1e-12
_ZERO = Decimal(0)
_new_tuple = tuple.__new__


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


FIELDS = ("window", "start", "end", "open", "high", "low", "close", "buy_volume", "sell_volume", "buy_notional",
          "sell_notional", "trades", "trade_count", "largest_qty", "largest_id", "cvd", "footprint", "closed_by",
          "symbol")


@dataclasses.dataclass(frozen=True)
class _BarFields:
    """Bar's fields for the dataclass protocol, which msgspec encodes (``msgspec.json.encode(bar)``,
    ``msgspec.to_builtins``) by reading each attribute, and ``dataclasses.fields/asdict/replace`` read."""

    window: str
    start: int
    end: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    buy_volume: Decimal
    sell_volume: Decimal
    buy_notional: Decimal
    sell_notional: Decimal
    trades: int
    trade_count: int
    largest_qty: Decimal
    largest_id: int
    cvd: Decimal
    footprint: Footprint | None
    closed_by: str
    symbol: str


class Bar:
    """One closed window of one symbol. Ratios (``vwap``, ``imbalance``) are computed when read.

    Its fields may be given by position, in this order, or by keyword; ``symbol`` by keyword only.
    It reads, compares, hashes, prints and encodes (``msgspec``, ``dataclasses``) as a frozen struct of its
    fields. A bar the engine closes holds its sums as integers (``fixed``) and makes each ``Decimal`` (the
    volumes, notionals, CVD and footprint) when it is first read: most 1 s bars are never read. Its fields cannot
    be assigned (AttributeError): compiled, it is a C extension type (``metrics.pxd``) with ``readonly`` fields;
    pure, ``_write_once`` refuses.
    """

    __slots__ = ("_buy_e8", "_buy_e16", "_buy_notional", "_buy_volume", "_cvd", "_cvd_e8", "_footprint", "_levels",
                 "_sell_e8", "_sell_e16", "_sell_notional", "_sell_volume", "_tick", "_tick_e8", "_value_area", "close",
                 "closed_by", "end", "high", "largest_id", "largest_qty", "low", "open", "start", "symbol",
                 "trade_count", "trades", "window")

    kind = "bar"
    __struct_fields__ = FIELDS
    __match_args__ = FIELDS[:-1]
    __dataclass_fields__ = _BarFields.__dataclass_fields__
    __dataclass_params__ = _BarFields.__dataclass_params__  # type: ignore[attr-defined]
    window: str
    start: int  # ms, inclusive
    end: int  # ms, exclusive
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    trades: int  # aggregate trades
    trade_count: int  # underlying trades (l - f + 1 summed)
    largest_qty: Decimal
    largest_id: int
    # "trade" (the first trade past the end), "timer" (a quiet market), "open" (in a snapshot), or "revised" (a
    # trade found after the timer closed the bar: the bar again, with it, replacing the one with the same start)
    closed_by: str
    symbol: str

    def __init__(self, window: str, start: int, end: int, open: Decimal, high: Decimal, low: Decimal,
                 close: Decimal, buy_volume: Decimal, sell_volume: Decimal, buy_notional: Decimal,
                 sell_notional: Decimal, trades: int, trade_count: int, largest_qty: Decimal, largest_id: int,
                 cvd: Decimal, footprint: Footprint | None, closed_by: str, *, symbol: str) -> None:
        self.window, self.start, self.end = window, start, end
        self.open, self.high, self.low, self.close = open, high, low, close
        self._buy_volume, self._sell_volume = buy_volume, sell_volume
        self._buy_notional, self._sell_notional = buy_notional, sell_notional
        self.trades, self.trade_count, self.largest_qty, self.largest_id = trades, trade_count, largest_qty, largest_id
        self._cvd, self._footprint, self.closed_by, self.symbol = cvd, footprint, closed_by, symbol
        self._buy_e8 = self._sell_e8 = self._buy_e16 = self._sell_e16 = self._cvd_e8 = None
        self._levels = self._tick = self._tick_e8 = self._value_area = None

    # The sums, made Decimals when first read (a bar from the engine holds their integers until then)

    @property
    def buy_volume(self) -> Decimal:
        """Taker buy volume."""
        value = self._buy_volume
        if value is None:
            value = self._buy_volume = from_e8(self._buy_e8)
        return value

    @property
    def sell_volume(self) -> Decimal:
        """Taker sell volume."""
        value = self._sell_volume
        if value is None:
            value = self._sell_volume = from_e8(self._sell_e8)
        return value

    @property
    def buy_notional(self) -> Decimal:
        """Taker buy notional (price x quantity, summed)."""
        value = self._buy_notional
        if value is None:
            value = self._buy_notional = from_e16(self._buy_e16)
        return value

    @property
    def sell_notional(self) -> Decimal:
        """Taker sell notional."""
        value = self._sell_notional
        if value is None:
            value = self._sell_notional = from_e16(self._sell_e16)
        return value

    @property
    def cvd(self) -> Decimal:
        """Cumulative volume delta at the close."""
        value = self._cvd
        if value is None:
            value = self._cvd = from_e8(self._cvd_e8)
        return value

    @property
    def footprint(self) -> Footprint | None:
        """Volume at price by taker side, or None when the engine keeps no footprint."""
        value = self._footprint
        levels = self._levels
        if value is None and levels is not None:
            tick = self._tick
            value = self._footprint = Footprint(
                tick=tick, value_area_share=self._value_area,
                levels=tuple([(_mul(bucket, tick), from_e8(levels[bucket][0]), from_e8(levels[bucket][1]))
                              for bucket in sorted(levels)]))
        return value

    def units(self) -> BarUnits:
        """The sums as exact integers, without making a Decimal: for readers that add them up (``fixed``).

        Volumes and CVD in units of 10^-8, notionals in units of 10^-16, the footprint's tick and levels (bucket
        price, buy volume, sell volume, ascending) in units of 10^-8, or None without a footprint;
        FixedPointError for a bar made from values that do not fit."""
        buy = self._buy_e8
        if buy is None:  # made from Decimals
            footprint = self._footprint
            tick = levels = None
            if footprint is not None:
                tick = to_e8(footprint.tick)
                levels = tuple([(to_e8(price), to_e8(bought), to_e8(sold)) for price, bought, sold in footprint.levels])
            return _new_tuple(BarUnits, (to_e8(self._buy_volume), to_e8(self._sell_volume), _e16(self._buy_notional),
                                         _e16(self._sell_notional), _signed_e8(self._cvd), tick, levels))
        source = self._levels
        tick = levels = None
        if source is not None:
            tick = self._tick_e8
            levels = tuple([(bucket * tick, source[bucket][0], source[bucket][1]) for bucket in sorted(source)])
        # tuple.__new__: a NamedTuple's own __new__ is Python code, several times slower (bars_table asks per bar)
        return _new_tuple(BarUnits, (buy, self._sell_e8, self._buy_e16, self._sell_e16, self._cvd_e8, tick, levels))

    # Read off the fields

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

    # As a frozen struct of its fields: compared, hashed, printed, copied, pickled and encoded by them

    def _values(self) -> tuple[Any, ...]:
        """Every field's value, in field order."""
        return (self.window, self.start, self.end, self.open, self.high, self.low, self.close, self.buy_volume,
                self.sell_volume, self.buy_notional, self.sell_notional, self.trades, self.trade_count,
                self.largest_qty, self.largest_id, self.cvd, self.footprint, self.closed_by, self.symbol)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() != other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"Bar({', '.join([f'{name}={value!r}' for name, value in zip(FIELDS, self._values(), strict=True)])})"

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:
        yield from zip(FIELDS, self._values(), strict=True)

    def __copy__(self) -> Bar:
        return self  # immutable

    def __replace__(self, **changes: Any) -> Bar:
        """``copy.replace(bar, ...)`` (and ``dataclasses.replace``): a new Bar with ``changes``."""
        values = dict(zip(FIELDS, self._values(), strict=True))
        values.update(changes)
        return Bar(**values)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_bar_of, (self._values(),))

    @classmethod
    def from_builtins(cls, data: Any) -> Bar:
        """The Bar that ``msgspec.to_builtins`` (or ``msgspec.json.encode``, then ``decode``) made ``data`` of: what
        ``msgspec.json.decode(..., type=Bar)`` did when Bar was a Struct. msgspec.ValidationError for bad data."""
        fields = msgspec.convert(data, _BarFields)
        return Bar(*[getattr(fields, name) for name in FIELDS[:-1]], symbol=fields.symbol)


def _bar_of(values: tuple[Any, ...]) -> Bar:
    """A Bar from its fields' values in order (unpickling)."""
    return Bar(*values[:-1], symbol=values[-1])


def closed_bar(window: str, start: int, end: int, open: Decimal, high: Decimal, low: Decimal,
               close: Decimal, buy_e8: int, sell_e8: int, buy_e16: int, sell_e16: int, trades: int,
               trade_count: int, largest_qty: Decimal, largest_id: int, cvd_e8: int,
               levels: dict[int, list[int]] | None, tick: Decimal | None, tick_e8: int, value_area: Decimal | None,
               closed_by: str, symbol: str) -> Bar:
    """The engine's Bar: its sums as integers (volumes and CVD in 10^-8, notionals in 10^-16) and its footprint
    as ``levels`` (bucket number -> [buy, sell] in 10^-8; a bucket's price is its number times ``tick``), each
    made a Decimal when first read. ``levels`` is the bar's own: the engine never changes it after this."""
    bar = Bar.__new__(Bar)
    bar.window, bar.start, bar.end = window, start, end
    bar.open, bar.high, bar.low, bar.close = open, high, low, close
    bar._buy_e8, bar._sell_e8, bar._buy_e16, bar._sell_e16, bar._cvd_e8 = buy_e8, sell_e8, buy_e16, sell_e16, cvd_e8
    bar._buy_volume = bar._sell_volume = bar._buy_notional = bar._sell_notional = bar._cvd = bar._footprint = None
    bar.trades, bar.trade_count, bar.largest_qty, bar.largest_id = trades, trade_count, largest_qty, largest_id
    bar._levels, bar._tick, bar._tick_e8, bar._value_area = levels, tick, tick_e8, value_area
    bar.closed_by, bar.symbol = closed_by, symbol
    return bar


_UNSET = object()
_set_slot = object.__setattr__


def _write_once(bar: Bar, name: str, value: Any) -> None:
    """The pure path's ``Bar.__setattr__``: a field is written while the bar is made, and a cached sum when first
    read, never after, so a pure Bar is as read-only as the compiled one (whose fields are ``readonly``)."""
    current = getattr(bar, name, _UNSET)
    if current is not _UNSET and (current is not None or name[0] != "_"):
        raise AttributeError(f"Bar is read-only: cannot assign {name!r}")
    _set_slot(bar, name, value)


def _never(bar: Bar, name: str) -> None:
    """The pure path's ``Bar.__delattr__``: no field is deleted, as compiled."""
    raise AttributeError(f"Bar is read-only: cannot delete {name!r}")


if __file__.endswith(".py"):  # the pure path: a Python class with slots, writable unless told (compiled: readonly)
    Bar.__setattr__ = _write_once  # type: ignore[assignment]
    Bar.__delattr__ = _never  # type: ignore[assignment]

    class _Making:
        """A Bar while the pure closed_bar fills it (the engine makes one per window per symbol): its slots, written
        at C speed (a subclass of Bar would take Bar's __setattr__ path), then made a Bar, read-only from then on."""

        __slots__ = Bar.__slots__

    def _pure_closed_bar(window: str, start: int, end: int, open: Decimal, high: Decimal, low: Decimal,
                         close: Decimal, buy_e8: int, sell_e8: int, buy_e16: int, sell_e16: int, trades: int,
                         trade_count: int, largest_qty: Decimal, largest_id: int, cvd_e8: int,
                         levels: dict[int, list[int]] | None, tick: Decimal | None, tick_e8: int,
                         value_area: Decimal | None, closed_by: str, symbol: str) -> Bar:
        """:func:`closed_bar` on the pure path: the same Bar, read-only once made."""
        bar: Any = _Making.__new__(_Making)
        bar.window, bar.start, bar.end = window, start, end
        bar.open, bar.high, bar.low, bar.close = open, high, low, close
        bar._buy_e8, bar._sell_e8, bar._buy_e16, bar._sell_e16, bar._cvd_e8 = buy_e8, sell_e8, buy_e16, sell_e16, cvd_e8
        bar._buy_volume = bar._sell_volume = bar._buy_notional = bar._sell_notional = bar._cvd = bar._footprint = None
        bar.trades, bar.trade_count, bar.largest_qty, bar.largest_id = trades, trade_count, largest_qty, largest_id
        bar._levels, bar._tick, bar._tick_e8, bar._value_area = levels, tick, tick_e8, value_area
        bar.closed_by, bar.symbol = closed_by, symbol
        bar.__class__ = Bar
        return bar  # type: ignore[no-any-return]

    _pure_closed_bar.__name__ = _pure_closed_bar.__qualname__ = "closed_bar"
    globals()["closed_bar"] = _pure_closed_bar


def _e16(value: Decimal) -> int:
    """A notional's value in units of 10^-16, exactly; FixedPointError if it has more decimals."""
    scaled = _EXACT.scaleb(value, 16)
    units = int(scaled)
    if units != scaled:
        raise FixedPointError(f"{value} has more than 16 decimals")
    return units


def _signed_e8(value: Decimal) -> int:
    """A CVD's value in units of 10^-8 (it may be negative)."""
    return -to_e8(-value) if value < 0 else to_e8(value)


class BarUnits(NamedTuple):
    """A bar's sums as exact integers (:meth:`Bar.units`)."""

    buy_volume: int  # units of 10^-8
    sell_volume: int
    buy_notional: int  # units of 10^-16
    sell_notional: int
    cvd: int  # units of 10^-8, may be negative
    tick: int | None  # the footprint's, units of 10^-8; None without a footprint
    # (bucket price, buy volume, sell volume), units of 10^-8, ascending; None without a footprint
    levels: tuple[tuple[int, int, int], ...] | None


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
