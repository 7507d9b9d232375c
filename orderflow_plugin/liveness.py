"""How long each symbol may be silent before its feed is checked: learned from its own recent gaps.

Plain code with no I/O and no clock of its own: every method takes ``now`` (monotonic seconds).
A busy symbol learns a short deadline (a silent stream is found in seconds), a quiet one a long
one (a quiet market is never mistaken for a dead feed); ``floor`` and ``ceiling`` bound both.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["GAP_WINDOW", "QUIET_CHECKS", "TRADE_GRACE", "Liveness", "no_new_trades"]

GAP_WINDOW = 120.0  # seconds a learned longest gap is remembered (one to two windows)
_FACTOR = 1.0  # deadline = longest recent gap x factor + margin
QUIET_CHECKS = 5  # symbols of a connection asked about at most when its first trade is late
TRADE_GRACE = 0.5  # seconds a trade REST already shows may take to reach us before the stream counts as dead


def no_new_trades(before: dict[str, int | None], after: dict[str, int | None]) -> bool:
    """REST's newest id of each symbol did not move between two looks: a connection that got no trade in
    between is on a quiet market, not a dead stream (ids, not times: no clock of ours is compared with the
    exchange's). A look that could not be made says nothing is known: not quiet."""
    return bool(before) and before.keys() == after.keys() and all(after[s] == before[s] for s in before)
_MARGIN = 0.5


class Liveness:
    """Each symbol's last delivery time and longest gap between deliveries, this window and the last."""

    def __init__(self, symbols: Iterable[str], *, floor: float, ceiling: float) -> None:
        self.symbols = tuple(symbols)
        self.floor = floor
        self.ceiling = ceiling
        self.last_at: dict[str, float] = {}  # symbol -> when its last trade was delivered
        self.baseline: dict[str, int] = {}  # symbol -> REST's newest id when a connection opened without a trade
        self._gap_now = dict.fromkeys(self.symbols, 0.0)
        self._gap_before = dict.fromkeys(self.symbols, 0.0)
        self._window_ends = 0.0

    def delivered(self, symbol: str, now: float, live: bool) -> None:
        """A trade of ``symbol`` was delivered at ``now``; a backfilled one's gap spans an outage, not the market."""
        last = self.last_at.get(symbol)
        if live and last is not None and now - last > self._gap_now[symbol]:
            self._gap_now[symbol] = now - last
        self.last_at[symbol] = now

    def roll(self, now: float) -> None:
        """Start a new learning window when the current one is over."""
        if now >= self._window_ends:
            self._window_ends = now + GAP_WINDOW
            self._gap_before, self._gap_now = self._gap_now, dict.fromkeys(self.symbols, 0.0)

    def deadline(self, symbol: str) -> float:
        """Seconds without a trade after which ``symbol``'s feed is checked."""
        learned = max(self._gap_now[symbol], self._gap_before[symbol])
        if not learned:
            return self.ceiling
        return min(self.ceiling, max(self.floor, learned * _FACTOR + _MARGIN))
