"""The fixed-point engine against the Decimal engine it replaced: every field of every output, equal.

The reference is tests/decimal_engine.py, the engine as it was before fixed-point integers. Both take
the same trades, timer ticks and snapshot requests; every bar, footprint level, whale and snapshot
they return must be equal field by field, with the same types (a Decimal, never an int that merely
compares equal), and, where every input has Binance's 8 decimals, written the same (``str``).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orderflow_plugin import FlowEngine, Trade, hotpath
from orderflow_plugin.fixed import LIMIT, from_e8, from_e16, to_e8
from orderflow_plugin.history import store
from orderflow_plugin.history.store import trade_columns, trades_of, trades_table
from orderflow_plugin.metrics import Bar, Footprint
from orderflow_plugin.models import Metric

from .conftest import ROOT
from .decimal_engine import DecimalFlowEngine
from .flowhelpers import TIMEOUT_FACTOR
from .realtapes import SHARED, real_tapes

Op = tuple[str, Any]  # ("trade", Trade) | ("timer", trade time) | ("snapshot", None)


def plain(value: Any, strict: bool) -> Any:
    """``value`` as nested tuples that compare equal only when every field has the same type and value.

    ``strict``: Decimals must also be written the same (trailing zeros included), but for zero: the Decimal
    engine wrote ``0`` for a side with no trade and ``0E-8`` for a sum that came back to zero; the fixed-point
    one writes ``0`` for both.
    """
    if isinstance(value, Decimal):
        return ("Decimal", value, str(value) if strict and value else None)
    if isinstance(value, (msgspec.Struct, Bar)):  # a Bar reads as a struct of its fields (made when read)
        fields = tuple((name, plain(getattr(value, name), strict)) for name in value.__struct_fields__)
        if isinstance(value, Bar):  # what users read off a bar, computed from its fields
            fields += tuple((name, plain(getattr(value, name), strict)) for name in ("volume", "delta", "vwap",
                                                                                   "imbalance", "trades_per_second"))
            if value.footprint is not None:
                fields += (("poc", plain(value.footprint.poc, strict)),
                           ("value_area", plain(value.footprint.value_area, strict)))
        return (type(value).__name__, fields)
    if isinstance(value, (list, tuple)):
        return tuple(plain(item, strict) for item in value)
    if isinstance(value, dict):
        return tuple((key, plain(item, strict)) for key, item in value.items())
    return (type(value).__name__, value)


def outputs(engine: Any, ops: Sequence[Op], strict: bool) -> Iterator[Any]:
    """What ``engine`` returns for each of ``ops``, as :func:`plain` values (an error is an output too)."""
    for kind, arg in ops:
        try:
            if kind == "trade":
                result = engine.add(arg)
            elif kind == "timer":
                result = engine.close_until(arg)
            else:
                result = engine.snapshot()
        except ArithmeticError as exc:
            yield ("error", type(exc).__name__)
            return
        yield plain(result, strict)
    yield plain([engine.buy_volume, engine.sell_volume, engine.buy_notional, engine.sell_notional, engine.cvd],
                strict)


def assert_same(ops: Sequence[Op], **options: Any) -> int:
    """Run ``ops`` through both engines with ``options``; assert every output equal; return how many."""
    trades = [arg for kind, arg in ops if kind == "trade"]
    strict = all(t.price.as_tuple().exponent == -8 and t.qty.as_tuple().exponent == -8 for t in trades)
    reference = DecimalFlowEngine("BTCUSDT", **options)
    engine = FlowEngine("BTCUSDT", **options)
    count = 0
    for step, (want, got) in enumerate(zip(outputs(reference, ops, strict), outputs(engine, ops, strict),
                                           strict=True)):
        assert got == want, f"step {step}: {ops[step] if step < len(ops) else 'totals'}"
        count += 1
    return count


def with_clock(trades: Sequence[Trade], every: int = 97) -> list[Op]:
    """The trades, a timer tick at the last trade's time every ``every`` trades, a snapshot every 5 ticks."""
    ops: list[Op] = []
    for n, trade in enumerate(trades, start=1):
        ops.append(("trade", trade))
        if n % every == 0:
            ops.append(("timer", trade.time + 1500))  # past the 1 s bar: the timer closes it, later trades revise
            if n % (every * 5) == 0:
                ops.append(("snapshot", None))
    ops.append(("snapshot", None))
    return ops


