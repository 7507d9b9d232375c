"""A store's trades into a nautilus_trader ``ParquetDataCatalog`` as ``TradeTick``s, for backtests.

Each aggregate trade becomes one ``TradeTick`` whose ``trade_id`` is Binance's aggregate id (so
:class:`~orderflow_plugin.adapters.nautilus.OrderFlowActor` in a ``BacktestEngine`` rebuilds the same
trades, in the same order), ``aggressor_side`` the taker's, ``ts_event`` the trade time. Prices and
sizes go through the instrument's ``make_price``/``make_qty``; a value with more decimals than the
instrument's precision is refused rather than rounded.
"""

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from ..models import Market
from .tape import store_tape

__all__ = ["trade_ticks", "write_catalog"]

_MS = 1_000_000


def trade_ticks(root: str | Path, instrument: Any, symbol: str, market: Market, first: date,
                last: date) -> list[TradeTick]:
    """The stored trades of ``symbol`` from ``first`` to ``last`` as ``instrument``'s TradeTicks."""
    ticks = []
    for row in store_tape(root, symbol, market, first, last).rows:
        price, size = Decimal(row.price), Decimal(row.qty)
        made_price, made_size = instrument.make_price(price), instrument.make_qty(size)
        if made_price.as_decimal() != price or made_size.as_decimal() != size:
            raise ValueError(f"{symbol} trade {row.id}: {row.price} x {row.qty} does not fit {instrument.id}'s "
                             f"precision ({instrument.price_precision}, {instrument.size_precision})")
        ns = row.time * _MS
        ticks.append(TradeTick(instrument.id, made_price, made_size,
                               AggressorSide.SELLER if row.buyer_maker else AggressorSide.BUYER,
                               TradeId(str(row.id)), ns, ns))
    return ticks


def write_catalog(root: str | Path, catalog: str | Path, instrument: Any, symbol: str, market: Market,
                  first: date, last: date) -> int:
    """Write the stored trades (and ``instrument``) into the catalog at ``catalog``; return how many trades."""
    ticks = trade_ticks(root, instrument, symbol, market, first, last)
    target = ParquetDataCatalog(str(catalog))
    target.write_data([instrument])
    target.write_data(ticks)
    return len(ticks)
