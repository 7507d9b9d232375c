"""Every simulator fault, driven by plain clients, behaves as named."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import websockets

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario

from .flowhelpers import TIMEOUT_FACTOR
from .simclient import connect, raw_open, recv_ids

FIRST = bundled_tape().rows[0].id


def one(*faults: Fault) -> Scenario:
    """A scenario where connection 1 gets ``faults`` and later connections are normal."""
    return Scenario([list(faults)])


async def test_hang_before_handshake_holds_tcp_without_answer(orderflow_sim_factory) -> None:
    """The TCP connection is accepted and the request read, but no HTTP response ever comes."""
    sim = await orderflow_sim_factory(scenario=one(Fault("hang_before_handshake")))
    reader, writer = await raw_open(sim)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await reader.read(1)
    assert not reader.at_eof()
    assert sim.record.connections[0].fired == ["hang_before_handshake"]
    writer.close()


async def test_slow_handshake_answers_late(orderflow_sim_factory) -> None:
    """The upgrade completes only after the configured delay."""
    sim = await orderflow_sim_factory(scenario=one(Fault("slow_handshake", seconds=0.5)))
    started = time.monotonic()
    async with connect(sim) as ws:
        assert time.monotonic() - started >= 0.5
        assert await recv_ids(ws, 1) == [FIRST]


@pytest.mark.parametrize("status,retry_after", [(429, 7), (418, 120), (503, None)])
async def test_http_status_on_upgrade(orderflow_sim_factory, status: int, retry_after: int | None) -> None:
    """The upgrade is answered with the status (and Retry-After), then the next connection is normal."""
    sim = await orderflow_sim_factory(scenario=one(Fault("http_status", status=status, retry_after=retry_after)))
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(sim):
            pass
    response = info.value.response
    assert response.status_code == status
    assert response.headers.get("Retry-After") == (str(retry_after) if retry_after else None)
    async with connect(sim) as ws:
        assert len(await recv_ids(ws, 1)) == 1


async def test_hang_after_handshake_sends_nothing_but_answers_pings(orderflow_sim_factory) -> None:
    """After the upgrade no data ever comes, yet pings are answered."""
    sim = await orderflow_sim_factory(scenario=one(Fault("hang_after_handshake")), pace=Pace(rate=2000))
    async with connect(sim) as ws:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await ws.recv()
        await asyncio.wait_for(await ws.ping(b"x"), 1 * TIMEOUT_FACTOR)
    assert sim.happened("BTCUSDT") > 0  # the market played on


async def test_blackhole_goes_silent_and_stops_ponging_with_tcp_open(orderflow_sim_factory) -> None:
    """After N messages nothing arrives, pings go unanswered, and the connection is not closed."""
    sim = await orderflow_sim_factory(scenario=one(Fault("blackhole_after", after=20)), pace=Pace(rate=2000))
    async with connect(sim, close_timeout=0.1) as ws:
        assert await recv_ids(ws, 20) == list(range(FIRST, FIRST + 20))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await ws.recv()
        pong = await ws.ping(b"anyone?")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pong, 0.5)
        assert ws.state is websockets.State.OPEN


async def test_reset_after_aborts_without_close_frame(orderflow_sim_factory) -> None:
    """After N messages the TCP connection is reset: no close frame is received."""
    sim = await orderflow_sim_factory(scenario=one(Fault("reset_after", after=30)), pace=Pace(rate=2000))
    async with connect(sim) as ws:
        assert len(await recv_ids(ws, 30)) == 30
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await recv_ids(ws, 1)
        assert info.value.rcvd is None
    assert sim.record.connections[0].closed == "reset"


@pytest.mark.parametrize("code", [1001, 1008])
async def test_close_after_sends_close_code(orderflow_sim_factory, code: int) -> None:
    """After N messages a close frame with the configured code arrives."""
    sim = await orderflow_sim_factory(scenario=one(Fault("close_after", after=10, code=code)), pace=Pace(rate=2000))
    async with connect(sim) as ws:
        assert len(await recv_ids(ws, 10)) == 10
        with pytest.raises(websockets.ConnectionClosed) as info:
            await recv_ids(ws, 1)
        assert info.value.rcvd.code == code


@pytest.mark.parametrize("path,wrapped", [("/ws/btcusdt@aggTrade", False), ("/stream?streams=btcusdt@aggTrade", True)])
async def test_server_shutdown_event_then_close(orderflow_sim_factory, path: str, wrapped: bool) -> None:
    """serverShutdown arrives (raw or wrapped), trades continue during the grace period, then 1001."""
    sim = await orderflow_sim_factory(scenario=one(Fault("server_shutdown_after", after=5, seconds=0.3)),
                                      pace=Pace(rate=500))
    messages = []
    async with connect(sim, path) as ws:
        with pytest.raises(websockets.ConnectionClosed) as info:
            async with asyncio.timeout(5 * TIMEOUT_FACTOR):
                while True:
                    messages.append(json.loads(await ws.recv()))
    assert info.value.rcvd.code == 1001
    shutdown = messages[5]
    if wrapped:
        assert shutdown["stream"] == "!serverShutdown" and shutdown["data"]["e"] == "serverShutdown"
    else:
        assert shutdown["e"] == "serverShutdown"
    assert len(messages) > 7  # trades kept flowing during the grace period


async def test_skip_ids_omits_range_that_rest_still_has(orderflow_sim_factory) -> None:
    """The skipped ids never reach the stream but REST returns them."""
    sim = await orderflow_sim_factory(scenario=one(Fault("skip_ids", after=10, count=5)), pace=Pace(rate=2000))
    async with connect(sim) as ws:
        ids = await recv_ids(ws, 20)
    assert ids == list(range(FIRST, FIRST + 10)) + list(range(FIRST + 15, FIRST + 25))
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as client:
        rows = (await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT", "fromId": FIRST + 10,
                                                               "limit": 5})).json()
    assert [row["a"] for row in rows] == list(range(FIRST + 10, FIRST + 15))


async def test_duplicate_ids_resends(orderflow_sim_factory) -> None:
    """The last `count` trades are sent again."""
    sim = await orderflow_sim_factory(scenario=one(Fault("duplicate_ids", after=10, count=3)), pace=Pace(rate=2000))
    async with connect(sim) as ws:
        ids = await recv_ids(ws, 16)
    assert ids == [*range(FIRST, FIRST + 10), FIRST + 7, FIRST + 8, FIRST + 9, FIRST + 10, FIRST + 11, FIRST + 12]


async def test_out_of_order_reverses_a_run(orderflow_sim_factory) -> None:
    """The next `count` trades come in reverse order."""
    sim = await orderflow_sim_factory(scenario=one(Fault("out_of_order", after=10, count=4)), pace=Pace(rate=2000))
    async with connect(sim) as ws:
        ids = await recv_ids(ws, 16)
    assert ids == [*range(FIRST, FIRST + 10), FIRST + 13, FIRST + 12, FIRST + 11, FIRST + 10, FIRST + 14, FIRST + 15]


@pytest.mark.parametrize("variant", ["truncated", "not_json", "wrong_types"])
async def test_malformed_frame_then_stream_continues(orderflow_sim_factory, variant: str) -> None:
    """One bad frame arrives after N messages, then valid trades continue on the same connection."""
    sim = await orderflow_sim_factory(scenario=one(Fault("malformed_after", after=3, variant=variant)),
                                      pace=Pace(rate=2000))
    async with connect(sim, "/ws/btcusdt@aggTrade") as ws:
        texts = [await asyncio.wait_for(ws.recv(), 5 * TIMEOUT_FACTOR) for _ in range(6)]
    good = [json.loads(t)["a"] for i, t in enumerate(texts) if i != 3]
    assert good == list(range(FIRST, FIRST + 5))
    if variant == "wrong_types":
        bad = json.loads(texts[3])
        assert isinstance(bad["a"], str) and isinstance(bad["p"], float)
    else:
        with pytest.raises(ValueError):
            json.loads(texts[3])


async def test_oversized_frame_exceeds_client_limit(orderflow_sim_factory) -> None:
    """A frame over the client's max_size makes the client close with 1009."""
    sim = await orderflow_sim_factory(scenario=one(Fault("oversized_frame", after=2, size=2_000_000)),
                                      pace=Pace(rate=2000))
    async with connect(sim, max_size=1_000_000) as ws:
        assert len(await recv_ids(ws, 2)) == 2
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await recv_ids(ws, 1)
        assert info.value.sent.code == 1009


