"""Soak: 10,000,000 trades through OrderFlow with a fault every --fault-every trades (a reset,
a blackhole or a skip of ids, in turn); reports RSS growth, trades lost and duplicated.

The simulator runs in its own process, as fast as the client reads, replaying the bundled real
tape looped (ids and times shifted, so the expected sequence is every id in order). Connection
k gets "skip_ids" (count --skip) after --fault-every messages and then, after twice that, a
"reset_after" (odd k) or a "blackhole_after" (even k) that the stall watchdog has to notice.
The hook checks every delivered id against the one before it: a jump is a lost trade, a
repeat or a step back is a duplicate. RSS is sampled every 1,000,000 trades; growth is from
the first sample (after the first million) to the last.

Run: .venv/bin/python bench/soak.py [--trades 10000000] [--fault-every 250000] [--transport fast]
Targets (issue #9): RSS growth under 20 MB; 0 lost; 0 duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe
from _sim import simulator

from orderflow_plugin import OrderFlow, PluginManager, Reconnect, Reporting, Timeouts
from orderflow_plugin.transport import READERS

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE / 2**20


class Checker:
    """The hook: checks the id sequence, samples RSS, stops at the target."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.seen = self.lost = self.duplicated = 0
        self.last: int | None = None
        self.rss: list[tuple[int, float]] = []
        self.done = asyncio.Event()

    def on_trade(self, trade: object) -> None:
        agg_id = trade.id  # type: ignore[attr-defined]
        last = self.last
        if last is not None:
            if agg_id <= last:
                self.duplicated += 1
                return
            self.lost += agg_id - last - 1
        self.last = agg_id
        self.seen += 1
        if self.seen % 1_000_000 == 0:
            self.rss.append((self.seen, rss_mb()))
        if self.seen >= self.target:
            self.done.set()


def scenario(trades: int, every: int, skip: int) -> dict:
    connections = []
    for k in range(1, math.ceil(trades / (2 * every)) + 2):
        kind = "reset_after" if k % 2 else "blackhole_after"
        ending = {"kind": kind, "after": 2 * every}
        connections.append({"faults": [{"kind": "skip_ids", "after": every, "count": skip}, ending]})
    return {"connection": connections}


async def soak(url: str, trades: int, stall: float,
               transport: str) -> tuple[Checker, OrderFlow, float, float]:
    checker = Checker(trades)
    manager = PluginManager()
    manager.register(checker, name="checker")
    flow = OrderFlow(["BTCUSDT"], ws_url=url, rest_url=url.replace("ws://", "http://"), plugins=manager,
                     transport=transport, timeouts=Timeouts(stall=stall), reconnect=Reconnect(backoff_initial=0.1),
                     reporting=Reporting(loop_block_threshold=0))
    async with flow:
        wall, cpu = time.perf_counter(), time.process_time()
        await checker.done.wait()
        return checker, flow, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument("--fault-every", type=int, default=250_000, help="messages between faults on a connection")
    parser.add_argument("--skip", type=int, default=500, help="ids each skip_ids fault leaves out (REST backfills)")
    parser.add_argument("--stall-timeout", type=float, default=1.0, help="seconds of silence before a reconnect")
    parser.add_argument("--transport", default="fast", choices=READERS, help="frame reader (fast: the default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "soak.json"
        path.write_text(json.dumps(scenario(args.trades, args.fault_every, args.skip)))
        with simulator("--asap", "--loop", "--scenario", str(path)) as sim:
            checker, flow, wall, cpu = asyncio.run(soak(sim.url, args.trades, args.stall_timeout, args.transport))
    counters = flow.summary()
    faults = counters["reconnects"] + counters["gaps"]
    print(f"machine: {describe()}")
    print(f"soak: {checker.seen:,} real BTCUSDT trades (bundled tape looped) from the simulator in its own process,")
    print(f"  a fault every {args.fault_every:,} messages per connection (skip_ids of {args.skip}, then reset or "
          f"blackhole), stall timeout {args.stall_timeout:g} s, transport {args.transport!r}")
    print(f"  {wall:.1f} s wall, {checker.seen / wall:,.0f} trades/s, CPU {cpu / checker.seen * 1e6:.2f} µs/trade; "
          f"about one fault every {wall / max(1, faults):.1f} s")
    print(f"  reconnects {counters['reconnects']}, stalls {counters['stalls']}, gaps {counters['gaps']}, "
          f"backfilled {counters['backfilled']:,}, duplicates dropped {counters['duplicates']:,}, "
          f"plugin errors {counters['plugin_errors']}, slow hooks {counters['slow_hooks']}")
    print("  RSS (trades: MB): " + ", ".join(f"{n / 1e6:g}M: {mb:.1f}" for n, mb in checker.rss))
    growth = checker.rss[-1][1] - checker.rss[0][1] if len(checker.rss) > 1 else 0.0
    print(f"  RSS growth from the first to the last sample: {growth:+.1f} MB (target < 20)")
    print(f"  lost: {checker.lost} (target 0), duplicated: {checker.duplicated} (target 0)")


if __name__ == "__main__":
    main()
