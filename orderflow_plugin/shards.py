"""The asyncio side of connection supervision: one task per shard carrying out its state machine.

:class:`~orderflow_plugin.supervisor.Supervisor` decides (connect, back off, give up, rotate);
this opens the connections it asks for, stage by stage (:mod:`.connect`), tells it how each
attempt and each connection ended, wakes it at its deadlines, and reports a connect stage that
runs long. A bug in this code ends no shard: it is reported and the shard starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
import traceback
from collections.abc import Callable, Collection, Coroutine, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .actions import Connect, Retire
from .connect import open_connection
from .diagnostics import task_stack
from .driver import Driver
from .errors import Stalled, StreamError
from .loopclock import loop_time
from .options import Limits, Reconnect, Reporting, Timeouts
from .stages import STAGES
from .supervisor import OpenLimiter, Supervisor
from .symbols import stream_name
from .wsconnection import WsConnection

__all__ = ["QuietJudge", "Shard", "ShardSupervision", "chunks"]

logger = logging.getLogger("orderflow_plugin.stream")

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


@dataclass
class Shard:
    """Symbols served by one connection at a time, and the state machine that supervises it."""

    number: int
    symbols: tuple[str, ...]
    machine: Supervisor
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the machine has news: tick it
    opens: set[asyncio.Task[Any]] = field(default_factory=set)  # its Connect under way
    task: asyncio.Task[Any] | None = None
    opening: WsConnection | None = None  # the connection being opened, for stuck-stage reports
    quiet_before: dict[str, int | None] | None = None  # REST's newest ids half way through first_message
    live: set[WsConnection] = field(default_factory=set)  # its sockets not yet ended, even half-open
    crash: Exception | None = None  # a bug in the machine hit outside the shard's task, raised in it

    @property
    def streams(self) -> list[str]:
        """The stream names it subscribes to."""
        return [stream_name(s) for s in self.symbols]


def chunks(symbols: tuple[str, ...], size: int) -> list[tuple[str, ...]]:
    """``symbols`` cut into shards of at most ``size``."""
    return [symbols[k : k + size] for k in range(0, len(symbols), size)]


class QuietJudge(Protocol):
    """The first_message stage's judgement of a connection that has sent no trade yet (:mod:`.silence`)."""

    async def baseline(self, shard: Shard, connection: WsConnection) -> None:
        """Half way through the stage: note what REST shows now."""

    async def quiet_market(self, shard: Shard, connection: WsConnection) -> bool:
        """At the stage's deadline: True for a quiet market (the connection stays)."""


