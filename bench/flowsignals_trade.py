"""FlowSignals per trade: the Decimal implementation it replaced against today's, in one process, CPU time.

The bundled real slice is tiled to --trades trades (ids and times shifted per loop). Timed as the pipeline
runs them: a FlowEngine (1m bars, tick 10) takes each trade, the signals each closed bar's ``bar()`` and then
the trade's ``trade()`` (default SignalOptions: a UTC-day session profile, naked POCs, sweeps, tape speed);
the engine alone is timed too, and the signals' cost is the difference.
"before" is tests/decimal_flowsignals.py (flowsignals.py at 4f99ba6, Decimal sums, never compiled); "after" is
orderflow_plugin.flowsignals on this process's path (compiled, or pure with ORDERFLOW_PURE=1). Rounds alternate
the three; the best round of each is reported, and the ratios.

Run: nice -n 10 .venv/bin/python bench/flowsignals_trade.py [--trades 50000] [--rounds 5]
     ORDERFLOW_PURE=1 nice -n 10 .venv/bin/python bench/flowsignals_trade.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.decimal_flowsignals: the code before
from _machine import describe

from orderflow_plugin import FlowEngine, Trade, bundled_tape, hotpath
from orderflow_plugin.flowsignals import FlowSignals, SignalOptions
from tests.decimal_flowsignals import DecimalFlowSignals


def tiled(count: int) -> list[Trade]:
    """``count`` trades: the bundled slice again and again, each loop's ids and times after the last's."""
    base = list(bundled_tape().trades())
    span = base[-1].time - base[0].time + 1000
    ids = base[-1].id - base[0].id + 1
    trades = []
    for n in range(count):
        loop, index = divmod(n, len(base))
        t = base[index]
        trades.append(Trade(t.symbol, t.id + loop * ids, t.price, t.qty, t.first_id + loop * ids,
                            t.last_id + loop * ids, t.time + loop * span, t.side))
    return trades


def timed(make: type | None, trades: list[Trade]) -> tuple[float, int]:
    """CPU seconds for an engine, and one FlowSignals of ``make`` (None: none), to take every trade; the signals.

    As the pipeline runs them: the engine takes a trade, the signals its closed bars, then the trade.
    """
    engine = FlowEngine("BTCUSDT", windows=["1m"], footprint_tick=SignalOptions().tick)
    add = engine.add
    emitted = 0
    if make is None:
        started = time.process_time()
        for t in trades:
            add(t)
        return time.process_time() - started, 0
    signals = make("BTCUSDT", SignalOptions())
    bar = signals.bar
    started = time.process_time()
    if hasattr(signals, "trade_units"):  # as the pipeline does: the units the engine converted
        trade_units = signals.trade_units
        for t in trades:
            for m in add(t):
                if m.kind == "bar":
                    emitted += len(bar(m))
            emitted += len(trade_units(t, engine.last_price_units, engine.last_qty_units))
        return time.process_time() - started, emitted
    trade = signals.trade
    for t in trades:
        for m in add(t):
            if m.kind == "bar":
                emitted += len(bar(m))
        emitted += len(trade(t))
    return time.process_time() - started, emitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    print(f"hot path: {hotpath.hot_path()}")
    trades = tiled(args.trades)
    names = {"engine alone": None, "before (Decimal)": DecimalFlowSignals, "after": FlowSignals}
    best = dict.fromkeys(names, float("inf"))
    counts = {}
    for _ in range(args.rounds):
        for name, make in names.items():
            seconds, counts[name] = timed(make, trades)
            best[name] = min(best[name], seconds)
    assert counts["after"] == counts["before (Decimal)"], counts
    print(f"{args.trades:,} trades, {counts['after']} signals; best of {args.rounds} rounds, CPU time; "
          "the signals' cost is engine and signals less the engine alone")
    engine = best["engine alone"]
    print(f"  engine alone      : {engine * 1e9 / args.trades:7.0f} ns/trade")
    cost = {}
    for name in ("before (Decimal)", "after"):
        cost[name] = best[name] - engine
        print(f"  {name:18s}: {best[name] * 1e9 / args.trades:7.0f} ns/trade with the engine, "
              f"{cost[name] * 1e9 / args.trades:7.0f} ns/trade for the signals")
    print(f"  signals before / after: {cost['before (Decimal)'] / cost['after']:.2f}x; engine and signals "
          f"before / after: {best['before (Decimal)'] / best['after']:.2f}x")

if __name__ == "__main__":
    main()