TAPES = real_tapes()
CONFIGS = {
    "defaults": {},
    "odd-windows": {"windows": ("1s", "3s", "7s", "1m", "2m"), "footprint_tick": "0.5", "whale_percentile": 50.0,
                    "whale_window": 20, "whale_notional": "1000"},
    "fine-tick": {"windows": ("1s", "1h"), "footprint_tick": "0.00000001", "whale_notional": None},
}


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("name,trades", TAPES, ids=[name for name, _ in TAPES])
def test_real_tapes_give_the_same_outputs(name: str, trades: list[Trade], config: str) -> None:
    """Every recorded tape: the fixed-point engine's outputs equal the Decimal engine's, field by field."""
    assert trades, f"{name}: no trades read"
    assert assert_same(with_clock(trades), **CONFIGS[config]) > len(trades)


def batched(ops: Sequence[Op]) -> list[Op]:
    """``ops`` with each run of consecutive trades made one ("trades", [Trade, ...]) op."""
    out: list[Op] = []
    for kind, arg in ops:
        if kind == "trade" and out and out[-1][0] == "trades":
            out[-1][1].append(arg)
        else:
            out.append(("trades", [arg]) if kind == "trade" else (kind, arg))
    return out


def feed(engine: FlowEngine, op: Op, entry: str) -> Any:
    """One op into ``engine`` through ``entry``: "add" and "units" per trade, "many" a run as columns."""
    kind, arg = op
    if kind == "timer":
        return engine.close_until(arg)
    if kind == "snapshot":
        return engine.snapshot()
    if entry == "many":
        return engine.add_many([t.id for t in arg], [to_e8(t.price) for t in arg], [to_e8(t.qty) for t in arg],
                               [t.first_id for t in arg], [t.last_id for t in arg], [t.time for t in arg],
                               [t.side == "sell" for t in arg], [t.price for t in arg], [t.qty for t in arg],
                               arg.__getitem__)
    out: list[Any] = []
    for trade in arg:
        out += engine.add_units(trade, to_e8(trade.price), to_e8(trade.qty)) if entry == "units" else engine.add(trade)
        assert (engine.last_price_units, engine.last_qty_units) == (to_e8(trade.price), to_e8(trade.qty))
    return out


