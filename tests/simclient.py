"""Plain clients for simulator tests: websockets, and a raw socket for what websockets hides."""

from __future__ import annotations

import asyncio
import json
import struct

import websockets

from .flowhelpers import TIMEOUT_FACTOR

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def connect(sim, path: str = "/stream?streams=btcusdt@aggTrade", **kwargs):
    """A plain websockets client to ``path`` on the simulator."""
    kwargs.setdefault("open_timeout", 5)
    # An unbounded queue: a client that stops reading never sees the server's close frame behind
    # the trades still in flight, and its close() would wait out close_timeout.
    kwargs.setdefault("max_queue", None)
    return websockets.connect(f"{sim.ws_url}{path}", **kwargs)


async def recv_ids(ws, count: int, timeout: float = 5.0) -> list[int]:
    """Receive ``count`` aggTrade messages and return their ids (fail after ``timeout`` s, times TIMEOUT_FACTOR)."""
    ids = []
    async with asyncio.timeout(timeout * TIMEOUT_FACTOR):
        while len(ids) < count:
            message = json.loads(await ws.recv())
            event = message.get("data", message)
            if event.get("e") == "aggTrade":
                ids.append(event["a"])
    return ids


async def raw_open(sim, path: str = "/ws/btcusdt@aggTrade", *, upgrade: bool = True):
    """Open a TCP connection and send an HTTP upgrade (or plain GET) request."""
    reader, writer = await asyncio.open_connection(sim.host, sim.port)
    request = UPGRADE.format(path=path) if upgrade else f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one unmasked server frame: (opcode, payload)."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return head[0] & 0x0F, await reader.readexactly(length)
