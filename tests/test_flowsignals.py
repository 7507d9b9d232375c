"""Footprint signals checked against a separate, plain reference computed from the real tapes' raw rows."""

from __future__ import annotations

import asyncio
import bisect
import csv
import gzip
import json
import math
from collections import defaultdict
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import pytest

from orderflow_plugin import Flow, FlowEngine, OrderFlow, Trade
from orderflow_plugin import signals as blinker_signals
from orderflow_plugin.flowsignals import FlowSignals, SignalOptions
from orderflow_plugin.replay import replay
from orderflow_plugin.tape import bundled_tape

from .flowhelpers import TIMEOUT_FACTOR

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout, or two levels up from a worktree (/work/wt/NAME -> /work/shared)
SHARED = next((p / "shared" / "data" / "real" for p in (ROOT.parent, ROOT.parent.parent)
               if (p / "shared" / "data" / "real").is_dir()), ROOT.parent / "shared" / "data" / "real")
BUNDLED = ROOT / "orderflow_plugin" / "data" / "BTCUSDT-aggTrades-2026-01-01_first5000.csv.gz"


def _csv(path: Path) -> list[Trade]:
    """A Binance CSV dump read with the csv module (µs times to ms): not our tape reader."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        return [Trade("BTCUSDT", int(a), Decimal(p), Decimal(q), int(f), int(last), int(t) // 1000,
                      "sell" if m == "True" else "buy") for a, p, q, f, last, t, m, _ in csv.reader(handle)]


def _rest(path: Path) -> list[Trade]:
    """A REST /aggTrades answer (a JSON list of objects)."""
    return [Trade("CLUSDT", r["a"], Decimal(r["p"]), Decimal(r["q"]), r["f"], r["l"], r["T"],
                  "sell" if r["m"] else "buy") for r in json.loads(path.read_text())]


def _frames(path: Path) -> list[Trade]:
    """A file of combined-stream aggTrade frames, one JSON object a line."""
    trades = []
    for line in path.read_text().splitlines():
        d = json.loads(line)["data"]
        trades.append(Trade(d["s"], d["a"], Decimal(d["p"]), Decimal(d["q"]), d["f"], d["l"], d["T"],
                            "sell" if d["m"] else "buy"))
    return trades


# (name, loader, path, tick): the bundled slice, and the shared real tapes where present.
TAPES = [
    ("bundled-tick1", _csv, BUNDLED, Decimal(1)),
    ("bundled-tick10", _csv, BUNDLED, Decimal(10)),
    ("shared-btc-csv", _csv, SHARED / "spot_BTCUSDT-aggTrades-2026-01-01_first5000.csv", Decimal("0.5")),
    ("shared-clusdt-rest", _rest, SHARED / "rest_usdm_CLUSDT_aggTrades_2026-05-01_1000.json", Decimal("0.01")),
    ("shared-polysim-spot", _frames, SHARED / "polysim_spot_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl",
     Decimal(1)),
    ("shared-polysim-perp", _frames, SHARED / "polysim_perp_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl",
     Decimal(1)),
]


def _load(loader, path: Path) -> list[Trade]:
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return loader(path)


def run(trades: list[Trade], options: SignalOptions, window: str = "1m") -> tuple[list, list, FlowSignals]:
    """The engine's closed bars of ``window`` and every signal, in order."""
    engine = FlowEngine(trades[0].symbol, windows=[window], footprint_tick=options.tick)
    signals = FlowSignals(trades[0].symbol, options)
    bars, out = [], []
    for trade in trades:
        for metric in engine.add(trade):
            if metric.kind == "bar":
                bars.append(metric)
                out.extend(signals.bar(metric))
        out.extend(signals.trade(trade))
    return bars, out, signals


# The reference: bars and signals from the raw trades with ints and Fractions, written apart from the package.

def ref_bars(trades: list[Trade], tick: Decimal, ms: int = 60_000) -> list[dict]:
    """Closed bars (every bar but the last) as dicts: levels keyed by tick index."""
    bars: dict[int, dict] = {}
    cvd = Fraction(0)
    order = []
    for t in trades:
        start = t.time // ms * ms
        bar = bars.get(start)
        if bar is None:
            bar = bars[start] = {"start": start, "high": t.price, "low": t.price, "buy": Fraction(0),
                                 "sell": Fraction(0), "levels": defaultdict(lambda: [Fraction(0), Fraction(0)])}
            order.append(start)
        bar["high"], bar["low"] = max(bar["high"], t.price), min(bar["low"], t.price)
        q = Fraction(t.qty)
        index = math.floor(Fraction(t.price) / Fraction(tick))
        side = 0 if t.side == "buy" else 1
        bar["levels"][index][side] += q
        bar["buy" if side == 0 else "sell"] += q
        cvd += q if side == 0 else -q
        bar["cvd"] = cvd
    return [bars[s] for s in order[:-1]]


