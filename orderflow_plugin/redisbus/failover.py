"""A failover drill: a primary, a replica and a Sentinel; the primary SIGKILLed under load; Redis must equal the tape.

Used by tests/test_redis_failover.py and the 10-minute run in bench/redis_bus.py. Two collectors
write through the Sentinel URL and a fan-out bot reads through it. Each failover kills whichever
node is primary; the killed node comes back as a replica of the new one. Replication is
asynchronous, so a primary may die holding writes its replica never got: ``lag`` (a share of the
failovers) makes that certain, as a broken replication link would: the replica is paused (SIGSTOP),
the primary closes its replication links (``CLIENT KILL TYPE replica``) and goes on acknowledging
writes for a moment, then it is killed and the replica resumed. Every choice comes from ``seed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sim import Simulator
from .client import connect, newest_entry
from .drill import Collector, DrillResult, check_stream
from .keys import gaps_key, trade_id, trades_key
from .server import RedisSentinel, RedisServer

__all__ = ["FailoverResult", "failover_drill"]


@dataclass
class FailoverResult(DrillResult):
    """What the drill did and found; ``consumed`` is what the fan-out bot delivered, in order."""

    failovers: list[float] = field(default_factory=list)  # seconds from each kill to the new primary answering
    gaps_recorded: int = 0  # entries in the symbols' :gaps streams
    consumed: list[int] = field(default_factory=list)
    consumer_sources: dict[str, int] = field(default_factory=dict)
    refilled: int = 0  # what the collectors wrote again from memory (from their logs)
    refetched: int = 0  # what they fetched again over REST, older than their refill_window (from their logs)
    last_played: int = -1
    consumer_in_order: bool = True  # everything the bot got, the ids past the last played one included

    @property
    def consumer_ok(self) -> bool:
        """The bot delivered every played id once, in increasing order."""
        return self.consumer_in_order and self.consumed == sorted(set(self.consumed)) \
            and len(self.consumed) == self.played

    @property
    def ok(self) -> bool:
        return super().ok and self.gaps_recorded == 0 and self.consumer_ok


class _Bot:
    """The fan-out bot: an OrderFlow reading the Sentinel URL from the first entry."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.sources: dict[str, int] = {}

    def on_trade(self, trade: Any) -> None:
        self.ids.append(trade.id)
        self.sources[trade.source] = self.sources.get(trade.source, 0) + 1


async def _primary_port(sentinel: RedisSentinel) -> int | None:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=sentinel.port, socket_timeout=2)
    try:
        address = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinel.service)
        return int(address[1]) if address else None
    finally:
        await client.aclose()


async def _known_replicas(sentinel: RedisSentinel) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=sentinel.port, socket_timeout=2)
    try:
        replicas = await client.execute_command("SENTINEL", "REPLICAS", sentinel.service)
        return sum(1 for r in replicas if r.get(b"flags") == b"slave" and r.get(b"master-link-status") == b"ok")
    finally:
        await client.aclose()


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if await predicate():
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"failover drill: {what} within {timeout:g} s")
        await asyncio.sleep(0.1)