class ShardSupervision:
    """The stream's shard tasks: each opens the connections its Supervisor asks for, and tells it how they went.

    Its dependencies are passed in: the options, the driver that connections feed (and its pipeline), ``emit`` (hooks),
    ``spawn`` (a task the stream keeps and stops), ``running`` (whether the stream still runs) and
    ``quiet`` (the first_message judgement). ``live`` holds every socket not yet ended, even half-open.
    """

    def __init__(self, symbols: tuple[str, ...], streams_per_connection: int, *, ws_url: str, reader: str,
                 ssl_context: ssl.SSLContext | None, timeouts: Timeouts, reconnect: Reconnect, limits: Limits,
                 reporting: Reporting, driver: Driver, counters: dict[str, int], emit: Callable[..., None],
                 spawn: Spawn, running: Callable[[], bool], quiet: QuietJudge, rest: bool) -> None:
        self.ws_url = ws_url
        self.reader = reader
        self.ssl_context = ssl_context
        self.timeouts, self.reconnect, self.limits, self.reporting = timeouts, reconnect, limits, reporting
        self.driver = driver  # every frame and ending goes into the pipeline through it
        self.pipeline = driver.pipeline
        self.counters = counters
        self._emit = emit
        self._spawn = spawn
        self._running = running
        self._quiet = quiet
        self._rest = rest  # REST answers: a connection waiting for its first trade is judged over it
        self._limiter = OpenLimiter(reconnect.connections_per_5min)
        self.live: set[WsConnection] = set()
        self.shards = [Shard(i + 1, group, self._machine(i + 1, group))
                       for i, group in enumerate(chunks(symbols, streams_per_connection))]

    def __iter__(self) -> Iterator[Shard]:
        return iter(self.shards)

    def __len__(self) -> int:
        return len(self.shards)

    def start(self) -> None:
        """Start one task per shard (on the running loop)."""
        for shard in self.shards:
            shard.task = self._spawn(self._supervise(shard), f"orderflow shard {shard.number}")
        if self.shards and self.reporting.stage_warning > 0:
            self._spawn(self._watch_stages(), "orderflow stage monitor")

    def stop(self) -> None:
        """Stop every shard's machine (its tasks end with the stream's)."""
        for shard in self.shards:
            shard.machine.stop()

    def all_failed(self) -> bool:
        """Every connection gave up (max_attempts): nothing streams or retries."""
        return bool(self.shards) and all(shard.machine.state == "failed" for shard in self.shards)

    def health(self, now: float) -> list[dict[str, Any]]:
        """Each connection's entry of ``health()``."""
        return [self._connection_health(shard, now) for shard in self.shards]

    def rotate(self, connection: Hashable) -> None:
        """Replace ``connection`` (the exchange announced its end): its shard's machine opens the next one."""
        for shard in self.shards:
            if shard.machine.connection is connection:
                self.tell(shard, lambda shard=shard: shard.machine.rotate(connection, loop_time()))

    def close_unlisted(self, unlisted: Collection[str]) -> None:
        """End for good each shard serving only symbols not listed: its machine, task, attempts and connections."""
        for shard in self.shards:
            if set(shard.symbols) <= set(unlisted):
                error = StreamError(f"{', '.join(shard.symbols)}: not listed on Binance; connection closed",
                                    url=self.ws_url, stage="symbols")
                shard.machine.stop()
                shard.machine.last_error = error
                for task in [*shard.opens, *([shard.task] if shard.task is not None else [])]:
                    task.cancel()
                for connection in list(shard.live):
                    connection.fail(error)

    async def _supervise(self, shard: Shard) -> None:
        """Run the shard until stop(): whatever else ends it is reported with its traceback, and it starts again."""
        restarts = 0
        while True:
            try:
                await self._drive(shard)
                return  # max_attempts spent: GaveUp was reported and the shard stays failed
            except Exception as exc:  # a bug: never a task that looks alive and does nothing
                restarts += 1
                error = StreamError(f"connection supervisor {shard.number} for {', '.join(shard.symbols)} failed "
                                    f"({type(exc).__name__}: {exc}); restarting it", url=self.ws_url, stage="supervise")
                error.__cause__ = exc
                error.stack = "".join(traceback.format_exception(exc)).rstrip()
                logger.error("%s", error, exc_info=exc)
                self._emit("on_error", error=error, where=f"task:orderflow shard {shard.number}")
                for connection in list(shard.live):
                    connection.fail(error)
                for task in shard.opens:
                    task.cancel()
                self.pipeline.feed_lost(shard.symbols)
                connects = shard.machine.connects
                shard.machine = self._machine(shard.number, shard.symbols)
                shard.machine.connects = connects  # the next open is a reconnect, and health keeps counting
                shard.machine.last_error = error
                shard.machine.state = "failed"
                shard.opening = None
                shard.crash = None
                r = self.reconnect
                delay = random.uniform(0, min(r.backoff_max, r.backoff_initial * r.backoff_factor ** restarts))
                await asyncio.sleep(delay)

    async def _drive(self, shard: Shard) -> None:
        """Carry out the shard's state machine: its actions now, its next tick at its deadline or on news."""
        self._carry_out(shard, shard.machine.start(loop_time()))
        while self._running():
            machine = shard.machine
            if machine.state == "failed" and not shard.opens:
                return
            shard.wake.clear()
            timeout = machine.next_deadline() - loop_time()
            if timeout > 0 and shard.crash is None:
                # asyncio.timeout, not wait_for: wait_for of Python 3.11 may swallow stop()'s cancellation
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if timeout == math.inf else timeout):
                        await shard.wake.wait()
            if shard.crash is not None:  # a bug met in another task: _supervise reports it and starts again
                crash, shard.crash = shard.crash, None
                raise crash
            self._carry_out(shard, machine.tick(loop_time()))

    def tell(self, shard: Shard, news: Callable[[], list[Any]]) -> None:
        """Give the machine news from another task or a callback; a bug it meets is raised in the shard's task,
        so the shard is reported and started again, never left waiting for news that will not come."""
        try:
            actions = news()
        except Exception as exc:
            shard.crash = exc
            shard.wake.set()
            return
        self._carry_out(shard, actions)

    def _machine(self, number: int, symbols: tuple[str, ...]) -> Supervisor:
        return Supervisor(number, symbols, self.ws_url, self.reconnect, event=self._emit, limiter=self._limiter,
                          counters=self.counters)

    def _carry_out(self, shard: Shard, actions: list[Any]) -> None:
        for action in actions:
            if type(action) is Connect:
                task = self._spawn(self._open(shard, action), f"orderflow open {shard.number}")
                shard.opens.add(task)
                task.add_done_callback(shard.opens.discard)
            elif type(action) is Retire:
                self._spawn(self._retire(action.connection), f"orderflow retire {shard.number}")
        shard.wake.set()

    async def _open(self, shard: Shard, action: Connect) -> None:
        """One Connect: open stage by stage; the machine hears how it went."""
        machine = shard.machine
        logger.info("%s to %s for %s (%s)", "reconnecting" if machine.connects else "connecting", self.ws_url,
                    ", ".join(shard.symbols), machine.attempt_text(action.attempt))
        try:
            connection = await open_connection(
                f"{self.ws_url}/stream", shard.streams, self.driver.receive_read, deadlines=self.timeouts,
                max_size=self.limits.max_size, ssl_context=self.ssl_context,
                on_stage=lambda c, shard=shard: self._on_stage(shard, c), reader=self.reader,
                quiet=lambda c, shard=shard: self._quiet.quiet_market(shard, c),
            )
        except StreamError as exc:
            opening, shard.opening = shard.opening, None
            exc.stack = (opening.stack if opening is not None and opening.stack
                         else "".join(traceback.format_tb(exc.__traceback__)).rstrip())
            logger.warning("%s", exc)
            self.tell(shard, lambda exc=exc: machine.open_failed(exc, loop_time()))
            return
        shard.opening = None
        if self.timeouts.ping_interval > 0:
            connection.spawn(connection.keepalive(self.timeouts.ping_interval, self.timeouts.ping_timeout))
        logger.info("connected to %s for %s (%s)", self.ws_url, ", ".join(shard.symbols),
                    ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in connection.timings.items()))
        self._emit("on_connected", url=connection.url, stage_timings=dict(connection.timings))
        connection.done.add_done_callback(lambda _, c=connection: self._ended(shard, c))
        self.tell(shard, lambda: machine.opened(connection, loop_time()))

    def _ended(self, shard: Shard, connection: WsConnection) -> None:
        error = connection.done.result()
        if isinstance(error, Stalled):
            error.stack = task_stack(shard.task)
        if shard.machine.connection is connection:  # not a retired one: its replacement already delivers
            self.pipeline.feed_lost(shard.symbols)
        if self._running():
            self.tell(shard, lambda: shard.machine.ended(connection, error, loop_time()))

    async def _retire(self, old: WsConnection) -> None:
        await old.close(1000, "rotated", self.timeouts.close)
        self._emit("on_disconnected", url=old.url, code=1000, reason="rotated", error=None)

    def _on_stage(self, shard: Shard, connection: WsConnection) -> None:
        shard.opening = connection
        connection.task = asyncio.current_task()
        if connection not in self.live:  # every socket, even half-open, is closed by stop()
            self.live.add(connection)
            shard.live.add(connection)
            connection.done.add_done_callback(lambda _, c=connection: self._gone(shard, c))
        if connection.stage == "first_message" and self._rest:
            connection.spawn(self._quiet.baseline(shard, connection))

    def _gone(self, shard: Shard, connection: WsConnection) -> None:
        self.live.discard(connection)
        shard.live.discard(connection)
        self.driver.forget(connection)

    async def _watch_stages(self) -> None:
        """Report a connect stage running past stage_warning x its deadline, with where it waits."""
        while True:
            await asyncio.sleep(0.1)
            now = loop_time()
            for shard in self.shards:
                connection = shard.opening
                if connection is None or connection.stage not in STAGES or connection.warned == connection.stage:
                    continue
                deadline = getattr(self.timeouts, connection.stage)
                elapsed = now - connection.stage_started
                if elapsed < deadline * self.reporting.stage_warning:
                    continue
                connection.warned = connection.stage
                connection.stack = task_stack(connection.task)
                logger.warning("stage %s with %s has taken %.1f s of its %.1f s deadline; %s", connection.stage,
                               connection.endpoint, elapsed, deadline, connection.stack)
                self._emit("on_stall", symbols=shard.symbols, silent_for=elapsed, stage=connection.stage,
                           stack=connection.stack)

    def _connection_health(self, shard: Shard, now: float) -> dict[str, Any]:
        """One connection's entry of health()."""
        # A stage clock only for a connection that is really opening or streaming, never a dead one's.
        machine = shard.machine
        c = machine.connection if machine.state == "streaming" else shard.opening if machine.state == "connecting" \
            else None
        if c is not None and c.done.done():
            c = None
        error = machine.last_error
        return {
            "shard": shard.number,
            "symbols": list(shard.symbols),
            "state": machine.state,
            "stage": c.stage if c else None,
            "reader": ("fast" if c.fast else "websockets") if c else None,  # who parses data frames now
            "stage_for_s": round(now - c.stage_started, 3) if c else None,
            "connected_for_s": round(now - c.opened_at, 3) if c and c.opened_at else None,
            "connects": machine.connects,
            "last_error": None if error is None else {"type": type(error).__name__, "stage": error.stage or None,
                                                      "message": str(error)},
        }
