"""The Parquet store: one file per UTC day of trades, and of closed bars per window, written atomically.

Layout (``pyarrow.dataset.dataset(folder)`` reads each folder as one table; so do DuckDB, polars
and pandas)::

    DIR/{market}/{SYMBOL}/trades/2025-11-01.parquet
    DIR/{market}/{SYMBOL}/bars/{window}/2025-11-01.parquet
    DIR/{market}/{SYMBOL}/archive/...zip(.CHECKSUM)    verified downloads, kept for resuming

A file is written to a hidden ``.NAME.<pid>.tmp`` (readers skip names starting with ``.``), synced,
then renamed over the old one: a reader sees the old file or the new one, never a part. Each day
holds exactly the trades whose time falls in it, so a trade has one home and a rewrite cannot repeat
it. A trades file's metadata ``orderflow.archive`` names the SHA-256 of the archive zip it was made
from (``missing``: the archive had no file; its trades came over REST).
"""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..fixed import FixedPointError
from ..metrics import Bar, BarUnits, Footprint
from ..models import Market, Trade
from .normalize import DECIMAL, TRADES_SCHEMA, _sorted

__all__ = ["BARS_SCHEMA", "Store", "bars_from_table", "bars_table", "trade_columns", "trades_of", "trades_table"]

_TAG = b"orderflow.archive"
_REPEATED = ("source", "symbol", "window", "closed_by")
_NOTIONAL = pa.decimal128(38, 16)  # price x quantity: 8 + 8 decimals, exact
_LEVEL = pa.struct([("price", DECIMAL), ("buy_volume", DECIMAL), ("sell_volume", DECIMAL)])
BARS_SCHEMA = pa.schema([
    ("symbol", pa.string()), ("window", pa.string()),
    ("start", pa.timestamp("ms", tz="UTC")), ("end", pa.timestamp("ms", tz="UTC")),
    ("open", DECIMAL), ("high", DECIMAL), ("low", DECIMAL), ("close", DECIMAL),
    ("buy_volume", DECIMAL), ("sell_volume", DECIMAL), ("buy_notional", _NOTIONAL), ("sell_notional", _NOTIONAL),
    ("trades", pa.int64()), ("trade_count", pa.int64()), ("largest_qty", DECIMAL), ("largest_id", pa.int64()),
    ("cvd", DECIMAL), ("footprint_tick", DECIMAL), ("footprint", pa.list_(_LEVEL)), ("closed_by", pa.string()),
])
_PRICE_FIELDS = ("open", "high", "low", "close", "largest_qty")
_SUM_FIELDS = ("buy_volume", "sell_volume", "buy_notional", "sell_notional", "cvd")  # BarUnits' first five


