"""The vn.py adapter against a real vn.py EventEngine and the local simulator (issue #18)."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from vnpy.event import EVENT_TIMER, Event, EventEngine
from vnpy.trader.engine import BaseEngine, MainEngine

from orderflow_plugin import Bar, Flow, OrderFlow, OrderFlowError, Reporting, Timeouts, Trade, signals
from orderflow_plugin.adapters.vnpy import (
    EVENT_ORDERFLOW_BAR,
    EVENT_ORDERFLOW_HEALTH,
    EVENT_ORDERFLOW_TRADE,
    FeedHealth,
    OrderFlowApp,
    OrderFlowEngine,
    vt_symbol,
)
from orderflow_plugin.errors import EventBacklog
from orderflow_plugin.sim import Fault, Pace, Scenario

from .flowhelpers import TIMEOUT_FACTOR, Events
from .test_examples import EXAMPLES, user_environment

VT = "BTCUSDT_SPOT_BINANCE.GLOBAL"
CLOSED_PORT = "127.0.0.1:1"  # nothing listens: a stream pointed here starts, then fails to connect and retries
RESET = Scenario([[Fault("reset_after", after=200)]])  # the first connection is reset after 200 trades


class Handlers:
    """vn.py handlers that record each event's data and the thread they ran on, and wake the test's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.events: dict[str, list[Any]] = {}
        self.threads: dict[str, set[str]] = {}
        self.delay = 0.0  # seconds each trade handler call takes: a slow consumer
        self._loop = loop
        self._changed = asyncio.Event()

    def on(self, event_engine: EventEngine, event_type: str) -> None:
        """Record every event of ``event_type``."""
        self.events[event_type], self.threads[event_type] = [], set()
        event_engine.register(event_type, self._record)

    def _record(self, event: Event) -> None:
        if self.delay and event.type.startswith(EVENT_ORDERFLOW_TRADE):
            time.sleep(self.delay)  # the slow consumer itself, not a wait in the test
        self.events[event.type].append(event.data)
        self.threads[event.type].add(threading.current_thread().name)
        self._loop.call_soon_threadsafe(self._changed.set)

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds, re-checked as events arrive; fail after ``timeout`` s."""
        async with asyncio.timeout(timeout * TIMEOUT_FACTOR):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def ids(self, event_type: str = EVENT_ORDERFLOW_TRADE + VT) -> list[int]:
        """Trade ids of the events of ``event_type``, in arrival order."""
        return [trade.id for trade in self.events[event_type]]


@pytest.fixture
def event_engine() -> Iterator[EventEngine]:
    """A started vn.py EventEngine (its timer firing each second), stopped after the test."""
    engine = EventEngine(interval=1)
    engine.start()
    yield engine
    engine.stop()


@pytest_asyncio.fixture
async def handlers(event_engine: EventEngine) -> Handlers:
    """Handlers on the trade, bar and health types, general and per vt_symbol, and on the timer."""
    recorder = Handlers(asyncio.get_running_loop())
    for event_type in (EVENT_ORDERFLOW_TRADE, EVENT_ORDERFLOW_BAR, EVENT_ORDERFLOW_HEALTH):
        recorder.on(event_engine, event_type)
        recorder.on(event_engine, event_type + VT)
    recorder.on(event_engine, EVENT_TIMER)
    return recorder


@pytest_asyncio.fixture
async def vnpy_engine(event_engine: EventEngine) -> AsyncIterator[OrderFlowEngine]:
    """An OrderFlowEngine on the event engine (no MainEngine: it would chdir), closed after the test."""
    engine = OrderFlowEngine(None, event_engine)
    yield engine
    await asyncio.to_thread(engine.close)  # off the loop: the simulator on it answers the close handshake


def test_vt_symbols_are_vnpy_binance_names() -> None:
    """Spot symbols get vnpy_binance's _SPOT_BINANCE.GLOBAL names, USD-M perpetuals _SWAP_BINANCE.GLOBAL."""
    assert vt_symbol("BTCUSDT", "spot") == "BTCUSDT_SPOT_BINANCE.GLOBAL"
    assert vt_symbol("ETHUSDT", "usdm") == "ETHUSDT_SWAP_BINANCE.GLOBAL"


