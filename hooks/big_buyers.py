"""An example drop-in plugin: count the taker buys at or over a notional, and log the count at the end.

Every ``*.py`` file in a folder of the ``plugins.hooks_dirs`` setting is a plugin named after
the file (this one: ``big_buyers``). Copy it to start your own. The ready-made plugins
(diagnostics, whale_alert, recorder, prometheus) ship inside the package, in
``orderflow_plugin/bundled/``.

Settings (``[default.hooks.big_buyers]``, optional): ``threshold`` (notional in the quote
asset, default 50000); ``enabled = false`` turns the plugin off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

log = logging.getLogger("orderflow_hooks.big_buyers")
threshold = Decimal(50_000)
count = 0


def on_startup(settings: Any) -> None:
    global threshold
    threshold = Decimal(str(settings.hooks.get("big_buyers", {}).get("threshold", 50_000)))


def on_trade(trade: Any) -> None:
    global count
    if trade.side == "buy" and trade.notional >= threshold:
        count += 1


def on_shutdown(summary: Mapping[str, Any]) -> None:
    log.info("big buyers: %d taker buys at or over %s notional", count, threshold)
