"""The pipeline's gap, backfill and backpressure rules as tables: inputs in, ids, events and actions out.

No event loop, no socket, no sleep: the ``now`` of every input is written in the row. Each row of
:data:`ROWS` is a sequence of inputs (frames with given ids, ticks, backfill answers) and exactly
what must come out: the ids delivered in order, the events (``on_gap``, ``on_backfill``,
``on_error``) and the actions for the shell, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from orderflow_plugin.backfill import BackfillFailed
from orderflow_plugin.driver import Driver
from orderflow_plugin.liveness import Liveness
from orderflow_plugin.models import Trade
from orderflow_plugin.options import Flow, Limits, Sequencing, Timeouts
from orderflow_plugin.pipeline import (
    BACKFILL_CHUNK,
    Backfill,
    FirstTrade,
    PauseReading,
    Pipeline,
    Reentered,
    ResumeReading,
    Rotate,
    Subscribed,
    WakeAt,
)

BTC, ETH = "BTCUSDT", "ETHUSDT"
A, B = "conn-a", "conn-b"  # any hashable stands for a connection
REORDER = 0.5  # binary-exact, so deadlines in the tables are exact too
REST = 5.0  # Timeouts.rest: the longest a pause lasts
REST_ERROR = "REST failed"


def frame(agg_id: int, symbol: str = BTC, ms: int | None = None) -> bytes:
    """One Binance combined-stream aggTrade frame, as the server sends it."""
    ms = agg_id if ms is None else ms
    return (f'{{"stream":"{symbol.lower()}@aggTrade","data":{{"e":"aggTrade","E":1,"s":"{symbol}","a":{agg_id},'
            f'"p":"100.0","q":"1.0","f":{agg_id},"l":{agg_id},"T":{ms},"m":false}}}}').encode()


def rest_trade(agg_id: int, symbol: str = BTC) -> Trade:
    """A trade as the Backfiller returns it."""
    return Trade(symbol, agg_id, Decimal("100.0"), Decimal("1.0"), agg_id, agg_id, agg_id, "buy", agg_id, "spot",
                 "backfill")


# Inputs


@dataclass(frozen=True)
class Frames:
    now: float
    ids: tuple[int, ...]
    source: str = A
    symbol: str = BTC


@dataclass(frozen=True)
class Raw:
    now: float
    data: bytes
    source: str = A


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class Answer:
    now: float
    first: int
    last: int
    ids: tuple[int, ...] | None  # None: every id asked for
    fail: bool
    symbol: str = BTC


@dataclass(frozen=True)
class Forget:
    source: str


def at(now: float, *ids: int, source: str = A, symbol: str = BTC) -> Frames:
    return Frames(now, ids, source, symbol)


def answer(now: float, first: int, last: int, ids: Any = None, *, fail: bool = False, symbol: str = BTC) -> Answer:
    return Answer(now, first, last, None if ids is None else tuple(ids), fail, symbol)


# Expected events


def gap(first: int, last: int, symbol: str = BTC) -> tuple[Any, ...]:
    return ("on_gap", symbol, first, last)


def filled(first: int, last: int, count: int, symbol: str = BTC) -> tuple[Any, ...]:
    return ("on_backfill", symbol, first, last, count)


def lost(first: int, last: int, why: str, symbol: str = BTC) -> tuple[Any, ...]:
    """The exact give-up report: which ids were not delivered, and why."""
    return ("on_error", "sequence", f"{symbol}: aggTrade ids {first}..{last} ({last - first + 1}) were not "
                                    f"delivered: {why}; continuing after them")


DECODE_ERROR = ("on_error", "decode", "BadFrame")
BACKFILL_ERROR = ("on_error", "backfill", "BackfillFailed")
OVERFLOW = "more than max_buffered_trades live trades waited behind it"


class Recorder:
    """The pipeline's sink and action callback: everything it said, in order."""

    def __init__(self) -> None:
        self.trades: list[Trade] = []
        self.metrics: list[Any] = []
        self.events: list[tuple[Any, ...]] = []
        self._actions: list[Any] = []
        self.pipeline: Pipeline | None = None

    @property
    def actions(self) -> list[Any]:
        """Every action the pipeline queued so far, in order (nothing here carries them out): popped from its
        outbox, as a driver pops them."""
        if self.pipeline is not None:
            outbox = self.pipeline.outbox
            while outbox:
                self._actions.append(outbox.popleft())
        return self._actions

    def trade(self, trade: Trade) -> None:
        self.trades.append(trade)

    def metric(self, metric: Any) -> None:
        self.metrics.append(metric)

    def event(self, hook: str, **kw: Any) -> None:
        if hook == "on_gap":
            self.events.append((hook, kw["symbol"], kw["first_missing"], kw["last_missing"]))
        elif hook == "on_backfill":
            self.events.append((hook, kw["symbol"], kw["first_id"], kw["last_id"], kw["count"]))
        elif kw["where"] == "sequence":  # the report users read: its text is part of the contract
            self.events.append((hook, kw["where"], str(kw["error"])))
        else:
            self.events.append((hook, kw["where"], type(kw["error"]).__name__))

    @property
    def ids(self) -> list[int]:
        return [t.id for t in self.trades]


