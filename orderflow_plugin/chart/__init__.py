"""``orderflow chart``: a live footprint chart served on 127.0.0.1 (docs/chart.md).

:class:`ChartFeed` listens to a running :class:`~orderflow_plugin.OrderFlow` through its blinker
signals (it only reads) and keeps the chart's state: closed bars of one window, the bar in progress,
whales, naked POCs and the feed's health. :func:`chart_app` serves the page (vendored canvas code in
``static/``, no CDN) and a WebSocket that sends the state on connect, then every change.
"""

from __future__ import annotations

from .feed import ChartFeed, bar_json
from .server import chart_app, serve

__all__ = ["ChartFeed", "bar_json", "chart_app", "serve"]
