"""The simulator's REST endpoints answer like Binance's, over a real loopback HTTP connection."""

from __future__ import annotations

import time

import httpx
import pytest

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario

from .simclient import connect, recv_ids

TAPE = bundled_tape()
FIRST = TAPE.rows[0].id


@pytest.fixture
async def played(orderflow_sim_factory):
    """A simulator that has played the whole bundled tape, and an HTTP client for it."""
    sim = await orderflow_sim_factory(pace=Pace(asap=True), weight_limit=100_000)
    async with connect(sim) as ws:
        await recv_ids(ws, 5000, timeout=20)
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as client:
        yield sim, client


async def test_agg_trades_from_id_inclusive_and_limit(played) -> None:
    """fromId is inclusive and limit bounds the page; rows match the tape exactly."""
    _, client = played
    rows = (await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT", "fromId": FIRST + 100,
                                                           "limit": 1000})).json()
    assert [r["a"] for r in rows] == list(range(FIRST + 100, FIRST + 1100))
    tape_row = TAPE.rows[100]
    assert rows[0] == {"a": tape_row.id, "p": tape_row.price, "q": tape_row.qty, "f": tape_row.first_id,
                       "l": tape_row.last_id, "T": tape_row.time, "m": tape_row.buyer_maker, "M": True}


async def test_agg_trades_default_limit_is_latest_500(played) -> None:
    """With no fromId or times the latest 500 trades come back."""
    _, client = played
    rows = (await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT"})).json()
    assert [r["a"] for r in rows] == list(range(FIRST + 4500, FIRST + 5000))


async def test_agg_trades_by_time_window(played) -> None:
    """startTime/endTime select trades by trade time, inclusive."""
    _, client = played
    start, end = TAPE.rows[10].time, TAPE.rows[20].time
    rows = (await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT", "startTime": start,
                                                           "endTime": end})).json()
    assert rows and all(start <= r["T"] <= end for r in rows)
    expected = [row.id for row in TAPE.rows if start <= row.time <= end]
    assert [r["a"] for r in rows] == expected


async def test_futures_endpoint_rows_have_nq(played) -> None:
    """/fapi/v1/aggTrades rows carry nq and no M."""
    _, client = played
    rows = (await client.get("/fapi/v1/aggTrades", params={"symbol": "BTCUSDT", "fromId": FIRST, "limit": 1})).json()
    assert list(rows[0]) == ["a", "p", "q", "nq", "f", "l", "T", "m"]


@pytest.mark.parametrize("params,status,code", [
    ({}, 400, -1102),
    ({"symbol": "NOPEUSDT"}, 400, -1121),
    ({"symbol": "BTCUSDT", "limit": 1001}, 400, -1130),
    ({"symbol": "BTCUSDT", "limit": "ten"}, 400, -1100),
    ({"symbol": "BTCUSDT", "fromId": 1, "startTime": 1}, 400, -1128),
    ({"symbol": "BTCUSDT", "startTime": 0, "endTime": 3_600_001}, 400, -1127),
])
async def test_agg_trades_errors_in_binance_form(played, params: dict, status: int, code: int) -> None:
    """Bad parameters get Binance's status and {"code", "msg"} body."""
    _, client = played
    response = await client.get("/api/v3/aggTrades", params=params)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and body["msg"]


async def test_ping_time_exchange_info(played) -> None:
    """ping, time and exchangeInfo answer with Binance's shapes for the replayed symbols."""
    _, client = played
    assert (await client.get("/api/v3/ping")).json() == {}
    assert (await client.get("/api/v3/time")).json()["serverTime"] > 1_700_000_000_000
    info = (await client.get("/api/v3/exchangeInfo")).json()
    (symbol,) = info["symbols"]
    assert (symbol["symbol"], symbol["baseAsset"], symbol["quoteAsset"]) == ("BTCUSDT", "BTC", "USDT")
    assert symbol["filters"][0] == {"filterType": "PRICE_FILTER", "tickSize": "0.01000000"}
    assert (await client.get("/api/v3/nope")).status_code == 404


async def test_request_weight_limit_gives_429_with_retry_after(orderflow_sim_factory) -> None:
    """aggTrades costs 4; past the per-minute limit the answer is 429 with Retry-After."""
    sim = await orderflow_sim_factory(weight_limit=10)
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as client:
        first = await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT"})
        second = await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT"})
        third = await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT"})
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert first.headers["X-MBX-USED-WEIGHT-1M"] == "4" and third.headers["X-MBX-USED-WEIGHT-1M"] == "12"
    assert 1 <= int(third.headers["Retry-After"]) <= 60
    assert third.json()["code"] == -1003


async def test_rest_shows_only_played_trades(orderflow_sim_factory) -> None:
    """Before anyone subscribes nothing has been played, so REST has nothing yet."""
    sim = await orderflow_sim_factory()
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as client:
        assert (await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT", "fromId": FIRST})).json() == []
        async with connect(sim) as ws:
            await recv_ids(ws, 3)
        rows = (await client.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT", "fromId": FIRST})).json()
    assert len(rows) >= 3 and rows[0]["a"] == FIRST
    assert [r["a"] for r in rows] == sim.played_ids("BTCUSDT")[: len(rows)]



async def test_short_and_empty_pages_then_full(orderflow_sim_factory) -> None:
    """rest_short_page answers the first `after` rows of a page, rest_empty none, each for `count` requests."""
    scenario = Scenario(rest=[Fault("rest_short_page", after=3), Fault("rest_empty", count=2)])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(asap=True))
    async with connect(sim) as ws:
        await recv_ids(ws, 100)
    params = {"symbol": "BTCUSDT", "fromId": FIRST, "limit": 10}
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=5) as client:
        pages = [(await client.get("/api/v3/aggTrades", params=params)).json() for _ in range(4)]
    assert [[r["a"] for r in page] for page in pages] == [
        list(range(FIRST, FIRST + 3)), [], [], list(range(FIRST, FIRST + 10))]
    assert [status for _, status in sim.record.rest] == [200, 200, 200, 200]


async def test_slow_body_drips_the_answer(orderflow_sim_factory) -> None:
    """rest_slow_body sends the whole answer, `size` bytes every `seconds`: a per-read timeout never fires."""
    sim = await orderflow_sim_factory(scenario=Scenario(rest=[Fault("rest_slow_body", size=8, seconds=0.02)]))
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=0.2) as client:
        started = time.monotonic()
        slow = await client.get("/api/v3/time")
        took = time.monotonic() - started
        assert (await client.get("/api/v3/ping")).json() == {}
    assert slow.json()["serverTime"] > 0
    assert took >= 0.2  # longer than the read timeout, every read within it


def test_rest_fault_parameters_are_checked() -> None:
    """A slow body needs seconds between chunks; REST faults belong under rest."""
    with pytest.raises(ValueError, match="rest_slow_body needs seconds > 0"):
        Fault("rest_slow_body", size=10)
    with pytest.raises(ValueError, match="rest_empty is a REST fault"):
        Scenario(every=[Fault("rest_empty")])
