"""The simulated market's trades: tapes indexed by position, optionally looped, and paced.

A :class:`SymbolFeed` turns a tape into positions ``0, 1, 2, ...``; when looped, position
``k * len(tape) + j`` is row ``j`` with ids, trade ids and times shifted by ``k`` whole tapes,
so a 5,000-row tape plays as long as needed with contiguous, strictly increasing ids.
:func:`schedule` merges symbols into one timeline. Pure code, no I/O.
"""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..errors import TapeError
from ..tape import Tape, TapeRow

__all__ = ["Pace", "SymbolFeed", "schedule"]


@dataclass(frozen=True)
class Pace:
    """How fast the market plays: the tape's timing divided by ``speed``, a fixed ``rate``
    of trades per second, or (``asap``) as fast as the clients read.

    ``smooth`` spins instead of sleeping until the next trade is due, so frames go out one by one
    at their time instead of in the ~1 ms groups the event loop's timer allows (one core busy).
    """

    speed: float = 1.0
    rate: float | None = None
    asap: bool = False
    smooth: bool = False

    def __post_init__(self) -> None:
        if not self.speed > 0 or (self.rate is not None and not self.rate > 0):
            raise ValueError(f"pace needs speed > 0 and rate > 0, got speed={self.speed} rate={self.rate}")

    def describe(self) -> str:
        """A short human description."""
        if self.asap:
            return "as fast as clients read"
        if self.rate is not None:
            return f"{self.rate:g} trades/s{', smooth' if self.smooth else ''}"
        return f"{self.speed:g}x original timing{', smooth' if self.smooth else ''}"


class SymbolFeed:
    """One symbol's tape addressed by position, looped when ``loop`` is true."""

    def __init__(self, tape: Tape, *, loop: bool = False) -> None:
        rows = list(tape.rows)
        if not rows:
            raise TapeError(f"tape {tape.source}: no rows")
        ids = [row.id for row in rows]
        if any(b <= a for a, b in itertools.pairwise(ids)):
            raise TapeError(f"tape {tape.source}: aggregate ids are not strictly increasing")
        self.symbol = tape.symbol
        self.market = tape.market
        self.rows: list[TapeRow] = rows
        self.loop = loop
        self._ids = ids
        self._times = [row.time for row in rows]
        first, last = rows[0], rows[-1]
        self.first_time = first.time
        self.id_span = last.id - first.id + 1
        self.trade_span = last.last_id - first.first_id + 1
        # One average spacing between the end of one loop and the start of the next.
        spacing = math.ceil((last.time - first.time) / max(1, len(rows) - 1)) or 1
        self.time_span = last.time - first.time + spacing

    def __len__(self) -> int:
        """Positions in one pass of the tape."""
        return len(self.rows)

    @property
    def length(self) -> int | None:
        """How many positions there are, or None when looped (endless)."""
        return None if self.loop else len(self.rows)

    def row(self, position: int) -> TapeRow:
        """The trade at ``position``: the tape's row, shifted by whole tapes when looped."""
        if 0 <= position < len(self.rows):  # the first pass (every trade of a short run): the row itself
            return self.rows[position]
        k, j = divmod(position, len(self.rows))
        if k and not self.loop:
            raise IndexError(position)
        row = self.rows[j]
        if not k:
            return row
        dt = k * self.time_span
        return TapeRow(
            row.id + k * self.id_span,
            row.price,
            row.qty,
            row.first_id + k * self.trade_span,
            row.last_id + k * self.trade_span,
            row.time + dt,
            row.buyer_maker,
            (row.event_time or row.time) + dt,
            row.notional_qty,
        )

    def relative_ms(self, position: int) -> int:
        """Milliseconds from the tape's first trade to the trade at ``position``."""
        k, j = divmod(position, len(self.rows))
        return self._times[j] - self.first_time + k * self.time_span

    def position_of_id(self, agg_id: int) -> int:
        """The first position whose id is ``>= agg_id``."""
        k = max(0, (agg_id - self._ids[0]) // self.id_span) if self.loop else 0
        if k == 0 and agg_id <= self._ids[0]:
            return 0
        return k * len(self.rows) + bisect_left(self._ids, agg_id - k * self.id_span)

    def position_of_time(self, ms: int) -> int:
        """The first position whose trade time is ``>= ms``."""
        k = max(0, (ms - self.first_time) // self.time_span) if self.loop else 0
        return k * len(self.rows) + bisect_left(self._times, ms - k * self.time_span)


def schedule(feeds: Mapping[str, SymbolFeed], pace: Pace) -> Iterator[tuple[float, str, int]]:
    """Yield ``(seconds after start, symbol, position)`` for every trade, in time order."""
    if pace.asap or pace.rate is not None:
        interval = 0.0 if pace.asap or pace.rate is None else 1.0 / pace.rate
        count = 0
        for _, symbol, position in _merged(feeds):
            yield count * interval, symbol, position
            count += 1
        return
    for relative_ms, symbol, position in _merged(feeds):
        yield relative_ms / 1000.0 / pace.speed, symbol, position


def _merged(feeds: Mapping[str, SymbolFeed]) -> Iterator[tuple[int, str, int]]:
    """All symbols' positions ordered by relative time (each tape starts at time 0)."""
    heap = [(0, symbol, 0) for symbol in sorted(feeds)]
    heapq.heapify(heap)
    while heap:
        relative_ms, symbol, position = heapq.heappop(heap)
        yield relative_ms, symbol, position
        feed = feeds[symbol]
        following = position + 1
        if feed.length is None or following < feed.length:
            heapq.heappush(heap, (feed.relative_ms(following), symbol, following))
