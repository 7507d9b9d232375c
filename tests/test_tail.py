"""Trades REST shows beyond the last delivered one are fetched even when no later trade comes (issue #32)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario, SymbolFeed
from orderflow_plugin.tape import Tape

from .flowhelpers import TIMEOUT_FACTOR, TIMEOUTS, Events, make_flow

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
        await events.until(lambda e: len(e.trades) >= 5100, 20 * TIMEOUT_FACTOR)
        caught_up = time.monotonic() - silent_from
        # time passing, not an event: a few silence deadlines on a quiet market with everything delivered
        await asyncio.sleep(3 * DEFAULTS.silence_floor)
        health = flow.health()
    assert events.ids() == [row.id for row in tape.rows]
    assert {t.source for t in events.trades[5000:]} == {"backfill"}
    assert caught_up < 5.0 * TIMEOUT_FACTOR, caught_up
    assert len(events.of("on_connected")) == 1 and not events.of("on_disconnected") and health["reconnects"] == 0
