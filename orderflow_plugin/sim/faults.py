"""The fault engine: what scripted faults do to a connection's upgrade, its trades and REST answers.

A :class:`ConnectionFaults` is made per WebSocket connection from the faults its scenario gives
it. The connection asks it at the upgrade and offers it every trade; it decides, and acts only
through the few :class:`FaultTarget` methods a connection has (queue a trade, send a raw frame,
close, reset, blackhole), so it never touches a transport, a socket or the market.
:func:`rest_answer` is the same for one REST request. The slow writers (:class:`SlowDrip`,
:func:`drip_answer`) are the exception: writing slowly is their fault.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol
from urllib.parse import parse_qs

from .frames import server_shutdown
from .rest import RestApi, RestResponse
from .scenario import Fault

__all__ = ["ConnectionFaults", "FaultTarget", "SlowDrip", "drip_answer", "rest_answer"]

# Faults that answer the upgrade request instead of the normal handshake.
_HANDSHAKE_FAULTS = ("hang_before_handshake", "http_status", "slow_handshake")


class FaultTarget(Protocol):
    """What the fault engine may do to its connection."""

    def fired(self, fault: Fault) -> None:
        """Record that ``fault`` acted."""

    def queue(self, message: bytes, agg_id: int) -> None:
        """Queue one trade message, counted as sent."""

    def send_raw(self, message: bytes) -> None:
        """Queue one text frame that is not a trade (a notice, a bad frame)."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake."""

    def reset(self) -> None:
        """Abort with a TCP RST after what was already queued."""

    def blackhole(self) -> None:
        """Go silent with the TCP connection left open."""

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task that ends with the connection."""


class ConnectionFaults:
    """The faults of one WebSocket connection, played against its upgrade and its trades."""

    def __init__(self, faults: tuple[Fault, ...], target: FaultTarget) -> None:
        self.faults = faults
        self.slow_drip = next((f for f in faults if f.kind == "slow_drip"), None)
        self._target = target
        self._wrapped = False  # serverShutdown comes in the connection's envelope
        self._offered = 0
        self._recent: deque[tuple[bytes, int]] = deque(maxlen=1000)  # what duplicate_ids sends again
        self._held: list[tuple[bytes, int]] = []  # out_of_order's trades, sent reversed once all are in

    # The upgrade

    def handshake(self) -> Fault | None:
        """The fault that answers the upgrade request instead of the handshake (fired), or None."""
        for fault in self.faults:
            if fault.kind in _HANDSHAKE_FAULTS:
                self._target.fired(fault)
                return fault
        return None

    def upgraded(self, wrapped: bool) -> bool:
        """Called before subscribing: True (and hang_after_handshake fired) when no trade may be sent."""
        self._wrapped = wrapped
        hang = next((f for f in self.faults if f.kind == "hang_after_handshake"), None)
        if hang is not None:
            self._target.fired(hang)
        return hang is not None

    def subscribed(self) -> None:
        """Called after the first subscription: start the max_age clocks."""
        for fault in self.faults:
            if fault.kind == "max_age":
                self._target.spawn(self._close_later(fault, "max connection age"))

    # The trades

    def offer(self, message: bytes, agg_id: int) -> None:
        """Play the faults against the next trade, then queue it unless a fault took it."""
        if not self._apply(message, agg_id):
            self._queue(message, agg_id)

    def _queue(self, message: bytes, agg_id: int) -> None:
        self._recent.append((message, agg_id))
        self._target.queue(message, agg_id)

    def _apply(self, message: bytes, agg_id: int) -> bool:
        """Act on this trade; return True when it must not be queued as usual."""
        target = self._target
        offered = self._offered
        self._offered += 1
        for fault in self.faults:
            kind, after = fault.kind, fault.after
            if kind == "reset_after" and offered == after:
                target.fired(fault)
                target.reset()
                return True
            if kind == "close_after" and offered == after:
                target.fired(fault)
                target.close(fault.code, fault.reason or "simulated close")
                return True
            if kind == "mute_after" and offered >= after:
                if offered == after:
                    target.fired(fault)
                return True
            if kind == "blackhole_after" and offered == after:
                target.fired(fault)
                target.blackhole()
                return True
            if kind == "server_shutdown_after" and offered == after:
                target.fired(fault)
                target.send_raw(server_shutdown(int(time.time() * 1000), wrapped=self._wrapped))
                target.spawn(self._close_later(fault, "server shutdown"))
            elif kind == "skip_ids" and after <= offered < after + fault.count:
                if offered == after:
                    target.fired(fault)
                return True
            elif kind == "duplicate_ids" and offered == after:
                target.fired(fault)
                for old, old_id in list(self._recent)[-fault.count:]:
                    self._queue(old, old_id)
            elif kind == "out_of_order" and after <= offered < after + fault.count:
                self._held.append((message, agg_id))
                if len(self._held) == fault.count:
                    target.fired(fault)
                    for held, held_id in reversed(self._held):
                        self._queue(held, held_id)
                    self._held.clear()
                return True
            elif kind == "malformed_after" and offered == after:
                target.fired(fault)
                target.send_raw(_malformed(fault.variant, message))
            elif kind == "oversized_frame" and offered == after:
                target.fired(fault)
                pad = fault.size - 24
                target.send_raw(b'{"e":"aggTrade","pad":"' + b"x" * max(0, pad) + b'"}')
        return False

    async def _close_later(self, fault: Fault, reason: str) -> None:
        """Close with 1001 ``fault.seconds`` from now (max_age fires then; a shutdown fired at its notice)."""
        await asyncio.sleep(fault.seconds)
        if fault.kind == "max_age":
            self._target.fired(fault)
        self._target.close(1001, reason)


class SlowDrip:
    """A slow_drip connection's writer: every byte goes out ``size`` at a time, ``seconds`` apart."""

    def __init__(self, fault: Fault, transport: asyncio.Transport, target: FaultTarget) -> None:
        self.fault = fault
        self._transport = transport
        self._target = target
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        """Add ``data`` to the drip; each time the buffer refills the fault fires again."""
        if not self._buffer:
            self._target.spawn(self._drip())
        self._buffer += data

    async def _drip(self) -> None:
        fault = self.fault
        self._target.fired(fault)
        while self._buffer:
            chunk = bytes(self._buffer[: fault.size])
            del self._buffer[: fault.size]
            self._transport.write(chunk)
            await asyncio.sleep(fault.seconds)


