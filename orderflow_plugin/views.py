"""What a running stream shows its host: counters, health, the latest values, the recent trades (read-only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .loopclock import loop_time
from .models import Trade
from .symbols import normalize_symbol

if TYPE_CHECKING:
    from .stream import OrderFlow

__all__ = ["FlowViews"]


class FlowViews:
    """OrderFlow's read-only views (a mixin: they read the stream's pipeline, shards, feed and counters)."""

    def summary(self: OrderFlow) -> dict[str, Any]:
        """Counters of the run so far."""
        return {
            **self.counters,
            "plugin_errors": self.dispatcher.plugin_errors, "slow_hooks": self.dispatcher.slow_calls,
            "uptime_s": round(loop_time() - self._started_at, 3) if self._started_at else 0.0,
            **({"source": self.feed.summary()} if self.feed is not None else {}),
        }

    def health(self: OrderFlow) -> dict[str, Any]:
        """A snapshot: state, each connection's stage and for how long, last trade age per symbol, counters."""
        now = loop_time()
        connections = [self._connection_health(shard, now) for shard in self._shards] if self.feed is None \
            else [self.feed.health()]
        symbols = self.pipeline.health(now)
        for symbol, entry in symbols.items():  # exchangeInfo's status: TRADING, BREAK..., "unknown", None unchecked
            entry["status"] = self.listed.get(symbol)
        lag = round(self.watchdog.lag, 4) if self.watchdog is not None else None
        state = self._state
        if state == "running" and self._shards and all(shard.machine.state == "failed" for shard in self._shards):
            state = "failed"  # every connection gave up (max_attempts): nothing is streaming or retrying
        return {"state": state, "connections": connections, "symbols": symbols, "loop_lag_s": lag,
                **self.summary()}

    def latest(self: OrderFlow, symbol: str) -> dict[str, Any]:
        """The newest trade, snapshot, whale and closed bar per window of ``symbol`` (safe from any thread)."""
        return dict(self.pipeline.latest[normalize_symbol(symbol)])

    def history(self: OrderFlow, symbol: str, since: int | None = None) -> list[Trade]:
        """Delivered trades of ``symbol`` still in the bounded history, from trade time ``since`` (ms)."""
        return self.pipeline.trades_since(normalize_symbol(symbol), since)