async def test_slow_drip_trickles_bytes(orderflow_sim_factory) -> None:
    """With slow_drip a ~200-byte frame takes many small writes to arrive."""
    sim = await orderflow_sim_factory(scenario=one(Fault("slow_drip", size=20, seconds=0.02)), pace=Pace(rate=50))
    async with connect(sim) as ws:
        started = time.monotonic()
        assert await recv_ids(ws, 1) == [FIRST]
        assert time.monotonic() - started >= 0.15  # >= 10 chunks of 20 bytes, 20 ms apart


async def test_max_age_closes_every_connection(orderflow_sim_factory) -> None:
    """A max_age fault for every connection closes each one with 1001 after its age."""
    sim = await orderflow_sim_factory(scenario=Scenario(every=[Fault("max_age", seconds=0.3)]))
    for _ in range(2):
        started = time.monotonic()
        async with connect(sim) as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                async with asyncio.timeout(3 * TIMEOUT_FACTOR):
                    while True:
                        await ws.recv()
        assert info.value.rcvd.code == 1001 and time.monotonic() - started >= 0.3
    assert [c.fired for c in sim.record.connections] == [["max_age"], ["max_age"]]


async def test_faults_follow_connection_order(orderflow_sim_factory) -> None:
    """Connection 1 gets its fault, connection 2 is normal; the record says which ids each got."""
    sim = await orderflow_sim_factory(scenario=one(Fault("reset_after", after=10)), pace=Pace(rate=1000))
    async with connect(sim) as ws:
        assert len(await recv_ids(ws, 10)) == 10
        with pytest.raises(websockets.ConnectionClosed):
            await recv_ids(ws, 1)
    async with connect(sim) as ws:
        later = await recv_ids(ws, 10)
    first, second = sim.record.connections
    assert first.fired == ["reset_after"] and second.fired == []
    assert first.ids_sent == list(range(FIRST, FIRST + 10))
    assert second.ids_sent[:10] == later and later[0] > FIRST + 10  # the market moved on meanwhile


