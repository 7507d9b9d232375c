"""Binance frames, byte for byte: aggTrade payloads, envelopes, and raw WebSocket text frames.

Pure functions with no I/O. Field order and decimal strings are Binance's own:
spot ``{"e","E","s","a","p","q","f","l","T","m","M"}``; USD-M futures
``{"e","E","a","s","p","q","nq","f","l","T","m","st"}``.
"""

from __future__ import annotations

import struct

from ..models import Market
from ..tape import TapeRow

__all__ = ["aggtrade_payload", "combined", "server_shutdown", "text_frame", "trade_row_json"]

_HEAD_SMALL = struct.Struct("!BB")
_HEAD_MEDIUM = struct.Struct("!BBH")
_HEAD_LARGE = struct.Struct("!BBQ")
_FIN_TEXT = 0x81


def aggtrade_payload(market: Market, symbol: str, row: TapeRow) -> bytes:
    """The raw aggTrade event for ``row`` as Binance sends it for ``market``."""
    maker = "true" if row.buyer_maker else "false"
    event_time = row.event_time or row.time
    if market == "spot":
        return (
            f'{{"e":"aggTrade","E":{event_time},"s":"{symbol}","a":{row.id},"p":"{row.price}","q":"{row.qty}",'
            f'"f":{row.first_id},"l":{row.last_id},"T":{row.time},"m":{maker},"M":true}}'
        ).encode()
    return (
        f'{{"e":"aggTrade","E":{event_time},"a":{row.id},"s":"{symbol}","p":"{row.price}","q":"{row.qty}",'
        f'"nq":"{row.notional_qty or row.qty}","f":{row.first_id},"l":{row.last_id},"T":{row.time},'
        f'"m":{maker},"st":1}}'
    ).encode()


def trade_row_json(market: Market, row: TapeRow) -> str:
    """``row`` as one row of a REST ``aggTrades`` response (spot has ``M``, futures has ``nq``)."""
    maker = "true" if row.buyer_maker else "false"
    if market == "spot":
        return (
            f'{{"a":{row.id},"p":"{row.price}","q":"{row.qty}","f":{row.first_id},"l":{row.last_id},'
            f'"T":{row.time},"m":{maker},"M":true}}'
        )
    return (
        f'{{"a":{row.id},"p":"{row.price}","q":"{row.qty}","nq":"{row.notional_qty or row.qty}",'
        f'"f":{row.first_id},"l":{row.last_id},"T":{row.time},"m":{maker}}}'
    )


def combined(stream: str, payload: bytes) -> bytes:
    """Wrap ``payload`` as a combined-stream event ``{"stream":...,"data":...}``."""
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


def server_shutdown(event_time: int, *, wrapped: bool) -> bytes:
    """The ``serverShutdown`` event, raw or in its combined envelope (stream ``!serverShutdown``)."""
    payload = f'{{"e":"serverShutdown","E":{event_time}}}'.encode()
    return combined("!serverShutdown", payload) if wrapped else payload


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (what a server sends) carrying ``payload``."""
    length = len(payload)
    if length < 126:
        return _HEAD_SMALL.pack(_FIN_TEXT, length) + payload
    if length < 65536:
        return _HEAD_MEDIUM.pack(_FIN_TEXT, 126, length) + payload
    return _HEAD_LARGE.pack(_FIN_TEXT, 127, length) + payload
