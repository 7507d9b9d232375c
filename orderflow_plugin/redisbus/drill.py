"""A kill drill: collectors killed with SIGKILL at random while the simulator plays a tape; Redis must equal the tape.

Used by the HA test (tests/test_redis_ha.py) and the 10-minute run in bench/redis_bus.py. Every
choice comes from ``seed``, so a failing drill is one line to repeat.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..decode import Decoder
from ..sim import Simulator
from .client import newest_entry
from .keys import trade_id, trades_key

__all__ = ["Collector", "DrillResult", "check_stream", "kill_drill"]


@dataclass
class DrillResult:
    """What a drill did and found."""

    seed: int
    kills: int = 0
    played: int = 0
    stored: int = 0
    missing: list[int] = field(default_factory=list)
    duplicated: int = 0
    unequal: list[int] = field(default_factory=list)  # ids whose stored values differ from the tape
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Redis holds every played trade once, with the tape's values."""
        return self.played > 0 and not self.missing and not self.duplicated and not self.unequal \
            and self.stored == self.played


class Collector:
    """One ``orderflow collect`` process, started again after each kill."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.env = env or {}
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "ORDERFLOW_ENV": "testing", **self.env}
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "orderflow_plugin", "collect", *self.argv, "--name", self.name,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()


async def check_stream(client: Any, market: str, simulator: Simulator, symbol: str, result: DrillResult,
                       played: int) -> None:
    """Compare the trade stream in Redis, up to the ``played``-th trade, with what the simulator played."""
    feed = simulator.feeds[symbol]
    rows = {feed.row(position).id: feed.row(position) for position in range(played)}
    last = feed.row(played - 1).id if played else -1
    decode = Decoder(market).decode
    seen: set[int] = set()
    stored = 0
    async for entry, fields in _entries(client, trades_key(market, symbol)):
        number = trade_id(entry)
        if number > last:  # played after the drill ended (a looped market goes on)
            break
        stored += 1
        if number in seen:
            result.duplicated += 1
        seen.add(number)
        trade = decode(fields[b"d"])
        row = rows.get(number)
        expected = row.to_trade(symbol, market) if row is not None else None
        if expected is None or (trade.price, trade.qty, trade.time, trade.side, trade.first_id, trade.last_id) != \
                (expected.price, expected.qty, expected.time, expected.side, expected.first_id, expected.last_id):
            result.unequal.append(number)
    result.played += played
    result.stored += stored
    result.missing += [number for number in rows if number not in seen]


async def _entries(client: Any, key: str) -> Any:
    start = "-"
    while True:
        batch = await client.xrange(key, start, "+", count=10_000)
        for item in batch:
            yield item
        if len(batch) < 10_000:
            return
        start = "(" + batch[-1][0].decode()


async def kill_drill(url: str, simulator: Simulator, workdir: Path, *, seed: int, collectors: int = 2,
                     every: tuple[float, float] = (1.0, 3.0), down: tuple[float, float] = (0.2, 1.5),
                     duration: float = 0.0, settle: float = 60.0) -> DrillResult:
    """Run ``collectors`` against ``simulator`` until its market ends (or ``duration`` s), SIGKILLing one at
    random every ``every`` seconds (and, once, all of them at the same time); then wait for Redis to catch up
    with what was played by then and compare."""
    import redis.asyncio as aioredis

    rng = random.Random(seed)
    result = DrillResult(seed)
    symbols = list(simulator.feeds)
    argv = ["--to", url, "--ws-url", simulator.ws_url, "--rest-url", simulator.rest_url,
            *(a for s in symbols for a in ("--symbol", s))]
    if simulator.market != "spot":
        argv += ["--market", simulator.market]
    crew = [Collector(f"c{n}", argv, workdir / f"collector{n}.log") for n in range(1, collectors + 1)]
    began = time.monotonic()
    for member in crew:
        await member.start()
    all_down_done = False
    try:
        def over() -> bool:
            return simulator.record.market_finished or bool(duration and time.monotonic() - began >= duration)

        while not over():
            await asyncio.sleep(rng.uniform(*every))
            if over():
                break
            victims = crew if not all_down_done and time.monotonic() - began > 5 else [rng.choice(crew)]
            all_down_done = all_down_done or len(victims) > 1
            for victim in victims:
                await victim.kill()
                result.kills += 1
            await asyncio.sleep(rng.uniform(*down) * (2 if len(victims) > 1 else 1))
            for victim in victims:
                await victim.start()
        client = aioredis.Redis.from_url(url)
        try:
            deadline = time.monotonic() + settle
            played = {s: simulator.happened(s) for s in symbols}
            last = {s: simulator.feeds[s].row(n - 1).id for s, n in played.items() if n}
            while time.monotonic() < deadline:
                newest = {s: await newest_entry(client, trades_key(simulator.market, s)) for s in last}
                if all(newest[s] is not None and trade_id(newest[s]) >= i for s, i in last.items()):
                    break
                await asyncio.sleep(0.1)
            for s in symbols:
                await check_stream(client, simulator.market, simulator, s, result, played[s])
        finally:
            await client.aclose()
    finally:
        for member in crew:
            await member.stop()
    result.seconds = time.monotonic() - began
    return result
