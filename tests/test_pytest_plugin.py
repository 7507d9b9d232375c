"""The fixtures we ship for plugin authors work as documented."""

from __future__ import annotations

from orderflow_plugin.sim import Pace


class Strategy:
    """A tiny strategy plugin: counts taker buys and sells."""

    def __init__(self) -> None:
        self.buys = 0
        self.sells = 0

    def on_trade(self, trade):
        if trade.side == "buy":
            self.buys += 1
        else:
            self.sells += 1


async def test_strategy_hook_in_five_lines(orderflow_stream) -> None:
    """orderflow_stream starts the simulator and a stream with the plugin and waits for trades."""
    strategy = Strategy()
    flow = await orderflow_stream(strategy, trades=200)
    assert strategy.buys + strategy.sells >= 200 and strategy.buys > 0 and strategy.sells > 0
    assert flow.health()["state"] == "running"


async def test_stream_on_own_simulator(orderflow_sim_factory, orderflow_stream) -> None:
    """A test can pass its own simulator (pace, faults) to orderflow_stream."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    strategy = Strategy()
    await orderflow_stream(strategy, sim=sim, trades=50)
    assert sim.record.connections and strategy.buys + strategy.sells >= 50
