"""Where the feed lives in Redis, and the shape of an entry: one place for both sides.

Every symbol's trades are one stream, ``orderflow:{spot:BTCUSDT}:trades``, whose entry ids are
the aggregate trade ids (``<aggId>-0``; ``0-1`` for the id 0, which Redis refuses as ``0-0``). Ids
only grow, so Redis itself refuses a second write of a trade: no dedup window, and "from trade X"
is an ``XRANGE``. The metrics have their own streams, also keyed by what they describe: a closed
bar by its window start, a whale by its trade id, a gap by its first missing id. The footprint
signals of a closed bar are keyed ``<bar start>-<k>`` in ``signals:{window}``, the others (sweeps,
tape speed, sessions, naked POCs listed and touched) ``<trade id>-<k>`` in ``signals``, after the
trade they followed: ``k`` counts from 1 in the order the stream emitted them.

Each trade entry has one field, ``d``: the aggTrade event as Binance sends it (decimals as the
exchange's strings), so a consumer decodes it with the same strict decoder as a live frame and a
non-Python reader meets a familiar shape.

Every key of one symbol carries the hash tag ``{market:SYMBOL}``, so in a Redis Cluster they share
one slot: the append script and a bot's reads of one symbol touch one node. Before this layout the
keys were ``orderflow:spot:BTCUSDT:trades`` and the like (:func:`legacy_key`); ``python -m
orderflow_plugin.redisbus.migrate URL`` renames them once.
"""

from __future__ import annotations

from ..models import Trade

__all__ = [
    "SUFFIXES",
    "bars_key",
    "entry_id",
    "gaps_key",
    "health_key",
    "legacy_key",
    "signals_key",
    "symbol_tag",
    "trade_id",
    "trade_payload",
    "trades_key",
    "whales_key",
]


# What follows the symbol's tag in its keys (bars:{window} for each window).
SUFFIXES = ("trades", "whales", "gaps", "bars:")


def symbol_tag(market: str, symbol: str) -> str:
    """The hash tag all of ``symbol``'s keys share: one Redis Cluster slot per symbol."""
    return f"{{{market}:{symbol}}}"


def trades_key(market: str, symbol: str) -> str:
    """The stream of ``symbol``'s gap-free trades."""
    return f"orderflow:{symbol_tag(market, symbol)}:trades"


def bars_key(market: str, symbol: str, window: str) -> str:
    """The stream of ``symbol``'s closed bars of ``window`` (entry id: the window start, ms)."""
    return f"orderflow:{symbol_tag(market, symbol)}:bars:{window}"


def whales_key(market: str, symbol: str) -> str:
    """The stream of ``symbol``'s whale trades (entry id: the trade id)."""
    return f"orderflow:{symbol_tag(market, symbol)}:whales"


def gaps_key(market: str, symbol: str) -> str:
    """The stream of holes no collector could fill (entry id: the first missing trade id)."""
    return f"orderflow:{symbol_tag(market, symbol)}:gaps"


def signals_key(market: str, symbol: str, window: str | None = None) -> str:
    """The stream of ``symbol``'s footprint signals of ``window``'s closed bars, or (None) of its trades."""
    return f"orderflow:{symbol_tag(market, symbol)}:signals" + (f":{window}" if window else "")


def legacy_key(key: str) -> str:
    """The name ``key`` had before keys carried a hash tag: ``orderflow:{spot:BTCUSDT}:trades`` was
    ``orderflow:spot:BTCUSDT:trades`` (a key with no tag is returned as it is)."""
    head, brace, rest = key.partition("{")
    if not brace:
        return key
    tag, _, tail = rest.partition("}")
    return f"{head}{tag}{tail}"


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
