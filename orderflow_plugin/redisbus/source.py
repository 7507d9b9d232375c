"""The feed read from Redis Streams instead of Binance: ``OrderFlow(symbols, feed=RedisSource(url))``.

Every entry goes through the stream's own pipeline (decode, sequencing, engine, hooks, signals), so
a bot sees the same trades, bars and gap reports as one connected to Binance. Two ways to read:

- **fan-out** (the default): every bot reads everything with ``XREAD``. Where it starts: after the
  checkpoint's last id (``Sequencing.checkpoint_path``), else after ``start_from_id - 1``, else at
  ``start``: ``"live"`` (what is written from now on) or ``"first"`` (all Redis still holds). A
  hole in the stream (trimmed by retention, or missing from every collector) is a gap report with
  the exact ids; nothing is fetched from Binance.
- **work-sharing**: ``group`` and ``consumer`` names: ``XREADGROUP``, each trade to one consumer
  of the group, acknowledged after its hooks ran. A restarted consumer first gets what it had not
  acknowledged, and entries a dead consumer held for ``claim_idle`` seconds are claimed; both come
  with ``source="replay"`` (a hook may have seen them), as after a checkpoint restart. A consumer's
  share has holes by design: it is delivered as it comes, without gap checks.

With ``signals=True`` (fan-out only) it also reads the footprint signals the collectors wrote
(``signals`` and ``signals:{window}`` for the bot's ``flow.signal_windows``) and delivers them as
the stream's own ``on_metric``: the collector's exact values, CVD-based ones included (a bot
computing its own counts CVD from where it started). The bot's ``flow.signals`` must then be off,
or each signal would come twice. Signals and trades are separate streams read side by side: a
signal is not placed among the trades exactly where the collector emitted it.

Redis faults (refused, reset, timeout, a server loading its data) are named in the log and retried
forever with backoff; a bad URL or a refused password fails ``start()`` in one line. A source that
cannot reach Redis at all says so as an ``on_error`` (then ``on_disconnected`` only for a connection
it had), and its part of ``summary()`` keeps ``connects`` at 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Literal, Protocol

import msgspec

from ..decode import Decoder
from ..dispatch import Dispatcher
from ..driver import Driver
from ..loopclock import loop_time
from ..models import Market, Trade
from ..options import Flow, Sequencing
from ..pipeline import Pipeline
from .client import (
    cancelled,
    check,
    connect,
    describe,
    is_cluster,
    is_transient,
    newest_entry,
    redacted,
    redis_errors,
    refuse_legacy,
)
from .keys import entry_id, signals_key, trade_id, trades_key
from .metrics import signal_of
from .url import RedisFeedError

__all__ = ["FeedHost", "RedisSource"]


class FeedHost(Protocol):
    """What a RedisSource feeds (an OrderFlow): the pipeline its entries go into, and the hooks it reports to."""

    symbols: tuple[str, ...]
    market: Market
    sequencing: Sequencing
    pipeline: Pipeline
    driver: Driver
    flow: Flow
    counters: dict[str, int]
    dispatcher: Dispatcher

logger = logging.getLogger("orderflow_plugin.redis")

_MAX_DELAY = 5.0  # seconds between tries, at most


class RedisSource:
    """Where an :class:`~orderflow_plugin.OrderFlow` reads its trades when they come from collectors via Redis."""

    def __init__(self, url: str, *, group: str | None = None, consumer: str | None = None,
                 start: Literal["live", "first"] = "live", block: float = 0.5, count: int = 1000,
                 claim_idle: float = 30.0, timeout: float = 5.0, signals: bool = False) -> None:
        if (group is None) != (consumer is None):
            raise ValueError("a consumer group needs both group and consumer names")
        if signals and group is not None:
            raise ValueError("signals=True reads every signal (fan-out): a consumer group shares trades only")
        if start not in ("live", "first"):
            raise ValueError(f"start must be 'live' or 'first', got {start!r}")
        self.url = url
        self.group, self.consumer, self.start = group, consumer, start
        self.block, self.count, self.claim_idle = block, count, claim_idle
        self.redis = connect(url, timeout=timeout + block)  # a read blocks for up to `block`
        self._cluster = is_cluster(self.redis)
        self.state = "new"
        self.last_error: str | None = None
        self.reads = 0
        self.connects = 0  # times it began reading: 0 at the end means it never reached Redis
        self.failures = 0  # failed tries since it last read
        self._opening: BaseException | None = None  # open()'s failure, reported by run() after on_startup
        self._flow: FeedHost | None = None
        self._positions: dict[str, str] = {}  # stream key -> the id read last (fan-out)
        self._acked: dict[str, str] = {}  # stream key -> the newest id this consumer acknowledged (group)
        self._symbols: dict[str, str] = {}  # stream key -> symbol
        self.signals = signals
        self._signal_keys: set[str] = set()  # the signal streams read (signals=True)
        self._running = asyncio.Event()  # cleared while the pipeline asks us to pause
        self._decode: Any = None
        self._next_claim = 0.0

    def __repr__(self) -> str:
        return f"RedisSource({redacted(self.url)!r})"

    # The connection-like surface the pipeline's actions address (carried out by driver.Driver)

    def first_trade(self) -> None:
        """The pipeline delivered our first trade: nothing to wait for here."""

    def subscribed(self, reply_id: int | None, error: Any) -> None:
        """Never sent: Redis has no subscription replies."""

    def pause(self) -> None:
        """Stop reading until :meth:`resume` (a hole holds many trades back)."""
        self._running.clear()

    def resume(self) -> None:
        """Read again."""
        self._running.set()

    # Lifecycle, run by OrderFlow

    async def open(self, flow: FeedHost) -> None:
        """Bind to ``flow``; a refused password fails here, a server that is down is retried by :meth:`run`."""
        if self.group and flow.sequencing.checkpoint_path:
            await self.redis.aclose()
            raise RedisFeedError(f"consumer group {self.group!r} keeps its own place in Redis (XACK); "
                                 "sequencing.checkpoint_path is for fan-out bots: give one or the other")
        self._flow = flow
        self._decode = Decoder(flow.market).decode
        self._symbols = {trades_key(flow.market, s): s for s in flow.symbols}
        if self.signals:
            options = flow.flow
            if options.enabled and options.signals:
                await self.redis.aclose()
                raise RedisFeedError("RedisSource(signals=True) delivers the collectors' signals: set flow.signals "
                                     "= false (ORDERFLOW_FLOW__SIGNALS=false), or each signal comes twice")
            self._signal_keys = {signals_key(flow.market, s, w) for s in flow.symbols
                                 for w in (None, *options.signal_windows)}
        for key, symbol in self._symbols.items():
            after = flow.pipeline.sequencers[symbol].last_delivered
            if after is not None:
                self._positions[key] = entry_id(after)
        self._running.set()
        try:
            await check(self.redis, self.url)
            await refuse_legacy(self.redis, self.url, list(self._symbols))
        except Exception as exc:
            if not is_transient(exc):
                await self.aclose()  # the stream never starts: nothing else would close the pool
                raise
            self.state, self._opening = "retrying", exc  # said by run(), after on_startup: events in order

    async def run(self) -> None:
        """Read until cancelled; every fault is named and retried with backoff."""
        delay = 0.05
        failure, self._opening = self._opening, None
        while not cancelled():  # redis-py may finish a blocking read it was cancelled in: look, then stop
            if failure is not None:
                self._failed(failure)
                failure = None
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _MAX_DELAY)
            try:
                if self.state != "reading":
                    await self._connected()
                await self._running.wait()
                await (self._read_group() if self.group else self._read())
                delay = 0.05
            except Exception as exc:
                if _group_lost(exc) and not cancelled():
                    # A failover promoted a replica that never received the group (or the key was deleted): make
                    # it again where this consumer's acknowledgements end, so nothing is skipped or repeated.
                    logger.warning("redis %s: consumer group %r is gone (%s); creating it again after %s",
                                   redacted(self.url), self.group, describe(exc),
                                   ", ".join(f"{k} {v}" for k, v in self._acked.items()) or "nothing acknowledged")
                    self.state = "new"
                    continue
                if not is_transient(exc) or cancelled():
                    raise
                failure = exc
        raise asyncio.CancelledError

    async def aclose(self) -> None:
        """Close the connection pool."""
        self.state = "stopped"
        await self.redis.aclose()

    def summary(self) -> dict[str, Any]:
        """Its part of ``OrderFlow.summary()``: ``connects`` 0 says it never reached Redis, ``last_error`` why,
        ``failed_tries`` how often it tried since it last read."""
        return {"url": redacted(self.url), "connects": self.connects, "failed_tries": self.failures,
                "reads": self.reads, "last_error": self.last_error}

    def health(self) -> dict[str, Any]:
        """This source's entry in ``OrderFlow.health()["connections"]``."""
        return {"source": redacted(self.url), "symbols": list(self._symbols.values()), "state": self.state,
                "group": self.group, "consumer": self.consumer, "reads": self.reads, "last_error": self.last_error}

    # Reading

    async def _connected(self) -> None:
        assert self._flow is not None
        if self.group:
            for key in self._symbols:
                try:
                    start = self._acked.get(key) or ("0" if self.start == "first" else "$")
                    await self.redis.xgroup_create(key, self.group, id=start, mkstream=True)
                except redis_errors.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                self._positions[key] = "0"  # first what this consumer had not acknowledged, then new entries
        else:
            for key in [*self._symbols, *sorted(self._signal_keys)]:
                if key not in self._positions:
                    newest = await newest_entry(self.redis, key) if self.start == "live" else None
                    self._positions[key] = newest or "0-0"
        if self.last_error is not None:
            logger.info("redis %s: %s", redacted(self.url),
                        "reading again" if self.connects else f"connected after {self.failures} failed tries")
        self.state = "reading"
        self.connects += 1
        self.failures = 0
        self._flow.dispatcher.emit("on_connected", url=redacted(self.url), stage_timings={})

    async def _read(self) -> None:
        assert self._flow is not None
        reply = await self._each_slot(lambda streams: self.redis.xread(streams, count=self.count,
                                                                        block=int(self.block * 1000)))
        receive, now = self._flow.driver.receive, loop_time()
        for key, entries in reply or ():
            name = key.decode()
            if name in self._signal_keys:
                self._signals(entries)
            else:
                for _entry, fields in entries:
                    receive(self, fields.get(b"d", b""), now)
            self._positions[name] = entries[-1][0].decode()
            self.reads += len(entries)

    def _signals(self, entries: list[Any]) -> None:
        """Deliver the collectors' signals; an entry that is not one is logged and skipped (it holds no trade)."""
        assert self._flow is not None
        metric = self._flow.pipeline.metric
        for entry, fields in entries:
            try:
                signal = signal_of(fields)
            except ValueError as exc:  # msgspec's DecodeError/ValidationError are ValueErrors
                logger.warning("redis %s: entry %s is not a signal this version reads: %s", redacted(self.url),
                               entry.decode(), exc)
                continue
            metric(signal)

    async def _read_group(self) -> None:
        assert self._flow is not None and self.group is not None and self.consumer is not None
        group, consumer = self.group, self.consumer
        reply = await self._each_slot(lambda streams: self.redis.xreadgroup(group, consumer, streams, count=self.count,
                                                                             block=int(self.block * 1000)))
        for key, entries in reply or ():
            name = key.decode()
            if self._positions[name] != ">":  # our own unacknowledged entries, from before a restart
                if not entries:
                    self._positions[name] = ">"
                    continue
                self._positions[name] = entries[-1][0].decode()
            await self._deliver_group(name, entries, replay=self._positions[name] != ">")
        if loop_time() >= self._next_claim:
            await self._claim()
            self._next_claim = loop_time() + self.claim_idle / 4

    async def _each_slot(self, read: Any) -> list[Any]:
        """``read`` our streams: in one command on one server; on a Redis Cluster, where one command reads the keys
        of one slot (each symbol is a slot of its own), one command per stream, all under way at once."""
        if not self._cluster:
            return await read(self._positions) or []
        replies = await asyncio.gather(*(read({key: position}) for key, position in self._positions.items()))
        return [entry for reply in replies for entry in reply or ()]

    async def _claim(self) -> None:
        """Take over what a dead consumer held for ``claim_idle`` seconds."""
        assert self.group is not None and self.consumer is not None
        for key in self._symbols:
            reply = await self.redis.xautoclaim(key, self.group, self.consumer, int(self.claim_idle * 1000),
                                                "0-0", count=self.count)
            entries = [entry for entry in reply[1] if entry[1]]  # entries trimmed meanwhile come back empty
            self._trimmed(key, [entry for entry, fields in reply[1] if not fields]
                          + (reply[2] if len(reply) > 2 else []))  # Redis 7 lists them apart, already unlisted
            if entries:
                logger.info("redis %s: claimed %d entries of %s a dead consumer held", redacted(self.url),
                            len(entries), key)
                await self._deliver_group(key, entries, replay=True)

    async def _deliver_group(self, key: str, entries: list[Any], *, replay: bool) -> None:
        assert self._flow is not None
        driver, now = self._flow.driver, loop_time()
        self._trimmed(key, [entry for entry, fields in entries if not fields])
        for _entry, fields in entries:
            if not fields:
                continue
            try:
                trade = self._decode(fields.get(b"d", b""))
            except Exception:
                driver.receive(self, fields.get(b"d", b""), now)  # reported as a bad frame, once, the usual way
                continue
            if type(trade) is Trade:
                driver.deliver_as_is(msgspec.structs.replace(trade, source="replay") if replay else trade, now)
        if entries:
            await self.redis.xack(key, self.group, *(entry for entry, _fields in entries))
            self.reads += len(entries)
            newest = max(entries, key=lambda entry: trade_id(entry[0]))[0]
            newest = newest.decode() if isinstance(newest, bytes) else str(newest)
            if trade_id(newest) > trade_id(self._acked.get(key, "0-0")):
                self._acked[key] = newest

    def _trimmed(self, key: str, entries: list[Any]) -> None:
        """Entries this group held that retention trimmed before they were delivered: gaps, with their ids."""
        if not entries:
            return
        assert self._flow is not None
        symbol = self._symbols[key]
        numbers = sorted(trade_id(entry) for entry in entries)
        first = last = numbers[0]
        for number in [*numbers[1:], None]:
            if number is not None and number == last + 1:
                last = number
                continue
            logger.warning("redis %s: %s trades %d..%d were trimmed before this group delivered them",
                           redacted(self.url), symbol, first, last)
            self._flow.counters["gaps"] += 1
            self._flow.dispatcher.emit("on_gap", symbol=symbol, first_missing=first, last_missing=last)
            if number is not None:
                first = last = number

    def _failed(self, exc: BaseException) -> None:
        self.state = "retrying"
        self.failures += 1
        text = describe(exc)
        if not self.connects and self.failures == 1:  # never reached: an error, not a disconnection
            error = RedisFeedError(f"cannot connect to Redis {redacted(self.url)}: {text}; retrying with backoff "
                                   f"(at most {_MAX_DELAY:g} s apart)")
            error.__cause__ = exc
            logger.warning("%s", error)
            if self._flow is not None:
                self._flow.dispatcher.emit("on_error", error=error, where="redis")
        elif text != self.last_error:
            logger.warning("redis %s: %s; retrying", redacted(self.url), text)
            if self._flow is not None and self.connects:
                self._flow.dispatcher.emit("on_disconnected", url=redacted(self.url), code=None, reason=text, error=exc)
        self.last_error = text


def _group_lost(exc: BaseException) -> bool:
    """Redis no longer knows our consumer group (NOGROUP): a failover lost it, or somebody deleted it."""
    return isinstance(exc, redis_errors.ResponseError) and str(exc).startswith("NOGROUP")
