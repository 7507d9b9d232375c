"""The pipeline's sink and the supervisors' event callback: it records, and checks as things arrive.

Invariant 1 (each id once, in increasing order) and the first half of 2 (a hole in delivery is
remembered until a report names exactly its ids) are checked per trade; a trade delivered into a
bar that was already closed, and a snapshot that disagrees with the trades delivered, are caught
the moment they happen. Every hook call is kept in the trace (``--seed S`` prints it).
"""

from __future__ import annotations

import re
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any

from ..errors import GaveUp
from ..models import Trade
from .invariants import Failure, Violation
from .known import KNOWN_BUGS

if TYPE_CHECKING:
    from .harness import Shard, Simulation

__all__ = ["Recorder"]

_EXACT = Context(prec=80)
_GIVEN_UP = re.compile(r"^(\w+): aggTrade ids (\d+)\.\.(\d+) \(\d+\) were not delivered")


class Recorder:
    """The pipeline's :class:`~orderflow_plugin.pipeline.Sink`: delivered trades, bars, reports and a trace."""

    def __init__(self, sim: Simulation, *, allow_known: bool = False) -> None:
        self.sim = sim
        self.allow_known = allow_known
        self.known: dict[str, int] = {}  # known bugs seen (and allowed): how often
        symbols = sim.world.symbols
        self.trades: dict[str, list[Trade]] = {s: [] for s in symbols}
        self.times: dict[str, list[float]] = {s: [] for s in symbols}
        self.last: dict[str, int | None] = dict.fromkeys(symbols)
        self.holes: list[tuple[str, int, int]] = []  # skipped in delivery, not reported yet
        self.gaps: dict[str, list[tuple[int, int]]] = {s: [] for s in symbols}  # reported as never delivered
        # Closed bars, with the CVD when each was emitted: before and after the trade being delivered.
        self.bars: dict[str, list[tuple[Any, tuple[Decimal, Decimal]]]] = {s: [] for s in symbols}
        self.cvd = dict.fromkeys(symbols, Decimal(0))
        self.cvd_before = dict.fromkeys(symbols, Decimal(0))  # before the last trade delivered
        self.trace: list[tuple[float, str, str]] = []
        self.counts = dict.fromkeys(("gaps", "given_up", "backfills", "errors", "connects", "stalls", "snapshots",
                                     "pauses", "revised"), 0)

    def fail(self, invariant: str, detail: str) -> None:
        """Stop the run: ``invariant`` is broken."""
        raise Failure(Violation(invariant, self.sim.now, self.sim.steps, detail))

    def known_bug(self, name: str, invariant: str, detail: str) -> None:
        """A known bug of the real code (:mod:`.known`) showed: counted if allowed, a failure otherwise."""
        if not self.allow_known or name not in KNOWN_BUGS:  # a fixed bug that shows again is a failure
            self.fail(invariant, f"{detail} [known bug {name}]")
        self.known[name] = self.known.get(name, 0) + 1

    # The sink

    def trade(self, trade: Trade) -> None:
        """A delivered trade (invariant 1 now; a hole is remembered until its report arrives)."""
        symbol, agg_id = trade.symbol, trade.id
        last = self.last[symbol]
        if last is not None and agg_id != last + 1:
            if agg_id <= last:
                self.fail("1 order", f"{symbol}: id {agg_id} delivered after id {last}")
            self.holes.append((symbol, last + 1, agg_id - 1))
        self.last[symbol] = agg_id
        self.trades[symbol].append(trade)
        self.times[symbol].append(self.sim.now)
        cvd = self.cvd_before[symbol] = self.cvd[symbol]
        self.cvd[symbol] = _EXACT.add(cvd, trade.qty) if trade.side == "buy" else _EXACT.subtract(cvd, trade.qty)

    def metric(self, metric: Any) -> None:
        """Bars are kept for invariant 6; a snapshot must agree with the trades delivered so far."""
        kind = metric.kind
        if kind == "bar":
            symbol = metric.symbol
            self.bars[symbol].append((metric, (self.cvd_before[symbol], self.cvd[symbol])))
            if metric.closed_by == "revised":
                self.counts["revised"] += 1
        elif kind == "snapshot":
            self.counts["snapshots"] += 1
            symbol = metric.symbol
            if metric.trades != len(self.trades[symbol]) or metric.cvd != self.cvd[symbol]:
                self.fail("6 metrics", f"{symbol}: snapshot says {metric.trades} trades, cvd {metric.cvd}; "
                                       f"{len(self.trades[symbol])} were delivered, cvd {self.cvd[symbol]}")

    def event(self, hook: str, **kwargs: Any) -> None:
        """A hook call from the pipeline (or the shell's own, from the harness)."""
        self.trace.append((self.sim.now, hook, _summary(kwargs)))
        if hook == "on_gap":
            self.counts["gaps"] += 1
        elif hook == "on_backfill":
            self.counts["backfills"] += 1
        elif hook == "on_error":
            self.counts["errors"] += 1
            lost_at = None
            if kwargs.get("where") == "sequence":
                self.counts["given_up"] += 1
                lost_at = self._given_up(str(kwargs["error"]))
            if self.sim.now > self.sim.world.quiet_after:
                self._quiet_error(kwargs, lost_at)

    def _quiet_error(self, kwargs: dict[str, Any], lost_at: float | None) -> None:
        """Invariant 7 for the pipeline's reports: once the faults have settled, only a hole made by a fault
        may still be reported (a trade missed in an outage is found when the next one arrives: for a quiet
        symbol, minutes later)."""
        stop = self.sim.world.faults.stop
        if lost_at is not None and lost_at < stop:
            return
        self.fail("7 false alarm",
                  f"on_error where={kwargs.get('where')} long after faults stopped: {kwargs.get('error')}")

    def supervisor_event(self, shard: Shard, hook: str, **kwargs: Any) -> None:
        """A hook call from ``shard``'s supervisor."""
        self.trace.append((self.sim.now, hook, f"shard {shard.number} " + _summary(kwargs)))
        if hook == "on_connect_attempt":
            self.counts["connects"] += 1
        elif hook == "on_stall":
            self.counts["stalls"] += 1
        elif hook == "on_error":
            self.counts["errors"] += 1
            if isinstance(kwargs.get("error"), GaveUp):
                shard.gave_up = True

    def _given_up(self, message: str) -> float:
        """Invariant 2: the report names exactly one hole that delivery skipped; when its first id was published."""
        match = _GIVEN_UP.match(message)
        if match is None:
            self.fail("2 gap report", f"a sequence report that names no ids: {message!r}")
        symbol, first, last = match.group(1), int(match.group(2)), int(match.group(3))
        hole = (symbol, first, last)
        if hole not in self.holes:
            self.fail("2 gap report", f"{symbol}: reported ids {first}..{last} as not delivered, but delivery "
                                      f"skipped {[h[1:] for h in self.holes if h[0] == symbol] or 'nothing'}")
        self.holes.remove(hole)
        self.gaps[symbol].append((first, last))
        timeline = self.sim.exchange.timelines[symbol]
        return timeline.times[first - timeline.first_id]


def _summary(kwargs: dict[str, Any]) -> str:
    parts = []
    for key, value in kwargs.items():
        if key in ("url", "stack", "stage_timings", "settings"):
            continue
        if isinstance(value, BaseException):
            value = f"{type(value).__name__}({str(value)[:160]})"
        elif isinstance(value, float):
            value = f"{value:.3f}"
        parts.append(f"{key}={value}")
    return " ".join(parts)
