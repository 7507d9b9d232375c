"""Nothing lost: gaps backfilled over REST, delivered in order exactly once, failures reported exactly."""

from __future__ import annotations

import asyncio
import time

import pytest

from orderflow_plugin import StreamError, bundled_tape
from orderflow_plugin.backfill import Backfiller, BackfillFailed
from orderflow_plugin.sim import Fault, Pace, Scenario

from .flowhelpers import Events, make_flow
from .simclient import connect, recv_ids

TAPE = bundled_tape()
FIRST = TAPE.rows[0].id
LAST = TAPE.rows[-1].id


async def test_issue_scenario_delivers_exactly_the_tape(orderflow_sim_factory) -> None:
    """reset after 500, skip 300 ids, close after 1000, then normal: every tape id once, in order.

    Connection 2 also resets after 1,500 trades: otherwise it would carry the rest of the tape and
    connections 3 and 4 would never happen.
    """
    scenario = Scenario([
        [Fault("reset_after", after=500)],
        [Fault("skip_ids", after=100, count=300), Fault("reset_after", after=1500)],
        [Fault("close_after", after=1000)],
        [],
    ])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=2000))
    events = Events()
    async with make_flow(sim, events, backoff_initial=0.05) as flow:
        await sim.wait_for(lambda r: r.market_finished, 20)
        await events.until(lambda e: e.ids() and e.ids()[-1] == LAST, 10)
    assert events.ids() == list(range(FIRST, LAST + 1))
    assert len(sim.record.connections) == 4
    gaps = [(g["first"], g["last"]) for g in events.of("on_gap")]
    fills = [(b["first"], b["last"]) for b in events.of("on_backfill")]
    assert gaps == fills and len(gaps) >= 3
    assert all(b["count"] == b["last"] - b["first"] + 1 for b in events.of("on_backfill"))
    skipped = sim.record.connections[1].ids_sent
    hole = [i for i in range(skipped[0], skipped[-1]) if i not in set(skipped)]
    assert len(hole) == 300 and any(first <= hole[0] and hole[-1] <= last for first, last in gaps)
    backfilled = [t for t in events.trades if t.source == "backfill"]
    assert len(backfilled) == flow.counters["backfilled"] == sum(b["count"] for b in events.of("on_backfill"))
    assert {t.id for t in backfilled} >= set(hole)


async def test_server_max_age_closes_are_backfilled(orderflow_sim_factory) -> None:
    """Server-forced closes (Binance's 24 h cut, scaled down) lose nothing."""
    sim = await orderflow_sim_factory(scenario=Scenario(every=[Fault("max_age", seconds=0.3)]), pace=Pace(rate=2000))
    events = Events()
    async with make_flow(sim, events, backoff_initial=0.05):
        await sim.wait_for(lambda r: r.market_finished, 20)
        await events.until(lambda e: e.ids() and e.ids()[-1] == LAST, 10)
    assert len(sim.record.connections) >= 5
    assert events.ids() == list(range(FIRST, LAST + 1))


@pytest.mark.parametrize("rest_fault,expect", [
    (Fault("rest_status", status=500, count=100), "HTTP 500"),
    (Fault("rest_hang", count=100), "no answer within 0.3 s"),
])
async def test_failing_rest_gives_up_with_exact_range_and_stream_goes_on(orderflow_sim_factory, rest_fault, expect) -> None:
    """A REST that 500s or hangs ends in an error naming the exact missing ids; live trades continue after it."""
    scenario = Scenario([[Fault("skip_ids", after=50, count=100)]], rest=[rest_fault])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    started = time.monotonic()
    async with make_flow(sim, events, rest_timeout=0.3, rest_retries=1):
        await events.until(lambda e: any(c["where"] == "sequence" for c in e.of("on_error")), 10)
        await events.until(lambda e: len(e.trades) >= 200, 10)
    assert time.monotonic() - started < 8
    failed = next(c["error"] for c in events.of("on_error") if c["where"] == "backfill")
    assert isinstance(failed, BackfillFailed) and expect in str(failed)
    gap = events.of("on_gap")[0]
    given_up = next(c["error"] for c in events.of("on_error") if c["where"] == "sequence")
    assert f"aggTrade ids {gap['first']}..{gap['last']}" in str(given_up)
    ids = events.ids()
    assert ids == sorted(set(ids))  # in order, once
    assert set(range(gap["first"], gap["last"] + 1)).isdisjoint(ids)
    assert ids[-1] > gap["last"] + 50


