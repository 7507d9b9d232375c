"""The three fixtures orderflow-plugin ships for pytest, one short test each (docs/testing.md shows them)."""

import json

import websockets

from orderflow_plugin import Trade
from orderflow_plugin.sim import Fault, Pace, Scenario


class Recorder:
    """A plugin that keeps every trade it is given."""

    def __init__(self) -> None:
        self.trades: list[Trade] = []

    def on_trade(self, trade: Trade) -> None:
        self.trades.append(trade)


async def test_the_simulator_speaks_binance(orderflow_sim):
    """orderflow_sim: a local Binance on 127.0.0.1 replaying the bundled real BTCUSDT tape at 100x."""
    async with websockets.connect(f"{orderflow_sim.ws_url}/ws/btcusdt@aggTrade") as ws:
        trade = json.loads(await ws.recv())
    assert trade["e"] == "aggTrade" and trade["s"] == "BTCUSDT"


async def test_no_trade_is_lost_when_the_connection_drops(orderflow_sim_factory, orderflow_stream):
    """orderflow_sim_factory: a simulator of your own; here the first connection is reset after 200 trades."""
    sim = await orderflow_sim_factory(scenario=Scenario([[Fault("reset_after", after=200)]]), pace=Pace(rate=2000))
    recorder = Recorder()
    flow = await orderflow_stream(recorder, sim=sim, trades=500)
    ids = [trade.id for trade in recorder.trades]
    assert ids == list(range(ids[0], ids[0] + len(ids))) and flow.health()["reconnects"] == 1


async def test_my_plugin_gets_trades(orderflow_stream):
    """orderflow_stream: OrderFlow on a fresh simulator with your plugins, once they have had `trades` trades."""
    recorder = Recorder()
    flow = await orderflow_stream(recorder, trades=200)
    assert len(recorder.trades) >= 200 and {t.side for t in recorder.trades} == {"buy", "sell"}
    assert flow.latest("BTCUSDT")["trade"] == recorder.trades[-1]