def pipeline(recorder: Recorder, *, symbols: tuple[str, ...] = (BTC,), sequencing: dict[str, Any] | None = None,
             limits: dict[str, Any] | None = None, flow: Flow | None = None) -> Pipeline:
    recorder.pipeline = Pipeline(symbols, "spot", recorder,
                                 sequencing=Sequencing(**{"reorder_window": REORDER, **(sequencing or {})}),
                                 limits=Limits(**(limits or {})), flow=flow or Flow(enabled=False),
                                 timeouts=Timeouts(rest=REST))
    return recorder.pipeline


def feed(p: Pipeline, steps: list[Any]) -> None:
    """Carry out ``steps`` in order, as the shell or the simulation would."""
    for step in steps:
        if type(step) is Frames:
            for agg_id in step.ids:
                p.receive(step.source, frame(agg_id, step.symbol), step.now)
        elif type(step) is Raw:
            p.receive(step.source, step.data, step.now)
        elif type(step) is Tick:
            p.tick(step.now)
        elif type(step) is Answer:
            ids = range(step.first, step.last + 1) if step.ids is None else step.ids
            failed = BackfillFailed(REST_ERROR, url="https://rest", symbol=step.symbol, first=step.first,
                                    last=step.last) if step.fail else None
            p.backfilled(step.symbol, step.first, step.last, [rest_trade(i, step.symbol) for i in ids], failed,
                         step.now)
        elif type(step) is Forget:
            p.forget(step.source)
        else:
            raise AssertionError(step)


@dataclass(frozen=True)
class Row:
    steps: list[Any]
    delivered: list[int]
    events: list[tuple[Any, ...]]
    actions: list[Any]
    sequencing: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    symbols: tuple[str, ...] = (BTC,)


HELLO = FirstTrade(A)

