"""nautilus_trader adapter: the order flow as custom ``Data`` on a node's message bus.

:class:`OrderFlowActor` is a nautilus ``Actor``. On start it runs an
:class:`~orderflow_plugin.OrderFlow` on the node's own event loop (the loop whose coroutine
starts the actor: no thread, no second loop) with a :class:`DataPublisher` registered among its
plugins, so the stream's other hooks and signals keep working beside it. The publisher hands each
item to ``Actor.publish_data`` under a ``DataType`` with metadata::

    DataType(OrderFlowTrade, metadata={"instrument_id": "BTCUSDT.BINANCE"})
    DataType(OrderFlowBar, metadata={"instrument_id": "BTCUSDT.BINANCE", "window": "1m"})
    DataType(FlowSnapshot, metadata={"instrument_id": "BTCUSDT.BINANCE"})
    DataType(OrderFlowSignal, metadata={"instrument_id": "BTCUSDT.BINANCE"})  # every footprint signal kind

Instrument ids follow nautilus' own Binance adapter, so they join its instruments: ``BTCUSDT.BINANCE``
on spot, ``BTCUSDT-PERP.BINANCE`` on usdm (a USD-M perpetual).

The message bus calls the subscribers' ``on_data`` at once, on the loop, in the stream's order.
Prices and quantities stay exact decimal strings: nautilus ``Price``/``Quantity`` need the
instrument's precision, which the actor does not have without an instrument. See
docs/frameworks.md.
"""

# No `from __future__ import annotations`: @customdataclass reads the field annotations as types.

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from nautilus_trader.adapters.binance.common.enums import BinanceAccountType
from nautilus_trader.adapters.binance.common.symbol import BinanceSymbol
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.core.data import Data
from nautilus_trader.model.custom import customdataclass
from nautilus_trader.model.data import DataType
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.identifiers import ClientId, InstrumentId

from ..config import load_settings
from ..engine import parse_window
from ..errors import OrderFlowError
from ..metrics import Bar, Snapshot, Whale
from ..models import Market, Metric, Trade
from ..signalmetrics import SIGNAL_KINDS, signal_from_json, signal_json
from ..stream import OrderFlow
from . import HealthHooks

__all__ = [
    "ORDERFLOW_CLIENT_ID",
    "DataPublisher",
    "FeedHealth",
    "FlowSnapshot",
    "OrderFlowActor",
    "OrderFlowActorConfig",
    "OrderFlowBar",
    "OrderFlowSignal",
    "OrderFlowTrade",
    "WhaleTrade",
]


# Subscribers pass it as subscribe_data(..., client_id=ORDERFLOW_CLIENT_ID) and list it in the data
# engine's external_clients: the data arrives from this actor, so no data client is looked for.
ORDERFLOW_CLIENT_ID = ClientId("ORDERFLOW")
_MS = 1_000_000  # ns per ms
_ACCOUNT_TYPES: dict[str, BinanceAccountType] = {"spot": BinanceAccountType.SPOT,
                                                 "usdm": BinanceAccountType.USDT_FUTURES}


def _instrument_id(symbol: str, market: Market, venue: str = "BINANCE") -> InstrumentId:
    """The id nautilus' Binance adapter gives ``symbol``: ``BTCUSDT.BINANCE``, ``BTCUSDT-PERP.BINANCE`` on usdm."""
    return InstrumentId.from_str(f"{BinanceSymbol(symbol).parse_as_nautilus(_ACCOUNT_TYPES[market])}.{venue}")


@customdataclass
class OrderFlowTrade(Data):
    """One aggregate trade, delivered once, in id order per instrument; ``ts_event`` is its trade time."""

    instrument_id: InstrumentId = InstrumentId.from_str("BTCUSDT.BINANCE")
    trade_id: int = 0  # Binance's aggregate trade id
    price: str = "0"  # exact decimal
    quantity: str = "0"
    side: str = "buy"  # the taker's: "buy" or "sell"
    first_id: int = 0
    last_id: int = 0
    source: str = "live"  # or "backfill" (fetched over REST after a gap)


