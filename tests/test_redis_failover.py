"""Redis failover: Sentinel URLs, writes a failover lost written again, consumer groups made again, and the drill."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from orderflow_plugin.redisbus.failover import failover_drill
from orderflow_plugin.redisbus.keys import gaps_key, trade_payload
from orderflow_plugin.redisbus.source import RedisSource
from orderflow_plugin.redisbus.url import RedisFeedError, check_url, parse_sentinel, redacted
from orderflow_plugin.redisbus.writer import StreamWriter
from orderflow_plugin.sim import Pace
from orderflow_plugin.tape import bundled_tape

from .flowhelpers import TIMEOUT_FACTOR
from .test_redis_bus import KEY, Collected, consume, ids_in, trade, write


def test_a_sentinel_url_names_its_sentinels_service_and_database() -> None:
    """redis+sentinel:// lists Sentinels, then /SERVICE/DB; the passwords are parsed, and hidden when shown."""
    url = "rediss+sentinel://bot:s3cret@127.0.0.1:26379,[::1]:26380/orderflow/2?sentinel_password=hunter2"
    target = parse_sentinel(url)
    assert target.sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    assert (target.service, target.db, target.username, target.password) == ("orderflow", 2, "bot", "s3cret")
    assert (target.sentinel_password, target.ssl) == ("hunter2", True)
    assert check_url(url) == url
    shown = redacted(url)
    assert "s3cret" not in shown and "hunter2" not in shown and "bot:***@" in shown, shown


@pytest.mark.parametrize("url, problem", [
    ("redis+sentinel://127.0.0.1/orderflow", "not HOST:PORT"),
    ("redis+sentinel://127.0.0.1:26379", "/SERVICE"),
    ("redis+sentinel://127.0.0.1:26379/orderflow/zero", "is not a number"),
    ("redis+sentinel://:pw@127.0.0.1:26379/orderflow?timeout=1", "unknown option"),
], ids=["no-port", "no-service", "bad-db", "unknown-option"])
def test_a_bad_sentinel_url_is_one_line_without_its_password(url: str, problem: str) -> None:
    """A malformed Sentinel URL fails at construction in one line naming the problem, the password hidden."""
    with pytest.raises(RedisFeedError, match=problem) as caught:
        StreamWriter(url, "spot")
    assert "\n" not in str(caught.value) and "pw@" not in str(caught.value)


