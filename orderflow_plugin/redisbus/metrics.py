"""Closed bars and whales as flat Redis stream fields: exact decimal strings, nothing run-relative.

A bar's ``cvd`` counts from when its writer started, so two collectors would disagree on it: the
stream carries the bar's own ``delta`` instead, which any reader sums from any point.
"""

from __future__ import annotations

import msgspec

from ..metrics import Bar, Whale
from ..models import format_decimal

__all__ = ["bar_fields", "whale_fields"]


def bar_fields(bar: Bar) -> dict[str, str | int]:
    """``bar`` as stream fields; the footprint, when on, as JSON ``[[price, buy, sell], ...]``."""
    fields: dict[str, str | int] = {
        "window": bar.window, "start": bar.start, "end": bar.end,
        "open": format_decimal(bar.open), "high": format_decimal(bar.high), "low": format_decimal(bar.low),
        "close": format_decimal(bar.close), "buy_volume": format_decimal(bar.buy_volume),
        "sell_volume": format_decimal(bar.sell_volume), "delta": format_decimal(bar.delta),
        "buy_notional": format_decimal(bar.buy_notional), "sell_notional": format_decimal(bar.sell_notional),
        "trades": bar.trades, "trade_count": bar.trade_count, "largest_qty": format_decimal(bar.largest_qty),
        "largest_id": bar.largest_id, "closed_by": bar.closed_by,
    }
    if bar.footprint is not None:
        levels = [[format_decimal(p), format_decimal(b), format_decimal(s)] for p, b, s in bar.footprint.levels]
        fields["footprint"] = msgspec.json.encode(levels).decode()
    return fields


def whale_fields(whale: Whale) -> dict[str, str | int]:
    """``whale`` as stream fields: its trade, notional and the rule it met."""
    trade = whale.trade
    return {
        "id": trade.id, "price": format_decimal(trade.price), "qty": format_decimal(trade.qty), "side": trade.side,
        "time": trade.time, "notional": format_decimal(whale.notional), "rule": whale.rule,
        "threshold": format_decimal(whale.threshold),
    }
