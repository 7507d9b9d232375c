"""A quiet symbol whose trades the stream lost is checked against REST while its connection's other symbol trades."""

from __future__ import annotations

from dataclasses import replace

import msgspec

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario
from orderflow_plugin.tape import Tape

from .flowhelpers import TIMEOUT_FACTOR, TIMEOUTS, Events, make_flow

STALL = 4.0
TIMINGS = replace(TIMEOUTS, stall=STALL, ping_interval=1.0, ping_timeout=2.5, silence_floor=1.0)


def two_tapes(busy_for_s: float) -> tuple[Tape, Tape]:
    """ETHUSDT trades twice (ids 1 and 2, 250 ms apart) and then never again; BTCUSDT trades every 100 ms for
    ``busy_for_s`` seconds. Each tape plays from its first row: on the wire ETH's second trade is message 4."""
    rows = bundled_tape().rows
    start = rows[0].time
    eth = [msgspec.structs.replace(rows[i], id=i + 1, first_id=10 * i + 1, last_id=10 * i + 1,
                                   time=start + 250 * i, event_time=0) for i in range(2)]
    count = int(busy_for_s * 10)
    btc = [msgspec.structs.replace(row, time=start + 100 * i, event_time=0) for i, row in enumerate(rows[:count])]
    return Tape("ETHUSDT", "spot", eth, "two trades"), Tape("BTCUSDT", "spot", btc, "a trade every 100 ms")


async def test_a_quiet_symbol_with_nothing_learned_is_checked_while_the_other_symbol_trades(
        orderflow_sim_factory) -> None:
    """ETH's second trade never comes over the socket (REST has it) and ETH trades no more, so it learns no gap
    (its deadline is the stall timeout), while BTC on the same connection trades on: ETH is looked at on its own
    and its trade fetched while BTC still trades (seed 6459: the old code left it to a shard-wide look, which
    never came while BTC traded)."""
    eth, btc = two_tapes(busy_for_s=4 * STALL)
    sim = await orderflow_sim_factory([eth, btc], scenario=Scenario([[Fault("skip_ids", after=4, count=1)]]),
                                      pace=Pace(speed=1.0))
    events = Events()
    async with make_flow(sim, events, symbols=("BTCUSDT", "ETHUSDT"), timeouts=TIMINGS) as flow:
        await events.until(lambda e: e.ids("ETHUSDT") == [1] and e.ids("BTCUSDT"), 10 * TIMEOUT_FACTOR)
        assert flow.silence_deadline("ETHUSDT") == STALL  # nothing learned: the ceiling
        await events.until(lambda e: 2 in e.ids("ETHUSDT"), 3 * STALL * TIMEOUT_FACTOR)
        btc_then = len(events.ids("BTCUSDT"))
    assert events.ids("ETHUSDT") == [1, 2]
    assert [t.source for t in events.trades if t.symbol == "ETHUSDT"] == ["live", "backfill"]
    assert btc_then < len(btc.rows)  # fetched while BTC was still trading, not once the whole shard fell quiet
