"""The values that flow to plugins: trades and metrics."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, Literal

import msgspec

__all__ = ["Market", "Metric", "Side", "Source", "Trade", "format_decimal"]

Side = Literal["buy", "sell"]
# live: from the stream; backfill: fetched over REST to fill a hole; replay: a previous run may have
# delivered it already (after a restart from a checkpoint), so an exactly-once sink checks it;
# archive: read from Binance's public archive (orderflow history).
Source = Literal["live", "backfill", "replay", "archive"]
Market = Literal["spot", "usdm"]


class Trade(msgspec.Struct, frozen=True, gc=False):
    """One Binance aggregate trade, with exact decimal price and quantity.

    ``side`` is the taker's side: ``"buy"`` when the taker bought (``m`` false),
    ``"sell"`` when the taker sold (``m`` true). ``time`` and ``event_time`` are
    milliseconds since the epoch.
    """

    symbol: str
    id: int
    price: Decimal
    qty: Decimal
    first_id: int
    last_id: int
    time: int
    side: Side
    event_time: int = 0
    market: Market = "spot"
    source: Source = "live"

    @property
    def notional(self) -> Decimal:
        """Price times quantity, exact."""
        return self.price * self.qty

    @property
    def trade_count(self) -> int:
        """How many underlying trades this aggregate trade stands for."""
        return self.last_id - self.first_id + 1

    def as_json(self) -> dict[str, Any]:
        """The stable JSON shape (decimals as exact strings) used by the CLI and the recorder."""
        return {
            "symbol": self.symbol,
            "id": self.id,
            "price": format_decimal(self.price),
            "qty": format_decimal(self.qty),
            "side": self.side,
            "time": self.time,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "source": self.source,
        }


class Metric(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every metric object; ``kind`` says which one it is (``bar``, ``whale``, ...)."""

    kind: ClassVar[str] = "metric"
    symbol: str


def format_decimal(value: Decimal) -> str:
    """Format ``value`` exactly, without exponent and without trailing zeros (``87648.21``)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
