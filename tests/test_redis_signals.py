"""Footprint signals through Redis Streams, against a real redis-server: written by the collector, read exactly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from orderflow_plugin import Flow, OrderFlow, PluginManager
from orderflow_plugin.bundled.redis_streams import RedisPublisher
from orderflow_plugin.redisbus.keys import signals_key
from orderflow_plugin.redisbus.metrics import signal_fields, signal_of
from orderflow_plugin.redisbus.source import RedisSource
from orderflow_plugin.redisbus.url import RedisFeedError
from orderflow_plugin.replay import replay
from orderflow_plugin.signalmetrics import SIGNAL_KINDS
from orderflow_plugin.tape import bundled_tape

from .flowhelpers import TIMEOUT_FACTOR

# A 5 min session: the bundled tape's 12 minutes end two sessions, so session profiles and their POCs are in it too.
OPTIONS = Flow(windows=("1m",), footprint_tick="1", whale_percentile=0, session="5m")
BAR_KEY, TRADE_KEY = signals_key("spot", "BTCUSDT", "1m"), signals_key("spot", "BTCUSDT")


class Signals:
    """A plugin that keeps the footprint signals it is sent, and the first trade's time and id."""

    def __init__(self) -> None:
        self.signals: list[Any] = []
        self.first: tuple[int, int] | None = None
        self.changed = asyncio.Event()

    def on_trade(self, trade: Any) -> None:
        if self.first is None:
            self.first = (trade.time, trade.id)

    def on_metric(self, metric: Any) -> None:
        if metric.kind in SIGNAL_KINDS:
            self.signals.append(metric)
            self.changed.set()


def of_a_bar(signal: Any) -> bool:
    """Whether ``signal`` is kept with its closed bar (else with the trade it followed: naked POCs too)."""
    return hasattr(signal, "window")


async def stored(url: str, key: str) -> list[tuple[str, Any]]:
    """A stream's entries: (entry id, the signal it holds)."""
    client = aioredis.Redis.from_url(url)
    try:
        return [(entry.decode(), signal_of(fields)) for entry, fields in await client.xrange(key)]
    finally:
        await client.aclose()


def test_every_signal_kind_reads_back_exactly_from_its_fields() -> None:
    """Each kind's stream fields decode to an equal signal: the same class and the same exact Decimals."""
    seen = Signals()
    asyncio.run(replay(OrderFlow(["BTCUSDT"], plugins=[seen], flow=OPTIONS), bundled_tape()))
    assert {s.kind for s in seen.signals} == SIGNAL_KINDS
    back = [signal_of(signal_fields(s)) for s in seen.signals]
    assert back == seen.signals
    assert [type(s) for s in back] == [type(s) for s in seen.signals]


async def test_a_collectors_signals_reach_a_bot_through_redis_exactly(orderflow_redis: Any) -> None:
    """Every kind the collector emits is in Redis with its exact values, and a bot reading Redis gets them all."""
    seen = Signals()
    publisher = RedisPublisher(orderflow_redis.url, market="spot")
    await replay(OrderFlow(["BTCUSDT"], plugins=[publisher, seen], flow=OPTIONS), bundled_tape())
    assert await publisher.aclose(10.0 * TIMEOUT_FACTOR)
    assert seen.first is not None
    first_time, first_id = seen.first

    def whole(signal: Any) -> bool:  # not over trades before the first one the collector saw
        return signal.first_id > first_id if signal.kind == "sweep" else signal.start >= first_time

    bar_signals = await stored(orderflow_redis.url, BAR_KEY)
    trade_signals = await stored(orderflow_redis.url, TRADE_KEY)
    expected_bar = [s for s in seen.signals if of_a_bar(s) and whole(s)]
    expected_trade = [s for s in seen.signals if not of_a_bar(s) and whole(s)]
    assert [s for _entry, s in bar_signals] == expected_bar
    assert [s for _entry, s in trade_signals] == expected_trade
    assert {s.kind for _entry, s in bar_signals + trade_signals} == SIGNAL_KINDS
    skipped = [s for s in seen.signals if not whole(s)]  # the first second's, session's and bar's: partial
    assert 0 < len(skipped) < 15 and all(getattr(s, "start", 0) <= first_time for s in skipped)
    assert all(entry.startswith(f"{s.start}-") for entry, s in bar_signals)  # keyed by the bar they are of

    # A bot computing none itself receives the collector's, as its own on_metric, with the same values.
    got = Signals()
    manager = PluginManager()
    manager.register(got)
    bot = OrderFlow(["BTCUSDT"], feed=RedisSource(orderflow_redis.url, start="first", signals=True),
                    plugins=manager, flow=Flow(windows=("1m",), footprint_tick="1", whale_percentile=0, signals=False))
    total = len(bar_signals) + len(trade_signals)
    await bot.start()
    try:
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            while len(got.signals) < total:
                got.changed.clear()
                await got.changed.wait()
    finally:
        await bot.stop()
    assert [s for s in got.signals if of_a_bar(s)] == expected_bar
    assert [s for s in got.signals if not of_a_bar(s)] == expected_trade


