"""Symbols checked against exchangeInfo at start: a typo fails in one line, a halt is said, REST down holds nothing."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace
from types import SimpleNamespace

import pytest

from orderflow_plugin import SymbolNotTrading, UnknownSymbol
from orderflow_plugin.listing import read_listing
from orderflow_plugin.sim import Pace

from .flowhelpers import LIMITS, TIMEOUT_FACTOR, Events, make_flow
from .test_cli_stream import start

INFO = json.dumps({"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC"},
                               {"symbol": "ETHUSDT", "status": "BREAK", "baseAsset": "ETH"}]}).encode()


def test_an_unknown_symbol_is_one_line_with_its_near_match() -> None:
    """A symbol exchangeInfo does not list is named with the listed symbol it was probably meant to be."""
    listing = read_listing(INFO, "spot")
    assert str(listing.unknown(["BTCUSDT", "BTCUSTD"])) == "BTCUSTD is not a Binance spot symbol; did you mean BTCUSDT?"
    assert str(listing.unknown(["NOPE"])) == "NOPE is not a Binance spot symbol"
    assert listing.unknown(["BTCUSDT", "ETHUSDT"]) is None
    [halted] = listing.not_trading(["BTCUSDT", "ETHUSDT"])
    assert (halted.symbol, halted.status) == ("ETHUSDT", "BREAK") and "not a dead stream" in str(halted)
    assert "USD-M futures" in str(read_listing(INFO, "usdm").unknown(["BTCUSTD"]))


def test_an_answer_that_is_not_exchange_info_is_a_value_error() -> None:
    """A body without a symbols list is refused, not read as "nothing listed"."""
    with pytest.raises(ValueError, match="not an exchangeInfo answer"):
        read_listing(b'{"code": -1121}', "spot")


async def test_readmes_two_symbols_on_the_simulator_name_the_one_it_does_not_serve(orderflow_sim) -> None:
    """OrderFlow(["BTCUSDT", "ETHUSDT"]) on the simulator (BTCUSDT only) fails start() naming ETHUSDT; nothing ran."""
    events = Events()
    flow = make_flow(orderflow_sim, events, symbols=("BTCUSDT", "ETHUSDT"))
    with pytest.raises(UnknownSymbol, match=r"^ETHUSDT is not a Binance spot symbol$") as raised:
        await flow.start()
    assert raised.value.symbols == ["ETHUSDT"]
    assert events.calls == [] and orderflow_sim.record.connections == []  # no hook ran, no connection opened
    await flow.stop()


async def test_stream_with_a_typo_exits_2_in_one_line(orderflow_sim) -> None:
    """`orderflow stream --symbol BTCUSTD` says what it is not and what was meant, exit 2, instead of silence."""
    process = await start("stream", "--symbol", "BTCUSTD", "--ws-url", orderflow_sim.ws_url, "--rest-url",
                          orderflow_sim.rest_url, "--json", "--duration", "20")
    async with asyncio.timeout(15 * TIMEOUT_FACTOR):  # the old stream ran out its 20 s and exited 0
        out, err = await process.communicate()
    assert process.returncode == 2, err.decode()
    assert err.decode().strip().splitlines() == [
        "orderflow stream: BTCUSTD is not a Binance spot symbol; did you mean BTCUSDT?"]
    assert out == b""


async def test_a_symbol_not_trading_is_reported_as_such(orderflow_sim_factory) -> None:
    """A listed symbol in a BREAK is an on_error SymbolNotTrading naming its status; the stream runs on."""
    sim = await orderflow_sim_factory(statuses={"BTCUSDT": "BREAK"})
    events = Events()
    async with make_flow(sim, events) as flow:
        await events.until(lambda e: e.of("on_error") and e.trades, timeout=10)
        [error] = [call["error"] for call in events.of("on_error")]
        assert isinstance(error, SymbolNotTrading) and error.status == "BREAK"
        assert events.of("on_error")[0]["where"] == "symbols"
        assert flow.health()["symbols"]["BTCUSDT"]["status"] == "BREAK"


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_rest_down_at_start_holds_nothing_and_a_late_unknown_symbol_is_dropped(orderflow_sim_factory) -> None:
    """REST refused at start: trades flow at once; once REST answers, the unknown symbol is an on_error and its
    connection is closed for good, while the listed one streams on."""
    sim = await orderflow_sim_factory(pace=Pace(rate=500))
    port = free_port()
    events = Events()
    urls = SimpleNamespace(ws_url=sim.ws_url, rest_url=f"http://127.0.0.1:{port}")  # no REST there yet
    flow = make_flow(urls, events, symbols=("BTCUSDT", "BTCUSTD"), limits=replace(LIMITS, streams_per_connection=1))
    async with flow:
        await events.until(lambda e: len(e.trades) >= 20, timeout=10)
        assert flow.health()["symbols"]["BTCUSTD"]["status"] is None and events.of("on_error") == []
        await orderflow_sim_factory(port=port)  # REST comes up
        await events.until(lambda e: e.of("on_error"), timeout=10)
        [error] = [call["error"] for call in events.of("on_error")]
        assert isinstance(error, UnknownSymbol) and str(error) == \
            "BTCUSTD is not a Binance spot symbol; did you mean BTCUSDT?"
        health = flow.health()
        assert health["symbols"]["BTCUSTD"]["status"] == "unknown"
        assert health["symbols"]["BTCUSDT"]["status"] == "TRADING"
        states = {tuple(c["symbols"]): c["state"] for c in health["connections"]}
        assert states[("BTCUSTD",)] == "stopped" and states[("BTCUSDT",)] == "streaming"
        before = len(events.trades)
        await events.until(lambda e: len(e.trades) > before + 20, timeout=10)


async def test_doctor_names_an_unknown_symbol_with_the_streams_own_line(orderflow_sim) -> None:
    """`orderflow doctor --symbol BTCUSTD`: the REST aggTrades FAIL says what the stream says, with the near match."""
    from .test_doctor import check, doctor

    code, checks, _ = await doctor(orderflow_sim.ws_url, orderflow_sim.rest_url, "--symbol", "BTCUSTD")
    assert code == 1
    failed = check(checks, "REST aggTrades")
    assert failed["status"] == "FAIL"
    assert failed["detail"] == "BTCUSTD is not a Binance spot symbol; did you mean BTCUSDT?"
