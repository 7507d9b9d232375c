"""Months of exact order flow from Binance's public aggTrades archive, into a Parquet store (docs/history.md).

::

    from orderflow_plugin.history import history
    result = await history(["BTCUSDT"], date(2025, 11, 1), date(2025, 11, 30), Path("store"))
    print(result.summary())

Needs pyarrow (``pip install 'orderflow-plugin[history]'``).
"""

from .plan import ArchiveFile, HistoryError, parse_day, plan
from .run import Gap, HistoryResult, Progress, history
from .store import Store, bars_from_table, bars_table, trades_of, trades_table

__all__ = [
    "ArchiveFile",
    "Gap",
    "HistoryError",
    "HistoryResult",
    "Progress",
    "Store",
    "bars_from_table",
    "bars_table",
    "history",
    "parse_day",
    "plan",
    "trades_of",
    "trades_table",
]
