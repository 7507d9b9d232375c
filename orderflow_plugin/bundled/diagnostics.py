"""Diagnostics: the lines the stream's own log leaves out: the settings it starts with, and each backfill.

Settings (``[default.hooks.diagnostics]``): ``enabled`` (default true).
Logger: ``orderflow_hooks.diagnostics`` (INFO).
The stream logs every other lifecycle event itself, once, on the ``orderflow_plugin`` loggers: connect
attempts and their stage timings, disconnects, reconnects, stalls, gaps, errors, loop blocks and the
summary at shutdown. This plugin used to log each of them again, so every event was in the log twice
(a failed connect three times). Trades and metrics are not logged: one line per trade would drown the log.
"""

from __future__ import annotations

import logging
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

    def on_backfill(self, symbol: str, first_id: int, last_id: int, count: int) -> None:
        if self.enabled:
            log.info("%s backfilled %d trades (%d..%d) over REST", symbol, count, first_id, last_id)
