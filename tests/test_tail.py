"""Trades REST shows beyond the last delivered one are fetched even when no later trade comes (issue #32)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from orderflow_plugin import Flow, Sequencing, Trade, bundled_tape
from orderflow_plugin.driver import CallSink
from orderflow_plugin.pipeline import Backfill, Pipeline
from orderflow_plugin.sim import Fault, Pace, Scenario, SymbolFeed
from orderflow_plugin.tape import Tape

from .flowhelpers import TIMEOUT_FACTOR, TIMEOUTS, Events, make_flow
from .test_pipeline import frame, rest_trade

# The production defaults, not the suite's short test timings: the reconnect loop was at first_message (30 s).
DEFAULTS = replace(TIMEOUTS, stall=30.0, first_message=30.0, ping_interval=1.0, ping_timeout=2.5,
                   silence_floor=2.0, rest=5.0)


def tape_of(count: int) -> Tape:
    """``count`` real trades: the bundled tape, looped past its 5,000 rows with contiguous ids."""
    tape = bundled_tape()
    feed = SymbolFeed(tape, loop=True)
    return Tape(tape.symbol, tape.market, [feed.row(i) for i in range(count)], "bundled tape, looped")


async def test_the_tail_the_socket_skipped_is_fetched_on_a_quiet_market(orderflow_sim_factory) -> None:
    """5,100 trades, the socket skips the last 100 (REST has them), then the market is quiet: all 5,100 are
    delivered within 5 s of the silence, the last 100 tagged backfill, on one connection with no reconnect.

    The issue's reproduction: the old code replaced the connection, waited first_message, called the
    market quiet and looped every 30 s, never fetching the 100 trades it named in its own log line.
    """
    tape = tape_of(5100)
    sim = await orderflow_sim_factory(tape, scenario=Scenario([[Fault("skip_ids", after=5000, count=100)]]),
                                      pace=Pace(rate=2000))
    events = Events()
    async with make_flow(sim, events, timeouts=DEFAULTS) as flow:
        await sim.wait_for(lambda record: record.market_finished, timeout=20 * TIMEOUT_FACTOR)
        silent_from = time.monotonic()
        await events.until(lambda e: len(e.trades) >= 5100, 20)
        caught_up = time.monotonic() - silent_from
        # time passing, not an event: a few silence deadlines on a quiet market with everything delivered
        await asyncio.sleep(3 * DEFAULTS.silence_floor)
        health = flow.health()
    assert events.ids() == [row.id for row in tape.rows]
    assert {t.source for t in events.trades[5000:]} == {"backfill"}
    assert caught_up < 5.0 * TIMEOUT_FACTOR, caught_up
    assert len(events.of("on_connected")) == 1 and not events.of("on_disconnected") and health["reconnects"] == 0


async def test_a_tail_missed_between_connections_that_keep_dying_is_fetched(orderflow_sim_factory) -> None:
    """The market ends while the stream reconnects, then every connection dies 0.3 s after it opens (sooner than
    any silence deadline): the missed tail is still fetched, a deadline after the last trade, not never.

    The old code looked at REST only a deadline (2 s) after each connect, so a link that kept dying sooner never
    looked: test_backfill's max_age test lost its tail whenever the market ended during a reconnect (under load).
    """
    tape = bundled_tape()
    flapping = [[Fault("max_age", seconds=0.3)]] * 100  # then the link holds: the old code looks only then
    sim = await orderflow_sim_factory(tape, scenario=Scenario([[Fault("close_after", after=4990)], *flapping]),
                                      pace=Pace(rate=2000))
    events = Events()
    async with make_flow(sim, events, timeouts=DEFAULTS):
        await sim.wait_for(lambda record: record.market_finished, timeout=20 * TIMEOUT_FACTOR)
        silent_from = time.monotonic()
        await events.until(lambda e: len(e.trades) >= len(tape.rows), 3 * DEFAULTS.silence_floor)
        caught_up = time.monotonic() - silent_from
        connections = len(sim.record.connections)
    assert events.ids() == [row.id for row in tape.rows]
    assert {t.source for t in events.trades[4990:]} == {"backfill"}
    assert connections < 1 + len(flapping), (connections, caught_up)  # fetched while the link still flapped


def tail_pipeline(**sequencing: Any) -> tuple[Pipeline, list[Trade], list[tuple[str, dict[str, Any]]], Any]:
    """A one-symbol pipeline with its trades, events and actions in lists (no loop, no socket)."""
    trades: list[Trade] = []
    events: list[tuple[str, dict[str, Any]]] = []
    sink = CallSink(trades.append, lambda metric: None, lambda hook, **kwargs: events.append((hook, kwargs)))
    pipeline = Pipeline(["BTCUSDT"], "spot", sink, sequencing=Sequencing(**sequencing), flow=Flow(enabled=False))
    return pipeline, trades, events, pipeline.outbox  # its queued actions, which nothing here carries out


def test_fill_tail_fetches_what_rest_shows_beyond_the_last_delivered_id() -> None:
    """REST's newest id 5 after 1..3 delivered: ids 4..5 are asked for, reported as a gap, delivered as backfill."""
    pipeline, trades, events, actions = tail_pipeline()
    for agg_id in (1, 2, 3):
        pipeline.receive("conn", frame(agg_id), 1.0)
    assert pipeline.fill_tail("BTCUSDT", 5, 2.0)
    assert actions[-1] == Backfill("BTCUSDT", 4, 5)
    assert ("on_gap", {"symbol": "BTCUSDT", "first_missing": 4, "last_missing": 5}) in events
    assert not pipeline.fill_tail("BTCUSDT", 5, 2.1)  # being fetched: not asked twice
    pipeline.backfilled("BTCUSDT", 4, 5, [rest_trade(4), rest_trade(5)], None, 2.2)
    assert [(t.id, t.source) for t in trades] == [(1, "live"), (2, "live"), (3, "live"), (4, "backfill"),
                                                  (5, "backfill")]
    assert not pipeline.fill_tail("BTCUSDT", 5, 3.0) and not pipeline.busy("BTCUSDT")


@pytest.mark.parametrize("case", ["backfill off", "nothing delivered", "rest not ahead", "hole open"])
def test_fill_tail_asks_for_nothing_when_it_cannot_or_need_not(case: str) -> None:
    """No fetch with backfill off, with no last id to go on from, with REST not ahead, or with a hole handled."""
    pipeline, _, _, actions = tail_pipeline(backfill=case != "backfill off")
    if case != "nothing delivered":
        pipeline.receive("conn", frame(1), 1.0)
    if case == "hole open":
        pipeline.receive("conn", frame(3), 1.0)  # id 2 missing: the reorder window runs
    assert not pipeline.fill_tail("BTCUSDT", 1 if case == "rest not ahead" else 9, 1.5)
    assert not any(type(a) is Backfill for a in actions)