@customdataclass
class OrderFlowBar(Data):
    """One closed window; ``ts_event`` is its end (exclusive), ``start``/``end`` are ms."""

    instrument_id: InstrumentId = InstrumentId.from_str("BTCUSDT.BINANCE")
    window: str = "1m"
    start: int = 0
    end: int = 0
    open: str = "0"
    high: str = "0"
    low: str = "0"
    close: str = "0"
    volume: str = "0"
    buy_volume: str = "0"
    sell_volume: str = "0"
    delta: str = "0"
    vwap: str = "0"
    cvd: str = "0"  # cumulative volume delta at the close
    trades: int = 0  # aggregate trades
    closed_by: str = "trade"  # "trade", "timer" or "revised" (replaces the bar with the same start)


@customdataclass
class FlowSnapshot(Data):
    """The stream's running totals for one instrument, every ``flow.snapshot_interval`` s while it has trades.

    ``ts_event`` is the time of the last trade counted (so a quiet market repeats it); the totals
    are over every trade the stream delivered since it started, the same trades a subscriber to
    ``OrderFlowTrade`` has received by then. ``last_price`` is empty before the first trade. The
    last snapshot, which the stream makes as it stops, is not published: the node is stopping its
    subscribers by then (``flow.latest(symbol)["snapshot"]`` has it).

    The engine's ``Snapshot`` also carries the bar in progress per window; it is left out. Custom
    data fields are flat scalars (one Arrow column each), so a dict of bars would travel as a JSON
    string, serialized each interval and untyped for the subscriber, and it would be stale within
    the interval anyway: a subscriber has every trade since the last ``OrderFlowBar`` of a window
    and can fold them itself. ``actor.flow.latest(symbol)["snapshot"].bars`` has them on the node's loop.
    """

    instrument_id: InstrumentId = InstrumentId.from_str("BTCUSDT.BINANCE")
    last_price: str = ""  # exact decimal
    cvd: str = "0"  # cumulative volume delta: buy_volume - sell_volume
    buy_volume: str = "0"  # taker buys
    sell_volume: str = "0"
    buy_notional: str = "0"  # price * quantity summed, exact
    sell_notional: str = "0"
    trades: int = 0  # aggregate trades


@customdataclass
class WhaleTrade(Data):
    """A trade at or over a notional threshold; ``ts_event`` is its trade time."""

    instrument_id: InstrumentId = InstrumentId.from_str("BTCUSDT.BINANCE")
    trade_id: int = 0
    price: str = "0"
    quantity: str = "0"
    side: str = "buy"
    notional: str = "0"
    rule: str = "absolute"  # or "percentile"
    threshold: str = "0"


@customdataclass
class OrderFlowSignal(Data):
    """A footprint signal (docs/metrics.md, "Footprint signals"); ``kind`` says which.

    The fields a strategy filters on are flat: ``window`` is a per-bar signal's bar window (a naked
    POC's source: a window or ``"session"``; ``""`` for sweeps, tape speed and session profiles),
    ``start`` the bar's, second's or session's start in ms (a sweep's time), ``side`` ``"buy"`` or
    ``"sell"`` where the signal has one, ``price`` its level where it has one (divergence, the
    extremes, absorption, naked POC), exact decimal text. ``values`` holds every field of it as JSON
    with exact decimal strings (imbalance levels and session profiles do not flatten into columns);
    :meth:`signal` reads it back into the engine's class, equal to what ``on_metric`` got.
    ``ts_event`` is a per-bar signal's bar end, else the trade time of the trade that ended it.
    """

    instrument_id: InstrumentId = InstrumentId.from_str("BTCUSDT.BINANCE")
    kind: str = "imbalance"
    window: str = ""
    start: int = 0
    side: str = ""
    price: str = ""
    values: str = "{}"

    def signal(self) -> Metric:
        """The signal as the engine made it (an ``orderflow_plugin.signalmetrics`` class, exact Decimals)."""
        return signal_from_json(self.kind, self.values)


