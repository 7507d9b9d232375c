"""Redis Streams between collectors and bots (issue #19): throughput, end-to-end latency, and a long kill drill.

- **throughput**: a collector (the full pipeline: decode, sequence, engine, the redis plugin's exactly-once
  append script) reading the simulator as fast as it can and writing to a local redis-server; trades
  written per second, and the same stream without the plugin for the ratio.
- **latency**: the simulator at fixed rates (default 1k and 10k trades/s, frames sent at their time); from
  the moment the collector's event loop hands the socket's bytes to its connection (``data_received``) to a
  bot's ``on_trade`` fed from Redis (``OrderFlow(feed=RedisSource(...))``): p50, p99, max. Collector and
  bot share one process and one clock (and the two cores with the simulator and Redis).
- **drill** (``--drill 600``): two ``orderflow collect`` processes on one Redis, one SIGKILLed every 30 s
  (and once both), the simulator playing the real tape looped; then Redis is compared, trade by trade,
  with what the simulator played: 0 lost, 0 duplicated is the target.
- **wait_replicas** (``--replicas``): the latency run again on a primary with one replica, without and with
  ``wait_replicas = 1`` (WAIT after each round trip), in the same run.
- **failover drill** (``--failover-drill 600``): a primary, a replica and a Sentinel; two collectors and a
  fan-out bot on the Sentinel URL; the primary SIGKILLed every ``--every`` s (its replication link broken
  first, so each kill loses acknowledged writes), the killed node back as a replica; then Redis and the bot
  against the tape.

Run: .venv/bin/python bench/redis_bus.py [--seconds 10] [--rates 1000,10000] [--drill 600] [--replicas]
     [--failover-drill 600]
Needs redis-server (make test installs Debian's).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe
from _sim import simulator
from latency import _arrived, _clock, _timed  # the read time each trade's bytes reached Python

from orderflow_plugin import OrderFlow, PluginManager
from orderflow_plugin.bundled.redis_streams import RedisPublisher
from orderflow_plugin.redisbus.server import RedisServer
from orderflow_plugin.redisbus.source import RedisSource
from orderflow_plugin.wsconnection import WsConnection


class Stamp:
    """The collector's hook: when each trade's bytes reached Python."""

    def __init__(self) -> None:
        self.arrived: dict[int, int] = {}

    def on_trade(self, trade) -> None:  # type: ignore[no-untyped-def]
        self.arrived[trade.id] = _arrived[0]


class Latency:
    """The bot's hook: socket-to-on_trade for each trade, through Redis."""

    def __init__(self, stamp: Stamp) -> None:
        self.stamp = stamp
        self.samples: list[int] = []

    def on_trade(self, trade) -> None:  # type: ignore[no-untyped-def]
        began = self.stamp.arrived.pop(trade.id, 0)
        if began:
            self.samples.append(_clock() - began)


async def throughput(redis_url: str, seconds: float, publish: bool) -> float:
    """Trades per second through a collector, with (or without) the Redis plugin, reading as fast as it can."""
    with simulator("--asap", "--loop") as sim:
        publisher = RedisPublisher(redis_url, market="spot") if publish else None
        flow = OrderFlow(["BTCUSDT"], ws_url=sim.url, rest_url=sim.url.replace("ws://", "http://"),
                         plugins=[publisher] if publisher else [])
        await flow.start()
        await asyncio.sleep(1.0)  # connected and warm
        if publisher is not None:
            first, began = publisher.writer.counters["written"], time.perf_counter()
        else:
            first, began = flow.counters["trades"], time.perf_counter()
        await asyncio.sleep(seconds)
        done = publisher.writer.counters["written"] if publisher is not None else flow.counters["trades"]
        rate = (done - first) / (time.perf_counter() - began)
        await flow.stop()
        if publisher is not None:
            await publisher.aclose()
        return rate


async def latency(redis_url: str, rate: int, seconds: float, wait_replicas: int = 0) -> list[int]:
    """Socket-to-bot latencies (ns) at ``rate`` trades/s."""
    with simulator("--rate", str(rate), "--smooth", "--loop") as sim:
        stamp = Stamp()
        publisher = RedisPublisher(redis_url, market="spot", wait_replicas=wait_replicas)
        collector = OrderFlow(["BTCUSDT"], ws_url=sim.url, rest_url=sim.url.replace("ws://", "http://"),
                              plugins=[stamp, publisher])
        bot_hooks = PluginManager()
        measured = Latency(stamp)
        bot_hooks.register(measured)
        bot = OrderFlow(["BTCUSDT"], feed=RedisSource(redis_url), plugins=bot_hooks)
        await bot.start()
        await collector.start()
        await asyncio.sleep(1.0)
        measured.samples.clear()
        await asyncio.sleep(seconds)
        samples = list(measured.samples)
        await collector.stop()
        await bot.stop()
        return samples


