"""History throughput: a verified archive zip to Parquet trades plus the default bars, for one big day.

A spot day of --trades aggTrades (default 2,000,000) is tiled from the bundled real slice, zipped as
Binance's archive has it (8 columns, microseconds) by the simulator's archive, and written to a
temporary folder with its .CHECKSUM. Timed, one stage after the other, as `orderflow history` runs
them: SHA-256 check, CSV parse and normalize (pyarrow), the day's trades to Parquet, the default
bars (1s, 1m, 5m, footprint at 10) by the stream's FlowEngine, and the bars to Parquet.

Run: .venv/bin/python bench/history_store.py [--trades 2000000]
Target (issue #27): at least 300,000 trades/s end to end.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe

from orderflow_plugin import bundled_tape
from orderflow_plugin.history.bars import compute_bars
from orderflow_plugin.history.normalize import read_zip, split_days
from orderflow_plugin.history.store import Store
from orderflow_plugin.options import Flow
from orderflow_plugin.sim import Archive, tiled_tape
from orderflow_plugin.sim.archive import archive_path

DAY = date(2025, 11, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=2_000_000)
    args = parser.parse_args()
    print(describe())
    started = time.perf_counter()
    tape = tiled_tape(bundled_tape(), DAY, 1, args.trades)
    answer = Archive(tape).answer("/" + archive_path("spot", "BTCUSDT", DAY))
    checksum = hashlib.sha256(answer.body).hexdigest()
    print(f"built a {args.trades:,}-trade day ({len(answer.body) / 1e6:.1f} MB zip) in "
          f"{time.perf_counter() - started:.1f} s (not timed)")
    with tempfile.TemporaryDirectory() as folder:
        zip_path = Path(folder) / "BTCUSDT-aggTrades-2025-11-01.zip"
        zip_path.write_bytes(answer.body)
        store = Store(Path(folder), "spot", "BTCUSDT")
        stages: list[tuple[str, float]] = []

        def stage(name: str, begin: float) -> float:
            now = time.perf_counter()
            stages.append((name, now - begin))
            return now

        begin = t = time.perf_counter()
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
        assert digest == checksum
        t = stage("sha256", t)
        parsed = read_zip(zip_path, zip_path.name)
        (table,) = split_days(parsed.table).values()
        t = stage("parse + normalize (pyarrow csv)", t)
        store.write_day(DAY, table, digest)
        t = stage("trades to Parquet", t)
        bars, trades = compute_bars(store, [DAY], Flow())
        t = stage("bars (read + Trade objects + FlowEngine)", t)
        for window, closed in bars.items():
            store.write_bars(window, DAY, closed)
        t = stage("bars to Parquet", t)
        total = t - begin
        assert trades == args.trades
        for name, seconds in stages:
            print(f"  {name:<44} {seconds:7.2f} s  {args.trades / seconds:>12,.0f} trades/s  {seconds / total:5.1%}")
        print(f"end to end: {args.trades:,} trades in {total:.2f} s = {args.trades / total:,.0f} trades/s "
              f"(target 300,000: {'met' if args.trades / total >= 300_000 else 'not met'}); "
              f"bars: {', '.join(f'{len(b)} {w}' for w, b in bars.items())}")


if __name__ == "__main__":
    main()
