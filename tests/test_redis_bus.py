"""Redis Streams between collectors and bots, against a real redis-server: exactly once, no holes, faults retried."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from orderflow_plugin import OrderFlow, PluginManager, Sequencing, Trade
from orderflow_plugin.bundled.redis_streams import RedisPublisher
from orderflow_plugin.decode import Decoder
from orderflow_plugin.models import format_decimal
from orderflow_plugin.redisbus.keys import gaps_key, trade_id, trade_payload, trades_key
from orderflow_plugin.redisbus.source import RedisSource
from orderflow_plugin.redisbus.url import RedisFeedError
from orderflow_plugin.redisbus.writer import StreamWriter
from orderflow_plugin.sim import Pace
from orderflow_plugin.tape import bundled_tape

from .flowhelpers import TIMEOUT_FACTOR

KEY = trades_key("spot", "BTCUSDT")


def trade(number: int, *, price: str = "87648.21000000", qty: str = "0.00012000") -> Trade:
    """One BTCUSDT trade with id ``number``."""
    return Trade("BTCUSDT", number, Decimal(price), Decimal(qty), number * 3, number * 3 + 2, 1_767_225_600_000 + number,
                 "sell" if number % 2 else "buy", event_time=1_767_225_600_001 + number)


class Collected:
    """A plugin that keeps what the stream delivers."""

    def __init__(self) -> None:
        self.trades: list[Trade] = []
        self.gaps: list[tuple[str, int, int]] = []
        self.errors: list[tuple[BaseException, str]] = []
        self.changed = asyncio.Event()

    def on_trade(self, trade: Trade) -> None:
        self.trades.append(trade)
        self.changed.set()

    def on_gap(self, symbol: str, first_missing: int, last_missing: int) -> None:
        self.gaps.append((symbol, first_missing, last_missing))
        self.changed.set()

    def on_error(self, error: BaseException, where: str) -> None:
        self.errors.append((error, where))

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait for ``predicate()``, looked at on each of our events and every 50 ms (it may read other plugins)."""
        async with asyncio.timeout(timeout * TIMEOUT_FACTOR):
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.05)


async def ids_in(url: str, key: str = KEY) -> list[int]:
    """The trade ids a stream holds, in order."""
    client = aioredis.Redis.from_url(url)
    try:
        return [trade_id(entry) for entry, _fields in await client.xrange(key)]
    finally:
        await client.aclose()