def assert_entries_agree(ops: Sequence[Op], **options: Any) -> None:
    """``ops`` through :meth:`FlowEngine.add`, ``add_units`` and ``add_many`` (runs of trades as columns): the
    same metrics, in the same order, the same totals and the same ``last`` trade."""
    runs = batched(ops)
    strict = all(t.price.as_tuple().exponent == -8 and t.qty.as_tuple().exponent == -8
                 for kind, arg in ops if kind == "trade" for t in [arg])
    engines = {entry: FlowEngine("BTCUSDT", **options) for entry in ("add", "units", "many")}
    for step, op in enumerate(runs):
        got = {entry: plain(feed(engine, op, entry), strict) for entry, engine in engines.items()}
        assert got["units"] == got["add"] and got["many"] == got["add"], f"run {step}: {op[0]}"
    totals = {entry: plain([e.buy_volume, e.sell_volume, e.buy_notional, e.sell_notional, e.cvd, e.trades, e.last],
                           strict) for entry, e in engines.items()}
    assert totals["units"] == totals["add"] and totals["many"] == totals["add"]


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("name,trades", TAPES, ids=[name for name, _ in TAPES])
def test_real_tapes_give_the_same_outputs_through_every_entry(name: str, trades: list[Trade], config: str) -> None:
    """Every recorded tape: add_many over its columns and add_units give exactly what add gives, field by field."""
    assert_entries_agree(with_clock(trades), **CONFIGS[config])


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("name,trades", TAPES, ids=[name for name, _ in TAPES])
def test_a_stored_day_gives_through_its_columns_what_its_trades_give(name: str, trades: list[Trade],
                                                                      config: str, tmp_path: Path) -> None:
    """A tape written to the Parquet store and read back: add_many over trade_columns (prices and quantities from
    the decimals' integers) gives every metric, engine.last and the totals that add over trades_of gives."""
    table = trades_table(trades, source="archive")
    path = tmp_path / "day.parquet"
    pq.write_table(table, path)
    table = pq.read_table(path)
    columns = trade_columns(table, "BTCUSDT", "spot")
    assert columns is not None
    batch, single = FlowEngine("BTCUSDT", **CONFIGS[config]), FlowEngine("BTCUSDT", **CONFIGS[config])
    want = [metric for trade in trades_of(table, "BTCUSDT", "spot") for metric in single.add(trade)]
    got = batch.add_many(*columns)
    assert len(got) == len(want) and plain(got, False) == plain(want, False)
    assert plain([batch.last, batch.snapshot(), batch.cvd, batch.trades], False) == plain(
        [single.last, single.snapshot(), single.cvd, single.trades], False)


def test_a_stored_value_past_the_fixed_point_range_gives_no_columns() -> None:
    """A quantity at 2^63 units of 10^-8 (it fits the store's decimal, not the engine): no columns, so the
    per-trade path refuses it naming the trade."""
    big = Decimal(LIMIT) / 10**8
    table = trades_table([Trade("BTCUSDT", 1, Decimal("1"), big, 1, 1, 1_000, "buy")], source="archive")
    assert trade_columns(table, "BTCUSDT", "spot") is None
    assert trade_columns(table.slice(0, 0), "BTCUSDT", "spot") is not None


