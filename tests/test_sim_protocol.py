"""The simulator speaks Binance's market-data protocol to a plain websockets client."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Pace

from .flowhelpers import TIMEOUT_FACTOR
from .simclient import connect, raw_open, read_frame, recv_ids

FIRST = bundled_tape().rows[0].id


async def test_raw_stream_sends_unwrapped_events(orderflow_sim_factory) -> None:
    """/ws/<stream> sends raw aggTrade events in tape order from the first trade."""
    sim = await orderflow_sim_factory(pace=Pace(rate=2000))
    async with connect(sim, "/ws/btcusdt@aggTrade") as ws:
        event = json.loads(await ws.recv())
        assert event["e"] == "aggTrade" and event["s"] == "BTCUSDT" and event["a"] == FIRST
        assert await recv_ids(ws, 50) == list(range(FIRST + 1, FIRST + 51))


async def test_combined_stream_wraps_events(orderflow_sim_factory) -> None:
    """/stream?streams= wraps events as {"stream", "data"}."""
    sim = await orderflow_sim_factory(pace=Pace(rate=2000))
    async with connect(sim, "/stream?streams=btcusdt@aggTrade") as ws:
        message = json.loads(await ws.recv())
        assert message["stream"] == "btcusdt@aggTrade" and message["data"]["a"] == FIRST


async def test_futures_route_and_shape(orderflow_sim_factory) -> None:
    """A usdm simulator answers on the routed /market path with futures fields (nq, st, no M)."""
    sim = await orderflow_sim_factory(pace=Pace(rate=2000), market="usdm")
    async with connect(sim, "/market/stream?streams=btcusdt@aggTrade") as ws:
        data = json.loads(await ws.recv())["data"]
        assert list(data) == ["e", "E", "a", "s", "p", "q", "nq", "f", "l", "T", "m", "st"]


async def test_subscribe_list_unsubscribe(orderflow_sim_factory) -> None:
    """SUBSCRIBE, LIST_SUBSCRIPTIONS and UNSUBSCRIBE on /ws answer {"result", "id"} like Binance."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    async with connect(sim, "/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1}))
        assert json.loads(await ws.recv()) == {"result": None, "id": 1}
        assert len(await recv_ids(ws, 5)) == 5
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 3}))
        replies = []
        async with asyncio.timeout(5 * TIMEOUT_FACTOR):
            while len(replies) < 2:
                message = json.loads(await ws.recv())
                if "id" in message:
                    replies.append(message)
        assert replies == [{"result": ["btcusdt@aggTrade"], "id": 2}, {"result": None, "id": 3}]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                while True:
                    assert "id" in json.loads(await ws.recv()) or False, "trade after UNSUBSCRIBE"
    assert sim.record.connections[0].control[0]["method"] == "SUBSCRIBE"


async def test_invalid_control_message_gets_error(orderflow_sim_factory) -> None:
    """A control message that is not valid JSON gets an error reply; the connection stays."""
    sim = await orderflow_sim_factory()
    async with connect(sim, "/ws") as ws:
        await ws.send("{nope")
        reply = json.loads(await ws.recv())
        assert reply["error"]["code"] == 2
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
        assert json.loads(await ws.recv()) == {"result": [], "id": 9}


async def test_control_message_rate_limit_disconnects(orderflow_sim_factory) -> None:
    """More than 5 control messages in a second closes the connection with 1008, as Binance does."""
    sim = await orderflow_sim_factory()
    async with connect(sim, "/ws") as ws:
        for i in range(6):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        with pytest.raises(websockets.ConnectionClosed) as info:
            async with asyncio.timeout(3 * TIMEOUT_FACTOR):
                while True:
                    await ws.recv()
        assert info.value.rcvd.code == 1008


async def test_unknown_path_rejected(orderflow_sim_factory) -> None:
    """An upgrade to a path Binance does not serve is refused with HTTP 400."""
    sim = await orderflow_sim_factory()
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(sim, "/nope"):
            pass
    assert info.value.response.status_code == 400


async def test_two_symbols_on_one_combined_connection(orderflow_sim_factory) -> None:
    """A combined stream of two symbols delivers both, each in id order."""
    from orderflow_plugin import load_tape
    from orderflow_plugin.tape import Tape

    eth = bundled_tape()
    eth = Tape("ETHUSDT", "spot", eth.rows[:300], "test")
    sim = await orderflow_sim_factory([bundled_tape(), eth], pace=Pace(speed=200))
    seen: dict[str, list[int]] = {"btcusdt@aggTrade": [], "ethusdt@aggTrade": []}
    async with connect(sim, "/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade") as ws:
        async with asyncio.timeout(10 * TIMEOUT_FACTOR):
            while min(len(v) for v in seen.values()) < 100:
                message = json.loads(await ws.recv())
                seen[message["stream"]].append(message["data"]["a"])
    for ids in seen.values():
        assert ids == sorted(ids) and ids[0] == FIRST
    assert load_tape  # imported for symmetry with users' code


async def test_server_pings_and_drops_client_without_pong(orderflow_sim_factory) -> None:
    """The server pings every ping_interval and closes a client that never pongs."""
    sim = await orderflow_sim_factory(ping_interval=0.2, pong_timeout=0.3)
    reader, writer = await raw_open(sim, "/ws")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    async with asyncio.timeout(5 * TIMEOUT_FACTOR):
        opcode, payload = await read_frame(reader)
        assert opcode == 0x9 and payload  # ping with a payload; we never answer
        opcode, payload = await read_frame(reader)
        assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1008
    writer.close()
    assert sim.record.connections[0].closed == "server close 1008 pong timeout"


async def test_client_that_pongs_stays_connected(orderflow_sim_factory) -> None:
    """websockets answers the server's pings, so the connection survives several intervals."""
    sim = await orderflow_sim_factory(ping_interval=0.1, pong_timeout=0.2)
    async with connect(sim, "/ws") as ws:
        await sim.wait_for(lambda r: r.connections[0].pongs_received >= 3, timeout=5 * TIMEOUT_FACTOR)
        assert ws.state is websockets.State.OPEN


async def test_client_ping_answered_with_same_payload(orderflow_sim_factory) -> None:
    """A client ping gets a pong carrying the same payload."""
    sim = await orderflow_sim_factory()
    async with connect(sim, "/ws") as ws:
        latency = await asyncio.wait_for(await ws.ping(b"payload-123"), 2 * TIMEOUT_FACTOR)
        assert latency >= 0


async def test_smooth_pace_keeps_order_and_rate(orderflow_sim_factory) -> None:
    """A smooth fixed rate sends every trade in order and never ahead of its time."""
    sim = await orderflow_sim_factory(pace=Pace(rate=2000, smooth=True))
    loop = asyncio.get_running_loop()
    async with connect(sim, "/ws/btcusdt@aggTrade") as ws:
        first = json.loads(await ws.recv())["a"]
        started = loop.time()
        assert await recv_ids(ws, 200) == list(range(first + 1, first + 201))
        assert loop.time() - started >= 199 / 2000 * 0.9  # 200 more trades at 2000/s take about 0.1 s


@pytest.mark.parametrize("module", ["connection", "server", "records", "rest", "faults"])
def test_the_simulator_modules_import_nothing_that_imports_them_back(module: str) -> None:
    """The simulator's connection and server form no import circle (TYPE_CHECKING imports count too)."""
    from .importgraph import path_back

    assert path_back(f"orderflow_plugin.sim.{module}") is None
