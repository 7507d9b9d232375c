"""One simulator TCP connection: a REST request, or a WebSocket stream with its faults.

Each connection is an :class:`asyncio.Protocol` driving websockets' sans-I/O ``ServerProtocol``
for the HTTP upgrade, control frames and the closing handshake, so every fault is under our
control (no answer, a slow answer, a reset, a blackhole). Trade frames are written to the
transport directly in batches, which is how the simulator keeps up with the fastest client.
What the scripted faults do is decided by :class:`~.faults.ConnectionFaults`; this module only
carries it out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from .archive import Archive
from .archive import serve as serve_archive
from .faults import ConnectionFaults, SlowDrip, drip_answer, rest_answer
from .frames import combined, json_response, parse_target, text_frame
from .records import ConnectionRecord, SimRecord
from .rest import RestApi
from .scenario import Fault

__all__ = ["Exchange", "SimConnection"]

# websockets logs every HTTP response at INFO; one line per REST call would drown the log.
_protocol_logger = logging.getLogger("orderflow_plugin.sim.protocol")
_protocol_logger.setLevel(logging.WARNING)

_MAX_CLIENT_MESSAGE = 64 * 1024
_RESET_DELAY = 0.05


class Exchange(Protocol):
    """What a connection needs of the simulator serving it (a :class:`~.server.Simulator`, which imports this)."""

    record: SimRecord
    connections: set[SimConnection]
    archive: Archive | None
    rest_api: RestApi
    max_streams: int
    control_rate: int
    ping_interval: float
    pong_timeout: float
    close_timeout: float
    max_buffer: int
    record_ids: bool

    def notify(self) -> None: ...

    def record_connection(self, path: str) -> ConnectionRecord: ...

    def next_rest_fault(self) -> Fault | None: ...

    def subscribe(self, connection: SimConnection, streams: list[str]) -> None: ...

    def unsubscribe(self, connection: SimConnection, streams: list[str] | None = None) -> None: ...


class SimConnection(asyncio.Protocol):
    """One TCP connection: an HTTP request for REST, or a WebSocket stream with its faults."""

    def __init__(self, sim: Exchange) -> None:
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
        self.faults: ConnectionFaults | None = None  # only a WebSocket connection with faults has one
        self._out: list[bytes] = []
        self._drip: SlowDrip | None = None
        self._last_pong = 0.0
        self._control_window = (0, 0)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports don't subclass asyncio's
        self.sim.connections.add(self)
        self.sim.record.tcp_accepted += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sim.notify()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim.connections.discard(self)
        self.sim.unsubscribe(self)
        self.writable.set()
        for task in self.tasks:
            task.cancel()
        if self.record is not None and self.record.closed is None:
            self.record.closed = "client" if exc is None else f"lost: {exc}"
        self.sim.notify()

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
        if path.startswith("/data/") and self.sim.archive is not None and self.transport is not None:
            self.spawn(serve_archive(self.transport, self.sim.archive.answer(path, request.headers.get("Range"))))
            self.sim.notify()
            return
        self.record = self.sim.record_connection(request.path)
        if not self.record.faults:
            self._accept(request)
            return
        self.faults = ConnectionFaults(self.record.faults, self)
        fault = self.faults.handshake()
        if fault is None:
            self._accept(request)
        elif fault.kind == "http_status":
            self._respond(fault.status, {"code": -1003, "msg": f"simulated HTTP {fault.status}"}, fault.retry_after)
        elif fault.kind == "slow_handshake":
            self.spawn(self._accept_later(request, fault.seconds))
        # hang_before_handshake: keep the TCP connection, never answer

    def _on_rest(self, request: Request, path: str, query: str) -> None:
        # Scenario.rest scripts the requests a stream repeats (backfill, liveness): the one exchangeInfo each
        # stream asks at start would take the first fault meant for them.
        fault = None if path.endswith("/exchangeInfo") else self.sim.next_rest_fault()
        answer = rest_answer(self.sim.rest_api, fault, path, query)
        if answer is None:
            self.sim.record.rest.append((request.path, 0))
            return  # read, never answered
        self.protocol.send_response(json_response(answer.status, answer.body, answer.headers))
        if fault is not None and fault.kind == "rest_status":
            self._send_protocol_data()  # written at once and without a notify, as an upgrade refusal
            self.sim.record.rest.append((request.path, answer.status))
            return
        self.sim.record.rest.append((request.path, answer.status))
        if fault is not None and fault.kind == "rest_slow_body":
            assert self.transport is not None
            data = b"".join(self.protocol.data_to_send())  # taken here, so _process has nothing left to send
            self.spawn(drip_answer(self.transport, data, fault))
        self.sim.notify()

    def _respond(self, status: int, body: dict[str, Any], retry_after: int | None) -> None:
        headers = [] if retry_after is None else [("Retry-After", str(retry_after))]
        self.protocol.send_response(json_response(status, json.dumps(body).encode(), headers))
        self._send_protocol_data()

    async def _accept_later(self, request: Request, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.transport is not None and not self.transport.is_closing():
            self._accept(request)
            self._send_protocol_data()

    def _accept(self, request: Request) -> None:
        assert self.record is not None
        streams, wrapped, problem = parse_target(request.path, self.sim.max_streams)
        if problem is not None:
            self._respond(400, {"code": -1121, "msg": problem}, None)
            return
        response = self.protocol.accept(request)
        self.protocol.send_response(response)
        if response.status_code != 101:
            return
        self.record.upgraded = True
        self.wrapped = wrapped
        faults = self.faults
        if faults is not None:
            if faults.slow_drip is not None:
                assert self.transport is not None
                self._drip = SlowDrip(faults.slow_drip, self.transport, self)
            if faults.upgraded(wrapped):
                self.silenced = True
        self._subscribe(streams)
        if faults is not None:
            faults.subscribed()
        if self.sim.ping_interval > 0:
            self.spawn(self._keepalive())
        self.sim.notify()

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
                self.sim.notify()
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
        self.sim.notify()

    # Outgoing

    def offer(self, stream: str, payload: bytes, agg_id: int) -> None:
        """Queue one trade for this connection (written by :meth:`flush`), through its faults if any."""
        if self.silenced or self.closing:
            return
        message = combined(stream, payload) if self.wrapped else payload
        if self.faults is not None:
            self.faults.offer(message, agg_id)
        else:
            self.queue(message, agg_id)

    def queue(self, message: bytes, agg_id: int) -> None:
        """Queue one trade message, counted as sent."""
        self._out.append(text_frame(message))
        record = self.record
        assert record is not None
        record.messages_sent += 1
        if self.sim.record_ids:
            record.ids_sent.append(agg_id)

    def send_raw(self, message: bytes) -> None:
        """Queue one text frame that is not a trade (a notice, a bad frame)."""
        self._out.append(text_frame(message))

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
        else:
            self._drip.write(data)

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
        self.spawn(self._abort_later(self.sim.close_timeout))

    def abort(self, why: str) -> None:
        """Drop the connection now."""
        self._closed_as(why)
        if self.transport is not None:
            self.transport.abort()

    async def _abort_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _closed_as(self, why: str) -> None:
        if self.record is not None and self.record.closed is None:
            self.record.closed = why
        self.sim.notify()

    def fired(self, fault: Fault) -> None:
        """Record that ``fault`` acted."""
        if self.record is not None:
            self.record.fired.append(fault.kind)
        self.sim.notify()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task that ends with the connection."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
