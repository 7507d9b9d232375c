"""Pytest fixtures for plugin authors (registered through the ``pytest11`` entry point).

``orderflow_sim``: a running :class:`~orderflow_plugin.sim.Simulator` on the bundled real
BTCUSDT tape at 100x speed. ``orderflow_sim_factory``: start simulators with your own tapes,
scenario and pace. ``orderflow_stream``: start an :class:`~orderflow_plugin.OrderFlow` on the
simulator with your plugins and wait for the first ``trades``. Everything is stopped at the
end of the test. A strategy's hook, tested in five lines::

    async def test_my_strategy_sees_buys(orderflow_stream):
        strategy = MyStrategy()
        await orderflow_stream(strategy, trades=200)
        assert strategy.buys > 0
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

__all__ = ["orderflow_sim", "orderflow_sim_factory", "orderflow_stream"]

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixtures need pytest-asyncio; say so instead of breaking pytest
    pytest_asyncio = None

if pytest_asyncio is not None:
    import asyncio

    from .plugins import PluginManager
    from .sim import Pace, Simulator
    from .stream import OrderFlow

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

    @pytest_asyncio.fixture
    async def orderflow_stream(
        orderflow_sim_factory: Callable[..., Awaitable[Simulator]],
    ) -> AsyncIterator[Callable[..., Awaitable[OrderFlow]]]:
        """Start OrderFlow on a simulator with ``plugins``; return once ``trades`` trades were delivered.

        Keyword arguments go to OrderFlow, except ``sim`` (a simulator to use instead of a new one
        on the bundled tape) and ``timeout`` (seconds to wait for the trades, default 10).
        """
        flows: list[OrderFlow] = []

        async def start(*plugins: Any, trades: int = 1, sim: Simulator | None = None, timeout: float = 10.0,
                        **kwargs: Any) -> OrderFlow:
            sim = sim or await orderflow_sim_factory()
            manager = PluginManager()
            for plugin in plugins:
                manager.register(plugin)
            counter = _Counter(trades)
            manager.register(counter, name="orderflow-test-counter")
            kwargs.setdefault("symbols", list(sim.feeds))
            flow = OrderFlow(ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=manager, **kwargs)
            flows.append(flow)
            await flow.start()
            async with asyncio.timeout(timeout):
                await counter.reached.wait()
            return flow

        yield start
        for flow in flows:
            await flow.stop()

    class _Counter:
        """Sets ``reached`` once ``target`` trades have been delivered."""

        def __init__(self, target: int) -> None:
            self.target = target
            self.count = 0
            self.reached = asyncio.Event()

        def on_trade(self, trade: Any) -> None:
            self.count += 1
            if self.count >= self.target:
                self.reached.set()
