"""The chart's past from a part 16 store (``orderflow chart --store DIR``): closed bars read or recomputed.

A store holds ``bars/{window}/`` when ``orderflow history`` computed that window; those bars are
read as they are when their footprint has the chart's tick. Otherwise they are recomputed from the
store's trades by the stream's own engine (:func:`~orderflow_plugin.history.bars.compute_bars`), so
either way they are the numbers a live stream gives. Only the last ``limit`` bars are kept: the page
gets every bar on connect.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

from ..engine import parse_window
from ..metrics import Bar
from ..models import Market
from ..options import Flow

__all__ = ["store_bars"]


def store_bars(root: Path, market: Market, symbol: str, window: str, flow: Flow,
               limit: int = 5000) -> tuple[list[Bar], str]:
    """``symbol``'s closed ``window`` bars in the store at ``root``, oldest first, and where they came from
    (``"bars"`` or ``"trades"``); ``flow`` gives the footprint tick and value area. A store with neither
    is a ValueError naming the folder it looked in."""
    try:
        import pyarrow.parquet as pq  # the history extra; imported only when a store is asked for
    except ModuleNotFoundError as exc:
        raise ValueError(f"--store needs {exc.name}: pip install 'orderflow-plugin[history]'") from exc

    from ..history.bars import compute_bars
    from ..history.store import Store, bars_from_table

    store = Store(root, market, symbol)
    tick = Decimal(str(flow.footprint_tick))
    value_area = Decimal(str(flow.value_area))
    files = sorted(p for p in store.bars_dir(window).glob("*.parquet") if not p.name.startswith("."))
    bars = [bar for path in files for bar in bars_from_table(pq.read_table(path), value_area)]
    if bars and all(bar.footprint is not None and bar.footprint.tick == tick for bar in bars):
        return bars[-limit:], "bars"
    days = store.days()
    if not days:
        if bars:
            raise ValueError(f"{store.bars_dir(window)} holds {window} bars without a footprint of tick {tick} and "
                             f"{store.trades_dir} no trades to compute them from")
        raise ValueError(f"no {window} bars or trades of {symbol} in {store.folder}")
    needed = -(-limit * parse_window(window).ms // 86_400_000) + 1  # days holding `limit` bars, and one more
    days = days[-needed:]
    computed, _count = compute_bars(store, days, dataclasses.replace(flow, windows=(window,)))
    return computed[window][-limit:], "trades"
