"""Where the feed lives in Redis, and the shape of an entry: one place for both sides.

Every symbol's trades are one stream, ``orderflow:{market}:{SYMBOL}:trades``, whose entry ids are
the aggregate trade ids (``<aggId>-0``; ``0-1`` for the id 0, which Redis refuses as ``0-0``). Ids
only grow, so Redis itself refuses a second write of a trade: no dedup window, and "from trade X"
is an ``XRANGE``. The metrics have their own streams, also keyed by what they describe: a closed
bar by its window start, a whale by its trade id, a gap by its first missing id.

Each trade entry has one field, ``d``: the aggTrade event as Binance sends it (decimals as the
exchange's strings), so a consumer decodes it with the same strict decoder as a live frame and a
non-Python reader meets a familiar shape.
"""

from __future__ import annotations

from ..models import Trade

__all__ = [
    "bars_key",
    "entry_id",
    "gaps_key",
    "health_key",
    "trade_id",
    "trade_payload",
    "trades_key",
    "whales_key",
]


def trades_key(market: str, symbol: str) -> str:
    """The stream of ``symbol``'s gap-free trades."""
    return f"orderflow:{market}:{symbol}:trades"


def bars_key(market: str, symbol: str, window: str) -> str:
    """The stream of ``symbol``'s closed bars of ``window`` (entry id: the window start, ms)."""
    return f"orderflow:{market}:{symbol}:bars:{window}"


def whales_key(market: str, symbol: str) -> str:
    """The stream of ``symbol``'s whale trades (entry id: the trade id)."""
    return f"orderflow:{market}:{symbol}:whales"


def gaps_key(market: str, symbol: str) -> str:
    """The stream of holes no collector could fill (entry id: the first missing trade id)."""
    return f"orderflow:{market}:{symbol}:gaps"


def health_key(market: str) -> str:
    """Each collector's connection events (auto ids: these are per collector, not per trade)."""
    return f"orderflow:{market}:health"


def entry_id(number: int) -> str:
    """The stream entry id for trade id (or window start) ``number``."""
    return f"{number}-0" if number else "0-1"


def trade_id(entry: bytes | str) -> int:
    """The trade id (or window start) an entry id stands for."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.partition("-")[0])


def trade_payload(trade: Trade) -> bytes:
    """``trade`` as the raw aggTrade event, which :class:`~orderflow_plugin.decode.Decoder` reads back exactly."""
    maker = "true" if trade.side == "sell" else "false"
    return (
        f'{{"e":"aggTrade","E":{trade.event_time or trade.time},"s":"{trade.symbol}","a":{trade.id},'
        f'"p":"{trade.price:f}","q":"{trade.qty:f}","f":{trade.first_id},"l":{trade.last_id},"T":{trade.time},'
        f'"m":{maker}}}'
    ).encode()