@customdataclass
class FeedHealth(Data):
    """A gap, a backfill, a stall or an error of the feed; ``ts_event`` is when the stream saw it.

    ``instrument`` is empty for an error of no one instrument (published with no metadata);
    ``first_id``/``last_id`` bound a gap or a backfill (0 otherwise), ``count`` is the trades
    backfilled, ``where`` what was running.
    """

    kind: str = "error"  # "gap", "backfill", "stall" or "error"
    message: str = ""
    instrument: str = ""  # "BTCUSDT.BINANCE"
    first_id: int = 0
    last_id: int = 0
    count: int = 0
    where: str = ""


class OrderFlowActorConfig(ActorConfig, frozen=True):
    """What :class:`OrderFlowActor` streams.

    ``venue`` is the suffix of the instrument ids (``BTCUSDT.BINANCE``, ``BTCUSDT-PERP.BINANCE`` on
    usdm, as nautilus' Binance adapter names them). ``settings_file`` is
    loaded over the packaged defaults (with ``ORDERFLOW_`` variables) and names everything else,
    plugins included; ``symbols``, ``market``, ``ws_url`` and ``rest_url``, when given, win over it.
    """

    symbols: tuple[str, ...] = ("BTCUSDT",)
    market: str = "spot"  # or "usdm"
    venue: str = "BINANCE"
    ws_url: str | None = None
    rest_url: str | None = None
    settings_file: str | None = None


