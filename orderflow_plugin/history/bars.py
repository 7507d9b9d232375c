"""Closed bars from the store's trades, by the live stream's own engine: the same numbers as live.

The trades go through :class:`~orderflow_plugin.engine.FlowEngine` built from the same ``[flow]``
settings as the stream's pipeline, in id order from the first asked day, so CVD counts from there:
as columns (``FlowEngine.add_many``, no ``Trade`` per row), which gives exactly what ``add`` gives.
A bar the engine revises (a late trade) replaces the one with its start. The last bars are closed
at the end of the last day, whose trades are all in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from ..engine import FlowEngine
from ..metrics import Bar
from ..options import Flow
from .store import Store, trade_columns, trades_of

__all__ = ["compute_bars", "flow_engine"]

_DAY_MS = 86_400_000


def flow_engine(symbol: str, flow: Flow) -> FlowEngine:
    """The engine the stream's pipeline builds for ``symbol`` from ``flow``."""
    return FlowEngine(symbol, windows=flow.windows, footprint_tick=flow.footprint_tick or None,
                      value_area=flow.value_area, whale_notional=flow.whale_notional or None,
                      whale_percentile=flow.whale_percentile or None, whale_window=flow.whale_window)


def compute_bars(store: Store, days: Sequence[date], flow: Flow) -> tuple[dict[str, list[Bar]], int]:
    """Every closed bar of ``days`` per window, and how many trades made them."""
    engine = flow_engine(store.symbol, flow)
    bars: dict[str, list[Bar]] = {window.name: [] for window in engine.windows}
    add = engine.add
    count = 0

    def take(metrics: Sequence[object]) -> None:
        for metric in metrics:
            if type(metric) is Bar:
                out = bars[metric.window]
                if metric.closed_by == "revised" and out and out[-1].start == metric.start:
                    out[-1] = metric
                else:
                    out.append(metric)

    for day in days:
        table = store.read_day(day)
        if table is None:
            continue
        columns = trade_columns(table, store.symbol, store.market)
        if columns is not None:  # no Trade per row: the engine reads the columns
            take(engine.add_many(*columns))
        else:  # a value past the fixed-point range: the per-trade path refuses it naming the trade
            for trade in trades_of(table, store.symbol, store.market):
                metrics = add(trade)
                if metrics:
                    take(metrics)
        count += table.num_rows
    if days:
        end = (days[-1] + timedelta(days=1) - date(1970, 1, 1)).days * _DAY_MS
        take(engine.close_until(end))
    return bars, count