async def write(url: str, trades: list[Trade], **options: Any) -> StreamWriter:
    """Write ``trades`` with a fresh writer and wait until they are in Redis."""
    writer = StreamWriter(url, "spot", **options)
    for t in trades:
        writer.add_trade(t)
    assert await writer.drain(5.0)
    await writer.aclose()
    return writer


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Wait for ``predicate()`` with a deadline, looking every 10 ms."""
    async with asyncio.timeout(timeout * TIMEOUT_FACTOR):
        while not predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(writer: StreamWriter) -> Any:
    """``writer`` writing from its own task for the block; then stopped and closed."""
    task = asyncio.create_task(writer.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.aclose()


def test_payload_decodes_to_the_same_trade() -> None:
    """A trade written to Redis decodes, with the live decoder, to an equal trade (decimals exact)."""
    original = trade(7, price="0.00000001", qty="123456789.12345678")
    assert Decoder("spot").decode(trade_payload(original)) == original
    futures = msgspec.structs.replace(original, market="usdm")
    assert Decoder("usdm").decode(trade_payload(futures)) == futures  # the consumer of a futures feed too


async def test_a_second_writer_of_the_same_trades_is_refused_and_counted(orderflow_redis: Any) -> None:
    """Two writers of the same trades leave each once in Redis; the second counts duplicates, not errors."""
    first = await write(orderflow_redis.url, [trade(i) for i in range(100, 110)])
    second = await write(orderflow_redis.url, [trade(i) for i in range(105, 115)])
    assert await ids_in(orderflow_redis.url) == list(range(100, 115))
    assert first.counters["written"] == 10
    assert (second.counters["written"], second.counters["duplicates"]) == (5, 5)


async def test_a_trade_past_a_hole_waits_then_is_written_with_the_hole_recorded(orderflow_redis: Any) -> None:
    """A trade past the newest id + 1 waits hole_wait for another writer, then goes in and the hole is recorded."""
    await write(orderflow_redis.url, [trade(i) for i in range(1, 4)])
    writer = StreamWriter(orderflow_redis.url, "spot", hole_wait=0.3)
    writer.add_trade(trade(7))
    await writer.flush()
    assert await ids_in(orderflow_redis.url) == [1, 2, 3]  # held: ids 4..6 may come from another collector
    await write(orderflow_redis.url, [trade(4), trade(5)])  # another collector fills part of it
    assert await writer.drain(5.0)
    assert await ids_in(orderflow_redis.url) == [1, 2, 3, 4, 5, 7]
    client = aioredis.Redis.from_url(orderflow_redis.url)
    gaps = await client.xrange(gaps_key("spot", "BTCUSDT"))
    await client.aclose()
    assert [(entry, fields[b"first"], fields[b"last"]) for entry, fields in gaps] == [(b"6-0", b"6", b"6")]
    await writer.aclose()


async def test_writes_survive_a_redis_restart(orderflow_redis: Any) -> None:
    """Trades queued while Redis restarts are written once it is back: none lost, none twice."""
    writer = StreamWriter(orderflow_redis.url, "spot", timeout=1.0)
    async with running(writer):
        for i in range(1, 51):
            writer.add_trade(trade(i))
        await until(lambda: not writer.backlog, 5)
        orderflow_redis.kill()
        for i in range(51, 101):
            writer.add_trade(trade(i))
        await until(lambda: writer.counters["redis_errors"] >= 1)  # it meets the dead server, says so, retries
        orderflow_redis.restart()
        await until(lambda: not writer.backlog)
    assert await ids_in(orderflow_redis.url) == list(range(1, 101))


async def test_collector_writes_the_simulator_tape_exactly(orderflow_redis: Any, orderflow_sim_factory: Any) -> None:
    """The publisher plugin on a live stream puts every played trade into Redis, equal to the tape."""
    tape = bundled_tape()
    sim = await orderflow_sim_factory(tape, pace=Pace(rate=5000))
    publisher = RedisPublisher(orderflow_redis.url, market="spot")
    flow = OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=[publisher])
    await flow.start()
    try:
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            while flow.health()["symbols"]["BTCUSDT"]["last_id"] != tape.rows[-1].id:
                await asyncio.sleep(0.05)
    finally:
        await flow.stop()
    assert await publisher.aclose()
    client = aioredis.Redis.from_url(orderflow_redis.url)
    entries = await client.xrange(KEY)
    await client.aclose()
    decode = Decoder("spot").decode
    stored = [decode(fields[b"d"]) for _entry, fields in entries]
    assert [t.id for t in stored] == [row.id for row in tape.rows]
    expected = [row.to_trade("BTCUSDT") for row in tape.rows]
    assert [(t.price, t.qty, t.side, t.time, t.first_id, t.last_id) for t in stored] == \
        [(t.price, t.qty, t.side, t.time, t.first_id, t.last_id) for t in expected]


async def consume(source: RedisSource, collected: Collected, **kwargs: Any) -> OrderFlow:
    """An OrderFlow reading BTCUSDT from ``source`` into ``collected``, started."""
    manager = PluginManager()
    manager.register(collected)
    flow = OrderFlow(["BTCUSDT"], feed=source, plugins=manager, **kwargs)
    await flow.start()
    return flow


async def test_fan_out_consumer_gets_every_trade_in_order(orderflow_redis: Any) -> None:
    """A bot reading Redis from the first entry gets every trade once, in id order, with the same values."""
    sent = [trade(i) for i in range(1, 201)]
    await write(orderflow_redis.url, sent)
    collected = Collected()
    flow = await consume(RedisSource(orderflow_redis.url, start="first"), collected)
    try:
        await collected.until(lambda: len(collected.trades) >= 200)
        await write(orderflow_redis.url, [trade(i) for i in range(201, 301)])  # and what comes later
        await collected.until(lambda: len(collected.trades) >= 300)
    finally:
        await flow.stop()
    assert collected.trades == [*sent, *(trade(i) for i in range(201, 301))]
    assert collected.gaps == []


async def test_a_hole_in_redis_is_an_exact_gap_report(orderflow_redis: Any) -> None:
    """Entries trimmed away (or missing from every collector) come to a bot as a gap with the exact ids."""
    await write(orderflow_redis.url, [trade(i) for i in range(1, 11)])
    await write(orderflow_redis.url, [trade(i) for i in range(20, 31)], hole_wait=0.0)
    collected = Collected()
    flow = await consume(RedisSource(orderflow_redis.url, start="first"), collected)
    try:
        await collected.until(lambda: len(collected.trades) >= 21 and collected.gaps)
    finally:
        await flow.stop()
    assert collected.gaps == [("BTCUSDT", 11, 19)]
    assert [t.id for t in collected.trades] == [*range(1, 11), *range(20, 31)]


async def test_a_restarted_consumer_resumes_from_its_checkpoint(orderflow_redis: Any, tmp_path: Any) -> None:
    """With a checkpoint, a bot restarted after Redis moved on gets exactly what it missed: no hole, no repeat."""
    checkpoint = Sequencing(checkpoint_path=str(tmp_path / "bot.ckpt"), checkpoint_interval=0.05)
    await write(orderflow_redis.url, [trade(i) for i in range(1, 101)])
    first = Collected()
    flow = await consume(RedisSource(orderflow_redis.url, start="first"), first, sequencing=checkpoint)
    await first.until(lambda: len(first.trades) >= 100)
    await flow.stop()
    await write(orderflow_redis.url, [trade(i) for i in range(101, 151)])
    second = Collected()
    flow = await consume(RedisSource(orderflow_redis.url, start="first"), second, sequencing=checkpoint)
    try:
        await second.until(lambda: len(second.trades) >= 50)
        await asyncio.sleep(0.2)  # anything repeated would arrive here
    finally:
        await flow.stop()
    assert [t.id for t in first.trades] == list(range(1, 101))
    assert [t.id for t in second.trades] == list(range(101, 151))
    assert second.gaps == []


async def test_a_consumer_group_shares_the_trades_and_claims_a_dead_consumers(orderflow_redis: Any) -> None:
    """Two consumers of a group get every trade once between them; what a dead one held is claimed as a replay."""
    url = orderflow_redis.url
    client = aioredis.Redis.from_url(url)
    await client.xgroup_create(KEY, "bots", id="0", mkstream=True)
    await write(url, [trade(i) for i in range(1, 41)])
    # A consumer that read ten entries and died before acknowledging them:
    await client.xreadgroup("bots", "dead", {KEY: ">"}, count=10)
    await client.aclose()
    a, b = Collected(), Collected()
    flow_a = await consume(RedisSource(url, group="bots", consumer="a", claim_idle=0.2, count=5), a)
    flow_b = await consume(RedisSource(url, group="bots", consumer="b", claim_idle=0.2, count=5), b)
    try:
        await a.until(lambda: len(a.trades) + len(b.trades) >= 40, timeout=10)
        await write(url, [trade(i) for i in range(41, 61)])
        await a.until(lambda: len(a.trades) + len(b.trades) >= 60, timeout=10)
        await asyncio.sleep(0.3)
    finally:
        await flow_a.stop()
        await flow_b.stop()
    got = sorted(t.id for t in [*a.trades, *b.trades])
    assert got == list(range(1, 61))
    replayed = sorted(t.id for t in [*a.trades, *b.trades] if t.source == "replay")
    assert replayed == list(range(1, 11))
    client = aioredis.Redis.from_url(url)
    pending = await client.xpending(KEY, "bots")
    await client.aclose()
    assert pending["pending"] == 0


async def test_a_consumer_rides_out_a_redis_restart(orderflow_redis: Any) -> None:
    """A bot reading Redis across a server restart names the fault, retries, and misses nothing."""
    await write(orderflow_redis.url, [trade(i) for i in range(1, 51)])
    collected = Collected()
    source = RedisSource(orderflow_redis.url, start="first", block=0.2, timeout=1.0)
    flow = await consume(source, collected)
    try:
        await collected.until(lambda: len(collected.trades) >= 50)
        orderflow_redis.kill()
        async with asyncio.timeout(10 * TIMEOUT_FACTOR):
            while source.state != "retrying":
                await asyncio.sleep(0.02)
        orderflow_redis.restart()
        await write(orderflow_redis.url, [trade(i) for i in range(51, 101)])
        await collected.until(lambda: len(collected.trades) >= 100)
    finally:
        await flow.stop()
    assert [t.id for t in collected.trades] == list(range(1, 101))
    assert "ConnectionError" in (source.last_error or "")


def test_a_bad_url_is_a_one_line_error() -> None:
    """A URL that is not redis:// fails at construction, in one line."""
    with pytest.raises(RedisFeedError, match=r"redis://.*got 'http://127\.0\.0\.1:1/'") as caught:
        RedisSource("http://127.0.0.1:1/")
    assert "\n" not in str(caught.value)


