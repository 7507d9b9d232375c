"""What a running stream shows its host: counters, health, the latest values, the recent trades (read-only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .loopclock import loop_time
from .models import Trade
from .pipeline import Pipeline
from .symbols import normalize_symbol

__all__ = ["FlowViews", "Life"]


@dataclass
class Life:
    """Where the stream is in its life: new, running, stopping, stopped; and when it started (loop time)."""

    state: str = "new"
    started_at: float = 0.0

    @property
    def running(self) -> bool:
        return self.state == "running"


class _Connections(Protocol):
    def health(self, now: float) -> list[dict[str, Any]]: ...
    def all_failed(self) -> bool: ...


class FlowViews:
    """The stream's read-only views over the parts it is passed; they change nothing."""

    def __init__(self, pipeline: Pipeline, counters: Mapping[str, int], *, life: Life, connections: _Connections,
                 feed: Any, hook_counts: Callable[[], dict[str, int]], listed: Mapping[str, str],
                 loop_lag: Callable[[], float | None]) -> None:
        self.pipeline = pipeline
        self.counters = counters
        self.life = life
        self.connections = connections  # the shard tasks (health, all_failed), empty with a Redis source
        self.feed = feed  # a RedisSource, or None
        self.hook_counts = hook_counts
        self.listed = listed
        self.loop_lag = loop_lag

    def summary(self) -> dict[str, Any]:
        """Counters of the run so far."""
        started_at = self.life.started_at
        return {
            **self.counters, **self.hook_counts(),
            "uptime_s": round(loop_time() - started_at, 3) if started_at else 0.0,
            **({"source": self.feed.summary()} if self.feed is not None else {}),
        }

    def health(self) -> dict[str, Any]:
        """A snapshot: state, each connection's stage and for how long, last trade age per symbol, counters."""
        now = loop_time()
        connections = self.connections.health(now) if self.feed is None else [self.feed.health()]
        symbols = self.pipeline.health(now)
        for symbol, entry in symbols.items():  # exchangeInfo's status: TRADING, BREAK..., "unknown", None unchecked
            entry["status"] = self.listed.get(symbol)
        lag = self.loop_lag()
        state = self.life.state
        if state == "running" and self.connections.all_failed():
            state = "failed"  # every connection gave up (max_attempts): nothing is streaming or retrying
        return {"state": state, "connections": connections, "symbols": symbols,
                "loop_lag_s": round(lag, 4) if lag is not None else None, **self.summary()}

    def latest(self, symbol: str) -> dict[str, Any]:
        """The newest trade, snapshot, whale and closed bar per window of ``symbol`` (safe from any thread)."""
        return dict(self.pipeline.latest[normalize_symbol(symbol)])

    def history(self, symbol: str, since: int | None = None) -> list[Trade]:
        """Delivered trades of ``symbol`` still in the bounded history, from trade time ``since`` (ms)."""
        return self.pipeline.trades_since(normalize_symbol(symbol), since)
