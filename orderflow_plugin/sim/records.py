"""What the simulator did, connection by connection, for tests to assert on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .scenario import Fault

__all__ = ["ConnectionRecord", "SimRecord"]


@dataclass
class ConnectionRecord:
    """What happened on one WebSocket connection (numbered from 1 in order of upgrade requests)."""

    number: int
    path: str
    streams: list[str] = field(default_factory=list)
    upgraded: bool = False
    faults: tuple[Fault, ...] = ()
    fired: list[str] = field(default_factory=list)
    ids_sent: list[int] = field(default_factory=list)
    messages_sent: int = 0
    control: list[dict[str, Any]] = field(default_factory=list)
    pings_sent: int = 0
    pongs_received: int = 0
    closed: str | None = None


@dataclass
class SimRecord:
    """Everything the simulator did, for tests to assert on."""

    connections: list[ConnectionRecord] = field(default_factory=list)
    rest: list[tuple[str, int]] = field(default_factory=list)
    tcp_accepted: int = 0
    market_finished: bool = False