async def test_a_second_collector_of_the_same_tape_writes_no_signal_twice(orderflow_redis: Any) -> None:
    """Signal entries are keyed by what they follow: the same tape collected twice leaves each signal once."""
    held = []
    for _ in range(2):
        publisher = RedisPublisher(orderflow_redis.url, market="spot")
        await replay(OrderFlow(["BTCUSDT"], plugins=[publisher], flow=OPTIONS), bundled_tape())
        assert await publisher.aclose(10.0 * TIMEOUT_FACTOR)
        held.append(await stored(orderflow_redis.url, BAR_KEY) + await stored(orderflow_redis.url, TRADE_KEY))
    assert len(held[0]) > 800 and held[1] == held[0]
    assert publisher.writer.counters["entries_written"] == 0  # the second one's were all refused by Redis
    assert publisher.writer.counters["entries_duplicate"] >= len(held[0])


async def test_reading_signals_while_computing_them_is_a_startup_error(orderflow_redis: Any) -> None:
    """signals=True with the bot's own flow.signals on would deliver each signal twice: start() says so in one line."""
    bot = OrderFlow(["BTCUSDT"], feed=RedisSource(orderflow_redis.url, signals=True), flow=OPTIONS)
    with pytest.raises(RedisFeedError) as caught:
        await bot.start()
    assert "flow.signals" in str(caught.value) and "\n" not in str(caught.value)
    await bot.stop()


async def test_orderflow_stream_from_redis_prints_the_collectors_signals(orderflow_redis: Any) -> None:
    """`orderflow stream --from URL --redis-signals --json` prints every signal the collector wrote, exactly."""
    import json
    from decimal import Decimal

    from .test_cli_stream import start

    publisher = RedisPublisher(orderflow_redis.url, market="spot")
    await replay(OrderFlow(["BTCUSDT"], plugins=[publisher], flow=OPTIONS), bundled_tape())
    assert await publisher.aclose(10.0 * TIMEOUT_FACTOR)
    written = await stored(orderflow_redis.url, BAR_KEY) + await stored(orderflow_redis.url, TRADE_KEY)
    process = await start("stream", "--from", orderflow_redis.url, "--start", "first", "--redis-signals", "--json",
                          "--symbol", "BTCUSDT", "--duration", str(4 * TIMEOUT_FACTOR))
    async with asyncio.timeout(40 * TIMEOUT_FACTOR):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    printed = [e for e in events if e["event"] == "metric" and e["kind"] in SIGNAL_KINDS]
    assert len(printed) == len(written)
    by_kind = {}
    for metric in printed:
        by_kind.setdefault(metric["kind"], []).append(metric)
    # Each kind in order; the imbalances' levels, as printed, are the exact decimals Redis holds.
    assert {kind: len(v) for kind, v in by_kind.items()} == \
        {kind: sum(1 for _e, s in written if s.kind == kind) for kind in by_kind}
    imbalances = [s for _e, s in written if s.kind == "imbalance"]
    assert [[[Decimal(x) for x in level] for level in m["buy"]] for m in by_kind["imbalance"]] == \
        [[list(level) for level in s.buy] for s in imbalances]


def test_redis_signals_without_from_is_one_line(capsys: Any) -> None:
    """--redis-signals with no --from is a one-line usage error, exit 2."""
    from orderflow_plugin.cli import main

    assert main(["stream", "--redis-signals"]) == 2
    err = capsys.readouterr().err
    assert "--from" in err and err.count("\n") == 1


async def test_orderflow_chart_from_redis_draws_the_collectors_naked_pocs(orderflow_redis: Any) -> None:
    """`orderflow chart --from URL --redis-signals` lists the naked POCs the collector's signals leave listed."""
    import re

    import httpx

    from orderflow_plugin.models import format_decimal

    from .test_cli_stream import start

    # The chart's own footprint is 10 wide, the collector's 1: POCs at 1-wide prices can only be the collector's.
    process = await start("chart", "--from", orderflow_redis.url, "--redis-signals", "--symbol", "BTCUSDT",
                          "--tick", "10", "--port", "0", "--duration", str(60 * TIMEOUT_FACTOR))
    try:
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            line = ""
            while not line.startswith("footprint chart of"):
                line = (await process.stdout.readline()).decode()
                assert line, (await process.stderr.read()).decode()[-2000:]
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        seen = Signals()  # the chart reads what is written from now on: collect the tape now
        publisher = RedisPublisher(orderflow_redis.url, market="spot")
        collector = OrderFlow(["BTCUSDT"], plugins=[publisher, seen], flow=OPTIONS)
        await replay(collector, bundled_tape())
        assert await publisher.aclose(10.0 * TIMEOUT_FACTOR)
        assert seen.first is not None
        listed = sorted([n.source, n.start, format_decimal(n.price)]
                        for n in collector.pipeline.signals["BTCUSDT"].naked_pocs if n.start >= seen.first[0])
        assert len(listed) >= 3 and any(not price.endswith("0") for _source, _start, price in listed)
        naked: list = []
        async with httpx.AsyncClient() as client, asyncio.timeout(20 * TIMEOUT_FACTOR):
            while naked != listed:
                state = (await client.get(url + "api/state")).json()
                naked = sorted([n["source"], n["start"], n["price"]] for n in state["naked"])
                await asyncio.sleep(0.1)
    finally:
        process.terminate()
        await process.wait()
