"""Play a recorded tape through the plugins at a chosen speed: the offline path end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .dispatch import Dispatcher
from .models import Trade
from .tape import Tape

__all__ = ["ReplayStats", "TapeReplay"]


class ReplayStats:
    """Running totals of a replay, exact."""

    def __init__(self) -> None:
        self.trades = 0
        self.buy_volume = Decimal(0)
        self.sell_volume = Decimal(0)
        self.last: Trade | None = None

    def add(self, trade: Trade) -> None:
        """Count ``trade``."""
        self.trades += 1
        if trade.side == "buy":
            self.buy_volume += trade.qty
        else:
            self.sell_volume += trade.qty
        self.last = trade

    @property
    def delta(self) -> Decimal:
        """Taker buy volume minus taker sell volume."""
        return self.buy_volume - self.sell_volume


class TapeReplay:
    """Deliver a tape's trades to a dispatcher with the tape's own spacing divided by ``speed``."""

    def __init__(self, tape: Tape, *, speed: float = 1.0, duration: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.tape = tape
        self.speed = speed
        self.duration = duration
        self.stats = ReplayStats()

    async def run(self, dispatcher: Dispatcher, on_tick: Callable[[ReplayStats], Any] | None = None) -> ReplayStats:
        """Play until the tape ends or ``duration`` seconds pass; ``on_tick`` runs about once a second."""
        started = time.monotonic()
        deadline = started + self.duration if self.duration else float("inf")
        next_tick = started + 1.0
        first_time: int | None = None
        for trade in self.tape.trades():
            if first_time is None:
                first_time = trade.time
            due = started + (trade.time - first_time) / 1000.0 / self.speed
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return self.stats
                if on_tick is not None and now >= next_tick:
                    next_tick += 1.0
                    on_tick(self.stats)
                if now >= due:
                    break
                await asyncio.sleep(min(due, next_tick, deadline) - now)
            self.stats.add(trade)
            dispatcher.emit("on_trade", trade=trade)
            if self.stats.trades % 512 == 0:
                await asyncio.sleep(0)  # let async receivers and timers run during a fast replay
        return self.stats
