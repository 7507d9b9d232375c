"""The feed into Redis exactly once: trades appended in id order by one atomic script, metrics keyed by what they are.

A trade's entry id is its aggregate id, so a second writer of it (another collector, a retry after
a lost reply) is refused by Redis itself and counted as a duplicate, not an error. The append script
also refuses to leave a hole: a trade past the stream's newest id + 1 waits (another collector may
hold the missing ones) for ``hole_wait`` seconds, and only then is written, with the hole recorded in
the symbol's gaps stream. Connection faults keep everything in memory and retry with backoff.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..errors import OrderFlowError
from ..models import Trade
from .keys import entry_id, gaps_key, trade_id, trade_payload, trades_key
from .url import check_url, redacted

__all__ = ["APPEND", "StreamWriter"]

logger = logging.getLogger("orderflow_plugin.redis")

# KEYS[1]: the trade stream. ARGV: force ("1": the first trade may cross a hole), MAXLEN ("0": none),
# then id, payload pairs in ascending id order. Returns {written, duplicates, newest id, id that
# waits behind a hole (0: none), first and last id of a hole written past (0, 0: none)}. Atomic:
# two collectors' batches never interleave.
APPEND = """
local top = -1
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    -- '0-0': a stream no entry was ever added to (made by XGROUP CREATE MKSTREAM); trade 0 is '0-1'
    if info[i] == 'last-generated-id' and info[i + 1] ~= '0-0' then
      top = tonumber(string.match(info[i + 1], '^(%d+)'))
    end
  end
end
local force = ARGV[1] == '1'
local maxlen = tonumber(ARGV[2])
local written, duplicates, crossed_first, crossed_last = 0, 0, 0, 0
for i = 3, #ARGV, 2 do
  local id = tonumber(ARGV[i])
  if id <= top then
    duplicates = duplicates + 1
  elseif top >= 0 and id > top + 1 and not force then
    return {written, duplicates, top, id, crossed_first, crossed_last}
  else
    if top >= 0 and id > top + 1 then crossed_first, crossed_last = top + 1, id - 1 end
    local entry = id == 0 and '0-1' or (ARGV[i] .. '-0')
    if maxlen > 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, entry, 'd', ARGV[i + 1])
    else
      redis.call('XADD', KEYS[1], entry, 'd', ARGV[i + 1])
    end
    top, written, force = id, written + 1, false
  end
