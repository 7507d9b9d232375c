"""Pytest fixtures for plugin authors (registered through the ``pytest11`` entry point).

``orderflow_sim``: a running :class:`~orderflow_plugin.sim.Simulator` on the bundled real
BTCUSDT tape at 100x speed. ``orderflow_sim_factory``: start simulators with your own tapes,
scenario and pace. ``orderflow_stream``: start an :class:`~orderflow_plugin.OrderFlow` on the
simulator with your plugins and wait for the first ``trades``. Everything is stopped at the
end of the test. An ``async def`` test that asks for one of them runs on pytest-asyncio even in its
strict mode (no ``asyncio_mode = "auto"`` needed, no ``@pytest.mark.asyncio``). A strategy's hook,
tested in five lines::

    async def test_my_strategy_sees_buys(orderflow_stream):
        strategy = MyStrategy()
        await orderflow_stream(strategy, trades=200)
        assert strategy.buys > 0

Real TLS (needs ``trustme``: ``pip install 'orderflow-plugin[tls]'``): ``orderflow_tls`` is a
throwaway CA and a certificate for ``localhost``, ``127.0.0.1`` and ``::1``, made once per session
(:class:`~orderflow_plugin.sim.SimCertificates`; ``.ca_file`` is the CA's PEM path).
``orderflow_sim_factory(tls=True, ...)`` and ``orderflow_tls_sim`` serve ``wss://localhost:<port>``
and ``https://localhost:<port>`` with it; clients must trust ``orderflow_tls.ca_file`` (nothing turns
verification off). ``orderflow_stream(..., tls=True)``, or given a TLS ``sim=``, passes that CA file
to OrderFlow unless you pass ``ca_file=`` yourself::

    async def test_my_bot_over_tls(orderflow_tls_sim, orderflow_tls):
        flow = OrderFlow(["BTCUSDT"], ws_url=orderflow_tls_sim.ws_url, rest_url=orderflow_tls_sim.rest_url,
                         ca_file=orderflow_tls.ca_file)

Real Redis (needs the ``redis-server`` binary: ``apt-get install redis-server``, or ``$ORDERFLOW_REDIS_SERVER``;
these fixtures are synchronous and need no pytest-asyncio): ``orderflow_redis`` is a fresh
:class:`~orderflow_plugin.redisbus.server.RedisServer` on 127.0.0.1 and a free port for one test (``.url``,
``.kill()``, ``.restart()`` keeping its data); ``orderflow_redis_factory(requirepass="...", ...)`` starts more
with any ``RedisServer`` arguments. Each one's folder is under the test's ``tmp_path``; all stop after the test::

    async def test_my_bot_reads_redis(orderflow_redis):
        client = redis.asyncio.Redis.from_url(orderflow_redis.url)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .redisbus.server import RedisServer

__all__ = [
    "orderflow_redis",
    "orderflow_redis_factory",
    "orderflow_sim",
    "orderflow_sim_factory",
    "orderflow_stream",
    "orderflow_tls",
    "orderflow_tls_sim",
]

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixtures need pytest-asyncio; say so instead of breaking pytest
    pytest_asyncio = None

if pytest_asyncio is not None:
    import asyncio
    import inspect

    from .plugins import PluginManager
    from .sim import Pace, SimCertificates, Simulator
    from .stream import OrderFlow

    _ASYNC_FIXTURES = frozenset({"orderflow_sim", "orderflow_sim_factory", "orderflow_stream", "orderflow_tls_sim"})

    @pytest.hookimpl(wrapper=True, trylast=True)  # innermost: runs before pytest-asyncio's wrapper reads the marks
    def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
        """Mark ``async def`` tests that use these fixtures for pytest-asyncio, whatever its ``asyncio_mode``."""
        result = yield
        for item in result if isinstance(result, list) else [result]:
            if not isinstance(item, pytest.Function) or item.get_closest_marker("asyncio") is not None:
                continue
            if inspect.iscoroutinefunction(item.obj) and not _ASYNC_FIXTURES.isdisjoint(item.fixturenames):
                item.add_marker(pytest.mark.asyncio)
        return result

    @pytest.fixture(scope="session")
    def orderflow_tls(tmp_path_factory: pytest.TempPathFactory) -> SimCertificates:
        """A throwaway CA and a certificate for localhost, 127.0.0.1 and ::1 (``.ca_file``, ``.server_context()``)."""
        return SimCertificates(tmp_path_factory.mktemp("orderflow-tls"))

    @pytest_asyncio.fixture
    async def orderflow_sim_factory(
        request: pytest.FixtureRequest,
    ) -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
        """Start simulators with any ``Simulator`` arguments (``tls=True``: wss/https on localhost); all stop after."""
        started: list[Simulator] = []

        async def start(*args: Any, tls: bool = False, **kwargs: Any) -> Simulator:
            kwargs.setdefault("pace", Pace(speed=100.0))
            if tls:  # the certificates only when asked for: trustme stays optional
                certificates: SimCertificates = request.getfixturevalue("orderflow_tls")
                kwargs.setdefault("host", "localhost")  # the name the certificate is for, as clients will use it
                kwargs["ssl_context"] = certificates.server_context()
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
    async def orderflow_tls_sim(orderflow_sim_factory: Callable[..., Awaitable[Simulator]]) -> Simulator:
        """The bundled tape at 100x over wss:// and https:// on localhost, signed by ``orderflow_tls``."""
        return await orderflow_sim_factory(tls=True)

    @pytest_asyncio.fixture
    async def orderflow_stream(
        request: pytest.FixtureRequest,
        orderflow_sim_factory: Callable[..., Awaitable[Simulator]],
    ) -> AsyncIterator[Callable[..., Awaitable[OrderFlow]]]:
        """Start OrderFlow on a simulator with ``plugins``; return once ``trades`` trades were delivered.

        Keyword arguments go to OrderFlow (``timeouts=Timeouts(stall=5.0)``, ...), except ``sim`` (a
        simulator to use instead of a new one on the bundled tape), ``tls`` (a new simulator over TLS)
        and ``timeout`` (seconds to wait for the trades, default 10). On a TLS simulator ``ca_file``
        defaults to ``orderflow_tls``'s.
        """
        flows: list[OrderFlow] = []

        async def start(*plugins: Any, trades: int = 1, sim: Simulator | None = None, tls: bool = False,
                        timeout: float = 10.0, **kwargs: Any) -> OrderFlow:
            sim = sim or await orderflow_sim_factory(tls=tls)
            if sim.ssl_context is not None and "ca_file" not in kwargs:
                kwargs["ca_file"] = request.getfixturevalue("orderflow_tls").ca_file
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


# The binary is found once per session, before any function-scoped fixture runs: a conftest that clears ORDERFLOW_
# variables for each test (as ours does) must not hide $ORDERFLOW_REDIS_SERVER, and a missing binary fails each
# test with the same one line instead of starting nothing.
@pytest.fixture(scope="session")
def _orderflow_redis_binary() -> str:
    """The redis-server the fixtures run (RedisServerError, one line, if there is none)."""
    from .redisbus.server import find_redis_server  # lazy: the plugin loads without the Redis parts

    return find_redis_server()


@pytest.fixture
def orderflow_redis_factory(_orderflow_redis_binary: str, tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers with any ``RedisServer`` arguments, each in a folder under ``tmp_path``; all stop after."""
    from .redisbus.server import RedisServer

    started: list[RedisServer] = []

    def start(**kwargs: Any) -> RedisServer:
        kwargs.setdefault("path", _orderflow_redis_binary)
        kwargs.setdefault("directory", tmp_path / f"redis-{len(started)}")
        server = RedisServer(**kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def orderflow_redis(orderflow_redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """A fresh redis-server on 127.0.0.1 and a free port (``.url``), append-only, stopped after the test."""
    return orderflow_redis_factory()