async def test_engine_thread_handlers_get_every_trade_once_in_order(orderflow_sim_factory, handlers, vnpy_engine) -> None:
    """Across a reset, vn.py handlers get every played id once, in order, on the engine's thread, beside hooks and signals."""
    sim = await orderflow_sim_factory(scenario=RESET, pace=Pace(rate=2000))
    hooks = Events()  # the stream's own plugin and signal receiver, next to the adapter
    signalled: list[int] = []

    def on_signal(sender: object, trade: Trade) -> None:
        signalled.append(trade.id)

    signals.trade.connect(on_signal)
    try:
        flow = OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=[hooks])
        vnpy_engine.start(flow)
        await handlers.until(lambda: len(handlers.ids()) >= 800 and handlers.events[EVENT_TIMER], 15)
        await asyncio.to_thread(vnpy_engine.close)
    finally:
        signals.trade.disconnect(on_signal)
    await handlers.until(lambda: len(handlers.ids()) == len(handlers.ids(EVENT_ORDERFLOW_TRADE)) == len(hooks.trades), 5)
    ids, played = handlers.ids(), sim.played_ids("BTCUSDT")
    assert ids == played[:len(ids)] and len(set(ids)) == len(ids)
    assert handlers.ids(EVENT_ORDERFLOW_TRADE) == ids  # the general type carries the same trades
    assert [t.id for t in hooks.trades] == ids == signalled  # nothing published that hooks did not get, or the reverse
    assert flow.summary()["reconnects"] == 1
    # vn.py's engine thread, the one that runs its timer events: neither the stream's thread nor the test's.
    assert handlers.threads[EVENT_ORDERFLOW_TRADE + VT] == handlers.threads[EVENT_TIMER]
    assert not handlers.threads[EVENT_TIMER] & {"orderflow", threading.current_thread().name}


async def test_bars_and_health_arrive_as_events(orderflow_sim_factory, handlers, vnpy_engine) -> None:
    """Closed bars come as eOrderFlowBar events, equal to the stream's own; the reset's gap and backfill as eOrderFlowHealth."""
    sim = await orderflow_sim_factory(scenario=RESET, pace=Pace(rate=2000))
    hooks = Events()
    flow = OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=[hooks], flow=Flow(windows=("1m",)))
    vnpy_engine.start(flow)
    await handlers.until(lambda: len(handlers.events[EVENT_ORDERFLOW_BAR + VT]) >= 2
                         and {"gap", "backfill"} <= {h.kind for h in handlers.events[EVENT_ORDERFLOW_HEALTH + VT]}, 15)
    bars = handlers.events[EVENT_ORDERFLOW_BAR + VT]
    assert all(isinstance(bar, Bar) and bar.window == "1m" for bar in bars)
    assert bars[:2] == [m for m in hooks.metrics if m.kind == "bar"][:2]
    assert [str(bar.delta) for bar in bars[:2]] == ["-0.48291000", "5.83961000"]  # the bundled real tape's first minutes
    assert handlers.events[EVENT_ORDERFLOW_BAR] == bars
    gap = next(h for h in handlers.events[EVENT_ORDERFLOW_HEALTH + VT] if h.kind == "gap")
    assert isinstance(gap, FeedHealth) and gap.vt_symbol == VT and gap.first_id <= gap.last_id
    assert gap == next(h for h in handlers.events[EVENT_ORDERFLOW_HEALTH] if h.kind == "gap")


