"""vn.py adapter: the order flow as events on vn.py's ``EventEngine``.

:class:`OrderFlowEngine` is a vn.py ``BaseEngine`` (add it with ``main_engine.add_engine`` or
through :class:`OrderFlowApp`). ``start(flow)`` runs an :class:`~orderflow_plugin.OrderFlow` on
a thread of its own (``run_in_thread()``) with an :class:`EventPublisher` registered among its
plugins, so the stream's other hooks and signals keep working beside it. The publisher puts,
like a vn.py gateway does for ticks, each item twice: under the general type and under the type
suffixed with the vt_symbol::

    Event("eOrderFlowTrade.", trade)  and  Event("eOrderFlowTrade.BTCUSDT_SPOT_BINANCE.GLOBAL", trade)

vn.py dispatches them on its engine's thread. Its queue is unbounded, and the publisher never
blocks the stream nor drops an event: it counts the events it put and the ones vn.py has
handled, and when more than ``max_backlog`` wait it reports so (log WARNING and the stream's
``on_error`` with :class:`~orderflow_plugin.errors.EventBacklog`) at most once per
``reporting.report_interval``. See docs/frameworks.md.

vn.py dispatches an event by iterating its type's handler list without a lock, so a handler
removed meanwhile (from any thread) makes it skip the next one. The adapter therefore only ever
appends: one module-level counting handler per general type, shared by every publisher on an
``EventEngine`` and never unregistered; each general event names its publisher, so every engine
counts only its own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vnpy.event import Event, EventEngine
from vnpy.trader.app import BaseApp
from vnpy.trader.engine import BaseEngine, MainEngine

from ..errors import EventBacklog, OrderFlowError
from ..models import Market, Metric, Trade
from ..signalmetrics import SIGNAL_KINDS
from ..stream import OrderFlow
from ..threaded import FlowThread
from . import HealthHooks

__all__ = [
    "APP_NAME",
    "EVENT_ORDERFLOW_BAR",
    "EVENT_ORDERFLOW_HEALTH",
    "EVENT_ORDERFLOW_SIGNAL",
    "EVENT_ORDERFLOW_TRADE",
    "EVENT_ORDERFLOW_WHALE",
    "EventPublisher",
    "FeedHealth",
    "OrderFlowApp",
    "OrderFlowEngine",
    "vt_symbol",
]

logger = logging.getLogger(__name__)

APP_NAME = "OrderFlow"
EVENT_ORDERFLOW_TRADE = "eOrderFlowTrade."  # data: orderflow_plugin.Trade
EVENT_ORDERFLOW_BAR = "eOrderFlowBar."  # data: orderflow_plugin.Bar (every window; bar.window says which)
EVENT_ORDERFLOW_WHALE = "eOrderFlowWhale."  # data: orderflow_plugin.Whale
EVENT_ORDERFLOW_HEALTH = "eOrderFlowHealth."  # data: FeedHealth
EVENT_ORDERFLOW_SIGNAL = "eOrderFlowSignal."  # data: a footprint signal (signalmetrics.py; data.kind says which)
_GENERAL_TYPES = (EVENT_ORDERFLOW_TRADE, EVENT_ORDERFLOW_BAR, EVENT_ORDERFLOW_WHALE, EVENT_ORDERFLOW_HEALTH,
                  EVENT_ORDERFLOW_SIGNAL)
# vnpy_binance's contract names: vn.py's Exchange enum has no BINANCE, so it uses GLOBAL with a suffix.
_CONTRACT_SUFFIX: dict[str, str] = {"spot": "SPOT", "usdm": "SWAP"}


def vt_symbol(symbol: str, market: Market) -> str:
    """The vt_symbol vnpy_binance gives ``symbol``: ``BTCUSDT_SPOT_BINANCE.GLOBAL``, ``BTCUSDT_SWAP_BINANCE.GLOBAL``."""
    return f"{symbol}_{_CONTRACT_SUFFIX[market]}_BINANCE.GLOBAL"


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """The data of an ``eOrderFlowHealth.`` event: a gap, a backfill, a stall or an error.

    ``vt_symbol``/``symbol`` are None for an error of no one symbol (those come on the general
    type only); ``first_id``/``last_id`` bound a gap or a backfill, ``count`` is the trades
    backfilled; ``error`` is the exception of an ``error`` and ``where`` what was running.
    """

    kind: str  # "gap", "backfill", "stall" or "error"
    message: str
    vt_symbol: str | None = None
    symbol: str | None = None
    first_id: int | None = None
    last_id: int | None = None
    count: int | None = None
    error: BaseException | None = None
    where: str | None = None


class _CountedEvent(Event):
    """A general-type event that names the publisher that put it, so each publisher counts only its own."""

    __slots__ = ("publisher",)

    def __init__(self, event_type: str, data: Any, publisher: EventPublisher) -> None:
        super().__init__(event_type, data)
        self.publisher = publisher


def _count_handled(event: Event) -> None:
    """vn.py has dispatched ``event``: one more handled for the publisher that put it."""
    if isinstance(event, _CountedEvent):
        event.publisher.handled += 1


class EventPublisher(HealthHooks):
    """A plugin of the stream that puts its trades, bars, whales and health on a vn.py ``EventEngine``.

    Its hooks run on the stream's thread; ``EventEngine.put`` is thread-safe and never blocks.
    """

    def __init__(self, event_engine: EventEngine, flow: OrderFlow, *, max_backlog: int = 100_000) -> None:
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be at least 1, got {max_backlog}")
        self.event_engine = event_engine
        self.max_backlog = max_backlog
        self.published = 0  # items put (each as a general and a vt_symbol event), written on the stream's thread
        self.handled = 0  # general events vn.py has dispatched, written on vn.py's thread
        self.peak_backlog = 0
        self.backlog_reports = 0
        self._market = flow.market
        self._report_error = flow.dispatcher.emit
        self._report_interval = flow.reporting.report_interval
        self._next_report = 0.0
        self._put = event_engine.put
        self._vt_symbols = {symbol: vt_symbol(symbol, flow.market) for symbol in flow.symbols}

    @property
    def backlog(self) -> int:
        """Our items put on the queue and not yet dispatched by vn.py."""
        return self.published - self.handled

    def attach(self) -> None:
        """Count what vn.py dispatches: register the shared counting handler on each general type.

        Idempotent and safe while vn.py dispatches (it only appends). The handler stays after the
        stream stops, so the count catches up as the queue drains; there is no ``detach()``, since
        removing a handler while vn.py's thread dispatches that type would make it skip another.
        """
        for event_type in _GENERAL_TYPES:
            self.event_engine.register(event_type, _count_handled)

    # The stream's hooks (see orderflow_plugin/hookspecs.py).

    def on_trade(self, trade: Trade) -> None:
        self._publish(EVENT_ORDERFLOW_TRADE, trade.symbol, trade)

    def on_metric(self, metric: Metric) -> None:
        kind = metric.kind
        if kind == "bar":
            self._publish(EVENT_ORDERFLOW_BAR, metric.symbol, metric)
        elif kind == "whale":
            self._publish(EVENT_ORDERFLOW_WHALE, metric.symbol, metric)
        elif kind in SIGNAL_KINDS:
            self._publish(EVENT_ORDERFLOW_SIGNAL, metric.symbol, metric)
        # Snapshots (each second) are not published: engine.latest(symbol) reads the newest one.

    def on_error(self, error: BaseException, where: str) -> None:
        health = FeedHealth("error", f"{where}: {error}", error=error, where=where)
        self._put(_CountedEvent(EVENT_ORDERFLOW_HEALTH, health, self))
        self._published()

    def _health(self, symbol: str, kind: str, message: str, **fields: Any) -> None:
        vt = self._vt_symbols.get(symbol) or vt_symbol(symbol, self._market)
        self._publish(EVENT_ORDERFLOW_HEALTH, symbol, FeedHealth(kind, message, vt, symbol, **fields))

    def _publish(self, event_type: str, symbol: str, data: Any) -> None:
        vt = self._vt_symbols.get(symbol) or vt_symbol(symbol, self._market)
        self._put(_CountedEvent(event_type, data, self))  # general first, then the vt_symbol's, as vn.py gateways do
        self._put(Event(event_type + vt, data))
        self._published()

    def _published(self) -> None:
        self.published += 1
        backlog = self.published - self.handled
        if backlog > self.max_backlog:
            self._over_bound(backlog)

    def _over_bound(self, backlog: int) -> None:
        self.peak_backlog = max(self.peak_backlog, backlog)
        now = time.monotonic()
        if now < self._next_report:
            return
        self._next_report = now + self._report_interval
        self.backlog_reports += 1
        message = (f"vn.py's event engine has {backlog} order-flow events not yet handled (bound {self.max_backlog}): "
                   "a handler is slower than the feed; nothing is dropped, the queue grows")
        logger.warning("%s", message)
        self._report_error("on_error", error=EventBacklog(message, backlog=backlog, bound=self.max_backlog),
                           where="adapter:vnpy")


class OrderFlowEngine(BaseEngine):
    """A vn.py function engine that streams order flow onto the main engine's ``EventEngine``.

    ``main_engine.add_engine(OrderFlowEngine)`` builds it; ``start(flow)`` starts the stream on
    its own thread; ``close()`` (``main_engine.close()`` calls it) stops it and joins the thread.
    """

    def __init__(self, main_engine: MainEngine | None, event_engine: EventEngine, engine_name: str = APP_NAME) -> None:
        super().__init__(main_engine, event_engine, engine_name)  # type: ignore[arg-type]
        self.flow: OrderFlow | None = None
        self.publisher: EventPublisher | None = None
        self._runner: FlowThread | None = None

    def start(self, flow: OrderFlow | None = None, *, max_backlog: int = 100_000, timeout: float = 10.0) -> OrderFlow:
        """Run ``flow`` (default: ``OrderFlow.from_settings()``) on a new thread, publishing to the event engine.

        Returns once the stream's tasks run; connecting happens in the background. A stream runs
        once: after ``close()``, start a new ``OrderFlow``.
        """
        if self._runner is not None:
            raise OrderFlowError("OrderFlowEngine.start() called while it runs; close() it first")
        flow = flow if flow is not None else OrderFlow.from_settings()
        publisher = EventPublisher(self.event_engine, flow, max_backlog=max_backlog)
        flow.plugins.register(publisher, name="vnpy-event-publisher")
        publisher.attach()
        runner = FlowThread(flow)  # built here, not by flow.run_in_thread(), to keep it if start() fails
        try:
            runner.start(timeout)
        except BaseException:
            if runner.running:  # a hook blocks its loop past the stop start() tried: close() can still stop it
                self.flow, self.publisher, self._runner = flow, publisher, runner
            else:
                flow.plugins.unregister(publisher)
            raise
        self.flow, self.publisher, self._runner = flow, publisher, runner
        return flow

    @property
    def running(self) -> bool:
        """Whether the stream's thread is alive."""
        return self._runner is not None and self._runner.running

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """``flow.health()`` from the stream's thread, with ``vnpy``: published, handled, backlog, peak, reports."""
        if self._runner is None or self.publisher is None:
            raise OrderFlowError("OrderFlowEngine is not running: call start() first")
        p = self.publisher
        return {**self._runner.health(timeout), "vnpy": {
            "published": p.published, "handled": p.handled, "backlog": p.backlog, "peak_backlog": p.peak_backlog,
            "backlog_reports": p.backlog_reports}}

    def latest(self, symbol: str, timeout: float = 5.0) -> dict[str, Any]:
        """``flow.latest(symbol)``: the newest trade, snapshot, whale and closed bar per window."""
        if self._runner is None:
            raise OrderFlowError("OrderFlowEngine is not running: call start() first")
        return self._runner.latest(symbol, timeout)

    def close(self) -> None:
        """Stop the stream (its connections close within ``timeouts.close``) and join its thread; idempotent.

        Never raises (``MainEngine.close()`` would skip the engines and gateways after this one): a
        stream that does not stop is logged as one ERROR line and kept, so ``close()`` again retries.
        """
        runner = self._runner
        if runner is None:
            return
        try:
            runner.stop()
        except Exception as exc:
            logger.error("OrderFlowEngine.close() left the stream running: %s", exc)
        finally:
            if not runner.running:
                self._runner = None


class OrderFlowApp(BaseApp):
    """``main_engine.add_app(OrderFlowApp)`` adds an :class:`OrderFlowEngine`; it has no Qt widget.

    vn.py's ``MainWindow`` builds a menu entry from each app's ``<app_module>.ui`` widget, so a
    GUI host adds the engine with ``main_engine.add_engine(OrderFlowEngine)`` instead.
    """

    app_name = APP_NAME
    app_module = __module__
    app_path = Path(__file__).parent
    display_name = "Order flow"
    engine_class = OrderFlowEngine
    widget_name = ""
    icon_name = ""
