"""The fault proxy on real loopback sockets: every fault does what it says, and clear() undoes it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator

import pytest
import trustme

from orderflow_plugin.sim import FaultProxy

from .flowhelpers import TIMEOUT_FACTOR

SLACK = 0.01  # loop timers may fire a few ms early by time.monotonic() (uvloop reads libuv's cached clock)


class Echo:
    """A loopback TCP server that echoes every byte back; records what it got and how each connection ended."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.ended: list[str] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        self.writers.append(writer)
        try:
            while data := await reader.read(65536):
                self.received += data
                self.changed.set()
                writer.write(data)
                await writer.drain()
            self.ended.append("eof")
        except OSError as exc:
            self.ended.append(type(exc).__name__)
        finally:
            self.changed.set()
            writer.transport.abort()

    async def until(self, predicate, timeout: float = 5.0) -> None:
        """Wait until ``predicate(self)`` holds."""
        async with asyncio.timeout(timeout * TIMEOUT_FACTOR):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def serve_echo(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Echo]:
    """Run an echo server on a free loopback port; afterwards every connection and handler is ended."""
    echo = Echo()
    server = await asyncio.start_server(echo.handle, "127.0.0.1", 0, ssl=ssl_context)
    echo.port = server.sockets[0].getsockname()[1]
    try:
        yield echo
    finally:
        server.close()
        for writer in echo.writers:
            writer.transport.abort()
        await asyncio.gather(*echo.handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    """A plain echo upstream."""
    async with serve_echo() as server:
        yield server


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[FaultProxy]:
    """A proxy in front of the echo server."""
    async with FaultProxy("127.0.0.1", echo.port) as proxy:
        yield proxy


@pytest.fixture
async def open_client(proxy: FaultProxy):
    """Open TCP clients to the proxy; every one is closed after the test."""
    writers: list[asyncio.StreamWriter] = []

    async def open_() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writers.append(writer)
        return reader, writer

    yield open_
    for writer in writers:
        writer.transport.abort()
    await asyncio.sleep(0)


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes,
                    timeout: float = 5.0) -> bytes:
    """Send ``data`` and read back as many bytes."""
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(timeout):
        return await reader.readexactly(len(data))


async def test_passes_bytes_both_ways_and_records_them(proxy: FaultProxy, open_client, echo: Echo) -> None:
    """Without faults every byte goes through unchanged both ways; the record counts them and the close."""
    reader, writer = await open_client()
    data = os.urandom(300_000)
    assert await roundtrip(reader, writer, data) == data
    link = proxy.record.links[0]
    assert link.number == 1 and link.sent == {"up": 300_000, "down": 300_000}
    writer.write_eof()
    async with asyncio.timeout(5 * TIMEOUT_FACTOR):
        assert await reader.read() == b""
    await proxy.wait_for(lambda r: r.links[0].closed == "closed", 5 * TIMEOUT_FACTOR)
    assert echo.ended == ["eof"]


async def test_latency_delays_every_chunk_and_keeps_order(proxy: FaultProxy, open_client) -> None:
    """With latency L each way a round trip takes at least 2 L, and chunks sent apart arrive in order."""
    reader, writer = await open_client()
    proxy.latency(0.2)
    started = time.monotonic()
    assert await roundtrip(reader, writer, b"ping") == b"ping"
    assert time.monotonic() - started >= 0.4 - SLACK
    for index in range(5):  # five separate chunks queued behind the delay
        writer.write(b"%d" % index)
        await writer.drain()
        await asyncio.sleep(0.01)  # distinct writes, not a wait for an event
    async with asyncio.timeout(5 * TIMEOUT_FACTOR):
        assert await reader.readexactly(5) == b"01234"
    assert proxy.record.faults == ["latency 0.2 both"]


async def test_bandwidth_caps_throughput(proxy: FaultProxy, open_client) -> None:
    """A 100 kB/s cap on the way down makes 100 kB take at least about a second."""
    reader, writer = await open_client()
    proxy.bandwidth(100_000, "down")
    data = os.urandom(100_000)
    started = time.monotonic()
    assert await roundtrip(reader, writer, data, timeout=10) == data
    assert time.monotonic() - started >= 0.9
    proxy.bandwidth(None)
    started = time.monotonic()
    assert await roundtrip(reader, writer, data) == data
    assert time.monotonic() - started < 0.9  # the cap is gone (generous: 1 ms is typical)