async def failover_drill(simulator: Simulator, workdir: Path, *, seed: int, failovers: int = 3, collectors: int = 2,
                         every: tuple[float, float] = (2.0, 4.0), lag: float = 0.67, refill: bool = True,
                         refill_window: int | None = None,
                         hole_wait: float = 2.0, duration: float = 0.0, settle: float = 60.0) -> FailoverResult:
    """Kill the primary ``failovers`` times while ``collectors`` write ``simulator``'s tape through Sentinel."""
    from ..stream import OrderFlow
    from .source import RedisSource

    rng = random.Random(seed)
    result = FailoverResult(seed)
    symbols = list(simulator.feeds)
    nodes = [RedisServer(directory=workdir / "node1")]
    nodes[0].start()
    nodes.append(RedisServer(directory=workdir / "node2", replicaof=nodes[0].port).start())
    sentinel = RedisSentinel(nodes[0].port, directory=workdir / "sentinel", down_after=1000).start()
    bot = _Bot()
    flow: Any = None
    crew: list[Collector] = []
    try:
        await _until(lambda: _known(sentinel), 30, "Sentinel did not find the replica")
        env = {"ORDERFLOW_HOOKS__REDIS__HOLE_WAIT": str(hole_wait)}
        if not refill:
            env["ORDERFLOW_HOOKS__REDIS__REFILL_WINDOW"] = "0"
        elif refill_window is not None:
            env["ORDERFLOW_HOOKS__REDIS__REFILL_WINDOW"] = str(refill_window)
        argv = ["--to", sentinel.url, "--ws-url", simulator.ws_url, "--rest-url", simulator.rest_url,
                *(a for s in symbols for a in ("--symbol", s))]
        if simulator.market != "spot":
            argv += ["--market", simulator.market]
        crew = [Collector(f"c{n}", argv, workdir / f"collector{n}.log", env) for n in range(1, collectors + 1)]
        began = time.monotonic()
        for member in crew:
            await member.start()
        flow = OrderFlow(symbols, market=simulator.market, feed=RedisSource(sentinel.url, start="first"),
                         plugins=[bot])
        await flow.start()
        by_port = {node.port: node for node in nodes}
        for _ in range(failovers):
            await asyncio.sleep(rng.uniform(*every))  # kills go on past the market's end: a drill asks for them all
            old = by_port[await _primary_port(sentinel) or nodes[0].port]
            replica = next(node for node in nodes if node is not old)
            lagging = rng.random() < lag
            if lagging and replica._process is not None:  # a replication link that broke a moment before the crash
                replica._process.send_signal(signal.SIGSTOP)  # so that it can't reconnect until the primary is gone
                await _drop_replicas(old)
                await asyncio.sleep(rng.uniform(0.2, 0.6))  # the primary acknowledges writes its replica never gets
            killed_at = time.monotonic()
            old.kill()
            result.kills += 1
            if lagging and replica._process is not None:
                replica._process.send_signal(signal.SIGCONT)

            async def moved(old_port: int = old.port) -> bool:
                return (await _primary_port(sentinel)) not in (None, old_port)

            await _until(moved, 30, "Sentinel promoted no replica")
            new_port = await _primary_port(sentinel)
            client = by_port[new_port]
            await _until(lambda c=client: _answers(c), 10, "the new primary did not answer")
            result.failovers.append(round(time.monotonic() - killed_at, 2))
            old.replicaof = new_port  # it comes back as a replica of the new primary
            old.restart()
            await _until(lambda: _known(sentinel), 30, "the old primary did not come back as a replica")
        while not simulator.record.market_finished and not (duration and time.monotonic() - began >= duration):
            await asyncio.sleep(0.2)
        played = {s: simulator.happened(s) for s in symbols}
        last = {s: simulator.feeds[s].row(n - 1).id for s, n in played.items() if n}
        result.last_played = max(last.values(), default=-1)
        reader = connect(sentinel.url)
        try:
            async def caught_up() -> bool:
                for s, i in last.items():
                    newest = await newest_entry(reader, trades_key(simulator.market, s))
                    if newest is None or trade_id(newest) < i:
                        return False
                return bool(bot.ids) and bot.ids[-1] >= max(last.values())

            with contextlib.suppress(TimeoutError):
                await _until(caught_up, settle, "Redis did not catch up")
            for s in symbols:
                await check_stream(reader, simulator.market, simulator, s, result, played[s])
                result.gaps_recorded += await reader.xlen(gaps_key(simulator.market, s))
        finally:
            await reader.aclose()
    finally:
        if flow is not None:
            await flow.stop()
        for member in crew:
            await member.stop()
        sentinel.stop()
        for node in nodes:
            node.stop()
    # A looped market goes on while the drill settles: what the bot got past the last played id is not compared,
    # but must still have come once and in order.
    result.consumed = [number for number in bot.ids if number <= result.last_played]
    result.consumer_in_order = all(a < b for a, b in zip(bot.ids, bot.ids[1:], strict=False))
    result.consumer_sources = dict(bot.sources)
    result.refilled = sum(_counted(member.log, r"writing (\d+) trades again") for member in crew)
    result.refetched = sum(_counted(member.log, r"fetched again over REST \((\d+) trades\)") for member in crew)
    result.seconds = time.monotonic() - began
    return result


async def _known(sentinel: RedisSentinel) -> bool:
    return await _known_replicas(sentinel) >= 1


async def _drop_replicas(node: RedisServer) -> None:
    """Close the primary's replication links (CLIENT KILL TYPE replica): what it writes next reaches no replica."""
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
    try:
        await client.client_kill_filter(_type="replica")
    finally:
        await client.aclose()


async def _answers(node: RedisServer) -> bool:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1)
    try:
        return (await client.info("replication"))["role"] == "master"
    finally:
        await client.aclose()


def _counted(log: Path, pattern: str) -> int:
    """The sum of the numbers ``pattern`` finds in a collector's log lines."""
    import re

    with contextlib.suppress(OSError):
        return sum(int(n) for n in re.findall(pattern, log.read_text(errors="replace")))
    return 0
