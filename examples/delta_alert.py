"""A strategy plugin: alert when a minute's delta (taker buys minus taker sells) reaches a threshold.

Hand it to a stream (``OrderFlow(["BTCUSDT"], plugins=[DeltaAlert()])``), or ship it in a
distribution of your own with an entry point, so that ``orderflow stream`` and ``orderflow demo``
load it too::

    [project.entry-points.orderflow_plugin]
    delta_alert = "delta_alert:DeltaAlert"

Settings (optional): ``[default.hooks.delta_alert]`` ``min_delta = 5`` (base asset, e.g. BTC).
Its test, with the pytest fixtures the package ships, is ``test_delta_alert.py`` beside it.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from orderflow_plugin import Bar, Metric, Settings

log = logging.getLogger("delta_alert")


class DeltaAlert:
    """Warns for each closed ``window`` bar whose delta is at least ``min_delta`` either way; keeps it in ``alerts``."""

    def __init__(self, min_delta: Decimal | None = None, window: str = "1m") -> None:
        self.min_delta = min_delta if min_delta is not None else Decimal(5)
        self.from_settings = min_delta is None  # not given here: the settings may set it
        self.window = window
        self.alerts: list[Bar] = []

    def on_startup(self, settings: Settings) -> None:
        if self.from_settings:  # settings.hooks.<name> is an empty table when no file wrote one
            self.min_delta = Decimal(str(settings.hooks.delta_alert.get("min_delta", self.min_delta)))

    def on_metric(self, metric: Metric) -> None:
        if not isinstance(metric, Bar) or metric.window != self.window or metric.closed_by == "open":
            return
        if metric.closed_by == "revised":  # a late trade corrected this bar: judge it again
            self.alerts = [bar for bar in self.alerts if (bar.symbol, bar.start) != (metric.symbol, metric.start)]
        if abs(metric.delta) >= self.min_delta:
            self.alerts.append(metric)
            side = "buying" if metric.delta > 0 else "selling"
            log.warning("%s %s delta %s: taker %s (%d trades, close %s)",
                        metric.symbol, self.window, f"{metric.delta:+}", side, metric.trades, metric.close)
