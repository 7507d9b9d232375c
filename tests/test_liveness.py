"""A dead feed is found in seconds, and a quiet market is never taken for one (issue #15, section 6)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from types import SimpleNamespace

import msgspec
import pytest
from websockets.client import ClientProtocol

from orderflow_plugin import Reporting, Sequencing, Stalled, bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario
from orderflow_plugin.tape import Tape

from .flowhelpers import TIMEOUT_FACTOR, TIMEOUTS, Events, make_flow

TAPE = bundled_tape()

# The production defaults, not the suite's short test timings: these are what is being measured.
LIVENESS = replace(TIMEOUTS, stall=30.0, ping_interval=1.0, ping_timeout=2.5, silence_floor=2.0)


def spaced(gaps_ms: list[int]) -> Tape:
    """The bundled tape's first rows re-timed so that row i+1 comes gaps_ms[i] after row i."""
    rows = [TAPE.rows[0]]
    for gap, row in zip(gaps_ms, TAPE.rows[1:], strict=False):
        rows.append(msgspec.structs.replace(row, time=rows[-1].time + gap, event_time=0))
    return Tape(TAPE.symbol, TAPE.market, rows, "re-timed bundled tape")


def contiguous(ids: list[int]) -> bool:
    return ids == list(range(ids[0], ids[0] + len(ids)))


async def test_dead_path_on_a_busy_tape_found_within_five_seconds(orderflow_sim_factory) -> None:
    """Packets stop both ways (no FIN, no RST, no pong): the real tape's feed is declared dead in < 5 s."""
    sim = await orderflow_sim_factory(scenario=Scenario([[Fault("blackhole_after", after=40)]]),
                                      pace=Pace(speed=4.0))
    events = Events()
    async with make_flow(sim, events, timeouts=LIVENESS):
        await events.until(lambda e: len(e.trades) >= 40, 20)
        silent_from = time.monotonic()
        await events.until(lambda e: e.of("on_stall"), 10)
        detected = time.monotonic() - silent_from
        await events.until(lambda e: len(e.trades) >= 80, 20)
    assert detected < 5.0 * TIMEOUT_FACTOR, detected
    assert isinstance(events.of("on_disconnected")[0]["error"], Stalled)
    assert contiguous(events.ids())


@pytest.mark.parametrize("backfill", [True, False])
async def test_silent_stream_on_a_live_path_found_by_the_learned_deadline(orderflow_sim_factory, backfill) -> None:
    """Trades stop while pings are still answered: REST shows newer trades, so the feed is replaced in < 5 s,
    with backfill off too (REST is asked all the same; only the hole is then reported, not filled)."""
    sim = await orderflow_sim_factory(scenario=Scenario([[Fault("mute_after", after=60)]]), pace=Pace(speed=4.0))
    events = Events()
    async with make_flow(sim, events, timeouts=LIVENESS, sequencing=Sequencing(backfill=backfill)) as flow:
        await events.until(lambda e: len(e.trades) >= 60, 20)
        silent_from = time.monotonic()
        await events.until(lambda e: e.of("on_stall"), 10)
        detected = time.monotonic() - silent_from
        deadline = flow.silence_deadline("BTCUSDT")
        await events.until(lambda e: len(e.trades) >= 120, 20)
    stall = events.of("on_stall")[0]
    assert detected < 5.0 * TIMEOUT_FACTOR, detected
    assert stall["stage"] == "streaming" and "REST has trades" in str(events.of("on_disconnected")[0]["error"])
    assert deadline < LIVENESS.stall  # learned from the tape, not the ceiling
    ids = events.ids()
    if backfill:
        assert contiguous(ids)
    else:  # the trades muted are a reported gap; nothing comes twice or out of order
        assert ids == sorted(set(ids)) and events.of("on_gap")


async def test_with_backfill_off_and_rest_unreachable_a_silent_shard_is_replaced_at_the_stall(
        orderflow_sim_factory) -> None:
    """Backfill off and REST refused: trades stop while pings are answered, and the shard is replaced after
    timeouts.stall, as before REST was asked with backfill off (found in review: it was never replaced)."""
    sim = await orderflow_sim_factory(scenario=Scenario([[Fault("mute_after", after=60)]]), pace=Pace(speed=4.0))
    events = Events()
    timeouts = replace(LIVENESS, stall=4.0, rest=0.5)
    refused = SimpleNamespace(ws_url=sim.ws_url, rest_url="http://127.0.0.1:9")  # nothing listens there
    async with make_flow(refused, events, timeouts=timeouts, sequencing=Sequencing(backfill=False)):
        await events.until(lambda e: len(e.trades) >= 60, 20)
        silent_from = time.monotonic()
        await events.until(lambda e: e.of("on_stall"), 14.0)
        replaced_after = time.monotonic() - silent_from
    assert replaced_after >= 4.0 - 0.5  # not before the stall timeout: REST could not say the market moved
    assert "REST cannot tell" in str(events.of("on_disconnected")[0]["error"])


