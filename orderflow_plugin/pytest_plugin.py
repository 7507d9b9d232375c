"""Pytest fixtures for plugin authors (registered through the ``pytest11`` entry point).

``orderflow_sim``: a running :class:`~orderflow_plugin.sim.Simulator` on the bundled real
BTCUSDT tape at 100x speed. ``orderflow_sim_factory``: start simulators with your own tapes,
scenario and pace; they are stopped at the end of the test.

::

    async def test_my_alert(orderflow_sim):
        async with websockets.connect(f"{orderflow_sim.ws_url}/ws/btcusdt@aggTrade") as ws:
            assert json.loads(await ws.recv())["e"] == "aggTrade"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

__all__ = ["orderflow_sim", "orderflow_sim_factory"]

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixtures need pytest-asyncio; say so instead of breaking pytest
    pytest_asyncio = None

if pytest_asyncio is not None:
    from .sim import Pace, Simulator

    @pytest_asyncio.fixture
    async def orderflow_sim_factory() -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
        """Start simulators with any ``Simulator`` arguments; all are stopped after the test."""
        started: list[Simulator] = []

        async def start(*args: Any, **kwargs: Any) -> Simulator:
            kwargs.setdefault("pace", Pace(speed=100.0))
            simulator = Simulator(*args, **kwargs)
            await simulator.start()
            started.append(simulator)
            return simulator

        yield start
        for simulator in started:
            await simulator.stop()

    @pytest_asyncio.fixture
    async def orderflow_sim(orderflow_sim_factory: Callable[..., Awaitable[Simulator]]) -> Simulator:
        """A simulator replaying the bundled real BTCUSDT tape at 100x speed."""
        return await orderflow_sim_factory()
