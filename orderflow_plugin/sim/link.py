"""One connection relayed by the fault proxy: its two sockets, the tasks moving its bytes, and its record."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Link", "LinkRecord"]


@dataclass
class LinkRecord:
    """One relayed connection, numbered from 1 in order of accept."""

    number: int
    sent: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})  # bytes relayed
    writes: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})  # one per byte when trickling
    closed: str | None = None


class Link:
    """The two sockets of one relayed connection and the tasks moving its bytes."""

    def __init__(self, record: LinkRecord, sock: socket.socket, held: bool) -> None:
        self.record = record
        self.sock = sock  # the accepted socket; the client writer owns it once there is one
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.flowing = asyncio.Event()  # cleared while held
        if not held:
            self.flowing.set()
        self.next_free = {"up": 0.0, "down": 0.0}  # when the bandwidth cap lets the next piece go

    def cut(self, why: str, rst: bool = True) -> None:
        """Drop both sockets (with an RST when ``rst``) and stop the link's tasks."""
        if self.record.closed is None:
            self.record.closed = why
        for writer in self.writers:
            if writer.transport.is_closing():
                continue
            sock = writer.get_extra_info("socket")
            if rst and sock is not None:
                with contextlib.suppress(OSError, ValueError):  # uvloop: ValueError once its socket is gone
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks - {asyncio.current_task()}:
            task.cancel()
