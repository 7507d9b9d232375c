"""A fault-injecting TCP relay for tests below the WebSocket layer, in the spirit of Toxiproxy.

:class:`FaultProxy` listens on loopback and relays bytes to an upstream (the simulator) without
reading them, so TLS passes end to end: a ``wss://localhost:<proxy port>`` client verifies the
upstream's certificate. Faults act on bytes and sockets of current and new connections alike:
``latency``, ``bandwidth``, ``trickle``, ``hold`` (half-open), ``reset`` (TCP RST) and ``refuse``
(the port stops listening: a connect gets ECONNREFUSED). ``schedule`` fires them at given times;
``record`` says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .link import Link, LinkRecord

__all__ = ["Direction", "FaultProxy", "LinkRecord", "ProxyRecord"]

logger = logging.getLogger(__name__)

Direction = Literal["both", "down", "up"]  # down: upstream to client; up: client to upstream
_CHUNK = 65536
_READ_AHEAD = 64  # chunks queued per direction; past that the sender feels TCP backpressure
_ACTIONS = ("latency", "bandwidth", "trickle", "hold", "release", "reset", "refuse", "clear")


@dataclass(frozen=True)
class _Shaping:
    latency: float = 0.0
    rate: float | None = None  # bytes per second
    trickle: float | None = None  # seconds between single bytes


@dataclass
class ProxyRecord:
    """Everything the proxy did, for tests to assert on."""

    links: list[LinkRecord] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)  # "hold", "release", "reset 2", "refuse 1.0", "listen", ...


class FaultProxy:
    """Relay ``host:port`` (port 0 picks a free one) to ``upstream_host:upstream_port``, with faults."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.host, self.port = host, port
        self.record = ProxyRecord()
        self._shaping = {"up": _Shaping(), "down": _Shaping()}
        self._hold_new = False
        self._listener: socket.socket | None = None
        self._listening = False
        self._links: set[Link] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._schedules: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._changed: asyncio.Future[None] | None = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen; connections are relayed from now on."""
        self._changed = asyncio.get_running_loop().create_future()
        self._listen()
        logger.info("fault proxy on %s:%d to %s:%d", self.host, self.port, self.upstream_host, self.upstream_port)

    async def stop(self) -> None:
        """Stop listening, drop every connection and end every task and timer."""
        self._stop_listening()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for timer in self._timers.values():
            timer.cancel()
        for link in list(self._links):
            link.cut("proxy stopped", rst=False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0)  # aborted transports close their sockets on the next loop turn

    def url(self, scheme: str = "ws", host: str | None = None) -> str:
        """``scheme://host:port`` of the proxy; ``host="localhost"`` matches a TLS upstream's certificate."""
        return f"{scheme}://{host or self.host}:{self.port}"

    async def wait_for(self, predicate: Callable[[ProxyRecord], bool], timeout: float) -> None:
        """Wait until ``predicate(self.record)`` is true; raise TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while not predicate(self.record):
                assert self._changed is not None, "proxy not started"
                await asyncio.shield(self._changed)

    # Faults

    def latency(self, seconds: float, direction: Direction = "both") -> None:
        """Delay every chunk by ``seconds``, order kept."""
        self._shape(direction, f"latency {seconds}", latency=seconds)

    def bandwidth(self, bytes_per_s: float | None, direction: Direction = "both") -> None:
        """Cap each connection's throughput to ``bytes_per_s`` per direction (None: no cap)."""
        self._shape(direction, f"bandwidth {bytes_per_s}", rate=bytes_per_s)

    def trickle(self, interval: float | None = 0.0, direction: Direction = "both") -> None:
        """Write one byte at a time, ``interval`` s apart (0: a loop turn apart; None: stop trickling)."""
        self._shape(direction, f"trickle {interval}", trickle=interval)

    def hold(self, seconds: float | None = None, *, new: bool = True) -> None:
        """Half-open: sockets stay open, nothing passes either way; bytes wait for release, in order.

        ``new=False`` holds only the connections open now (a NAT that forgot them); new ones pass.
        """
        for link in self._links:
            link.flowing.clear()
        self._hold_new = new
        self._later("release", seconds, self.release)
        what = "hold" if seconds is None else f"hold {seconds}"
        self._fault(what if new else f"{what} open")

    def release(self) -> None:
        """End a hold: the held bytes go on, then everything else."""
        self._unhold()
        self._fault("release")

    def reset(self) -> None:
        """Cut every open connection with a TCP RST (SO_LINGER 0) to both client and upstream."""
        links = [link for link in self._links if link.record.closed is None]
        for link in links:
            link.cut("reset by proxy")
        self._fault(f"reset {len(links)}")

    def refuse(self, seconds: float | None = None) -> None:
        """Stop listening, so new connects are refused (open ones go on); listen again after ``seconds``."""
        if self._listening and self._listener is not None:
            self._stop_listening()
            try:  # Linux: the socket leaves LISTEN but keeps its port, and listen() works again
                self._listener.shutdown(socket.SHUT_RD)
            except OSError:
                self._listener.close()
                self._listener = None
        self._later("listen", seconds, lambda: (self._listen(), self._fault("listen")))
        self._fault(f"refuse {seconds}" if seconds is not None else "refuse")

    def clear(self) -> None:
        """Back to a clean pass-through: no shaping, no hold, listening, no schedule (but the calling one)."""
        self._shaping = {"up": _Shaping(), "down": _Shaping()}
        self._unhold()
        if not self._listening:
            self._listen()
        for task in self._schedules - {asyncio.current_task()}:
            task.cancel()
        self._fault("clear")

    def schedule(self, steps: Sequence[tuple[Any, ...]], *, repeat: bool = False) -> None:
        """Run ``(at_seconds, action, *args)`` steps, ``at`` from now; with ``repeat``, again after the last.

        ``action`` names a fault method: ``schedule([(2.0, "reset")], repeat=True)`` resets every 2 s,
        ``schedule([(0.5, "hold", 1.0)])`` holds for 1 s from 0.5 s on. ``clear()`` ends schedules.
        """
        for step in steps:
            if step[1] not in _ACTIONS:
                raise ValueError(f"unknown proxy action {step[1]!r}; one of {', '.join(_ACTIONS)}")
        task = self._spawn(self._run_schedule(list(steps), repeat))
        self._schedules.add(task)
        task.add_done_callback(self._schedules.discard)

    async def _run_schedule(self, steps: list[tuple[Any, ...]], repeat: bool) -> None:
        loop = asyncio.get_running_loop()
        while steps:
            started = loop.time()
            for at, action, *args in steps:
                await asyncio.sleep(max(0.0, started + at - loop.time()))
                getattr(self, action)(*args)
            if not repeat:
                return

    def _unhold(self) -> None:
        for link in self._links:
            link.flowing.set()
        self._hold_new = False
        self._later("release", None, None)

    def _shape(self, direction: Direction, what: str, **change: Any) -> None:
        for side in ("up", "down") if direction == "both" else (direction,):
            self._shaping[side] = replace(self._shaping[side], **change)
        self._fault(f"{what} {direction}")

    def _later(self, name: str, seconds: float | None, action: Callable[[], Any] | None) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        if seconds is not None and action is not None:
            self._timers[name] = asyncio.get_running_loop().call_later(seconds, action)

    def _fault(self, what: str) -> None:
        logger.info("fault proxy %d: %s", self.port, what)
        self.record.faults.append(what)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
            self._changed = asyncio.get_running_loop().create_future()

    # Relaying

    def _listen(self) -> None:
        if self._listener is None:
            self._listener = _listener(self.host, self.port)
            self.port = self._listener.getsockname()[1]
        else:
            self._listener.listen(128)
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)
        self._listening = True
        self._later("listen", None, None)

    def _stop_listening(self) -> None:
        if self._listening and self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._accept()  # connections already in the backlog were made before: relay them
        self._listening = False

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # BlockingIOError: the backlog is empty; ECONNABORTED: the client gave up
                return
            sock.setblocking(False)
            link = Link(LinkRecord(len(self.record.links) + 1), sock, held=self._hold_new)
            self.record.links.append(link.record)
            self._links.add(link)
            task = self._spawn(self._serve(link))
            link.tasks.add(task)
            task.add_done_callback(lambda _, link=link: self._link_done(link))
            self._notify()

    def _link_done(self, link: Link) -> None:
        self._links.discard(link)
        if not link.writers:  # a task cancelled before it started never ran: the socket is still ours
            link.sock.close()

    async def _serve(self, link: Link) -> None:
        try:
            try:
                client_reader, client_writer = await asyncio.open_connection(sock=link.sock)
                link.writers.append(client_writer)
                upstream_reader, upstream_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
                link.writers.append(upstream_writer)
            except OSError as exc:
                link.cut(f"{'upstream unreachable' if link.writers else 'client gone'}: {exc}")
                return
            pumps = []
            for reader, writer, direction in ((client_reader, upstream_writer, "up"),
                                              (upstream_reader, client_writer, "down")):
                queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_READ_AHEAD)
                pumps += [asyncio.create_task(self._read(link, reader, queue, direction)),
                          asyncio.create_task(self._write(link, queue, writer, direction))]
            link.tasks.update(pumps)
            try:
                await asyncio.gather(*pumps)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except BaseException:
            link.cut(link.record.closed or "proxy error")
            raise
        if link.record.closed is None:  # end of file both ways: close, as both ends did
            link.record.closed = "closed"
            for writer in link.writers:
                writer.close()
            for writer in link.writers:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        self._notify()

    async def _read(self, link: Link, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]],
                    direction: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await link.flowing.wait()  # held: read nothing, so the sender's buffers fill as on a dead path
            try:
                data = await reader.read(_CHUNK)
            except OSError as exc:  # an RST from one end goes on to the other
                link.cut(f"{'client' if direction == 'up' else 'upstream'} reset: {exc}")
                return
            await queue.put((loop.time() + self._shaping[direction].latency, data))
            if not data:
                return

    async def _write(self, link: Link, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter,
                     direction: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await link.flowing.wait()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                view, position = memoryview(data), 0
                while position < len(data):
                    await link.flowing.wait()
                    shaping = self._shaping[direction]  # read per piece, so a change applies at once
                    size = max(1, int(shaping.rate / 50)) if shaping.rate else _CHUNK  # 20 ms worth when capped
                    piece = bytes(view[position:position + (1 if shaping.trickle is not None else size)])
                    position += len(piece)
                    if shaping.rate:  # a token bucket one piece deep
                        free = link.next_free[direction]
                        await asyncio.sleep(max(0.0, free - loop.time()))
                        link.next_free[direction] = max(loop.time(), free) + len(piece) / shaping.rate
                    writer.write(piece)
                    await writer.drain()
                    link.record.sent[direction] += len(piece)
                    link.record.writes[direction] += 1
                    if shaping.trickle is not None:
                        await asyncio.sleep(shaping.trickle)
                self._notify()
        except OSError as exc:  # the receiving end is gone
            link.cut(f"{'upstream' if direction == 'up' else 'client'} gone: {exc}")

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a bug in the proxy: never silent
            logger.error("fault proxy task failed", exc_info=task.exception())


def _listener(host: str, port: int) -> socket.socket:
    """A listening socket bound to its port by number: Linux then keeps the port through ``refuse``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not port:
        with socket.socket(family) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    sock = socket.socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
