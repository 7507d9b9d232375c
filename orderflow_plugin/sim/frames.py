"""Binance frames, byte for byte: aggTrade payloads, envelopes, raw WebSocket text frames, the
stream URL grammar and JSON HTTP answers.

Pure functions with no I/O. Field order and decimal strings are Binance's own:
spot ``{"e","E","s","a","p","q","f","l","T","m","M"}``; USD-M futures
``{"e","E","a","s","p","q","nq","f","l","T","m","st"}``.
"""

from __future__ import annotations

import struct
from http import HTTPStatus
from urllib.parse import parse_qs

from websockets.datastructures import Headers
from websockets.http11 import Response

from ..models import Market
from ..tape import TapeRow

__all__ = [
    "aggtrade_payload", "combined", "json_response", "parse_target", "server_shutdown", "text_frame", "trade_row_json",
]

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


def json_response(status: int, body: bytes, headers: list[tuple[str, str]]) -> Response:
    """A JSON HTTP answer as Binance sends it, ``headers`` after its own; the connection closes after it."""
    return Response(status, HTTPStatus(status).phrase, Headers([
        ("Content-Type", "application/json;charset=UTF-8"), ("Connection", "close"),
        ("Content-Length", str(len(body))), *headers]), body)


def parse_target(target: str, max_streams: int) -> tuple[list[str], bool, str | None]:
    """Streams and envelope style of ``/ws``, ``/ws/<stream>``, ``/stream?streams=a/b`` (optionally
    under the futures ``/market`` route); or a problem to answer with 400."""
    path, _, query = target.partition("?")
    path = path.removeprefix("/market")
    if path in ("/ws", "/ws/"):
        return [], False, None
    if path.startswith("/ws/"):
        streams = [s for s in path.removeprefix("/ws/").split("/") if s]
        wrapped = False
    elif path in ("/stream", "/stream/"):
        streams = [s for s in parse_qs(query).get("streams", [""])[0].split("/") if s]
        wrapped = True
    else:
        return [], False, f"Invalid path {path}"
    if len(streams) > max_streams:
        return [], False, f"Too many streams: {len(streams)} > {max_streams}"
    return streams, wrapped, None