async def test_rest_429_waits_retry_after_then_fills(orderflow_sim_factory) -> None:
    """A 429 with Retry-After is honoured and the gap is still filled."""
    scenario = Scenario([[Fault("skip_ids", after=50, count=100)]],
                        rest=[Fault("rest_status", status=429, retry_after=1)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events):
        await events.until(lambda e: e.of("on_backfill"), 10)
        await events.until(lambda e: len(e.trades) >= 300, 10)
    assert events.at("on_backfill")[0] - events.at("on_gap")[0] >= 1.0
    assert events.ids() == list(range(FIRST, FIRST + len(events.ids())))


async def test_overflow_gives_up_gap_and_reports_range(orderflow_sim_factory) -> None:
    """A REST that hangs: reads pause for rest_timeout, then past max_buffered_trades the gap is
    given up (exact range reported) and held trades flow."""
    scenario = Scenario([[Fault("skip_ids", after=20, count=50)]], rest=[Fault("rest_hang", count=100)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, max_buffered_trades=30, rest_timeout=1.0, rest_retries=5):
        await events.until(lambda e: any(c["where"] == "sequence" for c in e.of("on_error")), 10)
        await events.until(lambda e: len(e.trades) >= 100, 10)
    error = next(c["error"] for c in events.of("on_error") if c["where"] == "sequence")
    assert f"aggTrade ids {FIRST + 20}..{FIRST + 69} (50) were not delivered" in str(error)
    assert "max_buffered_trades" in str(error)
    ids = events.ids()
    assert ids[:20] == list(range(FIRST, FIRST + 20)) and ids[20] == FIRST + 70 and ids == sorted(set(ids))


async def test_start_from_id_backfills_history_then_joins_live(orderflow_sim_factory) -> None:
    """start_from_id fetches the past from REST and continues live with no seam."""
    sim = await orderflow_sim_factory(pace=Pace(rate=2000), start_on_subscribe=False)
    await sim.wait_for(lambda r: sim.happened("BTCUSDT") > 1500, 10)
    events = Events()
    async with make_flow(sim, events, start_from_id=FIRST + 100) as flow:
        await events.until(lambda e: len(e.trades) >= 2500, 10)
        ids = events.ids()  # taken together with the history: no await in between
        history = flow.history("btcusdt")
        since = events.trades[-10].time
        recent = flow.history("BTCUSDT", since=since)
    assert ids == list(range(FIRST + 100, FIRST + 100 + len(ids)))
    assert events.trades[0].source == "backfill" and events.trades[-1].source == "live"
    assert [t.id for t in history] == ids[-len(history):]
    assert [t.id for t in recent][-10:] == ids[-10:] and all(t.time >= since for t in recent)


async def test_backfill_off_reports_each_gap(orderflow_sim_factory) -> None:
    """With backfill off a gap is reported and skipped at once, naming the ids."""
    sim = await orderflow_sim_factory(scenario=Scenario([[Fault("skip_ids", after=20, count=10)]]), pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, backfill=False):
        await events.until(lambda e: len(e.trades) >= 50, 10)
    assert "backfill is off" in str(events.of("on_error")[0]["error"])
    assert isinstance(events.of("on_error")[0]["error"], StreamError)


async def test_backfiller_pages_through_large_holes(orderflow_sim_factory) -> None:
    """A 2,500-id hole takes three pages of 1000 and comes back complete and in order."""
    sim = await orderflow_sim_factory(pace=Pace(asap=True))
    async with connect(sim) as ws:
        await recv_ids(ws, 5000, timeout=20)
    backfiller = Backfiller(sim.rest_url)
    try:
        trades = await backfiller.fetch("BTCUSDT", FIRST + 1000, FIRST + 3499)
    finally:
        await backfiller.aclose()
    assert [t.id for t in trades] == list(range(FIRST + 1000, FIRST + 3500))
    assert backfiller.requests == 3 and all(t.source == "backfill" for t in trades)
    row = TAPE.rows[1000]
    assert (str(trades[0].price), str(trades[0].qty), trades[0].time) == (row.price, row.qty, row.time)


async def test_backfiller_418_stops_all_backfill(orderflow_sim_factory) -> None:
    """A 418 (IP ban) fails at once with a clear error, and later fetches are refused until it ends."""
    sim = await orderflow_sim_factory(scenario=Scenario(rest=[Fault("rest_status", status=418, retry_after=120)]))
    backfiller = Backfiller(sim.rest_url)
    try:
        with pytest.raises(BackfillFailed, match="418 \\(IP banned for request weight\\); backfill stops for 120 s"):
            await backfiller.fetch("BTCUSDT", FIRST, FIRST + 10)
        with pytest.raises(BackfillFailed, match="paused"):
            await backfiller.fetch("BTCUSDT", FIRST, FIRST + 10)
    finally:
        await backfiller.aclose()
    assert len(sim.record.rest) == 1


async def test_backfiller_keeps_within_weight_budget(orderflow_sim_factory) -> None:
    """With a budget of two spot calls per minute, a third call waits instead of being sent."""
    sim = await orderflow_sim_factory(pace=Pace(asap=True))
    async with connect(sim) as ws:
        await recv_ids(ws, 100)
    backfiller = Backfiller(sim.rest_url, weight_per_minute=8)
    try:
        await backfiller.fetch("BTCUSDT", FIRST, FIRST + 5)
        await backfiller.fetch("BTCUSDT", FIRST + 6, FIRST + 10)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(backfiller.fetch("BTCUSDT", FIRST + 11, FIRST + 12), 0.5)
    finally:
        await backfiller.aclose()
    assert len(sim.record.rest) == 2


async def test_backpressure_instead_of_overflow(orderflow_sim_factory) -> None:
    """At full speed with a small buffer, reads pause while a hole is filled: nothing is given up."""
    scenario = Scenario([[Fault("skip_ids", after=100, count=300)]])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(asap=True))
    events = Events()
    async with make_flow(sim, events, max_buffered_trades=200):
        await events.until(lambda e: e.ids() and e.ids()[-1] == LAST, 20)
    assert events.ids() == list(range(FIRST, LAST + 1))
    assert not [e for e in events.of("on_error") if "not delivered" in str(e["error"])]
    assert [(g["first"], g["last"]) for g in events.of("on_gap")] == [(b["first"], b["last"])
                                                                     for b in events.of("on_backfill")]
