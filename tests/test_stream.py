"""OrderFlow against the simulator: every fault ends with trades flowing and the stage named."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from orderflow_plugin import (
    BadFrame,
    ConnectionLost,
    GaveUp,
    HandshakeRejected,
    OrderFlow,
    OrderFlowError,
    Reporting,
    StageTimeout,
    Stalled,
    Timeouts,
    bundled_tape,
    signals,
)
from orderflow_plugin.liveness import TRADE_GRACE
from orderflow_plugin.sim import Fault, Pace, Scenario
from orderflow_plugin.tape import Tape

from .flowhelpers import LIMITS, RECONNECT, TIMEOUT_FACTOR, TIMEOUTS, Events, make_flow

TAPE = bundled_tape()
FIRST = TAPE.rows[0].id


def one(*faults: Fault) -> Scenario:
    """Connection 1 gets ``faults``; later connections are normal."""
    return Scenario([list(faults)])


def contiguous(ids: list[int]) -> bool:
    return ids == list(range(ids[0], ids[0] + len(ids)))


async def test_streams_trades_and_reports_every_stage(orderflow_sim_factory) -> None:
    """Trades arrive in id order from the first; on_connected carries the time of every stage."""
    sim = await orderflow_sim_factory(pace=Pace(rate=2000))
    events = Events()
    async with make_flow(sim, events) as flow:
        await events.until(lambda e: len(e.trades) >= 300, 10)
        health = flow.health()
    assert events.ids()[:300] == list(range(FIRST, FIRST + 300))
    assert events.of("on_connect_attempt")[0] == {"attempt": 1, "url": sim.ws_url, "symbols": ("BTCUSDT",)}
    timings = events.of("on_connected")[0]["stage_timings"]
    assert list(timings) == ["resolve", "tcp_connect", "http_upgrade", "subscribed", "first_message"]
    assert health["state"] == "running" and health["connections"][0]["stage"] == "streaming"
    assert health["symbols"]["BTCUSDT"]["last_id"] >= FIRST + 299
    assert events.of("on_shutdown")[0]["summary"]["trades"] == len(events.trades)


async def test_hang_before_handshake_named_within_deadline(orderflow_sim_factory) -> None:
    """A server that never answers the upgrade is named within its deadline + 1 s, then trades flow."""
    sim = await orderflow_sim_factory(scenario=one(Fault("hang_before_handshake")), pace=Pace(rate=500))
    events = Events()
    started = time.monotonic()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, http_upgrade=1.0)):
        await events.until(lambda e: e.of("on_error"), 5)
        detected = time.monotonic() - started
        await events.until(lambda e: len(e.trades) >= 10, 10)
    error = events.of("on_error")[0]["error"]
    assert isinstance(error, StageTimeout) and error.stage == "http_upgrade"
    assert str(error) == f"handshake with 127.0.0.1:{sim.port} got no HTTP response within 1.0 s"
    assert events.of("on_error")[0]["where"] == "connect:http_upgrade"
    assert 1.0 <= detected < 1.0 + 1.0 * TIMEOUT_FACTOR
    assert [c["attempt"] for c in events.of("on_connect_attempt")] == [1, 2]


async def test_hang_after_handshake_named_as_first_message(orderflow_sim_factory) -> None:
    """An upgraded, subscribed connection that never sends a trade fails its first_message deadline."""
    sim = await orderflow_sim_factory(scenario=one(Fault("hang_after_handshake")), pace=Pace(rate=500))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, first_message=1.0)):
        await events.until(lambda e: e.of("on_error"), 5)
        await events.until(lambda e: len(e.trades) >= 10, 10)
    error = events.of("on_error")[0]["error"]
    assert isinstance(error, StageTimeout) and error.stage == "first_message"
    # From the connect attempt, not from before the stream started: counted from there, three runs on a loaded
    # machine took 2.1 to 2.5 s, the start-up included (issue #25).
    detected = events.at("on_error")[0] - events.at("on_connect_attempt")[0]
    assert "no trade from 127.0.0.1" in str(error) and detected < 2.0 * TIMEOUT_FACTOR


async def test_blackhole_detected_by_stall_watchdog(orderflow_sim_factory) -> None:
    """A connection that goes silent with TCP open is replaced within timeouts.stall + 1 s."""
    sim = await orderflow_sim_factory(scenario=one(Fault("blackhole_after", after=50)), pace=Pace(rate=500))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, stall=1.0)):
        await events.until(lambda e: len(e.trades) >= 50, 5)
        silent_from = time.monotonic()
        await events.until(lambda e: e.of("on_stall"), 5)
        detected = time.monotonic() - silent_from
        await events.until(lambda e: len(e.trades) >= 100, 10)
    stall = events.of("on_stall")[0]
    assert stall["symbols"] == ("BTCUSDT",) and stall["stage"] == "streaming" and stall["silent_for"] >= 1.0
    # REST is asked twice, each look waiting TRADE_GRACE (issue #32: the tail is fetched, then only REST moving
    # again with nothing live replaces the connection); still before the keepalive's 1 + 2.5 s would
    assert detected < 1.0 + 2 * TRADE_GRACE + 1.0 * TIMEOUT_FACTOR
    assert isinstance(events.of("on_disconnected")[0]["error"], Stalled)
    assert contiguous(events.ids())  # the silent stretch was backfilled


@pytest.mark.parametrize("fault,code", [
    (Fault("close_after", after=50, code=1008), 1008),
    (Fault("reset_after", after=50), None),
])
async def test_close_and_reset_reconnect_without_watchdog(orderflow_sim_factory, fault: Fault, code) -> None:
    """A close frame or a reset is seen at once (not by the 30 s watchdog) and the stream resumes."""
    sim = await orderflow_sim_factory(scenario=one(fault), pace=Pace(rate=500))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, stall=30.0)):
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= 150, 5)
    disconnected = events.of("on_disconnected")[0]
    assert disconnected["code"] == code and isinstance(disconnected["error"], ConnectionLost)
    assert events.at("on_connected")[1] - events.at("on_disconnected")[0] < 1.0 * TIMEOUT_FACTOR
    assert events.of("on_reconnect_scheduled")[0]["attempt"] == 1
    assert contiguous(events.ids())


async def test_server_shutdown_rotates_make_before_break(orderflow_sim_factory) -> None:
    """On serverShutdown a new connection is delivering before the old one closes: no gap at all."""
    sim = await orderflow_sim_factory(scenario=one(Fault("server_shutdown_after", after=50, seconds=1.0)),
                                      pace=Pace(rate=500))
    events = Events()
    async with make_flow(sim, events) as flow:
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= 200, 5)
        assert flow.counters["rotations"] == 1
    assert events.of("on_gap") == []  # overlap, not a hole
    assert contiguous(events.ids())
    assert sim.record.connections[0].closed.startswith(("client close frame", "server close 1001"))


async def test_http_429_waits_for_retry_after(orderflow_sim_factory) -> None:
    """A 429 on the upgrade delays the next attempt by at least Retry-After."""
    sim = await orderflow_sim_factory(scenario=one(Fault("http_status", status=429, retry_after=1)),
                                      pace=Pace(rate=500))
    events = Events()
    async with make_flow(sim, events):
        await events.until(lambda e: len(e.trades) >= 5, 5)
    error = events.of("on_error")[0]["error"]
    assert isinstance(error, HandshakeRejected) and error.status == 429 and error.retry_after == 1
    assert events.of("on_reconnect_scheduled")[0]["delay"] >= 1.0
    assert events.at("on_connect_attempt")[1] - events.at("on_connect_attempt")[0] >= 1.0


async def test_ten_rotations_lose_and_repeat_nothing(orderflow_sim_factory) -> None:
    """Ten make-before-break rotations (reconnect.max_connection_age scaled down) deliver every id exactly once."""
    sim = await orderflow_sim_factory(pace=Pace(rate=2000))
    events = Events()
    async with make_flow(sim, events, reconnect=replace(RECONNECT, max_connection_age=0.2)) as flow:
        await events.until(lambda e: len(e.of("on_connected")) >= 11, 15)
    assert flow.counters["rotations"] >= 10
    assert events.of("on_gap") == []
    ids = events.ids()
    assert ids == list(range(FIRST, FIRST + len(ids)))  # none missing, none twice
    assert flow.counters["duplicates"] > 0  # the overlaps were real and were dropped


async def test_three_symbols_over_two_shards(orderflow_sim_factory) -> None:
    """With two streams per connection, three symbols use two connections and each gets every trade."""
    tapes = [TAPE, Tape("ETHUSDT", "spot", TAPE.rows[:1000], "test"), Tape("SOLUSDT", "spot", TAPE.rows[:1000], "test")]
    sim = await orderflow_sim_factory(tapes, pace=Pace(speed=100))
    events = Events()
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    async with make_flow(sim, events, symbols=symbols, timeouts=replace(TIMEOUTS, stall=60.0),
                         limits=replace(LIMITS, streams_per_connection=2)):
        await sim.wait_for(lambda r: r.market_finished, 20 * TIMEOUT_FACTOR)
        await events.until(lambda e: all(e.ids(s) and e.ids(s)[-1] == sim.played_ids(s)[-1] for s in symbols), 5)
    assert [c.streams for c in sim.record.connections] in (
        [["btcusdt@aggTrade", "ethusdt@aggTrade"], ["solusdt@aggTrade"]],
        [["solusdt@aggTrade"], ["btcusdt@aggTrade", "ethusdt@aggTrade"]],
    )
    for symbol in symbols:  # live from each symbol's first trade on its connection, nothing missing after it
        ids, played = events.ids(symbol), sim.played_ids(symbol)
        # The second connection subscribes a moment after the market started (at 700 trades/s a few ms is a
        # few trades; 9 under a loaded CI): what matters is that nothing is missing once it delivers.
        assert ids == played[played.index(ids[0]):] and played.index(ids[0]) < 100


@pytest.mark.parametrize("variant", ["truncated", "not_json", "wrong_types"])
async def test_bad_frame_counted_reported_and_skipped(orderflow_sim_factory, variant: str) -> None:
    """A malformed frame is reported through on_error and skipped; the connection stays up."""
    sim = await orderflow_sim_factory(scenario=one(Fault("malformed_after", after=20, variant=variant)),
                                      pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events) as flow:
        await events.until(lambda e: len(e.trades) >= 60, 5)
    errors = events.of("on_error")
    assert len(errors) == 1 and isinstance(errors[0]["error"], BadFrame) and errors[0]["where"] == "decode"
    assert flow.counters["bad_frames"] == 1 and len(sim.record.connections) == 1
    assert contiguous(events.ids())


async def test_oversized_frame_closes_and_reconnects(orderflow_sim_factory) -> None:
    """A frame over limits.max_size ends the connection with a clear reason; the stream reconnects."""
    sim = await orderflow_sim_factory(scenario=one(Fault("oversized_frame", after=20, size=200_000)),
                                      pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, limits=replace(LIMITS, max_size=100_000)):
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= 60, 5)
    error = events.of("on_disconnected")[0]["error"]
    assert error.code == 1009 and "over max_size (100000 bytes)" in str(error)
    assert contiguous(events.ids())


async def test_max_attempts_gives_up_loudly(orderflow_sim_factory) -> None:
    """When reconnect.max_attempts are spent the stream says what it tried and why each failed."""
    sim = await orderflow_sim_factory(scenario=Scenario(every=[Fault("hang_before_handshake")]))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, http_upgrade=0.2),
                         reconnect=replace(RECONNECT, max_attempts=3)) as flow:
        await events.until(lambda e: any(isinstance(c["error"], GaveUp) for c in e.of("on_error")), 10)
        assert flow.health()["connections"][0]["state"] == "failed"
    gave_up = events.of("on_error")[-1]["error"]
    assert "after 3 attempts" in str(gave_up) and str(gave_up).count("got no HTTP response within 0.2 s") == 3


async def test_closed_port_is_a_tcp_connect_error(unused_tcp_port: int) -> None:
    """Nothing listening: the error names the tcp_connect stage and the endpoint, and retries go on."""
    events = Events()

    class Sim:
        ws_url, rest_url = f"ws://127.0.0.1:{unused_tcp_port}", f"http://127.0.0.1:{unused_tcp_port}"

    async with make_flow(Sim(), events):
        await events.until(lambda e: len(e.of("on_connect_attempt")) >= 3, 10)
    error = events.of("on_error")[0]
    assert error["where"] == "connect:tcp_connect" and f"TCP connect to 127.0.0.1:{unused_tcp_port} failed" in str(error["error"])


@pytest.mark.parametrize("stage", ["connecting", "backoff", "streaming", "backfill"])
async def test_stop_in_every_stage_is_prompt_and_leaves_nothing(orderflow_sim_factory, stage: str) -> None:
    """stop() returns within timeouts.close + 1 s from any stage, with no task or socket left behind."""
    scenario = {
        "connecting": Scenario(every=[Fault("hang_before_handshake")]),
        "backoff": Scenario(every=[Fault("http_status", status=503)]),
        "streaming": Scenario(),
        "backfill": Scenario([[Fault("skip_ids", after=20, count=300)]], rest=[Fault("rest_hang", count=100)]),
    }[stage]
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    events = Events()
    flow = make_flow(sim, events, timeouts=replace(TIMEOUTS, rest=30.0, http_upgrade=30.0),
                     reconnect=replace(RECONNECT, backoff_initial=30.0, backoff_max=60.0))
    before = asyncio.all_tasks()
    await flow.start()
    if stage == "connecting":
        await sim.wait_for(lambda r: r.connections and r.connections[0].fired, 5 * TIMEOUT_FACTOR)
    elif stage == "backoff":
        await events.until(lambda e: e.of("on_reconnect_scheduled"), 5)
    elif stage == "streaming":
        await events.until(lambda e: len(e.trades) >= 10, 5)
    else:
        await events.until(lambda e: e.of("on_gap"), 5)
        await sim.wait_for(lambda r: r.rest, 5 * TIMEOUT_FACTOR)
    started = time.monotonic()
    await flow.stop()
    assert time.monotonic() - started < flow.timeouts.close + 1.0 * TIMEOUT_FACTOR
    await asyncio.sleep(0)  # let cancelled callbacks run
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()
    assert events.of("on_shutdown")


async def test_start_twice_is_refused(orderflow_sim_factory) -> None:
    """Starting a stream twice is a clear error."""
    sim = await orderflow_sim_factory()
    flow = make_flow(sim, Events())
    async with flow:
        with pytest.raises(OrderFlowError, match="start\\(\\) called on a stream that is running"):
            await flow.start()


async def test_from_settings_uses_environment_override(orderflow_sim_factory, monkeypatch, frame_reader) -> None:
    """from_settings reads the connector and timeouts tables; ORDERFLOW_CONNECTOR__WS_URL points it at the simulator."""
    sim = await orderflow_sim_factory(pace=Pace(rate=500))
    monkeypatch.setenv("ORDERFLOW_CONNECTOR__WS_URL", sim.ws_url)
    monkeypatch.setenv("ORDERFLOW_CONNECTOR__REST_URL", sim.rest_url)
    monkeypatch.setenv("ORDERFLOW_CONNECTOR__TRANSPORT", frame_reader)
    got = []

    def receiver(sender, trade):
        got.append(trade.id)

    signals.trade.connect(receiver)
    try:
        async with OrderFlow.from_settings() as flow:
            assert flow.ws_url == sim.ws_url and flow.timeouts.first_message == 5.0  # [testing.timeouts]
            async with asyncio.timeout(5 * TIMEOUT_FACTOR):
                while len(got) < 5:
                    await asyncio.sleep(0.01)
            assert flow.reader == frame_reader and flow.health()["connections"][0]["reader"] == frame_reader
    finally:
        signals.trade.disconnect(receiver)
    assert got[:5] == list(range(FIRST, FIRST + 5))


def test_from_settings_keyword_overrides_win(settings) -> None:
    """Keyword arguments, symbols included, override what the settings say."""
    flow = OrderFlow.from_settings(settings, symbols=["ethusdt"], ws_url="ws://127.0.0.1:1", timeouts=Timeouts(stall=7.0))
    assert flow.symbols == ("ETHUSDT",) and flow.ws_url == "ws://127.0.0.1:1" and flow.timeouts == Timeouts(stall=7.0)
    assert flow.reconnect.max_connection_age == settings.reconnect.max_connection_age


def test_default_endpoints_are_binance() -> None:
    """Without overrides the stream points at Binance's real endpoints (never used by the tests)."""
    assert OrderFlow(["btcusdt"]).ws_url == "wss://stream.binance.com:9443"
    assert OrderFlow(["btcusdt"], market="usdm").ws_url == "wss://fstream.binance.com/market"
    assert OrderFlow(["btcusdt"], market="usdm").streams_per_connection == 200


async def test_stop_at_any_moment_of_connecting_never_hangs(orderflow_sim_factory) -> None:
    """stop() landing at any moment of the connect stages returns promptly (no swallowed cancellation)."""
    import random

    sim = await orderflow_sim_factory(pace=Pace(rate=2000))
    rng = random.Random(7)
    for _ in range(40):
        flow = make_flow(sim, Events(), reporting=Reporting(loop_block_threshold=0))
        before = asyncio.all_tasks()
        await flow.start()
        await asyncio.sleep(rng.uniform(0, 0.004))  # somewhere in resolve .. first_message
        started = time.monotonic()
        async with asyncio.timeout(flow.timeouts.close + 1.0):
            await flow.stop()
        assert time.monotonic() - started < flow.timeouts.close + 1.0 * TIMEOUT_FACTOR
        await asyncio.sleep(0)  # let cancelled callbacks run
        left = {t for t in asyncio.all_tasks() - before if not t.done() and t.get_name().startswith("orderflow")}
        assert left == set()  # none of the stream's tasks (each is named "orderflow ...") is left running
