"""One WebSocket client connection, opened stage by stage, each stage with its own deadline.

websockets' ``connect()`` has one ``open_timeout`` for DNS, TCP, TLS and the HTTP upgrade
together, so when it expires nobody knows which of them hung. Here the stages are separate
awaits: ``resolve`` (getaddrinfo), ``tcp_connect``, ``tls`` (``loop.start_tls``),
``http_upgrade`` (websockets' sans-I/O ``ClientProtocol``), ``subscribed`` (the reply to our
SUBSCRIBE) and ``first_message`` (the first trade). A stage that passes its deadline raises
:class:`StageTimeout` naming the stage and the endpoint.

Frames are handed to ``on_frame`` synchronously from ``data_received``: no queue and no task
per message on the hot path.

Two frame readers sit behind the same class (``reader``, the ``connector.transport`` setting):

- ``"websockets"`` (the default): websockets' sans-I/O protocol parses every frame.
- ``"fast"``: websockets still does the handshake and every control frame (ping, pong, close),
  but a whole unmasked text or binary frame of at most ``max_size`` bytes (every frame Binance
  sends) is cut out of the read by :meth:`WsConnection._scan`, without websockets' per-frame
  objects. Anything else (a fragment, a reserved bit, a mask, a 64-bit length, an oversized
  frame) hands the rest of the connection back to websockets, which reports it as before.
  websockets only ever sees whole frames, so its parser stays at a frame boundary. One
  difference: websockets closes a text frame that is not UTF-8 with 1007; the fast reader
  passes it to the decoder, which reports it as a bad frame and the connection goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from .errors import ConnectFailed, ConnectionLost, HandshakeRejected, StageTimeout, Stalled, StreamError

__all__ = ["READERS", "STAGES", "Deadlines", "WsConnection", "connect_first", "open_connection"]

logger = logging.getLogger(__name__)
_protocol_logger = logging.getLogger("orderflow_plugin.transport.protocol")
_protocol_logger.setLevel(logging.WARNING)  # websockets logs every handshake at INFO

STAGES = ("resolve", "tcp_connect", "tls", "http_upgrade", "subscribed", "first_message")
READERS = ("websockets", "fast")
_MAX_HEAD = 65536  # bytes of HTTP response the fast reader holds while looking for its end
_WHOLE_DATA = (0x81, 0x82)  # FIN + text, FIN + binary, no reserved bits: one frame, one message


@dataclass(frozen=True)
class Deadlines:
    """Seconds each connect stage may take."""

    resolve: float = 5.0
    tcp_connect: float = 5.0
    tls: float = 5.0
    http_upgrade: float = 10.0
    subscribed: float = 10.0
    first_message: float = 30.0


class WsConnection(asyncio.Protocol):
    """A client connection driven by websockets' sans-I/O protocol.

    ``done`` resolves (never raises) with the :class:`StreamError` that ended the connection.
    ``stage`` is where it is now; ``timings`` how long each finished stage took.
    """

    def __init__(self, url: str, on_frame: Callable[[WsConnection, bytes], None], *, max_size: int,
                 reader: str = "websockets") -> None:
        if reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
        self.url = url
        self.uri = parse_uri(url)
        self.endpoint = f"{self.uri.host}:{self.uri.port}"
        self.on_frame = on_frame
        self.max_size = max_size
        self.protocol = ClientProtocol(self.uri, max_size=max_size, logger=_protocol_logger)
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[StreamError] = loop.create_future()
        self._handshake: asyncio.Future[None] = loop.create_future()
        self._subscribed: asyncio.Future[None] = loop.create_future()
        self._first_trade: asyncio.Future[None] = loop.create_future()
        self.stage = "resolve"
        self.stage_started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.trades = 0  # trades seen
        self.last_received = 0.0  # monotonic time of the last read: any byte proves the path alive
        self.opened_at = 0.0
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
        now = time.monotonic()
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
        if not self._first_trade.done():
            self._first_trade.set_result(None)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports implement the interface without subclassing it.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
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
        self._handle(iter(protocol.events_received()))
        self._flush()
        if protocol.handshake_exc is not None and not self._handshake.done():
            self._handshake.set_result(None)  # a response websockets could not parse: fail now, not at the deadline

    def _read_head(self, data: bytes) -> None:
        """Fast reader: give websockets the HTTP response alone; the frames after it are ours."""
        head = self._head + data  # type: ignore[operator]
        end = head.find(b"\r\n\r\n")
        if end < 0 and len(head) <= _MAX_HEAD:
            self._head = head
            return
        self._head = None
        if end < 0:  # no end of headers in 64 KiB: websockets rejects what it cannot parse
            self._feed(head)
            return
        self._feed(head[:end + 4])
        rest = head[end + 4:]
        if self.protocol.state is State.OPEN:
            self.fast = True
            if rest:
                self._scan(rest)
        elif rest:  # not a 101: the body belongs to the response websockets reports
            self._feed(rest)

    def _scan(self, data: bytes) -> None:
        """Fast reader: hand each whole data frame in the buffer to ``on_frame``; control frames to websockets."""
        buffer = self._buffer + data if self._buffer else data
        size = len(buffer)
        position = 0
        on_frame = self.on_frame
        max_size = self.max_size
        while size - position >= 2:
            first = buffer[position]
            length = buffer[position + 1]  # a set mask bit makes it >= 128: handed over below
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = (buffer[start] << 8) | buffer[start + 1]
                start += 2
            elif length > 126:
                self._hand_over(buffer[position:])
                return
            end = start + length
            if end > size:
                break
            if first in _WHOLE_DATA and length <= max_size:
                on_frame(self, buffer[start:end])
                position = end
                if self.paused:  # the rest of this read waits for resume()
                    break
            elif first & 0x0F >= 0x08 and first & 0x80 and not first & 0x70:  # a control frame: websockets'
                self._feed(buffer[position:end])
                position = end
                if self.protocol.state is not State.OPEN:  # a close: websockets finishes the connection
                    self._hand_over(buffer[position:])
                    return
            else:  # a fragment, a reserved bit, an oversized frame: websockets reads (and judges) the rest
                self._hand_over(buffer[position:])
                return
        self._buffer = buffer[position:] if position < size else b""

    def _hand_over(self, data: bytes) -> None:
        """Stop the fast reader; websockets parses ``data`` (which starts at a frame) and all that follows."""
        self.fast = False
        self._buffer = b""
        if data:
            self._feed(data)

    def _handle(self, events: Iterator[Any]) -> None:
        for event in events:
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    self.on_frame(self, event.data)
                    if self.paused:  # the rest of this read waits for resume()
                        self._pending = list(events)
                        return
            elif isinstance(event, Response) and not self._handshake.done():
                self._handshake.set_result(None)

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
        """Run a helper task that dies with the connection."""
        task = asyncio.get_running_loop().create_task(coroutine)
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

        Any byte counts as an answer (a busy stream is never pinged), and a connection whose reading
        we paused is not judged. A dead path (packets dropped, no FIN, no RST) is found within
        ``idle + timeout`` s instead of a trade-silence timeout.
        """
        step = min(0.25, timeout / 4)
        self.last_received = max(self.last_received, time.monotonic())
        while True:
            wait = self.last_received + idle - time.monotonic()
            if wait > 0 or self.paused:
                await asyncio.sleep(wait if wait > 0 else step)
                continue
            sent = time.monotonic()
            self.protocol.send_ping(str(time.monotonic_ns()).encode())
            self._flush()
            deadline = sent + timeout
            while self.last_received < sent and not self.paused:
                before = time.monotonic()
                left = deadline - before
                if left <= 0:
                    for _ in range(2):  # uvloop runs timers before reading: let bytes that waited be read first
                        await asyncio.sleep(0)
                    if self.last_received >= sent or self.paused:
                        break
                    silent = time.monotonic() - self.last_received
                    self.fail(Stalled(f"{self.endpoint} sent nothing for {silent:.1f} s and did not answer a ping "
                                      f"within {timeout:.1f} s", url=self.url, stage="ping", silent_for=silent))
                    return
                nap = min(step, left)
                await asyncio.sleep(nap)
                late = time.monotonic() - before - nap
                if late > step:  # the loop was blocked (by a host, a hook): that time is not the server's
                    deadline += late