class DataPublisher(HealthHooks):
    """A plugin of the stream that publishes its trades, bars, whales, snapshots and health through an actor.

    Its hooks run on the node's loop, where ``publish_data`` calls each subscriber's handler at once.
    Once ``closed`` (the actor's ``on_stop`` sets it) it publishes nothing more: the node is stopping
    its subscribers, while the stream may still deliver what it has read until it stops.
    """

    def __init__(self, actor: Actor, flow: OrderFlow, venue: str) -> None:
        self.published = 0
        self.closed = False
        self._publish_data = actor.publish_data
        self._clock = actor.clock
        self._venue = venue
        self._market = flow.market
        self._ids: dict[str, InstrumentId] = {}
        self._trade_types: dict[str, DataType] = {}
        self._whale_types: dict[str, DataType] = {}
        self._snapshot_types: dict[str, DataType] = {}
        self._health_types: dict[str, DataType] = {}
        self._signal_types: dict[str, DataType] = {}
        self._last_time: dict[str, int] = {}  # per symbol, the time of the last trade: when a trade's signals came
        self._window_ms: dict[str, int] = {}
        self._bar_types: dict[tuple[str, str], DataType] = {}
        self._error_type = DataType(FeedHealth)
        for symbol in flow.symbols:
            self._instrument(symbol)

    def _instrument(self, symbol: str) -> InstrumentId:
        instrument_id = self._ids.get(symbol)
        if instrument_id is None:
            instrument_id = self._ids[symbol] = _instrument_id(symbol, self._market, self._venue)
            meta = {"instrument_id": instrument_id.value}
            self._trade_types[symbol] = DataType(OrderFlowTrade, metadata=meta)
            self._whale_types[symbol] = DataType(WhaleTrade, metadata=meta)
            self._snapshot_types[symbol] = DataType(FlowSnapshot, metadata=meta)
            self._health_types[symbol] = DataType(FeedHealth, metadata=meta)
            self._signal_types[symbol] = DataType(OrderFlowSignal, metadata=meta)
        return instrument_id

    # The stream's hooks (see orderflow_plugin/hookspecs.py).

    def on_trade(self, trade: Trade) -> None:
        if self.closed:
            return
        instrument_id = self._instrument(trade.symbol)
        data = OrderFlowTrade(
            ts_event=trade.time * _MS, ts_init=self._clock.timestamp_ns(), instrument_id=instrument_id,
            trade_id=trade.id, price=_text(trade.price), quantity=_text(trade.qty), side=trade.side,
            first_id=trade.first_id, last_id=trade.last_id, source=trade.source)
        self._publish_data(self._trade_types[trade.symbol], data)
        self._last_time[trade.symbol] = trade.time
        self.published += 1

    def on_metric(self, metric: Metric) -> None:
        if self.closed:
            return
        if isinstance(metric, Bar):
            self._bar(metric)
        elif isinstance(metric, Whale):
            self._whale(metric)
        elif isinstance(metric, Snapshot):
            self._snapshot(metric)
        elif metric.kind in SIGNAL_KINDS:
            self._signal(metric)

    def _signal(self, signal: Any) -> None:
        symbol = signal.symbol
        window = getattr(signal, "window", None) or getattr(signal, "source", "")
        of_a_bar = hasattr(signal, "window") or (signal.kind == "naked_poc" and signal.status == "naked"
                                                 and window != "session")
        if of_a_bar:  # it came when its bar closed: at the bar's end
            ms = self._window_ms.get(window)
            if ms is None:
                ms = self._window_ms[window] = parse_window(window).ms
            ts = (signal.start + ms) * _MS
        else:
            ts = self._last_time.get(symbol, 0) * _MS or self._clock.timestamp_ns()
        start = getattr(signal, "start", None)
        price = getattr(signal, "price", None)
        data = OrderFlowSignal(
            ts_event=ts, ts_init=self._clock.timestamp_ns(), instrument_id=self._instrument(symbol),
            kind=signal.kind, window=window, start=signal.time if start is None else start,
            side=getattr(signal, "side", ""), price="" if price is None else _text(price),
            values=signal_json(signal).decode())
        self._publish_data(self._signal_types[symbol], data)
        self.published += 1

    def _bar(self, bar: Bar) -> None:
        instrument_id = self._instrument(bar.symbol)
        key = (bar.symbol, bar.window)
        data_type = self._bar_types.get(key)
        if data_type is None:
            data_type = self._bar_types[key] = DataType(
                OrderFlowBar, metadata={"instrument_id": instrument_id.value, "window": bar.window})
        data = OrderFlowBar(
            ts_event=bar.end * _MS, ts_init=self._clock.timestamp_ns(), instrument_id=instrument_id,
            window=bar.window, start=bar.start, end=bar.end, open=_text(bar.open), high=_text(bar.high),
            low=_text(bar.low), close=_text(bar.close), volume=_text(bar.volume), buy_volume=_text(bar.buy_volume),
            sell_volume=_text(bar.sell_volume), delta=_text(bar.delta), vwap=_text(bar.vwap), cvd=_text(bar.cvd),
            trades=bar.trades, closed_by=bar.closed_by)
        self._publish_data(data_type, data)
        self.published += 1

    def _whale(self, whale: Whale) -> None:
        trade = whale.trade
        data = WhaleTrade(
            ts_event=trade.time * _MS, ts_init=self._clock.timestamp_ns(), instrument_id=self._instrument(trade.symbol),
            trade_id=trade.id, price=_text(trade.price), quantity=_text(trade.qty), side=trade.side,
            notional=_text(whale.notional), rule=whale.rule, threshold=_text(whale.threshold))
        self._publish_data(self._whale_types[trade.symbol], data)
        self.published += 1

    def _snapshot(self, snapshot: Snapshot) -> None:
        instrument_id = self._instrument(snapshot.symbol)
        last_price = snapshot.last_price
        data = FlowSnapshot(
            ts_event=snapshot.time * _MS, ts_init=self._clock.timestamp_ns(), instrument_id=instrument_id,
            last_price="" if last_price is None else _text(last_price), cvd=_text(snapshot.cvd),
            buy_volume=_text(snapshot.buy_volume), sell_volume=_text(snapshot.sell_volume),
            buy_notional=_text(snapshot.buy_notional), sell_notional=_text(snapshot.sell_notional),
            trades=snapshot.trades)
        self._publish_data(self._snapshot_types[snapshot.symbol], data)
        self.published += 1

    def on_error(self, error: BaseException, where: str) -> None:
        if self.closed:
            return
        self._publish_data(self._error_type, _error_health(self._clock.timestamp_ns(), error, where))
        self.published += 1

    def _health(self, symbol: str, kind: str, message: str, **fields: Any) -> None:
        if self.closed:
            return
        instrument_id = self._instrument(symbol)
        now = self._clock.timestamp_ns()
        self._publish_data(self._health_types[symbol], FeedHealth(
            ts_event=now, ts_init=now, kind=kind, message=message, instrument=instrument_id.value, **fields))
        self.published += 1


