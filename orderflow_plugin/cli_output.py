"""What the command line shows: the JSON event feed and the live terminal view.

Both are plugins fed by events like any other. The JSON shapes are stable: decimals are exact
strings, errors are ``{"type", "message", "stage"}``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from decimal import Decimal
from typing import IO, Any

import msgspec

from .engine import Bar, Snapshot, Whale
from .models import Trade, format_decimal
from .signalmetrics import SIGNAL_KINDS

__all__ = ["JsonFeed", "LiveView", "event_json", "metric_json"]


DELTA_HEADER = "1m delta\nbar: share of volume"  # the bar's length is delta / volume, full at 100 %
RATE_HEADER = "trades/s\nof trade time"  # from the 1 s bars: the tape's clock during a replay


def _value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value), "stage": getattr(value, "stage", None)}
    if isinstance(value, tuple):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _value(v) for k, v in value.items()}
    return value


def metric_json(metric: Any) -> dict[str, Any]:
    """A metric as its stable JSON shape."""
    if isinstance(metric, Bar):
        out: dict[str, Any] = {"kind": "bar", "symbol": metric.symbol, "window": metric.window,
                               "start": metric.start, "end": metric.end}
        for name in ("open", "high", "low", "close", "buy_volume", "sell_volume", "delta", "buy_notional",
                     "sell_notional", "volume", "cvd", "vwap", "imbalance", "largest_qty"):
            out[name] = format_decimal(getattr(metric, name))
        out.update(trades=metric.trades, trade_count=metric.trade_count, largest_id=metric.largest_id,
                   trades_per_second=metric.trades_per_second, closed_by=metric.closed_by)
        footprint = metric.footprint
        if footprint is not None:
            area = footprint.value_area
            out["footprint"] = {
                "tick": format_decimal(footprint.tick),
                "levels": [[format_decimal(p), format_decimal(b), format_decimal(s)] for p, b, s in footprint.levels],
                "poc": format_decimal(footprint.poc) if footprint.poc is not None else None,
                "value_area": [format_decimal(area[0]), format_decimal(area[1])] if area else None,
            }
        return out
    if isinstance(metric, Whale):
        return {"kind": "whale", "symbol": metric.symbol, "trade": metric.trade.as_json(),
                "notional": format_decimal(metric.notional), "rule": metric.rule,
                "threshold": format_decimal(metric.threshold)}
    if isinstance(metric, Snapshot):
        return {"kind": "snapshot", "symbol": metric.symbol, "time": metric.time,
                "last_price": format_decimal(metric.last_price) if metric.last_price is not None else None,
                "cvd": format_decimal(metric.cvd), "buy_volume": format_decimal(metric.buy_volume),
                "sell_volume": format_decimal(metric.sell_volume), "trades": metric.trades,
                "bars": {window: metric_json(bar) for window, bar in metric.bars.items()}}
    if getattr(metric, "kind", None) in SIGNAL_KINDS:  # a footprint signal: its fields, decimals as exact strings
        return {"kind": metric.kind, **msgspec.to_builtins(metric)}
    return {"kind": getattr(metric, "kind", "metric"), "symbol": getattr(metric, "symbol", None)}


def event_json(signal: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One event (a signal name and its arguments) as its stable JSON shape."""
    if signal == "trade":
        return {"event": "trade", **kwargs["trade"].as_json()}
    if signal == "metric":
        return {"event": "metric", **metric_json(kwargs["metric"])}
    if signal == "startup":
        settings = kwargs["settings"]
        return {"event": "startup", "env": getattr(settings, "env", None)}
    return {"event": signal, **{k: _value(v) for k, v in kwargs.items()}}


