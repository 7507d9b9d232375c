"""``orderflow collect``: one process that streams from Binance and writes the feed into Redis.

It reads each symbol's newest trade id in Redis first and resumes after it, backfilling the hole
over REST, so a collector restarted after a crash (or a second one started beside it) leaves Redis
complete. Any number of collectors may write the same symbols: Redis refuses what is already there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
from typing import Any

from ..bundled.redis_streams import RedisPublisher
from ..config import Settings
from ..options import Sequencing, from_table
from ..stream import OrderFlow
from ..symbols import normalize_symbol
from .client import RedisFeedError, check, connect, describe, is_transient, newest_entry, redacted, refuse_legacy
from .keys import trade_id, trades_key

__all__ = ["collect", "newest_ids"]

logger = logging.getLogger("orderflow_plugin.redis")


async def newest_ids(url: str, market: str, symbols: tuple[str, ...], stop: asyncio.Event) -> dict[str, int] | None:
    """Each symbol's newest trade id in Redis, waiting out a server that is down (None: stopped meanwhile).

    A refused password or a bad URL raises RedisFeedError at once.
    """
    client = connect(url)
    delay = 0.1
    try:
        while not stop.is_set():
            try:
                await check(client, url)
                await refuse_legacy(client, url, [trades_key(market, symbol) for symbol in symbols])
                newest = {symbol: await newest_entry(client, trades_key(market, symbol)) for symbol in symbols}
                return {symbol: trade_id(entry) for symbol, entry in newest.items() if entry is not None}
            except Exception as exc:
                if not is_transient(exc):
                    raise
                logger.warning("redis %s: %s; the collector waits for it to resume where Redis ends",
                               redacted(url), describe(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)
        return None
    finally:
        await client.aclose()


async def collect(settings: Settings, url: str, *, name: str = "", duration: float = 0.0, **overrides: Any) -> int:
    """Stream the settings' symbols (or ``overrides``) into Redis at ``url`` until SIGINT, SIGTERM or ``duration``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration:
        loop.call_later(duration, stop.set)
    table = settings.hooks.redis
    symbols = tuple(dict.fromkeys(normalize_symbol(s) for s in overrides.get("symbols", settings.symbols)))
    market = overrides.get("market", settings.market)
    resume = await newest_ids(url, market, symbols, stop)
    if resume is None:
        return 0
    logger.info("collecting %s into %s, resuming after %s", ", ".join(symbols), redacted(url),
                ", ".join(f"{s} {i}" for s, i in resume.items()) or "nothing (new streams)")
    publisher = RedisPublisher(url, market=market, maxlen=int(table.get("maxlen", 1_000_000)),
                               hole_wait=float(table.get("hole_wait", 10.0)), name=name,
                               refill_window=int(table.get("refill_window", 50_000)),
                               wait_replicas=int(table.get("wait_replicas", 0)),
                               wait_timeout=float(table.get("wait_timeout", 1.0)))
    # Redis is the collector's checkpoint: a checkpoint file would be ahead of it by what was still queued
    # when the collector died, and resuming from there would leave those trades out for good.
    sequencing = dataclasses.replace(from_table(Sequencing, settings.sequencing), checkpoint_path="")
    flow = OrderFlow.from_settings(settings, resume=resume, sequencing=sequencing, **overrides)
    flow.plugins.register(publisher, name="redis-collector")
    progress = _Progress(publisher, flow)
    async with flow:
        if publisher.writer is not None and flow.backfiller is not None:
            publisher.writer.refetch = flow.backfiller.fetch  # a failover's loss older than refill_window: REST
        while not stop.is_set() and publisher.failure is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
            progress.report(loop.time())
    drained = await publisher.aclose(timeout=flow.timeouts.close + 5.0)
    counters = publisher.writer.counters if publisher.writer is not None else {}
    # The stream's summary has its own "duplicates" (trades it got twice); Redis's are trades it already held.
    redis = {("already_in_redis" if key == "duplicates" else key): value for key, value in counters.items()}
    print(json.dumps({"event": "summary", **flow.summary(), "redis": redis, "redis_drained": drained}), flush=True)
    if publisher.failure is not None:  # exit 1: a supervisor restarts it, and it resumes from Redis
        raise RedisFeedError(f"collector stopped: {publisher.failure}") from publisher.failure
    return 0


class _Progress:
    """The collector's progress on its log: when its first trade is in Redis, then every ``interval`` s."""

    def __init__(self, publisher: RedisPublisher, flow: OrderFlow, interval: float = 10.0) -> None:
        self.publisher, self.flow, self.interval = publisher, flow, interval
        self.written = 0
        self.due: float | None = None  # None: no trade written yet

    def report(self, now: float) -> None:
        writer = self.publisher.writer
        written = writer.counters["written"] if writer is not None else 0
        if (self.due is None and written == 0) or (self.due is not None and now < self.due):
            return
        counters, summary = writer.counters if writer is not None else {}, self.flow.summary()
        logger.info("collected: %d trades written to Redis (+%d), %d already there, gaps %d, reconnects %d",
                    written, written - self.written, counters.get("duplicates", 0), summary["gaps"],
                    summary["reconnects"])
        self.written, self.due = written, now + self.interval
