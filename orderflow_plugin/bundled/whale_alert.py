"""Whale alert: log a warning for every trade whose notional is at or over a threshold.

Settings (``[default.hooks.whale_alert]``): ``enabled`` (default true), ``min_notional``
(price x quantity in the quote asset, default 100000). Logger: ``orderflow_hooks.whale_alert``.
Other plugins can read ``manager.get_plugin("whale_alert").alerts`` (the most recent 100 whale
trades, newest last).
"""

from __future__ import annotations

import logging
from collections import deque
from decimal import Decimal
from typing import Any

from orderflow_plugin.models import format_decimal

__all__ = ["WhaleAlert"]

log = logging.getLogger("orderflow_hooks.whale_alert")


class WhaleAlert:
    """The ``whale_alert`` plugin."""

    def __init__(self) -> None:
        self.alerts: deque[Any] = deque(maxlen=100)
        self.min_notional: Decimal | None = Decimal(100000)  # None: disabled

    def on_startup(self, settings: Any) -> None:
        table = settings.hooks.whale_alert
        self.min_notional = Decimal(str(table.min_notional)) if table.enabled else None

    def on_trade(self, trade: Any) -> None:
        if self.min_notional is None:
            return
        notional = trade.price * trade.qty
        if notional >= self.min_notional:
            self.alerts.append(trade)
            log.warning(
                "whale %s %s %s @ %s = %s notional (id %d)",
                trade.symbol, trade.side, format_decimal(trade.qty), format_decimal(trade.price),
                f"{notional:,.2f}", trade.id,
            )
