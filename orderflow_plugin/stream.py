"""OrderFlow: the asyncio shell that keeps aggTrade streams flowing and says why when they don't.

Symbols are sharded over connections. Each shard has one supervisor task that opens a
connection stage by stage (:mod:`.transport`), streams, and on any ending (close frame, reset,
stall, ping timeout) reconnects with capped exponential backoff and full jitter, forever
unless ``max_attempts`` is set. Before ``max_connection_age``, or on ``serverShutdown``, the
connection is replaced make-before-break. Frames go synchronously through decode, the
sequencer (each id once, in order) and dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .backfill import Backfiller, BackfillFailed
from .checkpoint import Checkpoint, CheckpointError
from .checkpointer import Checkpointer
from .config import Settings, load_settings
from .decode import Decoder, Reply, ServerShutdown
from .diagnostics import LoopWatchdog, task_stack
from .dispatch import Dispatcher
from .engine import FlowEngine
from .errors import BadFrame, GaveUp, HandshakeRejected, OrderFlowError, Stalled, StreamError
from .models import Market, Trade
from .plugins import PluginManager, plugins_from_settings
from .sequencer import DELIVER, DUPLICATE, GAP, OVERFLOW, READY, Sequencer
from .symbols import normalize_symbol, stream_name
from .threaded import FlowThread
from .tls import client_context
from .transport import READERS, STAGES, Deadlines, WsConnection, open_connection

__all__ = ["DEFAULT_ENDPOINTS", "OrderFlow"]

logger = logging.getLogger("orderflow_plugin.stream")

DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    "spot": ("wss://stream.binance.com:9443", "https://api.binance.com"),
    "usdm": ("wss://fstream.binance.com/market", "https://fapi.binance.com"),
}
_STREAM_LIMIT = {"spot": 1024, "usdm": 200}
# A symbol silent for longer than its recent longest gap x factor + margin (seconds) is checked against
# REST; a false alarm costs one REST request (weight 4, capped at a tenth of the budget), never a reconnect.
_SILENCE_FACTOR = 1.0
_SILENCE_MARGIN = 0.5
_SILENCE_CHECK = 0.25  # seconds between looks
_SILENCE_GRACE = 0.5  # seconds a trade REST already shows may take to reach us before the stream counts as dead
_GAP_WINDOW = 120.0  # seconds a learned longest gap is remembered (one to two windows)
_BACKFILL_CHUNK = 10_000  # ids fetched (10 REST pages) and delivered before the next are fetched


@dataclass
class _Shard:
    """Symbols served by one connection at a time, and its supervisor's state."""

    number: int
    symbols: tuple[str, ...]
    streams: list[str]
    state: str = "starting"  # connecting, streaming, backoff, failed, stopped
    connection: WsConnection | None = None
    rotate: asyncio.Event = field(default_factory=asyncio.Event)
    connects: int = 0
    task: asyncio.Task[Any] | None = None
    opening: WsConnection | None = None  # the connection being opened, for stuck-stage reports
    last_error: StreamError | None = None  # why the latest attempt or connection ended


