"""The fixtures we ship for plugin authors work as documented."""

from __future__ import annotations

import httpx
import pytest

from orderflow_plugin.sim import Pace
from orderflow_plugin.tls import client_context


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


async def test_stream_over_tls_in_one_line(orderflow_stream, orderflow_tls) -> None:
    """orderflow_stream(tls=True) streams over wss://localhost, trusting the orderflow_tls CA by default."""
    strategy = Strategy()
    flow = await orderflow_stream(strategy, tls=True, trades=50)
    assert flow.ws_url.startswith("wss://localhost:") and flow.rest_url.startswith("https://localhost:")
    assert strategy.buys + strategy.sells >= 50


async def test_tls_sim_serves_clients_that_trust_the_session_ca(orderflow_tls_sim, orderflow_tls) -> None:
    """orderflow_tls_sim answers https:// for a client trusting orderflow_tls.ca_file, and only for such a client."""
    async with httpx.AsyncClient(verify=client_context(orderflow_tls.ca_file)) as client:
        response = await client.get(f"{orderflow_tls_sim.rest_url}/api/v3/time")
    assert response.status_code == 200 and "serverTime" in response.json()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"{orderflow_tls_sim.rest_url}/api/v3/time")