class Store:
    """One symbol's folder in the store at ``root``."""

    def __init__(self, root: Path, market: Market, symbol: str) -> None:
        self.root = Path(root)
        self.market: Market = market
        self.symbol = symbol
        self.folder = self.root / market / symbol
        self.trades_dir = self.folder / "trades"
        self.archive_dir = self.folder / "archive"

    def bars_dir(self, window: str) -> Path:
        """The folder of ``window``'s bars."""
        return self.folder / "bars" / window

    def day_path(self, day: date) -> Path:
        """The trades file of ``day``."""
        return self.trades_dir / f"{day.isoformat()}.parquet"

    def days(self) -> list[date]:
        """Every day with a trades file, in order."""
        if not self.trades_dir.is_dir():
            return []
        return sorted(date.fromisoformat(p.stem) for p in self.trades_dir.glob("*.parquet")
                      if not p.name.startswith("."))

    def tag(self, day: date) -> str | None:
        """The archive SHA-256 ``day``'s file was made from (``missing``: none), None without a file."""
        try:
            metadata = pq.read_schema(self.day_path(day)).metadata or {}
        except FileNotFoundError:
            return None
        return metadata.get(_TAG, b"").decode() or None

    def count(self, day: date) -> int:
        """How many trades ``day``'s file holds (0 without one), from its footer alone."""
        try:
            return pq.read_metadata(self.day_path(day)).num_rows
        except FileNotFoundError:
            return 0

    def read_day(self, day: date, columns: list[str] | None = None) -> pa.Table | None:
        """``day``'s trades, or None."""
        try:
            return pq.read_table(self.day_path(day), columns=columns)
        except FileNotFoundError:
            return None

    def write_day(self, day: date, table: pa.Table, tag: str) -> None:
        """Replace ``day``'s trades with ``table`` (sorted, distinct ids), made from archive ``tag``."""
        table = table.cast(TRADES_SCHEMA).replace_schema_metadata({_TAG: tag.encode()})
        _write_atomic(self.day_path(day), table)

    def merge_day(self, day: date, table: pa.Table) -> int:
        """Add ``table``'s trades to ``day``'s (an id already there is kept once); return how many were new."""
        existing = self.read_day(day)
        tag = self.tag(day) or "missing"
        before = existing.num_rows if existing is not None else 0
        parts = [table.cast(TRADES_SCHEMA)] if existing is None else [existing.cast(TRADES_SCHEMA),
                                                                      table.cast(TRADES_SCHEMA)]
        merged = pa.concat_tables(parts)
        parsed = _sorted(merged.select(range(7)), merged.num_rows, set())
        # _sorted labels every row "archive": put each row's own source back, by id.
        sources = dict(zip(merged.column("id").to_pylist(), merged.column("source").to_pylist(), strict=True))
        result = parsed.table.set_column(7, "source", pa.array([sources[i] for i in parsed.table.column("id")
                                                                .to_pylist()], pa.string()))
        self.write_day(day, result, tag)
        return result.num_rows - before

    def write_bars(self, window: str, day: date, bars: list[Bar]) -> None:
        """Replace ``window``'s bars starting on ``day``."""
        _write_atomic(self.bars_dir(window) / f"{day.isoformat()}.parquet", bars_table(bars))


