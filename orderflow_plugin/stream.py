"""OrderFlow: the asyncio shell that keeps aggTrade streams flowing and says why when they don't.

The decisions live in two sans-I/O cores: :mod:`.pipeline` (frames to delivered trades) and
:mod:`.supervisor` (each shard's connection lifecycle). This shell builds them from the option
groups, and its parts carry out what they ask: :mod:`.shards` (connections), :mod:`.delivery`
(frames, backfill, ticks) and :mod:`.silence` (silent streams). See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .backfill import Backfiller
from .checkpoint import Checkpoint
from .checkpointer import Checkpointer
from .config import Settings, load_settings
from .delivery import CallSink, PipelineDriver
from .diagnostics import LoopWatchdog
from .dispatch import Dispatcher
from .errors import OrderFlowError, StreamError
from .hotpath import hot_path
from .listing import EXCHANGE_INFO_WEIGHT, Listing, fetch_listing
from .loopclock import loop_time
from .models import Market
from .options import Flow, Limits, Reconnect, Reporting, Sequencing, Timeouts, from_table
from .pipeline import Pipeline
from .plugins import PluginManager, plugin_manager, plugins_from_settings
from .redisbus import as_source
from .shards import Shard, ShardSupervision, chunks
from .silence import SilenceWatch
from .supervisor import OpenLimiter
from .symbols import normalize_symbol
from .threaded import FlowThread
from .tls import client_context
from .transport import READERS, WsConnection
from .views import FlowViews

__all__ = ["DEFAULT_ENDPOINTS", "OrderFlow"]

logger = logging.getLogger("orderflow_plugin.stream")

DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    "spot": ("wss://stream.binance.com:9443", "https://api.binance.com"),
    "usdm": ("wss://fstream.binance.com/market", "https://fapi.binance.com"),
}
_STREAM_LIMIT = {"spot": 1024, "usdm": 200}


class OrderFlow(PipelineDriver, ShardSupervision, SilenceWatch, FlowViews):
    """A live, gap-checked aggTrade feed for ``symbols`` delivered to plugins and signals.

    Use ``async with OrderFlow(...)`` or ``await flow.start()`` / ``await flow.stop()``.
    ``start()`` returns once the tasks run; it does not wait for a connection. ``source``: a
    ``RedisSource`` (or its ``redis://`` URL) reads what collectors wrote to Redis instead of Binance.
    ``resume``: per symbol, the last id already handled elsewhere (a collector's newest in Redis):
    delivery goes on after it, the hole backfilled (a checkpoint wins over it).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        market: Market = "spot",
        ws_url: str | None = None,
        rest_url: str | None = None,
        ca_file: str | None = None,
        transport: str = "fast",
        plugins: PluginManager | Sequence[object] | None = None,
        timeouts: Timeouts | None = None,
        reconnect: Reconnect | None = None,
        limits: Limits | None = None,
        sequencing: Sequencing | None = None,
        flow: Flow | None = None,
        reporting: Reporting | None = None,
        source: Any = None,
        resume: Mapping[str, int] | None = None,
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
        if transport not in READERS:
            raise ValueError(f"transport must be one of {', '.join(READERS)}, got {transport!r}")
        self.transport = transport
        limit = _STREAM_LIMIT[market]
        self.streams_per_connection = min(lim.streams_per_connection or limit, limit)
        self.dispatcher = Dispatcher(self.plugins, self, slow_hook_ms=rep.slow_hook_ms,
                                     report_interval=rep.report_interval, async_queue_size=lim.async_queue_size)
        # A RedisSource (or its redis:// URL) replaces Binance: no connections, no REST (redisbus/source.py).
        self.source = as_source(source)
        if self.source is not None:
            q = self.sequencing = dataclasses.replace(q, backfill=False)
        # Always built, even with backfill off: REST's newest ids tell a quiet market from a silent
        # stream. None (replay, a Redis source) means no REST at all.
        self.backfiller: Backfiller | None = None if self.source is not None else Backfiller(
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
        self.pipeline = Pipeline(self.symbols, market, sink, self._act, sequencing=q, limits=lim, flow=f, timeouts=t,
                                 resume={**(resume or {}), **{s: r.last_id for s, r in resume_at.items()}},
                                 checkpointer=self._checkpointer, clock=loop_time,
                                 report_interval=rep.report_interval)
        self.engines = self.pipeline.engines
        self.counters = self.pipeline.counters  # one dict: the pipeline's counts and the shell's
        self.counters.update(dict.fromkeys(("reconnects", "stalls", "rotations", "loop_blocks"), 0))
        self._fills: dict[str, asyncio.Task[None]] = {}  # symbol -> its backfill request under way
        self.watchdog: LoopWatchdog | None = None
        self._quiet_until: dict[str | int, float] = {}  # symbol or shard number -> no silence check before
        self._rest_newest: dict[str, tuple[int, float]] = {}  # symbol -> REST's newest id at a look, last trade then
        self._limiter = OpenLimiter(r.connections_per_5min)
        self._shards = [Shard(i + 1, group, self._machine(i + 1, group)) for i, group in
                        enumerate(chunks(self.symbols, self.streams_per_connection))] if self.source is None else []
        # Each symbol's exchangeInfo status once REST told it ("unknown": not listed); empty until then.
        self.listed: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._live: set[WsConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"
        self._started_at = 0.0

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
            ca_file=c.ca_file or None, transport=c.transport,
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
        if self._state != "new":
            raise OrderFlowError(f"OrderFlow.start() called on a stream that is {self._state}; "
                                 "call stop() and create a new OrderFlow to start again")
        listing = await self._first_listing()
        if self.source is not None:  # a refused password raises here; a server that is down is retried
            await self.source.open(self)
        self._state = "running"
        self._started_at = loop.time()
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
        if self.sequencing.since and self.source is None:  # archive days first, then live (history/warmup.py)
            try:
                from .history.warmup import warm_up
            except ModuleNotFoundError as exc:
                raise OrderFlowError(f"Sequencing(since=...) needs {exc.name}: pip install "
                                     "'orderflow-plugin[history]'") from exc
            await warm_up(self)
        if self.source is not None:
            self._spawn(self.source.run(), "orderflow redis source")
        for shard in self._shards:
            shard.task = self._spawn(self._supervise(shard), f"orderflow shard {shard.number}")
        if self.reporting.stage_warning > 0:
            self._spawn(self._watch_stages(), "orderflow stage monitor")
        self._spawn(self._tick(), "orderflow ticker")
        logger.info("streaming %s from %s in %d connection(s); hot path %s", ", ".join(self.symbols),
                    self.source or self.ws_url, len(self._shards) or 1, hot_path())

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
            self._state = "stopped"
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
        for shard in self._shards:
            if set(shard.symbols) <= set(unknown.symbols):
                self._close_shard(shard, StreamError(f"{', '.join(shard.symbols)}: not listed on Binance; "
                                                     "connection closed", url=self.ws_url, stage="symbols"))

    def _close_shard(self, shard: Shard, error: StreamError) -> None:
        """End a shard for good: its machine, its task, its connection attempts and connections."""
        shard.machine.stop()
        shard.machine.last_error = error
        for task in [*shard.opens, *([shard.task] if shard.task is not None else [])]:
            task.cancel()
        for connection in list(shard.live):
            connection.fail(error)

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
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(c.close(1000, "client stopped", self.timeouts.close) for c in list(self._live)),
                                 return_exceptions=True)
            if self.backfiller is not None:
                await self.backfiller.aclose()
            if self.source is not None:
                await self.source.aclose()
            if self._checkpointer is not None:
                await self._checkpointer.close()
        finally:
            for shard in self._shards:
                shard.machine.stop()
            self._state = "stopped"
            if self.watchdog is not None:
                self.watchdog.stop()
        for engine in self.engines.values():  # the final state, for dashboards and recorders
            if engine.trades:
                self.pipeline.metric(engine.snapshot())
        self._emit("on_shutdown", summary=self.summary())
        await self.dispatcher.aclose(timeout=0.5)
        logger.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in self.summary().items()))

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