def ref_poc(levels: dict) -> int:
    return max(sorted(levels), key=lambda i: (sum(levels[i]), -i))


def ref_imbalances(bar: dict, percent: Fraction, min_volume: Fraction) -> tuple[list[int], list[int]]:
    lv = bar["levels"]
    get = lambda i, side: lv[i][side] if i in lv else Fraction(0)  # noqa: E731
    buys = [i for i in sorted(lv) if lv[i][0] > 0 and lv[i][0] >= min_volume and lv[i][0] >= percent / 100 * get(i - 1, 1)]
    sells = [i for i in sorted(lv) if lv[i][1] > 0 and lv[i][1] >= min_volume and lv[i][1] >= percent / 100 * get(i + 1, 0)]
    return buys, sells


def ref_runs(indexes: list[int], length: int) -> list[tuple[int, int]]:
    runs, current = [], []
    for i in indexes:
        if current and i != current[-1] + 1:
            runs.append(current)
            current = []
        current.append(i)
    if current:
        runs.append(current)
    return [(r[0], r[-1]) for r in runs if len(r) >= length]


@pytest.mark.parametrize("window,ms", [("1m", 60_000), ("5s", 5_000)], ids=["1m", "5s"])
@pytest.mark.parametrize("name,loader,path,tick", TAPES, ids=[t[0] for t in TAPES])
def test_imbalances_and_stacks_equal_the_reference(name, loader, path, tick, window, ms) -> None:
    """Diagonal imbalances (300 %) and stacks of 3 per closed 1 m bar equal a plain Fraction reference."""
    trades = _load(loader, path)
    options = SignalOptions(tick=tick, windows=(window,))
    _, out, _ = run(trades, options, window)
    got = {(m.start, "buy"): [p for p, _, _ in m.buy] for m in out if m.kind == "imbalance"}
    got |= {(m.start, "sell"): [p for p, _, _ in m.sell] for m in out if m.kind == "imbalance"}
    stacked = sorted((m.start, m.side, m.low, m.high) for m in out if m.kind == "stacked_imbalance")
    want, want_stacks = {}, []
    for bar in ref_bars(trades, tick, ms):
        buys, sells = ref_imbalances(bar, Fraction(300), Fraction(0))
        if buys or sells:
            want[bar["start"], "buy"] = [i * tick for i in buys]
            want[bar["start"], "sell"] = [i * tick for i in sells]
        for side, found in (("buy", buys), ("sell", sells)):
            want_stacks += [(bar["start"], side, lo * tick, hi * tick) for lo, hi in ref_runs(found, 3)]
    assert got == want
    assert stacked == sorted(want_stacks)
    if name.startswith("bundled"):  # about 11 minutes; the polysim tapes are shorter than two
        assert any(got.values()), "the tape should have imbalances to compare"


def test_imbalance_settings_change_the_answer() -> None:
    """A higher ratio finds fewer imbalanced levels, a longer stack fewer stacks, a minimum volume only big levels."""
    trades = _csv(BUNDLED)

    def found(**changes) -> tuple[int, int, list]:
        out = run(trades, SignalOptions(tick=Decimal(1), **changes))[1]
        levels = [level for m in out if m.kind == "imbalance" for level in (*m.buy, *m.sell)]
        return len(levels), sum(m.kind == "stacked_imbalance" for m in out), levels

    levels, stacked, _ = found()
    assert found(imbalance_percent=Decimal(600))[0] < levels
    assert found(stack_length=5)[1] < stacked
    assert all(volume >= 1 for _, volume, _ in found(imbalance_min_volume=Decimal(1))[2])