def test_shared_recordings_are_found_where_the_repository_sits() -> None:
    """Next to a checkout of the project the shared recordings are compared too (CI may not have them)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    assert any(name.startswith("shared-") for name, _ in TAPES)


UNITS = st.one_of(st.integers(1, 10**13), st.integers(LIMIT - 1000, LIMIT - 1), st.sampled_from([1, 10, 10**8]))
QTY = st.one_of(st.integers(0, 10**10), st.integers(LIMIT - 10, LIMIT - 1), st.sampled_from([0, 1, 99_999_999]))
STEP = st.one_of(st.just(0), st.integers(0, 1500), st.integers(-4000, 0), st.integers(0, 400_000))
TRADE = st.tuples(UNITS, QTY, STEP, st.booleans(), st.integers(1, 5), st.booleans(), st.sampled_from(["", "t", "s"]))
WINDOWS = [("1s",), ("1s", "1m", "5m"), ("1s", "5s"), ("2s", "3s", "6s"), ("1m",), ("1s", "1m", "1h", "1d"),
           ("1s", "3s", "7s")]


def written(units: int, plain_digits: bool) -> Decimal:
    """``units`` as a Decimal with 8 decimals, or with its trailing zeros dropped (as USD-M writes prices)."""
    text = f"{units // 10**8}.{units % 10**8:08d}"
    if plain_digits:
        text = text.rstrip("0").removesuffix(".")
    return Decimal(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trades=st.lists(TRADE, min_size=1, max_size=120),
    windows=st.sampled_from(WINDOWS),
    tick=st.sampled_from([None, "10", "0.5", "0.00000001", "1000000"]),
    whale=st.sampled_from([None, "100000", "0.0000000000000001", "1.23456789"]),
    percentile=st.sampled_from([None, 50.0, 99.9]),
    ranked=st.sampled_from([1, 7, 30]),
)
def test_generated_tapes_give_the_same_outputs(trades: list[tuple[int, int, int, bool, int, bool, str]],
                                               windows: tuple[str, ...], tick: str | None, whale: str | None,
                                               percentile: float | None, ranked: int) -> None:
    """Extreme prices and quantities, 8-decimal edges, bursts in one ms, late trades, every window set: equal."""
    time = 1_700_000_000_000
    ops: list[Op] = []
    for n, (price, qty, step, buy, count, short, then) in enumerate(trades):
        time = max(0, time + step)
        ops.append(("trade", Trade("BTCUSDT", n, written(price, short), written(qty, short), 10 * n,
                                   10 * n + count - 1, time, "buy" if buy else "sell")))
        if then == "t":
            ops.append(("timer", time + step % 2000))
        elif then == "s":
            ops.append(("snapshot", None))
    assert_same(ops, windows=windows, footprint_tick=tick, whale_notional=whale, whale_percentile=percentile,
                whale_window=ranked)
    assert_entries_agree(ops, windows=windows, footprint_tick=tick, whale_notional=whale, whale_percentile=percentile,
                         whale_window=ranked)


def test_sums_past_64_bits_stay_exact() -> None:
    """Volumes, notionals and trade counts past 2^64 (the compiled engine's 128-bit and Python-integer sums): equal."""
    top, most = LIMIT - 1, 2**63 - 1  # the largest price or quantity in units, the largest id
    ops: list[Op] = []
    for n in range(6):  # one bar, then a second one, each far past 2^64 in every sum
        ops.append(("trade", Trade("BTCUSDT", n, written(top, False), written(top, False), 0, most,
                                   1_700_000_000_000 + 700 * n, "buy" if n % 3 else "sell")))
    ops += [("timer", 1_700_000_010_000), ("snapshot", None)]
    for windows in (("1s",), ("1s", "1m", "5m"), ("1s", "3s", "7s")):
        assert_same(ops, windows=windows, footprint_tick="1000000", whale_percentile=50.0, whale_window=3)
        assert_entries_agree(ops, windows=windows, footprint_tick="1000000", whale_percentile=50.0, whale_window=3)


class StructBar(Metric, frozen=True, gc=False):
    """Bar as it was before its sums waited as integers: a msgspec struct of Decimals (the surface to keep)."""

    window: str
    start: int
    end: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    buy_volume: Decimal
    sell_volume: Decimal
    buy_notional: Decimal
    sell_notional: Decimal
    trades: int
    trade_count: int
    largest_qty: Decimal
    largest_id: int
    cvd: Decimal
    footprint: Footprint | None
    closed_by: str


@pytest.mark.parametrize("name,trades", TAPES[:2], ids=[name for name, _ in TAPES[:2]])
def test_a_bar_reads_encodes_and_compares_as_the_struct_it_was(name: str, trades: list[Trade]) -> None:
    """An engine Bar, encoded before any field is read, gives msgspec's bytes and builtins for the same struct of
    Decimals; its repr, equality, hash, pickle, dataclasses.replace and units() agree with that struct's values."""
    engine = FlowEngine("BTCUSDT")
    bars = [m for t in trades for m in engine.add(t) if type(m) is Bar]
    bars += list(engine.snapshot().bars.values())
    assert len(bars) > 10
    for bar in bars:
        encoded, builtins = msgspec.json.encode(bar), msgspec.to_builtins(bar)
        values = [getattr(bar, field) for field in StructBar.__struct_fields__]
        struct = StructBar(*values[:-1], symbol=values[-1])
        assert (encoded, builtins) == (msgspec.json.encode(struct), msgspec.to_builtins(struct))
        assert repr(bar) == repr(struct).replace("StructBar(", "Bar(", 1)
        made = Bar(*values[:-1], symbol=values[-1])  # the public constructor, from Decimals
        assert made == bar and hash(made) == hash(bar) and not made != bar
        assert pickle.loads(pickle.dumps(bar)) == bar
        assert dataclasses.replace(bar, closed_by="revised") == Bar(*values[:-2], "revised", symbol=values[-1])
        assert made.units() == bar.units()
        units = bar.units()
        assert (from_e8(units.buy_volume), from_e16(units.sell_notional)) == (bar.buy_volume, bar.sell_notional)
        assert units.tick is not None and units.levels is not None and from_e8(units.tick) == bar.footprint.tick
        assert [(from_e8(p), from_e8(b), from_e8(s)) for p, b, s in units.levels] == list(bar.footprint.levels)
    no_footprint = FlowEngine("BTCUSDT", footprint_tick=None)
    bar = next(m for t in trades for m in no_footprint.add(t) if type(m) is Bar)
    assert bar.footprint is None and (bar.units().tick, bar.units().levels) == (None, None)


def test_a_bar_comes_back_from_its_json_and_builtins() -> None:
    """Bar.from_builtins undoes msgspec.json.encode (then decode) and msgspec.to_builtins: equal, the same bytes;
    data that is not a bar is refused by msgspec, naming the field."""
    engine = FlowEngine("BTCUSDT")
    bars = [m for t in TAPES[0][1] for m in engine.add(t) if type(m) is Bar]
    bars += list(engine.snapshot().bars.values())
    for bar in bars:
        encoded = msgspec.json.encode(bar)
        for data in (msgspec.json.decode(encoded), msgspec.to_builtins(bar)):
            made = Bar.from_builtins(data)
            assert made == bar and msgspec.json.encode(made) == encoded
    data = msgspec.to_builtins(bars[0])
    with pytest.raises(msgspec.ValidationError, match=r"\$\.trades"):
        Bar.from_builtins({**data, "trades": "many"})


@pytest.mark.parametrize("field", ["trades", "symbol", "buy_volume", "cvd", "footprint", "_buy_volume", "kind"])
def test_a_bar_refuses_assignment_on_either_path(field: str) -> None:
    """A Bar is read-only on the pure path as compiled: assigning or deleting a field, before or after its sums
    are read, raises AttributeError and leaves its value and hash as they were."""
    engine = FlowEngine("BTCUSDT")
    made = [m for t in TAPES[0][1] for m in engine.add(t) if type(m) is Bar][:2]
    values = [getattr(made[1], name) for name in StructBar.__struct_fields__]
    made.append(Bar(*values[:-1], symbol=values[-1]))  # the public constructor, from Decimals
    for bar in made:
        for _ in range(2):  # the first time with its sums unread (engine bars), then read
            before, digest = msgspec.json.encode(bar), hash(bar)
            with pytest.raises(AttributeError):
                setattr(bar, field, 3)
            with pytest.raises(AttributeError):
                delattr(bar, field)
            assert (msgspec.json.encode(bar), hash(bar)) == (before, digest)


def test_bars_go_to_parquet_from_their_integers_exactly() -> None:
    """bars_table from the bars' integers (Bar.units): every sum, tick and footprint level reads back as the
    bar's own Decimal, and a bar without a footprint as null."""
    engine = FlowEngine("BTCUSDT", windows=("1s", "1m"))
    trades = TAPES[0][1]
    bars = [m for t in trades for m in engine.add(t) if type(m) is Bar] + list(engine.snapshot().bars.values())
    bars += [Bar(*[getattr(bars[0], f) for f in StructBar.__struct_fields__[:-3]], None, "timer", symbol="BTCUSDT")]
    table = store.bars_table(bars)
    assert table.num_rows == len(bars)
    for name in ("buy_volume", "sell_volume", "buy_notional", "sell_notional", "cvd", "open", "close"):
        assert table.column(name).to_pylist() == [getattr(bar, name) for bar in bars], name
    assert table.column("footprint_tick").to_pylist() == [b.footprint.tick if b.footprint else None for b in bars]
    levels = [None if b.footprint is None else [{"price": p, "buy_volume": buy, "sell_volume": sell}
                                                for p, buy, sell in b.footprint.levels] for b in bars]
    assert table.column("footprint").to_pylist() == levels
    assert store.bars_from_table(table) == [dataclasses.replace(b) for b in bars]


def test_a_trade_that_does_not_fit_is_refused_naming_it_and_the_engine_goes_on() -> None:
    """A price with 9 decimals: FixedPointError naming the trade; the engine's state is untouched."""
    engine = FlowEngine("BTCUSDT")
    good = Trade("BTCUSDT", 1, Decimal("100.5"), Decimal("2"), 1, 1, 1_000, "buy")
    engine.add(good)
    bad = Trade("BTCUSDT", 2, Decimal("100.123456789"), Decimal("1"), 2, 2, 1_001, "buy")
    with pytest.raises(ArithmeticError, match=r"BTCUSDT trade 2: 100\.123456789 has more than 8 decimals"):
        engine.add(bad)
    assert engine.trades == 1 and engine.buy_volume == 2 and engine.last is good


@pytest.mark.parametrize("bad", [LIMIT, -1, 2**64], ids=["limit", "negative", "past-64-bits"])
def test_a_row_out_of_range_is_refused_naming_it_after_the_rows_before(bad: int) -> None:
    """add_many: a price out of range is a FixedPointError naming its id; the rows before it are taken (as add's
    loop would), ``last`` is the last of them; add_units refuses it the same way."""
    trades = [Trade("BTCUSDT", n, Decimal("100.5"), Decimal("2"), n, n, 1_000 + n, "buy") for n in range(1, 4)]
    engine = FlowEngine("BTCUSDT")
    prices = [to_e8(t.price) for t in trades]
    prices[2] = bad
    with pytest.raises(ArithmeticError, match=r"BTCUSDT trade 3: .* out of range"):
        engine.add_many([1, 2, 3], prices, [2 * 10**8] * 3, [1, 2, 3], [1, 2, 3], [1001, 1002, 1003],
                        [False] * 3, [t.price for t in trades], [t.qty for t in trades], trades.__getitem__)
    assert engine.trades == 2 and engine.buy_volume == 4 and engine.last is trades[1]
    with pytest.raises(ArithmeticError, match=r"BTCUSDT trade 3: .* out of range"):
        engine.add_units(trades[2], bad, 2 * 10**8)
    assert engine.trades == 2


def test_the_checkout_runs_the_compiled_path() -> None:
    """`make` compiles the hot modules (hatch_build.py): the suite runs them compiled unless told otherwise."""
    if "ORDERFLOW_PURE" in hotpath.hot_path():  # decided at import: tests/conftest.py clears ORDERFLOW_ variables
        assert not hotpath.is_compiled()
        return
    assert hotpath.is_compiled(), hotpath.hot_path()
    assert all(Path(module.__file__ or "").suffix == ".so" for module in hotpath.loaded())


@pytest.mark.timeout(600 * TIMEOUT_FACTOR)
def test_the_other_path_passes_the_same_tests() -> None:
    """These tests and the first simulation seeds, in a process on the other path (pure if this one is compiled)."""
    env = {**os.environ, "ORDERFLOW_PURE": "1" if hotpath.is_compiled() else "0", "ORDERFLOW_REAL_DATA": str(SHARED)}
    if not hotpath.is_compiled() and "ORDERFLOW_PURE" not in hotpath.hot_path():
        pytest.skip(f"there is no other path: {hotpath.hot_path()}")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         str(ROOT / "tests" / "test_simtest.py") + "::test_unplanted_seeds_pass",
         "-k", "not test_the_other_path"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=540 * TIMEOUT_FACTOR)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
