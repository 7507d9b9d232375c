"""The hot path, compiled against pure, and the fixed-point engine against the Decimal engine it replaced.

Each round runs one child process per path (compiled, then ``ORDERFLOW_PURE=1``), back to back. A child
times, in CPU seconds, interleaved in its own process: the fixed-point ``FlowEngine`` of its path and
the Decimal engine as it was before issue #28 (``tests/decimal_engine.py``, pure Python on both
paths), on the bundled real tape looped with the default windows, footprint and whale rules; then
``Decoder.decode`` on the real frames; then a plain replay of a local CSV tape through the whole
pipeline (``orderflow_plugin.replay``, one counting hook). The machine is shared, so compare the
ratios within a round, not the rates across runs.

Run: .venv/bin/python bench/hotpath.py [--trades 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))


def child(trades: int) -> dict[str, float | str]:
    """One process's measurements, on the path this process runs."""
    import asyncio
    import csv
    import gzip
    import tempfile

    from decimal_engine import DecimalFlowEngine

    from orderflow_plugin import FlowEngine, OrderFlow, Trade, bundled_tape, hookimpl, hotpath, load_tape
    from orderflow_plugin.decode import Decoder
    from orderflow_plugin.replay import replay
    from orderflow_plugin.sim import SymbolFeed

    tape = bundled_tape()
    feed = SymbolFeed(tape, loop=True)
    base = [row.to_trade("BTCUSDT") for row in tape.rows]
    batch = []
    for p in range(trades):
        row, seen = feed.row(p), base[p % len(base)]
        batch.append(Trade("BTCUSDT", row.id, seen.price, seen.qty, row.first_id, row.last_id, row.time, seen.side,
                           row.event_time))
    cpu = {"fixed": 0.0, "decimal": 0.0}
    for _ in range(2):
        for name, cls in (("fixed", FlowEngine), ("decimal", DecimalFlowEngine)):
            add = cls("BTCUSDT").add
            started = time.process_time()
            for trade in batch:
                add(trade)
            cpu[name] += time.process_time() - started
    frames = gzip.open(HERE.parent / "orderflow_plugin" / "data" /
                       "polysim_spot_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl.gz").read().splitlines()
    decode = Decoder("spot").decode
    started = time.process_time()
    for _ in range(max(1, trades // len(frames))):
        for frame in frames:
            decode(frame)
    decoded = max(1, trades // len(frames)) * len(frames) / (time.process_time() - started)

    class Count:
        trades = 0

        @hookimpl
        def on_trade(self, trade: Trade) -> None:
            Count.trades += 1

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "BTCUSDT-aggTrades-looped.csv"
        with open(path, "w", newline="") as handle:
            out = csv.writer(handle)
            for p in range(trades):
                row, seen = feed.row(p), tape.rows[p % len(tape.rows)]
                out.writerow([row.id, seen.price, seen.qty, row.first_id, row.last_id, row.time, row.buyer_maker, True])
        local = load_tape(path)
        flow = OrderFlow(["BTCUSDT"])  # defaults: every default metric on
        flow.plugins.register(Count(), name="count")
        started = time.perf_counter()
        result = asyncio.run(replay(flow, local))
        replayed = result.frames / (time.perf_counter() - started)
    return {"path": hotpath.hot_path().split(" (")[0], "engine": 2 * trades / cpu["fixed"],
            "decimal engine": 2 * trades / cpu["decimal"], "decode": decoded, "replay": replayed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.trades)))
        return
    from _machine import describe

    runs: dict[str, list[dict[str, float | str]]] = {"compiled": [], "pure": []}
    for round_ in range(1, args.rounds + 1):
        for name, pure in (("compiled", "0"), ("pure", "1")):
            print(f"round {round_}/{args.rounds}: {name}...", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, "--child", "--trades", str(args.trades)], check=True,
                                 capture_output=True, text=True, env={**os.environ, "ORDERFLOW_PURE": pure}).stdout
            runs[name].append(json.loads(out.splitlines()[-1]))
    print(f"machine: {describe()}")
    print(f"hot path: {args.trades:,} real BTCUSDT trades (bundled tape looped), default windows, footprint and "
          f"whales; {args.rounds} rounds, compiled then pure in each; CPU time for engine and decode")
    for name, results in runs.items():
        print(f"  {name} (as run: {', '.join(sorted({str(r['path']) for r in results}))})")
        for key in ("engine", "decimal engine", "decode", "replay"):
            rates = [float(r[key]) for r in results]
            print(f"    {key:15s} median {statistics.median(rates):>11,.0f} trades/s   runs "
                  + ", ".join(f"{rate:,.0f}" for rate in rates))
    for key in ("engine", "decode", "replay"):
        ratios = [float(c[key]) / float(p[key]) for c, p in zip(runs["compiled"], runs["pure"], strict=True)]
        print(f"  compiled / pure, {key}, round by round: " + ", ".join(f"{r:.2f}" for r in ratios))
    for name, results in runs.items():
        ratios = [float(r["engine"]) / float(r["decimal engine"]) for r in results]
        print(f"  fixed-point / Decimal engine in the same process ({name}): " + ", ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
