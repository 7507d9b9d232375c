"""Archive CSVs to one exact, sorted shape: the trades table every later step reads.

The archive's rows come in more than one shape: spot has 8 columns and no header, USD-M has 7
under a header row; spot times are microseconds from 2025-01-01 and milliseconds before (per row:
an epoch time in microseconds has 16 digits, in milliseconds 13); rows can be out of order. Here
they become one table sorted by id, duplicates dropped, times as UTC microseconds (no precision of
the archive is lost; a millisecond time is exact in it), prices and quantities as decimal128 with
8 decimals: Binance quotes every spot and USD-M price and quantity with at most 8 decimals, so the
scale holds every value exactly, and a value with more decimals is an error rather than rounded.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .plan import HistoryError

__all__ = ["DECIMAL", "TRADES_SCHEMA", "Parsed", "id_holes", "parse_csv", "read_zip", "split_days", "with_source"]

DECIMAL = pa.decimal128(38, 8)
TRADES_SCHEMA = pa.schema([
    ("id", pa.int64()), ("price", DECIMAL), ("qty", DECIMAL), ("first_id", pa.int64()), ("last_id", pa.int64()),
    ("time", pa.timestamp("us", tz="UTC")), ("is_buyer_maker", pa.bool_()), ("source", pa.string()),
])
_NAMES = ["id", "price", "qty", "first_id", "last_id", "time", "is_buyer_maker", "best_match"]
_MICROSECONDS = 10**14  # an epoch time at or above this is in microseconds (16 digits)
_DAY_US = 86_400_000_000


@dataclass
class Parsed:
    """One zip's trades (sorted by id) and what normalizing found."""

    table: pa.Table
    rows: int
    out_of_order: int = 0
    duplicates: int = 0
    shapes: set[str] = field(default_factory=set)


def read_zip(path: Path, name: str) -> Parsed:
    """The trades of the archive zip at ``path`` (``name`` for messages), normalized; HistoryError if broken."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.endswith(".csv")]
            if len(members) != 1:
                raise HistoryError(f"{name}: holds {len(members)} CSV files, not one")
            data = archive.read(members[0])
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise HistoryError(f"{name}: not a whole zip file ({exc}); delete {path} and run again") from exc
    except (OSError, RuntimeError) as exc:
        raise HistoryError(f"{name}: cannot be read ({exc})") from exc
    return parse_csv(data, name)


def parse_csv(data: bytes, name: str) -> Parsed:
    """Parse one archive CSV (either shape) into the normalized table."""
    first_line = data[: data.find(b"\n")] if b"\n" in data else data
    header = bool(first_line) and not first_line[:1].isdigit()
    sample = data.split(b"\n", 2)[1 if header else 0] if data else b""
    columns = sample.count(b",") + 1 if sample.strip() else 7
    if columns not in (7, 8):
        raise HistoryError(f"{name}: rows have {columns} columns, not the archive's 7 (USD-M) or 8 (spot)")
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=_NAMES[:columns], skip_rows=1 if header else 0,
                                           block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(
                column_types={"id": pa.int64(), "price": DECIMAL, "qty": DECIMAL, "first_id": pa.int64(),
                              "last_id": pa.int64(), "time": pa.int64(), "is_buyer_maker": pa.bool_()},
                include_columns=_NAMES[:7]),
        )
    except pa.ArrowInvalid as exc:
        raise HistoryError(f"{name}: not an aggTrades CSV ({str(exc).splitlines()[0]})") from exc
    rows = table.num_rows
    raw = table.column("time")
    micros = pc.if_else(pc.less(raw, _MICROSECONDS), pc.multiply(raw, 1000), raw)
    shapes = {f"{columns} columns", "header" if header else "no header"}
    if rows and pc.any(pc.less(raw, _MICROSECONDS)).as_py():
        shapes.add("ms")
    if rows and pc.any(pc.greater_equal(raw, _MICROSECONDS)).as_py():
        shapes.add("us")
    table = table.set_column(5, "time", micros.cast(pa.timestamp("us", tz="UTC")))
    return _sorted(table, rows, shapes)


def with_source(table: pa.Table, source: str) -> pa.Table:
    """``table`` (the 7 trade columns) with a constant ``source`` column."""
    column = pa.DictionaryArray.from_arrays(pa.array([0] * table.num_rows, pa.int8()), [source]).cast(pa.string())
    return table.append_column("source", column)


def _sorted(table: pa.Table, rows: int, shapes: set[str]) -> Parsed:
    ids = table.column("id").combine_chunks()
    out_of_order = duplicates = 0
    if rows > 1:
        steps = pc.subtract(ids.slice(1), ids.slice(0, rows - 1))
        out_of_order = pc.sum(pc.less(steps, 0)).as_py() or 0
        if out_of_order:
            table = table.take(pc.sort_indices(ids))
            ids = table.column("id").combine_chunks()
            steps = pc.subtract(ids.slice(1), ids.slice(0, rows - 1))
        repeated = pc.equal(steps, 0)
        duplicates = pc.sum(repeated).as_py() or 0
        if duplicates:
            keep = pa.concat_arrays([pa.array([True]), pc.invert(repeated)])
            table = table.filter(keep)
    return Parsed(with_source(table, "archive"), rows, out_of_order, duplicates, shapes)


def split_days(table: pa.Table) -> dict[date, pa.Table]:
    """``table`` cut into UTC days by trade time (days without a trade left out)."""
    if table.num_rows == 0:
        return {}
    micros = table.column("time").cast(pa.int64())
    days = pc.divide(micros, _DAY_US)
    low, high = pc.min(days).as_py(), pc.max(days).as_py()
    if low == high:
        return {_day(low): table}
    parts = {_day(d): table.filter(pc.equal(days, d)) for d in range(low, high + 1)}
    return {day: part for day, part in parts.items() if part.num_rows}


def id_holes(ids: pa.Array | pa.ChunkedArray) -> list[tuple[int, int]]:
    """The missing runs ``(first, last)`` inside sorted, distinct ``ids``."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if len(ids) < 2:
        return []
    steps = pc.subtract(ids.slice(1), ids.slice(0, len(ids) - 1))
    where = pc.indices_nonzero(pc.greater(steps, 1)).to_pylist()
    return [(ids[i].as_py() + 1, ids[i + 1].as_py() - 1) for i in where]


def _day(number: int) -> date:
    return date(1970, 1, 1) + timedelta(days=number)
