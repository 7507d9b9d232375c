"""Prometheus export: the stream's health as metrics on http://127.0.0.1:9464/metrics.

Settings (``[default.hooks.prometheus]``): ``enabled`` (default false), ``host`` (default
127.0.0.1: only this machine can scrape), ``port`` (default 9464). Needs ``prometheus_client``
(``pip install orderflow-plugin[prometheus]``).

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

log = logging.getLogger("orderflow_hooks.prometheus_export")
_server: Any = None
_thread: Any = None
_enabled = False

trades: Counter[tuple[str, str]] = Counter()
last_trade_at: dict[str, float] = {}
events: Counter[str] = Counter()
errors: Counter[str] = Counter()
stalls: Counter[str] = Counter()
gaps: Counter[str] = Counter()
gap_ids: Counter[str] = Counter()
backfilled: Counter[str] = Counter()
stage_seconds: dict[str, float] = {}
gauges: dict[tuple[str, str], float] = {}  # (name, symbol) -> value
connected = 0
loop_blocked_seconds = 0.0


class _Collector:
    """Turns the counters into metric families at scrape time."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        family = CounterMetricFamily("orderflow_trades", "Trades delivered, by symbol and source.",
                                     labels=["symbol", "source"])
        for (symbol, source), count in sorted(trades.items()):
            family.add_metric([symbol, source], count)
        yield family
        family = GaugeMetricFamily("orderflow_last_trade_timestamp_seconds",
                                   "Wall-clock time the last trade was delivered.", labels=["symbol"])
        for symbol, when in sorted(last_trade_at.items()):
            family.add_metric([symbol], when)
        yield family
        for name, help_text in (
            ("connect_attempts", "Connection attempts."), ("connections", "Connections made."),
            ("disconnects", "Connections ended."), ("reconnects_scheduled", "Reconnects scheduled."),
            ("loop_blocked", "Times the event loop was blocked."),
        ):
            yield CounterMetricFamily(f"orderflow_{name}", help_text, value=events[name])
        yield CounterMetricFamily("orderflow_loop_blocked_seconds", "Seconds the event loop was blocked.",
                                  value=loop_blocked_seconds)
        yield GaugeMetricFamily("orderflow_connected", "Open connections.", value=connected)
        for name, help_text, counts, label in (
            ("errors", "Handled errors, by where they happened.", errors, "where"),
            ("stalls", "Stalls, by stage.", stalls, "stage"),
            ("gaps", "Gaps in aggregate ids, by symbol.", gaps, "symbol"),
            ("gap_ids", "Aggregate ids missing in gaps, by symbol.", gap_ids, "symbol"),
            ("backfilled", "Trades backfilled over REST, by symbol.", backfilled, "symbol"),
        ):
            family = CounterMetricFamily(f"orderflow_{name}", help_text, labels=[label])
            for key, count in sorted(counts.items()):
                family.add_metric([key], count)
            yield family
        family = GaugeMetricFamily("orderflow_connect_stage_seconds", "Time of each stage of the last connect.",
                                   labels=["stage"])
        for stage, seconds in stage_seconds.items():
            family.add_metric([stage], seconds)
        yield family
        for name, help_text in (("cvd", "Cumulative volume delta."), ("last_price", "Last trade price.")):
            family = GaugeMetricFamily(f"orderflow_{name}", help_text, labels=["symbol"])
            for (metric, symbol), value in sorted(gauges.items()):
                if metric == name:
                    family.add_metric([symbol], value)
            yield family


def on_startup(settings: Any) -> None:
    global _server, _thread, _enabled
    table = settings.hooks.prometheus
    _enabled = table.enabled
    if not _enabled:
        return
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    _server, _thread = start_http_server(table.port, addr=table.host, registry=registry)
    log.info("Prometheus metrics on http://%s:%d/metrics", table.host, _server.server_port)


def on_trade(trade: Any) -> None:
    if _enabled:
        trades[trade.symbol, trade.source] += 1
        last_trade_at[trade.symbol] = time.time()


def on_connect_attempt(attempt: int) -> None:
    events["connect_attempts"] += 1


def on_connected(stage_timings: Mapping[str, float]) -> None:
    global connected
    events["connections"] += 1
    connected += 1
    stage_seconds.update(stage_timings)


def on_disconnected(url: str) -> None:
    global connected
    events["disconnects"] += 1
    connected = max(0, connected - 1)


def on_reconnect_scheduled(attempt: int) -> None:
    events["reconnects_scheduled"] += 1


def on_stall(stage: str) -> None:
    stalls[stage] += 1


def on_gap(symbol: str, first_missing: int, last_missing: int) -> None:
    gaps[symbol] += 1
    gap_ids[symbol] += last_missing - first_missing + 1


def on_backfill(symbol: str, count: int) -> None:
    backfilled[symbol] += count


def on_error(where: str) -> None:
    errors[where.split(":", 1)[0]] += 1


def on_loop_blocked(blocked_for: float) -> None:
    global loop_blocked_seconds
    events["loop_blocked"] += 1
    loop_blocked_seconds += blocked_for


def on_metric(metric: Any) -> None:
    if metric.kind == "snapshot":
        gauges["cvd", metric.symbol] = float(metric.cvd)
        if metric.last_price is not None:
            gauges["last_price", metric.symbol] = float(metric.last_price)


def on_shutdown(summary: Mapping[str, Any]) -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None
