"""Frames to values: strict, exact, schema-checked decoding of Binance combined-stream frames.

Plain synchronous code with no I/O. A frame is an aggTrade event, a ``serverShutdown``
notice, or a reply to a control message; anything else (not JSON, wrong types, missing
fields, an unknown event) raises :class:`BadFrame` with a short sample of the frame. A price or
quantity must be a plain decimal with at most 8 decimals below ``fixed.LIMIT`` (what the engine's
fixed-point sums take): anything else is a bad frame, never a rounding.
"""

from __future__ import annotations

from sys import intern
from typing import Any

import msgspec

from .errors import BadFrame
from .fixed import decimal
from .models import Market, Trade

__all__ = ["Decoder", "Reply", "ServerShutdown"]


class _AggTrade(msgspec.Struct, tag_field="e", tag="aggTrade", gc=False):
    E: int
    s: str
    a: int
    p: str  # decimals arrive as strings; a JSON number here is a bad frame, not a rounded price
    q: str
    f: int
    l: int  # noqa: E741 - Binance's field name
    T: int
    m: bool


class ServerShutdown(msgspec.Struct, tag_field="e", tag="serverShutdown", gc=False):
    """Binance will close this connection soon: replace it now."""

    E: int = 0


class _Envelope(msgspec.Struct, gc=False):
    data: _AggTrade | ServerShutdown  # "stream" (always first: see decode) is skipped, not made a str


class Reply(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """The answer to a control message such as SUBSCRIBE (``result`` or ``error``, and the ``id``)."""

    id: int | None
    result: Any = None
    error: Any = None


_SAMPLE = 200


class Decoder:
    """Decode combined-stream frames of one market into :class:`Trade`, ServerShutdown or Reply."""

    def __init__(self, market: Market = "spot") -> None:
        self.market: Market = market
        self._envelope = msgspec.json.Decoder(_Envelope)
        self._raw = msgspec.json.Decoder(_AggTrade | ServerShutdown)
        self._reply = msgspec.json.Decoder(Reply)

    def decode(self, frame: bytes | str) -> Trade | ServerShutdown | Reply:
        """Decode one frame; raise BadFrame when it is not one Binance would send."""
        try:
            if frame[:10] in (b'{"stream":', '{"stream":'):
                data = self._envelope.decode(frame).data
            elif frame[:5] in (b'{"e":', '{"e":'):  # a raw-stream event, unwrapped
                data = self._raw.decode(frame)
            else:
                return self._reply.decode(frame)
            if type(data) is _AggTrade:
                # A repeated price or quantity builds no Decimal (fixed.decimal remembers them).
                return Trade(
                    intern(data.s), data.a, decimal(data.p), decimal(data.q), data.f, data.l, data.T,
                    "sell" if data.m else "buy", data.E, self.market,
                )
            return data
        except (msgspec.DecodeError, ArithmeticError) as exc:  # msgspec.ValidationError is a DecodeError
            sample = frame[:_SAMPLE] if isinstance(frame, str) else frame[:_SAMPLE].decode("utf-8", "replace")
            raise BadFrame(f"{exc} in frame {sample!r}{'...' if len(frame) > _SAMPLE else ''}") from exc