async def test_rest_faults_hang_then_status_then_normal(orderflow_sim_factory) -> None:
    """REST faults apply to requests in order: a hang, a 500, then normal answers."""
    scenario = Scenario(rest=[Fault("rest_hang"), Fault("rest_status", status=500)])
    sim = await orderflow_sim_factory(scenario=scenario)
    async with httpx.AsyncClient(base_url=sim.rest_url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/api/v3/ping", timeout=0.5)
        assert (await client.get("/api/v3/ping", timeout=2)).status_code == 500
        assert (await client.get("/api/v3/ping", timeout=2)).json() == {}


def test_scenario_from_toml_and_json_files(tmp_path: Path) -> None:
    """Scenario files in TOML and JSON give the same scenario; bad ones name the problem."""
    toml = tmp_path / "s.toml"
    toml.write_text('[[connection]]\nfaults = [{kind = "reset_after", after = 500}]\n[[connection]]\nfaults = []\n'
                    '[every]\nfaults = [{kind = "max_age", seconds = 5}]\n'
                    '[[rest]]\nkind = "rest_status"\nstatus = 429\nretry_after = 1\n')
    js = tmp_path / "s.json"
    js.write_text(json.dumps({"connection": [{"faults": [{"kind": "reset_after", "after": 500}]}, {"faults": []}],
                              "every": {"faults": [{"kind": "max_age", "seconds": 5}]},
                              "rest": [{"kind": "rest_status", "status": 429, "retry_after": 1}]}))
    assert Scenario.from_file(toml) == Scenario.from_file(js)
    scenario = Scenario.from_file(toml)
    assert [f.kind for f in scenario.for_connection(1)] == ["reset_after", "max_age"]
    assert [f.kind for f in scenario.for_connection(3)] == ["max_age"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[connection]]\nfaults = [{kind = "explode"}]\n')
    with pytest.raises(ValueError, match=r"bad.toml: unknown fault 'explode'; known faults: .*reset_after"):
        Scenario.from_file(bad)
