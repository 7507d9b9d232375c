"""Closed bars and whales as flat Redis stream fields: exact decimal strings, nothing run-relative.

A bar's ``cvd`` counts from when its writer started, so two collectors would disagree on it: the
stream carries the bar's own ``delta`` instead, which any reader sums from any point.

A footprint signal is two fields: ``kind`` and ``d``, its fields as JSON with exact decimal strings
(nested levels and profiles do not flatten); :func:`signal_of` reads one back exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..metrics import Bar, Whale
from ..models import Metric, format_decimal
from ..signalmetrics import signal_from_json, signal_json

__all__ = ["bar_fields", "signal_fields", "signal_of", "whale_fields"]


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


def signal_fields(signal: Metric) -> dict[str, str | bytes]:
    """A footprint signal (:mod:`~orderflow_plugin.signalmetrics`) as stream fields: ``kind`` and JSON ``d``."""
    return {"kind": signal.kind, "d": signal_json(signal)}


def signal_of(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Metric:
    """The signal a stream entry's fields hold (as redis-py returns them, bytes or decoded), exactly."""
    get = fields.get
    kind, data = get(b"kind") or get("kind"), get(b"d") or get("d")  # type: ignore[call-overload]
    if kind is None or data is None:
        raise ValueError(f"not a signal entry: fields {sorted(str(k) for k in fields)}")
    return signal_from_json(kind.decode() if isinstance(kind, bytes) else kind, data)