ROWS = [
    pytest.param(Row(
        [at(0, 1, 2, 3)],
        [1, 2, 3], [], [HELLO]),
        id="in order: delivered at once"),
    pytest.param(Row(
        [at(0, *range(1, 12_001))],
        list(range(1, 12_001)), [], [HELLO], counters={"trades": 12_000, "duplicates": 0}),
        id="in order: a long run, every id exactly once"),
    pytest.param(Row(
        [at(0, 1), at(0, 2, source=B), at(0, 3), Forget(A), at(1, 4)],
        [1, 2, 3, 4], [], [HELLO, FirstTrade(B), HELLO]),
        id="first trade once per source, again after it ended"),
    pytest.param(Row(
        [at(0, 1, 2, 2, 1, 3, 5, 5, 4)],
        [1, 2, 3, 4, 5], [], [HELLO, WakeAt(0.5)], counters={"duplicates": 3, "gaps": 0}),
        id="duplicates (delivered or held) dropped and counted"),
    pytest.param(Row(
        [at(0, 1, 3), at(0.25, 2), Tick(0.5), Tick(1.0)],
        [1, 2, 3], [], [HELLO, WakeAt(0.5)], counters={"gaps": 0}),
        id="reorder window: a late frame fills the hole, never a gap"),
    pytest.param(Row(
        [at(0, 1, 3), Tick(0.49), Tick(0.5)],
        [1], [gap(2, 2)], [HELLO, WakeAt(0.5), Backfill(BTC, 2, 2)]),
        id="reorder window: a hole is a gap at its deadline, not before"),
    pytest.param(Row(
        [at(0, 1, 4), at(0.25, 2), Tick(0.5), answer(1, 3, 3)],
        [1, 2, 3, 4], [gap(3, 3), filled(3, 3, 1)], [HELLO, WakeAt(0.5), Backfill(BTC, 3, 3)]),
        id="reorder window: a late frame narrows the hole, the deadline stays"),
    pytest.param(Row(
        [at(0, 1, 4, 5), Tick(0.5), answer(1, 2, 3)],
        [1, 2, 3, 4, 5], [gap(2, 3), filled(2, 3, 2)], [HELLO, WakeAt(0.5), Backfill(BTC, 2, 3)],
        counters={"gaps": 1, "backfilled": 2, "trades": 5}),
        id="backfill: full answer"),
    pytest.param(Row(
        [at(0, 1, 6), Tick(0.5), answer(1, 2, 5, [2, 3], fail=True)],
        [1, 2, 3, 6], [gap(2, 5), filled(2, 3, 2), BACKFILL_ERROR, lost(4, 5, f"backfill failed: {REST_ERROR}")],
        [HELLO, WakeAt(0.5), Backfill(BTC, 2, 5)]),
        id="backfill: partial answer then failure, the rest given up exactly"),
    pytest.param(Row(
        [at(0, 1, 6), Tick(0.5), answer(1, 2, 5, [], fail=True)],
        [1, 6], [gap(2, 5), BACKFILL_ERROR, lost(2, 5, f"backfill failed: {REST_ERROR}")],
        [HELLO, WakeAt(0.5), Backfill(BTC, 2, 5)]),
        id="backfill: failure, the whole hole given up exactly"),
    pytest.param(Row(
        [at(0, 1, 6), Tick(0.5), answer(1, 2, 5, [2, 3, 5]), Tick(1.49), Tick(1.5), answer(2, 4, 4)],
        [1, 2, 3, 4, 5, 6], [gap(2, 5), filled(2, 5, 3), gap(4, 4), filled(4, 4, 1)],
        [HELLO, WakeAt(0.5), Backfill(BTC, 2, 5), WakeAt(1.5), Backfill(BTC, 4, 4)], counters={"gaps": 2}),
        id="backfill: short answer (REST skipped an id), the rest is a new gap, fetched again"),
    pytest.param(Row(
        [at(0, 1, 6), Tick(0.5), answer(1, 2, 5, [2, 3]), Tick(1.5), answer(2, 4, 5)],
        [1, 2, 3, 4, 5, 6], [gap(2, 5), filled(2, 3, 2), gap(4, 5), filled(4, 5, 2)],
        [HELLO, WakeAt(0.5), Backfill(BTC, 2, 5), WakeAt(1.5), Backfill(BTC, 4, 5)]),
        id="backfill: answer short at its end names only the ids filled"),
    pytest.param(Row(
        [at(0, 1, 25_002), Tick(0.5), answer(1, 2, 10_001), answer(2, 10_002, 20_001), answer(3, 20_002, 25_001)],
        list(range(1, 25_003)),
        [gap(2, 25_001), filled(2, 10_001, 10_000), filled(10_002, 20_001, 10_000), filled(20_002, 25_001, 5_000)],
        [HELLO, WakeAt(0.5), Backfill(BTC, 2, 10_001), Backfill(BTC, 10_002, 20_001), Backfill(BTC, 20_002, 25_001)],
        counters={"gaps": 1, "backfilled": 25_000}),
        id="backfill: a long hole in chunks of BACKFILL_CHUNK ids, oldest first"),
    pytest.param(Row(
        [at(0, 1, 25_002), Tick(0.5), answer(1, 2, 10_001), answer(2, 10_002, 20_001, range(10_002, 10_501), fail=True),
         Tick(3)],
        [*range(1, 10_501), 25_002],
        [gap(2, 25_001), filled(2, 10_001, 10_000), filled(10_002, 10_500, 499), BACKFILL_ERROR,
         lost(10_501, 25_001, f"backfill failed: {REST_ERROR}")],
        [HELLO, WakeAt(0.5), Backfill(BTC, 2, 10_001), Backfill(BTC, 10_002, 20_001)]),
        id="backfill: the second chunk fails midway, the rest of the hole given up exactly"),
    pytest.param(Row(
        [at(0, 1, 4, 5), Tick(0.5)],
        [1, 4, 5], [gap(2, 3), lost(2, 3, "backfill is off")], [HELLO, WakeAt(0.5)],
        sequencing={"backfill": False}),
        id="backfill off: gap reported, then given up"),
    pytest.param(Row(
        [at(0, 8, 9), Tick(0.5), answer(1, 5, 7)],
        [5, 6, 7, 8, 9], [gap(5, 7), filled(5, 7, 3)], [HELLO, WakeAt(0.5), Backfill(BTC, 5, 7)],
        sequencing={"start_from_id": 5}),
        id="start_from_id: the ids before the first live trade are backfilled"),
    pytest.param(Row(
        [at(0, 1, 3, 4, 5), Tick(0.5), answer(1, 2, 2)],
        [1, 2, 3, 4, 5], [gap(2, 2), filled(2, 2, 1)],
        [HELLO, WakeAt(0.5), PauseReading(A), WakeAt(REST), Backfill(BTC, 2, 2), ResumeReading((A,))],
        limits={"max_buffered_trades": 6}),
        id="backpressure: pause when held reaches half the buffer, resume once the hole is filled"),
    pytest.param(Row(
        [at(0, 1, 3, 4, 5), Tick(0.5), Tick(4.99), Tick(5.0), at(6, 6, 7, 8), answer(7, 2, 2), at(8, 10, 11, 12)],
        [1, 2, 3, 4, 5, 6, 7, 8], [gap(2, 2), filled(2, 2, 1)],
        [HELLO, WakeAt(0.5), PauseReading(A), WakeAt(REST), Backfill(BTC, 2, 2), ResumeReading((A,)),
         WakeAt(8.5), PauseReading(A), WakeAt(8 + REST)],
        limits={"max_buffered_trades": 6}),
        id="backpressure: a pause runs out after timeouts.rest; no new pause until the hole is filled"),
    pytest.param(Row(
        [at(0, 1, 3, 4), Tick(0.5), Tick(5.0), at(6, 5, 6, 7), answer(7, 2, 2)],
        [1, 3, 4, 5, 6, 7], [gap(2, 2), lost(2, 2, OVERFLOW)],
        [HELLO, WakeAt(0.5), PauseReading(A), WakeAt(REST), Backfill(BTC, 2, 2), ResumeReading((A,))],
        limits={"max_buffered_trades": 4}),
        id="overflow: given up with an exact report; the stale backfill answer delivers nothing"),
    pytest.param(Row(
        [at(0, 1, 3, 4), Tick(0.5), Tick(5.0), at(6, 5, 6, 7), at(7, 9, 10), Tick(7.5), answer(8, 2, 2),
         answer(9, 8, 8)],
        [1, 3, 4, 5, 6, 7, 8, 9, 10], [gap(2, 2), lost(2, 2, OVERFLOW), gap(8, 8), filled(8, 8, 1)],
        [HELLO, WakeAt(0.5), PauseReading(A), WakeAt(REST), Backfill(BTC, 2, 2), ResumeReading((A,)), WakeAt(7.5),
         PauseReading(A), WakeAt(7 + REST), Backfill(BTC, 8, 8), ResumeReading((A,))],
        limits={"max_buffered_trades": 4}),
        id="overflow: after the give-up reads may pause again; a stale answer does not disturb the next fill"),
    pytest.param(Row(
        [at(0, 1, 3), at(0, 101, 102, symbol=ETH), Tick(0.5), at(0.75, 103, symbol=ETH), answer(1, 2, 2)],
        [1, 101, 102, 103, 2, 3], [gap(2, 2), filled(2, 2, 1)], [HELLO, WakeAt(0.5), Backfill(BTC, 2, 2)],
        symbols=(BTC, ETH)),
        id="two symbols: a hole in one never holds the other"),
    pytest.param(Row(
        [at(0, 1), Raw(0, b"not json"), Raw(0, b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT"}}'),
         Raw(0, frame(2).replace(b'"100.0"', b'"NaN"')), Raw(0, frame(2).replace(b'"100.0"', b"100.0")),
         at(0, 7, symbol=ETH), at(0, 2)],
        [1, 2], [DECODE_ERROR] * 5, [HELLO], counters={"bad_frames": 5, "trades": 2}),
        id="bad frames: skipped, counted, reported where=decode (an unsubscribed symbol too)"),
    pytest.param(Row(
        [Raw(0, b'{"result":null,"id":1}'), Raw(0, b'{"error":{"code":2,"msg":"Invalid request"},"id":1}', B),
         Raw(1, b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}'),
         Raw(1, b'{"e":"serverShutdown","E":1}', B)],
        [], [],
        [Subscribed(A, 1, None), Subscribed(B, 1, {"code": 2, "msg": "Invalid request"}),
         Rotate(A, "serverShutdown"), Rotate(B, "serverShutdown")]),
        id="control: a reply is Subscribed, serverShutdown (wrapped or raw) is Rotate"),
    pytest.param(Row(
        [at(0, 1, 3), at(0.25, 2), at(0.375, 5), Tick(0.5), at(0.75, 4), Tick(1.0)],
        [1, 2, 3, 4, 5], [], [HELLO, WakeAt(0.5), WakeAt(0.875)], counters={"gaps": 0}),
        id="reorder window: a second hole gets a whole window of its own"),
]


@pytest.mark.parametrize("row", ROWS)
def test_pipeline_table(row: Row) -> None:
    """Each row's inputs produce exactly its delivered ids, events and actions, in order."""
    recorder = Recorder()
    p = pipeline(recorder, symbols=row.symbols, sequencing=row.sequencing, limits=row.limits)
    feed(p, row.steps)
    assert recorder.ids == row.delivered
    assert recorder.events == row.events
    assert recorder.actions == row.actions
    assert {k: p.counters[k] for k in row.counters} == row.counters
    assert recorder.metrics == []


def test_backfill_chunk_is_ten_thousand_ids() -> None:
    """A Backfill asks for at most BACKFILL_CHUNK (10,000) ids: ten REST pages."""
    assert BACKFILL_CHUNK == 10_000


def test_next_deadline_follows_the_wakeups() -> None:
    """next_deadline() is the nearest WakeAt still pending, and inf once nothing is."""
    recorder = Recorder()
    p = pipeline(recorder, limits={"max_buffered_trades": 4})
    assert p.next_deadline() == float("inf")
    feed(p, [at(0, 1, 3, 4)])
    assert recorder.actions[1:] == [WakeAt(0.5), PauseReading(A), WakeAt(REST)]
    assert p.next_deadline() == 0.5
    feed(p, [Tick(0.5)])
    assert p.next_deadline() == REST
    feed(p, [answer(1, 2, 2)])
    assert p.next_deadline() == float("inf")


def test_busy_while_a_hole_is_open_or_filled() -> None:
    """busy() is true from the hole opening until its backfill answer closes it."""
    recorder = Recorder()
    p = pipeline(recorder)
    feed(p, [at(0, 1)])
    assert not p.busy(BTC)
    feed(p, [at(0, 3)])
    assert p.busy(BTC)
    feed(p, [Tick(0.5)])
    assert p.busy(BTC)
    feed(p, [answer(1, 2, 2)])
    assert not p.busy(BTC)


# Metrics

BARS_ONLY = Flow(windows=("1s",), whale_notional=0, whale_percentile=0, bar_close_grace=2.0, snapshot_interval=1000.0)


def test_flow_disabled_yields_no_metrics() -> None:
    """With Flow(enabled=False) no engine runs: trades and ticks, but never a metric."""
    recorder = Recorder()
    p = pipeline(recorder, flow=Flow(enabled=False))
    for i in range(1, 50):
        p.receive(A, frame(i, ms=1000 * i), float(i))
        p.tick(i + 0.5)
    p.tick(1000.0)
    assert p.engines == {} and recorder.metrics == [] and len(recorder.trades) == 49


def test_tick_closes_a_quiet_bar_after_its_grace() -> None:
    """A bar no later trade closes is closed by tick() bar_close_grace after its end, on the trade clock."""
    recorder = Recorder()
    p = pipeline(recorder, flow=BARS_ONLY)
    p.receive(A, frame(1, ms=1_000), 10.0)  # the trade clock is 9 s behind the delivery clock
    p.tick(12.9)
    assert [m.kind for m in recorder.metrics] == ["snapshot"]  # the first tick's snapshot, no bar yet
    p.tick(13.0)
    (bar,) = recorder.metrics[1:]
    assert (bar.kind, bar.window, bar.start, bar.end, bar.trades, bar.closed_by) == ("bar", "1s", 1000, 2000, 1,
                                                                                    "timer")
    assert p.latest[BTC]["bar:1s"] is bar


def test_tick_never_closes_a_bar_while_its_hole_is_open() -> None:
    """While a hole is being backfilled no bar is closed by time: the backfilled trade lands in its bar."""
    recorder = Recorder()
    p = pipeline(recorder, flow=BARS_ONLY)
    p.receive(A, frame(1, ms=1_000), 10.0)
    p.receive(A, frame(3, ms=1_100), 10.0)
    p.tick(13.0)  # past the reorder window (a gap now) and past the bar's grace
    assert recorder.actions[-1] == Backfill(BTC, 2, 2)
    assert [m.kind for m in recorder.metrics] == ["snapshot"]
    p.backfilled(BTC, 2, 2, [rest_trade(2)], None, 14.0)
    p.tick(19.75)  # ticks come every quarter second; one 6.75 s late would mean the process was held up
    p.tick(20.0)
    bars = [m for m in recorder.metrics if m.kind == "bar"]
    assert [(b.start, b.trades, b.largest_id) for b in bars] == [(1000, 3, 1)]


# Liveness

LIVENESS_ROWS = [
    pytest.param(2.0, 30.0, [("roll", 0), ("live", 0)], 30.0, id="nothing learned yet: the ceiling"),
    pytest.param(2.0, 30.0, [("roll", 0), ("live", 0), ("live", 0.125), ("live", 0.25)], 2.0,
                 id="busy symbol: the floor"),
    pytest.param(2.0, 30.0, [("roll", 0), ("live", 0), ("live", 3), ("live", 4)], 3.5,
                 id="learned: longest gap + 0.5 s, between floor and ceiling"),
    pytest.param(2.0, 30.0, [("roll", 0), ("live", 0), ("live", 100)], 30.0, id="quiet symbol: the ceiling"),
    pytest.param(0.1, 30.0, [("roll", 0), ("live", 0), ("backfill", 10), ("live", 11)], 1.5,
                 id="a backfilled trade does not teach its outage"),
    pytest.param(0.1, 30.0, [("roll", 0), ("live", 0), ("backfill", 10)], 30.0,
                 id="backfilled trades alone teach nothing"),
    pytest.param(2.0, 30.0, [("roll", 0), ("live", 0), ("live", 5), ("roll", 120)], 5.5,
                 id="window roll: the last window is still remembered"),
    pytest.param(2.0, 30.0, [("roll", 0), ("live", 0), ("live", 5), ("roll", 120), ("roll", 240)], 30.0,
                 id="window roll: two windows later it is forgotten"),
    pytest.param(2.0, 30.0, [("roll", 0), ("live", 0), ("live", 5), ("roll", 119.9), ("roll", 239.9)], 5.5,
                 id="window roll: only once the window is over"),
    pytest.param(2.0, 30.0, [("roll", 0), ("live", 110), ("live", 118), ("roll", 120), ("live", 121), ("live", 122)],
                 8.5, id="window roll: the longer of this window's and the last one's gaps"),
]


@pytest.mark.parametrize(("floor", "ceiling", "script", "deadline"), LIVENESS_ROWS)
def test_liveness_table(floor: float, ceiling: float, script: list[tuple[str, float]], deadline: float) -> None:
    """The learned silence deadline for a sequence of deliveries and window rolls."""
    liveness = Liveness([BTC, ETH], floor=floor, ceiling=ceiling)
    for what, now in script:
        if what == "roll":
            liveness.roll(now)
        else:
            liveness.delivered(BTC, now, what == "live")
    assert liveness.deadline(BTC) == deadline
    assert liveness.deadline(ETH) == ceiling  # each symbol learns from its own gaps only


def test_pipeline_teaches_liveness_from_live_deliveries_only() -> None:
    """Through the pipeline: live gaps teach the deadline, a backfilled hole's delivery does not."""
    recorder = Recorder()
    p = pipeline(recorder)
    feed(p, [Tick(0), at(0, 1), at(3, 2), at(20, 5), Tick(20.5), answer(21, 3, 4)])
    assert recorder.ids == [1, 2, 3, 4, 5]
    # Gaps: 3 s (1 -> 2, live), then 5 is delivered after the backfill at 21 s: 1 s after 3 and 4.
    assert p.liveness.deadline(BTC) == 3.5
    assert p.liveness.last_at[BTC] == 21


class HeldFrames:
    """A connection as the driver sees it: paused, it holds frames; resumed, it hands them back at once, as
    WsConnection.resume does through its on_frames."""

    def __init__(self, driver: Driver, frames: list[bytes], now: float) -> None:
        self.driver, self.frames, self.now = driver, frames, now
        self.paused = False

    def first_trade(self) -> None:
        pass

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        while self.frames and not self.paused:
            self.driver.receive(self, self.frames.pop(0), self.now)


def test_a_gap_given_up_at_a_tick_may_resume_reading_that_closes_another_hole() -> None:
    """Frames released by a resume after tick() may close another symbol's hole due at the same time: that
    hole is judged again once they are in, and nothing re-enters the pipeline.

    Found by the simulation (seed 39819): the resume ran inside tick(), whose re-entrant frames dropped a
    deadline it was walking (KeyError). Now the driver resumes the connection after tick() returned, and the
    tick leaves the other due holes for a look right after (a WakeAt at the same time).
    """
    recorder = Recorder()
    p = pipeline(recorder, symbols=(BTC, ETH), sequencing={"backfill": False}, limits={"max_buffered_trades": 4})
    driver = Driver(p)
    connection = HeldFrames(driver, [frame(2, ETH)], 1.5)
    for now, agg_id, symbol in [(0.0, 1, BTC), (0.0, 1, ETH), (0.0, 3, BTC), (0.0, 3, ETH), (0.0, 4, BTC)]:
        driver.receive(connection, frame(agg_id, symbol), now)
    assert connection.paused
    driver.tick(1.5)  # a resume inside tick() would have raised Reentered from connection.resume()
    assert driver.due == 1.5  # the ETH hole is looked at again, now that the held frame is in
    driver.tick(1.5)
    assert [t.id for t in recorder.trades if t.symbol == ETH] == [1, 2, 3]
    assert [t.id for t in recorder.trades if t.symbol == BTC] == [1, 3, 4]
    assert [e for e in recorder.events if e[0] == "on_gap"] == [gap(2, 2)]
    assert not connection.paused and not p.outbox


class Reentering(Recorder):
    """A sink whose per-trade call feeds the pipeline another frame, as a careless hook might."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    def trade(self, trade: Trade) -> None:
        super().trade(trade)
        assert self.pipeline is not None
        try:
            self.pipeline.receive(B, frame(trade.id + 1), 1.0)
        except Reentered as exc:
            self.refused.append(str(exc))


def test_an_input_given_while_another_runs_raises() -> None:
    """The pipeline never calls out while it runs, so nothing may re-enter it: a frame fed from inside a
    delivery gets Reentered, and the pipeline takes the next input as usual."""
    recorder = Reentering()
    p = pipeline(recorder)
    p.receive(A, frame(1), 1.0)
    p.tick(1.0)
    p.receive(A, frame(2), 1.0)
    assert recorder.refused == ["Pipeline.receive called while receive runs"] * 2
    assert recorder.ids == [1, 2]


def test_bars_wait_for_the_connection_to_have_read_past_their_grace() -> None:
    """A bar is closed by the timer only once its connection read a byte past the bar's end plus the grace.

    Found by the simulation (seed 25): a path that died unnoticed let the timer close bars its lost trades
    belonged to, and the backfill after the reconnect delivered them into a second bar.
    """
    recorder = Recorder()
    p = pipeline(recorder, flow=BARS_ONLY)
    p.receive(A, frame(1, ms=1_000), 10.0)  # the trade clock is 9 s behind the delivery clock
    p.heard([BTC], 10.0)  # the connection read nothing after this: its path may be dead
    for now in (12.75, 13.0, 13.25, 20.0 - 0.25, 20.0):
        p.tick(now)
    assert [m.kind for m in recorder.metrics if m.kind == "bar"] == []
    p.heard([BTC], 13.0)  # a pong: everything sent before 13.0 is in
    p.tick(20.25)
    assert [(m.start, m.closed_by) for m in recorder.metrics if m.kind == "bar"] == [(1000, "timer")]


def test_bars_of_a_lost_feed_wait_for_a_live_trade_of_the_new_one() -> None:
    """After the connection carrying a symbol ends, no timer closes its bars until a live trade shows the
    new feed caught up: a hole that trade reveals is filled first, into its own bar."""
    recorder = Recorder()
    p = pipeline(recorder, flow=BARS_ONLY)
    p.receive(A, frame(1, ms=1_000), 10.0)
    p.feed_lost([BTC])
    for now in (13.0, 13.25, 13.5):
        p.tick(now)
    assert [m for m in recorder.metrics if m.kind == "bar"] == []
    p.receive(B, frame(3, ms=5_000), 14.0)  # the new connection's first trade reveals id 2 missing
    p.tick(14.25)
    p.tick(14.5)
    late = Trade(BTC, 2, Decimal("100.0"), Decimal("1.0"), 2, 2, 1_500, "buy", 1_500, "spot", "backfill")
    p.backfilled(BTC, 2, 2, [late], None, 14.6)  # id 2, traded at 1,500 ms while the feed was lost
    p.tick(14.75)
    bars = [(m.start, m.trades) for m in recorder.metrics if m.kind == "bar"]
    assert bars[0] == (1000, 2)  # one bar with both trades, not a second bar with the same start


def test_receive_without_now_reads_the_clock_and_a_pause_takes_its_deadline_from_it() -> None:
    """A caller that passes no ``now`` (a tool, a test) gets the pipeline's own clock, and the pause that
    half a buffer of held trades asks for gets its deadline from it (it raised TypeError)."""
    recorder = Recorder()
    clock = iter([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    p = recorder.pipeline = Pipeline((BTC,), "spot", recorder, sequencing=Sequencing(reorder_window=REORDER),
                                     limits=Limits(max_buffered_trades=4), flow=Flow(enabled=False),
                                     timeouts=Timeouts(rest=REST), clock=lambda: next(clock))
    for agg_id in (1, 3, 4):
        p.receive(A, frame(agg_id))
    assert PauseReading(A) in recorder.actions and p.next_deadline() == min(REORDER, REST)


def test_the_driver_keeps_every_pending_deadline_after_a_tick() -> None:
    """Two holes due at different times: a tick at the first leaves the driver waiting for the second (a replay,
    with no timer of its own, ticks at ``driver.due``; forgetting it left the second hole open until the end)."""
    recorder = Recorder()
    p = pipeline(recorder, symbols=(BTC, ETH), sequencing={"backfill": False, "reorder_window": 0.5})
    driver = Driver(p)
    connection = HeldFrames(driver, [], 99.0)
    driver.receive(connection, frame(1, BTC), 0.0)
    driver.receive(connection, frame(3, BTC), 0.0)  # BTC's hole: due at 0.5
    driver.receive(connection, frame(1, ETH), 0.3)
    driver.receive(connection, frame(3, ETH), 0.3)  # ETH's hole: due at 0.8
    assert driver.due == 0.5
    driver.tick(0.6)
    assert driver.due == 0.8
    driver.tick(driver.due)
    assert [e for e in recorder.events if e[0] == "on_gap"] == [gap(2, 2), gap(2, 2, ETH)]


class _Broken:
    """A connection whose first-trade stage raises (a bug in it)."""

    def first_trade(self) -> None:
        raise RuntimeError("broken connection")


def test_an_action_that_raises_is_reported_and_the_next_ones_are_carried_out() -> None:
    """A bug in one action does not strand the actions queued after it: it is an on_error, and they run."""
    recorder = Recorder()
    p = pipeline(recorder)
    errors: list[tuple[str, Any]] = []
    driver = Driver(p, emit=lambda hook, **kw: errors.append((kw["where"], kw["error"])))
    p.outbox.extend([FirstTrade(_Broken()), WakeAt(5.0)])
    driver.carry_out()
    assert driver.due == 5.0 and not p.outbox
    assert [(where, str(error)) for where, error in errors] == [("driver", "broken connection")]
