"""Adapters that put the order flow on a trading framework's own event bus.

Each adapter is a module of its own and imports its framework, so importing this package needs
none: ``orderflow_plugin.adapters.vnpy`` needs vn.py (``pip install 'orderflow-plugin[vnpy]'``),
``orderflow_plugin.adapters.nautilus`` nautilus_trader and Python >= 3.12 (``[nautilus]``).
See docs/frameworks.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HealthHooks"]


class HealthHooks:
    """The stream's gap, backfill and stall hooks as one call, ``_health(symbol, kind, message, **fields)``,
    which each adapter's publisher implements for its framework."""

    def _health(self, symbol: str, kind: str, message: str, **fields: Any) -> None:
        raise NotImplementedError

    def on_gap(self, symbol: str, first_missing: int, last_missing: int) -> None:
        self._health(symbol, "gap", f"{symbol}: ids {first_missing}..{last_missing} missed live",
                     first_id=first_missing, last_id=last_missing)

    def on_backfill(self, symbol: str, first_id: int, last_id: int, count: int) -> None:
        self._health(symbol, "backfill", f"{symbol}: ids {first_id}..{last_id} backfilled over REST ({count})",
                     first_id=first_id, last_id=last_id, count=count)

    def on_stall(self, symbols: tuple[str, ...], silent_for: float, stage: str, stack: str) -> None:
        for symbol in symbols:
            self._health(symbol, "stall", f"{symbol}: no progress for {silent_for:.1f} s in {stage}", where=stage)
