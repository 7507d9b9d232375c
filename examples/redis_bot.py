"""A bot fed from Redis Streams: the collector writes, the bot reads, with a checkpoint so a restart resumes exactly.

    python examples/redis_bot.py --duration 10          # offline: its own redis-server, simulator and collector
    python examples/redis_bot.py --from redis://127.0.0.1:6379/0 --checkpoint bot.ckpt   # `orderflow collect`

Offline it starts a redis-server (Debian's `redis-server` must be installed), the simulator on the
bundled real tape, and a collector (the bundled redis plugin on a live stream) in this process;
with ``--from`` it reads what your collectors write. See docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from delta_alert import DeltaAlert  # examples/delta_alert.py, beside this file

from orderflow_plugin import OrderFlow, Sequencing
from orderflow_plugin.redisbus.source import RedisSource


class Tally:
    """Counts what the bot gets, and any hole Redis had."""

    def __init__(self) -> None:
        self.trades = 0
        self.gaps: list[tuple[int, int]] = []

    def on_trade(self, trade: Any) -> None:
        self.trades += 1

    def on_gap(self, symbol: str, first_missing: int, last_missing: int) -> None:
        self.gaps.append((first_missing, last_missing))


async def bot(url: str, checkpoint: str, duration: float) -> None:
    """Read BTCUSDT from Redis for ``duration`` seconds with a strategy plugin; resume from ``checkpoint``."""
    strategy, tally = DeltaAlert(min_delta=Decimal(5)), Tally()
    flow = OrderFlow(["BTCUSDT"], feed=RedisSource(url, start="first"), plugins=[strategy, tally],
                     sequencing=Sequencing(checkpoint_path=checkpoint))
    async with flow:
        await asyncio.sleep(duration)
    print(f"bot: {tally.trades} trades from Redis, gaps {tally.gaps}, delta alerts {len(strategy.alerts)}, "
          f"last id {flow.health()['symbols']['BTCUSDT']['last_id']}", flush=True)


@contextlib.asynccontextmanager
async def offline_collector() -> Any:
    """A redis-server, the simulator and a collector writing into it: what `orderflow collect` does."""
    from orderflow_plugin.bundled.redis_streams import RedisPublisher
    from orderflow_plugin.redisbus.server import RedisServer
    from orderflow_plugin.sim import Pace, Simulator

    with RedisServer() as redis:
        async with Simulator(pace=Pace(speed=100)) as sim:
            publisher = RedisPublisher(redis.url, market="spot")
            async with OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=[publisher]):
                yield redis.url
            await publisher.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="url", default=None, help="Redis URL (default: an offline collector)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (default: a temporary one)")
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    checkpoint = args.checkpoint or str(Path(tempfile.mkdtemp()) / "bot.ckpt")
    if args.url:
        await bot(args.url, checkpoint, args.duration)
        return
    async with offline_collector() as url:
        await bot(url, checkpoint, args.duration)


if __name__ == "__main__":
    asyncio.run(main())
