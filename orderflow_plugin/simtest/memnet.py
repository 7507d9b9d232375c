"""The in-memory network under :class:`~.vloop.VirtualLoop`: DNS, TCP and TLS, and their faults, from one seed.

Every connection is two :class:`End` transports joined by a :class:`Link`. Bytes arrive after
the link's latency, in order; reading can be paused (TCP flow control holds them). The world
makes things go wrong: a name that does not resolve or never answers, a refused or stalled TCP
connect, a TLS handshake that stalls or fails, a reset, and a dead path (nothing arrives any
more either way, and neither end hears of it). TLS is simulated: its stage succeeds, stalls or
fails as drawn; the bytes stay plain (the crypto is the ssl module's, not ours).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LIFE", "End", "Link", "NetFaults", "Network"]

# Which simulated process a callback belongs to (0: the world). A process's tasks and timers carry it in their
# context; once that process is killed, none of them runs again (kill -9: no finally, no pending write, no timer).
LIFE: contextvars.ContextVar[int] = contextvars.ContextVar("simulated_process", default=0)


@dataclass(frozen=True)
class NetFaults:
    """Per-attempt fault rates of the network, until ``stop`` (virtual seconds after the start)."""

    stop: float = 0.0
    dns_fail: float = 0.0
    dns_stall: float = 0.0
    tcp_refuse: float = 0.0
    tcp_stall: float = 0.0
    tls_fail: float = 0.0
    tls_stall: float = 0.0
    dead_path: float = 0.0  # per WebSocket connection: its path dies some seconds after it opened
    reset: float = 0.0  # per WebSocket connection: reset some seconds after it opened


@dataclass(eq=False)
class Link:
    """One TCP connection."""

    number: int
    latency: float
    websocket: bool  # the client is the stream's WebSocket (not REST)
    dead_at: float | None = None  # the path died: nothing arrives any more
    client_closed_at: float | None = None  # when the client end closed or aborted
    client: End | None = None
    server: End | None = None


class End(asyncio.Transport):
    """One end of a :class:`Link`: an asyncio transport whose peer is the other end."""

    def __init__(self, network: Network, link: Link, protocol: asyncio.BaseProtocol, port: int, client: bool) -> None:
        super().__init__()
        self.network = network
        self.link = link
        self._protocol: Any = protocol
        self.peer: End | None = None
        self._port = port
        self._client = client
        self._closing = False
        self._lost = False
        self._paused = False
        self._held: list[Any] = []  # bytes (or an EOF or a loss) that arrived while reading was paused
        self._next_at = 0.0  # arrivals at the peer stay in order
        # What arrives runs in the receiving process's context (the server's is the world's): a killed process
        # reads nothing more, and what it does on a read (tasks, timers) is its own
        self.context = contextvars.copy_context() if client else network.context.copy()
        self.life = self.context.get(LIFE, 0)

    # What asyncio code calls

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("peername", "sockname"):
            return ("127.0.0.1", self._port)
        if name == "socket":
            return _SockInfo(self._port)
        return default

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    def is_reading(self) -> bool:
        return not self._paused

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._held:
                self.network.loop.call_soon(self._release, context=self.context)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data and not self._closing and not self._lost:
            self._send(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._closing and not self._lost:
            self._send(_EOF)

    def close(self) -> None:
        """FIN after what was written; the peer reads it, then its side closes too."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._closed_by_us()
        self._send(_EOF)
        self.network.loop.call_soon(self._gone, None, context=self.context)

    def abort(self) -> None:
        """RST: the peer hears of it after the latency (if the path still carries anything)."""
        if self._lost:
            return
        self._closing = True
        self._closed_by_us()
        self._send(_RESET)
        self.network.loop.call_soon(self._gone, None, context=self.context)

    # The wire

    def _closed_by_us(self) -> None:
        if self._client and self.link.client_closed_at is None:
            self.link.client_closed_at = self.network.loop.time()

    def _send(self, data: Any) -> None:
        if self.link.dead_at is not None or self.peer is None:
            return
        loop = self.network.loop
        at = max(loop.time() + self.link.latency, self._next_at)
        self._next_at = at
        loop.call_at(at, self.peer._arrive, data, context=self.peer.context)  # the receiver's, not the sender's

    def _arrive(self, data: Any) -> None:
        if self._lost:
            return
        if self._paused or self._held:
            self._held.append(data)
            return
        self._take(data)

    def _release(self) -> None:
        while self._held and not self._paused and not self._lost:
            self._take(self._held.pop(0))

    def _take(self, data: Any) -> None:
        if data is _EOF:
            if self._closing:
                return
            keep_open = self._protocol.eof_received()
            if not keep_open:
                self._closing = True
                self._closed_by_us()
                self._gone(None)
        elif data is _RESET:
            self._closing = True
            self._gone(ConnectionResetError(104, "Connection reset by peer"))
        else:
            self._protocol.data_received(data)

    def _gone(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._held.clear()
        self._protocol.connection_lost(exc)


class _SockInfo:
    """What callers ask of a transport's socket (anyio asks its peer; the simulator sets options)."""

    family = socket.AF_INET
    type = socket.SOCK_STREAM

    def __init__(self, port: int) -> None:
        self.port = port

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 40000)

    def setsockopt(self, *args: Any) -> None:
        pass

    def getsockopt(self, *args: Any) -> int:
        return 0

    def fileno(self) -> int:
        return -1