def _error_health(now: int, error: BaseException, where: str) -> FeedHealth:
    return FeedHealth(ts_event=now, ts_init=now, kind="error", message=f"{where}: {error}", where=where)


def _text(value: Decimal) -> str:
    """The exact decimal as text, no exponent (``Decimal("1E+1")`` is ``"10"``)."""
    return format(value, "f")


class OrderFlowActor(Actor):
    """A nautilus actor that streams order flow onto the node's message bus as custom ``Data``.

    Add it to a ``TradingNode`` (``node.trader.add_actor(OrderFlowActor(config))``, or through an
    ``ImportableActorConfig``). It starts the stream when the node starts it, on the node's loop,
    and stops it when the node stops it; :meth:`wait_stopped` awaits the end of the stream, and
    ``dispose()`` or ``reset()`` run that stop to its end when the loop is not running. A stream
    that fails to start faults the actor, after publishing a ``FeedHealth`` error (``where="start"``).
    ``plugins`` are the stream's own (hook objects or modules), registered beside the publisher.
    """

    def __init__(self, config: OrderFlowActorConfig | None = None, *, plugins: Sequence[object] = ()) -> None:
        super().__init__(config or OrderFlowActorConfig())
        self.plugins = list(plugins)  # the stream's own plugins, registered beside the publisher on each start
        self.flow: OrderFlow | None = None
        self.publisher: DataPublisher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the node's, taken in on_start
        self._start_task: asyncio.Task[None] | None = None
        self._symbols: dict[InstrumentId, str] = {}  # in a backtest: the subscribed instruments' symbols
        self._stop_task: asyncio.Task[None] | None = None

    def build_flow(self) -> OrderFlow:
        """The stream the config describes; called on each start (a stream runs once)."""
        cfg: OrderFlowActorConfig = self.config  # type: ignore[assignment]
        overrides: dict[str, Any] = {"symbols": list(cfg.symbols), "market": cfg.market}
        if cfg.ws_url is not None:
            overrides["ws_url"] = cfg.ws_url
        if cfg.rest_url is not None:
            overrides["rest_url"] = cfg.rest_url
        if cfg.settings_file is not None:
            return OrderFlow.from_settings(load_settings([cfg.settings_file]), **overrides)
        return OrderFlow(overrides.pop("symbols"), **overrides)

    def on_start(self) -> None:
        # A BacktestEngine's actors run on its simulated clock (a TestClock), whether or not a loop runs around
        # engine.run(): the order flow of the node's own TradeTicks, never a connection.
        if isinstance(self.clock, TestClock):
            self._start_backtest()
            return
        # A TradingNode starts its actors from kernel.start_async(), a coroutine on the node's loop:
        # the running loop here is the node's.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise OrderFlowError("OrderFlowActor streams live: it needs a TradingNode, whose event loop "
                                 "runs while it starts its actors") from None
        if self._stop_task is not None and not self._stop_task.done():
            raise OrderFlowError("OrderFlowActor started again before its stream stopped")
        self._loop, self.flow, self.publisher, self._start_task, self._stop_task = loop, None, None, None, None
        try:
            flow = self.build_flow()
            publisher = DataPublisher(self, flow, self.config.venue)  # type: ignore[attr-defined]
            flow.plugins.register(publisher, name="nautilus-data-publisher")
            for plugin in self.plugins:
                flow.plugins.register(plugin)
        except Exception as exc:
            # Not raised: the trader would stop starting the node's other actors and strategies, this one
            # left STARTING. Reported once the trader has started them all, so their subscriptions see it.
            loop.call_soon(self._start_failed, exc)
            return
        self.flow, self.publisher = flow, publisher
        self._start_task = loop.create_task(flow.start(), name="orderflow start")
        self._start_task.add_done_callback(self._started)

    def _start_backtest(self) -> None:
        """In a BacktestEngine: the same stream's pipeline, engine and hooks, fed the node's TradeTicks.

        The stream is built but never connects; each ``TradeTick`` of a subscribed instrument becomes the
        aggregate trade it stands for (``trade_id`` is Binance's aggregate id, as
        :func:`orderflow_plugin.history.nautilus.write_catalog` writes it) and goes through
        ``Pipeline.prime``: in id order, once, to the same engine and publisher as live.
        """
        self._loop, self._start_task, self._stop_task = None, None, None
        flow = self.build_flow()
        publisher = DataPublisher(self, flow, self.config.venue)  # type: ignore[attr-defined]
        flow.plugins.register(publisher, name="nautilus-data-publisher")
        for plugin in self.plugins:
            flow.plugins.register(plugin)
        self.flow, self.publisher = flow, publisher
        self._symbols = {}
        for symbol in flow.symbols:
            instrument_id = _instrument_id(symbol, flow.market, self.config.venue)  # type: ignore[attr-defined]
            self._symbols[instrument_id] = symbol
            self.subscribe_trade_ticks(instrument_id)

    def on_trade_tick(self, tick: Any) -> None:
        symbol = self._symbols.get(tick.instrument_id) if self.flow is not None else None
        if symbol is None:
            return
        agg = int(tick.trade_id.value)
        ms = tick.ts_event // _MS
        side = "sell" if tick.aggressor_side == AggressorSide.SELLER else "buy"
        trade = Trade(symbol, agg, Decimal(str(tick.price)), Decimal(str(tick.size)), agg, agg, ms, side, ms,
                      self.flow.market, "archive")
        self.flow.driver.prime((trade,), self.clock.timestamp_ns() / 1e9)

    def _started(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._start_failed(error)

    def _start_failed(self, error: BaseException) -> None:
        self.log.error(f"order-flow stream failed to start: {error!r}")
        if not self.is_running:  # stopped meanwhile: nobody listens, nothing to fault
            return
        self.publish_data(DataType(FeedHealth), _error_health(self.clock.timestamp_ns(), error, "start"))
        # A feed that cannot start is not RUNNING: FAULTED (terminal, as nautilus' IB adapter does on a bad
        # account) is what the node's state and its ComponentStateChanged events then say.
        self.fault()

    def on_stop(self) -> None:
        # on_stop is synchronous and runs on the node's loop (kernel.stop_async() calls it, then waits
        # timeout_post_stop): schedule the stream's stop there; wait_stopped() awaits it, and dispose()
        # or reset() runs it to its end if the node did not wait long enough.
        self._close_stream()

    def on_fault(self) -> None:
        self._close_stream()

    def on_reset(self) -> None:
        self._close_stream()
        self._finish_stop()

    def on_dispose(self) -> None:
        self._close_stream()
        self._finish_stop()

    def _close_stream(self) -> None:
        """Stop publishing at once and schedule the stream's stop on the node's loop, once."""
        if self.publisher is not None:
            self.publisher.closed = True
        if self.flow is None or self._loop is None or self._stop_task is not None or self._loop.is_closed():
            return
        self._stop_task = self._loop.create_task(self._stop_flow(self.flow), name="orderflow stop")

    def _finish_stop(self) -> None:
        """Run the stream's stop to its end on the node's loop, unless that loop is running (then it ends there)."""
        task, loop = self._stop_task, self._loop
        if task is None or task.done() or loop is None or loop.is_running():
            return
        if loop.is_closed():  # asyncio.run() ended with the stop pending: its tasks were cancelled with it
            self.log.warning("the node's loop closed before the order-flow stream stopped: await wait_stopped()")
            return
        try:
            loop.run_until_complete(task)  # within timeouts.close: the stream's connections close by then
        except Exception as exc:
            self.log.error(f"order-flow stream failed to stop: {exc!r}")

    async def _stop_flow(self, flow: OrderFlow) -> None:
        if self._start_task is not None:
            await asyncio.gather(self._start_task, return_exceptions=True)
        await flow.stop()

    async def wait_stopped(self) -> None:
        """Return once the stream stopped after ``on_stop`` (its connections close within ``timeouts.close``)."""
        if self._stop_task is not None:
            await asyncio.shield(self._stop_task)