async def drill(seconds: float, every: float) -> None:
    """Two collectors, one killed every ``every`` s for ``seconds``, then Redis against the tape."""
    from orderflow_plugin.redisbus.drill import kill_drill
    from orderflow_plugin.sim import Pace, Simulator
    from orderflow_plugin.tape import bundled_tape

    with tempfile.TemporaryDirectory() as folder, RedisServer(directory=Path(folder) / "redis") as server:
        sim = Simulator(bundled_tape(), pace=Pace(rate=200), loop=True)
        await sim.start()
        try:
            result = await kill_drill(server.url, sim, Path(folder), seed=int(time.time()), every=(every, every),
                                      down=(1.0, 3.0), duration=seconds, settle=120.0)
        finally:
            await sim.stop()
    print(f"drill: {result.seconds:.0f} s, {result.kills} SIGKILLs, {result.played} trades played, "
          f"{result.stored} in Redis, {len(result.missing)} lost, {result.duplicated} duplicated, "
          f"{len(result.unequal)} with other values (seed {result.seed}): {'OK' if result.ok else 'FAILED'}")


async def failover(seconds: float, every: float) -> None:
    """The Sentinel failover drill for ``seconds``, a failover every ``every`` s."""
    from orderflow_plugin.redisbus.failover import failover_drill
    from orderflow_plugin.sim import Pace, Simulator
    from orderflow_plugin.tape import bundled_tape

    with tempfile.TemporaryDirectory() as folder:
        sim = Simulator(bundled_tape(), pace=Pace(rate=200), loop=True)
        await sim.start()
        try:
            result = await failover_drill(sim, Path(folder), seed=int(time.time()), failovers=int(seconds // every),
                                          every=(every, every), lag=1.0, duration=seconds, settle=120.0)
        finally:
            await sim.stop()
    times = sorted(result.failovers)
    print(f"failover drill: {result.seconds:.0f} s, {result.kills} primaries SIGKILLed (promotion took "
          f"{times[0]:.1f}-{times[-1]:.1f} s), {result.played} trades played, {result.stored} in Redis, "
          f"{len(result.missing)} lost, {result.duplicated} duplicated, {result.refilled} written again, "
          f"{result.gaps_recorded} gaps recorded; the bot delivered {len(result.consumed)} "
          f"({'every id once, in order' if result.consumer_ok else 'NOT every id once in order'}); "
          f"seed {result.seed}: {'OK' if result.ok else 'FAILED'}")


async def replicas(rates: list[int], seconds: float) -> None:
    """Latency on a primary with one replica, without and with wait_replicas = 1."""
    import redis.asyncio as aioredis

    with tempfile.TemporaryDirectory() as folder:
        for rate in rates:
            for wait in (0, 1):
                with RedisServer(appendfsync="everysec", directory=Path(folder) / f"p{rate}{wait}") as primary, \
                        RedisServer(appendfsync="everysec", directory=Path(folder) / f"r{rate}{wait}",
                                    replicaof=primary.port) as replica:
                    client = aioredis.Redis.from_url(replica.url)
                    while (await client.info("replication"))["master_link_status"] != "up":
                        await asyncio.sleep(0.05)
                    await client.aclose()
                    samples = await latency(primary.url, rate, seconds, wait_replicas=wait)
                print(f"one replica, wait_replicas={wait}, {rate:,} trades/s: p50 {_p(samples, 0.5):,.0f} us, "
                      f"p99 {_p(samples, 0.99):,.0f} us, max {max(samples) / 1000:,.0f} us")


def _p(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--drill", type=float, default=0.0, help="seconds of kill drill (0 = none)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between SIGKILLs in the drill")
    parser.add_argument("--failover-drill", type=float, default=0.0, help="seconds of Sentinel failover drill")
    parser.add_argument("--replicas", action="store_true", help="latency with one replica, wait_replicas 0 and 1")
    args = parser.parse_args()
    print(describe())
    if args.drill:
        await drill(args.drill, args.every)
        return
    if args.failover_drill:
        await failover(args.failover_drill, args.every)
        return
    if args.replicas:
        await replicas([int(r) for r in args.rates.split(",")], args.seconds)
        return
    def fresh() -> RedisServer:  # each measurement on an empty Redis: a replayed tape would be all duplicates
        return RedisServer(appendfsync="everysec")

    with fresh() as server:
        bare = await throughput(server.url, args.seconds, publish=False)
    with fresh() as server:
        into = await throughput(server.url, args.seconds, publish=True)
    print(f"collector throughput: {into:,.0f} trades/s written to Redis (appendfsync everysec), reading as fast "
          f"as it can; {bare:,.0f} trades/s read without the redis plugin ({into / bare:.2f} x)")
    for rate in (int(r) for r in args.rates.split(",")):
        with fresh() as server:
            samples = await latency(server.url, rate, args.seconds)
        print(f"socket -> Redis -> bot on_trade at {rate:,} trades/s: {len(samples):,} trades, "
              f"p50 {_p(samples, 0.5):,.0f} us, p99 {_p(samples, 0.99):,.0f} us, max {max(samples) / 1000:,.0f} us, "
              f"mean {statistics.fmean(samples) / 1000:,.0f} us")


if __name__ == "__main__":
    WsConnection.data_received = _timed(WsConnection.data_received)  # type: ignore[method-assign]
    asyncio.run(main())