@pytest.mark.parametrize("window,ms", [("1m", 60_000), ("5s", 5_000)], ids=["1m", "5s"])
@pytest.mark.parametrize("name,loader,path,tick", TAPES, ids=[t[0] for t in TAPES])
def test_divergence_extremes_absorption_equal_the_reference(name, loader, path, tick, window, ms) -> None:
    """Delta divergence (bar and 5-bar lookback), exhaustion, unfinished auctions and absorption equal the reference."""
    trades = _load(loader, path)
    _, out, _ = run(trades, SignalOptions(tick=tick, windows=(window,)), window)
    got = sorted((m.kind, m.start, getattr(m, "side", None) or m.extreme, getattr(m, "scope", ""), m.price)
                 for m in out if m.kind in ("delta_divergence", "exhaustion", "unfinished_auction", "absorption"))
    want = []
    bars = ref_bars(trades, tick, ms)
    for n, bar in enumerate(bars):
        delta = bar["buy"] - bar["sell"]
        if n:
            prev = bars[n - 1]
            if bar["high"] > prev["high"] and delta < 0:
                want.append(("delta_divergence", bar["start"], "sell", "bar", bar["high"]))
            if bar["low"] < prev["low"] and delta > 0:
                want.append(("delta_divergence", bar["start"], "buy", "bar", bar["low"]))
        if n >= 5:
            window = bars[n - 5:n]
            top = next(b for b in window if b["high"] == max(x["high"] for x in window))
            bottom = next(b for b in window if b["low"] == min(x["low"] for x in window))
            if bar["high"] > top["high"] and bar["cvd"] < top["cvd"]:
                want.append(("delta_divergence", bar["start"], "sell", "lookback", bar["high"]))
            if bar["low"] < bottom["low"] and bar["cvd"] > bottom["cvd"]:
                want.append(("delta_divergence", bar["start"], "buy", "lookback", bar["low"]))
        lv = bar["levels"]
        if len(lv) < 2:
            continue
        volume = bar["buy"] + bar["sell"]
        for extreme, i in (("high", max(lv)), ("low", min(lv))):
            buy, sell = lv[i]
            if buy + sell <= Fraction(2, 100) * volume:
                want.append(("exhaustion", bar["start"], extreme, "", i * tick))
            if buy and sell:
                want.append(("unfinished_auction", bar["start"], extreme, "", i * tick))
            pushed = buy if extreme == "high" else sell
            if len(lv) >= 3 and pushed >= Fraction(3, 10) * volume:
                want.append(("absorption", bar["start"], extreme, "", i * tick))
    assert got == sorted(want)


@pytest.mark.parametrize("window,ms", [("1m", 60_000), ("5s", 5_000)], ids=["1m", "5s"])
@pytest.mark.parametrize("name,loader,path,tick", TAPES, ids=[t[0] for t in TAPES])
def test_naked_pocs_stay_listed_until_touched(name, loader, path, tick, window, ms) -> None:
    """Each closed bar's POC is listed, and reported touched at the first later trade at it or across it."""
    trades = _load(loader, path)
    _, out, signals = run(trades, SignalOptions(tick=tick, naked_poc_max=10_000, windows=(window,)), window)
    got = sorted((m.start, m.price, m.status, m.touched_id) for m in out if m.kind == "naked_poc" and m.source == window)
    want, still = [], []
    times = [t.time for t in trades]
    for bar in ref_bars(trades, tick, ms):
        poc = ref_poc(bar["levels"]) * tick
        want.append((bar["start"], poc, "naked", 0))
        # the trades after the bar: the first trade past its end closed it, and the POC is listed then
        first = bisect.bisect_left(times, bar["start"] + ms)
        previous = trades[first - 1].price
        for t in trades[first:]:
            lo, hi = min(previous, t.price), max(previous, t.price)
            if poc <= t.price < poc + tick or (lo < poc and hi >= poc + tick):
                want.append((bar["start"], poc, "touched", t.id))
                break
            previous = t.price
        else:
            still.append((bar["start"], poc))
    assert got == sorted(want)
    assert sorted((m.start, m.price) for m in signals.naked_pocs if m.source == window) == sorted(still)


@pytest.mark.parametrize("name,loader,path,tick", TAPES, ids=[t[0] for t in TAPES])
def test_sweeps_equal_the_reference(name, loader, path, tick) -> None:
    """Runs of consecutive ids in one ms and side crossing >= 3 prices are the sweeps (the last run is still open)."""
    trades = _load(loader, path)
    _, out, _ = run(trades, SignalOptions(tick=tick))
    got = [(m.first_id, m.last_id, m.side, m.levels, m.qty) for m in out if m.kind == "sweep"]
    want, i = [], 0
    while i < len(trades):
        j = i
        while j + 1 < len(trades) and trades[j + 1].id == trades[j].id + 1 and \
                trades[j + 1].time == trades[i].time and trades[j + 1].side == trades[i].side:
            j += 1
        prices = {t.price for t in trades[i:j + 1]}
        if len(prices) >= 3 and j + 1 < len(trades):
            want.append((trades[i].id, trades[j].id, trades[i].side, len(prices), sum(t.qty for t in trades[i:j + 1])))
        i = j + 1
    assert got == want


