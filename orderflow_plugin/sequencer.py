"""Order trades by aggregate id, per symbol: deliver each id once, in increasing order.

Plain synchronous code, no I/O. The stream pushes every trade (live or backfilled) and acts
on the answer. Trades ahead of a hole are held until the hole is filled (:meth:`Sequencer.fill`,
from REST) or given up (:meth:`Sequencer.skip`); :meth:`Sequencer.drain` releases whatever has
become contiguous. The hole itself is derived from the state, never stored twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import Trade

__all__ = ["DELIVER", "DUPLICATE", "GAP", "HELD", "OVERFLOW", "READY", "Gap", "Sequencer"]

DELIVER = 0  # deliver this trade now
DUPLICATE = 1  # already delivered or already held: drop it
GAP = 2  # it opened a hole (see .gap) and is held
HELD = 3  # it is held behind the open hole
READY = 4  # it closed the front of the hole: call drain()
OVERFLOW = 5  # held, and more than max_held trades now wait: skip() the hole


@dataclass(frozen=True)
class Gap:
    """Aggregate ids ``first..last`` (inclusive) are missing for ``symbol``."""

    symbol: str
    first: int
    last: int

    @property
    def size(self) -> int:
        """How many ids are missing."""
        return self.last - self.first + 1


class Sequencer:
    """One symbol's ordering state: the next id expected and the trades held ahead of a hole."""

    __slots__ = ("_held", "duplicates", "expected", "max_held", "symbol")

    def __init__(self, symbol: str, *, start_after: int | None = None, max_held: int = 100_000) -> None:
        self.symbol = symbol
        # The next id to deliver; None until the first trade says where the stream starts.
        self.expected: int | None = None if start_after is None else start_after + 1
        self.max_held = max_held
        self.duplicates = 0
        self._held: dict[int, Trade] = {}

    @property
    def last_delivered(self) -> int | None:
        """The id of the last trade delivered, or None."""
        return None if self.expected is None else self.expected - 1

    @property
    def held(self) -> int:
        """How many trades wait behind the open hole."""
        return len(self._held)

    @property
    def gap(self) -> Gap | None:
        """The open hole: from the next expected id to just before the first held trade."""
        if not self._held or self.expected is None:
            return None
        return Gap(self.symbol, self.expected, min(self._held) - 1)

    def push(self, trade: Trade) -> int:
        """Take one trade; return DELIVER, DUPLICATE, GAP, HELD, READY or OVERFLOW."""
        agg_id = trade.id
        expected = self.expected
        if agg_id == expected and not self._held:
            self.expected = agg_id + 1
            return DELIVER
        if expected is None:  # the first trade: the stream starts here
            self.expected = agg_id + 1
            return DELIVER
        held = self._held
        if agg_id < expected or agg_id in held:
            self.duplicates += 1
            return DUPLICATE
        held[agg_id] = trade
        if agg_id == expected:
            return READY
        if len(held) > self.max_held:
            return OVERFLOW
        return GAP if len(held) == 1 else HELD

    def drain(self) -> list[Trade]:
        """Release the held trades that are now contiguous with what was delivered."""
        held = self._held
        expected = self.expected
        released = []
        while expected in held:
            released.append(held.pop(expected))
            expected += 1  # type: ignore[operator]
        self.expected = expected
        return released

    def fill(self, trades: list[Trade]) -> list[Trade]:
        """Add backfilled trades (any order, duplicates ignored); return what is now deliverable."""
        expected = self.expected
        held = self._held
        for trade in trades:
            if expected is None or trade.id >= expected:
                held.setdefault(trade.id, trade)
        if expected is None and held:
            self.expected = min(held)
        return self.drain()

    def restart(self) -> None:
        """Forget where the stream was: the next trade starts it again (nothing is held)."""
        self.expected = None
        self._held.clear()

    def skip(self) -> tuple[Gap | None, list[Trade]]:
        """Give up on the open hole; return it and the held trades now deliverable after it."""
        gap = self.gap
        if gap is None:
            return None, []
        self.expected = gap.last + 1
        return gap, self.drain()