async def open_connection(
    url: str,
    streams: list[str],
    on_frame: Callable[[WsConnection, bytes], None],
    *,
    deadlines: Deadlines,
    max_size: int = 2**20,
    ssl_context: ssl.SSLContext | None = None,
    on_stage: Callable[[WsConnection], None] | None = None,
    reader: str = "websockets",
) -> WsConnection:
    """Open ``url``, subscribe to ``streams`` and wait for the first trade, stage by stage."""
    loop = asyncio.get_running_loop()
    connection = WsConnection(url, on_frame, max_size=max_size, reader=reader)
    uri, endpoint = connection.uri, connection.endpoint

    def stage(name: str) -> None:
        connection.enter(name)
        if on_stage is not None:
            on_stage(connection)

    async def within(name: str, awaitable: Any, message: str) -> Any:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives
        # as the awaited future completes, and stop() would then wait for a task that never ends.
        deadline = getattr(deadlines, name)
        try:
            async with asyncio.timeout(deadline) as timer:
                return await awaitable
        except TimeoutError:
            if not timer.expired():  # the stage raised a TimeoutError of its own (ETIMEDOUT, a library's)
                raise
            raise StageTimeout(f"{message} within {deadline:.1f} s", url=url, stage=name, deadline=deadline) from None

    try:
        stage("resolve")
        infos = await within("resolve", loop.getaddrinfo(uri.host, uri.port, type=socket.SOCK_STREAM),
                             f"resolving {uri.host} got no answer")
        stage("tcp_connect")
        await within("tcp_connect", connect_first(loop, lambda: connection, infos, deadlines.tcp_connect),
                     f"TCP connect to {endpoint} did not complete")
        if uri.secure:
            stage("tls")
            context = ssl_context or ssl.create_default_context()
            assert connection.transport is not None
            connection.transport = await within(
                "tls", loop.start_tls(connection.transport, connection, context, server_hostname=uri.host),
                f"TLS handshake with {endpoint} did not complete",
            )
        stage("http_upgrade")
        connection.protocol.send_request(connection.protocol.connect())
        connection._flush()
        await within("http_upgrade", connection._handshake, f"handshake with {endpoint} got no HTTP response")
        if connection.protocol.state is not State.OPEN:
            raise _rejected(connection)
        connection.opened_at = time.monotonic()
        stage("subscribed")
        connection.send_json({"method": "SUBSCRIBE", "params": streams, "id": 1})
        await within("subscribed", connection._subscribed,
                     f"subscription to {len(streams)} streams on {endpoint} was not confirmed")
        stage("first_message")
        await within("first_message", connection._first_trade, f"no trade from {endpoint} after subscribing")
        stage("streaming")
        return connection
    except StreamError as exc:
        if isinstance(exc, ConnectionLost) and connection.stage in STAGES:
            exc.stage = connection.stage  # the socket dropped while this stage waited
        connection.fail(exc)
        raise
    except Exception as exc:  # DNS, refused, certificate, a library's ValueError: named, kept as the cause
        error = _stage_error(exc, connection)
        connection.fail(error)
        raise error from exc
    except BaseException as exc:  # cancelled (stop() during a stage): never leave a socket behind
        connection.fail(StreamError(f"opening {endpoint} interrupted in stage {connection.stage}: {exc!r}",
                                    url=url, stage=connection.stage))
        raise


