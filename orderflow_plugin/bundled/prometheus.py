"""Prometheus export: the stream's health as metrics on http://127.0.0.1:9464/metrics.

Settings (``[default.hooks.prometheus]``): ``enabled`` (default false), ``host`` (default
127.0.0.1: only this machine can scrape), ``port`` (default 9464). Needs ``prometheus_client``
(``pip install 'orderflow-plugin[prometheus]'``).

Built from events only, like any plugin: trades, connects, disconnects, reconnects, stalls,
gaps, backfills, errors, loop blocks, connect stage timings, and CVD and last price from the
snapshots. Hooks only bump plain counters (no per-trade Prometheus call); the numbers become
metric families when Prometheus scrapes. ``orderflow_last_trade_timestamp_seconds`` is when
the last trade was delivered (wall clock): alert on ``time() - it``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["PrometheusExport"]

log = logging.getLogger("orderflow_hooks.prometheus")


class PrometheusExport:
    """The ``prometheus`` plugin: counters bumped by the hooks, served by a collector at scrape time."""

    def __init__(self) -> None:
        self.enabled = False
        self.server: Any = None
        self.trades: Counter[tuple[str, str]] = Counter()
        self.last_trade_at: dict[str, float] = {}
        self.events: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.stalls: Counter[str] = Counter()
        self.gaps: Counter[str] = Counter()
        self.gap_ids: Counter[str] = Counter()
        self.backfilled: Counter[str] = Counter()
        self.stage_seconds: dict[str, float] = {}
        self.gauges: dict[tuple[str, str], float] = {}  # (name, symbol) -> value
        self.connected = 0
        self.loop_blocked_seconds = 0.0

    def collect(self) -> Iterator[Any]:
        """The counters as metric families (called by prometheus_client on every scrape)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        family = CounterMetricFamily("orderflow_trades", "Trades delivered, by symbol and source.",
                                     labels=["symbol", "source"])
        for (symbol, source), count in sorted(self.trades.items()):
            family.add_metric([symbol, source], count)
        yield family
        family = GaugeMetricFamily("orderflow_last_trade_timestamp_seconds",
                                   "Wall-clock time the last trade was delivered.", labels=["symbol"])
        for symbol, when in sorted(self.last_trade_at.items()):
            family.add_metric([symbol], when)
        yield family
        for name, help_text in (
            ("connect_attempts", "Connection attempts."), ("connections", "Connections made."),
            ("disconnects", "Connections ended."), ("reconnects_scheduled", "Reconnects scheduled."),
            ("loop_blocked", "Times the event loop was blocked."),
        ):
            yield CounterMetricFamily(f"orderflow_{name}", help_text, value=self.events[name])
        yield CounterMetricFamily("orderflow_loop_blocked_seconds", "Seconds the event loop was blocked.",
                                  value=self.loop_blocked_seconds)
        yield GaugeMetricFamily("orderflow_connected", "Open connections.", value=self.connected)
        for name, help_text, counts, label in (
            ("errors", "Handled errors, by where they happened.", self.errors, "where"),
            ("stalls", "Stalls, by stage.", self.stalls, "stage"),
            ("gaps", "Gaps in aggregate ids, by symbol.", self.gaps, "symbol"),
            ("gap_ids", "Aggregate ids missing in gaps, by symbol.", self.gap_ids, "symbol"),
            ("backfilled", "Trades backfilled over REST, by symbol.", self.backfilled, "symbol"),
        ):
            family = CounterMetricFamily(f"orderflow_{name}", help_text, labels=[label])
            for key, count in sorted(counts.items()):
                family.add_metric([key], count)
            yield family
        family = GaugeMetricFamily("orderflow_connect_stage_seconds", "Time of each stage of the last connect.",
                                   labels=["stage"])
        for stage, seconds in self.stage_seconds.items():
            family.add_metric([stage], seconds)
        yield family
        for name, help_text in (("cvd", "Cumulative volume delta."), ("last_price", "Last trade price.")):
            family = GaugeMetricFamily(f"orderflow_{name}", help_text, labels=["symbol"])
            for (metric, symbol), value in sorted(self.gauges.items()):
                if metric == name:
                    family.add_metric([symbol], value)
            yield family

    def on_startup(self, settings: Any) -> None:
        table = settings.hooks.prometheus
        self.enabled = table.enabled
        if not self.enabled:
            return
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError as exc:
            raise ImportError("hooks.prometheus.enabled needs prometheus_client: "
                              "pip install 'orderflow-plugin[prometheus]'") from exc
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        self.server, _ = start_http_server(table.port, addr=table.host, registry=registry)
        log.info("Prometheus metrics on http://%s:%d/metrics", table.host, self.server.server_port)

    def on_trade(self, trade: Any) -> None:
        if self.enabled:
            self.trades[trade.symbol, trade.source] += 1
            self.last_trade_at[trade.symbol] = time.time()

    def on_connect_attempt(self, attempt: int) -> None:
        self.events["connect_attempts"] += 1

    def on_connected(self, stage_timings: Mapping[str, float]) -> None:
        self.events["connections"] += 1
        self.connected += 1
        self.stage_seconds.update(stage_timings)

    def on_disconnected(self, url: str) -> None:
        self.events["disconnects"] += 1
        self.connected = max(0, self.connected - 1)

    def on_reconnect_scheduled(self, attempt: int) -> None:
        self.events["reconnects_scheduled"] += 1

    def on_stall(self, stage: str) -> None:
        self.stalls[stage] += 1

    def on_gap(self, symbol: str, first_missing: int, last_missing: int) -> None:
        self.gaps[symbol] += 1
        self.gap_ids[symbol] += last_missing - first_missing + 1

    def on_backfill(self, symbol: str, count: int) -> None:
        self.backfilled[symbol] += count

    def on_error(self, where: str) -> None:
        self.errors[where.split(":", 1)[0]] += 1

    def on_loop_blocked(self, blocked_for: float) -> None:
        self.events["loop_blocked"] += 1
        self.loop_blocked_seconds += blocked_for

    def on_metric(self, metric: Any) -> None:
        if metric.kind == "snapshot":
            self.gauges["cvd", metric.symbol] = float(metric.cvd)
            if metric.last_price is not None:
                self.gauges["last_price", metric.symbol] = float(metric.last_price)

    def on_shutdown(self, summary: Mapping[str, Any]) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