def test_collect_takes_a_sentinel_url(capsys: Any) -> None:
    """`orderflow collect --to redis+sentinel://...` runs (it was refused: "must start with redis://"); with no
    Sentinel up it names the fault and waits, here until its duration."""
    from orderflow_plugin.cli import main

    assert main(["collect", "--to", "redis+sentinel://127.0.0.1:1/orderflow/0", "--duration", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "must start with" not in err and "MasterNotFoundError" in err, err


async def test_writes_a_failover_lost_are_written_again_from_memory(orderflow_redis: Any) -> None:
    """When the stream ends below what a writer saw it hold (a replica promoted without the tail), the writer
    writes the lost trades again from memory before the new ones: no hole, no gap recorded."""
    writer = StreamWriter(orderflow_redis.url, "spot", hole_wait=30.0)
    for number in range(1, 101):
        writer.add_trade(trade(number))
    assert await writer.drain(5.0)
    # The promoted replica had only trades 1..60: the stream as it would stand on the new primary.
    client = aioredis.Redis.from_url(orderflow_redis.url)
    await client.delete(KEY)
    for number in range(1, 61):
        await client.xadd(KEY, {"d": trade_payload(trade(number))}, id=f"{number}-0")
    await client.aclose()
    for number in range(101, 111):
        writer.add_trade(trade(number))
    assert await writer.drain(5.0)  # old code: trade 101 waits hole_wait (30 s) behind the hole 61..100
    await writer.aclose()
    assert await ids_in(orderflow_redis.url) == list(range(1, 111))
    assert (writer.counters["failovers"], writer.counters["refilled"]) == (1, 40)
    assert await ids_in(orderflow_redis.url, gaps_key("spot", "BTCUSDT")) == []


async def test_a_consumer_group_a_failover_lost_is_made_again_where_it_left_off(orderflow_redis: Any) -> None:
    """A group that vanished (created on a primary after its last sync) is made again after the consumer's last
    acknowledged entry: every trade once, none skipped (old code: NOGROUP ended the source)."""
    url = orderflow_redis.url
    await write(url, [trade(i) for i in range(1, 21)])
    collected = Collected()
    flow = await consume(RedisSource(url, group="bots", consumer="a", start="first", block=0.1), collected)
    try:
        await collected.until(lambda: len(collected.trades) >= 20)
        client = aioredis.Redis.from_url(url)
        await client.xgroup_destroy(KEY, "bots")
        await client.aclose()
        await write(url, [trade(i) for i in range(21, 41)])
        await collected.until(lambda: len(collected.trades) >= 40)
    finally:
        await flow.stop()
    assert [t.id for t in collected.trades] == list(range(1, 41))
    assert collected.errors == []


@pytest.mark.timeout(300)
@pytest.mark.parametrize("refill, window", [(True, None), (True, 5), (False, None)],
                         ids=["refill", "refill-over-rest", "no-refill"])
async def test_three_failovers_under_load_lose_and_repeat_nothing(refill: bool, window: int | None,
                                                                  orderflow_sim_factory: Any, tmp_path: Path) -> None:
    """A primary, a replica and a Sentinel; the primary SIGKILLed three times under load after its replication link
    broke: Redis ends equal to the tape, :gaps empty, and the fan-out bot got every id once, in order; with a
    refill_window of 5 what the collectors no longer hold is fetched over REST. Without the re-fill
    (refill_window 0) the same drill loses trades: the drill can fail."""
    seed = int(os.environ.get("DRILL_SEED", random.randrange(1_000_000)))
    sim = await orderflow_sim_factory(bundled_tape(), pace=Pace(rate=100))  # 5,000 real trades in 50 s
    result = await failover_drill(sim, tmp_path, seed=seed, failovers=3, lag=1.0, refill=refill, refill_window=window)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("collector*.log")))
    summary = (f"DRILL_SEED={seed}: kills {result.kills}, failovers {result.failovers}, missing {len(result.missing)}, "
               f"duplicated {result.duplicated}, gaps {result.gaps_recorded}, refilled {result.refilled}, "
               f"refetched {result.refetched}")
    assert result.kills == 3, summary
    if refill:
        assert result.ok, f"{summary}\n{logs}"
        # The kills did lose acknowledged writes, and they were written again: from memory, else over REST (all of
        # it over REST with a window of 5).
        assert result.refilled + result.refetched > 0, summary
        assert window is None or result.refetched > 0, summary
        assert set(result.consumer_sources) == {"live"}, result.consumer_sources
    else:
        assert result.missing and result.gaps_recorded, summary


async def test_wait_replicas_waits_for_them_and_says_when_too_few_answer(tmp_path: Path, caplog: Any) -> None:
    """wait_replicas sends WAIT after each round trip: with the replica up nothing is counted; asking for more
    replicas than exist writes all the same, counts the shortfall and logs it once."""
    from orderflow_plugin.redisbus.server import RedisServer

    with RedisServer(directory=tmp_path / "p") as primary, RedisServer(directory=tmp_path / "r",
                                                                      replicaof=primary.port) as replica:
        client = aioredis.Redis.from_url(replica.url)
        async with asyncio.timeout(30 * TIMEOUT_FACTOR):
            while (await client.info("replication"))["master_link_status"] != "up":
                await asyncio.sleep(0.05)
        await client.aclose()
        enough = await write(primary.url, [trade(i) for i in range(1, 51)], wait_replicas=1, wait_timeout=5.0)
        short = await write(primary.url, [trade(i) for i in range(51, 101)], wait_replicas=2, wait_timeout=0.05)
        assert await ids_in(replica.url) == list(range(1, 101))
    assert enough.counters["unreplicated"] == 0
    assert short.counters["unreplicated"] >= 1 and short.counters["written"] == 50
    warned = [r.getMessage() for r in caplog.records if "wait_replicas" in r.getMessage()]
    assert len(warned) == 1 and "of 2 replicas" in warned[0], warned


