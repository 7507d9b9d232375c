"""Redis publisher: every delivered trade and closed bar, whale, footprint signal and gap into Redis Streams.

Settings (``[default.hooks.redis]``): ``enabled`` (default false), ``url``, ``maxlen`` (entries
kept per trade stream, approximately; 0 = all), ``hole_wait`` (seconds a trade waits behind a
hole in Redis for another collector to fill it), ``refill_window`` (trades per symbol kept to
write again when a failover loses what the old primary acknowledged), ``wait_replicas`` and
``wait_timeout`` (``WAIT`` for that many replicas after each round trip of trades; 0 = don't).
``orderflow collect --to URL`` is this plugin with a resume from Redis; see docs/scale-out.md for
the streams and their ids.

The footprint signals go where the bars go: a closed bar's (imbalances, divergence, extremes) in
``signals:{window}`` as ``<bar start>-<k>``, written exactly when its bar is; the others in
``signals`` as ``<trade id>-<k>``, after the trade they followed. Naked POCs are all there, listed
and touched, so a reader meets a POC's listing before its touch. A signal over trades from before
this writer's first one (a partial first second, session or bar) is not written, as the partial
first bar is not: another collector that saw them all writes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ..redisbus.keys import bars_key, entry_id, health_key, signals_key, whales_key
from ..redisbus.metrics import bar_fields, signal_fields, whale_fields
from ..signalmetrics import SIGNAL_KINDS

__all__ = ["RedisPublisher"]

log = logging.getLogger("orderflow_hooks.redis")

_HEALTH_MAXLEN = 10_000


class RedisPublisher:
    """The ``redis`` plugin; also built directly by ``orderflow collect`` with its URL and market."""

    def __init__(self, url: str | None = None, *, market: str | None = None, maxlen: int = 1_000_000,
                 hole_wait: float = 10.0, name: str = "", retry_after: float = 5.0,
                 refill_window: int = 50_000, wait_replicas: int = 0, wait_timeout: float = 1.0) -> None:
        self.url, self.market, self.maxlen, self.hole_wait = url, market, maxlen, hole_wait
        self.refill_window = refill_window
        self.wait_replicas, self.wait_timeout = wait_replicas, wait_timeout
        self.name = name  # which collector wrote a health entry
        self.retry_after = retry_after
        self.writer: Any = None  # a StreamWriter once started
        self.task: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[bool] | None = None
        # Per symbol, the time of the first trade this run wrote: a bar that began before it lacks trades.
        self._first_time: dict[str, int] = {}
        self._first_id: dict[str, int] = {}
        self._last_id: dict[str, int] = {}  # per symbol, the last trade delivered: what follows is keyed by it
        # (symbol, window) -> [bar start, signals of it so far, written?]: the closed bar the next signals are of
        self._bar_signals: dict[tuple[str, str], list[Any]] = {}
        self._trade_signals: dict[str, list[int]] = {}  # symbol -> [trade id, signals after it so far]

    def on_startup(self, settings: Any) -> None:
        table = settings.hooks.redis
        if self.url is None:
            if not table.get("enabled", False):
                return
            self.url = table.url
            self.maxlen = int(table.get("maxlen", self.maxlen))
            self.hole_wait = float(table.get("hole_wait", self.hole_wait))
            self.refill_window = int(table.get("refill_window", self.refill_window))
            self.wait_replicas = int(table.get("wait_replicas", self.wait_replicas))
            self.wait_timeout = float(table.get("wait_timeout", self.wait_timeout))
        from ..redisbus.writer import StreamWriter  # imports redis-py itself, on a thread, when it first runs

        self.market = self.market or settings.market
        self.writer = StreamWriter(self.url, self.market, maxlen=self.maxlen, hole_wait=self.hole_wait,
                                   refill_window=self.refill_window, wait_replicas=self.wait_replicas,
                                   wait_timeout=self.wait_timeout)
        self.task = asyncio.get_running_loop().create_task(self._write(), name="orderflow redis writer")
        log.info("publishing trades and metrics to %s", self.writer.url)

    async def _write(self) -> None:
        """The writer's task. A fault its own retries don't cover (a permission taken away, a wrong key type) is
        logged and tried again every ``retry_after`` s: the task never ends while the stream runs (a collector
        exits on ``failure`` instead, so that its supervisor restarts it)."""
        while True:
            try:
                await self.writer.run()
            except Exception as exc:
                log.error("redis writer: %r; %d trades wait in memory, trying again in %.0f s", exc,
                          self.writer.backlog, self.retry_after)
                await asyncio.sleep(self.retry_after)

    def on_trade(self, trade: Any) -> None:
        if self.writer is not None:
            self.writer.add_trade(trade)
            self._last_id[trade.symbol] = trade.id
            if trade.symbol not in self._first_time:
                self._first_time[trade.symbol] = trade.time
                self._first_id[trade.symbol] = trade.id

    def on_metric(self, metric: Any) -> None:
        writer = self.writer
        if writer is None:
            return
        kind = metric.kind
        if kind == "bar":
            written = metric.closed_by not in ("open", "revised") \
                and metric.start >= self._first_time.get(metric.symbol, metric.start)  # not a partial first bar
            if written:
                writer.add_entry(bars_key(self.market, metric.symbol, metric.window), entry_id(metric.start),
                                 bar_fields(metric), self.maxlen)
            if metric.closed_by != "open":  # the signals that follow are this bar's
                self._bar_signals[(metric.symbol, metric.window)] = [metric.start, 0, written]
        elif kind in SIGNAL_KINDS:
            self._signal(metric)
        elif kind == "whale":
            writer.add_entry(whales_key(self.market, metric.symbol), entry_id(metric.trade.id),
                             whale_fields(metric), self.maxlen)

    def _signal(self, signal: Any) -> None:
        symbol = signal.symbol
        window = getattr(signal, "window", None)
        if window is not None:
            batch = self._bar_signals.get((symbol, window))
            if batch is None or batch[0] != signal.start or not batch[2]:
                return  # the bar was not written (partial, or a revision: the first close stands)
            batch[1] += 1
            self.writer.add_entry(signals_key(self.market, symbol, window), f"{batch[0]}-{batch[1]}",
                                  signal_fields(signal), self.maxlen)
            return
        first_time = self._first_time.get(symbol)
        if first_time is None or self._partial(signal, first_time, self._first_id[symbol]):
            return
        last_id = self._last_id[symbol]
        count = self._trade_signals.get(symbol)
        if count is None or count[0] != last_id:
            count = self._trade_signals[symbol] = [last_id, 0]
        count[1] += 1
        self.writer.add_entry(signals_key(self.market, symbol), f"{last_id}-{count[1]}", signal_fields(signal),
                              self.maxlen)

    @staticmethod
    def _partial(signal: Any, first_time: int, first_id: int) -> bool:
        """Whether ``signal`` counts trades from before this writer's first (which it did not see)."""
        if signal.kind == "sweep":
            return bool(signal.first_id <= first_id)  # the run may have begun before
        # tape speed's second, a session's profile or POC, the bar or session of a touched POC
        return bool(signal.start < first_time)

    def _health(self, event: str, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.add_entry(health_key(self.market), "*", {"event": event, "collector": self.name, **fields},
                                  _HEALTH_MAXLEN)

    def on_gap(self, symbol: str, first_missing: int, last_missing: int) -> None:
        self._health("gap", symbol=symbol, first=first_missing, last=last_missing)

    def on_connected(self, url: str) -> None:
        self._health("connected", url=url)

    def on_disconnected(self, url: str, reason: str) -> None:
        self._health("disconnected", url=url, reason=reason)

    def on_stall(self, symbols: tuple[str, ...], silent_for: float) -> None:
        self._health("stall", symbols=",".join(symbols), silent_for=round(silent_for, 3))

    def on_shutdown(self, summary: Mapping[str, Any]) -> None:
        # The stream has stopped: write what is queued, then close, on a task of its own (a hook can't
        # wait). `orderflow collect` awaits it through aclose(); in a bot it ends on its own.
        if self.writer is not None and self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self._close(5.0), name="orderflow redis close")

    @property
    def failure(self) -> BaseException | None:
        """Why the writer can't go on (a fault retrying won't fix, a queue past max_pending), or None."""
        return self.writer.failure if self.writer is not None else None

    async def aclose(self, timeout: float = 5.0) -> bool:
        """Write what is still queued (up to ``timeout`` s), then close; False when something was left."""
        if self.writer is None:
            return True
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self._close(timeout), name="orderflow redis close")
        return await self.closing

    async def _close(self, timeout: float) -> bool:
        writer = self.writer
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        try:
            drained = await writer.drain(timeout)
        finally:  # cancelled too (the loop is ending): the connections are closed, not left to the collector
            await writer.aclose()
        log.info("redis: %s", ", ".join(f"{k} {v}" for k, v in writer.counters.items()))
        if not drained:
            log.error("redis %s: %d trades and entries not written at shutdown; a collector restarted from Redis "
                      "backfills them", writer.url, writer.backlog)
        return drained