class JsonFeed:
    """A plugin writing every event as one JSON line, flushed per line."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def _write(self, signal: str, **kwargs: Any) -> None:
        self.out.write(json.dumps(event_json(signal, kwargs), separators=(",", ":")) + "\n")
        self.out.flush()

    def on_startup(self, settings: Any) -> None:
        self._write("startup", settings=settings)

    def on_connect_attempt(self, attempt: int, url: str, symbols: tuple[str, ...]) -> None:
        self._write("connect-attempt", attempt=attempt, url=url, symbols=symbols)

    def on_connected(self, url: str, stage_timings: dict[str, float]) -> None:
        self._write("connected", url=url, stage_timings=stage_timings)

    def on_disconnected(self, url: str, code: int | None, reason: str, error: BaseException | None) -> None:
        self._write("disconnected", url=url, code=code, reason=reason, error=error)

    def on_reconnect_scheduled(self, attempt: int, delay: float, error: BaseException | None) -> None:
        self._write("reconnect-scheduled", attempt=attempt, delay=delay, error=error)

    def on_stall(self, symbols: tuple[str, ...], silent_for: float, stage: str, stack: str) -> None:
        self._write("stall", symbols=symbols, silent_for=silent_for, stage=stage, stack=stack)

    def on_gap(self, symbol: str, first_missing: int, last_missing: int) -> None:
        self._write("gap", symbol=symbol, first_missing=first_missing, last_missing=last_missing)

    def on_backfill(self, symbol: str, first_id: int, last_id: int, count: int) -> None:
        self._write("backfill", symbol=symbol, first_id=first_id, last_id=last_id, count=count)

    def on_trade(self, trade: Trade) -> None:
        self._write("trade", trade=trade)

    def on_metric(self, metric: Any) -> None:
        self._write("metric", metric=metric)

    def on_error(self, error: BaseException, where: str) -> None:
        self._write("error", error=error, where=where)

    def on_loop_blocked(self, blocked_for: float, stack: str) -> None:
        self._write("loop-blocked", blocked_for=blocked_for, stack=stack)


class LiveView:
    """Per-symbol state for the terminal: last price, CVD, the 1 m bar, trades/s, whales, connection.

    Trades/s is counted per second of trade time (the trades' own timestamps, from the 1 s bars), so a
    replay at 50x shows the tape's rate, not 50 times it; both views say so.
    """

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.symbols = symbols
        self.last: dict[str, Trade] = {}
        self.snapshot: dict[str, Snapshot] = {}
        self.rate: dict[str, float] = {}
        self._rate_last: dict[str, tuple[int, float | None]] = {}  # symbol -> (last second counted, rate before it)
        self.whales: deque[Whale] = deque(maxlen=5)
        self.started = time.monotonic()

    def on_trade(self, trade: Trade) -> None:
        self.last[trade.symbol] = trade

    def on_metric(self, metric: Any) -> None:
        if isinstance(metric, Snapshot):
            self.snapshot[metric.symbol] = metric
        elif isinstance(metric, Whale):
            self.whales.append(metric)
        elif isinstance(metric, Bar) and metric.window == "1s":
            symbol, last = metric.symbol, self._rate_last.get(metric.symbol)
            if metric.closed_by == "revised":  # the same second again, with a late trade: it replaces that second
                if last is None or last[0] != metric.start:
                    return  # an older second: its weight in the average is spent
                before = last[1]
            else:
                before = self.rate.get(symbol)
            previous = float(metric.trades) if before is None else before
            self.rate[symbol] = previous * 0.8 + metric.trades * 0.2  # smoothed trades per second
            self._rate_last[symbol] = (metric.start, before)

    def line(self, symbol: str, health: dict[str, Any]) -> str:
        """One plain line per symbol (when stdout is not a terminal)."""
        trade, snap = self.last.get(symbol), self.snapshot.get(symbol)
        bar = snap.bars.get("1m") if snap else None
        age = health["symbols"][symbol]["last_trade_age_s"]
        state = ",".join(sorted({c["state"] for c in health["connections"] if symbol in c["symbols"]}))
        return (f"{symbol}  last {format_decimal(trade.price) if trade else '-'}  "
                f"cvd {_signed(snap.cvd) if snap else '-'}  "
                f"1m buy {format_decimal(bar.buy_volume) if bar else '-'} sell "
                f"{format_decimal(bar.sell_volume) if bar else '-'} delta {_signed(bar.delta) if bar else '-'}  "
                f"{self.rate.get(symbol, 0.0):.1f} trades/s of trade time  [{state}, last trade "
                f"{f'{age:.1f} s' if age is not None else '-'} ago, reconnects {health['reconnects']}, "
                f"gaps {health['gaps']}, backfilled {health['backfilled']}]")

    def table(self, health: dict[str, Any]) -> Any:
        """The rich renderable for the terminal."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title="orderflow: live aggTrade order flow", title_style="bold", expand=False)
        for column, justify in (("symbol", "left"), ("last", "right"), ("CVD", "right"), ("1m buy", "right"),
                                ("1m sell", "right"), (DELTA_HEADER, "left"), (RATE_HEADER, "right"),
                                ("connection", "left"), ("last trade", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for symbol in self.symbols:
            trade, snap = self.last.get(symbol), self.snapshot.get(symbol)
            bar = snap.bars.get("1m") if snap else None
            age = health["symbols"][symbol]["last_trade_age_s"]
            state = ",".join(sorted({c["state"] for c in health["connections"] if symbol in c["symbols"]}))
            table.add_row(
                symbol,
                format_decimal(trade.price) if trade else "-",
                Text(_signed(snap.cvd), style="green" if snap.cvd >= 0 else "red") if snap else Text("-"),
                format_decimal(bar.buy_volume) if bar else "-",
                format_decimal(bar.sell_volume) if bar else "-",
                _delta_bar(bar) if bar else Text("-"),
                f"{self.rate.get(symbol, 0.0):.1f}",
                Text(state, style="green" if state == "streaming" else "yellow"),
                f"{age:.1f} s ago" if age is not None else "-",
            )
        whales = Table(title="recent whale trades", title_style="bold", expand=False)
        for column in ("symbol", "side", "qty", "price", "notional", "rule"):
            whales.add_column(column, justify="right" if column in ("qty", "price", "notional") else "left")
        for whale in reversed(self.whales):
            t = whale.trade
            whales.add_row(t.symbol, Text(t.side, style="green" if t.side == "buy" else "red"),
                           format_decimal(t.qty), format_decimal(t.price), f"{whale.notional:,.0f}", whale.rule)
        footer = Text(f"reconnects {health['reconnects']}   gaps {health['gaps']}   backfilled {health['backfilled']}"
                      f"   bad frames {health['bad_frames']}   plugin errors {health['plugin_errors']}"
                      f"   slow hooks {health['slow_hooks']}"
                      f"   uptime {health['uptime_s']:.0f} s", style="dim")
        return Group(table, whales, footer)


def _signed(value: Decimal) -> str:
    return ("+" if value >= 0 else "") + format_decimal(value)


def _delta_bar(bar: Bar) -> Any:
    from rich.text import Text

    volume = bar.volume
    share = float(bar.delta / volume) if volume else 0.0
    cells = round(abs(share) * 8)
    text = Text(f"{_signed(bar.delta):>12} ")
    text.append(("█" * cells).ljust(8), style="green" if share >= 0 else "red")
    return text
