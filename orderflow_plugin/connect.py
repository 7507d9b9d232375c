"""Opening a connection stage by stage, each stage with its own deadline, and naming the stage that failed.

websockets' ``connect()`` has one ``open_timeout`` for DNS, TCP, TLS and the HTTP upgrade
together, so when it expires nobody knows which of them hung. Here the stages are separate
awaits: ``resolve`` (getaddrinfo), ``tcp_connect``, ``tls`` (``loop.start_tls``),
``http_upgrade`` (websockets' sans-I/O ``ClientProtocol``), ``subscribed`` (the reply to our
SUBSCRIBE) and ``first_message`` (the first trade). A stage that passes its deadline raises
:class:`StageTimeout` naming the stage and the endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.exceptions import InvalidStatus
from websockets.protocol import State

from .errors import ConnectFailed, ConnectionLost, HandshakeRejected, StageTimeout, StreamError
from .options import Timeouts
from .stages import STAGES
from .wsconnection import WsConnection

__all__ = ["connect_first", "open_connection"]

logger = logging.getLogger("orderflow_plugin.wsconnection")


async def open_connection(
    url: str,
    streams: list[str],
    on_frames: Callable[[WsConnection, list[bytes], float], int],
    *,
    deadlines: Timeouts,
    max_size: int = 2**20,
    ssl_context: ssl.SSLContext | None = None,
    on_stage: Callable[[WsConnection], None] | None = None,
    reader: str = "websockets",
    quiet: Callable[[WsConnection], Awaitable[bool]] | None = None,
) -> WsConnection:
    """Open ``url``, subscribe to ``streams`` and wait for the first trade, stage by stage.

    ``deadlines`` is any object with one attribute per stage in :data:`STAGES`, in seconds: a
    :class:`~orderflow_plugin.options.Timeouts`. When no trade came within ``first_message``,
    ``quiet(connection)`` (if given) may say the market is just quiet: the connection is then
    returned open instead of failing.
    """
    loop = asyncio.get_running_loop()
    connection = WsConnection(url, on_frames, max_size=max_size, reader=reader)
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
        connection.opened_at = loop.time()
        stage("subscribed")
        connection.send_json({"method": "SUBSCRIBE", "params": streams, "id": 1})
        await within("subscribed", connection._subscribed,
                     f"subscription to {len(streams)} streams on {endpoint} was not confirmed")
        stage("first_message")
        try:
            await within("first_message", connection._first_trade, f"no trade from {endpoint} after subscribing")
        except StageTimeout:
            if quiet is None or connection.done.done():
                raise
            # a trade that came while REST was asked is a first trade too
            if not await quiet(connection) and not connection.got_trade:
                raise
            logger.info("%s: no trade within first_message, and none on the market since we subscribed: "
                        "streaming on a quiet market", endpoint)
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
    ends = loop.time() + (deadline or 0.0)
    error: OSError = OSError("no address to connect to")
    for index, (family, _, proto, _, address) in enumerate(addresses):
        last = index == len(addresses) - 1
        share = None if deadline is None or last else (ends - loop.time()) / (len(addresses) - index)
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
