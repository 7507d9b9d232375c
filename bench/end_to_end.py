"""End to end: simulator (own process) -> OrderFlow (decode, sequence, every default metric, dispatch)
-> one no-op hook and one no-op signal receiver, against the ceiling of a bare websockets client.

The simulator replays the bundled real tape looped, as fast as the client reads. The ceiling is a
plain `websockets` client that only receives the same frames. Reports trades/s, CPU per trade and
peak RSS of this process, and the ratio plugin/ceiling, for each frame reader (``transport``):
``fast`` (the default since issue #16 part 10: our reader of data frames after websockets'
handshake) and ``websockets`` (websockets parses every frame).
Each reader also runs once with ``flow=Flow(enabled=False)`` (receive, decode, sequence, hook + signal, no
order-flow engine): the floor of the pipeline around the engine, printed as such.

Run: .venv/bin/python bench/end_to_end.py [--trades 1000000] [--transports fast,websockets]
Targets (issue #9): with the default transport (now ``fast``) >= 0.75 x the bare-websockets
ceiling; with the fast transport >= 250,000 trades/s. (Issue #16 part 10 measures the 0.75 x
against a bare client that also decodes with msgspec, side by side with the peers: peers.py.)
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe
from _sim import simulator

from orderflow_plugin import Flow, OrderFlow, PluginManager, Reporting, Timeouts, signals


class Count:
    """The no-op hook: counts and stops at the target."""

    def __init__(self, target: int) -> None:
        self.target, self.seen = target, 0
        self.done = asyncio.Event()

    def on_trade(self, trade: object) -> None:
        self.seen += 1
        if self.seen >= self.target:
            self.done.set()


def receiver(sender: object, trade: object) -> None:
    """The no-op signal receiver."""


async def ceiling(url: str, n: int) -> tuple[float, float]:
    async with websockets.connect(f"{url}/stream?streams=btcusdt@aggTrade", max_queue=None) as ws:
        await ws.recv()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            await ws.recv()
        return time.perf_counter() - wall, time.process_time() - cpu


async def plugin(url: str, n: int, transport: str, metrics: bool = True) -> tuple[float, float]:
    count = Count(n)
    manager = PluginManager()
    manager.register(count, name="count")
    signals.trade.connect(receiver)
    flow = OrderFlow(["BTCUSDT"], ws_url=url, rest_url=url.replace("ws://", "http://"), plugins=manager,
                     reader=transport, timeouts=Timeouts(stall=60), flow=Flow(enabled=metrics),
                     reporting=Reporting(loop_block_threshold=0))
    try:
        async with flow:
            while count.seen == 0:
                await asyncio.sleep(0.001)
            start_seen = count.seen
            count.target = start_seen + n
            cpu, wall = time.process_time(), time.perf_counter()
            await count.done.wait()
            return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        signals.trade.disconnect(receiver)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--transports", default="fast,websockets", help="frame readers to run, comma separated")
    args = parser.parse_args()
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    runs = {}
    with simulator("--asap", "--loop") as sim:
        bare_wall, bare_cpu = asyncio.run(ceiling(sim.url, args.trades))
        for transport in transports:
            runs[transport] = asyncio.run(plugin(sim.url, args.trades, transport))
        floors = {t: asyncio.run(plugin(sim.url, args.trades, t, metrics=False)) for t in transports}
    n = args.trades
    print(f"machine: {describe()}")
    print(f"end to end, {n:,} real BTCUSDT trades (bundled tape looped) from the simulator in its own process:")
    print(f"  ceiling, bare websockets recv(): {n / bare_wall:,.0f} trades/s, CPU {bare_cpu / n * 1e6:.2f} µs/trade")
    for transport, (flow_wall, flow_cpu) in runs.items():
        print(f"  OrderFlow, transport {transport!r} (decode, sequence, 1s/1m/5m bars + footprint + whales, "
              f"hook + signal): {n / flow_wall:,.0f} trades/s, CPU {flow_cpu / n * 1e6:.2f} µs/trade, "
              f"ratio plugin/ceiling {bare_wall / flow_wall:.2f}")
    for transport, (flow_wall, flow_cpu) in floors.items():
        print(f"  floor, OrderFlow(flow=Flow(enabled=False)), transport {transport!r} (decode, sequence, "
              f"hook + signal, no engine): {n / flow_wall:,.0f} trades/s, CPU {flow_cpu / n * 1e6:.2f} µs/trade, "
              f"ratio plugin/ceiling {bare_wall / flow_wall:.2f}")
    print("  targets: default ('fast') ratio >= 0.75; 'fast' >= 250,000 trades/s")
    print(f"  peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