async def test_slow_handler_backlog_is_reported_once_and_nothing_dropped(
        orderflow_sim_factory, handlers, vnpy_engine, caplog) -> None:
    """A slow vn.py handler: the backlog over its bound is reported once per interval, and every trade still arrives."""
    sim = await orderflow_sim_factory(pace=Pace(rate=5000))
    hooks = Events()
    handlers.delay = 0.002  # 250 trades/s handled against 5000 played
    flow = OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=[hooks],
                     reporting=Reporting(report_interval=60.0))
    vnpy_engine.start(flow, max_backlog=100)
    with caplog.at_level(logging.WARNING, logger="orderflow_plugin.adapters.vnpy"):
        await handlers.until(lambda: any(isinstance(h.error, EventBacklog)
                                         for h in handlers.events[EVENT_ORDERFLOW_HEALTH]), 15)
        await handlers.until(lambda: len(hooks.trades) >= 1000, 15)  # far past the bound, within one interval
        handlers.delay = 0.0
        await asyncio.to_thread(vnpy_engine.close)
    reported = [kw["error"] for kw in hooks.of("on_error") if isinstance(kw["error"], EventBacklog)]
    assert len(reported) == 1 and reported[0].bound == 100 and reported[0].backlog > 100
    assert len([r for r in caplog.records if "not yet handled" in r.getMessage()]) == 1
    # Every trade the stream delivered reaches the slow handler once the queue drains: nothing was dropped.
    await handlers.until(lambda: len(handlers.events[EVENT_ORDERFLOW_TRADE + VT]) >= len(hooks.trades), 15)
    assert handlers.ids() == [t.id for t in hooks.trades]
    assert vnpy_engine.publisher is not None and vnpy_engine.publisher.peak_backlog > 100


async def test_close_stops_the_stream_promptly_and_joins_its_thread(orderflow_sim, handlers, vnpy_engine) -> None:
    """close() with a live connection returns within the close timeout and leaves no stream thread; again is a no-op."""
    flow = vnpy_engine.start(OrderFlow(["BTCUSDT"], ws_url=orderflow_sim.ws_url, rest_url=orderflow_sim.rest_url))
    await handlers.until(lambda: len(handlers.events[EVENT_ORDERFLOW_TRADE + VT]) >= 10, 10)
    assert vnpy_engine.running and vnpy_engine.health()["vnpy"]["published"] >= 10
    started = time.monotonic()
    await asyncio.to_thread(vnpy_engine.close)  # the simulator runs on this loop: keep it serving while we wait
    assert time.monotonic() - started < flow.timeouts.close * TIMEOUT_FACTOR
    assert not vnpy_engine.running and flow.health()["state"] == "stopped"
    assert "orderflow" not in {thread.name for thread in threading.enumerate()}
    vnpy_engine.close()


class BlockingHook:
    """A stream plugin whose ``hook`` (``on_startup`` or ``on_shutdown``) blocks the stream's loop until released."""

    def __init__(self, hook: str) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        setattr(self, hook, self._block)

    def _block(self, **kwargs: Any) -> None:
        self.entered.set()
        self.release.wait(30 * TIMEOUT_FACTOR)  # the blocked hook itself, not a wait in the test


class ClosedAfter(BaseEngine):
    """A vn.py engine added after ours, recording that MainEngine.close() reached it."""

    def __init__(self, main_engine: MainEngine, event_engine: EventEngine) -> None:
        super().__init__(main_engine, event_engine, "ClosedAfter")
        self.closed = False

    def close(self) -> None:
        self.closed = True


def idle_flow(**kwargs: Any) -> OrderFlow:
    """A stream that never connects (nothing listens on its port), for lifecycle tests that need no trades."""
    return OrderFlow(["BTCUSDT"], ws_url=f"ws://{CLOSED_PORT}", rest_url=f"http://{CLOSED_PORT}", **kwargs)