async def test_irregular_quiet_symbol_is_checked_not_reconnected(orderflow_sim_factory) -> None:
    """A symbol silent far past its learned deadline, with REST agreeing nothing traded, is left connected."""
    gaps = [300] * 20 + [9000] + [300] * 5  # learned deadline ~2 s, then 9 s with no trade at all
    sim = await orderflow_sim_factory(spaced(gaps), pace=Pace(speed=1.0))
    events = Events()
    async with make_flow(sim, events, timeouts=LIVENESS):
        await events.until(lambda e: len(e.trades) >= 27, 30)
    assert not events.of("on_stall") and not events.of("on_disconnected")
    assert len(events.of("on_connected")) == 1
    assert sum(1 for path, _ in sim.record.rest if "aggTrades" in path) >= 1  # it did ask REST
    assert contiguous(events.ids())


@pytest.mark.once
@pytest.mark.timeout(200)
async def test_quiet_tape_runs_two_minutes_without_reconnect(orderflow_sim_factory) -> None:
    """One trade every 20 s for two minutes, production defaults: no stall, no reconnect, every trade."""
    sim = await orderflow_sim_factory(spaced([20_000] * 6), pace=Pace(speed=1.0))
    events = Events()
    started = time.monotonic()
    async with make_flow(sim, events, timeouts=LIVENESS):
        await events.until(lambda e: len(e.trades) >= 7, 140)
    assert time.monotonic() - started >= 119
    assert not events.of("on_stall") and not events.of("on_disconnected") and not events.of("on_error")
    assert len(events.of("on_connect_attempt")) == 1
    assert events.ids() == [row.id for row in TAPE.rows[:7]]


async def test_a_loop_blocked_right_after_a_ping_is_not_taken_for_a_dead_path(orderflow_sim_factory, monkeypatch):
    """The host blocks the loop for 2x ping_timeout just after a ping: the pong read late is still a pong."""
    sim = await orderflow_sim_factory(spaced([20_000] * 3), pace=Pace(speed=1.0))
    send_ping, blocks = ClientProtocol.send_ping, []

    def ping_then_block(self, data):  # an I/O callback of the host's that hogs the loop (uvloop runs timers first)
        send_ping(self, data)
        if len(blocks) < 2:
            loop, (r, w) = asyncio.get_running_loop(), os.pipe()

            def hog() -> None:
                loop.remove_reader(r)
                os.close(r)
                time.sleep(1.0)
                blocks.append(1)

            loop.add_reader(r, hog)
            os.write(w, b"x")
            os.close(w)

    monkeypatch.setattr(ClientProtocol, "send_ping", ping_then_block)
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, ping_interval=0.3, ping_timeout=0.5),
                         reporting=Reporting(loop_block_threshold=0)):
        await events.until(lambda e: len(blocks) >= 2, 10)
        await asyncio.sleep(0.5)  # past the ping deadline of the second block
    assert not events.of("on_stall") and not events.of("on_disconnected")


@pytest.mark.parametrize("backfill", [True, False])
async def test_a_quiet_market_at_connect_keeps_the_connection(orderflow_sim_factory, backfill) -> None:
    """No trade within first_message, and REST's newest id did not move meanwhile: the market is quiet, the
    connection stays (no StageTimeout, no reconnect) and the next trade arrives on it, with backfill off too.

    Found by the simulation (seed 26): every quiet stretch longer than first_message cost a reconnect;
    with backfill off it still did (seed 132), when REST was asked only if backfill was on.
    """
    sim = await orderflow_sim_factory(spaced([5000, 5000]), pace=Pace(speed=1.0), start_on_subscribe=False)
    await asyncio.sleep(0.3)  # time passing, not an event: the first trade is in the past, the next 5 s away
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, first_message=1.0),
                         sequencing=Sequencing(backfill=backfill)) as flow:
        await events.until(lambda e: len(e.trades) >= 1, 10)
        health = flow.health()
    assert [c for c in events.of("on_error") if c["where"].startswith("connect")] == []
    assert len(events.of("on_connected")) == 1 and health["reconnects"] == 0
    assert events.ids() == [TAPE.rows[1].id]


@pytest.mark.parametrize("backfill", [True, False])
async def test_a_silent_stream_at_connect_still_fails_first_message(orderflow_sim_factory, backfill) -> None:
    """No trade within first_message while REST's newest id moved: the stream is dead, the stage fails by name."""
    sim = await orderflow_sim_factory(pace=Pace(rate=200), scenario=Scenario([[Fault("mute_after", after=0)]]))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, first_message=1.0),
                         sequencing=Sequencing(backfill=backfill)):
        await events.until(lambda e: any(c["where"] == "connect:first_message" for c in e.of("on_error")), 10)