def test_every_key_of_a_symbol_shares_one_cluster_slot() -> None:
    """A symbol's trades, bars, whales and gaps keys carry one hash tag, so they map to one Cluster slot."""
    from redis.crc import key_slot

    from orderflow_plugin.redisbus.keys import bars_key, trades_key, whales_key

    keys = [trades_key("spot", "BTCUSDT"), bars_key("spot", "BTCUSDT", "1m"), whales_key("spot", "BTCUSDT"),
            gaps_key("spot", "BTCUSDT")]
    assert len({key_slot(key.encode()) for key in keys}) == 1, keys
    assert key_slot(trades_key("spot", "ETHUSDT").encode()) != key_slot(keys[0].encode())


async def test_old_key_names_are_migrated_once_and_refused_until_then(orderflow_redis: Any, capsys: Any) -> None:
    """A Redis with the old key names makes a collector refuse in one line naming the tool; the tool renames
    them (atomically, never over a new key), and the collector then resumes after the newest id."""
    from orderflow_plugin.redisbus.collector import newest_ids
    from orderflow_plugin.redisbus.migrate import main as migrate

    url = orderflow_redis.url
    client = aioredis.Redis.from_url(url)
    for number in (1, 2, 3):
        await client.xadd("orderflow:spot:BTCUSDT:trades", {"d": trade_payload(trade(number))}, id=f"{number}-0")
    await client.xadd("orderflow:spot:BTCUSDT:bars:1m", {"open": "1"}, id="60000-0")
    stop = asyncio.Event()
    with pytest.raises(RedisFeedError, match=r"holds orderflow:spot:BTCUSDT:trades, the old name.*migrate"):
        await newest_ids(url, "spot", ("BTCUSDT",), stop)
    assert await asyncio.to_thread(migrate, [url]) == 0
    assert "2 keys renamed" in capsys.readouterr().out
    assert await newest_ids(url, "spot", ("BTCUSDT",), stop) == {"BTCUSDT": 3}
    assert await client.xlen("orderflow:{spot:BTCUSDT}:bars:1m") == 1
    assert not await client.exists("orderflow:spot:BTCUSDT:trades")
    await client.aclose()


@pytest.mark.timeout(180)
async def test_a_cluster_of_three_primaries_takes_collectors_and_a_consumer_group_across_slots(
        orderflow_sim_factory: Any, tmp_path: Path) -> None:
    """Two `orderflow collect` processes write two symbols (two slots, on different primaries) into a 3-primary
    Redis Cluster; Redis equals the tapes, and a consumer group of two bots reading both symbols gets every trade
    once between them."""
    import dataclasses

    from redis.crc import key_slot

    from orderflow_plugin.redisbus.client import newest_entry
    from orderflow_plugin.redisbus.drill import Collector, DrillResult, check_stream
    from orderflow_plugin.redisbus.keys import trades_key
    from orderflow_plugin.redisbus.server import RedisClusterServers

    btc = bundled_tape()
    eth = dataclasses.replace(btc, symbol="ETHUSDT")
    assert key_slot(trades_key("spot", "BTCUSDT").encode()) // 5462 != key_slot(trades_key("spot", "ETHUSDT").encode()) // 5462
    sim = await orderflow_sim_factory([btc, eth], pace=Pace(rate=1000))
    with RedisClusterServers(3, directory=tmp_path / "cluster") as cluster:
        url = cluster.url
        a, b = Collected(), Collected()
        bots = [await consume_symbols(RedisSource(url, group="bots", consumer=name, start="first", block=0.1), hooks)
                for name, hooks in (("a", a), ("b", b))]
        argv = ["--to", url, "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--symbol", "BTCUSDT",
                "--symbol", "ETHUSDT"]
        crew = [Collector(f"c{n}", argv, tmp_path / f"collector{n}.log") for n in (1, 2)]
        try:
            # The first collector starts both streams: a stream begins where its first writer began, so one started
            # at the same moment a little later in the tape would begin it there (docs/scale-out.md).
            await crew[0].start()
            probe = aioredis.RedisCluster(host="127.0.0.1", port=cluster.servers[0].port)
            async with asyncio.timeout(30 * TIMEOUT_FACTOR):
                while None in [await newest_entry(probe, trades_key("spot", s)) for s in ("BTCUSDT", "ETHUSDT")]:
                    await asyncio.sleep(0.05)
            await probe.aclose()
            await crew[1].start()
            try:
                await a.until(lambda: len(a.trades) + len(b.trades) >= 10_000, timeout=60)
            except TimeoutError:
                probe = aioredis.RedisCluster(host="127.0.0.1", port=cluster.servers[0].port)
                info = {k: (await probe.xlen(k), await probe.xpending(k, "bots"))
                        for k in (trades_key("spot", "BTCUSDT"), trades_key("spot", "ETHUSDT"))}
                await probe.aclose()
                got = {s: len({t.id for t in [*a.trades, *b.trades] if t.symbol == s}) for s in ("BTCUSDT", "ETHUSDT")}
                raise AssertionError(f"bots got {len(a.trades)} + {len(b.trades)} {got}; {info}") from None
        finally:
            for member in crew:
                await member.stop()
            for flow in bots:
                await flow.stop()
        reader = aioredis.RedisCluster(host="127.0.0.1", port=cluster.servers[0].port)
        result = DrillResult(seed=0)
        try:
            for symbol in ("BTCUSDT", "ETHUSDT"):
                await check_stream(reader, "spot", sim, symbol, result, 5000)
        finally:
            await reader.aclose()
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("collector*.log")))
    assert result.ok, f"{result}\n{logs}"
    for symbol in ("BTCUSDT", "ETHUSDT"):
        got = sorted(t.id for t in [*a.trades, *b.trades] if t.symbol == symbol)
        assert got == [row.id for row in btc.rows], symbol


