"""`orderflow replay` from a local file, end to end: the CLI in a fresh process, then its stages in this one.

A CSV dump of --trades aggTrades is tiled from the bundled real slice (ids and times shifted per loop,
as the simulator does). Timed: the `orderflow replay FILE` command from start to exit (wall clock,
process start and imports included), on the compiled path and with ORDERFLOW_PURE=1, back to back;
then, in this process, reading the tape (the plain reader load_tape uses, against the csv module's, interleaved)
and the replay itself (``ReplayResult.per_second``: the pipeline's own time, every default metric on, one
counting hook). Several sizes (``--trades 300000 2000000``, a day of BTCUSDT) show what process start costs;
the pure path runs on sizes up to --pure-max only.

Run: .venv/bin/python bench/replay_file.py [--trades 300000 [2000000 ...]] [--pure-max 300000]
Target (issue #28): at least 1,000,000 trades/s end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe

from orderflow_plugin import OrderFlow, Trade, bundled_tape, hookimpl, hotpath, load_tape
from orderflow_plugin.replay import replay
from orderflow_plugin.sim import SymbolFeed
from orderflow_plugin.tape import _open_text, _read_csv


class Count:
    trades = 0

    @hookimpl
    def on_trade(self, trade: Trade) -> None:
        Count.trades += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, nargs="+", default=[300_000])
    parser.add_argument("--pure-max", type=int, default=300_000, help="run the pure path on sizes up to this")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    rates = [run(size, args.pure_max) for size in args.trades]  # end to end, trades/s
    met = max(rates) >= 1_000_000
    print(f"target >= 1,000,000 trades/s end to end: {'met' if met else 'NOT met'} (best {max(rates):,.0f})")


def run(trades: int, pure_max: int) -> float:
    """One size: the CLI's wall clock (compiled, then pure up to pure_max), then the stages in this process; the
    compiled CLI's trades/s end to end."""
    tape = bundled_tape()
    feed = SymbolFeed(tape, loop=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "BTCUSDT-aggTrades-looped.csv"
        with open(path, "w", newline="") as handle:
            out = csv.writer(handle)
            for p in range(trades):
                row, seen = feed.row(p), tape.rows[p % len(tape.rows)]
                out.writerow([row.id, seen.price, seen.qty, row.first_id, row.last_id, row.time, row.buyer_maker,
                              True])
        print(f"replay: {trades:,} real BTCUSDT trades (bundled slice tiled) in a {path.stat().st_size / 1e6:.1f} "
              f"MB CSV dump, every default metric on")
        command = [str(Path(sys.executable).with_name("orderflow")), "replay", str(path)]
        walls = {}
        for name, pure in (("compiled", "0"), ("pure", "1")):
            if pure == "1" and trades > pure_max:
                continue
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder,
                           env={**os.environ, "ORDERFLOW_PURE": pure})
            walls[name] = time.perf_counter() - started
            print(f"  `orderflow replay FILE`, {name:8s}: {walls[name]:6.2f} s wall = "
                  f"{trades / walls[name]:>10,.0f} trades/s end to end")
        if "pure" in walls:
            print(f"  compiled / pure, end to end: {walls['pure'] / walls['compiled']:.2f}")
        reads: dict[str, list[float]] = {"csv module": [], "load_tape": []}
        for _ in range(3):  # interleaved, so a loaded machine slows both alike; the median of each
            started = time.perf_counter()
            with _open_text(path) as handle:
                _read_csv(handle, path)
            reads["csv module"].append(time.perf_counter() - started)
            started = time.perf_counter()
            local = load_tape(path)
            reads["load_tape"].append(time.perf_counter() - started)
        read = {name: sorted(seconds)[1] for name, seconds in reads.items()}
        print(f"  reading the tape: csv module {trades / read['csv module']:>10,.0f} trades/s, load_tape (plain "
              f"reader) {trades / read['load_tape']:>10,.0f} trades/s: {read['csv module'] / read['load_tape']:.2f}x")
        flow = OrderFlow(["BTCUSDT"])
        flow.plugins.register(Count(), name="count")
        Count.trades = 0
        started = time.perf_counter()
        result = asyncio.run(replay(flow, local))
        played = time.perf_counter() - started
        which = hotpath.hot_path().split(" (")[0]
        print(f"  in this process ({which}): replay {trades / played:>10,.0f} trades/s wall, "
              f"{result.per_second:,.0f} trades/s in the pipeline; the hook saw {Count.trades:,}")
    return trades / walls["compiled"]


if __name__ == "__main__":
    main()