async def test_hold_passes_nothing_but_keeps_sockets_open(proxy: FaultProxy, open_client, echo: Echo) -> None:
    """While held nothing passes either way and no socket closes; on release the held bytes go on in order."""
    reader, writer = await open_client()
    assert await roundtrip(reader, writer, b"before") == b"before"
    proxy.hold()
    writer.write(b"up while held")
    echo.writers[0].write(b"down while held;")
    late_reader, late_writer = await open_client()  # a new connection is accepted, and held too
    late_writer.write(b"late")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await reader.read(1)
    assert bytes(echo.received) == b"before"
    assert not reader.at_eof() and not writer.is_closing() and not late_reader.at_eof()
    assert [link.closed for link in proxy.record.links] == [None, None]
    proxy.release()
    async with asyncio.timeout(5 * TIMEOUT_FACTOR):
        assert await reader.readexactly(29) == b"down while held;up while held"
        assert await late_reader.readexactly(4) == b"late"
    assert proxy.record.faults == ["hold", "release"]


async def test_hold_open_only_lets_new_connections_pass(proxy: FaultProxy, open_client) -> None:
    """hold(new=False) freezes the connections open now (a NAT that forgot them); new ones pass."""
    reader, writer = await open_client()
    proxy.hold(new=False)
    writer.write(b"lost in the NAT")
    new_reader, new_writer = await open_client()
    assert await roundtrip(new_reader, new_writer, b"fresh") == b"fresh"
    with pytest.raises(TimeoutError):  # nothing comes back on the frozen one
        async with asyncio.timeout(0.3):
            await reader.read(1)
    proxy.release()
    async with asyncio.timeout(5 * TIMEOUT_FACTOR):
        assert await reader.readexactly(15) == b"lost in the NAT"
    assert proxy.record.faults == ["hold open", "release"]


async def test_hold_with_seconds_releases_itself(proxy: FaultProxy, open_client) -> None:
    """hold(seconds) ends by itself after that long."""
    reader, writer = await open_client()
    started = time.monotonic()
    proxy.hold(0.3)
    assert await roundtrip(reader, writer, b"x") == b"x"
    assert time.monotonic() - started >= 0.3 - SLACK
    assert proxy.record.faults == ["hold 0.3", "release"]


async def test_reset_makes_both_ends_see_econnreset(proxy: FaultProxy, open_client, echo: Echo) -> None:
    """reset() cuts open connections with an RST: the client and the upstream both get ECONNRESET."""
    reader, writer = await open_client()
    assert await roundtrip(reader, writer, b"hello") == b"hello"
    proxy.reset()
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(5 * TIMEOUT_FACTOR):
            await reader.read(1)
    await echo.until(lambda e: e.ended)
    assert echo.ended == ["ConnectionResetError"]
    assert proxy.record.faults == ["reset 1"] and proxy.record.links[0].closed == "reset by proxy"
    reader, writer = await open_client()  # new connections are not affected
    assert await roundtrip(reader, writer, b"again") == b"again"


async def test_upstream_reset_goes_on_to_the_client(proxy: FaultProxy, open_client, echo: Echo) -> None:
    """An RST from the upstream reaches the client as an RST, not as a clean end of file."""
    reader, writer = await open_client()
    assert await roundtrip(reader, writer, b"hello") == b"hello"
    sock = echo.writers[0].get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    echo.writers[0].transport.abort()
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(5 * TIMEOUT_FACTOR):
            await reader.read(1)
    assert proxy.record.links[0].closed.startswith("upstream reset")


async def test_trickle_writes_one_byte_per_chunk(proxy: FaultProxy, open_client) -> None:
    """trickle() delivers the right bytes, each in its own write, so the reader gets them one per read."""
    reader, writer = await open_client()
    proxy.trickle(0.001, "down")
    data = os.urandom(64)
    writer.write(data)
    chunks = []
    async with asyncio.timeout(5 * TIMEOUT_FACTOR):
        while sum(map(len, chunks)) < len(data):
            chunks.append(await reader.read(65536))
    assert b"".join(chunks) == data
    assert {len(chunk) for chunk in chunks} == {1}
    assert proxy.record.links[0].writes == {"up": 1, "down": 64}