end
return {written, duplicates, top, 0, crossed_first, crossed_last}
"""


class StreamWriter:
    """Buffers trades and metric entries and writes them to Redis from its own task (:meth:`run`)."""

    def __init__(self, url: str, market: str, *, maxlen: int = 1_000_000, hole_wait: float = 10.0,
                 batch: int = 2000, rounds: int = 10, flush_interval: float = 0.05, timeout: float = 5.0,
                 max_pending: int = 5_000_000, refill_window: int = 50_000, wait_replicas: int = 0,
                 wait_timeout: float = 1.0) -> None:
        self.url = redacted(url)  # for logs
        self.market = market
        self.maxlen = maxlen
        self.hole_wait = hole_wait
        self.batch, self.rounds = batch, rounds
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self._target, self._timeout = check_url(url), timeout  # a bad URL fails here, in one line
        # redis-py (~40 ms to import) is imported on a thread when the writer first runs, so that building
        # one (in a plugin's on_startup, on the event loop) costs nothing; trades queue meanwhile.
        self.redis: Any = None
        self._client: Any = None  # the .client module
        self._append: Any = None
        self._cluster = False
        self.pending: dict[str, deque[tuple[int, bytes]]] = {}
        self.entries: deque[tuple[str, str, Mapping[str, Any], int]] = deque()  # key, id ("*": auto), fields, maxlen
        self.holes: dict[str, tuple[int, int, float]] = {}  # symbol -> (first missing, last missing, since)
        # A failover can lose what the old primary acknowledged (replication is asynchronous). The newest id Redis
        # has shown us per symbol, and the last `refill_window` trades written (or found there), let a writer see
        # the stream end below what it held before, and write those trades again.
        self.refill_window = refill_window
        # WAIT wait_replicas wait_timeout after each round trip that wrote trades: durability for latency.
        self.wait_replicas, self.wait_timeout = wait_replicas, wait_timeout
        self._unreplicated_since: float | None = None
        self.confirmed: dict[str, int] = {}
        self.recent: dict[str, deque[tuple[int, bytes]]] = {}
        # Where a loss older than the window comes from: ``await refetch(symbol, first, last)`` gives those trades
        # (a collector passes its stream's REST backfill); None leaves such a loss to wait like any hole.
        self.refetch: Callable[[str, int, int], Awaitable[list[Trade]]] | None = None
        self._refetch: list[tuple[str, int, int]] = []
        self.counters = dict.fromkeys(("written", "duplicates", "gaps", "dropped", "entries_written",
                                       "entries_duplicate", "redis_errors", "failovers", "refilled",
                                       "refetched", "unreplicated"), 0)
        self._retry_at: dict[str, float] = {}
        self._idle_look_at = 0.0  # no look at the streams' ends before this (monotonic s): see _look_idle
        # Why this writer can't go on (a queue past max_pending, a fault retrying won't fix): collectors exit on it.
        self.failure: BaseException | None = None
        self._wake = asyncio.Event()
        self._failing_since: float | None = None
        self._closed = False

    # In

    def add_trade(self, trade: Trade) -> None:
        """Queue ``trade`` (delivered in id order, as the stream does) for its symbol's stream."""
        queue = self.pending.get(trade.symbol)
        if queue is None:
            queue = self.pending[trade.symbol] = deque()
        if len(queue) >= self.max_pending:  # Redis away for very long: see failure
            self.counters["dropped"] += 1
            if self.failure is None:
                self.failure = OrderFlowError(
                    f"redis {self.url}: {trade.symbol} has max_pending ({self.max_pending:,}) trades waiting; newer "
                    "ones are not taken (a collector exits so that, restarted, it resumes from Redis)")
                logger.error("%s", self.failure)
            return
        queue.append((trade.id, trade_payload(trade)))
        self._wake.set()  # the writer task takes everything queued while its last round trip was under way

    def add_entry(self, key: str, entry: str, fields: Mapping[str, Any], maxlen: int = 0) -> None:
        """Queue one metric or health entry; ``entry`` "*" lets Redis number it."""
        self.entries.append((key, entry, fields, maxlen))

    @property
    def backlog(self) -> int:
        """Trades and entries not written yet."""
        return sum(len(q) for q in self.pending.values()) + len(self.entries)

    # Out

    async def connect(self) -> None:
        """Import redis-py (on a thread) and make the client, once."""
        if self.redis is None:
            self._client = await asyncio.to_thread(importlib.import_module, "orderflow_plugin.redisbus.client")
            # A round trip may wait wait_timeout for the replicas (WAIT) before it answers.
            self.redis = self._client.connect(self._target, timeout=self._timeout + self.wait_timeout)
            self._cluster = self._client.is_cluster(self.redis)
            self._append = self.redis.register_script(APPEND)
            if self._cluster and self.wait_replicas:
                logger.warning("redis %s: wait_replicas is not used with a Redis Cluster (WAIT names no key, so "
                               "no one node answers for a symbol's writes)", self.url)
                self.wait_replicas = 0

    async def run(self) -> None:
        """Flush until cancelled; a Redis fault is logged once per outage and retried with backoff."""
        await self.connect()
        c = self._client
        delay = 0.05
        while not c.cancelled():  # redis-py may finish a call it was cancelled in: look, then stop
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if not await self.flush():
                    await self._look_idle()
            except Exception as exc:
                if not c.is_transient(exc) or c.cancelled():
                    self.failure = self.failure or exc
                    raise
                self._failed(exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            if self._failing_since is not None:
                logger.info("redis %s: writes resumed after %.1f s", self.url, time.monotonic() - self._failing_since)
                self._failing_since = None
        raise asyncio.CancelledError

    async def drain(self, timeout: float) -> bool:
        """Write what is queued within ``timeout`` s; False when something is left."""
        deadline = time.monotonic() + timeout
        await self.connect()
        while self.backlog and time.monotonic() < deadline:
            try:
                if not await asyncio.wait_for(self.flush(), max(0.01, deadline - time.monotonic())):
                    await asyncio.sleep(0.01)  # only a hole's 50 ms retry pause is left: wait it out, don't spin
            except TimeoutError:  # our own deadline, not Redis'
                break
            except Exception as exc:
                if self._client.cancelled():
                    raise
                if not self._client.is_transient(exc):  # a best effort at the end: say why, leave the rest
                    self.failure = self.failure or exc
                    logger.error("redis %s: writing what was queued failed: %s", self.url, self._client.describe(exc))
                    break
                self._failed(exc)
                await asyncio.sleep(0.05)
        return not self.backlog

    async def aclose(self) -> None:
        """Close the connection pool (call :meth:`drain` first to write what is queued)."""
        if not self._closed and self.redis is not None:
            self._closed = True
            await self.redis.aclose()

    async def flush(self) -> bool:
        """One round trip: batches of every symbol's trades, then the queued entries; False when nothing was sent."""
        await self.connect()
        now = time.monotonic()
        batches: list[tuple[str, int, bool]] = []
        entries = list(self.entries)
        if not entries and not any(self.pending.values()):
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            for symbol, queue in self.pending.items():
                if not queue:
                    continue
                hole = self.holes.get(symbol)
                force = hole is not None and now - hole[2] >= self.hole_wait
                if hole is not None and not force and now < self._retry_at.get(symbol, 0.0):
                    continue  # waiting for another collector: ask again every 50 ms, not every round
                # Up to `rounds` scripts of `batch` trades each in this round trip: a collector behind (after an
                # outage, or a loop busy reading) catches up in few round trips, and Redis serves other
                # clients between scripts. Each script sees the stream as the one before left it.
                key, items = trades_key(self.market, symbol), iter(queue)
                for number in range(min(self.rounds, -(-len(queue) // self.batch))):
                    args: list[Any] = ["1" if force and not number else "0", self.maxlen]
                    for item in itertools.islice(items, self.batch):
                        args.extend(item)
                    if self._cluster:  # each node may lack the script (EVALSHA: NOSCRIPT); its text is 1 KB a batch
                        pipe.eval(APPEND, 1, key, *args)
                    else:
                        await self._append(keys=[key], args=args, client=pipe)
                    batches.append((symbol, number, force and not number))
            if not batches and not entries:
                return False
            for key, entry, fields, maxlen in entries:
                pipe.xadd(key, dict(fields), id=entry, maxlen=maxlen or None, approximate=True)
            waits = bool(self.wait_replicas and batches)
            if waits:
                pipe.execute_command("WAIT", self.wait_replicas, int(self.wait_timeout * 1000))
            results = await pipe.execute(raise_on_error=False)
        if waits:
            self._replicated(results.pop(), now)
        stalled: set[str] = set()  # symbols whose earlier script this round stopped at a hole
        for (symbol, _number, force), result in zip(batches, results, strict=False):
            if isinstance(result, Exception):
                raise result
            if symbol not in stalled and self._appended(symbol, result, force, now):
                stalled.add(symbol)
        if self._refetch:
            await self._fetch_lost()
        for _entry, result in zip(entries, results[len(batches):], strict=True):
            if isinstance(result, Exception) and not self._client.is_duplicate(result):
                raise result  # kept at the front of the queue, for the next round
            self.entries.popleft()
            self.counters["entries_duplicate" if isinstance(result, Exception) else "entries_written"] += 1
        return True

    async def _look_idle(self) -> None:
        """With nothing to write, once a second: does each stream still end where this writer saw it end?

        A failover can lose what the old primary acknowledged (replication is asynchronous). A writer that still
        writes sees it in its next script's answer; an idle one (the market quiet, the tape over) would never
        write again, and the tail it held would be lost for good: so it looks.
        """
        now = time.monotonic()
        if not self.confirmed or now < self._idle_look_at:
            return
        self._idle_look_at = now + 1.0
        symbols = list(self.confirmed)
        async with self.redis.pipeline(transaction=False) as pipe:
            for symbol in symbols:
                pipe.xrevrange(trades_key(self.market, symbol), count=1)
            results = await pipe.execute(raise_on_error=False)
        for symbol, result in zip(symbols, results, strict=True):
            if isinstance(result, Exception):
                raise result
            top = trade_id(result[0][0]) if result else 0
            if top < self.confirmed[symbol]:
                self._refill(symbol, top)
                self._wake.set()

    def _appended(self, symbol: str, result: list[int], force: bool, now: float) -> bool:
        """Drop what one script wrote or found there; True when it stopped at a hole."""
        written, duplicates, top, waiting, crossed_first, crossed_last = (int(x) for x in result)
        queue = self.pending[symbol]
        if top < self.confirmed.get(symbol, -1):
            self._refill(symbol, top)
            return True  # what this round's later scripts of the symbol found is stale: the next round retries
        recent = self.recent.get(symbol)
        if recent is None:
            recent = self.recent[symbol] = deque(maxlen=self.refill_window)
        for _ in range(written + duplicates):
            recent.append(queue.popleft())
        self.confirmed[symbol] = top
        self.counters["written"] += written
        self.counters["duplicates"] += duplicates
        hole = self.holes.get(symbol)
        if crossed_last:  # nobody had the missing trades: say so, in Redis too (the ids the script crossed)
            first, last = crossed_first, crossed_last
            self.counters["gaps"] += 1
            logger.warning("redis %s: %s trades %d..%d are in no collector; written past them after %.1f s",
                           self.url, symbol, first, last, self.hole_wait)
            self.add_entry(gaps_key(self.market, symbol), entry_id(first),
                           {"first": first, "last": last, "missing": last - first + 1})
            self.holes.pop(symbol, None)
            hole = None
        if waiting:
            self._retry_at[symbol] = now + 0.05
            if hole is None or hole[:2] != (top + 1, waiting - 1):
                logger.info("redis %s: %s holds up to %d; trade %d waits up to %.1f s for another collector "
                            "to write %d..%d", self.url, symbol, top, waiting, self.hole_wait, top + 1, waiting - 1)
                # The wait runs from when this trade began to wait: a hole that moved (another collector filled
                # the start of it) is a new wait for the new trade behind it.
                since = hole[2] if hole is not None and hole[1] == waiting - 1 else now
                self.holes[symbol] = (top + 1, waiting - 1, since)
        elif hole is not None:
            self.holes.pop(symbol, None)  # filled by another collector
        if queue and symbol not in self.holes:
            self._wake.set()
        return bool(waiting)

    def _replicated(self, reply: Any, now: float) -> None:
        """What WAIT answered: fewer replicas than asked is logged once per stretch and counted, never fatal."""
        if isinstance(reply, Exception) or int(reply) < self.wait_replicas:
            self.counters["unreplicated"] += 1
            if self._unreplicated_since is None:
                self._unreplicated_since = now
                logger.warning("redis %s: writes reached %s of %d replicas within %.1f s (wait_replicas); going on",
                               self.url, reply if not isinstance(reply, Exception) else "an unknown number",
                               self.wait_replicas, self.wait_timeout)
        elif self._unreplicated_since is not None:
            logger.info("redis %s: writes reach %d replicas again", self.url, self.wait_replicas)
            self._unreplicated_since = None

    def _refill(self, symbol: str, top: int) -> None:
        """Redis's stream of ``symbol`` ends at ``top``, below what it held before: write what we still have again."""
        held = self.confirmed[symbol]
        recent = self.recent.get(symbol, deque())
        again = [item for item in recent if item[0] > top]
        queue = self.pending[symbol]
        queue.extendleft(reversed(again))  # they are older than anything queued: at the front, in id order
        recent.clear()
        self.confirmed[symbol] = top
        self.holes.pop(symbol, None)
        self._retry_at.pop(symbol, None)
        self.counters["failovers"] += 1
        self.counters["refilled"] += len(again)
        first_again = again[0][0] if again else held + 1
        short = ""
        if first_again > top + 1:
            if self.refetch is not None and self.refill_window:  # refill_window 0 turns the re-fill off
                self._refetch.append((symbol, top + 1, first_again - 1))
                short = f"; {top + 1}..{first_again - 1}, older than the last {self.refill_window:,} kept, from REST"
            else:
                short = f"; {top + 1}..{first_again - 1} are older than the last {self.refill_window:,} kept, and " \
                        "wait for another collector like any hole"
        logger.warning("redis %s: %s ends at %d in Redis, but held up to %d before: writes were lost (a failover "
                       "promoted a replica that had not received them); writing %d trades again from memory%s",
                       self.url, symbol, top, held, len(again), short)
        self._wake.set()

    async def _fetch_lost(self) -> None:
        """Fetch what a failover lost beyond the window (over REST), to be written before what was kept."""
        asked, self._refetch = self._refetch, []
        assert self.refetch is not None
        for symbol, first, last in asked:
            try:
                trades = await self.refetch(symbol, first, last)
            except Exception as exc:  # the hole then waits like any other, and is recorded if nobody fills it
                logger.error("redis %s: %s %d..%d could not be fetched to write again: %s", self.url, symbol, first,
                             last, exc)
                continue
            items = [(trade.id, trade_payload(trade)) for trade in trades if first <= trade.id <= last]
            self.pending[symbol].extendleft(reversed(items))
            self.counters["refilled"] += len(items)
            self.counters["refetched"] += len(items)
            logger.warning("redis %s: %s %d..%d fetched again over REST (%d trades) to write after the failover",
                           self.url, symbol, first, last, len(items))
        self._wake.set()

    def _failed(self, exc: BaseException) -> None:
        self.counters["redis_errors"] += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.warning("redis %s: write failed (%s); %d trades and entries wait in memory, retrying",
                           self.url, self._client.describe(exc), self.backlog)
