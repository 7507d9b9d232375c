"""A local Binance market-data server: WebSocket streams and REST on one loopback port.

The market is one timeline for all connections, as on the exchange: a client that reconnects
misses what was played meanwhile, and REST shows only what has been played. Each TCP connection
is a :class:`~.connection.SimConnection`, which carries out its scripted faults as
:class:`~.faults.ConnectionFaults` decides.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence

from ..models import Market
from ..tape import Tape, bundled_tape
from .archive import Archive
from .connection import SimConnection
from .feed import Pace, SymbolFeed, schedule
from .frames import aggtrade_payload
from .records import ConnectionRecord, SimRecord
from .rest import RestApi
from .scenario import Fault, Scenario

__all__ = ["Simulator"]

logger = logging.getLogger(__name__)

_BATCH = 256  # trades per write when playing as fast as clients read


class Simulator:
    """Serve ``tapes`` like Binance on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        tapes: Tape | Sequence[Tape] | None = None,
        *,
        scenario: Scenario | None = None,
        pace: Pace | None = None,
        loop: bool = False,
        market: Market | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_on_subscribe: bool = True,
        ping_interval: float = 20.0,
        pong_timeout: float = 60.0,
        control_rate: int | None = None,
        max_streams: int | None = None,
        weight_limit: int = 6000,
        futures_weight_limit: int = 2400,
        weight_window: float = 60.0,
        close_timeout: float = 2.0,
        max_buffer: int = 64 * 1024 * 1024,
        record_ids: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        archive: Archive | None = None,
        statuses: Mapping[str, str] | None = None,
    ) -> None:
        if tapes is None:
            tapes = [bundled_tape()]
        elif isinstance(tapes, Tape):
            tapes = [tapes]
        self.feeds = {tape.symbol: SymbolFeed(tape, loop=loop) for tape in tapes}
        if len(self.feeds) != len(tapes):
            raise ValueError("one tape per symbol")
        self.market: Market = market or tapes[0].market
        self.scenario = scenario or Scenario()
        self.pace = pace or Pace()
        self.host = host
        self.port = port
        self.start_on_subscribe = start_on_subscribe
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.control_rate = control_rate or (5 if self.market == "spot" else 10)
        self.max_streams = max_streams or (1024 if self.market == "spot" else 200)
        self.close_timeout = close_timeout
        self.max_buffer = max_buffer
        self.record_ids = record_ids
        self.ssl_context = ssl_context  # a server context: wss:// and https:// instead of ws:// and http://
        self.record = SimRecord()
        self.archive = archive  # Binance's public archive (data.binance.vision) at archive_url, when given
        self.rest_api = RestApi(
            self, weight_limit=weight_limit, futures_weight_limit=futures_weight_limit, window=weight_window
        )
        self.rest_api.statuses.update(statuses or {})  # exchangeInfo's status of a symbol not TRADING ("BREAK")
        self._happened = dict.fromkeys(self.feeds, 0)
        self._stream_of = {symbol: f"{symbol.lower()}@aggTrade" for symbol in self.feeds}
        self._subscribers: dict[str, set[SimConnection]] = {}
        self.connections: set[SimConnection] = set()  # the open TCP connections
        self._rest_faults = [[fault, fault.count] for fault in self.scenario.rest]
        self._server: asyncio.Server | None = None
        self._market_task: asyncio.Task[None] | None = None
        self._first_subscriber: asyncio.Event | None = None
        self._changed: asyncio.Future[None] | None = None

    # Lifecycle

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen and start the market."""
        loop = asyncio.get_running_loop()
        self._first_subscriber = asyncio.Event()
        self._changed = loop.create_future()
        self._server = await loop.create_server(lambda: SimConnection(self), self.host, self.port,
                                                ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        self._market_task = loop.create_task(self._run_market(), name="orderflow sim market")
        self._market_task.add_done_callback(_log_failure)
        logger.info("simulator on %s: %s (%s), %s", self.ws_url,
                    ", ".join(self.feeds), self.market, self.pace.describe())

    async def stop(self) -> None:
        """Stop the market and drop every connection."""
        if self._market_task is not None:
            self._market_task.cancel()
            await asyncio.gather(self._market_task, return_exceptions=True)
        for connection in list(self.connections):
            connection.abort("simulator stopped")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def ws_url(self) -> str:
        """Base WebSocket URL (append ``/ws/<stream>`` or ``/stream?streams=...``)."""
        return f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base REST URL (append ``/api/v3/...`` or ``/fapi/v1/...``)."""
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    @property
    def archive_url(self) -> str:
        """Base URL of the archive (append ``/data/spot/daily/aggTrades/...``); the REST port serves it."""
        return self.rest_url

    def happened(self, symbol: str) -> int:
        """How many of ``symbol``'s trades the market has played."""
        return self._happened.get(symbol, 0)

    def played_ids(self, symbol: str) -> list[int]:
        """The ids of every trade of ``symbol`` played so far."""
        feed = self.feeds[symbol]
        return [feed.row(position).id for position in range(self._happened[symbol])]

    async def wait_for(self, predicate: Callable[[SimRecord], bool], timeout: float) -> None:
        """Wait until ``predicate(self.record)`` is true; raise TimeoutError after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.record):
            assert self._changed is not None, "simulator not started"
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"simulator state not reached within {timeout} s")
            await asyncio.wait([self._changed], timeout=remaining)

    def notify(self) -> None:
        """Wake whoever waits for the simulator's state to change (a connection opened, closed, subscribed)."""
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
            self._changed = asyncio.get_running_loop().create_future()

    # The market

    async def _run_market(self) -> None:
        assert self._first_subscriber is not None
        if self.start_on_subscribe or self.pace.asap:
            await self._first_subscriber.wait()
        loop = asyncio.get_running_loop()
        start = loop.time()
        batch: list[tuple[str, int]] = []
        plays = schedule(self.feeds, self.pace)
        if not self.pace.asap and not self.pace.smooth:
            await self._play_on_timers(plays, start)
            plays = iter(())
        for offset, symbol, position in plays:
            if self.pace.asap:
                batch.append((symbol, position))
                if len(batch) >= _BATCH:
                    self._publish(batch)
                    batch = []
                    await self._clients_drained()
                continue
            due = start + offset
            if due > loop.time():
                if batch:
                    self._publish(batch)
                    batch = []
                if self.pace.smooth:
                    while loop.time() < due:
                        await asyncio.sleep(0)
                else:
                    await asyncio.sleep(due - loop.time())
            batch.append((symbol, position))
            if len(batch) >= 4 * _BATCH:
                self._publish(batch)
                batch = []
                await asyncio.sleep(0)
        self._publish(batch)
        self.record.market_finished = True
        self.notify()
        logger.info("simulator: the tape ended after %s trades; no more will be sent",
                    ", ".join(f"{count} {symbol}" for symbol, count in self._happened.items()))

    async def _play_on_timers(self, plays: Iterator[tuple[float, str, int]], start: float) -> None:
        """Play ``plays`` at their times on the loop's own timers: one timer per trade time.

        The same as sleeping until each due time, without a task wake-up (a future, a second loop
        pass) per trade: the market is the simulator's busiest timer.
        """
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        batch: list[tuple[str, int]] = []
        pending: tuple[float, str, int] | None = None  # pulled from ``plays``, not yet due
        handle: asyncio.Handle | None = None

        def tick() -> None:
            nonlocal batch, pending, handle
            handle = None
            if finished.done():  # stopped (cancelled) while this tick was already due: nothing more is published
                return
            try:
                while True:
                    if pending is None:
                        item = next(plays, None)
                        if item is None:
                            self._publish(batch)
                            finished.set_result(None)
                            return
                        pending = (start + item[0], item[1], item[2])
                    due, symbol, position = pending
                    if due > loop.time():
                        if batch:
                            self._publish(batch)
                            batch = []
                        handle = loop.call_at(due, tick)
                        return
                    pending = None
                    batch.append((symbol, position))
                    if len(batch) >= 4 * _BATCH:
                        self._publish(batch)
                        batch = []
                        handle = loop.call_soon(tick)
                        return
            except BaseException as exc:  # the task that awaits the market fails with it, as before
                if not finished.done():
                    finished.set_exception(exc)

        tick()
        try:
            await finished
        finally:
            if handle is not None:
                handle.cancel()

    def _publish(self, batch: list[tuple[str, int]]) -> None:
        touched: set[SimConnection] = set()
        for symbol, position in batch:
            self._happened[symbol] = position + 1
            stream = self._stream_of[symbol]
            subscribers = self._subscribers.get(stream)
            if not subscribers:
                continue
            row = self.feeds[symbol].row(position)
            payload = aggtrade_payload(self.market, symbol, row)
            for connection in tuple(subscribers):  # a fault may unsubscribe while we offer
                connection.offer(stream, payload, row.id)
                touched.add(connection)
        for connection in touched:
            connection.flush()
        if batch:
            self.notify()

    async def _clients_drained(self) -> None:
        """In asap mode: yield to the loop, then wait until no subscribed client's buffer is full."""
        await asyncio.sleep(0)  # accepts, pings and control messages must never starve
        while True:
            streaming = self._streaming()
            if not streaming:  # nobody is listening: wait for a subscriber
                assert self._first_subscriber is not None
                self._first_subscriber.clear()
                await self._first_subscriber.wait()
                continue
            waiting = [c for c in streaming if not c.writable.is_set()]
            if not waiting:
                return
            waiters = [asyncio.ensure_future(c.writable.wait()) for c in waiting]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    def _streaming(self) -> set[SimConnection]:
        return {c for subscribers in self._subscribers.values() for c in subscribers if not c.silenced}

    def subscribe(self, connection: SimConnection, streams: list[str]) -> None:
        """Add ``connection`` to the subscribers of ``streams``."""
        for stream in streams:
            self._subscribers.setdefault(stream, set()).add(connection)
        if streams and self._first_subscriber is not None:
            self._first_subscriber.set()

    def unsubscribe(self, connection: SimConnection, streams: list[str] | None = None) -> None:
        """Remove ``connection`` from ``streams`` (all when None)."""
        for stream, subscribers in self._subscribers.items():
            if streams is None or stream in streams:
                subscribers.discard(connection)

    def record_connection(self, path: str) -> ConnectionRecord:
        """Number a new WebSocket upgrade request for ``path`` and give it its scenario faults."""
        record = ConnectionRecord(len(self.record.connections) + 1, path)
        record.faults = self.scenario.for_connection(record.number)
        self.record.connections.append(record)
        return record

    def end_rest_faults(self) -> None:
        """Answer every REST request from now on as it should be (the faults of ``scenario.rest`` not yet used are
        dropped)."""
        self._rest_faults.clear()

    def next_rest_fault(self) -> Fault | None:
        """The REST fault the next request gets, if any (each applies to ``count`` requests)."""
        while self._rest_faults:
            entry = self._rest_faults[0]
            if entry[1] > 0:
                entry[1] -= 1
                return entry[0]
            self._rest_faults.pop(0)
        return None


def _log_failure(task: asyncio.Task[None]) -> None:
    """A market task that dies must say so, never end silently."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("simulator market stopped by an error", exc_info=task.exception())
