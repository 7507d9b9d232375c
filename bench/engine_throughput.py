"""Order-flow engine throughput: decoded trades in, metrics out, on the real tape looped.

Three windows (1s, 1m, 5m), footprint at a 10 USDT tick and both whale rules on, as the
defaults. Trades are built ahead of each timed pass (5,000 at a time, ids and times shifted
per loop as the simulator does), so only FlowEngine.add is timed. Peak RSS is sampled along
the run to show memory stays flat.

Run: .venv/bin/python bench/engine_throughput.py [--trades 1000000]
Target (issue #6): at least 300,000 trades/s for the engine alone, memory flat.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe

from orderflow_plugin import FlowEngine, Trade, bundled_tape
from orderflow_plugin.sim import SymbolFeed


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    args = parser.parse_args()
    tape = bundled_tape()
    feed = SymbolFeed(tape, loop=True)
    engine = FlowEngine("BTCUSDT")  # the defaults: 1s/1m/5m, footprint tick 10, whales on
    metrics = 0
    elapsed = 0.0
    samples = []
    position = 0
    while position < args.trades:
        batch = []
        for p in range(position, min(position + len(feed), args.trades)):
            r = feed.row(p)
            batch.append(Trade("BTCUSDT", r.id, tape.rows[p % len(feed)].to_trade("BTCUSDT").price,
                               tape.rows[p % len(feed)].to_trade("BTCUSDT").qty, r.first_id, r.last_id, r.time,
                               "sell" if r.buyer_maker else "buy", r.event_time))
        add = engine.add
        started = time.perf_counter()
        for trade in batch:
            out = add(trade)
            if out:
                metrics += len(out)
        elapsed += time.perf_counter() - started
        position += len(batch)
        if position % 100_000 < len(feed):
            samples.append((position, rss_mb()))
    rate = position / elapsed
    print(f"machine: {describe()}")
    print(f"engine: {position:,} real BTCUSDT trades (bundled 5,000-trade tape looped), windows 1s/1m/5m, "
          f"footprint tick 10, whale rules absolute 100k + 99.9th percentile of 1,000")
    print(f"  {elapsed:.2f} s in FlowEngine.add = {rate:,.0f} trades/s ({elapsed / position * 1e6:.2f} µs/trade); "
          f"{metrics:,} metrics out")
    print("  RSS along the run (trades: MB): " + ", ".join(f"{n:,}: {mb:.1f}" for n, mb in samples))
    growth = samples[-1][1] - samples[0][1] if len(samples) > 1 else 0.0
    print(f"  RSS growth from the first to the last sample: {growth:+.1f} MB")
    print(f"target >= 3,000,000 trades/s (issue #28): {'met' if rate >= 3_000_000 else 'NOT met'}")
    # Memory per symbol: what one engine holds after 100,000 trades (open and last closed bars, footprint
    # levels, the whale ranking, cached bucket prices), the trades built before tracing starts.
    base = [row.to_trade("BTCUSDT") for row in tape.rows]
    trades = []
    for p in range(100_000):
        r, seen = feed.row(p), base[p % len(base)]
        trades.append(Trade("BTCUSDT", r.id, seen.price, seen.qty, r.first_id, r.last_id, r.time, seen.side,
                            r.event_time))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    held = FlowEngine("BTCUSDT")
    for trade in trades:
        held.add(trade)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    print(f"  memory per symbol: one engine holds {grown / 1024:,.0f} KiB after {len(trades):,} trades (tracemalloc)")


if __name__ == "__main__":
    main()