async def connect_first(loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], asyncio.BaseProtocol],
                        infos: list[Any], deadline: float | None = None) -> asyncio.BaseTransport:
    """TCP to each resolved address in turn (localhost may be ::1 and 127.0.0.1); the last error if none.

    With a ``deadline``, each address but the last gets an equal share of what is left of it, so
    one that silently drops packets does not use it all up before the next is tried.
    """
    addresses = list(dict.fromkeys(infos))
    ends = time.monotonic() + (deadline or 0.0)
    error: OSError = OSError("no address to connect to")
    for index, (family, _, proto, _, address) in enumerate(addresses):
        last = index == len(addresses) - 1
        share = None if deadline is None or last else (ends - time.monotonic()) / (len(addresses) - index)
        try:
            async with asyncio.timeout(share):
                transport, _ = await loop.create_connection(protocol_factory, address[0], address[1], family=family,
                                                            proto=proto)
            return transport
        except OSError as exc:  # TimeoutError (this address's share) included
            error = exc
    raise error


_STAGE_WORDS = {
    "resolve": "resolving {host}",
    "tcp_connect": "TCP connect to {endpoint}",
    "tls": "TLS handshake with {endpoint}",
    "http_upgrade": "handshake with {endpoint}",
    "subscribed": "subscribing on {endpoint}",
    "first_message": "waiting for the first trade from {endpoint}",
}


def _stage_error(exc: Exception, connection: WsConnection) -> ConnectFailed:
    """One line naming the stage, the endpoint and what went wrong, for any exception a stage raised."""
    stage = connection.stage
    what = _STAGE_WORDS.get(stage, "{endpoint}").format(host=connection.uri.host, endpoint=connection.endpoint)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
        why = f"certificate verification failed: {detail}"
    elif isinstance(exc, ssl.SSLError):
        why = f"TLS error: {getattr(exc, 'reason', None) or exc}"
    elif isinstance(exc, socket.gaierror):
        why = exc.strerror or str(exc)
    elif isinstance(exc, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(exc, OSError) and exc.strerror:
        why = exc.strerror
    else:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ConnectFailed(f"{what} failed: {why}", url=connection.url, stage=stage)


def _rejected(connection: WsConnection) -> StreamError:
    exc = connection.protocol.handshake_exc
    url, endpoint = connection.url, connection.endpoint
    if isinstance(exc, InvalidStatus):
        response = exc.response
        retry = response.headers.get("Retry-After")
        retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
        body = bytes(response.body[:200]).decode("utf-8", "replace")
        wait = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
        return HandshakeRejected(f"handshake with {endpoint} answered HTTP {response.status_code}{wait}: {body}",
                                 url=url, status=response.status_code, retry_after=retry_after)
    return StreamError(f"handshake with {endpoint} failed: {exc}", url=url, stage="http_upgrade")