async def test_a_refused_password_fails_start_in_one_line(orderflow_redis_factory: Any) -> None:
    """A wrong password is a startup error naming the server, without the password."""
    server = orderflow_redis_factory(requirepass="s3cret")
    url = server.url.replace("redis://", "redis://:wrong@")
    flow = OrderFlow(["BTCUSDT"], feed=RedisSource(url))
    with pytest.raises(RedisFeedError, match="refused") as caught:
        await flow.start()
    assert "wrong" not in str(caught.value) and "\n" not in str(caught.value)
    await flow.stop()


class Bars:
    """A plugin that keeps the closed bars and whales it is sent."""

    def __init__(self) -> None:
        self.bars: list[Any] = []
        self.whales: list[Any] = []

    def on_metric(self, metric: Any) -> None:
        if metric.kind == "bar" and metric.closed_by not in ("open", "revised"):
            self.bars.append(metric)
        elif metric.kind == "whale":
            self.whales.append(metric)


async def test_two_collectors_write_each_bar_and_whale_once(orderflow_redis: Any, orderflow_sim_factory: Any) -> None:
    """Two publishers of the same tape: each 1 m bar and each whale is in Redis once, with the engine's values."""
    tape = bundled_tape()
    sim = await orderflow_sim_factory(tape, pace=Pace(rate=5000))
    publishers = [RedisPublisher(orderflow_redis.url, market="spot") for _ in range(2)]
    seen = Bars()
    # Both from the tape's first trade (backfilled), whenever each connects: whales are judged on what a stream
    # has seen, so a collector that started a few trades later (a loaded machine) could write a whale the other
    # refuses, and the stream would hold a mix of the two judgements (seen once at load ~7, 4 whales apart).
    sequencing = Sequencing(start_from_id=tape.rows[0].id)
    flows = [OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=plugins, sequencing=sequencing)
             for plugins in ([publishers[0], seen], [publishers[1]])]
    await asyncio.gather(*(flow.start() for flow in flows))
    try:
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            while any(f.health()["symbols"]["BTCUSDT"]["last_id"] != tape.rows[-1].id for f in flows):
                await asyncio.sleep(0.05)
    finally:
        for flow in flows:
            await flow.stop()
    for publisher in publishers:
        assert await publisher.aclose()
    client = aioredis.Redis.from_url(orderflow_redis.url, decode_responses=True)
    bars = await client.xrange("orderflow:{spot:BTCUSDT}:bars:1m")
    whales = await client.xrange("orderflow:{spot:BTCUSDT}:whales")
    await client.aclose()
    expected = [b for b in seen.bars if b.window == "1m"][1:]  # the first began before the first trade: not written
    assert [(entry, fields["open"], fields["close"], fields["delta"], int(fields["trades"])) for entry, fields in bars] \
        == [(f"{b.start}-0", format_decimal(b.open), format_decimal(b.close), format_decimal(b.delta), b.trades)
            for b in expected]
    assert [int(fields["id"]) for _entry, fields in whales] == [w.trade.id for w in seen.whales]
    assert sum(p.writer.counters["entries_duplicate"] for p in publishers) >= len(expected) + len(seen.whales)


