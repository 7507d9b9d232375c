"""Nothing lost: gaps backfilled over REST, delivered in order exactly once, failures reported exactly."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import replace

import httpx
import pytest

from orderflow_plugin import Sequencing, StreamError, bundled_tape
from orderflow_plugin.backfill import Backfiller, BackfillFailed
from orderflow_plugin.sim import Fault, Pace, Scenario

from .flowhelpers import LIMITS, RECONNECT, TIMEOUT_FACTOR, TIMEOUTS, Events, make_flow
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
    async with make_flow(sim, events, reconnect=replace(RECONNECT, backoff_initial=0.05)) as flow:
        await sim.wait_for(lambda r: r.market_finished, 20 * TIMEOUT_FACTOR)
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
    async with make_flow(sim, events, reconnect=replace(RECONNECT, backoff_initial=0.05)):
        await sim.wait_for(lambda r: r.market_finished, 20 * TIMEOUT_FACTOR)
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
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, rest=0.3), limits=replace(LIMITS, rest_retries=1)):
        await events.until(lambda e: any(c["where"] == "sequence" for c in e.of("on_error")), 10)
        await events.until(lambda e: len(e.trades) >= 200, 10)
    assert time.monotonic() - started < 8 * TIMEOUT_FACTOR
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
    """A REST that hangs: reads pause for timeouts.rest, then past limits.max_buffered_trades the gap is
    given up (exact range reported) and held trades flow."""
    scenario = Scenario([[Fault("skip_ids", after=20, count=50)]], rest=[Fault("rest_hang", count=100)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, rest=1.0),
                         limits=replace(LIMITS, max_buffered_trades=30, rest_retries=5)):
        await events.until(lambda e: any(c["where"] == "sequence" for c in e.of("on_error")), 10)
        await events.until(lambda e: len(e.trades) >= 100, 10)
    error = next(c["error"] for c in events.of("on_error") if c["where"] == "sequence")
    assert f"aggTrade ids {FIRST + 20}..{FIRST + 69} (50) were not delivered" in str(error)
    assert "max_buffered_trades" in str(error)
    ids = events.ids()
    assert ids[:20] == list(range(FIRST, FIRST + 20)) and ids[20] == FIRST + 70 and ids == sorted(set(ids))


async def test_start_from_id_backfills_history_then_joins_live(orderflow_sim_factory) -> None:
    """sequencing.start_from_id fetches the past from REST and continues live with no seam."""
    sim = await orderflow_sim_factory(pace=Pace(rate=2000), start_on_subscribe=False)
    await sim.wait_for(lambda r: sim.happened("BTCUSDT") > 1500, 10 * TIMEOUT_FACTOR)
    events = Events()
    async with make_flow(sim, events, sequencing=Sequencing(start_from_id=FIRST + 100)) as flow:
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
    async with make_flow(sim, events, sequencing=Sequencing(backfill=False)):
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
    """With a budget of two spot calls per minute a third call is not sent: it waits when max_wait allows,
    and otherwise fails at once naming the budget and its exact ids."""
    sim = await orderflow_sim_factory(pace=Pace(asap=True))
    async with connect(sim) as ws:
        await recv_ids(ws, 100)
    patient = Backfiller(sim.rest_url, weight_per_minute=8, max_wait=120)
    hurried = Backfiller(sim.rest_url, weight_per_minute=8)  # max_wait: timeout x tries, 20 s
    try:
        await patient.fetch("BTCUSDT", FIRST, FIRST + 5)
        await patient.fetch("BTCUSDT", FIRST + 6, FIRST + 10)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(patient.fetch("BTCUSDT", FIRST + 11, FIRST + 12), 0.5)
        await hurried.fetch("BTCUSDT", FIRST, FIRST + 5)
        await hurried.fetch("BTCUSDT", FIRST + 6, FIRST + 10)
        with pytest.raises(BackfillFailed, match="weight budget of 8 a minute is spent") as failed:
            await asyncio.wait_for(hurried.fetch("BTCUSDT", FIRST + 11, FIRST + 12), 0.5 * TIMEOUT_FACTOR)
    finally:
        await patient.aclose()
        await hurried.aclose()
    assert (failed.value.first, failed.value.last) == (FIRST + 11, FIRST + 12)
    assert len(sim.record.rest) == 4


async def test_backfiller_latest_id(orderflow_sim_factory) -> None:
    """latest_id is the newest id REST has, None before anything has played."""
    sim = await orderflow_sim_factory(pace=Pace(asap=True))
    backfiller = Backfiller(sim.rest_url)
    try:
        assert await backfiller.latest_id("BTCUSDT") is None
        async with connect(sim) as ws:
            await recv_ids(ws, 100)
        assert await backfiller.latest_id("BTCUSDT") == sim.played_ids("BTCUSDT")[-1]
    finally:
        await backfiller.aclose()


async def test_backpressure_instead_of_overflow(orderflow_sim_factory) -> None:
    """At full speed with a small buffer, reads pause while a hole is filled: nothing is given up."""
    scenario = Scenario([[Fault("skip_ids", after=100, count=300)]])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(asap=True))
    events = Events()
    async with make_flow(sim, events, limits=replace(LIMITS, max_buffered_trades=200)):
        await events.until(lambda e: e.ids() and e.ids()[-1] == LAST, 20)
    assert events.ids() == list(range(FIRST, LAST + 1))
    assert not [e for e in events.of("on_error") if "not delivered" in str(e["error"])]
    assert [(g["first"], g["last"]) for g in events.of("on_gap")] == [(b["first"], b["last"])
                                                                     for b in events.of("on_backfill")]
    # Only the skipped ids came from REST: the frames held by each pause were all delivered live.
    assert [t.id for t in events.trades if t.source != "live"] == list(range(FIRST + 100, FIRST + 400))


# REST faults through the real stream: each ends filled, or in a report of exactly the ids not delivered.

def reported(events: Events) -> list[tuple[int, int]]:
    """The id ranges the stream reported as not delivered (on_error where="sequence")."""
    found = [re.search(r"aggTrade ids (\d+)\.\.(\d+) \(\d+\) were not delivered", str(c["error"]))
             for c in events.of("on_error") if c["where"] == "sequence"]
    assert all(found)
    return [(int(m[1]), int(m[2])) for m in found if m]


def assert_nothing_lost(events: Events, sim) -> None:
    """One connection all along (REST trouble never costs it); delivered ids strictly increase (none twice);
    every id up to the last was delivered or reported missing."""
    assert len(sim.record.connections) == 1 and not events.of("on_disconnected")
    ids = events.ids()
    assert ids[0] == FIRST and ids == sorted(set(ids))
    missing = [i for first, last in reported(events) for i in range(first, last + 1)]
    assert len(missing) == len(set(missing)) and set(missing).isdisjoint(ids)
    assert set(ids) | set(missing) == set(range(FIRST, ids[-1] + 1))


def rest_asked(sim) -> int:
    """How many aggTrades requests the backfill sent (any answer, or none)."""
    return sum("fromId=" in path for path, _ in sim.record.rest)


async def test_lagging_rest_short_then_empty_pages_are_retried(orderflow_sim_factory) -> None:
    """A REST trailing the stream (a short page, then empty ones) is asked again with backoff, and the hole fills."""
    scenario = Scenario([[Fault("skip_ids", after=50, count=100)]],
                        rest=[Fault("rest_short_page", after=30), Fault("rest_empty", count=2)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, limits=replace(LIMITS, rest_retries=3)):
        await events.until(lambda e: e.of("on_backfill"), 10)
        await events.until(lambda e: len(e.trades) >= 300, 10)
    assert [(b["first"], b["last"], b["count"]) for b in events.of("on_backfill")] == [
        (FIRST + 50, FIRST + 149, 100)]
    assert not events.of("on_error") and rest_asked(sim) == 4  # 30 rows, [], [], the other 70
    assert_nothing_lost(events, sim)


@pytest.mark.parametrize("then,expect", [
    (Fault("rest_empty", count=100), f"REST has no aggTrades from id {FIRST + 90} yet"),
    (Fault("rest_status", status=500, count=100), "HTTP 500"),
])
async def test_failure_after_a_short_page_keeps_what_arrived(orderflow_sim_factory, then, expect) -> None:
    """Rows that arrived before REST failed are delivered; exactly the ids after them are reported missing."""
    scenario = Scenario([[Fault("skip_ids", after=50, count=100)]], rest=[Fault("rest_short_page", after=40), then])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, rest=0.3), limits=replace(LIMITS, rest_retries=1)):
        await events.until(lambda e: reported(e), 10)
        await events.until(lambda e: len(e.trades) >= 300, 10)
    assert reported(events) == [(FIRST + 90, FIRST + 149)]
    failed = next(c["error"] for c in events.of("on_error") if c["where"] == "backfill")
    assert expect in str(failed) and (failed.first, failed.last) == (FIRST + 90, FIRST + 149)
    assert [(b["first"], b["last"], b["count"]) for b in events.of("on_backfill")] == [(FIRST + 50, FIRST + 89, 40)]
    assert_nothing_lost(events, sim)


async def test_rest_answering_429_forever_ends_in_an_exact_report(orderflow_sim_factory) -> None:
    """Each 429 waits its Retry-After and spends a try: after retries + 1 the gap is reported, exactly."""
    scenario = Scenario([[Fault("skip_ids", after=50, count=100)]],
                        rest=[Fault("rest_status", status=429, retry_after=1, count=100)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, rest=0.5), limits=replace(LIMITS, rest_retries=1)):
        await events.until(lambda e: reported(e), 10)
        await events.until(lambda e: len(e.trades) >= 300, 10)
    assert reported(events) == [(FIRST + 50, FIRST + 149)]
    waited = events.at("on_error")[0] - events.at("on_gap")[0]
    assert 1.0 <= waited < 1.0 + 0.9 * TIMEOUT_FACTOR  # one Retry-After between the two tries, none after the last
    assert "HTTP 429, Retry-After 1 s" in str(events.of("on_error")[0]["error"])
    assert rest_asked(sim) == 2
    assert_nothing_lost(events, sim)


async def test_retry_after_longer_than_max_wait_reports_at_once(orderflow_sim_factory) -> None:
    """A 429 asking for more than max_wait (timeouts.rest x tries) is not slept on: this gap and the next
    are reported at once, and REST is not asked again meanwhile."""
    scenario = Scenario([[Fault("skip_ids", after=50, count=100), Fault("skip_ids", after=400, count=10)]],
                        rest=[Fault("rest_status", status=429, retry_after=30)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, rest=0.5), limits=replace(LIMITS, rest_retries=1)):
        await events.until(lambda e: len(reported(e)) == 2, 10)
        await events.until(lambda e: len(e.trades) >= 600, 10)
    assert reported(events) == [(FIRST + 50, FIRST + 149), (FIRST + 400, FIRST + 409)]
    assert all(error - gap < 1.0 * TIMEOUT_FACTOR for gap, error in zip(events.at("on_gap"), events.at("on_error")[1::2],
                                                        strict=True))
    assert "429 (rate limited) for 30.0 s more, longer than max_wait 1 s" in str(events.of("on_error")[0]["error"])
    assert rest_asked(sim) == 1
    assert_nothing_lost(events, sim)


async def test_418_ban_reports_gaps_with_their_ids_then_backfill_resumes(orderflow_sim_factory) -> None:
    """A 418 stops backfill for its Retry-After: gaps meanwhile are reported at once with their own ids, and
    the first gap after the ban is filled."""
    # At 2000 trades/s: the ban runs from ~0.25 s to ~1.25 s; the gaps are declared at ~0.25, ~0.6 and ~2.4 s
    # (a second after the ban, so a loaded machine's lag does not move the third gap into it).
    scenario = Scenario([[Fault("skip_ids", after=100, count=20), Fault("skip_ids", after=800, count=20),
                          Fault("skip_ids", after=4400, count=20)]],
                        rest=[Fault("rest_status", status=418, retry_after=1)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=2000))
    events = Events()
    async with make_flow(sim, events):
        await events.until(lambda e: e.of("on_backfill"), 10)
        await events.until(lambda e: len(e.trades) >= 4500, 10)
    gaps = [(g["first"], g["last"]) for g in events.of("on_gap")]
    assert gaps == [(FIRST + 100, FIRST + 119), (FIRST + 800, FIRST + 819), (FIRST + 4400, FIRST + 4419)]
    failures = [c["error"] for c in events.of("on_error") if c["where"] == "backfill"]
    assert [(f.symbol, f.first, f.last) for f in failures] == [("BTCUSDT", *gap) for gap in gaps[:2]]
    assert "418" in str(failures[0]) and "paused" in str(failures[1]) and f"{gaps[1][0]}..{gaps[1][1]}" in str(failures[1])
    assert reported(events) == gaps[:2]
    assert [(b["first"], b["last"]) for b in events.of("on_backfill")] == gaps[2:]
    assert rest_asked(sim) == 2  # the 418, and the fill after it: refused at once while banned, never waited on
    assert_nothing_lost(events, sim)


async def test_burst_of_gaps_stays_within_the_weight_budget(orderflow_sim_factory) -> None:
    """Five gaps with room for three requests a minute: three are filled, two reported at once, and the
    exchange never had to answer 429."""
    holes = [Fault("skip_ids", after=after, count=10) for after in (50, 150, 250, 350, 450)]
    budget = 20 + 12  # the start's exchangeInfo (20), then three aggTrades (4 each)
    sim = await orderflow_sim_factory(scenario=Scenario([holes]), pace=Pace(rate=1000), weight_limit=budget)
    events = Events()
    async with make_flow(sim, events, limits=replace(LIMITS, rest_weight_per_minute=budget)):
        await events.until(lambda e: len(e.of("on_gap")) == 5 and len(e.of("on_backfill")) + len(reported(e)) == 5, 10)
        await events.until(lambda e: len(e.trades) >= 600, 10)
    gaps = [(g["first"], g["last"]) for g in events.of("on_gap")]
    assert gaps == [(FIRST + a, FIRST + a + 9) for a in (50, 150, 250, 350, 450)]
    assert [(b["first"], b["last"]) for b in events.of("on_backfill")] == gaps[:3]
    assert reported(events) == gaps[3:]
    assert f"weight budget of {budget} a minute is spent" in str(events.of("on_error")[0]["error"])
    assert all(status == 200 for _, status in sim.record.rest) and rest_asked(sim) == 3
    assert_nothing_lost(events, sim)


async def test_rest_answer_dripping_past_rest_timeout_is_cut_off(orderflow_sim_factory) -> None:
    """An answer that trickles in (every read on time, the whole late) is stopped at timeouts.rest and retried,
    then the gap is reported exactly."""
    scenario = Scenario([[Fault("skip_ids", after=50, count=100)]],
                        rest=[Fault("rest_slow_body", size=16, seconds=0.05, count=100)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, rest=0.3), limits=replace(LIMITS, rest_retries=1)):
        await events.until(lambda e: reported(e), 5)
        await events.until(lambda e: len(e.trades) >= 300, 10)
    assert reported(events) == [(FIRST + 50, FIRST + 149)]
    assert "failed after 2 tries: no answer within 0.3 s" in str(events.of("on_error")[0]["error"])
    assert events.at("on_error")[0] - events.at("on_gap")[0] < 3.0 * TIMEOUT_FACTOR  # the whole answer would take ~40 s
    assert_nothing_lost(events, sim)


async def test_hanging_rest_while_reads_are_paused(orderflow_sim_factory, caplog) -> None:
    """REST hangs while a hole holds many trades: reads pause for at most timeouts.rest, the connection is kept,
    and after the tries the gap is reported exactly and every held trade delivered."""
    scenario = Scenario([[Fault("skip_ids", after=20, count=50)]], rest=[Fault("rest_hang", count=100)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=2500))
    events = Events()
    caplog.set_level(logging.INFO, logger="orderflow_plugin.stream")
    # The tape's ~5,000 trades never overflow 6,000; past 3,000 held (1.2 s) reads pause, for 0.3 s;
    # the hole is given up after the reorder window, two tries and a backoff: about 2.3-2.5 s.
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, rest=0.3),
                         limits=replace(LIMITS, max_buffered_trades=6000, rest_retries=1),
                         sequencing=Sequencing(reorder_window=1.5)):
        await events.until(lambda e: reported(e), 10)
        await sim.wait_for(lambda r: r.market_finished, 10 * TIMEOUT_FACTOR)
        await events.until(lambda e: e.ids() and e.ids()[-1] == LAST, 10)
    assert "trades wait behind a hole; pausing reads" in caplog.text
    assert "reads were paused 0.3 s (timeouts.rest) for a hole still open; reading on" in caplog.text
    assert reported(events) == [(FIRST + 20, FIRST + 69)]
    assert "no answer within 0.3 s" in str(events.of("on_error")[0]["error"])
    assert_nothing_lost(events, sim)
    # REST never answers: every trade delivered came from the socket, once (a pause that re-sent or skipped
    # frames would show as a duplicate dropped or a backfilled trade, not here as a lost id).
    assert {trade.source for trade in events.trades} == {"live"}


async def test_backfill_that_raises_still_ends_in_a_report(orderflow_sim_factory) -> None:
    """A backfill failing in an unexpected way (a bug, not REST) does not leave the hole holding trades forever."""
    scenario = Scenario([[Fault("skip_ids", after=50, count=100)]])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    flow = make_flow(sim, events)

    async def broken(symbol: str, first: int, last: int) -> list:
        raise RuntimeError("a bug")

    assert flow.backfiller is not None
    flow.backfiller.fetch = broken  # type: ignore[method-assign]
    async with flow:
        await events.until(lambda e: reported(e), 5)
        await events.until(lambda e: len(e.trades) >= 300, 10)
    assert reported(events) == [(FIRST + 50, FIRST + 149)]
    assert "RuntimeError('a bug')" in str(events.of("on_error")[0]["error"])
    assert_nothing_lost(events, sim)


async def test_a_long_hole_is_fetched_and_delivered_a_chunk_at_a_time(orderflow_sim_factory) -> None:
    """A hole of 12,000 ids (a restart after a while) arrives as two chunks, each delivered before the next."""
    sim = await orderflow_sim_factory(scenario=Scenario([[Fault("skip_ids", after=100, count=12_000)]]),
                                      pace=Pace(rate=20_000), loop=True)
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, rest=2.0 * TIMEOUT_FACTOR)):
        await events.until(lambda e: len(e.trades) >= 12_300, 20)
    chunks = [(b["first"], b["last"], b["count"]) for b in events.of("on_backfill")]
    assert chunks == [(FIRST + 100, FIRST + 10_099, 10_000), (FIRST + 10_100, FIRST + 12_099, 2_000)]
    assert len(events.of("on_gap")) == 1
    assert_nothing_lost(events, sim)


class _RaisesOnce(httpx.AsyncBaseTransport):
    """The real loopback transport, but its first request raises what anyio raised once under uvloop and TLS."""

    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.raised = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.raised:
            self.raised += 1
            raise AttributeError("'NoneType' object has no attribute 'getpeername'")
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_a_client_bug_mid_request_is_retried_not_a_lost_hole(orderflow_sim_factory) -> None:
    """An exception from inside the HTTP client that is not an httpx error is one failed try: the hole still fills."""
    sim = await orderflow_sim_factory(pace=Pace(asap=True))
    async with connect(sim) as ws:
        await recv_ids(ws, 200)
    transport = _RaisesOnce()
    client = httpx.AsyncClient(transport=transport)
    backfiller = Backfiller(sim.rest_url, client=client)
    try:
        trades = await backfiller.fetch("BTCUSDT", FIRST, FIRST + 99)
    finally:
        await client.aclose()
    assert transport.raised == 1
    assert [t.id for t in trades] == list(range(FIRST, FIRST + 100))
