"""One WebSocket client connection: websockets' sans-I/O protocol under an asyncio.Protocol, with flow control.

Frames are handed to ``on_frames`` synchronously from ``data_received``, a read's run of data
frames at a time: no queue and no task per message on the hot path. Two frame readers sit behind
the same class (``reader``, the ``connector.reader`` setting): ``"fast"`` (the default) cuts whole
data frames out of each read itself (:mod:`.fastframes`); ``"websockets"`` parses every frame with
websockets' protocol. The connection is opened stage by stage by :func:`.connect.open_connection`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from .errors import ConnectionLost, StreamError
from .fastframes import FastFrames
from .keepalive import ping_when_quiet
from .stages import STAGES

__all__ = ["READERS", "STAGES", "WsConnection"]

logger = logging.getLogger(__name__)
_protocol_logger = logging.getLogger("orderflow_plugin.wsconnection.protocol")
_protocol_logger.setLevel(logging.WARNING)  # websockets logs every handshake at INFO

READERS = ("websockets", "fast")


class WsConnection(FastFrames, asyncio.Protocol):
    """A client connection driven by websockets' sans-I/O protocol.

    ``done`` resolves (never raises) with the :class:`StreamError` that ended the connection.
    ``stage`` is where it is now; ``timings`` how long each finished stage took.
    ``on_frames(connection, frames, now)`` takes data frames of one read (received at ``now``) and returns how
    many it took, at least one: it stops early only when the connection is to pause before the next one
    (:meth:`~orderflow_plugin.driver.Driver.receive_read`).
    """

    def __init__(self, url: str, on_frames: Callable[[WsConnection, list[bytes], float], int], *, max_size: int,
                 reader: str = "websockets") -> None:
        if reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
        self.url = url
        self.uri = parse_uri(url)
        self.endpoint = f"{self.uri.host}:{self.uri.port}"
        self.on_frames = on_frames
        self.max_size = max_size
        self.protocol = ClientProtocol(self.uri, max_size=max_size, logger=_protocol_logger)
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[StreamError] = loop.create_future()
        self._handshake: asyncio.Future[None] = loop.create_future()
        self._subscribed: asyncio.Future[None] = loop.create_future()
        self._first_trade: asyncio.Future[None] = loop.create_future()
        self.stage = "resolve"
        self._loop = loop
        self.stage_started = loop.time()
        self.timings: dict[str, float] = {}
        self.last_received = 0.0  # monotonic time of the last read: any byte proves the path alive
        self._now = 0.0  # when the frames being handed to on_frames were read (or released by resume)
        self.opened_at = 0.0
        self.got_trade = False
        self.task: asyncio.Task[Any] | None = None  # the task opening this connection
        self.warned = ""  # the stage already reported as slow
        self.stack = ""  # where that task waited when the stage was reported
        self._tasks: set[asyncio.Task[Any]] = set()
        self.paused = False  # reading paused by us (a hole is being filled): not a stall
        self._pending: list[Any] = []  # events of the read that was being handled when we paused
        self.fast = False  # the fast reader is cutting data frames (from the end of the 101 response on)
        self._head: bytes | None = b"" if reader == "fast" else None  # the HTTP response, until it is whole
        self._buffer = b""  # fast reader: the start of a frame not yet whole, or what a pause held back

    # Stages

    def enter(self, stage: str) -> None:
        """Finish the current stage (recording its time) and start ``stage``."""
        now = self._loop.time()
        if self.stage in STAGES and self.stage not in self.timings:
            self.timings[self.stage] = now - self.stage_started
        logger.debug("%s: %s done in %.1f ms, entering %s", self.endpoint, self.stage,
                     (now - self.stage_started) * 1000, stage)
        self.stage = stage
        self.stage_started = now

    def subscribed(self, reply_id: int | None, error: Any) -> None:
        """The server answered our SUBSCRIBE."""
        if self._subscribed.done():
            return
        if error is not None:
            self._subscribed.set_exception(StreamError(
                f"{self.endpoint} refused the subscription: {error}", url=self.url, stage="subscribed"))
        elif reply_id == 1:
            self._subscribed.set_result(None)

    def first_trade(self) -> None:
        """The first trade arrived."""
        self.got_trade = True
        if not self._first_trade.done():
            self._first_trade.set_result(None)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports implement the interface without subclassing it.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_received = self._now = self._loop.time()
        try:
            self._receive(data)
        except Exception as exc:  # a bug below must end this connection with a name, never the loop's handler
            logger.error("handling data from %s failed", self.endpoint, exc_info=exc)
            error = StreamError(f"handling data from {self.endpoint} failed: {type(exc).__name__}: {exc}",
                                url=self.url, stage=self.stage)
            error.__cause__ = exc
            self.fail(error)

    def _receive(self, data: bytes) -> None:
        if self.fast:
            if self.paused:  # a transport may still deliver a read it had taken
                self._buffer += data
            else:
                self._scan(data)
            return
        if self._head is not None:
            self._read_head(data)
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """websockets parses ``data``; we act on its events and send what it has to send."""
        protocol = self.protocol
        protocol.receive_data(data)
        if self.paused:  # a read the transport had taken before the pause: its frames wait behind the held ones
            self._pending.extend(protocol.events_received())
        else:
            self._handle(iter(protocol.events_received()))
        self._flush()
        if protocol.handshake_exc is not None and not self._handshake.done():
            self._handshake.set_result(None)  # a response websockets could not parse: fail now, not at the deadline


    def _handle(self, events: Iterator[Any]) -> None:
        run: list[Frame] = []  # data frames not yet handed over
        for event in events:
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    run.append(event)
            else:
                if run and not self._hand_run(run, itertools.chain((event,), events)):
                    return
                run = []
                if isinstance(event, Response) and not self._handshake.done():
                    self._handshake.set_result(None)
        if run:
            self._hand_run(run, events)

    def _hand_run(self, run: list[Frame], events: Iterator[Any]) -> bool:
        """websockets reader: hand ``run`` over; False when paused first: what was not taken waits for resume()."""
        while True:
            taken = self.on_frames(self, [frame.data for frame in run], self._now)
            if self.paused:
                self._pending = [*run[taken:], *events]
                return False
            if taken >= len(run):
                return True
            run = run[taken:]  # asked to pause but not paused (the transport is closing): the rest goes on

    def eof_received(self) -> bool:
        if self._head:  # an HTTP response cut short: websockets reports it
            head, self._head = self._head, None
            self._feed(head)
        self.protocol.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        for waiter in (self._handshake, self._subscribed, self._first_trade):
            if not waiter.done():
                waiter.set_exception(self._lost_error(exc))
                waiter.exception()  # mark retrieved: the stage await reports it, or nobody needs it
        for task in self._tasks:
            task.cancel()
        self._finish(self._lost_error(exc))

    def _lost_error(self, exc: Exception | None) -> StreamError:
        protocol = self.protocol
        if isinstance(protocol.parser_exc, PayloadTooBig):
            return ConnectionLost(
                f"{self.endpoint} sent a frame over max_size ({self.max_size} bytes): {protocol.parser_exc}; "
                "closed it to reconnect", url=self.url, code=1009, reason="message too big")
        close = protocol.close_rcvd
        if close is not None:
            return ConnectionLost(f"{self.endpoint} closed the connection: code {close.code} {close.reason!r}".rstrip(),
                                  url=self.url, code=close.code, reason=close.reason)
        detail = f": {exc}" if exc else ""
        return ConnectionLost(f"connection to {self.endpoint} dropped without a close frame{detail}",
                              url=self.url, code=None, reason=str(exc or "connection dropped"))

    def _finish(self, error: StreamError) -> None:
        if not self.done.done():
            self.done.set_result(error)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()

    # Flow control

    def pause(self) -> None:
        """Stop handling frames: TCP flow control holds the server back until :meth:`resume`."""
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self.paused = True

    def resume(self) -> None:
        """Handle the frames held back by :meth:`pause` (which may pause again), then read again."""
        if not self.paused:
            return
        self.paused = False
        self._now = self._loop.time()  # the held frames are handed over now
        if self.fast:
            self._scan(b"")
        else:
            pending, self._pending = self._pending, []
            self._handle(iter(pending))
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # Sending and ending

    def send_json(self, message: dict[str, Any]) -> None:
        """Send one control message."""
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def send_ping(self, data: bytes) -> None:
        """Send a ping now (the keepalive's)."""
        self.protocol.send_ping(data)
        self._flush()

    async def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        """Close cleanly, or abort if the server does not finish the handshake within ``timeout``."""
        if self.transport is None or self.done.done():
            self.abort()
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.done)
        except TimeoutError:
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection now."""
        if self.transport is not None:
            self.transport.abort()

    def fail(self, error: StreamError) -> None:
        """End the connection because of ``error`` (a stall, a ping timeout)."""
        self._finish(error)
        self.abort()

    def spawn(self, coroutine: Any) -> None:
        """Run a helper task that dies with the connection (named ``orderflow <endpoint> <what>``)."""
        name = f"orderflow {self.endpoint} {getattr(coroutine, '__qualname__', 'helper')}"
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._helper_done)

    def _helper_done(self, task: asyncio.Task[Any]) -> None:
        """A helper (the keepalive) that fails takes the connection with it, by name: never a watchdog quietly gone."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("%s: helper task failed", self.endpoint, exc_info=exc)
            error = StreamError(f"{self.endpoint}: {task.get_coro().__qualname__} failed: {exc!r}",  # type: ignore[union-attr]
                                url=self.url, stage="streaming")
            error.__cause__ = exc
            self.fail(error)

    async def keepalive(self, idle: float, timeout: float) -> None:
        """Ping once nothing has arrived for ``idle`` s; fail if still nothing arrives within ``timeout`` s.

        Run it with :meth:`spawn`; the loop itself is :func:`.keepalive.ping_when_quiet`.
        """
        await ping_when_quiet(self, idle, timeout)

