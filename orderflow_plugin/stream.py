"""OrderFlow: the asyncio shell that keeps aggTrade streams flowing and says why when they don't.

The decisions live in two sans-I/O cores: :mod:`.pipeline` (frames to delivered trades) and
:mod:`.supervisor` (each shard's connection lifecycle). This shell builds them from the option
groups, and holds the parts that carry out what they ask, each built here with what it needs:
:mod:`.shards` (connections), :mod:`.driver` (every input into the pipeline, then its actions: frames,
backfill, checkpoint writes, ticks), :mod:`.silence` (silent streams) and :mod:`.views` (what the host
reads). See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import time
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from .backfill import Backfiller
from .checkpoint import Checkpoint, CheckpointError
from .checkpointer import Checkpointer
from .config import Settings, load_settings
from .diagnostics import LoopWatchdog
from .dispatch import Dispatcher
from .driver import CallSink, Driver
from .errors import OrderFlowError, StreamError
from .hotpath import hot_path
from .listing import EXCHANGE_INFO_WEIGHT, Listing, fetch_listing
from .loopclock import loop_time
from .models import Market, Trade
from .options import Flow, Limits, Reconnect, Reporting, Sequencing, Timeouts, from_table
from .pipeline import Pipeline
from .plugins import PluginManager, plugin_manager, plugins_from_settings
from .redisbus import as_source
from .shards import ShardSupervision
from .silence import QuietAtConnect, SilenceWatch
from .symbols import normalize_symbol
from .threaded import FlowThread
from .tls import client_context
from .views import FlowViews, Life
from .wsconnection import READERS

__all__ = ["DEFAULT_ENDPOINTS", "OrderFlow"]

logger = logging.getLogger("orderflow_plugin.stream")

DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    "spot": ("wss://stream.binance.com:9443", "https://api.binance.com"),
    "usdm": ("wss://fstream.binance.com/market", "https://fapi.binance.com"),
}
_STREAM_LIMIT = {"spot": 1024, "usdm": 200}


class OrderFlow:
    """A live, gap-checked aggTrade feed for ``symbols`` delivered to plugins and signals.

    Use ``async with OrderFlow(...)`` or ``await flow.start()`` / ``await flow.stop()``.
    ``start()`` returns once the tasks run; it does not wait for a connection. ``feed``: a
    ``RedisSource`` (or its ``redis://`` URL) reads what collectors wrote to Redis instead of Binance
    (``source=`` is its old name, deprecated).
    ``resume``: per symbol, the last id already handled elsewhere (a collector's newest in Redis):
    delivery goes on after it, the hole backfilled (a checkpoint wins over it).
    ``reader``: the frame reader, ``"fast"`` or ``"websockets"`` (``connector.reader``; ``transport=`` is
    its old name, deprecated).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        market: Market = "spot",
        ws_url: str | None = None,
        rest_url: str | None = None,
        ca_file: str | None = None,
        reader: str = "fast",
        plugins: PluginManager | Sequence[object] | None = None,
        timeouts: Timeouts | None = None,
        reconnect: Reconnect | None = None,
        limits: Limits | None = None,
        sequencing: Sequencing | None = None,
        flow: Flow | None = None,
        reporting: Reporting | None = None,
        feed: Any = None,
        resume: Mapping[str, int] | None = None,
        transport: str | None = None,
        source: Any = None,
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
        self.settings: Settings | None = None  # from_settings() keeps them here, for on_startup
        # One verifying context for WebSocket and REST; a bad ca_file fails here, at construction.
        self.ssl_context = client_context(ca_file)
        # A list of plugins (modules or objects) gets a fresh manager; anything else is refused here, at once.
        self.plugins = plugin_manager(plugins)
        t = self.timeouts = timeouts or Timeouts()
        r = self.reconnect = reconnect or Reconnect()
        lim = self.limits = limits or Limits()
        q = self.sequencing = sequencing or Sequencing()
        f = self.flow = flow or Flow()
        rep = self.reporting = reporting or Reporting()
        if transport is not None:
            warnings.warn("OrderFlow(transport=...) is now OrderFlow(reader=...); transport= goes in the next release",
                          DeprecationWarning, stacklevel=2)
            reader = transport
        if reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
        self.reader = reader  # the frame reader: "fast" or "websockets" (wsconnection.py)
        limit = _STREAM_LIMIT[market]
        self.streams_per_connection = min(lim.streams_per_connection or limit, limit)
        self.dispatcher = Dispatcher(self.plugins, self, slow_hook_ms=rep.slow_hook_ms,
                                     report_interval=rep.report_interval, async_queue_size=lim.async_queue_size)
        # A RedisSource (or its redis:// URL) replaces Binance: no connections, no REST (redisbus/source.py).
        if source is not None:
            warnings.warn("OrderFlow(source=...) is now OrderFlow(feed=...); source= goes in the next release",
                          DeprecationWarning, stacklevel=2)
            feed = source
        self.feed = as_source(feed)
        if self.feed is not None:
            q = self.sequencing = dataclasses.replace(q, backfill=False)
        # Always built, even with backfill off: REST's newest ids tell a quiet market from a silent
        # stream. None (replay, a Redis source) means no REST at all.
        self.backfiller: Backfiller | None = None if self.feed is not None else Backfiller(
            self.rest_url, market, timeout=t.rest, retries=lim.rest_retries,
            weight_per_minute=lim.rest_weight_per_minute, verify=self.ssl_context)
        # A checkpoint (read here, so a corrupt one fails at construction) wins over start_from_id.
        checkpoint = Checkpoint(q.checkpoint_path, market=market, interval=q.checkpoint_interval, clock=loop_time) \
            if q.checkpoint_path else None
        resume_at = checkpoint.load(self.symbols) if checkpoint is not None else {}
        self._checkpointer = Checkpointer(checkpoint, resume_at, self._checkpoint_failed,
                                          report_interval=rep.report_interval) if checkpoint is not None else None
        sink = CallSink(self.dispatcher.emitter("on_trade", "trade"), self.dispatcher.emitter("on_metric", "metric"),
                        self._emit)
        self.pipeline = Pipeline(self.symbols, market, sink, sequencing=q, limits=lim, flow=f, timeouts=t,
                                 resume={**(resume or {}), **{s: r.last_id for s, r in resume_at.items()}},
                                 checkpointer=self._checkpointer, clock=loop_time,
                                 report_interval=rep.report_interval)
        # The one interpreter of the pipeline's actions; every input goes through it (see driver.py).
        self.driver = Driver(self.pipeline, backfiller=self.backfiller, spawn=self._spawn, rotate=self._rotate,
                             wake=self._wake, emit=self._emit)
        self.engines = self.pipeline.engines
        self.counters = self.pipeline.counters  # one dict: the pipeline's counts and the shell's
        self.counters.update(dict.fromkeys(("reconnects", "stalls", "rotations", "loop_blocks"), 0))
        self.watchdog: LoopWatchdog | None = None
        # Each symbol's exchangeInfo status once REST told it ("unknown": not listed); empty until then.
        self.listed: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.life = Life()
        # The parts, each given what it uses. With a Redis source there are no shards (no connections).
        self.shards = ShardSupervision(
            self.symbols if self.feed is None else (), self.streams_per_connection, ws_url=self.ws_url,
            reader=reader, ssl_context=self.ssl_context, timeouts=t, reconnect=r, limits=lim, reporting=rep,
            driver=self.driver, counters=self.counters, emit=self._emit, spawn=self._spawn,
            running=lambda: self.life.running, quiet=QuietAtConnect(self.driver, self.backfiller, t, self.listed),
            rest=self.backfiller is not None)
        self.silence = SilenceWatch(self.shards.shards, self.driver, self.backfiller, t, q, spawn=self._spawn)
        dispatcher = self.dispatcher
        self.views = FlowViews(
            self.pipeline, self.counters, life=self.life, connections=self.shards, feed=self.feed,
            hook_counts=lambda: {"plugin_errors": dispatcher.plugin_errors, "slow_hooks": dispatcher.slow_calls},
            listed=self.listed, loop_lag=lambda: self.watchdog.lag if self.watchdog is not None else None)

    @property
    def source(self) -> Any:
        """The Redis feed's old name (deprecated): :attr:`feed`."""
        warnings.warn("OrderFlow.source is now OrderFlow.feed", DeprecationWarning, stacklevel=2)
        return self.feed

    @property
    def transport(self) -> str:
        """The frame reader's old name (deprecated): :attr:`reader`."""
        warnings.warn("OrderFlow.transport is now OrderFlow.reader", DeprecationWarning, stacklevel=2)
        return self.reader

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, plugins: PluginManager | Sequence[object] | None = None,
        **overrides: Any
    ) -> OrderFlow:
        """Build from validated settings (loaded when not given); keyword ``overrides`` win.

        ``plugins`` (a manager, or a list of modules or objects) replaces the plugins the
        ``[plugins]`` settings would load.
        """
        settings = settings if settings is not None else load_settings()
        c = settings.connector
        endpoints = settings.endpoints[settings.market]
        kwargs: dict[str, Any] = dict(
            market=settings.market, ws_url=c.ws_url or endpoints.ws_url, rest_url=c.rest_url or endpoints.rest_url,
            ca_file=c.ca_file or None, reader=c.reader,
            timeouts=from_table(Timeouts, settings.timeouts), reconnect=from_table(Reconnect, settings.reconnect),
            limits=from_table(Limits, settings.limits), sequencing=from_table(Sequencing, settings.sequencing),
            flow=from_table(Flow, settings.flow), reporting=from_table(Reporting, settings.reporting),
        )
        symbols = overrides.pop("symbols", settings.symbols)
        kwargs.update(overrides)
        if plugins is None:
            plugins = plugins_from_settings(settings)
        flow = cls(symbols, plugins=plugins, **kwargs)
        flow.settings = settings.as_run_by(flow)  # on_startup (and its log) names what really streams
        return flow

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
        if self.life.state != "new":
            raise OrderFlowError(f"OrderFlow.start() called on a stream that is {self.life.state}; "
                                 "call stop() and create a new OrderFlow to start again")
        listing = await self._first_listing()
        if self.feed is not None:  # a refused password raises here; a server that is down is retried
            await self.feed.open(self)
        self.life.state = "running"
        self.life.started_at = loop.time()
        # Hooks are timed on the loop's clock (virtual in the simulation). asyncio's own loop.time() is
        # time.monotonic(): called directly it costs per trade what perf_counter did.
        self.dispatcher.clock = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        self.dispatcher.real_time = not getattr(loop, "virtual_time", False)
        if self.reporting.loop_block_threshold > 0:
            self.watchdog = LoopWatchdog(loop, self._loop_blocked, threshold=self.reporting.loop_block_threshold)
            self.watchdog.start()
        for error in self.plugins.load_errors:
            self._emit("on_error", error=error, where="plugins")
        self._emit("on_startup", settings=self.settings if self.settings is not None else Settings.defaults_for(self))
        if listing is not None:
            self._listed(listing)
        elif self.backfiller is not None:
            self._spawn(self._listing_later(), "orderflow symbol check")
        # A checkpoint's hole older than a day is filled from the archive when one is configured (issue #27).
        hole = self._checkpointer.checkpoint.hole_since() \
            if self._checkpointer is not None and self.sequencing.archive_url else None
        if (self.sequencing.since or hole is not None) and self.feed is None:  # archive days first, then live
            try:
                from .history.warmup import warm_up
            except ModuleNotFoundError as exc:
                raise OrderFlowError(f"Sequencing(since=...) needs {exc.name}: pip install "
                                     "'orderflow-plugin[history]'") from exc
            await warm_up(self, resume_from=hole)
        if self.feed is not None:
            self._spawn(self.feed.run(), "orderflow redis source")
        self.shards.start()
        self._spawn(self._tick(), "orderflow ticker")
        logger.info("streaming %s from %s in %d connection(s); hot path %s", ", ".join(self.symbols),
                    self.feed or self.ws_url, len(self.shards) or 1, hot_path())

    # Symbols checked against exchangeInfo: Binance subscribes a typo without a word, then sends nothing

    async def _first_listing(self) -> Listing | None:
        """At start, one exchangeInfo request within ``timeouts.rest``: UnknownSymbol for a symbol not listed.

        None when REST cannot answer now (or there is none: a Redis source, a replay): the stream starts all the
        same and :meth:`_listing_later` asks again until it does.
        """
        if self.backfiller is None:
            return None
        try:
            listing = await self._ask_listing()
        except StreamError as exc:
            logger.warning("%s; streaming without it, the symbols are checked once REST answers", exc)
            return None
        unknown = listing.unknown(self.symbols)
        if unknown is not None:  # nothing started yet: only the REST client to close
            self.life.state = "stopped"
            await self.backfiller.aclose()
            raise unknown
        return listing

    async def _listing_later(self) -> None:
        """Ask exchangeInfo again with the reconnect backoff until REST answers, then report what it says."""
        r = self.reconnect
        delay = r.backoff_initial
        while True:
            await asyncio.sleep(random.uniform(delay / 2, delay))
            try:
                listing = await self._ask_listing()
            except StreamError as exc:
                logger.debug("%s; asking again", exc)
                delay = min(r.backoff_max, delay * r.backoff_factor)
                continue
            self._listed(listing)
            return

    async def _ask_listing(self) -> Listing:
        """One exchangeInfo request on the backfill's client; its weight counts in the backfill's budget."""
        assert self.backfiller is not None
        listing = await fetch_listing(self.backfiller.client, self.rest_url, self.market, timeout=self.timeouts.rest)
        self.backfiller.spent(EXCHANGE_INFO_WEIGHT[self.market])
        return listing

    def _listed(self, listing: Listing) -> None:
        """Note each symbol's status; report those not TRADING, and (found late) those not listed, which stop.

        A symbol found unknown after start is an ``on_error`` with UnknownSymbol, and a connection serving only
        unknown symbols is closed for good: the others stream on (see docs/configuration.md).
        """
        self.listed.update({s: listing.statuses.get(s, "unknown") for s in self.symbols})
        for error in listing.not_trading(self.symbols):
            logger.warning("%s", error)
            self._emit("on_error", error=error, where="symbols")
        unknown = listing.unknown(self.symbols)
        if unknown is None:
            logger.info("symbols checked against exchangeInfo: %s", ", ".join(
                f"{s} {status}" for s, status in self.listed.items()))
            return
        logger.error("%s; found after start (REST could not tell before): not streamed", unknown)
        self._emit("on_error", error=unknown, where="symbols")
        self.shards.close_unlisted(unknown.symbols)

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
        if self.life.state in ("new", "stopped"):
            self.life.state = "stopped"
            return
        self._bind_loop("stop")
        self.life.state = "stopping"
        try:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(c.close(1000, "client stopped", self.timeouts.close)
                                   for c in list(self.shards.live)), return_exceptions=True)
            if self.backfiller is not None:
                await self.backfiller.aclose()
            if self.feed is not None:
                await self.feed.aclose()
            if self._checkpointer is not None:
                await self._checkpointer.close()
        finally:
            self.shards.stop()
            self.life.state = "stopped"
            if self.watchdog is not None:
                self.watchdog.stop()
        for engine in self.engines.values():  # the final state, for dashboards and recorders
            if engine.trades:
                self.pipeline.metric(engine.snapshot())
        self._emit("on_shutdown", summary=self.summary())
        await self.dispatcher.aclose(timeout=0.5)
        logger.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in self.summary().items()))

    # The driver's world: what it asks of the stream

    def _rotate(self, connection: Hashable, reason: str) -> None:
        """Replace ``connection`` make-before-break (the server announced ``reason``): its shard's machine decides."""
        self.shards.rotate(connection)

    def _wake(self, when: float) -> None:
        """Tick the pipeline at ``when`` (a reorder or pause deadline nearer than the regular tick)."""
        assert self._loop is not None
        self._loop.call_later(max(0.0, when - loop_time()), self._tick_once, False)

    def _checkpoint_failed(self, exc: CheckpointError) -> None:
        """Trades go on; say that a restart is no longer exact until a write succeeds again."""
        logger.error("%s; trades go on, but a restart may now repeat trades without source=\"replay\"", exc)
        self._emit("on_error", error=exc, where="checkpoint")

    async def _tick(self) -> None:
        """Drive the pipeline's clock (gaps, bars, snapshots, checkpoints) and look for silent feeds."""
        while True:
            await asyncio.sleep(self.pipeline.tick_interval)
            self._tick_once()

    def _tick_once(self, look: bool = True) -> None:
        """One tick of the pipeline, after telling it what each connection last read; ``look``: and a look
        for silent feeds (the regular tick; a WakeAt, for a reorder or pause deadline, only ticks)."""
        if not self.life.running:
            return
        now = loop_time()
        try:
            if self.timeouts.ping_interval > 0:  # without pings a quiet connection reads nothing to go by
                for shard in self.shards.shards:
                    connection = shard.machine.connection
                    if connection is not None and shard.machine.state == "streaming":
                        self.pipeline.heard(shard.symbols, connection.last_received)
            self.driver.tick(now)
            if look:
                self.silence.check(now)
        except Exception as exc:  # a bug here must not end the ticker: report it and look again
            logger.error("stream ticker failed; it goes on", exc_info=exc)
            self._emit("on_error", error=exc, where="task:orderflow ticker")

    def _loop_blocked(self, blocked_for: float, stack: str) -> None:
        self.counters["loop_blocks"] += 1
        self._emit("on_loop_blocked", blocked_for=blocked_for, stack=stack)

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

    # What the host reads (views.py)

    def summary(self) -> dict[str, Any]:
        """Counters of the run so far."""
        return self.views.summary()

    def health(self) -> dict[str, Any]:
        """A snapshot: state, each connection's stage and for how long, last trade age per symbol, counters."""
        return self.views.health()

    def latest(self, symbol: str) -> dict[str, Any]:
        """The newest trade, snapshot, whale and closed bar per window of ``symbol`` (safe from any thread)."""
        return self.views.latest(symbol)

    def history(self, symbol: str, since: int | None = None) -> list[Trade]:
        """Delivered trades of ``symbol`` still in the bounded history, from trade time ``since`` (ms)."""
        return self.views.history(symbol, since)

    def silence_deadline(self, symbol: str) -> float:
        """Seconds without a trade after which ``symbol``'s feed is checked: learned from its own recent gaps."""
        return self.silence.silence_deadline(symbol)
