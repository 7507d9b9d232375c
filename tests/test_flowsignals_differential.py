"""FlowSignals on integers against the Decimal FlowSignals it replaced: every metric, equal, in the same order.

The reference is tests/decimal_flowsignals.py, flowsignals.py as it was before integers. One engine makes the
bars; both take the same trades and bars, and every metric they return must be equal field by field, with the
same types (a Decimal, never an int that merely compares equal), and, where every input has Binance's 8 decimals,
written the same (``str``), but for zero (the Decimal sums wrote ``0E-8`` for a volume of zero-quantity trades).
Then the naked POCs still listed and the session in progress are compared too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orderflow_plugin import FlowEngine, Trade, hotpath
from orderflow_plugin.fixed import LIMIT
from orderflow_plugin.flowsignals import FlowSignals, SignalOptions, sqrt34
from orderflow_plugin.metrics import Footprint
from orderflow_plugin.signalmetrics import SessionProfile

from .conftest import ROOT
from .decimal_flowsignals import DecimalFlowSignals
from .flowhelpers import TIMEOUT_FACTOR
from .realtapes import SHARED, real_tapes

Op = tuple[str, Any]  # ("trade", Trade) | ("timer", trade time)
QUOTIENT = Context(prec=34)  # the ratios' 34 digits (docs/metrics.md), where the Decimal reference takes tape speed's z


def plain(value: Any, strict: bool) -> Any:
    """``value`` as nested tuples equal only when every field has the same type and value (``strict``: and text)."""
    if isinstance(value, Decimal):
        return ("Decimal", value, str(value) if strict and value else None)
    if isinstance(value, msgspec.Struct):
        fields = tuple((name, plain(getattr(value, name), strict)) for name in value.__struct_fields__)
        if isinstance(value, Footprint):  # what users read off a profile, computed from its levels
            fields += (("poc", plain(value.poc, strict)), ("value_area", plain(value.value_area, strict)))
        if isinstance(value, SessionProfile):
            fields += (("poc", plain(value.poc, strict)),)
        return (type(value).__name__, fields)
    if isinstance(value, (list, tuple)):
        return tuple(plain(item, strict) for item in value)
    return (type(value).__name__, value)


def outputs(signals: Any, engine: FlowEngine, ops: Sequence[Op], strict: bool, units: bool = False) -> Iterator[Any]:
    """What ``signals`` returns for each bar the engine closes and each trade, as :func:`plain` values.

    ``units``: each trade goes in as the pipeline gives it, with the units the engine converted (``trade_units``).
    """
    for kind, arg in ops:
        try:
            bars = engine.add(arg) if kind == "trade" else engine.close_until(arg)
            for metric in bars:
                if metric.kind == "bar":
                    yield plain(signals.bar(metric), strict)
            if kind == "trade":
                if units:
                    yield plain(signals.trade_units(arg, engine.last_price_units, engine.last_qty_units), strict)
                else:
                    yield plain(signals.trade(arg), strict)
        except ArithmeticError as exc:
            yield ("error", type(exc).__name__)
            return
    yield plain(signals.naked_pocs, strict)
    yield plain(signals.session_profile(), strict)


def assert_same(ops: Sequence[Op], options: SignalOptions, windows: Sequence[str] = ("1m",)) -> int:
    """Run ``ops`` through an engine and the FlowSignals (taking Decimals, and taking the engine's units) and the
    Decimal one; assert every output equal; return how many were metrics."""
    trades = [arg for kind, arg in ops if kind == "trade"]
    strict = all(t.price.as_tuple().exponent == -8 and t.qty.as_tuple().exponent == -8 for t in trades)
    symbol = trades[0].symbol if trades else "BTCUSDT"
    make = lambda: FlowEngine(symbol, windows=list(windows), footprint_tick=options.tick)  # noqa: E731
    want_all = outputs(DecimalFlowSignals(symbol, options), make(), ops, strict)
    got_all = outputs(FlowSignals(symbol, options), make(), ops, strict)
    units_all = outputs(FlowSignals(symbol, options), make(), ops, strict, units=True)
    metrics = 0
    for step, (want, got, from_units) in enumerate(zip(want_all, got_all, units_all, strict=True)):
        assert got == want, f"output {step}"
        assert from_units == want, f"output {step}, from the engine's units"
        metrics += len(want) if isinstance(want, tuple) and want[:1] != ("error",) else 0
    return metrics


TAPES = real_tapes()
# Per trade signals in every config; the per-bar ones on the engine's bars. Short sessions and baselines, few
# sweep levels and naked POCs, so every signal kind and the POC list's eviction happen on a few thousand trades.
CONFIGS = {
    "defaults": (SignalOptions(), ("1m",)),
    "busy": (SignalOptions(windows=("1s", "5s"), tick=Decimal("0.5"), imbalance_percent=Decimal(150),
                           stack_length=2, divergence_lookback=2, exhaustion_share=Decimal("0.2"),
                           absorption_share=Decimal("0.1"), absorption_min_levels=2, naked_poc_max=5, sweep_levels=2,
                           session_ms=5_000, session_offset_ms=1_234, tape_baseline=3), ("1s", "5s", "1m")),
    "fine-tick": (SignalOptions(windows=("1s",), tick=Decimal("0.00000001"), naked_poc_max=3, sweep_levels=2,
                                session_ms=60_000, tape_baseline=5), ("1s", "1m")),
    "no-tick": (SignalOptions(windows=("1m",), tick=None, sweep_levels=2, tape_baseline=2), ("1m",)),
}


def with_clock(trades: Sequence[Trade], every: int = 97) -> list[Op]:
    """The trades, and a timer tick 1.5 s past a trade every ``every`` trades (later trades revise what it closed)."""
    ops: list[Op] = []
    for n, trade in enumerate(trades, start=1):
        ops.append(("trade", trade))
        if n % every == 0:
            ops.append(("timer", trade.time + 1500))
    return ops


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("name,trades", TAPES, ids=[name for name, _ in TAPES])
def test_real_tapes_give_the_same_signals(name: str, trades: list[Trade], config: str) -> None:
    """Every recorded tape, with and without timer ticks, every config: every signal equal to the Decimal one's."""
    options, windows = CONFIGS[config]
    metrics = assert_same([("trade", t) for t in trades], options, windows)
    assert_same(with_clock(trades), options, windows)
    if len(trades) > 100 and config == "busy":  # the comparison saw signals, not only empty tuples
        assert metrics > 0


def test_shared_recordings_are_found_where_the_repository_sits() -> None:
    """Next to a checkout of the project the shared recordings are compared too (CI may not have them)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    assert any(name.startswith("shared-") for name, _ in TAPES)


UNITS = st.one_of(st.integers(0, 10**13), st.integers(LIMIT - 10**9, LIMIT - 1), st.sampled_from([1, 10, 10**8]))
QTY = st.one_of(st.integers(0, 10**10), st.integers(LIMIT - 10, LIMIT - 1), st.sampled_from([0, 1, 99_999_999]))
STEP = st.one_of(st.just(0), st.integers(0, 1500), st.integers(-4000, 0), st.integers(0, 400_000))
# (price units, qty units, ms step, buy, id step, then a timer tick, written short)
TRADE = st.tuples(UNITS, QTY, STEP, st.booleans(), st.sampled_from([1, 1, 1, 2]), st.booleans(), st.booleans())
MOVE = st.one_of(st.just(0), st.integers(-3 * 10**9, 3 * 10**9))  # near the last price: sweeps, POC touches


def written(units: int, short: bool) -> Decimal:
    """``units`` as a Decimal with 8 decimals, or with its trailing zeros dropped (as USD-M writes prices)."""
    text = f"{units // 10**8}.{units % 10**8:08d}"
    if short:
        text = text.rstrip("0").removesuffix(".")
    return Decimal(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trades=st.lists(st.tuples(TRADE, MOVE, st.booleans()), min_size=1, max_size=150),
    tick=st.sampled_from([None, "10", "0.5", "0.00000001", "1000000", "92233720368"]),
    session=st.sampled_from([(86_400_000, 0), (60_000, 0), (1_000, 300), (5_000, 4_999), (3_600_000, -1_800_000)]),
    windows=st.sampled_from([("1s",), ("1s", "5s"), ("1m",), ("2s", "3s")]),
    sweep_levels=st.integers(1, 3),
    baseline=st.integers(1, 4),
    naked=st.integers(1, 4),
    lookback=st.integers(1, 3),
)
def test_generated_tapes_give_the_same_signals(trades: list, tick: str | None, session: tuple[int, int],
                                               windows: tuple[str, ...], sweep_levels: int, baseline: int,
                                               naked: int, lookback: int) -> None:
    """Extreme prices and quantities, 8-decimal edges, bursts in one ms, late trades, session edges: equal."""
    time, agg_id, price = 1_700_000_000_000, 1, 10**12
    ops: list[Op] = []
    for (units, qty, step, buy, id_step, timer, short), move, near in trades:
        time = max(0, time + step)
        agg_id += id_step
        price = min(max(price + move, 0), LIMIT - 1) if near else units
        ops.append(("trade", Trade("BTCUSDT", agg_id, written(price, short), written(qty, short), agg_id, agg_id,
                                   time, "buy" if buy else "sell")))
        if timer:
            ops.append(("timer", time + step % 2000))
    options = SignalOptions(windows=windows, tick=None if tick is None else Decimal(tick), stack_length=2,
                            imbalance_percent=Decimal(150), divergence_lookback=lookback, absorption_min_levels=2,
                            naked_poc_max=naked, sweep_levels=sweep_levels, session_ms=session[0],
                            session_offset_ms=session[1], tape_baseline=baseline)
    assert_same(ops, options, windows=("1s", "2s", "3s", "5s", "1m"))


@settings(max_examples=2000, deadline=None)
@given(spread=st.one_of(st.integers(1, 10**6), st.integers(1, 10**40), st.integers(1, 10**80),
                        st.integers(1, 10**20).map(lambda n: n * n), st.integers(1, 10**20).map(lambda n: n * n + 1),
                        st.integers(1, 10**34).map(lambda n: n * n - 1)))
def test_tape_speeds_root_is_decimals_sqrt(spread: int) -> None:
    """sqrt34 (tape speed's z, on integers) is the Decimal the 34-digit sqrt gives: value, exponent and text."""
    want = QUOTIENT.sqrt(Decimal(spread))
    got = sqrt34(spread)
    assert (got, str(got)) == (want, str(want))


def test_tape_speeds_root_rounds_half_even_up_to_a_new_digit() -> None:
    """A root just under 10^34 rounds up to 1.000...E+34 with 34 digits, as Decimal's sqrt writes it."""
    for spread in (10**36 - 1, 10**40 - 1, 10**64 - 1, (10**34 - 1) ** 2 + 2 * (10**34 - 1), 2, 3, 10**33 + 1):
        want = QUOTIENT.sqrt(Decimal(spread))
        assert str(sqrt34(spread)) == str(want), spread


def test_sums_past_64_bits_stay_exact() -> None:
    """Session volumes and sweep notionals past 2^64 and 2^127 (Python integers when compiled): equal."""
    top = LIMIT - 1  # the largest price or quantity in units
    base = 1_700_000_000_000
    ops: list[Op] = [("trade", Trade("BTCUSDT", n, written(top - (n % 3) * 10**8, False), written(top, False), n, n,
                                     base + (n // 6) * 400, "buy" if n % 2 else "sell")) for n in range(40)]
    ops += [("trade", Trade("BTCUSDT", 100 + n, written(top - n * 10**8, False), written(top, False), 0, 0, base + 9000,
                            "buy")) for n in range(5)]  # one sweep over five prices, each notional near 2^126
    for tick in ("0.00000001", "1", "92233720368"):
        options = SignalOptions(windows=("1s",), tick=Decimal(tick), sweep_levels=3, session_ms=2_000, tape_baseline=2)
        assert assert_same(ops, options, windows=("1s",)) > 0


def test_a_trade_that_does_not_fit_is_refused_naming_it_and_nothing_changes() -> None:
    """A quantity with 9 decimals: FixedPointError naming the trade, as the engine's; the signals' state is untouched."""
    signals = FlowSignals("BTCUSDT", SignalOptions(sweep_levels=2))
    good = Trade("BTCUSDT", 1, Decimal("100.5"), Decimal("2"), 1, 1, 1_000, "buy")
    signals.trade(good)
    bad = Trade("BTCUSDT", 2, Decimal("100.5"), Decimal("0.123456789"), 2, 2, 1_000, "buy")
    with pytest.raises(ArithmeticError, match=r"BTCUSDT trade 2: 0\.123456789 has more than 8 decimals"):
        signals.trade(bad)
    profile = signals.session_profile()
    assert profile is not None and profile.trades == 1 and profile.profile.levels == ((Decimal(100), Decimal(2), 0),)


def test_a_tick_the_engine_refuses_is_refused_too() -> None:
    """A footprint tick finer than 10^-8 is a ValueError naming it, as the engine's is."""
    with pytest.raises(ValueError, match=r"footprint_tick 1E-9 is not a price"):
        FlowSignals("BTCUSDT", replace(SignalOptions(), tick=Decimal("1E-9")))
    with pytest.raises(ValueError, match=r"footprint_tick 1E-9 is not a price"):
        FlowEngine("BTCUSDT", footprint_tick=Decimal("1E-9"))


def test_the_checkout_runs_flowsignals_compiled() -> None:
    """`make` compiles flowsignals.py with the engine: the suite runs it compiled unless told otherwise."""
    import orderflow_plugin.flowsignals as module
    if not hotpath.is_compiled():
        assert Path(module.__file__ or "").suffix == ".py"
        return
    assert "flowsignals" in hotpath.COMPILED
    assert Path(module.__file__ or "").suffix == ".so", module.__file__


@pytest.mark.timeout(600 * TIMEOUT_FACTOR)
def test_the_other_path_gives_the_same_signals() -> None:
    """These tests and the footprint signals' own, in a process on the other path (pure if this one is compiled)."""
    env = {**os.environ, "ORDERFLOW_PURE": "1" if hotpath.is_compiled() else "0"}
    if not hotpath.is_compiled() and "ORDERFLOW_PURE" not in hotpath.hot_path():
        pytest.skip(f"there is no other path: {hotpath.hot_path()}")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         str(ROOT / "tests" / "test_flowsignals.py"), "-k", "not test_the_other_path and not redis"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=540 * TIMEOUT_FACTOR)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