def _write_atomic(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # Dictionary pages only where values repeat within a page (source, symbol, window): on ids, prices and
        # times they cost more to build than they save.
        pq.write_table(table, temporary, compression="zstd",
                       use_dictionary=[n for n in _REPEATED if n in table.schema.names])
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def trades_table(trades: Iterable[Trade], source: str | None = None) -> pa.Table:
    """Trades (from REST, say) as a store table, times in microseconds."""
    rows = list(trades)
    return pa.table({
        "id": pa.array([t.id for t in rows], pa.int64()),
        "price": pa.array([t.price for t in rows], DECIMAL),
        "qty": pa.array([t.qty for t in rows], DECIMAL),
        "first_id": pa.array([t.first_id for t in rows], pa.int64()),
        "last_id": pa.array([t.last_id for t in rows], pa.int64()),
        "time": pa.array([t.time * 1000 for t in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "is_buyer_maker": pa.array([t.side == "sell" for t in rows], pa.bool_()),
        "source": pa.array([source or t.source for t in rows], pa.string()),
    }, schema=TRADES_SCHEMA)


def trades_of(table: pa.Table, symbol: str, market: Market) -> Iterator[Trade]:
    """The store's rows as :class:`Trade` objects (times in milliseconds, as the stream has them)."""
    millis = pc.divide(table.column("time").cast(pa.int64()), 1000).to_pylist()
    columns = [table.column(name).to_pylist() for name in ("id", "first_id", "last_id", "is_buyer_maker", "source")]
    prices, quantities = _decimals(table.column("price")), _decimals(table.column("qty"))
    for agg, first, last, maker, source, price, qty, ms in zip(*columns, prices, quantities, millis, strict=True):
        yield Trade(symbol, agg, price, qty, first, last, ms, "sell" if maker else "buy", ms, market, source)


def trade_columns(table: pa.Table, symbol: str, market: Market) -> tuple[Any, ...] | None:
    """The store's rows as :meth:`FlowEngine.add_many <orderflow_plugin.engine.FlowEngine.add_many>`'s columns
    (prices and quantities in units of 10^-8 read straight from the decimals' 128-bit integers), its last
    argument making the one :class:`Trade` of a row that :func:`trades_of` gives; None when a price or quantity
    is past the fixed-point range (the per-trade path then names the trade)."""
    prices, quantities = _units(table.column("price")), _units(table.column("qty"))
    if prices is None or quantities is None:
        return None
    # Tuples, which the garbage collector stops scanning after one look (lists of millions it would scan again
    # at every collection the engine's allocations set off: add_many takes tuples as they are).
    millis = tuple(pc.divide(table.column("time").cast(pa.int64()), 1000).to_pylist())
    ids, firsts, lasts, makers, sources = (tuple(table.column(name).to_pylist())
                                           for name in ("id", "first_id", "last_id", "is_buyer_maker", "source"))
    price_decimals, qty_decimals = tuple(_decimals(table.column("price"))), tuple(_decimals(table.column("qty")))

    def trade_of(row: int) -> Trade:
        return Trade(symbol, ids[row], price_decimals[row], qty_decimals[row], firsts[row], lasts[row], millis[row],
                     "sell" if makers[row] else "buy", millis[row], market, sources[row])

    return ids, prices, quantities, firsts, lasts, millis, makers, price_decimals, qty_decimals, trade_of


def _units(column: pa.ChunkedArray) -> list[int] | None:
    """A decimal128 column of scale 8 as units of 10^-8, from its integers; None unless each is in [0, 2^63)."""
    array = column.combine_chunks()
    if array.type != DECIMAL or array.null_count:
        return None
    if not len(array):
        return []
    # Each value is a little-endian 128-bit integer: two int64 words, low then high.
    words = pa.Array.from_buffers(pa.int64(), 2 * (len(array) + array.offset), [None, array.buffers()[1]])
    words = words[2 * array.offset:]
    low, high = words[::2], words[1::2]
    if pc.min_max(high).as_py() != {"min": 0, "max": 0} or pc.min(low).as_py() < 0:
        return None
    return tuple(low.to_pylist())  # type: ignore[return-value]


def _decimals(column: pa.ChunkedArray) -> list[Decimal]:
    """The column's values as Decimals, each distinct value built once (prices and sizes repeat a lot):
    pyarrow's own decimal128 to Decimal conversion costs several times more per value."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    values = [Decimal(text) for text in encoded.dictionary.cast(pa.string()).to_pylist()]
    return [values[i] for i in encoded.indices.to_pylist()]


def bars_table(bars: list[Bar]) -> pa.Table:
    """Closed bars as a table: the Bar fields by name, the footprint as a list of (price, buy, sell) levels.

    The sums and footprint levels go in from their exact integers (:meth:`Bar.units`, which an engine Bar holds:
    no Decimal is made), as decimal128's own 16-byte integers. Prices (the trades' own Decimals) go in as their
    exact strings, cast by pyarrow (exact, or an error): several times faster than handing it Decimal objects.
    """
    columns: dict[str, pa.Array] = {
        "symbol": pa.array([bar.symbol for bar in bars], pa.string()),
        "window": pa.array([bar.window for bar in bars], pa.string()),
        "start": pa.array([bar.start for bar in bars], pa.int64()).cast(BARS_SCHEMA.field("start").type),
        "end": pa.array([bar.end for bar in bars], pa.int64()).cast(BARS_SCHEMA.field("end").type),
    }
    for name in ("trades", "trade_count", "largest_id"):
        columns[name] = pa.array([getattr(bar, name) for bar in bars], pa.int64())
    for name in _PRICE_FIELDS:
        columns[name] = _decimal_array([getattr(bar, name) for bar in bars], BARS_SCHEMA.field(name).type)
    try:
        units: list[BarUnits] | None = [bar.units() for bar in bars]
    except FixedPointError:  # a Bar made from values past the fixed-point range: pyarrow casts them, or says why
        units = None
    try:
        if units is None:
            raise OverflowError
        for index, name in enumerate(_SUM_FIELDS):
            columns[name] = _units_array([u[index] for u in units], BARS_SCHEMA.field(name).type)
        offsets = [0]
        level_columns: tuple[list[int | None], list[int | None], list[int | None]] = ([], [], [])
        for u in units:
            if u.levels is not None:
                for price, buy, sell in u.levels:
                    level_columns[0].append(price)
                    level_columns[1].append(buy)
                    level_columns[2].append(sell)
            offsets.append(len(level_columns[0]))
        columns["footprint_tick"] = _units_array([u.tick for u in units], DECIMAL)
        levels = pa.StructArray.from_arrays([_units_array(values, DECIMAL) for values in level_columns],
                                            fields=list(_LEVEL))
        columns["footprint"] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), levels,
                                                        mask=pa.array([u.levels is None for u in units], pa.bool_()))
    except OverflowError:  # a sum past decimal128(38): pyarrow casts the Decimals, or says why
        _decimal_columns(bars, columns)
    columns["closed_by"] = pa.array([bar.closed_by for bar in bars], pa.string())
    return pa.table([columns[name] for name in BARS_SCHEMA.names], schema=BARS_SCHEMA)


def _units_array(values: list[int | None], kind: pa.DataType) -> pa.Array:
    """Exact integers (unscaled: units of 10^-scale) as a decimal128 array, from their 16 bytes each (two int64
    words, low then high); OverflowError for one past the type's 38 digits."""
    validity = None
    if None in values:
        validity = pa.array([v is not None for v in values], pa.bool_()).buffers()[1]
        values = [v or 0 for v in values]
    try:
        if sys.byteorder != "little":  # Arrow's decimal128 is one native 128-bit integer: no two-word shortcut
            raise OverflowError
        low = array("q", values)  # type: ignore[arg-type]
    except OverflowError:  # past 2^63 (a notional can be): each value's 16 bytes
        top = 10**38
        if max(values) >= top or min(values) <= -top:  # type: ignore[type-var]
            raise
        data = b"".join([v.to_bytes(16, sys.byteorder, signed=True) for v in values])  # type: ignore[union-attr]
    else:
        words = array("q", bytes(16 * len(values)))
        words[0::2] = low
        if len(low) and min(low) < 0:
            words[1::2] = array("q", [-1 if v < 0 else 0 for v in low])
        data = words.tobytes()
    return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(data)])


