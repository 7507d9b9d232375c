"""The fixtures we ship for plugin authors work as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orderflow_plugin.sim import Pace
from orderflow_plugin.tls import client_context

from .flowhelpers import TIMEOUT_FACTOR


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


class BigBuyers:
    """README's plugin pattern: its threshold from settings.hooks, with a default."""

    def on_startup(self, settings):
        self.settings = settings
        self.threshold = settings.hooks.get("big_buyers", {}).get("threshold", 50_000)


async def test_plugins_on_the_fixture_stream_start_with_real_settings(orderflow_stream) -> None:
    """orderflow_stream builds OrderFlow without settings; on_startup still gets the defaults with the stream's values."""
    plugin = BigBuyers()
    flow = await orderflow_stream(plugin, trades=10)
    assert flow.health()["plugin_errors"] == 0
    assert plugin.threshold == 50_000 and plugin.settings.hooks.big_buyers.get("threshold", 7) == 7
    assert plugin.settings.symbols == ["BTCUSDT"] and plugin.settings.connector.ws_url == flow.ws_url


STRICT_MODE_TESTS = """
import json

import websockets


async def test_raw_stream(orderflow_sim):
    async with websockets.connect(f"{orderflow_sim.ws_url}/ws/btcusdt@aggTrade") as ws:
        assert json.loads(await ws.recv())["e"] == "aggTrade"


class TestStrategy:
    async def test_stream(self, orderflow_stream):
        flow = await orderflow_stream(trades=5)
        assert flow.health()["trades"] >= 5
"""


def test_fixtures_work_in_pytest_asyncio_strict_mode(tmp_path: Path) -> None:
    """A user's async tests that use the fixtures run with no pytest config at all (pytest-asyncio's strict mode)."""
    (tmp_path / "test_user.py").write_text(STRICT_MODE_TESTS)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERFLOW_", "PYTEST_"))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path,
                            env=environ, capture_output=True, text=True, timeout=60 * TIMEOUT_FACTOR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "asyncio: mode=Mode.STRICT" in result.stdout and "2 passed" in result.stdout