@pytest.mark.parametrize("name,loader,path,tick", TAPES, ids=[t[0] for t in TAPES])
def test_tape_speed_and_z_score_equal_the_reference(name, loader, path, tick) -> None:
    """Trades per second and its z-score against the previous 60 s (empty seconds as 0) equal a float reference."""
    trades = _load(loader, path)
    _, out, _ = run(trades, SignalOptions(tick=tick))
    got = [m for m in out if m.kind == "tape_speed"]
    counts: dict[int, int] = defaultdict(int)
    for t in trades:
        counts[t.time // 1000] += 1
    seconds = sorted(counts)[:-1]  # the last second is still open
    assert [(m.start // 1000, m.trades) for m in got] == [(s, counts[s]) for s in seconds]
    for m in got:
        s = m.start // 1000
        base = [counts.get(k, 0) for k in range(s - 60, s)]
        if s - 60 < seconds[0]:
            assert m.z is None and m.mean is None
            continue
        mean = Fraction(sum(base), 60)
        var = sum((Fraction(x) - mean) ** 2 for x in base) / 60
        with localcontext() as ctx:
            ctx.prec = 34
            assert m.mean == Decimal(mean.numerator) / Decimal(mean.denominator)
        if var == 0:
            assert m.z is None
        else:
            with localcontext() as ctx:
                ctx.prec = 50
                want = (Decimal(m.trades) - Decimal(mean.numerator) / mean.denominator) / \
                    (Decimal(var.numerator) / var.denominator).sqrt()
            assert abs(m.z - want) <= Decimal("1e-25") * max(1, abs(want))


def test_tape_speed_reference_is_not_empty() -> None:
    """The bundled tape is long enough (about 11 minutes) for z-scores to be reported."""
    _, out, _ = run(_csv(BUNDLED), SignalOptions(tick=Decimal(1)))
    assert sum(m.kind == "tape_speed" and m.z is not None for m in out) > 100


@pytest.mark.parametrize("name,loader,path,tick", TAPES, ids=[t[0] for t in TAPES])
def test_session_profile_equals_the_reference(name, loader, path, tick) -> None:
    """A 1-minute session's profile, POC, VAL and VAH equal the reference; the session in progress too."""
    trades = _load(loader, path)
    _, out, signals = run(trades, SignalOptions(tick=tick, session_ms=60_000))
    profiles = [m for m in out if m.kind == "session_profile"]
    bars = ref_bars(trades, tick)
    assert [p.start for p in profiles] == [b["start"] for b in bars]
    for profile, bar in zip(profiles, bars, strict=True):
        lv = bar["levels"]
        assert [(p, b, s) for p, b, s in profile.profile.levels] == [(i * tick, lv[i][0], lv[i][1]) for i in sorted(lv)]
        poc = ref_poc(lv)
        assert profile.poc == poc * tick
        # value area: grow from the POC toward the larger neighbour (above on ties) until 70 % is covered
        keys = sorted(lv)
        total = sum(sum(v) for v in lv.values())
        low = high = keys.index(poc)
        covered = sum(lv[poc])
        while covered < Fraction(7, 10) * total:
            below = sum(lv[keys[low - 1]]) if low > 0 else None
            above = sum(lv[keys[high + 1]]) if high + 1 < len(keys) else None
            if above is not None and (below is None or above >= below):
                high += 1
                covered += above
            else:
                low -= 1
                covered += below
        assert profile.value_area == (keys[low] * tick, keys[high] * tick)
    current = signals.session_profile()
    assert current is not None and current.trades == sum(1 for t in trades if t.time // 60_000 * 60_000 == current.start)


def test_a_utc_day_session_with_an_offset() -> None:
    """Sessions follow session_offset: with 23:59 UTC the bundled slice (from 00:00) is one session."""
    trades = _csv(BUNDLED)
    _, out, signals = run(trades, SignalOptions(tick=Decimal(1), session_offset_ms=23 * 3_600_000 + 59 * 60_000))
    assert not [m for m in out if m.kind == "session_profile"]
    assert signals.session_profile().trades == len(trades)
    assert signals.session_profile().start == trades[0].time // 86_400_000 * 86_400_000 - 60_000


async def test_signals_reach_on_metric_and_the_metric_signal_in_a_replay() -> None:
    """Through the stream (a replay of the bundled tape), on_metric and the blinker signal carry every signal kind."""
    hooked, sent = [], []

    class Plugin:
        @staticmethod
        def on_metric(metric) -> None:
            hooked.append(metric)

    def receiver(sender, metric) -> None:
        sent.append(metric)

    flow = OrderFlow(["BTCUSDT"], plugins=[Plugin()],
                     flow=Flow(windows=("1s", "1m"), footprint_tick="1", whale_percentile=0))
    blinker_signals.metric.connect(receiver, sender=flow)
    try:
        await replay(flow, bundled_tape())
    finally:
        blinker_signals.metric.disconnect(receiver, sender=flow)
    kinds = {m.kind for m in hooked}
    assert {"imbalance", "stacked_imbalance", "delta_divergence", "exhaustion", "unfinished_auction", "absorption",
            "naked_poc", "sweep", "tape_speed"} <= kinds
    assert [m for m in sent if m.kind != "snapshot"] == [m for m in hooked if m.kind != "snapshot"]
    _, direct, _ = run(_csv(BUNDLED), SignalOptions(tick=Decimal(1)))
    streamed = [m for m in hooked if m.kind not in ("bar", "snapshot", "whale")]
    assert streamed[:len(direct)] == direct


@pytest.mark.parametrize("key,value,words", [
    ("flow.imbalance_percent", 50, "a number in [100"),
    ("flow.stack_length", 1, "a whole number in [2"),
    ("flow.session", "1x", "a window like"),
    ("flow.imbalance_min_volume", "-1", "a decimal >= 0"),
    ("flow.signal_windows", ["1m", "1m"], "the same length"),
], ids=["percent", "stack", "session", "min-volume", "windows"])
def test_bad_signal_settings_are_reported(tmp_path: Path, key: str, value, words: str) -> None:
    """A bad signal setting is one clear error naming the key."""
    from orderflow_plugin import SettingsError, load_settings
    table, name = key.split(".")
    path = tmp_path / "my.toml"
    path.write_text(f"[default.{table}]\n{name} = {json.dumps(value)}\n")
    with pytest.raises(SettingsError) as raised:
        load_settings([path])
    assert key in str(raised.value) and words in str(raised.value)


def test_a_signal_window_the_engine_does_not_close_gives_no_bar_signals() -> None:
    """A signal window missing from flow.windows has no bars to read: per-bar signals are off, per-trade ones run."""
    flow = OrderFlow(["BTCUSDT"], flow=Flow(windows=("1s",), signal_windows=("1m",)))
    assert flow.pipeline.signals["BTCUSDT"].options.windows == ()


async def test_a_bot_reading_redis_computes_the_same_signals(orderflow_redis) -> None:
    """A bot fed from Redis Streams (orderflow stream --from) gets the same signals from the same trades."""
    from orderflow_plugin import PluginManager
    from orderflow_plugin.redisbus.source import RedisSource
    from orderflow_plugin.redisbus.writer import StreamWriter

    trades = _csv(BUNDLED)
    writer = StreamWriter(orderflow_redis.url, "spot")
    for t in trades:
        writer.add_trade(t)
    assert await writer.drain(10.0)
    await writer.aclose()
    got: list = []
    done = asyncio.Event()

    class Plugin:
        @staticmethod
        def on_trade(trade) -> None:
            if trade.id == trades[-1].id:
                done.set()

        @staticmethod
        def on_metric(metric) -> None:
            if metric.kind not in ("bar", "snapshot", "whale"):
                got.append(metric)

    manager = PluginManager()
    manager.register(Plugin())
    flow = OrderFlow(["BTCUSDT"], feed=RedisSource(orderflow_redis.url, start="first"), plugins=manager,
                     flow=Flow(windows=("1m",), footprint_tick="1", whale_percentile=0))
    await flow.start()
    try:
        await asyncio.wait_for(done.wait(), 20 * TIMEOUT_FACTOR)
    finally:
        await flow.stop()
    _, direct, _ = run(trades, SignalOptions(tick=Decimal(1)))
    # the stream closes bars by timer too (a quiet end): the trade-closed signals are the same and in order
    assert got[:len(direct)] == direct
