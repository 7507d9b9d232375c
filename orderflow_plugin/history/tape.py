"""A store's trades as a :class:`~orderflow_plugin.tape.Tape`, for ``orderflow replay DIR --from --to``."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import TapeError
from ..models import Market
from ..tape import Tape, TapeRow
from .store import Store

__all__ = ["store_tape"]


def store_tape(root: str | Path, symbol: str, market: Market, first: date, last: date) -> Tape:
    """The stored trades of ``symbol`` from ``first`` to ``last`` (inclusive), in id order; TapeError if none."""
    store = Store(Path(root), market, symbol)
    rows: list[TapeRow] = []
    day = first
    while day <= last:
        table = store.read_day(day)
        if table is not None:
            millis = pc.divide(table.column("time").cast(pa.int64()), 1000).to_pylist()
            prices = table.column("price").cast(pa.string()).to_pylist()
            quantities = table.column("qty").cast(pa.string()).to_pylist()
            for agg, price, qty, low, high, ms, maker in zip(
                    table.column("id").to_pylist(), prices, quantities, table.column("first_id").to_pylist(),
                    table.column("last_id").to_pylist(), millis, table.column("is_buyer_maker").to_pylist(),
                    strict=True):
                rows.append(TapeRow(agg, price, qty, low, high, ms, maker))
        day += timedelta(days=1)
    if not rows:
        raise TapeError(f"store {root}: no {market} {symbol} trades from {first} to {last} "
                        f"(orderflow history fills it; it looks in {store.trades_dir})")
    return Tape(symbol, market, rows, f"{store.trades_dir} {first}..{last}")