class OrderFlow:
    """A live, gap-checked aggTrade feed for ``symbols`` delivered to plugins and signals.

    Use ``async with OrderFlow(...)`` or ``await flow.start()`` / ``await flow.stop()``.
    ``start()`` returns once the tasks run; it does not wait for a connection.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        market: Market = "spot",
        ws_url: str | None = None,
        rest_url: str | None = None,
        plugins: PluginManager | None = None,
        settings: Settings | None = None,
        ca_file: str | None = None,
        # Timeouts
        deadlines: Deadlines | None = None,
        ping_interval: float = 1.0,
        ping_timeout: float = 2.5,
        close_timeout: float = 5.0,
        stall_timeout: float = 30.0,
        silence_floor: float = 2.0,
        # Limits
        max_size: int = 2**20,
        transport: str = "websockets",
        streams_per_connection: int | None = None,
        connections_per_5min: int = 300,
        # Reconnects
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_factor: float = 2.0,
        max_attempts: int = 0,
        max_connection_age: float = 85_800.0,
        # Sequence
        reorder_window: float = 0.2,
        backfill: bool = True,
        max_buffered_trades: int = 100_000,
        rest_timeout: float = 5.0,
        rest_retries: int = 3,
        rest_weight_per_minute: int = 6000,
        history_size: int = 10_000,
        history_age: float = 3600.0,
        start_from_id: int | None = None,
        checkpoint_path: str | None = None,
        checkpoint_interval: float = 1.0,
        # Order flow
        metrics: bool = True,
        windows: Sequence[str] = ("1s", "1m", "5m"),
        footprint_tick: Decimal | str | None = "10",
        value_area: float = 0.7,
        whale_notional: Decimal | str | int | None = 100_000,
        whale_percentile: float | None = 99.9,
        whale_window: int = 1000,
        bar_close_grace: float = 2.0,
        snapshot_interval: float = 1.0,
        # Diagnostics
        loop_block_threshold: float = 1.0,
        stage_warning: float = 0.5,
        # Reporting
        slow_hook_ms: float = 5.0,
        report_interval: float = 60.0,
        async_queue_size: int = 10_000,
    ) -> None:
        if market not in DEFAULT_ENDPOINTS:
            raise ValueError(f"market must be spot or usdm, got {market!r}")
        self.symbols = tuple(dict.fromkeys(normalize_symbol(s) for s in symbols))
        if not self.symbols:
            raise ValueError("at least one symbol is needed")
        self.market: Market = market
        default_ws, default_rest = DEFAULT_ENDPOINTS[market]
        self.ws_url = (ws_url or default_ws).rstrip("/")
        self.rest_url = (rest_url or default_rest).rstrip("/")
        if not self.ws_url.startswith(("ws://", "wss://")):
            raise ValueError(f"ws_url must start with ws:// or wss://, got {self.ws_url!r}")
        self.settings = settings
        # One verifying context for WebSocket and REST; a bad ca_file fails here, at construction.
        self.ssl_context = client_context(ca_file)
        self.plugins = plugins if plugins is not None else PluginManager()
        self.deadlines = deadlines or Deadlines()
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.stall_timeout = stall_timeout
        self.silence_floor = silence_floor
        self.max_size = max_size
        if transport not in READERS:
            raise ValueError(f"transport must be one of {', '.join(READERS)}, got {transport!r}")
        self.transport = transport
        limit = _STREAM_LIMIT[market]
        self.streams_per_connection = min(streams_per_connection or limit, limit)
        self.connections_per_5min = connections_per_5min
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_factor = backoff_factor
        self.max_attempts = max_attempts
        self.max_connection_age = max_connection_age
        self.dispatcher = Dispatcher(
            self.plugins, self, slow_hook_ms=slow_hook_ms, report_interval=report_interval,
            async_queue_size=async_queue_size,
        )
        self._report_interval = report_interval
        self._decoder = Decoder(market)
        self.reorder_window = reorder_window
        self.backfiller = Backfiller(self.rest_url, market, timeout=rest_timeout, retries=rest_retries,
                                     weight_per_minute=rest_weight_per_minute,
                                     verify=self.ssl_context) if backfill else None
        start_after = None if start_from_id is None else start_from_id - 1
        # A checkpoint (read here, so a corrupt one fails at construction) wins over start_from_id.
        checkpoint = Checkpoint(checkpoint_path, market=market, interval=checkpoint_interval) \
            if checkpoint_path else None
        resume = checkpoint.load(self.symbols) if checkpoint is not None else {}
        self._checkpointer = Checkpointer(checkpoint, resume, self._checkpoint_failed,
                                          report_interval=report_interval) if checkpoint is not None else None
        self._sequencers = {
            symbol: Sequencer(symbol, start_after=resume[symbol].last_id if symbol in resume else start_after,
                              max_held=max_buffered_trades)
            for symbol in self.symbols
        }
        # Past half the buffer, reads pause (TCP holds the server back) until the hole is filled, for at
        # most rest_timeout: a REST that does not answer must not stop the live stream for long.
        self._pause_at = max(1, max_buffered_trades // 2)
        self._max_pause = rest_timeout
        self._paused: set[WsConnection] = set()
        self._pause_timer: asyncio.TimerHandle | None = None
        self._may_pause = True  # false after a pause ran out, until a hole is filled or given up
        self._filling: dict[str, asyncio.Task[None] | asyncio.TimerHandle] = {}
        self._history = {symbol: deque[Trade](maxlen=history_size) for symbol in self.symbols}
        self.engines = {
            symbol: FlowEngine(symbol, windows=windows, footprint_tick=footprint_tick, value_area=value_area,
                               whale_notional=whale_notional, whale_percentile=whale_percentile,
                               whale_window=whale_window)
            for symbol in self.symbols
        } if metrics else {}
        self.bar_close_grace = bar_close_grace
        self.snapshot_interval = snapshot_interval
        self._clock_offset: dict[str, float] = {}  # trade time minus wall time at delivery, ms
        self.loop_block_threshold = loop_block_threshold
        self.stage_warning = stage_warning
        self.watchdog: LoopWatchdog | None = None
        self._latest: dict[str, dict[str, Any]] = {symbol: {} for symbol in self.symbols}
        self.history_age_ms = int(history_age * 1000)
        self._last_trade_at: dict[str, float] = {}
        # Liveness: each symbol's longest gap between deliveries in this and the previous window.
        self._gap_now = dict.fromkeys(self.symbols, 0.0)
        self._gap_before = dict.fromkeys(self.symbols, 0.0)
        self._gap_window_ends = 0.0
        self._quiet_until: dict[str | int, float] = {}  # symbol or shard number -> no silence check before
        per = self.streams_per_connection
        self._shards = [
            _Shard(i + 1, self.symbols[k : k + per], [stream_name(s) for s in self.symbols[k : k + per]])
            for i, k in enumerate(range(0, len(self.symbols), per))
        ]
        self._tasks: set[asyncio.Task[Any]] = set()
        self._live: set[WsConnection] = set()
        self._opens: deque[float] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"
        self._started_at = 0.0
        self._bad_frame_logged = 0.0
        self.counters = dict.fromkeys(
            ("trades", "reconnects", "gaps", "backfilled", "bad_frames", "duplicates", "stalls", "rotations",
             "loop_blocks"), 0
        )

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, plugins: PluginManager | None = None, **overrides: Any
    ) -> OrderFlow:
        """Build from validated settings (loaded when not given); keyword ``overrides`` win."""
        settings = settings if settings is not None else load_settings()
        c = settings.connector
        q = settings.sequence
        f = settings.flow
        market = settings.market
        endpoints = settings.endpoints[market]
        kwargs: dict[str, Any] = dict(
            market=market,
            ws_url=c.ws_url or endpoints.ws_url,
            rest_url=c.rest_url or endpoints.rest_url,
            settings=settings,
            ca_file=c.ca_file or None,
            deadlines=Deadlines(
                resolve=c.resolve_timeout, tcp_connect=c.tcp_connect_timeout, tls=c.tls_timeout,
                http_upgrade=c.http_upgrade_timeout, subscribed=c.subscribed_timeout,
                first_message=c.first_message_timeout,
            ),
            ping_interval=c.ping_interval, ping_timeout=c.ping_timeout, close_timeout=c.close_timeout,
            stall_timeout=c.stall_timeout, silence_floor=c.silence_floor, max_size=c.max_size, transport=c.transport,
            streams_per_connection=c.streams_per_connection, connections_per_5min=c.connections_per_5min,
            backoff_initial=c.backoff_initial, backoff_max=c.backoff_max, backoff_factor=c.backoff_factor,
            max_attempts=c.max_attempts, max_connection_age=c.max_connection_age,
            reorder_window=q.reorder_window, backfill=q.backfill, max_buffered_trades=q.max_buffered_trades,
            rest_timeout=q.rest_timeout, rest_retries=q.rest_retries,
            rest_weight_per_minute=q.rest_weight_per_minute, history_size=q.history_size,
            history_age=q.history_age, start_from_id=q.start_from_id or None,
            checkpoint_path=q.checkpoint_path or None, checkpoint_interval=q.checkpoint_interval,
            metrics=f.enabled, windows=f.windows, footprint_tick=f.footprint_tick or None,
            value_area=f.value_area, whale_notional=f.whale_notional or None,
            whale_percentile=f.whale_percentile or None, whale_window=f.whale_window,
            bar_close_grace=f.bar_close_grace, snapshot_interval=f.snapshot_interval,
            loop_block_threshold=settings.diagnostics.loop_block_threshold,
            stage_warning=settings.diagnostics.stage_warning,
            slow_hook_ms=settings.plugins.slow_hook_ms, report_interval=settings.plugins.report_interval,
            async_queue_size=settings.plugins.async_queue_size,
        )
        symbols = overrides.pop("symbols", settings.symbols)
        kwargs.update(overrides)
        if plugins is None:
            plugins = plugins_from_settings(settings)
        return cls(symbols, plugins=plugins, **kwargs)

    # Lifecycle

    async def __aenter__(self) -> OrderFlow:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the shard tasks and return; connecting happens in the background.

        Raises OrderFlowError when started twice, or on another event loop than the one it was
        first started on. The stream keeps references to every task it creates, so a host may
        fire ``start()`` with ``create_task`` and drop the task.
        """
        loop = self._bind_loop("start")
        if self._state != "new":
            raise OrderFlowError(f"OrderFlow.start() called on a stream that is {self._state}; "
                                 "call stop() and create a new OrderFlow to start again")
        self._state = "running"
        self._started_at = time.monotonic()
        if self.loop_block_threshold > 0:
            self.watchdog = LoopWatchdog(loop, self._loop_blocked, threshold=self.loop_block_threshold)
            self.watchdog.start()
        for error in self.plugins.load_errors:
            self._emit("on_error", error=error, where="plugins")
        self._emit("on_startup", settings=self.settings if self.settings is not None else Settings({}))
        for shard in self._shards:
            shard.task = self._spawn(self._supervise(shard), f"orderflow shard {shard.number}")
        if self.engines:
            self._spawn(self._tick(), "orderflow metrics ticker")
        if self.stage_warning > 0:
            self._spawn(self._watch_stages(), "orderflow stage monitor")
        self._spawn(self._watch_silence(), "orderflow silence watchdog")
        logger.info("streaming %s from %s in %d connection(s)", ", ".join(self.symbols), self.ws_url,
                    len(self._shards))

    def run_in_thread(self, timeout: float = 10.0) -> FlowThread:
        """Run this stream on a new thread with its own event loop; for synchronous hosts.

        Hooks then run on that thread. Read state with the returned handle's ``health()`` and
        ``latest()``; end with its ``stop()``.
        """
        return FlowThread(self).start(timeout)

    def _bind_loop(self, method: str) -> asyncio.AbstractEventLoop:
        """The running loop, which must be the one this stream lives on."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise OrderFlowError(
                f"OrderFlow.{method}() needs a running event loop in this thread: await it from async "
                "code, or use OrderFlow.run_in_thread() from a synchronous host") from None
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise OrderFlowError(
                f"OrderFlow.{method}() called on another event loop (thread {threading.current_thread().name}) "
                f"than the one it runs on: call asyncio.run_coroutine_threadsafe(flow.{method}(), loop) "
                "with the stream's loop, or use OrderFlow.run_in_thread()")
        return loop

    async def stop(self) -> None:
        """Close every connection within ``close_timeout``, end every task, then fire on_shutdown."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        self._bind_loop("stop")
        self._state = "stopping"
        try:
            for pending in self._filling.values():
                pending.cancel()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(c.close(1000, "client stopped", self.close_timeout) for c in list(self._live)),
                                 return_exceptions=True)
            if self.backfiller is not None:
                await self.backfiller.aclose()
            if self._checkpointer is not None:
                await self._checkpointer.close()
        finally:
            for shard in self._shards:
                shard.state = "stopped"
            self._state = "stopped"
            if self.watchdog is not None:
                self.watchdog.stop()
        for engine in self.engines.values():  # the final state, for dashboards and recorders
            if engine.trades:
                self._metric(engine.snapshot())
        self._emit("on_shutdown", summary=self.summary())
        await self.dispatcher.aclose(timeout=0.5)
        logger.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in self.summary().items()))

    # Reading the state

    def summary(self) -> dict[str, Any]:
        """Counters of the run so far."""
        return {
            **self.counters,
            "plugin_errors": self.dispatcher.plugin_errors,
            "uptime_s": round(time.monotonic() - self._started_at, 3) if self._started_at else 0.0,
        }

    def health(self) -> dict[str, Any]:
        """A snapshot: state, each connection's stage and for how long, last trade age per symbol, counters."""
        now = time.monotonic()
        connections = []
        for shard in self._shards:
            # A stage clock only for a connection that is really opening or streaming, never a dead one's.
            c = shard.connection if shard.state in ("connecting", "streaming") else None
            if c is not None and c.done.done():
                c = None
            error = shard.last_error
            connections.append({
                "shard": shard.number,
                "symbols": list(shard.symbols),
                "state": shard.state,
                "stage": c.stage if c else None,
                "reader": ("fast" if c.fast else "websockets") if c else None,  # who parses data frames now
                "stage_for_s": round(now - c.stage_started, 3) if c else None,
                "connected_for_s": round(now - c.opened_at, 3) if c and c.opened_at else None,
                "connects": shard.connects,
                "last_error": None if error is None else {"type": type(error).__name__, "stage": error.stage or None,
                                                          "message": str(error)},
            })
        symbols = {}
        for symbol, sequencer in self._sequencers.items():
            last = self._last_trade_at.get(symbol)
            symbols[symbol] = {
                "last_trade_age_s": round(now - last, 3) if last else None,
                "last_id": sequencer.last_delivered,
                "held": sequencer.held,
            }
        lag = round(self.watchdog.lag, 4) if self.watchdog is not None else None
        state = self._state
        if state == "running" and all(shard.state == "failed" for shard in self._shards):
            state = "failed"  # every connection gave up (max_attempts): nothing is streaming or retrying
        return {"state": state, "connections": connections, "symbols": symbols, "loop_lag_s": lag,
                **self.summary()}

    def latest(self, symbol: str) -> dict[str, Any]:
        """The newest trade, snapshot, whale and closed bar per window of ``symbol`` (safe from any thread)."""
        return dict(self._latest[normalize_symbol(symbol)])

    # Shards

    async def _supervise(self, shard: _Shard) -> None:
        """Run the shard until stop(): whatever else ends it is reported with its traceback, and it starts again."""
        restarts = 0
        while True:
            try:
                await self._run_shard(shard)
                return  # max_attempts spent: GaveUp was reported and the shard stays failed
            except Exception as exc:  # a bug: never a task that looks alive and does nothing
                restarts += 1
                error = StreamError(f"connection supervisor {shard.number} for {', '.join(shard.symbols)} failed "
                                    f"({type(exc).__name__}: {exc}); restarting it", url=self.ws_url, stage="supervise")
                error.__cause__ = exc
                error.stack = "".join(traceback.format_exception(exc)).rstrip()
                shard.last_error = error
                shard.state = "failed"
                logger.error("%s", error, exc_info=exc)
                self._emit("on_error", error=error, where=f"task:orderflow shard {shard.number}")
                for connection in (shard.connection, shard.opening):
                    if connection is not None:
                        connection.fail(error)
                shard.connection = shard.opening = None
                await self._backoff(shard, restarts + 1, error)

    async def _run_shard(self, shard: _Shard) -> None:
        connection = await self._open_with_retries(shard, after=None)
        while connection is not None:
            rotate_wait = asyncio.ensure_future(shard.rotate.wait())
            age = asyncio.get_running_loop().call_later(self.max_connection_age, shard.rotate.set)
            try:
                await asyncio.wait({connection.done, rotate_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                rotate_wait.cancel()
                age.cancel()
            if connection.done.done():
                error = self._ended(shard, connection)
                connection = await self._open_with_retries(shard, after=error)
            else:
                shard.rotate.clear()
                connection = await self._replace(shard, connection)

    async def _replace(self, shard: _Shard, old: WsConnection) -> WsConnection | None:
        """Make-before-break: the new connection delivers before the old one is closed."""
        self.counters["rotations"] += 1
        logger.info("rotating connection %d to %s", shard.number, self.ws_url)
        opening = asyncio.ensure_future(self._open_with_retries(shard, after=None, replacing=True))
        try:
            await asyncio.wait({opening, old.done}, return_when=asyncio.FIRST_COMPLETED)
            if not opening.done():  # the old one ended first: report it and keep waiting for the new one
                self._ended(shard, old)
                return await opening
        finally:  # stop() cancels the supervisor: the replacement it was opening must end with it
            if not opening.done():
                opening.cancel()
                await asyncio.gather(opening, return_exceptions=True)
        new = opening.result()
        if new is None:  # gave up opening a replacement: keep streaming on the old one
            shard.connection = old
            shard.state = "streaming"
            return old
        self._spawn(self._retire(old), f"orderflow retire {shard.number}")
        return new

    async def _retire(self, old: WsConnection) -> None:
        await old.close(1000, "rotated", self.close_timeout)
        self._emit("on_disconnected", url=old.url, code=1000, reason="rotated", error=None)

    def _ended(self, shard: _Shard, connection: WsConnection) -> StreamError:
        error = connection.done.result()
        shard.last_error = error
        if shard.connection is connection:
            shard.connection = None
        if isinstance(error, Stalled):
            self.counters["stalls"] += 1
            error.stack = task_stack(shard.task)
            logger.warning("%s; %s", error, error.stack)
            self._emit("on_stall", symbols=shard.symbols, silent_for=error.silent_for, stage=error.stage,
                       stack=error.stack)
        else:
            logger.info("%s", error)
        code = getattr(error, "code", None)
        self._emit("on_disconnected", url=connection.url, code=code, reason=getattr(error, "reason", str(error)),
                   error=error)
        return error

    async def _open_with_retries(
        self, shard: _Shard, after: StreamError | None, *, replacing: bool = False
    ) -> WsConnection | None:
        """Connect, retrying with backoff; None when max_attempts is spent (reported as GaveUp)."""
        attempt = 0
        failures: list[str] = []
        if after is not None:  # a connection just ended: a short jittered pause, then reconnect
            await self._backoff(shard, 1, after)
        while True:
            attempt += 1
            await self._open_slot()
            shard.state = "connecting"
            self._emit("on_connect_attempt", attempt=attempt, url=self.ws_url, symbols=shard.symbols)
            logger.info("connecting to %s for %s (attempt %d%s)", self.ws_url, ", ".join(shard.symbols), attempt,
                        f"/{self.max_attempts}" if self.max_attempts else "")
            try:
                connection = await open_connection(
                    f"{self.ws_url}/stream", shard.streams, self._on_frame, deadlines=self.deadlines,
                    max_size=self.max_size, ssl_context=self.ssl_context,
                    on_stage=lambda c, shard=shard: self._on_stage(shard, c), reader=self.transport,
                )
            except StreamError as exc:
                shard.last_error = exc
                failures.append(f"attempt {attempt}: {exc}")
                opening, shard.opening = shard.opening, None
                exc.stack = (opening.stack if opening is not None and opening.stack
                             else "".join(traceback.format_tb(exc.__traceback__)).rstrip())
                logger.warning("%s", exc)
                self._emit("on_error", error=exc, where=f"connect:{exc.stage}")
                if self.max_attempts and attempt >= self.max_attempts:
                    gave_up = GaveUp(
                        f"gave up connecting to {self.ws_url} for {', '.join(shard.symbols)} after {attempt} "
                        f"attempts; " + "; ".join(failures[-5:]), url=self.ws_url, stage=exc.stage)
                    shard.state = "failed"
                    shard.last_error = gave_up
                    logger.error("%s", gave_up)
                    self._emit("on_error", error=gave_up, where="connect")
                    return None
                await self._backoff(shard, attempt + 1, exc)
                continue
            shard.opening = None
            shard.connects += 1
            if shard.connects > 1 and not replacing:
                self.counters["reconnects"] += 1
            shard.connection = connection  # a replacement takes over here; the old one is retired
            shard.state = "streaming"
            if self.ping_interval > 0:
                connection.spawn(connection.keepalive(self.ping_interval, self.ping_timeout))
            logger.info("connected to %s for %s (%s)", self.ws_url, ", ".join(shard.symbols),
                        ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in connection.timings.items()))
            self._emit("on_connected", url=connection.url, stage_timings=dict(connection.timings))
            return connection

    async def _backoff(self, shard: _Shard, attempt: int, error: StreamError) -> None:
        """Sleep a capped exponential delay with full jitter, at least any Retry-After."""
        ceiling = min(self.backoff_max, self.backoff_initial * self.backoff_factor ** max(0, attempt - 2))
        delay = random.uniform(0, ceiling)
        if isinstance(error, HandshakeRejected) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        shard.state = "backoff"
        self._emit("on_reconnect_scheduled", attempt=attempt, delay=delay, error=error)
        logger.info("reconnecting in %.2f s (attempt %d)", delay, attempt)
        await asyncio.sleep(delay)

    async def _open_slot(self) -> None:
        """Open at most ``connections_per_5min`` connections per 300 s, as Binance allows per IP."""
        now = time.monotonic()
        while self._opens and now - self._opens[0] > 300:
            self._opens.popleft()
        if len(self._opens) >= self.connections_per_5min:
            wait = 300 - (now - self._opens[0])
            logger.warning("connection rate limit reached; waiting %.1f s", wait)
            await asyncio.sleep(wait)
        self._opens.append(time.monotonic())

    def _on_stage(self, shard: _Shard, connection: WsConnection) -> None:
        shard.opening = connection
        connection.task = asyncio.current_task()
        if connection not in self._live:  # every socket, even half-open, is closed by stop()
            self._live.add(connection)
            connection.done.add_done_callback(lambda _, c=connection: self._live.discard(c))
        if shard.connection is None or shard.connection.done.done():
            shard.connection = connection

    # The hot path: one frame

    def _on_frame(self, connection: WsConnection, frame: bytes) -> None:
        try:
            event = self._decoder.decode(frame)
        except BadFrame as exc:
            self._bad_frame(exc, connection)
            return
        if type(event) is Trade:
            connection.trades += 1
            if connection.trades == 1:
                connection.first_trade()
            sequencer = self._sequencers.get(event.symbol)
            if sequencer is None:
                self._bad_frame(BadFrame(f"trade for {event.symbol}, which this stream did not subscribe to"),
                                connection)
                return
            status = sequencer.push(event)
            if status == DELIVER:
                self._deliver(event)
            elif status == DUPLICATE:
                self.counters["duplicates"] += 1
                checkpointer = self._checkpointer
                if checkpointer is not None and event.symbol in checkpointer.resumed and not sequencer.held:
                    # The first live trade is behind the stored id: the checkpoint is from another feed.
                    error = checkpointer.foreign(event.symbol, event.id)
                    logger.error("%s", error)
                    self._emit("on_error", error=error, where="checkpoint")
                    sequencer.restart()
                    self._on_frame(connection, frame)
            elif status == READY:
                self._release(sequencer)
            elif status == GAP:
                self._gap_opened(sequencer)
            elif status == OVERFLOW:
                self._give_up(sequencer, "more than max_buffered_trades live trades waited behind it")
            elif sequencer.held >= self._pause_at and self._may_pause and not connection.paused:  # many HELD
                # Backpressure: stop reading until the hole is filled, rather than overflow and lose it.
                logger.info("%s: %d trades wait behind a hole; pausing reads from %s until it is filled",
                            sequencer.symbol, sequencer.held, connection.endpoint)
                connection.pause()
                self._paused.add(connection)
                if self._pause_timer is None:
                    self._pause_timer = asyncio.get_running_loop().call_later(
                        self._max_pause, self._resume_reading, True)
        elif type(event) is ServerShutdown:
            logger.info("%s announced serverShutdown: replacing the connection", connection.endpoint)
            for shard in self._shards:
                if shard.connection is connection:
                    shard.rotate.set()
        elif type(event) is Reply:
            connection.subscribed(event.id, event.error)

    def _deliver(self, trade: Trade) -> None:
        self.counters["trades"] += 1
        symbol = trade.symbol
        now = time.monotonic()
        last = self._last_trade_at.get(symbol)
        if last is not None and now - last > self._gap_now[symbol] and trade.source != "backfill":
            self._gap_now[symbol] = now - last  # a backfilled trade's gap spans an outage, not the market
        self._last_trade_at[symbol] = now
        checkpointer = self._checkpointer
        if checkpointer is not None:  # off by default: costs nothing then
            trade = checkpointer.tag(trade, now)
        self._history[symbol].append(trade)
        self._latest[symbol]["trade"] = trade
        self.dispatcher.emit_one("on_trade", "trade", trade)
        engine = self.engines.get(symbol)
        if engine is not None:
            metrics = engine.add(trade)
            if metrics:
                for metric in metrics:
                    self._metric(metric)

    def _checkpoint_failed(self, exc: CheckpointError) -> None:
        """Trades go on; say that a restart is no longer exact until a write succeeds again."""
        logger.error("%s; trades go on, but a restart may now repeat trades without source=\"replay\"", exc)
        self._emit("on_error", error=exc, where="checkpoint")

    def _metric(self, metric: Any) -> None:
        latest = self._latest[metric.symbol]
        latest[f"bar:{metric.window}" if metric.kind == "bar" else metric.kind] = metric
        self.dispatcher.emit_one("on_metric", "metric", metric)

    async def _tick(self) -> None:
        """Emit snapshots every snapshot_interval; close bars a quiet market left open past their grace."""
        interval = min(self.snapshot_interval, self.bar_close_grace / 2)
        next_snapshot = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for symbol, engine in self.engines.items():
                last = self._latest[symbol].get("trade")
                if last is not None and last.source == "live":  # trade time minus wall time at its delivery
                    self._clock_offset[symbol] = last.time - self._last_trade_at[symbol] * 1000.0
                offset = self._clock_offset.get(symbol)
                # Never while a hole is open: a backfilled trade may still belong to the bar.
                if offset is not None and self._sequencers[symbol].gap is None and symbol not in self._filling:
                    for bar in engine.close_until(int(now * 1000.0 + offset - self.bar_close_grace * 1000)):
                        self._metric(bar)
            if now >= next_snapshot:
                next_snapshot = now + self.snapshot_interval
                for engine in self.engines.values():
                    if engine.trades:
                        self._metric(engine.snapshot())

    async def _watch_stages(self) -> None:
        """Report a connect stage running past stage_warning x its deadline, with where it waits."""
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for shard in self._shards:
                connection = shard.opening
                if connection is None or connection.stage not in STAGES or connection.warned == connection.stage:
                    continue
                deadline = getattr(self.deadlines, connection.stage)
                elapsed = now - connection.stage_started
                if elapsed < deadline * self.stage_warning:
                    continue
                connection.warned = connection.stage
                connection.stack = task_stack(connection.task)
                logger.warning("stage %s with %s has taken %.1f s of its %.1f s deadline; %s", connection.stage,
                               connection.endpoint, elapsed, deadline, connection.stack)
                self._emit("on_stall", symbols=shard.symbols, silent_for=elapsed, stage=connection.stage,
                           stack=connection.stack)

    # Liveness: a dead path is found by the connection's idle ping; a silent stream on a live path here

    def silence_deadline(self, symbol: str) -> float:
        """Seconds without a trade after which ``symbol``'s feed is checked: learned from its own recent gaps."""
        learned = max(self._gap_now[symbol], self._gap_before[symbol])
        if not learned:
            return self.stall_timeout
        return min(self.stall_timeout, max(self.silence_floor, learned * _SILENCE_FACTOR + _SILENCE_MARGIN))

    async def _watch_silence(self) -> None:
        """Check a symbol silent past its learned deadline (a shard silent past stall_timeout) against REST.

        REST having newer trades than we delivered means the stream went silent: the connection is
        replaced and the hole backfilled. REST having none means the market is quiet: nothing happens
        (no reconnect for being quiet). Without REST, a shard silent for stall_timeout is replaced.
        """
        while True:
            await asyncio.sleep(_SILENCE_CHECK)
            try:
                self._check_silence(time.monotonic())
            except Exception as exc:  # a bug here must not end the watchdog: report it and look again
                logger.error("silence watchdog failed; it goes on", exc_info=exc)
                self._emit("on_error", error=exc, where="task:orderflow silence watchdog")

    def _check_silence(self, now: float) -> None:
        """One look: persist a due checkpoint, roll the learned gaps, start the checks that are due."""
        if self._checkpointer is not None:
            self._checkpointer.tick(now)
        if now >= self._gap_window_ends:
            self._gap_window_ends = now + _GAP_WINDOW
            self._gap_before, self._gap_now = self._gap_now, dict.fromkeys(self.symbols, 0.0)
        for shard in self._shards:
            connection = shard.connection
            if shard.state != "streaming" or connection is None or connection.done.done() or connection.paused:
                continue
            if any(self._sequencers[s].gap is not None or s in self._filling for s in shard.symbols):
                continue  # trades are arriving and waiting behind a hole: the feed is alive
            newest = max(connection.opened_at, *(self._last_trade_at.get(s, 0.0) for s in shard.symbols))
            if now - newest >= self.stall_timeout and now >= self._quiet_until.get(shard.number, 0.0):
                self._quiet_until[shard.number] = math.inf
                latest = max(shard.symbols, key=lambda s: self._last_trade_at.get(s, 0.0))
                self._spawn(self._verify_silence(shard, connection, latest, self.stall_timeout,
                                                 key=shard.number), f"orderflow silence check {shard.number}")
                continue
            if self.backfiller is None:
                continue
            for symbol in shard.symbols:
                deadline = self.silence_deadline(symbol)
                since = now - max(connection.opened_at, self._last_trade_at.get(symbol, 0.0))
                if deadline < self.stall_timeout and since >= deadline and now >= self._quiet_until.get(symbol, 0):
                    self._quiet_until[symbol] = math.inf
                    self._spawn(self._verify_silence(shard, connection, symbol, deadline, key=symbol),
                                f"orderflow silence check {symbol}")

    async def _verify_silence(self, shard: _Shard, connection: WsConnection, symbol: str, deadline: float, *,
                              key: str | int) -> None:
        quiet_for = deadline  # no new check of this symbol (or shard) before that, unless the feed is replaced
        try:
            error = await self._silent_stream(connection, symbol, deadline, shard_wide=isinstance(key, int))
            if error is not None and not connection.done.done() and shard.connection is connection:
                quiet_for = 0.0
                connection.fail(error)
        finally:
            self._quiet_until[key] = time.monotonic() + quiet_for

    async def _silent_stream(self, connection: WsConnection, symbol: str, deadline: float, *,
                             shard_wide: bool) -> Stalled | None:
        """Why the stream of a symbol silent past ``deadline`` is dead, or None if the market is just quiet."""
        sequencer = self._sequencers[symbol]
        last, heard = sequencer.last_delivered, self._last_trade_at.get(symbol, 0.0)
        if self.backfiller is None:
            seen = "there is no REST to check against"
        else:
            try:
                newest = await self.backfiller.latest_id(symbol)
            except BackfillFailed as exc:
                # REST cannot tell. A symbol, or a shard still receiving (pongs): the ping watches the path.
                if not shard_wide or time.monotonic() - connection.last_received < self.stall_timeout:
                    logger.warning("%s; cannot tell a quiet market from a silent stream", exc)
                    return None
                seen = f"REST cannot tell either ({exc})"
            else:
                if newest is None or last is None or newest <= last:
                    logger.debug("%s: quiet for %.1f s, REST agrees (newest id %s)", symbol, deadline, newest)
                    return None
                await asyncio.sleep(_SILENCE_GRACE)  # a trade REST shows may still be on its way to us
                if self._last_trade_at.get(symbol, 0.0) != heard:
                    return None
                seen = f"REST has trades up to id {newest}, we delivered up to {last}"
        silent = time.monotonic() - max(connection.opened_at, self._last_trade_at.get(symbol, 0.0))
        return Stalled(f"{symbol}: no trade from {connection.endpoint} for {silent:.1f} s (deadline {deadline:.1f} s) "
                       f"while {seen}: the stream went silent", url=connection.url, stage="streaming",
                       silent_for=silent)

    def _loop_blocked(self, blocked_for: float, stack: str) -> None:
        self.counters["loop_blocks"] += 1
        self._emit("on_loop_blocked", blocked_for=blocked_for, stack=stack)

    def history(self, symbol: str, since: int | None = None) -> list[Trade]:
        """Delivered trades of ``symbol`` still in the bounded history, from trade time ``since`` (ms)."""
        trades = self._history[normalize_symbol(symbol)]
        newest = trades[-1].time if trades else 0
        oldest = max(since or 0, newest - self.history_age_ms)
        return [t for t in trades if t.time >= oldest]

    # Holes in the sequence

    def _release(self, sequencer: Sequencer) -> None:
        """Deliver what became contiguous; if a hole is still open, make sure it is handled."""
        for trade in sequencer.drain():
            self._deliver(trade)
        if sequencer.gap is not None:
            self._gap_opened(sequencer)
        self._resume_reading()

    def _gap_opened(self, sequencer: Sequencer) -> None:
        """Give reordered trades ``reorder_window`` to arrive before declaring the hole a gap."""
        if sequencer.symbol in self._filling:
            return
        loop = asyncio.get_running_loop()
        self._filling[sequencer.symbol] = loop.call_later(self.reorder_window, self._declare_gap, sequencer)

    def _declare_gap(self, sequencer: Sequencer) -> None:
        self._filling.pop(sequencer.symbol, None)
        gap = sequencer.gap
        if gap is None or self._state != "running":
            return
        self.counters["gaps"] += 1
        logger.warning("%s: aggTrade ids %d..%d missing (%d)", gap.symbol, gap.first, gap.last, gap.size)
        self._emit("on_gap", symbol=gap.symbol, first_missing=gap.first, last_missing=gap.last)
        if self.backfiller is None:
            self._give_up(sequencer, "backfill is off")
            return
        task = asyncio.get_running_loop().create_task(self._backfill(sequencer, gap.first, gap.last),
                                                      name=f"orderflow backfill {gap.symbol}")
        self._filling[gap.symbol] = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _backfill(self, sequencer: Sequencer, first: int, last: int) -> None:
        """Fill ids first..last over REST, a chunk at a time: each chunk is delivered before the next is
        fetched, so a long hole (a restart after hours) keeps memory bounded and delivers oldest first."""
        assert self.backfiller is not None
        start = first
        while start <= last:
            end = min(last, start + _BACKFILL_CHUNK - 1)
            failed: BackfillFailed | None = None
            try:
                trades = await self.backfiller.fetch(sequencer.symbol, start, end)
            except BackfillFailed as exc:
                failed, trades = exc, exc.fetched  # the pages that did arrive are delivered, not lost
            except Exception as exc:  # a bug, not REST trouble: the hole must still end, in a report
                logger.exception("%s: backfill of ids %d..%d raised", sequencer.symbol, start, end)
                failed, trades = BackfillFailed(f"{sequencer.symbol}: backfill of ids {start}..{end} raised {exc!r}",
                                                url=self.rest_url, symbol=sequencer.symbol, first=start, last=end), []
            if trades:
                self.counters["backfilled"] += len(trades)
                for trade in sequencer.fill(trades):
                    self._deliver(trade)
                self._emit("on_backfill", symbol=sequencer.symbol, first_id=start,
                           last_id=end if failed is None else trades[-1].id, count=len(trades))
            if failed is not None:
                self._filling.pop(sequencer.symbol, None)
                logger.error("%s", failed)
                self._emit("on_error", error=failed, where="backfill")
                self._give_up(sequencer, f"backfill failed: {failed}")
                return
            start = end + 1
        self._filling.pop(sequencer.symbol, None)
        if sequencer.gap is not None:
            self._gap_opened(sequencer)
        self._may_pause = True
        self._resume_reading()

    def _resume_reading(self, expired: bool = False) -> None:
        """Resume the connections paused for backpressure once no symbol has too many trades waiting,
        or when the pause has lasted its longest (then the overflow policy applies)."""
        if self._paused and (expired or all(s.held < self._pause_at for s in self._sequencers.values())):
            if self._pause_timer is not None:
                self._pause_timer.cancel()
                self._pause_timer = None
            self._may_pause = not expired
            if expired:
                logger.warning("reads were paused %.1f s (rest_timeout) for a hole still open; reading on",
                               self._max_pause)
            paused = list(self._paused)
            self._paused.clear()
            for connection in paused:
                connection.resume()  # its held-back frames may pause it again

    def _give_up(self, sequencer: Sequencer, why: str) -> None:
        """Skip the open hole so the stream goes on; say exactly which ids were not seen."""
        pending = self._filling.pop(sequencer.symbol, None)
        if pending is not None:
            pending.cancel()
        gap, released = sequencer.skip()
        for trade in released:
            self._deliver(trade)
        if gap is not None:
            error = StreamError(f"{gap.symbol}: aggTrade ids {gap.first}..{gap.last} ({gap.size}) were not "
                                f"delivered: {why}; continuing after them", url=self.ws_url, stage="sequence")
            logger.error("%s", error)
            self._emit("on_error", error=error, where="sequence")
        if sequencer.gap is not None:
            self._gap_opened(sequencer)
        self._may_pause = True
        self._resume_reading()

    def _bad_frame(self, error: BadFrame, connection: WsConnection) -> None:
        self.counters["bad_frames"] += 1
        now = time.monotonic()
        if now - self._bad_frame_logged >= self._report_interval:
            self._bad_frame_logged = now
            logger.warning("bad frame from %s skipped (%d so far): %s", connection.endpoint,
                           self.counters["bad_frames"], error)
        self._emit("on_error", error=error, where="decode")

    # Plumbing

    def _emit(self, hook: str, **kwargs: Any) -> None:
        self.dispatcher.emit(hook, **kwargs)

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug in the shell: never swallowed
            logger.error("task %s failed", task.get_name(), exc_info=exc)
            self._emit("on_error", error=exc, where=f"task:{task.get_name()}")