def _decimal_columns(bars: list[Bar], columns: dict[str, pa.Array]) -> None:
    """The sums and footprint columns from the Decimals, as exact strings cast by pyarrow."""
    for name in _SUM_FIELDS:
        columns[name] = _decimal_array([getattr(bar, name) for bar in bars], BARS_SCHEMA.field(name).type)
    ticks: list[Decimal | None] = []
    offsets = [0]
    level_columns: tuple[list[Decimal], list[Decimal], list[Decimal]] = ([], [], [])
    valid: list[bool] = []
    for bar in bars:
        footprint = bar.footprint
        ticks.append(footprint.tick if footprint else None)
        valid.append(footprint is not None)
        if footprint is not None:
            for price, buy, sell in footprint.levels:
                level_columns[0].append(price)
                level_columns[1].append(buy)
                level_columns[2].append(sell)
        offsets.append(len(level_columns[0]))
    columns["footprint_tick"] = _decimal_array(ticks, DECIMAL)  # type: ignore[arg-type]
    levels = pa.StructArray.from_arrays([_decimal_array(values, DECIMAL) for values in level_columns],  # type: ignore[arg-type]
                                        fields=list(_LEVEL))
    columns["footprint"] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), levels,
                                                    mask=pa.array([not v for v in valid], pa.bool_()))


def _decimal_array(values: list[Decimal | None], kind: pa.DataType) -> pa.Array:
    return pa.array([None if v is None else format(v, "f") for v in values], pa.string()).cast(kind)


def bars_from_table(table: pa.Table, value_area: Decimal = Decimal("0.7")) -> list[Bar]:
    """The :class:`Bar` objects a bars table holds (for replays and comparisons)."""
    bars = []
    for row in table.to_pylist():
        footprint = None
        if row["footprint"] is not None:
            footprint = Footprint(tick=row["footprint_tick"], value_area_share=value_area, levels=tuple(
                (level["price"], level["buy_volume"], level["sell_volume"]) for level in row["footprint"]))
        bars.append(Bar(row["window"], _ms(row["start"]), _ms(row["end"]),
                        *(row[name] for name in ("open", "high", "low", "close", "buy_volume", "sell_volume",
                                                 "buy_notional", "sell_notional", "trades", "trade_count",
                                                 "largest_qty", "largest_id", "cvd")),
                        footprint, row["closed_by"], symbol=row["symbol"]))
    return bars


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(moment: datetime) -> int:
    return (moment.replace(tzinfo=moment.tzinfo or UTC) - _EPOCH) // timedelta(milliseconds=1)