async def consume_symbols(source: RedisSource, collected: Collected) -> Any:
    """An OrderFlow reading BTCUSDT and ETHUSDT from ``source`` into ``collected``, started."""
    from orderflow_plugin import OrderFlow, PluginManager

    manager = PluginManager()
    manager.register(collected)
    flow = OrderFlow(["BTCUSDT", "ETHUSDT"], feed=source, plugins=manager)
    await flow.start()
    return flow


async def test_a_stream_a_consumer_group_made_empty_is_a_new_stream_to_collectors(orderflow_redis: Any) -> None:
    """A bot's consumer group made before any collector wrote (XGROUP CREATE MKSTREAM) leaves an empty stream
    whose newest id reads 0-0: collectors take it as new, not as "resume after trade 0" (which waited hole_wait,
    then wrote past a hole of 3.8 billion ids into :gaps)."""
    from orderflow_plugin.redisbus.collector import newest_ids

    client = aioredis.Redis.from_url(orderflow_redis.url)
    await client.xgroup_create(KEY, "bots", id="0", mkstream=True)
    assert await newest_ids(orderflow_redis.url, "spot", ("BTCUSDT",), asyncio.Event()) == {}
    writer = await write(orderflow_redis.url, [trade(i) for i in range(100, 110)], hole_wait=30.0)
    assert await ids_in(orderflow_redis.url) == list(range(100, 110))
    assert writer.counters["gaps"] == 0 and await client.xlen(gaps_key("spot", "BTCUSDT")) == 0
    await client.aclose()


async def test_an_idle_writer_finds_a_failover_that_lost_its_tail(orderflow_redis: Any) -> None:
    """The tape is over, the writer has nothing left to write, then a replica without the tail is promoted: the
    writer still finds that the stream ends below what it saw, and writes the lost trades again from memory.
    (Seen in the Sentinel drill: the third kill came after the collectors' last write, and 1,029 trades were
    lost for good.)"""
    writer = StreamWriter(orderflow_redis.url, "spot", hole_wait=30.0)
    task = asyncio.create_task(writer.run())
    try:
        for number in range(1, 101):
            writer.add_trade(trade(number))
        async with asyncio.timeout(10 * TIMEOUT_FACTOR):
            while writer.backlog or writer.confirmed.get("BTCUSDT") != 100:
                await asyncio.sleep(0.05)
        client = aioredis.Redis.from_url(orderflow_redis.url)
        async with client.pipeline(transaction=True) as swap:  # the promoted replica had only trades 1..60, at once
            swap.delete(KEY)
            for number in range(1, 61):
                swap.xadd(KEY, {"d": trade_payload(trade(number))}, id=f"{number}-0")
            await swap.execute()
        await client.aclose()
        async with asyncio.timeout(10 * TIMEOUT_FACTOR):  # old code: nothing more to write, so nothing ever looked
            while await ids_in(orderflow_redis.url) != list(range(1, 101)):
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.aclose()
    assert (writer.counters["failovers"], writer.counters["refilled"]) == (1, 40)
