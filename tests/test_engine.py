"""Order-flow metrics checked against an independent Decimal reference computed from the CSV."""

from __future__ import annotations

import csv
import decimal
import gc
import gzip
import random
import tracemalloc
from collections import defaultdict
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from orderflow_plugin import Bar, Flow, FlowEngine, Snapshot, Trade, Whale
from orderflow_plugin.engine import parse_window
from orderflow_plugin.sim import Fault, Pace, Scenario

from .flowhelpers import RECONNECT, TIMEOUT_FACTOR, Events, make_flow

CSV = Path(__file__).resolve().parents[1] / "orderflow_plugin" / "data" / "BTCUSDT-aggTrades-2026-01-01_first5000.csv.gz"
WINDOWS = {"1s": 1000, "1m": 60_000, "5m": 300_000}
TICK = Decimal(10)


def csv_rows() -> list[dict]:
    """The bundled dump read with the csv module only: our own tape reader is not used here."""
    rows = []
    with gzip.open(CSV, "rt", newline="") as handle:
        for agg, price, qty, first, last, ts, maker, _ in csv.reader(handle):
            rows.append({"a": int(agg), "p": Decimal(price), "q": Decimal(qty), "f": int(first), "l": int(last),
                         "T": int(ts) // 1000, "buy": maker == "False"})
    return rows


ROWS = csv_rows()


def trades() -> list[Trade]:
    return [Trade("BTCUSDT", r["a"], r["p"], r["q"], r["f"], r["l"], r["T"], "buy" if r["buy"] else "sell", r["T"])
            for r in ROWS]


def reference_bars(window_ms: int) -> list[dict]:
    """Every metric of every bar, by the definitions in the issue, with plain Decimal at 80 digits."""
    with decimal.localcontext(decimal.Context(prec=80)):
        groups: dict[int, list[dict]] = defaultdict(list)
        cvd_after: dict[int, Decimal] = {}
        cvd = Decimal(0)
        for r in ROWS:
            start = r["T"] - r["T"] % window_ms
            groups[start].append(r)
            cvd += r["q"] if r["buy"] else -r["q"]
            cvd_after[start] = cvd
        bars = []
        for start, rows in groups.items():
            buy = sum((r["q"] for r in rows if r["buy"]), Decimal(0))
            sell = sum((r["q"] for r in rows if not r["buy"]), Decimal(0))
            buy_n = sum((r["p"] * r["q"] for r in rows if r["buy"]), Decimal(0))
            sell_n = sum((r["p"] * r["q"] for r in rows if not r["buy"]), Decimal(0))
            largest = max(rows, key=lambda r: r["q"])  # max() keeps the first of equals
            levels: dict[Decimal, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
            for r in rows:
                levels[(r["p"] // TICK) * TICK][0 if r["buy"] else 1] += r["q"]
            prices = sorted(levels)
            totals = [sum(levels[p]) for p in prices]
            poc = min(i for i in range(len(prices)) if totals[i] == max(totals))
            low = high = poc
            while sum(totals[low:high + 1]) < Decimal("0.7") * sum(totals):
                below = totals[low - 1] if low > 0 else None
                above = totals[high + 1] if high + 1 < len(prices) else None
                if above is not None and (below is None or above >= below):
                    high += 1
                else:
                    low -= 1
            bars.append({
                "start": start, "end": start + window_ms, "open": rows[0]["p"], "close": rows[-1]["p"],
                "high": max(r["p"] for r in rows), "low": min(r["p"] for r in rows),
                "buy_volume": buy, "sell_volume": sell, "delta": buy - sell,
                "buy_notional": buy_n, "sell_notional": sell_n, "vwap": (buy_n + sell_n) / (buy + sell),
                "trades": len(rows), "trade_count": sum(r["l"] - r["f"] + 1 for r in rows),
                "imbalance": (buy - sell) / (buy + sell), "largest_qty": largest["q"], "largest_id": largest["a"],
                "cvd": cvd_after[start], "levels": tuple((p, levels[p][0], levels[p][1]) for p in prices),
                "poc": prices[poc], "value_area": (prices[low], prices[high]),
            })
        return bars


def engine_bars(window: str, windows: list[str] | None = None) -> list[Bar]:
    """The ``window`` bars of an engine computing ``windows`` (just that one by default)."""
    engine = FlowEngine("BTCUSDT", windows=windows or [window], footprint_tick="10", whale_percentile=None)
    bars = [m for t in trades() for m in engine.add(t) if isinstance(m, Bar)]
    return [b for b in bars + engine.close_until(10**15) if b.window == window]


@pytest.mark.parametrize("windows", [None, list(WINDOWS)], ids=["alone", "rolled-up"])
@pytest.mark.parametrize("window", list(WINDOWS))
def test_every_bar_metric_equals_the_decimal_reference(window: str, windows: list[str] | None) -> None:
    """OHLC, volumes, notionals, delta, counts, imbalance, largest, CVD and footprint are exact; VWAP to 1e-12.

    Alone each window is summed from trades; together (the default 1s, 1m, 5m) coarse bars are folded
    from closed fine ones, and must equal the same from-scratch reference.
    """
    expected = reference_bars(WINDOWS[window])
    got = engine_bars(window, windows)
    assert len(got) == len(expected) > 1
    for bar, ref in zip(got, expected, strict=True):
        for field in ("start", "end", "open", "close", "high", "low", "buy_volume", "sell_volume", "delta",
                      "buy_notional", "sell_notional", "trades", "trade_count", "largest_qty", "largest_id", "cvd"):
            assert getattr(bar, field) == ref[field], (window, bar.start, field)
        assert abs(bar.vwap - ref["vwap"]) <= abs(ref["vwap"]) * Decimal("1e-12")
        assert abs(bar.imbalance - ref["imbalance"]) <= Decimal("1e-25")
        assert bar.footprint.levels == ref["levels"]
        assert bar.footprint.poc == ref["poc"]
        assert bar.footprint.value_area == ref["value_area"]
        assert bar.trades_per_second == ref["trades"] * 1000 / WINDOWS[window]
    assert [b.closed_by for b in got] == ["trade"] * (len(got) - 1) + ["timer"]


def test_session_totals_and_cvd_are_exact() -> None:
    """Running buy/sell volume, notional and CVD equal the reference sums to the last digit."""
    engine = FlowEngine("BTCUSDT", whale_percentile=None)
    for trade in trades():
        engine.add(trade)
    with decimal.localcontext(decimal.Context(prec=80)):
        buy = sum((r["q"] for r in ROWS if r["buy"]), Decimal(0))
        sell = sum((r["q"] for r in ROWS if not r["buy"]), Decimal(0))
        assert (engine.buy_volume, engine.sell_volume, engine.cvd) == (buy, sell, buy - sell)
        assert engine.buy_notional == sum((r["p"] * r["q"] for r in ROWS if r["buy"]), Decimal(0))
    snapshot = engine.snapshot()
    assert isinstance(snapshot, Snapshot) and snapshot.cvd == buy - sell and snapshot.trades == 5000
    assert set(snapshot.bars) == {"1s", "1m", "5m"} and snapshot.bars["5m"].closed_by == "open"


def test_sums_stay_exact_past_28_digits() -> None:
    """A notional sum past the default context's 28 digits is still exact (no silent rounding)."""
    engine = FlowEngine("X", windows=["1d"], footprint_tick=None, whale_notional=None, whale_percentile=None)
    price, qty = Decimal("99999999.12345678"), Decimal("99999.12345678")
    engine.add(Trade("X", 1, price, qty, 1, 1, 0, "buy"))
    engine.add(Trade("X", 2, Decimal("0.00000001"), Decimal("0.00000001"), 2, 2, 1, "buy"))
    wide = decimal.Context(prec=80)
    exact = wide.add(wide.multiply(price, qty), Decimal("1E-16"))
    assert engine.buy_notional == exact and len(exact.as_tuple().digits) > 28
    assert price * qty + Decimal("1E-16") != exact  # what the default 28-digit context would have kept


def test_absolute_whales_match_the_reference_count() -> None:
    """Every trade with notional >= the threshold, and only those, is a whale with rule absolute."""
    engine = FlowEngine("BTCUSDT", whale_notional="100000", whale_percentile=None)
    whales = [m for t in trades() for m in engine.add(t) if isinstance(m, Whale)]
    expected = [r["a"] for r in ROWS if r["p"] * r["q"] >= 100000]
    assert [w.trade.id for w in whales] == expected and len(expected) > 0
    assert all(w.rule == "absolute" and w.notional == w.trade.price * w.trade.qty for w in whales)


def test_percentile_whales_rank_against_recent_trades() -> None:
    """After the window fills, a trade above the 99th percentile of the recent notionals is a whale."""
    engine = FlowEngine("X", windows=["1m"], footprint_tick=None, whale_notional=None, whale_percentile=99.0,
                        whale_window=100)
    whales = []
    for i in range(100):
        whales += engine.add(Trade("X", i, Decimal(100), Decimal(i + 1) / 100, i, i, i, "buy"))
    assert whales == []  # warming up
    whales += engine.add(Trade("X", 100, Decimal(100), Decimal("0.5"), 100, 100, 100, "buy"))
    assert whales == []  # an ordinary trade
    whales += engine.add(Trade("X", 101, Decimal(100), Decimal(5), 101, 101, 101, "sell"))
    assert [(w.trade.id, w.rule) for w in whales] == [(101, "percentile")] and whales[0].threshold == Decimal("100.0")


def test_state_stays_bounded() -> None:
    """Memory per symbol does not grow with trades: after 100k trades the engine holds no more than after 10k."""
    engine = FlowEngine("BTCUSDT", windows=["1s", "1m"], whale_window=500)
    held = []
    base = trades()
    tracemalloc.start()
    try:
        for loop in range(20):
            shift = loop * 800_000
            for t in base:
                engine.add(Trade(t.symbol, t.id + loop * 5000, t.price, t.qty, t.first_id, t.last_id, t.time + shift,
                                 t.side))
            gc.collect()
            held.append(tracemalloc.get_traced_memory()[0])  # what is still allocated: the engine's state
    finally:
        tracemalloc.stop()
    assert engine.trades == 100_000
    # A structure that kept one small object per trade would hold megabytes more by the end (90k trades).
    assert max(held[2:]) - held[1] < 100_000, held


@pytest.mark.parametrize("bad", ["", "1x", "0m", "m", "1.5m"])
def test_bad_window_names_rejected(bad: str) -> None:
    """Window names are a positive number and s, m, h or d."""
    with pytest.raises(ValueError, match="is not a number followed by s, m, h or d"):
        parse_window(bad)
    assert parse_window("15m").ms == 900_000


async def test_stream_emits_bars_whales_and_snapshots(orderflow_sim_factory) -> None:
    """Through the stream: bars as windows close, whales, snapshots each interval, timer-closed bars when quiet."""
    from orderflow_plugin import bundled_tape
    from orderflow_plugin.tape import Tape

    tape = Tape("BTCUSDT", "spot", bundled_tape().rows[:400], "test")
    sim = await orderflow_sim_factory(tape, pace=Pace(speed=40))
    events = Events()
    async with make_flow(sim, events, flow=Flow(windows=["1s", "1m"], bar_close_grace=0.2, snapshot_interval=0.2,
                                                whale_notional=40_000)):  # one trade of the 400 is over it (40,853.51)
        await sim.wait_for(lambda r: r.market_finished, 10 * TIMEOUT_FACTOR)
        await events.until(lambda e: len(e.trades) == 400, 5)
        # The last trade is 46.5 s into its minute: the 1 s bar after it is closed by the timer.
        await events.until(lambda e: any(isinstance(m, Bar) and m.window == "1s" and m.closed_by == "timer"
                                         for m in e.metrics), 5)
    metrics = events.metrics
    bars = [m for m in metrics if isinstance(m, Bar) and m.window == "1s"]
    assert bars and [b.start for b in bars] == sorted({b.start for b in bars})
    assert sum(b.trades for b in bars) == 400  # every trade in exactly one closed 1s bar
    assert [round(m.notional) for m in metrics if isinstance(m, Whale)] == [40854]
    snapshots = [m for m in metrics if isinstance(m, Snapshot)]
    assert len(snapshots) >= 2 and snapshots[-1].trades == 400


async def test_bars_identical_with_and_without_reconnects(orderflow_sim_factory) -> None:
    """The same tape in one piece, or cut by resets and skipped ids then backfilled, gives identical bars."""

    async def run(scenario: Scenario) -> list[Bar]:
        sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=2500))
        events = Events()
        async with make_flow(sim, events, reconnect=replace(RECONNECT, backoff_initial=0.05),
                             flow=Flow(windows=["1s", "1m"], bar_close_grace=3600)):
            await sim.wait_for(lambda r: r.market_finished, 20 * TIMEOUT_FACTOR)
            await events.until(lambda e: e.ids() and e.ids()[-1] == ROWS[-1]["a"], 10)
        return [m for m in events.metrics if isinstance(m, Bar)]

    clean = await run(Scenario())
    cut = await run(Scenario([[Fault("reset_after", after=700)], [Fault("skip_ids", after=300, count=400),
                                                                   Fault("close_after", after=2000)], []]))
    assert len(clean) > 100 and clean == cut


@pytest.mark.parametrize(("percentile", "window"), [(50.0, 1000), (90.0, 1000), (99.9, 1000), (99.0, 105), (75.0, 7)])
def test_percentile_threshold_matches_a_full_sort(percentile: float, window: int) -> None:
    """At every re-rank the threshold is exactly the sorted-rank value of the last `window` notionals."""
    engine = FlowEngine("X", windows=["1m"], footprint_tick=None, whale_notional=None,
                        whale_percentile=percentile, whale_window=window)
    notionals: list[Decimal] = []
    threshold: Decimal | None = None  # the full sort's, at the last re-rank (None before the window filled)
    ranks = whales = 0
    for t in trades()[:3000]:
        notional = t.price * t.qty
        got = [(m.rule, m.threshold) for m in engine.add(t) if isinstance(m, Whale)]
        # A whale exactly when the trade reaches the threshold ranked before it joined, and named with it.
        assert got == ([("percentile", threshold)] if threshold is not None and notional >= threshold else []), t.id
        whales += len(got)
        notionals.append(notional)
        if len(notionals) >= window and len(notionals) % max(1, window // 10) == 0:  # a tenth of the window passed
            threshold = sorted(notionals[-window:])[min(window - 1, int(window * percentile / 100))]
            ranks += 1
    assert ranks > 10 and whales > 0


def test_a_rolled_up_bar_closed_after_a_quiet_stretch_has_the_cvd_at_its_own_end() -> None:
    """A coarse bar left open by a timer-closed fine bar closes later with its own CVD, not the next window's.

    Found by the simulation (seed 5): the 5 s bar took the CVD of the moment the next fine bar closed.
    """
    engine = FlowEngine("BTCUSDT", windows=["1s", "5s"], footprint_tick=None, whale_notional=None,
                        whale_percentile=None)

    def trade(agg_id: int, ms: int, qty: str) -> Trade:
        return Trade("BTCUSDT", agg_id, Decimal("100"), Decimal(qty), agg_id, agg_id, ms, "buy", ms, "spot")

    engine.add(trade(1, 500, "1"))
    engine.close_until(2000)
    engine.add(trade(2, 5500, "2"))
    bars = engine.close_until(7000)
    five = [b for b in bars if b.window == "5s"]
    assert [(b.start, b.cvd) for b in five] == [(0, Decimal(1))]  # the 5,000 bar is still open at 7,000


def test_a_coarse_bar_closed_by_the_timer_leaves_out_the_next_windows_open_trades() -> None:
    """A 5 s bar closed by the timer while the next window's 1 s bar is open has the CVD at its own end.

    Found by the simulation (seed 5, windows 1s/7s/1m): it took the CVD including the open bar's trades.
    """
    engine = FlowEngine("BTCUSDT", windows=["1s", "5s"], footprint_tick=None, whale_notional=None,
                        whale_percentile=None)

    def trade(agg_id: int, ms: int, qty: str) -> Trade:
        return Trade("BTCUSDT", agg_id, Decimal("100"), Decimal(qty), agg_id, agg_id, ms, "buy", ms, "spot")

    engine.add(trade(1, 500, "1"))
    engine.close_until(2000)  # the 1 s bar closes; the 5 s bar stays open
    engine.add(trade(2, 5100, "2"))  # the next 5 s window's first 1 s bar, still open
    bars = engine.close_until(5500)
    assert [(b.window, b.start, b.cvd) for b in bars] == [("5s", 0, Decimal(1))]


@pytest.mark.parametrize("seed", range(3))
def test_a_trade_found_after_the_timer_closed_its_bar_revises_that_bar(seed: int) -> None:
    """A late trade (a skipped frame backfilled after a timer close) re-emits its bars, ``closed_by="revised"``.

    Found by the simulation (seed 349): the trade made a second bar with the same start. Here the
    timer runs up to 6 minutes ahead of the real tape now and then; the last version of every bar
    of the default windows must equal the from-scratch reference, and only a revision may repeat a start.
    """
    rng = random.Random(seed)
    engine = FlowEngine("BTCUSDT", footprint_tick="10", whale_notional=None, whale_percentile=None)
    emitted: list[Bar] = []
    for trade in trades():
        emitted += [m for m in engine.add(trade) if isinstance(m, Bar)]
        if rng.random() < 0.02:
            emitted += engine.close_until(trade.time + rng.randint(0, 360_000))
    emitted += engine.close_until(10**15)
    revised = {name: sum(b.closed_by == "revised" for b in emitted if b.window == name) for name in WINDOWS}
    assert all(revised.values()), revised
    for name, ms in WINDOWS.items():
        last: dict[int, Bar] = {}
        for bar in (b for b in emitted if b.window == name):
            assert bar.start not in last or (bar.closed_by == "revised" and bar.start == max(last)), (name, bar.start)
            last[bar.start] = bar
        expected = reference_bars(ms)
        assert sorted(last) == [ref["start"] for ref in expected]
        for ref in expected:
            bar = last[ref["start"]]
            for field in ("open", "close", "high", "low", "buy_volume", "sell_volume", "buy_notional",
                          "sell_notional", "trades", "trade_count", "largest_qty", "largest_id", "cvd"):
                assert getattr(bar, field) == ref[field], (name, bar.start, field)
            assert bar.footprint.levels == ref["levels"]
    assert engine.cvd == sum((t.qty if t.side == "buy" else -t.qty for t in trades()), Decimal(0))


def _quiet_trade(agg_id: int, ms: int, qty: str, side: str) -> Trade:
    return Trade("BTCUSDT", agg_id, Decimal("100"), Decimal(qty), agg_id, agg_id, ms, side, ms, "spot")


def test_a_revision_closes_the_coarser_bar_that_ended_meanwhile() -> None:
    """A late trade's revision of a timer-closed 1m bar also closes the 5m bar it ends (found in review).

    The revision returned early, so the 5m bar stayed open past its end and the timer later closed
    it with the CVD of trades after it.
    """
    engine = FlowEngine("BTCUSDT", footprint_tick=None, whale_notional=None, whale_percentile=None)
    out = [*engine.add(_quiet_trade(1, 30_200, "1", "buy")), *engine.close_until(62_000)]
    out += engine.add(_quiet_trade(2, 45_000, "2", "buy"))  # a skipped frame, backfilled late
    out += engine.add(_quiet_trade(3, 300_100, "4", "sell"))
    out += engine.add(_quiet_trade(4, 301_500, "8", "sell"))
    out += engine.close_until(302_000)
    coarse = [(b.window, b.start, b.closed_by, b.cvd, b.trades) for b in out if isinstance(b, Bar) and b.window != "1s"]
    assert coarse == [("1m", 0, "timer", Decimal(1), 1), ("1m", 0, "revised", Decimal(3), 2),
                      ("5m", 0, "trade", Decimal(3), 2)]


def test_the_timer_gives_a_coarse_bar_its_own_cvd_when_a_middle_window_holds_later_trades() -> None:
    """A 5m bar closed by the timer leaves out the trades of the 1m bar opened after its end (found in review).

    The 1m bar was closed by the timer before the 5m end, so the trades after it opened a new 1m
    bar while the 5m one stayed open; only the finest open bar was subtracted from its CVD.
    """
    engine = FlowEngine("BTCUSDT", footprint_tick=None, whale_notional=None, whale_percentile=None)
    out = [*engine.add(_quiet_trade(1, 200_500, "1", "buy")), *engine.close_until(262_000)]
    out += engine.add(_quiet_trade(2, 300_100, "2", "sell"))
    out += engine.add(_quiet_trade(3, 301_200, "4", "sell"))
    in_progress = engine.snapshot().bars["5m"]
    assert (in_progress.start, in_progress.volume) == (300_000, Decimal(6))  # not the ended bar with them folded in
    out += engine.close_until(302_000)
    assert [(b.start, b.cvd, b.volume) for b in out if isinstance(b, Bar) and b.window == "5m"] == [
        (0, Decimal(1), Decimal(1))]


@pytest.mark.parametrize("windows", [["1s", "1m", "5m"], ["2s", "3s", "6s"], ["1s", "1m", "90s", "5m"],
                                     ["1s", "7s", "1m"], ["1s", "2s", "4s", "12s"]])
def test_random_quiet_stretches_and_late_trades_leave_every_bar_exact(windows: list[str]) -> None:
    """Random trades and timer closes (some ahead of later trades): the last version of every bar is exact."""
    from orderflow_plugin.simtest.reference import reference_bars as from_scratch

    for seed in range(150):
        rng = random.Random(seed)
        engine = FlowEngine("X", windows=windows, footprint_tick="10", whale_notional=None, whale_percentile=None)
        now, rows, emitted, timer = rng.randint(0, 10**6), [], [], 0
        for agg_id in range(1, rng.randint(2, 300)):
            now += rng.choice([0, 0, 1, 5, 100, 700, 1500, 4000, 30_000, 70_000, 200_000])
            price, qty = Decimal(rng.randint(9990, 10010)) / rng.choice([1, 10]), Decimal(rng.randint(1, 50)) / 100
            buy, count = rng.random() < 0.5, rng.randint(1, 3)
            trade = Trade("X", agg_id, price, qty, agg_id * 3, agg_id * 3 + count - 1, now, "buy" if buy else "sell", now)
            rows.append((agg_id, price, qty, buy, now, count))
            emitted += [m for m in engine.add(trade) if isinstance(m, Bar)]
            if rng.random() < 0.3:
                timer = max(timer, now + rng.randint(-2000, 400_000))
                emitted += engine.close_until(timer)
        emitted += engine.close_until(10**15)
        for name in windows:
            last: dict[int, Bar] = {}
            for bar in (b for b in emitted if b.window == name):
                assert bar.start not in last or (bar.closed_by == "revised" and bar.start == max(last)), (seed, name)
                last[bar.start] = bar
            expected = from_scratch(rows, parse_window(name).ms, Decimal(10))
            assert sorted(last) == sorted(expected), (seed, name)
            for start, ref in expected.items():
                got = last[start]
                assert [getattr(got, f) for f in ("open", "high", "low", "close", "buy_volume", "sell_volume",
                                                  "buy_notional", "sell_notional", "trades", "trade_count",
                                                  "largest_qty", "largest_id", "cvd")] == [
                    ref[f] for f in ("open", "high", "low", "close", "buy_volume", "sell_volume", "buy_notional",
                                     "sell_notional", "trades", "trade_count", "largest_qty", "largest_id", "cvd")], (
                    seed, name, start)
                assert got.footprint.levels == ref["levels"], (seed, name, start)
