"""Whale alert: log a warning for every trade whose notional is at or over a threshold.

Settings (``[default.hooks.whale_alert]``): ``enabled`` (default true), ``min_notional``
(price x quantity in the quote asset, default 100000). Logger: ``orderflow_hooks.whale_alert``.
Other plugins can read ``alerts`` (the most recent 100 whale trades, newest last).
"""

from __future__ import annotations

import logging
from collections import deque
from decimal import Decimal
from typing import Any

from orderflow_plugin.models import format_decimal

log = logging.getLogger("orderflow_hooks.whale_alert")
alerts: deque[Any] = deque(maxlen=100)
_min_notional: Decimal | None = Decimal(100000)


def on_startup(settings: Any) -> None:
    global _min_notional
    table = settings.hooks.whale_alert
    _min_notional = Decimal(str(table.min_notional)) if table.enabled else None


def on_trade(trade: Any) -> None:
    if _min_notional is None:
        return
    notional = trade.price * trade.qty
    if notional >= _min_notional:
        alerts.append(trade)
        log.warning(
            "whale %s %s %s @ %s = %s notional (id %d)",
            trade.symbol, trade.side, format_decimal(trade.qty), format_decimal(trade.price),
            f"{notional:,.2f}", trade.id,
        )
