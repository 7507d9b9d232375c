"""A quiet symbol whose trades the stream lost is checked against REST while its connection's other symbol trades."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import msgspec

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario
from orderflow_plugin.tape import Tape

from .flowhelpers import TIMEOUTS, Events, make_flow

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
        await events.until(lambda e: e.ids("ETHUSDT") == [1] and e.ids("BTCUSDT"), 10)
        assert flow.silence_deadline("ETHUSDT") == STALL  # nothing learned: the ceiling
        await events.until(lambda e: 2 in e.ids("ETHUSDT"), 3 * STALL)  # until scales it
        btc_then = len(events.ids("BTCUSDT"))
    assert events.ids("ETHUSDT") == [1, 2]
    assert [t.source for t in events.trades if t.symbol == "ETHUSDT"] == ["live", "backfill"]
    assert btc_then < len(btc.rows)  # fetched while BTC was still trading, not once the whole shard fell quiet


QUIET = ("ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT")


async def test_quiet_symbols_at_the_ceiling_are_looked_at_in_turn_not_all_at_once(orderflow_sim_factory) -> None:
    """Six symbols that traded once (nothing learned: their deadline is the stall timeout) beside one trading every
    100 ms: their own looks at REST come one a second, each symbol in turn, never all at once (the old code looked
    at all of them together every stall: hundreds would spend the liveness budget, the same first ones winning)."""
    _eth, btc = two_tapes(busy_for_s=8 * STALL)
    first = bundled_tape().rows[0]
    quiet = [Tape(symbol, "spot", [msgspec.structs.replace(first, id=1, first_id=1, last_id=1, event_time=0)], "one")
             for symbol in QUIET]
    sim = await orderflow_sim_factory([*quiet, btc], pace=Pace(speed=1.0))
    events = Events()
    looks: list[tuple[float, str]] = []  # (loop time, symbol) of each newest-id request for a quiet symbol
    loop = asyncio.get_running_loop()

    def new_looks() -> None:
        for path, _status in sim.record.rest[seen[0]:]:
            symbol = next((s for s in QUIET if f"symbol={s}&" in path or path.endswith(f"symbol={s}")), None)
            if symbol is not None and "limit=1" in path:
                looks.append((loop.time(), symbol))
        seen[0] = len(sim.record.rest)

    seen = [0]
    async with make_flow(sim, events, symbols=("BTCUSDT", *QUIET), timeouts=TIMINGS):
        await events.until(lambda e: all(e.ids(s) == [1] for s in QUIET), 10)
        async with asyncio.timeout(3 * STALL + 2 * len(QUIET)):
            while len(looks) < len(QUIET) + 2:
                new_looks()
                await asyncio.sleep(0.02)  # polling the simulator's record: it has no event to wait on
    assert {symbol for _at, symbol in looks[:len(QUIET)]} == set(QUIET), looks  # each in turn
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(looks)]
    assert min(gaps) > 0.5, looks  # one a second (CEILING_SPACING), not together
