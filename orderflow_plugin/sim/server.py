"""A local Binance market-data server: WebSocket streams and REST on one loopback port.

Each TCP connection is an :class:`asyncio.Protocol` driving websockets' sans-I/O
``ServerProtocol`` for the HTTP upgrade, control frames and the closing handshake, so every
fault is under our control (no answer, a slow answer, a reset, a blackhole). Trade frames are
written to the transport directly in batches, which is how the simulator keeps up with the
fastest client.

The market is one timeline for all connections, as on the exchange: a client that reconnects
misses what was played meanwhile, and REST shows only what has been played.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from ..models import Market
from ..tape import Tape, bundled_tape
from .feed import Pace, SymbolFeed, schedule
from .frames import aggtrade_payload, combined, server_shutdown, text_frame
from .rest import RestApi
from .scenario import Fault, Scenario

__all__ = ["ConnectionRecord", "SimRecord", "Simulator"]

logger = logging.getLogger(__name__)
# websockets logs every HTTP response at INFO; one line per REST call would drown the log.
_protocol_logger = logging.getLogger("orderflow_plugin.sim.protocol")
_protocol_logger.setLevel(logging.WARNING)

_BATCH = 256  # trades per write when playing as fast as clients read
_MAX_CLIENT_MESSAGE = 64 * 1024
_RESET_DELAY = 0.05


@dataclass
class ConnectionRecord:
    """What happened on one WebSocket connection (numbered from 1 in order of upgrade requests)."""

    number: int
    path: str
    streams: list[str] = field(default_factory=list)
    upgraded: bool = False
    faults: tuple[Fault, ...] = ()
    fired: list[str] = field(default_factory=list)
    ids_sent: list[int] = field(default_factory=list)
    messages_sent: int = 0
    control: list[dict[str, Any]] = field(default_factory=list)
    pings_sent: int = 0
    pongs_received: int = 0
    closed: str | None = None


@dataclass
class SimRecord:
    """Everything the simulator did, for tests to assert on."""

    connections: list[ConnectionRecord] = field(default_factory=list)
    rest: list[tuple[str, int]] = field(default_factory=list)
    tcp_accepted: int = 0
    market_finished: bool = False


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
        self.rest_api = RestApi(
            self, weight_limit=weight_limit, futures_weight_limit=futures_weight_limit, window=weight_window
        )
        self._happened = dict.fromkeys(self.feeds, 0)
        self._stream_of = {symbol: f"{symbol.lower()}@aggTrade" for symbol in self.feeds}
        self._subscribers: dict[str, set[_Connection]] = {}
        self._connections: set[_Connection] = set()
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
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port,
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
        for connection in list(self._connections):
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

    def _notify(self) -> None:
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
        for offset, symbol, position in schedule(self.feeds, self.pace):
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
        self._notify()
        logger.info("simulator: tape finished")

    def _publish(self, batch: list[tuple[str, int]]) -> None:
        touched: set[_Connection] = set()
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
            self._notify()

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

    def _streaming(self) -> set[_Connection]:
        return {c for subscribers in self._subscribers.values() for c in subscribers if not c.silenced}

    def subscribe(self, connection: _Connection, streams: list[str]) -> None:
        """Add ``connection`` to the subscribers of ``streams``."""
        for stream in streams:
            self._subscribers.setdefault(stream, set()).add(connection)
        if streams and self._first_subscriber is not None:
            self._first_subscriber.set()

    def unsubscribe(self, connection: _Connection, streams: list[str] | None = None) -> None:
        """Remove ``connection`` from ``streams`` (all when None)."""
        for stream, subscribers in self._subscribers.items():
            if streams is None or stream in streams:
                subscribers.discard(connection)

    def next_rest_fault(self) -> Fault | None:
        """The REST fault the next request gets, if any (each applies to ``count`` requests)."""
        while self._rest_faults:
            entry = self._rest_faults[0]
            if entry[1] > 0:
                entry[1] -= 1
                return entry[0]
            self._rest_faults.pop(0)
        return None


class _Connection(asyncio.Protocol):
    """One TCP connection: an HTTP request for REST, or a WebSocket stream with its faults."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.protocol = ServerProtocol(max_size=_MAX_CLIENT_MESSAGE, logger=_protocol_logger)
        self.transport: asyncio.Transport | None = None
        self.record: ConnectionRecord | None = None
        self.streams: list[str] = []
        self.wrapped = False  # combined-stream envelopes
        self.silenced = False  # sends no trades (hang_after_handshake, blackhole)
        self.closing = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._out: list[bytes] = []
        self._offered = 0
        self._recent: deque[tuple[bytes, int]] = deque(maxlen=1000)
        self._held: list[tuple[bytes, int]] = []
        self._faults: tuple[Fault, ...] = ()
        self._drip: Fault | None = None
        self._drip_buffer = bytearray()
        self._last_pong = 0.0
        self._control_window = (0, 0)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports don't subclass asyncio's
        self.sim._connections.add(self)
        self.sim.record.tcp_accepted += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sim._notify()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim._connections.discard(self)
        self.sim.unsubscribe(self)
        self.writable.set()
        for task in self.tasks:
            task.cancel()
        if self.record is not None and self.record.closed is None:
            self.record.closed = "client" if exc is None else f"lost: {exc}"
        self.sim._notify()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # Incoming

    def _process(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._send_protocol_data()

    def _on_request(self, request: Request) -> None:
        path, _, query = request.path.partition("?")
        if path.startswith(("/api/", "/fapi/")):
            self._on_rest(request, path, query)
            return
        record = ConnectionRecord(len(self.sim.record.connections) + 1, request.path)
        record.faults = self.sim.scenario.for_connection(record.number)
        self.record = record
        self.sim.record.connections.append(record)
        self._faults = record.faults
        for fault in self._faults:
            if fault.kind == "hang_before_handshake":
                self._fired(fault)
                return  # keep the TCP connection, never answer
            if fault.kind == "http_status":
                self._fired(fault)
                self._respond(fault.status, {"code": -1003, "msg": f"simulated HTTP {fault.status}"},
                              fault.retry_after)
                return
            if fault.kind == "slow_handshake":
                self._fired(fault)
                self._spawn(self._accept_later(request, fault.seconds))
                return
        self._accept(request)

    def _on_rest(self, request: Request, path: str, query: str) -> None:
        fault = self.sim.next_rest_fault()
        if fault is not None and fault.kind == "rest_hang":
            self.sim.record.rest.append((request.path, 0))
            return  # read, never answered
        if fault is not None and fault.kind == "rest_status":
            status = fault.status
            self._respond(status, {"code": -1003 if status == 429 else -1000, "msg": f"simulated HTTP {status}"},
                          fault.retry_after)
            self.sim.record.rest.append((request.path, status))
            return
        max_rows = None
        if fault is not None and fault.kind in ("rest_short_page", "rest_empty"):
            max_rows = fault.after if fault.kind == "rest_short_page" else 0
        answer = self.sim.rest_api.handle(path, parse_qs(query), max_rows=max_rows)
        headers = Headers([("Content-Type", "application/json;charset=UTF-8"), ("Connection", "close"),
                           ("Content-Length", str(len(answer.body))), *answer.headers])
        self.protocol.send_response(Response(answer.status, HTTPStatus(answer.status).phrase, headers, answer.body))
        self.sim.record.rest.append((request.path, answer.status))
        if fault is not None and fault.kind == "rest_slow_body":
            data = b"".join(self.protocol.data_to_send())  # taken here, so _process has nothing left to send
            self._spawn(self._drip_rest(data, fault))
        self.sim._notify()

    async def _drip_rest(self, data: bytes, fault: Fault) -> None:
        """Write a REST answer ``fault.size`` bytes at a time, ``fault.seconds`` apart, then close."""
        assert self.transport is not None
        for start in range(0, len(data), fault.size):
            if self.transport.is_closing():
                return
            self.transport.write(data[start : start + fault.size])
            await asyncio.sleep(fault.seconds)
        self.transport.close()

    def _respond(self, status: int, body: dict[str, Any], retry_after: int | None) -> None:
        data = json.dumps(body).encode()
        headers = Headers([("Content-Type", "application/json;charset=UTF-8"), ("Connection", "close"),
                           ("Content-Length", str(len(data)))])
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self.protocol.send_response(Response(status, HTTPStatus(status).phrase, headers, data))
        self._send_protocol_data()

    async def _accept_later(self, request: Request, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.transport is not None and not self.transport.is_closing():
            self._accept(request)
            self._send_protocol_data()

    def _accept(self, request: Request) -> None:
        assert self.record is not None
        streams, wrapped, problem = _parse_target(request.path, self.sim.max_streams)
        if problem is not None:
            self._respond(400, {"code": -1121, "msg": problem}, None)
            return
        response = self.protocol.accept(request)
        self.protocol.send_response(response)
        if response.status_code != 101:
            return
        self.record.upgraded = True
        self.wrapped = wrapped
        self._drip = next((f for f in self._faults if f.kind == "slow_drip"), None)
        if any(f.kind == "hang_after_handshake" for f in self._faults):
            self._fired(next(f for f in self._faults if f.kind == "hang_after_handshake"))
            self.silenced = True
        self._subscribe(streams)
        for fault in self._faults:
            if fault.kind == "max_age":
                self._spawn(self._close_later(fault, fault.seconds, 1001, "max connection age"))
        if self.sim.ping_interval > 0:
            self._spawn(self._keepalive())
        self.sim._notify()

    def _subscribe(self, streams: list[str]) -> None:
        new = [s for s in streams if s not in self.streams]
        self.streams.extend(new)
        assert self.record is not None
        self.record.streams = list(self.streams)
        self.sim.subscribe(self, new)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            self._last_pong = time.monotonic()
            if self.record is not None:
                self.record.pongs_received += 1
                self.sim._notify()
        elif frame.opcode is Opcode.TEXT:
            self._on_control(frame.data)
        elif frame.opcode is Opcode.CLOSE:
            self.closing = True  # the protocol has echoed the close: no trade may follow it
            self.sim.unsubscribe(self)
            if self.record is not None and self.record.closed is None:
                self.record.closed = "client close frame"

    def _on_control(self, data: bytes) -> None:
        """SUBSCRIBE, UNSUBSCRIBE and LIST_SUBSCRIPTIONS, limited to ``control_rate`` a second."""
        second = int(time.monotonic())
        window, count = self._control_window
        count = count + 1 if window == second else 1
        self._control_window = (second, count)
        if count > self.sim.control_rate:
            self.close(1008, "Too many requests")
            return
        try:
            message = json.loads(data)
            method, request_id = message["method"], message.get("id")
            params = message.get("params", [])
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise TypeError("params must be a list of stream names")
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json({"error": {"code": 2, "msg": f"Invalid request: {exc}"}, "id": None})
            return
        assert self.record is not None
        self.record.control.append(message)
        if method == "SUBSCRIBE":
            if len(set(self.streams) | set(params)) > self.sim.max_streams:
                self._send_json({"error": {"code": 2, "msg": "Invalid request: too many streams"}, "id": request_id})
                return
            self._subscribe(params)
            self._send_json({"result": None, "id": request_id})
        elif method == "UNSUBSCRIBE":
            self.streams = [s for s in self.streams if s not in params]
            self.record.streams = list(self.streams)
            self.sim.unsubscribe(self, params)
            self._send_json({"result": None, "id": request_id})
        elif method == "LIST_SUBSCRIPTIONS":
            self._send_json({"result": list(self.streams), "id": request_id})
        else:
            self._send_json({"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"},
                             "id": request_id})
        self.sim._notify()

    # Outgoing trades and the faults that act on them

    def offer(self, stream: str, payload: bytes, agg_id: int) -> None:
        """Queue one trade for this connection (written by :meth:`flush`)."""
        if self.silenced or self.closing:
            return
        message = combined(stream, payload) if self.wrapped else payload
        if self._faults and self._apply_faults(message, agg_id):
            return
        self._queue(message, agg_id)

    def _queue(self, message: bytes, agg_id: int) -> None:
        self._out.append(text_frame(message))
        self._recent.append((message, agg_id))
        record = self.record
        assert record is not None
        record.messages_sent += 1
        if self.sim.record_ids:
            record.ids_sent.append(agg_id)

    def _apply_faults(self, message: bytes, agg_id: int) -> bool:
        """Act on this trade; return True when it must not be queued as usual."""
        offered = self._offered
        self._offered += 1
        for fault in self._faults:
            kind, after = fault.kind, fault.after
            if kind == "reset_after" and offered == after:
                self._fired(fault)
                self.reset()
                return True
            if kind == "close_after" and offered == after:
                self._fired(fault)
                self.close(fault.code, fault.reason or "simulated close")
                return True
            if kind == "mute_after" and offered >= after:
                if offered == after:
                    self._fired(fault)
                return True
            if kind == "blackhole_after" and offered == after:
                self._fired(fault)
                self.blackhole()
                return True
            if kind == "server_shutdown_after" and offered == after:
                self._fired(fault)
                self._out.append(text_frame(server_shutdown(int(time.time() * 1000), wrapped=self.wrapped)))
                self._spawn(self._close_later(fault, fault.seconds, 1001, "server shutdown"))
            elif kind == "skip_ids" and after <= offered < after + fault.count:
                if offered == after:
                    self._fired(fault)
                return True
            elif kind == "duplicate_ids" and offered == after:
                self._fired(fault)
                for old, old_id in list(self._recent)[-fault.count:]:
                    self._queue(old, old_id)
            elif kind == "out_of_order" and after <= offered < after + fault.count:
                self._held.append((message, agg_id))
                if len(self._held) == fault.count:
                    self._fired(fault)
                    for held, held_id in reversed(self._held):
                        self._queue(held, held_id)
                    self._held.clear()
                return True
            elif kind == "malformed_after" and offered == after:
                self._fired(fault)
                self._out.append(text_frame(_malformed(fault.variant, message)))
            elif kind == "oversized_frame" and offered == after:
                self._fired(fault)
                pad = fault.size - 24
                self._out.append(text_frame(b'{"e":"aggTrade","pad":"' + b"x" * max(0, pad) + b'"}'))
        return False

    def flush(self) -> None:
        """Write the queued frames in one go."""
        if not self._out or self.transport is None:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._write(data)
        if self.transport.get_write_buffer_size() > self.sim.max_buffer:
            self.close(1008, "slow consumer")

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        if self._drip is None:
            self.transport.write(data)
            return
        if not self._drip_buffer:
            self._spawn(self._drip_out(self._drip))
        self._drip_buffer += data

    async def _drip_out(self, fault: Fault) -> None:
        self._fired(fault)
        while self._drip_buffer and self.transport is not None:
            chunk = bytes(self._drip_buffer[: fault.size])
            del self._drip_buffer[: fault.size]
            self.transport.write(chunk)
            await asyncio.sleep(fault.seconds)

    def _send_json(self, body: dict[str, Any]) -> None:
        self.flush()
        self.protocol.send_text(json.dumps(body).encode())
        self._send_protocol_data()

    def _send_protocol_data(self) -> None:
        if self.transport is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                self._write(data)
            elif not self.transport.is_closing():
                self.transport.close()  # the protocol asked for EOF: a server closes TCP

    # Ending

    def reset(self) -> None:
        """Abort with a TCP RST shortly after what was already sent.

        An RST makes the client's kernel discard data the client has not read yet, so the reset
        waits ``_RESET_DELAY`` for the frames before it to be read: "reset after N messages"
        delivers N messages, as the fault's name promises.
        """
        self.silenced = True
        self.flush()
        self._closed_as("reset")
        self.sim.unsubscribe(self)
        asyncio.get_running_loop().call_later(_RESET_DELAY, self._send_rst)

    def _send_rst(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()

    def blackhole(self) -> None:
        """Go silent: no data, no pongs, no pings; the TCP connection stays open."""
        self.flush()  # the messages before the fault were promised
        self.silenced = True
        for task in self.tasks:
            task.cancel()
        if self.transport is not None:
            self.transport.pause_reading()
        self.sim.unsubscribe(self)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; abort if the client does not finish it in time."""
        if self.closing:
            return
        self.flush()
        self.closing = True
        self._closed_as(f"server close {code} {reason}".strip())
        self.sim.unsubscribe(self)
        self.protocol.send_close(code, reason)
        self._send_protocol_data()
        self._spawn(self._abort_later(self.sim.close_timeout))

    def abort(self, why: str) -> None:
        """Drop the connection now."""
        self._closed_as(why)
        if self.transport is not None:
            self.transport.abort()

    async def _close_later(self, fault: Fault, seconds: float, code: int, reason: str) -> None:
        await asyncio.sleep(seconds)
        if fault.kind == "max_age":
            self._fired(fault)
        self.close(code, reason)

    async def _abort_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    async def _keepalive(self) -> None:
        """Ping every ``ping_interval``; drop a client that does not pong within ``pong_timeout``."""
        sim = self.sim
        while True:
            await asyncio.sleep(sim.ping_interval)
            sent = time.monotonic()
            self.protocol.send_ping(str(int(time.time() * 1000)).encode())
            self._send_protocol_data()
            assert self.record is not None
            self.record.pings_sent += 1
            await asyncio.sleep(sim.pong_timeout)
            if self._last_pong < sent:
                self.close(1008, "pong timeout")
                return
            if sim.pong_timeout < sim.ping_interval:
                continue

    def _closed_as(self, why: str) -> None:
        if self.record is not None and self.record.closed is None:
            self.record.closed = why
        self.sim._notify()

    def _fired(self, fault: Fault) -> None:
        if self.record is not None:
            self.record.fired.append(fault.kind)
        self.sim._notify()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def _log_failure(task: asyncio.Task[None]) -> None:
    """A market task that dies must say so, never end silently."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("simulator market stopped by an error", exc_info=task.exception())


def _parse_target(target: str, max_streams: int) -> tuple[list[str], bool, str | None]:
    """Streams and envelope style of ``/ws``, ``/ws/<stream>``, ``/stream?streams=a/b`` (optionally
    under the futures ``/market`` route); or a problem to answer with 400."""
    path, _, query = target.partition("?")
    path = path.removeprefix("/market")
    if path in ("/ws", "/ws/"):
        return [], False, None
    if path.startswith("/ws/"):
        streams = [s for s in path.removeprefix("/ws/").split("/") if s]
        wrapped = False
    elif path in ("/stream", "/stream/"):
        streams = [s for s in parse_qs(query).get("streams", [""])[0].split("/") if s]
        wrapped = True
    else:
        return [], False, f"Invalid path {path}"
    if len(streams) > max_streams:
        return [], False, f"Too many streams: {len(streams)} > {max_streams}"
    return streams, wrapped, None


def _malformed(variant: str, message: bytes) -> bytes:
    if variant == "truncated":
        return message[: len(message) // 2]
    if variant == "not_json":
        return b"<html>502 Bad Gateway</html>"
    # valid JSON, wrong types: the id as a string, the price as a number
    data = json.loads(message)
    event = data.get("data", data)
    event["a"], event["p"] = str(event["a"]), float(event["p"])
    return json.dumps(data, separators=(",", ":")).encode()
