"""Diagnostics: log every lifecycle event in one readable line, with timings.

Settings (``[default.hooks.diagnostics]``): ``enabled`` (default true).
Logger: ``orderflow_hooks.diagnostics`` (INFO for progress, WARNING for trouble).
Trades and metrics are not logged here: one line per trade would drown the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["Diagnostics"]

log = logging.getLogger("orderflow_hooks.diagnostics")


class Diagnostics:
    """The ``diagnostics`` plugin."""

    def __init__(self) -> None:
        self.enabled = True

    def on_startup(self, settings: Any) -> None:
        self.enabled = settings.hooks.diagnostics.enabled
        if self.enabled:
            log.info("starting: symbols %s, market %s, env %s", ", ".join(settings.symbols), settings.market,
                     settings.env)

    def on_connect_attempt(self, attempt: int, url: str, symbols: tuple[str, ...]) -> None:
        if self.enabled:
            log.info("connect attempt %d to %s for %s", attempt, url, ", ".join(symbols))

    def on_connected(self, url: str, stage_timings: Mapping[str, float]) -> None:
        if self.enabled:
            stages = ", ".join(f"{stage} {seconds * 1000:.1f} ms" for stage, seconds in stage_timings.items())
            log.info("connected to %s (%s)", url, stages or "no stage timings")

    def on_disconnected(self, url: str, code: int | None, reason: str, error: BaseException | None) -> None:
        if self.enabled:
            cause = f", error {type(error).__name__}: {error}" if error else ""
            log.warning("disconnected from %s: code %s, reason %r%s", url, code, reason, cause)

    def on_reconnect_scheduled(self, attempt: int, delay: float, error: BaseException | None) -> None:
        if self.enabled:
            log.warning("reconnect attempt %d in %.2f s after %s", attempt, delay, error or "a clean close")

    def on_stall(self, symbols: tuple[str, ...], silent_for: float, stage: str, stack: str) -> None:
        if self.enabled:
            log.warning("stuck in stage %s: no progress for %.1f s on %s; %s", stage, silent_for, ", ".join(symbols),
                        stack)

    def on_loop_blocked(self, blocked_for: float, stack: str) -> None:
        if self.enabled:
            last = stack.strip().splitlines()[-2:] if stack else ["(no stack)"]
            log.warning("event loop was blocked for %.1f s at %s", blocked_for, " ".join(x.strip() for x in last))

    def on_gap(self, symbol: str, first_missing: int, last_missing: int) -> None:
        if self.enabled:
            count = last_missing - first_missing + 1
            log.warning("%s gap: %d aggTrade ids missing (%d..%d)", symbol, count, first_missing, last_missing)

    def on_backfill(self, symbol: str, first_id: int, last_id: int, count: int) -> None:
        if self.enabled:
            log.info("%s backfilled %d trades (%d..%d) over REST", symbol, count, first_id, last_id)

    def on_error(self, error: BaseException, where: str) -> None:
        if self.enabled:
            log.error("error in %s: %s: %s", where, type(error).__name__, error)

    def on_shutdown(self, summary: Mapping[str, Any]) -> None:
        if self.enabled:
            log.info("stopped: %s", ", ".join(f"{key} {value}" for key, value in summary.items()))