def rest_answer(api: RestApi, fault: Fault | None, path: str, query: str) -> RestResponse | None:
    """What a REST request gets under ``fault``: None when it is never answered (rest_hang)."""
    if fault is not None and fault.kind == "rest_hang":
        return None
    if fault is not None and fault.kind == "rest_status":  # the request costs no weight: the API never sees it
        status = fault.status
        body = {"code": -1003 if status == 429 else -1000, "msg": f"simulated HTTP {status}"}
        headers = [] if fault.retry_after is None else [("Retry-After", str(fault.retry_after))]
        return RestResponse(status, json.dumps(body).encode(), headers)
    max_rows = None
    if fault is not None and fault.kind in ("rest_short_page", "rest_empty"):
        max_rows = fault.after if fault.kind == "rest_short_page" else 0
    return api.handle(path, parse_qs(query), max_rows=max_rows)


async def drip_answer(transport: asyncio.Transport, data: bytes, fault: Fault) -> None:
    """rest_slow_body: write a REST answer ``fault.size`` bytes at a time, ``fault.seconds`` apart, then close."""
    for start in range(0, len(data), fault.size):
        if transport.is_closing():
            return
        transport.write(data[start : start + fault.size])
        await asyncio.sleep(fault.seconds)
    transport.close()


def _malformed(variant: str, message: bytes) -> bytes:
    """The bad frame malformed_after sends before the trade: ``message`` spoiled as ``variant`` says."""
    if variant == "truncated":
        return message[: len(message) // 2]
    if variant == "not_json":
        return b"<html>502 Bad Gateway</html>"
    # valid JSON, wrong types: the id as a string, the price as a number
    data = json.loads(message)
    event = data.get("data", data)
    event["a"], event["p"] = str(event["a"]), float(event["p"])
    return json.dumps(data, separators=(",", ":")).encode()