async def test_the_redis_plugin_is_turned_on_by_settings(orderflow_redis: Any, orderflow_sim_factory: Any,
                                                        tmp_path: Any) -> None:
    """hooks.redis.enabled and hooks.redis.url make a bot publish what it streams, with no code."""
    from orderflow_plugin import load_settings

    settings_file = tmp_path / "bot.toml"
    settings_file.write_text(f'[default.hooks.redis]\nenabled = true\nurl = "{orderflow_redis.url}"\n')
    sim = await orderflow_sim_factory(bundled_tape(), pace=Pace(rate=5000))
    # The development environment, as a user's bot runs: the testing one loads no entry-point plugin.
    flow = OrderFlow.from_settings(load_settings([settings_file], env="development"), symbols=["BTCUSDT"], ws_url=sim.ws_url,
                                   rest_url=sim.rest_url)
    await flow.start()
    try:
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            while len(await ids_in(orderflow_redis.url)) < 1000:
                await asyncio.sleep(0.05)
    finally:
        await flow.stop()
    stored = await ids_in(orderflow_redis.url)
    assert stored == list(range(stored[0], stored[0] + len(stored)))  # in order, no hole, no repeat


def test_collect_with_a_refused_password_is_one_line(orderflow_redis_factory: Any, capsys: Any) -> None:
    """`orderflow collect` against a Redis that refuses the password exits 1 with one line, the password hidden."""
    from orderflow_plugin.cli import main

    server = orderflow_redis_factory(requirepass="s3cret")
    code = main(["collect", "--to", server.url.replace("redis://", "redis://:wrong@"), "--duration", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "refused" in err[0] and "wrong" not in err[0] and ":***@" in err[0], err


def test_stream_from_a_non_redis_url_is_one_line(capsys: Any) -> None:
    """`orderflow stream --from http://...` exits 2 naming the schemes it takes."""
    from orderflow_plugin.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["stream", "--from", "http://127.0.0.1:6379/0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "redis://" in err[0], err


async def test_a_consumer_group_with_a_checkpoint_is_a_startup_error(orderflow_redis: Any, tmp_path: Any) -> None:
    """A group keeps its place with XACK: a checkpoint beside it would disagree, so start() refuses, in one line."""
    source = RedisSource(orderflow_redis.url, group="bots", consumer="a")
    flow = OrderFlow(["BTCUSDT"], feed=source, sequencing=Sequencing(checkpoint_path=str(tmp_path / "c.ckpt")))
    with pytest.raises(RedisFeedError, match="checkpoint_path is for fan-out") as caught:
        await flow.start()
    assert "\n" not in str(caught.value)
    await flow.stop()


async def test_an_out_of_memory_redis_is_retried_not_fatal(orderflow_redis: Any) -> None:
    """Redis refusing writes for maxmemory (OOM) is named and retried: once memory is freed, every trade goes in."""
    client = aioredis.Redis.from_url(orderflow_redis.url)
    writer = StreamWriter(orderflow_redis.url, "spot", timeout=1.0)
    async with running(writer) as task:
        await client.config_set("maxmemory", 1)
        for i in range(1, 51):
            writer.add_trade(trade(i))
        await until(lambda: writer.counters["redis_errors"] >= 1)
        assert not task.done()
        await client.config_set("maxmemory", 0)
        await until(lambda: not writer.backlog)
    await client.aclose()
    assert await ids_in(orderflow_redis.url) == list(range(1, 51))


async def test_a_hole_filled_while_waiting_is_not_recorded_as_a_gap(orderflow_redis: Any) -> None:
    """A hole another collector fills after hole_wait ran out is no gap: nothing is recorded, nothing is counted."""
    await write(orderflow_redis.url, [trade(i) for i in range(1, 4)])
    writer = StreamWriter(orderflow_redis.url, "spot", hole_wait=0.2)
    for i in range(7, 13):
        writer.add_trade(trade(i))
    await writer.flush()  # 7..12 wait behind 4..6
    await asyncio.sleep(0.3)  # hole_wait has run out: the next round may cross the hole...
    await write(orderflow_redis.url, [trade(i) for i in range(4, 11)])  # ...but another collector filled it
    assert await writer.drain(5.0)
    await writer.aclose()
    assert await ids_in(orderflow_redis.url) == list(range(1, 13))
    client = aioredis.Redis.from_url(orderflow_redis.url)
    gaps = await client.xrange(gaps_key("spot", "BTCUSDT"))
    await client.aclose()
    assert gaps == [] and writer.counters["gaps"] == 0


async def test_a_queue_past_max_pending_stops_taking_trades_and_says_so(orderflow_redis: Any) -> None:
    """Past max_pending (Redis away too long) the writer keeps its queue contiguous and reports it failed."""
    orderflow_redis.kill()
    writer = StreamWriter(orderflow_redis.url, "spot", max_pending=10, timeout=0.5)
    for i in range(1, 21):
        writer.add_trade(trade(i))
    assert writer.backlog == 10 and writer.counters["dropped"] == 10
    assert writer.failure is not None and "max_pending" in str(writer.failure)
    orderflow_redis.restart()
    assert await writer.drain(10.0)
    await writer.aclose()
    assert await ids_in(orderflow_redis.url) == list(range(1, 11))  # the oldest ten, in order: Redis ends there


async def test_trimmed_entries_a_dead_consumer_held_are_a_gap_report(orderflow_redis: Any) -> None:
    """Entries a dead consumer held that retention trimmed away are acknowledged and reported as a gap."""
    url = orderflow_redis.url
    client = aioredis.Redis.from_url(url)
    await client.xgroup_create(KEY, "bots", id="0", mkstream=True)
    await write(url, [trade(i) for i in range(1, 21)])
    await client.xreadgroup("bots", "dead", {KEY: ">"}, count=10)  # holds 1..10, then dies
    await client.xtrim(KEY, minid="6-0", approximate=False)  # retention drops 1..5 before anyone claims them
    a = Collected()
    flow = await consume(RedisSource(url, group="bots", consumer="a", claim_idle=0.2), a)
    try:
        await a.until(lambda: len(a.trades) >= 15 and a.gaps, timeout=10)
    finally:
        await flow.stop()
    assert sorted(t.id for t in a.trades) == list(range(6, 21))
    assert a.gaps == [("BTCUSDT", 1, 5)]
    assert [e for e, _w in a.errors] == []
    pending = await client.xpending(KEY, "bots")
    await client.aclose()
    assert pending["pending"] == 0


def test_stream_from_with_a_group_and_no_consumer_is_one_line(capsys: Any) -> None:
    """`stream --from URL --group g` without --consumer exits 2 with one line, no traceback."""
    from orderflow_plugin.cli import main

    code = main(["stream", "--from", "redis://127.0.0.1:6379/0", "--group", "g"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "consumer" in err[0], err


def test_a_bad_url_on_the_command_line_never_shows_its_password(capsys: Any) -> None:
    """`collect --to` with a malformed URL names the problem with the password hidden."""
    from orderflow_plugin.cli import main

    with pytest.raises(SystemExit):
        main(["collect", "--to", "redis://:hunter2@127.0.0.1:abc/0"])
    err = capsys.readouterr().err
    assert "hunter2" not in err and len(err.strip().splitlines()) == 1, err


async def test_a_hole_that_moved_gets_its_own_wait(orderflow_redis: Any) -> None:
    """When another collector fills the start of a hole, the trade now waiting waits its own hole_wait, not the rest."""
    await write(orderflow_redis.url, [trade(i) for i in range(1, 6)])
    writer = StreamWriter(orderflow_redis.url, "spot", hole_wait=2.0)
    async with running(writer):
        for i in (8, 9, 10, 12, 13):
            writer.add_trade(trade(i))
        await asyncio.sleep(1.0)
        await write(orderflow_redis.url, [trade(6), trade(7)])  # the hole moves: 11 is missing, 12 waits now
        await until(lambda: writer.counters["written"] >= 3, 5)
        await asyncio.sleep(1.3)  # 2.3 s after the first wait began, 1.3 s into 12's: 12 must still wait
        assert await ids_in(orderflow_redis.url) == list(range(1, 11))
        await write(orderflow_redis.url, [trade(11)])  # the other collector had 11
        await until(lambda: not writer.backlog, 5)
    assert await ids_in(orderflow_redis.url) == list(range(1, 14))
    assert writer.counters["gaps"] == 0


async def test_collect_exits_1_in_one_line_with_its_summary_when_redis_refuses_the_script(
        orderflow_redis: Any, orderflow_sim_factory: Any) -> None:
    """A permission Redis takes away mid-run ends `orderflow collect` with exit 1, one error line and its summary."""
    import os
    import sys

    sim = await orderflow_sim_factory(bundled_tape(), pace=Pace(rate=200))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")} | {"ORDERFLOW_ENV": "testing"}
    collector = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow_plugin", "collect", "--to", orderflow_redis.url, "--ws-url", sim.ws_url,
        "--rest-url", sim.rest_url, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            while not await ids_in(orderflow_redis.url):
                await asyncio.sleep(0.05)
        client = aioredis.Redis.from_url(orderflow_redis.url)
        await client.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")
        await client.aclose()
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            out, err = await collector.communicate()
    finally:
        if collector.returncode is None:
            collector.kill()
            await collector.wait()
    errors = err.decode().strip().splitlines()
    assert collector.returncode == 1, errors[-5:]
    assert errors[-1].startswith("orderflow: collector stopped: ") and "Traceback" not in err.decode(), errors[-5:]
    assert out.decode().strip().splitlines()[-1].startswith('{"event": "summary"')


async def test_a_publishing_bot_outlives_a_fault_its_writer_cannot_retry(orderflow_redis: Any,
                                                                          orderflow_sim_factory: Any) -> None:
    """A permission taken away from a bot's redis plugin stops writes, not the writer: given back, every trade goes in."""
    tape = bundled_tape()
    sim = await orderflow_sim_factory(tape, pace=Pace(rate=1000))
    publisher = RedisPublisher(orderflow_redis.url, market="spot", retry_after=0.2)
    flow = OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=[publisher])
    client = aioredis.Redis.from_url(orderflow_redis.url)
    await flow.start()
    try:
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            while not await ids_in(orderflow_redis.url):
                await asyncio.sleep(0.05)
            await client.execute_command("ACL", "SETUSER", "default", "-evalsha", "-eval")
            while publisher.failure is None:
                await asyncio.sleep(0.05)
            await client.execute_command("ACL", "SETUSER", "default", "+evalsha", "+eval")
            while len(await ids_in(orderflow_redis.url)) < len(tape.rows):
                await asyncio.sleep(0.05)
    finally:
        await flow.stop()
        await client.aclose()
        await publisher.aclose()
    assert await ids_in(orderflow_redis.url) == [row.id for row in tape.rows]
