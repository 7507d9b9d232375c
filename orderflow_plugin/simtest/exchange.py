"""The simulated exchange: each symbol's trade timeline and the REST ``aggTrades`` answers.

A timeline is drawn whole before the run: publication times on the virtual clock (a Poisson
base rate plus bursts), aggregate ids strictly increasing by one from a random start, and real
prices and quantities walked from the bundled tape. Frames are Binance's bytes, made by
:mod:`orderflow_plugin.sim.frames`. The REST model answers a :class:`~orderflow_plugin.pipeline.Backfill`
the way :class:`~orderflow_plugin.backfill.Backfiller` would: every id asked for, or a
:class:`~orderflow_plugin.backfill.BackfillFailed` carrying the pages fetched before the failure.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from decimal import Decimal

from ..backfill import BackfillFailed
from ..models import Trade
from ..sim.frames import aggtrade_payload, combined
from ..symbols import stream_name
from ..tape import TapeRow, bundled_tape
from .world import MAX_TRADES, World

__all__ = ["Exchange", "Rest", "ShardFeed", "SymbolTimeline"]

REST_URL = "https://api.sim/api/v3/aggTrades"


@functools.cache
def _tape_rows() -> tuple[TapeRow, ...]:
    return tuple(bundled_tape().rows)


@dataclass
class SymbolTimeline:
    """Every trade of one symbol: publication times (virtual seconds), rows and frames, by index."""

    symbol: str
    first_id: int
    times: list[float]
    rows: list[TapeRow]
    frames: list[bytes]

    def published(self, now: float) -> int:
        """How many trades were published by ``now``."""
        return bisect_right(self.times, now)

    def trade(self, index: int) -> Trade:
        """Trade ``index`` as REST returns it (``source="backfill"``)."""
        row = self.rows[index]
        return Trade(self.symbol, row.id, Decimal(row.price), Decimal(row.qty), row.first_id, row.last_id, row.time,
                     "sell" if row.buyer_maker else "buy", row.time, "spot", "backfill")


@dataclass
class ShardFeed:
    """The merged timeline a shard's connections receive: time, frame and (symbol, index) of each trade."""

    times: list[float]
    frames: list[bytes]
    keys: list[tuple[str, int]]


class Exchange:
    """All symbols' timelines of one seed."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.timelines = {s: self._draw(s, rng) for s in world.symbols}
        self.feeds = {shard: self._merge(shard) for shard in world.shards}
        # The tail schedule: the server never sends these (symbol, index); REST has them.
        self.skipped = {(s, k) for s, timeline in self.timelines.items()
                        for k in range(max(0, len(timeline.times) - world.tail), len(timeline.times))} \
            if world.tail else set()

    def _draw(self, symbol: str, rng: random.Random) -> SymbolTimeline:
        activity = self.world.activity[symbol]
        end = self.world.end
        times: list[float] = []
        t = 0.0
        while True:
            t += rng.expovariate(activity.rate)
            if t >= end:
                break
            times.append(t)
        for start, seconds, rate in activity.bursts:
            t = start
            while (t := t + rng.expovariate(rate)) < min(end, start + seconds):
                times.append(t)
        times.sort()
        del times[MAX_TRADES:]
        if self.world.tail:  # the market is quiet from when faults stop to the end
            del times[bisect_right(times, self.world.faults.stop):]
        tape = _tape_rows()
        offset = rng.randrange(len(tape))
        first_id = rng.randrange(1, 10**9)
        trade_id = rng.randrange(1, 10**9)
        epoch = self.world.epoch_ms
        stream = stream_name(symbol)
        rows, frames = [], []
        for k, when in enumerate(times):
            source = tape[(offset + k) % len(tape)]
            count = source.last_id - source.first_id
            ms = epoch + int(when * 1000)
            row = TapeRow(first_id + k, source.price, source.qty, trade_id, trade_id + count, ms, source.buyer_maker,
                          ms)
            trade_id += count + 1
            rows.append(row)
            frames.append(combined(stream, aggtrade_payload("spot", symbol, row)))
        return SymbolTimeline(symbol, first_id, times, rows, frames)

    def _merge(self, symbols: tuple[str, ...]) -> ShardFeed:
        merged = list(heapq.merge(*([(t, s, k) for k, t in enumerate(self.timelines[s].times)] for s in symbols)))
        return ShardFeed([t for t, _, _ in merged], [self.timelines[s].frames[k] for _, s, k in merged],
                         [(s, k) for _, s, k in merged])


class Rest:
    """Answers to backfill requests: when, which trades, and the failure if it stopped short."""

    def __init__(self, exchange: Exchange, rng: random.Random) -> None:
        self.exchange = exchange
        self.world = exchange.world
        self.rng = rng
        self.requests = 0

    def answer(self, symbol: str, first: int, last: int, now: float) -> tuple[float, list[Trade], Exception | None]:
        """The answer to ``Backfill(symbol, first, last)`` sent at ``now``: ``(when, trades, failed)``."""
        self.requests += 1
        world, rng = self.world, self.rng
        timeline = self.exchange.timelines[symbol]
        lo, hi = first - timeline.first_id, last - timeline.first_id  # indexes
        pages = max(1, math.ceil((last - first + 1) / 1000))
        when = now + sum(rng.uniform(0.005, world.rest_latency) for _ in range(pages))
        faults = world.faults
        tries = world.limits.rest_retries + 1
        if now < faults.stop:
            draw = rng.random()
            if draw < faults.rest_fail:  # some pages arrive, then a page fails every try
                got = rng.randrange(0, hi - lo + 1)
                return when, [timeline.trade(i) for i in range(lo, lo + got)], self._failed(
                    symbol, first + got, last, f"failed after {tries} tries: HTTP 503: Service Unavailable")
            if draw < faults.rest_fail + faults.rest_timeout:  # every try of a page times out
                got = rng.randrange(0, hi - lo + 1)
                spent = tries * (world.timeouts.rest + rng.uniform(0.0, 0.2))
                return when + spent, [timeline.trade(i) for i in range(lo, lo + got)], self._failed(
                    symbol, first + got, last,
                    f"failed after {tries} tries: no answer within {world.timeouts.rest:g} s")
        # REST trails the stream by rest_lag: a page without the ids yet is tried again after a pause.
        for attempt in range(1, tries + 1):
            known = timeline.published(when - world.rest_lag)  # indexes below this are on REST
            if hi < known:
                return when, [timeline.trade(i) for i in range(lo, hi + 1)], None
            if attempt < tries:
                base = min(5.0, 0.2 * 2**attempt)
                when += rng.uniform(base / 2, base) + rng.uniform(0.005, world.rest_latency)
        got = max(0, min(hi + 1, known) - lo)
        return when, [timeline.trade(i) for i in range(lo, lo + got)], self._failed(
            symbol, first + got, last, f"failed after {tries} tries: REST has no aggTrades from id {first + got} yet")

    def _failed(self, symbol: str, first: int, last: int, why: str) -> BackfillFailed:
        return BackfillFailed(f"{symbol}: backfill of ids {first}..{last} {why}", url=REST_URL, symbol=symbol,
                              first=first, last=last)