_EOF = object()
_RESET = object()


@dataclass
class _Server:
    """What ``create_server`` returns: enough of ``asyncio.Server`` for the simulator."""

    network: Network
    port: int
    sockets: list[Any] = field(default_factory=list)

    def close(self) -> None:
        self.network.listeners.pop(self.port, None)

    async def wait_closed(self) -> None:
        return None


@dataclass
class _Sock:
    port: int

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


class Network:
    """DNS, TCP and TLS in memory, every fault drawn from ``rng`` while ``loop.time() < start + faults.stop``."""

    def __init__(self, rng: random.Random, faults: NetFaults, latency: tuple[float, float]) -> None:
        self.rng = rng
        self.faults = faults
        self.latency = latency
        self.loop: Any = None  # the VirtualLoop sets itself
        self.listeners: dict[int, Callable[[], asyncio.BaseProtocol]] = {}
        self.links: list[Link] = []
        self.start = 0.0
        self.on_step: Callable[[], None] | None = None
        self.on_link: Callable[[Link], None] | None = None  # a WebSocket link opened (the world may plan its end)
        self.events: list[tuple[float, str]] = []  # faults the network caused, for the trace
        # The world's context (no process): a server's protocol is not the connecting process's, and timers the
        # world sets on a process's link outlive that process
        self.context = contextvars.Context()

    def after_step(self) -> None:
        if self.on_step is not None:
            self.on_step()

    def _faulty(self, rate: float) -> bool:
        return self.loop.time() < self.start + self.faults.stop and rate > 0 and self.rng.random() < rate

    def _note(self, what: str) -> None:
        self.events.append((self.loop.time(), what))

    async def _forever(self) -> None:
        await self.loop.create_future()  # ends only when the caller's deadline cancels it

    def listen(self, factory: Callable[[], asyncio.BaseProtocol], host: Any, port: Any) -> _Server:
        port = int(port or 9443)
        self.listeners[port] = factory
        return _Server(self, port, [_Sock(port)])

    async def resolve(self, host: Any, port: Any) -> list[Any]:
        f = self.faults
        if self._faulty(f.dns_fail):
            self._note(f"dns fail {host}")
            await asyncio.sleep(self.rng.uniform(*self.latency))
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if self._faulty(f.dns_stall):
            self._note(f"dns stall {host}")
            await self._forever()
        await asyncio.sleep(self.rng.uniform(*self.latency))
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", int(port)))]

    async def connect(self, factory: Callable[[], asyncio.BaseProtocol], host: Any,
                      port: Any) -> tuple[End, asyncio.BaseProtocol]:
        protocol = factory()
        websocket = type(protocol).__name__ == "WsConnection"
        f = self.faults
        if websocket and self._faulty(f.tcp_refuse):
            self._note("tcp refused")
            await asyncio.sleep(self.rng.uniform(*self.latency))
            raise ConnectionRefusedError(111, "Connection refused")
        if websocket and self._faulty(f.tcp_stall):
            self._note("tcp stall")
            await self._forever()
        latency = self.rng.uniform(*self.latency)
        await asyncio.sleep(2 * latency)
        listener = self.listeners.get(int(port))
        if listener is None:
            raise ConnectionRefusedError(111, "Connection refused")
        link = Link(len(self.links) + 1, latency, websocket)
        self.links.append(link)
        client = End(self, link, protocol, int(port), client=True)
        world = self.context.copy()
        server = End(self, link, world.run(listener), int(port), client=False)
        client.peer, server.peer = server, client
        link.client, link.server = client, server
        server.context.run(server._protocol.connection_made, server)
        protocol.connection_made(client)
        if websocket and self.on_link is not None:
            self.on_link(link)
        return client, protocol

    async def tls(self, transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol) -> asyncio.Transport:
        f = self.faults
        if self._faulty(f.tls_fail):
            self._note("tls fail")
            await asyncio.sleep(self.rng.uniform(*self.latency))
            raise ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure")
        if self._faulty(f.tls_stall):
            self._note("tls stall")
            await self._forever()
        assert isinstance(transport, End)
        await asyncio.sleep(4 * transport.link.latency)
        transport.set_protocol(protocol)
        return transport

    def kill_process(self, life: int) -> None:
        """Process ``life`` was killed: the kernel closes its sockets (a reset, unless it had closed them already);
        nothing more reaches the process, and bytes it wrote before still arrive."""
        now = self.loop.time()
        for link in self.links:
            client = link.client
            if client is None or client.life != life or client._lost:
                continue
            if not client._closing:
                client._send(_RESET)
            client._closing = client._lost = True
            client._held.clear()
            if link.client_closed_at is None:
                link.client_closed_at = now

    def kill(self, link: Link, how: str) -> None:
        """End ``link``'s path: ``dead`` (nothing arrives any more, nobody is told) or ``reset`` (both ends told)."""
        if link.dead_at is not None or link.client is None or link.client.is_closing():
            return
        self._note(f"link {link.number} {how}")
        if how == "dead":
            link.dead_at = self.loop.time()
        else:
            assert link.server is not None
            link.server.abort()