def test_start_timeout_leaves_no_stream_thread(event_engine: EventEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start() that times out raises one line, and no stream thread keeps running behind the engine."""
    flow, before = idle_flow(), set(threading.enumerate())

    async def start_never_returns() -> None:  # a stream source that never answers, say
        await asyncio.Event().wait()

    monkeypatch.setattr(flow, "start", start_never_returns)
    engine = OrderFlowEngine(None, event_engine)
    with pytest.raises(OrderFlowError, match=r"^the orderflow thread did not start within 0\.2 s$"):
        engine.start(flow, timeout=0.2)
    assert not engine.running
    assert not [t for t in threading.enumerate() if t not in before and t.name == "orderflow" and t.is_alive()]
    engine.close()


def test_start_blocked_past_its_timeout_is_kept_for_close(event_engine: EventEngine) -> None:
    """A start blocked in a hook past its timeout and the stop after it raises, and the engine keeps it: close() ends it."""
    gate = BlockingHook("on_startup")
    engine = OrderFlowEngine(None, event_engine)
    with pytest.raises(OrderFlowError, match="nor stop within"):
        engine.start(idle_flow(plugins=[gate], timeouts=Timeouts(close=0.1)), timeout=0.2)
    assert engine.running  # still there, and said so: not lost
    gate.release.set()
    engine.close()
    assert not engine.running


def test_close_that_cannot_stop_logs_one_line_and_main_engine_closes_the_rest(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A stream stuck in stopping: close() logs one ERROR line instead of raising, so MainEngine.close() closes
    the engines after ours; the stream is kept, and close() again stops it once it can."""
    monkeypatch.chdir(tmp_path)  # MainEngine chdirs to vn.py's folder; this puts the test's cwd back after
    main_engine = MainEngine(EventEngine())
    engine = main_engine.add_engine(OrderFlowEngine)
    after = main_engine.add_engine(ClosedAfter)
    gate = BlockingHook("on_shutdown")
    engine.start(idle_flow(plugins=[gate], timeouts=Timeouts(close=0.1)))
    with caplog.at_level(logging.ERROR, logger="orderflow_plugin.adapters.vnpy"):
        main_engine.close()
        assert after.closed and gate.entered.is_set() and engine.running
        errors = [r.getMessage() for r in caplog.records if r.name == "orderflow_plugin.adapters.vnpy"]
        assert len(errors) == 1 and "\n" not in errors[0] and "left the stream running" in errors[0], errors
        gate.release.set()
        engine.close()
    assert not engine.running and len([r for r in caplog.records if r.name == "orderflow_plugin.adapters.vnpy"]) == 1


def test_close_while_vnpy_dispatches_skips_no_other_handler(event_engine: EventEngine) -> None:
    """Closing an engine while vn.py's thread is inside a handler of an order-flow type makes it skip no later handler."""
    engine = OrderFlowEngine(None, event_engine)
    engine.start(idle_flow())
    inside, release, received = threading.Event(), threading.Event(), threading.Event()
    seen: list[str] = []

    def slow(event: Event) -> None:  # registered after the engine's counting handler
        if event.data == "first":
            inside.set()
            release.wait(10 * TIMEOUT_FACTOR)

    def record(event: Event) -> None:  # registered after the slow one
        seen.append(event.data)
        if event.data == "second":
            received.set()

    event_engine.register(EVENT_ORDERFLOW_TRADE, slow)
    event_engine.register(EVENT_ORDERFLOW_TRADE, record)
    try:
        event_engine.put(Event(EVENT_ORDERFLOW_TRADE, "first"))
        assert inside.wait(5 * TIMEOUT_FACTOR)
        engine.close()  # on the host thread, while vn.py's thread is in slow()
        release.set()
        event_engine.put(Event(EVENT_ORDERFLOW_TRADE, "second"))
        assert received.wait(5 * TIMEOUT_FACTOR)
        assert seen == ["first", "second"]
    finally:
        release.set()
        event_engine.unregister(EVENT_ORDERFLOW_TRADE, slow)  # vn.py's thread is idle now
        event_engine.unregister(EVENT_ORDERFLOW_TRADE, record)


async def test_two_engines_on_one_event_engine_count_only_their_own(
        orderflow_sim, handlers, event_engine, vnpy_engine) -> None:
    """Two OrderFlowEngines on one EventEngine: each one's handled and backlog count its own events, not the other's."""
    other = OrderFlowEngine(None, event_engine, "OrderFlowIdle")
    other.start(idle_flow())
    try:
        vnpy_engine.start(OrderFlow(["BTCUSDT"], ws_url=orderflow_sim.ws_url, rest_url=orderflow_sim.rest_url))
        await handlers.until(lambda: len(handlers.events[EVENT_ORDERFLOW_TRADE + VT]) >= 50, 10)
        await asyncio.to_thread(vnpy_engine.close)
        mine, theirs = vnpy_engine.publisher, other.publisher
        assert mine is not None and theirs is not None
        await handlers.until(lambda: mine.handled == mine.published, 5)  # vn.py drains what was put before close
        assert mine.published >= 50 and theirs.handled <= theirs.published
        await handlers.until(lambda: theirs.handled == theirs.published, 5)
    finally:
        await asyncio.to_thread(other.close)


def test_app_adds_the_engine_to_a_main_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """main_engine.add_app(OrderFlowApp) returns an OrderFlowEngine the main engine knows and closes."""
    monkeypatch.chdir(tmp_path)  # MainEngine chdirs to vn.py's folder; this puts the test's cwd back after
    main_engine = MainEngine(EventEngine())
    try:
        engine = main_engine.add_app(OrderFlowApp)
        assert isinstance(engine, OrderFlowEngine) and main_engine.get_engine("OrderFlow") is engine
    finally:
        main_engine.close()


async def test_vnpy_bot_example_streams_in_order(orderflow_sim, tmp_path: Path) -> None:
    """examples/vnpy_bot.py, as docs/frameworks.md shows it, gets in-order trades and the tape's 1 m deltas as vn.py events."""
    bot = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "vnpy_bot.py"), "--duration", "15",
        "--ws-url", orderflow_sim.ws_url, "--rest-url", orderflow_sim.rest_url, cwd=tmp_path,
        env={**user_environment(), "HOME": str(tmp_path)},  # vn.py writes its ~/.vntrader folder here
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30 * TIMEOUT_FACTOR):
        out, err = await bot.communicate()
    assert bot.returncode == 0, err.decode()
    line = out.decode().strip().splitlines()[-1]
    # A loaded machine may make a hook wait for the GIL past its 5 ms budget: that report is the only health allowed.
    health = re.search(r", health (.*?), stream", line)
    assert health is not None and set(health.group(1).split()) <= {"-", "error:HookTooSlow"}, line
    assert line.startswith("trades ") and ", out of order 0, 1m deltas -0.48291000 +5.83961000, health " in line \
        and line.endswith(", stream thread alive False"), line


async def test_footprint_signals_arrive_as_events(orderflow_sim_factory, event_engine, handlers, vnpy_engine) -> None:
    """Footprint signals (issue #29) come as eOrderFlowSignal events, the same and in the order the hooks got them."""
    from orderflow_plugin.adapters.vnpy import EVENT_ORDERFLOW_SIGNAL
    from orderflow_plugin.signalmetrics import SIGNAL_KINDS

    handlers.on(event_engine, EVENT_ORDERFLOW_SIGNAL + VT)
    sim = await orderflow_sim_factory(pace=Pace(rate=2000))
    hooks = Events()
    flow = OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=[hooks],
                     flow=Flow(windows=("1m",), footprint_tick="1"))
    vnpy_engine.start(flow)
    await handlers.until(lambda: {"imbalance", "naked_poc", "sweep", "tape_speed"}
                         <= {s.kind for s in handlers.events[EVENT_ORDERFLOW_SIGNAL + VT]}, 15)
    got = list(handlers.events[EVENT_ORDERFLOW_SIGNAL + VT])
    assert got == [m for m in hooks.metrics if m.kind in SIGNAL_KINDS][:len(got)]