async def test_refuse_fails_new_connects_while_open_ones_work(proxy: FaultProxy, open_client) -> None:
    """While refusing, a connect gets ECONNREFUSED and open connections go on; then the same port listens again."""
    reader, writer = await open_client()
    proxy.refuse(0.5)
    with pytest.raises(ConnectionRefusedError):
        await open_client()
    assert await roundtrip(reader, writer, b"still here") == b"still here"
    await proxy.wait_for(lambda r: r.faults[-1] == "listen", 5 * TIMEOUT_FACTOR)
    late_reader, late_writer = await open_client()
    assert await roundtrip(late_reader, late_writer, b"back") == b"back"
    assert proxy.record.faults == ["refuse 0.5", "listen"]


async def test_clear_restores_pass_through(proxy: FaultProxy, open_client) -> None:
    """clear() undoes latency, bandwidth, trickle, hold and refuse at once, for open and new connections."""
    reader, writer = await open_client()
    proxy.latency(2.0)
    proxy.bandwidth(10)
    proxy.trickle(0.1)
    proxy.hold()
    proxy.refuse()
    proxy.clear()
    data = os.urandom(50_000)
    started = time.monotonic()
    assert await roundtrip(reader, writer, data) == data
    new_reader, new_writer = await open_client()
    assert await roundtrip(new_reader, new_writer, data) == data
    assert time.monotonic() - started < 2.0 * TIMEOUT_FACTOR  # with any fault left this takes far longer


async def test_schedule_fires_steps_in_order(proxy: FaultProxy, open_client) -> None:
    """schedule() runs (at, action, *args) steps at their times; clear() ends a repeating one."""
    await open_client()
    started = time.monotonic()
    proxy.schedule([(0.1, "hold", 0.2), (0.4, "reset")])
    await proxy.wait_for(lambda r: "reset 1" in r.faults, 5 * TIMEOUT_FACTOR)
    assert time.monotonic() - started >= 0.4 - SLACK
    assert proxy.record.faults == ["hold 0.2", "release", "reset 1"]
    proxy.schedule([(0.05, "reset")], repeat=True)
    await proxy.wait_for(lambda r: r.faults.count("reset 0") >= 3, 5 * TIMEOUT_FACTOR)
    proxy.clear()
    count = len(proxy.record.faults)
    await asyncio.sleep(0.2)  # nothing may happen in this window
    assert len(proxy.record.faults) == count
    with pytest.raises(ValueError, match="unknown proxy action 'explode'"):
        proxy.schedule([(0.1, "explode")])


async def test_stop_leaves_no_task_or_socket(echo: Echo) -> None:
    """stop() with connections open (one held) ends every task, closes every socket and the port."""
    before = asyncio.all_tasks()
    proxy = FaultProxy("127.0.0.1", echo.port)
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await roundtrip(reader, writer, b"x") == b"x"
    proxy.latency(1.0)
    proxy.hold(5.0)
    proxy.schedule([(10, "reset")])
    writer.write(b"in flight")
    await proxy.stop()
    assert asyncio.all_tasks() - before - echo.handlers == set()
    with contextlib.suppress(ConnectionResetError):  # an RST: the proxy closed with "in flight" unread
        async with asyncio.timeout(5 * TIMEOUT_FACTOR):
            assert await reader.read() == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)


async def test_upstream_down_resets_the_client(unused_tcp_port: int) -> None:
    """When the upstream refuses, the client's connection is reset, not left hanging."""
    async with FaultProxy("127.0.0.1", unused_tcp_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5 * TIMEOUT_FACTOR):
                await reader.read(1)
        writer.close()
        assert proxy.record.links[0].closed.startswith("upstream unreachable")


async def test_tls_passes_end_to_end() -> None:
    """The proxy relays TLS untouched: the client verifies the upstream's certificate for localhost, also trickled."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with serve_echo(server_context) as tls_echo, FaultProxy("127.0.0.1", tls_echo.port) as proxy:
        proxy.trickle(0.0)
        reader, writer = await asyncio.open_connection("localhost", proxy.port, ssl=client_context)
        try:
            assert await roundtrip(reader, writer, b"secret" * 100) == b"secret" * 100
            assert writer.get_extra_info("peercert")["subjectAltName"][0] == ("DNS", "localhost")
            link = proxy.record.links[0]
            assert link.writes == link.sent and link.sent["down"] > 600  # TLS records, one byte per write
        finally:
            writer.transport.abort()
