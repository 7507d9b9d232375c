"""The chart's state, kept from a stream's signals, and sent to each page as JSON messages.

Messages (each with ``seq``, counting up): ``hello`` (everything, on connect: the backfill of a
page that connects or reconnects), ``bar`` (a closed or revised bar: it replaces the column with
its ``start``), ``open`` (the bar in progress, at most every ``open_interval`` s), ``whale``,
``naked`` (the naked POCs), ``health`` (connection state and counters, every second).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

from .. import signals
from ..metrics import Bar
from ..models import format_decimal

__all__ = ["ChartFeed", "bar_json"]

_HEALTH_EVENTS = ("connected", "disconnected", "reconnect_scheduled", "gap", "backfill", "stall")
_COUNTED_AS = {"connected": "connects", "disconnected": "disconnects", "reconnect_scheduled": "reconnects",
               "gap": "gaps", "backfill": "backfills", "stall": "stalls"}


def bar_json(bar: Bar) -> dict[str, Any]:
    """A bar as the page reads it: decimals as exact strings."""
    footprint = bar.footprint
    levels = [] if footprint is None else [[format_decimal(p), format_decimal(b), format_decimal(s)]
                                            for p, b, s in footprint.levels]
    poc = footprint.poc if footprint is not None else None
    area = footprint.value_area if footprint is not None else None
    return {
        "start": bar.start, "end": bar.end, "open": format_decimal(bar.open), "high": format_decimal(bar.high),
        "low": format_decimal(bar.low), "close": format_decimal(bar.close),
        "buy": format_decimal(bar.buy_volume), "sell": format_decimal(bar.sell_volume),
        "delta": format_decimal(bar.delta), "volume": format_decimal(bar.volume), "cvd": format_decimal(bar.cvd),
        "trades": bar.trades, "levels": levels, "poc": None if poc is None else format_decimal(poc),
        "va": None if area is None else [format_decimal(area[0]), format_decimal(area[1])],
        "closed_by": bar.closed_by,
    }


class ChartFeed:
    """What the page shows for ``symbol``'s ``window`` bars of ``flow``; a bounded queue per page."""

    def __init__(self, flow: Any, symbol: str, window: str, *, keep: int = 500, open_interval: float = 0.1,
                 queue_size: int = 2000, imbalance_percent: float | None = None,
                 stack_length: int | None = None) -> None:
        self.flow = flow
        self.symbol = symbol
        self.window = window
        self.keep = keep
        self.open_interval = open_interval
        self.queue_size = queue_size
        self.tick = flow.flow.footprint_tick
        self.imbalance_percent = imbalance_percent or flow.flow.imbalance_percent
        self.stack_length = stack_length or flow.flow.stack_length
        self.bars: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.whales: deque[dict[str, Any]] = deque(maxlen=200)
        self.naked: dict[tuple[str, int], dict[str, Any]] = {}
        self.counts = dict.fromkeys(_HEALTH_EVENTS, 0)
        self.state = "starting"
        self.last_id = 0  # the last trade id the open bar or a closed bar carried to the pages
        self.seq = 0
        self.pages: set[asyncio.Queue[dict[str, Any]]] = set()
        self.dropped_pages = 0
        self._open: dict[str, Any] | None = None
        self._open_key: tuple[int, int] | None = None
        self._receivers: list[Any] = []  # held: blinker keeps receivers by weak reference
        self._listen()

    def _listen(self) -> None:
        def on_metric(sender: Any, metric: Any) -> None:
            self._metric(metric)

        self._receivers.append(on_metric)
        signals.metric.connect(on_metric, sender=self.flow)
        for name in _HEALTH_EVENTS:
            def on_event(sender: Any, _name: str = name, **kwargs: Any) -> None:
                self._event(_name, kwargs)

            self._receivers.append(on_event)
            signals.SIGNALS[name.replace("_", "-")].connect(on_event, sender=self.flow)

    def close(self) -> None:
        """Stop listening to the stream."""
        signals.metric.disconnect(self._receivers[0], sender=self.flow)
        for name, receiver in zip(_HEALTH_EVENTS, self._receivers[1:], strict=True):
            signals.SIGNALS[name.replace("_", "-")].disconnect(receiver, sender=self.flow)

    # From the stream

    def _metric(self, metric: Any) -> None:
        if metric.symbol != self.symbol:
            return
        kind = metric.kind
        if kind == "bar" and metric.window == self.window:
            data = bar_json(metric)
            self.bars[metric.start] = data
            self.bars.move_to_end(metric.start)
            while len(self.bars) > self.keep:
                self.bars.popitem(last=False)
            self._send({"type": "bar", "bar": data})
        elif kind == "whale":
            trade = metric.trade
            whale = {"time": trade.time, "price": format_decimal(trade.price), "qty": format_decimal(trade.qty),
                     "side": trade.side, "notional": format_decimal(metric.notional)}
            self.whales.append(whale)
            self._send({"type": "whale", "whale": whale})
        elif kind == "naked_poc":
            key = (metric.source, metric.start)
            if metric.status == "naked":
                self.naked[key] = {"source": metric.source, "start": metric.start,
                                   "price": format_decimal(metric.price)}
            else:
                self.naked.pop(key, None)
            self._send({"type": "naked", "naked": list(self.naked.values())})

    def add_history(self, bars: Iterable[Bar]) -> int:
        """Put closed bars from before the stream (a store's) before the live ones; return how many.

        A live bar with the same start keeps its place and values: the stream's newer word on that window.
        ``keep`` grows by their number, so the live bars do not push them out.
        """
        past = OrderedDict((bar.start, bar_json(bar)) for bar in bars if bar.window == self.window)
        for start, data in self.bars.items():
            past[start] = data
        added = len(past) - len(self.bars)
        self.keep += added
        self.bars = past  # pages get them in their hello: call this before serving
        return added

    def _event(self, name: str, kwargs: dict[str, Any]) -> None:
        self.counts[name] += 1
        if name == "connected":
            self.state = "live"
        elif name in ("disconnected", "reconnect_scheduled"):
            self.state = "reconnecting"
        elif name == "stall":
            self.state = "stalled"
        self._send({"type": "health", "health": self.health()})

    # To the pages

    def health(self) -> dict[str, Any]:
        """The feed's state and counters, and how far behind the slowest page is."""
        symbols = self.flow.health()["symbols"].get(self.symbol, {})
        return {"state": self.state, **{_COUNTED_AS[k]: v for k, v in self.counts.items()},
                "last_id": symbols.get("last_id"), "last_trade_age_s": symbols.get("last_trade_age_s"),
                "backlog": max((q.qsize() for q in self.pages), default=0), "dropped_pages": self.dropped_pages}

    def hello(self) -> dict[str, Any]:
        """Everything a page needs to draw from scratch."""
        return {"type": "hello", "symbol": self.symbol, "window": self.window, "tick": str(self.tick),
                "imbalance_percent": float(self.imbalance_percent), "stack_length": self.stack_length,
                "bars": list(self.bars.values()), "open": self._open, "whales": list(self.whales),
                "naked": list(self.naked.values()), "health": self.health(), "seq": self.seq}

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A page's queue, starting with ``hello``."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.queue_size)
        queue.put_nowait(self.hello())
        self.pages.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.pages.discard(queue)

    def _send(self, message: dict[str, Any]) -> None:
        self.seq += 1
        message["seq"] = self.seq
        for queue in list(self.pages):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # a page that cannot keep up starts over from a fresh hello
                self.pages.discard(queue)
                self.dropped_pages += 1  # its sender sees it gone and closes the socket: the page reconnects

    def poll_open(self) -> None:
        """Send the bar in progress if it changed since the last call."""
        engine = self.flow.engines.get(self.symbol)
        if engine is None or not engine.trades:
            return
        key = (engine.trades, engine.last.id if engine.last else 0)
        if key == self._open_key:
            return
        self._open_key = key
        bar = engine.snapshot().bars.get(self.window)
        if bar is None:
            return
        self._open = bar_json(bar)
        self._open["last_id"] = key[1]
        self._send({"type": "open", "bar": self._open})

    async def run(self) -> None:
        """Poll the bar in progress and send health until cancelled."""
        next_health = 0.0
        while True:
            self.poll_open()
            now = time.monotonic()
            if now >= next_health:
                next_health = now + 1.0
                self._send({"type": "health", "health": self.health()})
            await asyncio.sleep(self.open_interval)
