"""Footprint signals from aggTrades alone: what order-flow traders read off a footprint chart.

:class:`FlowSignals` (one per symbol, no I/O) takes each delivered trade (:meth:`FlowSignals.trade`)
and each closed bar of the engine (:meth:`FlowSignals.bar`), and returns the signals they produced
as metrics (:mod:`.signalmetrics`). Per closed bar of ``signal_windows``: diagonal imbalances and
stacks, delta divergence, exhaustion, unfinished auctions, absorption (a proxy), a naked POC. Per
trade: sweeps, tape speed, the session's volume profile, touches of naked POCs.

Per trade, prices and quantities are integers of 10^-8 (:mod:`.fixed`, exact), the ones the engine converted
(:meth:`FlowSignals.trade_units`, as the pipeline calls it): the session profile's volumes and a sweep's sums are
Python integers (no overflow), and a Decimal is made only when a signal is emitted (a level's price is its bucket
times the tick, a volume ``fixed.from_e8``, a notional ``fixed.from_e16``; tape speed's z through :func:`sqrt34`,
Decimal's 34-digit square root on integers). Per bar,
the engine's Decimals are read as they are: sums run in its exact context (``Inexact`` trapped); ratios
are compared exactly by cross-multiplying (``buy * 100 >= percent * sell``), never by dividing.
Compiled with Cython like the engine (``flowsignals.pxd``; ``hotpath.py`` says which path runs).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from math import isqrt

from .engine import parse_window
from .fixed import FixedPointError, from_e8, from_e16, to_e8, units
from .metrics import _QUOTIENT, _ZERO, Bar, Footprint, _add, _mul, _sub
from .models import Metric, Trade
from .signalmetrics import (
    Absorption,
    DeltaDivergence,
    Exhaustion,
    Imbalance,
    NakedPoc,
    SessionProfile,
    StackedImbalance,
    Sweep,
    TapeSpeed,
    UnfinishedAuction,
)

__all__ = ["FlowSignals", "SignalOptions", "imbalances", "sqrt34", "stacks"]

_HUNDRED = Decimal(100)
_NOTHING: tuple[()] = ()
_CACHED = 1024  # a FlowSignals' prices -> units remembered, started over when full
_DIGITS = _QUOTIENT.prec  # 34: tape speed's mean and z, like the ratios
_TENS = [10 ** e for e in range(2 * _DIGITS + 2)]
_SQUARES = [100 ** e for e in range(_DIGITS + 1)]  # 10^(2e): scales a spread so its root has _DIGITS digits
_SCALES = [Decimal(f"1E-{e}") for e in range(_DIGITS + 1)]  # 10^-e: the root's exponent
_WIDE = _TENS[2 * _DIGITS - 2]  # a spread at or over it (never from counts of trades a second): Decimal's sqrt


def sqrt34(spread: int) -> Decimal:
    """``_QUOTIENT.sqrt(Decimal(spread))`` for an integer ``spread`` > 0: the same Decimal, from ``math.isqrt``.

    Decimal's sqrt is correctly rounded (half even) to 34 digits, with exponent 0 when the root is a whole number.
    Here ``spread`` of ``d`` digits is scaled by 10^(2e), e = (68 - d) // 2, to 67 or 68 digits: its integer root
    has 34, rounded up when the remainder passes it (a non-square has no exact half), then times 10^-e (a carry to
    10^34 is rounded to 34 digits by the context, as sqrt does). A perfect square's root is the whole number.
    It costs less than Decimal's sqrt, which tape speed paid each second.
    """
    if spread >= _WIDE:
        return _QUOTIENT.sqrt(Decimal(spread))
    tens = _TENS
    digits = (spread.bit_length() * 1233 >> 12) - 1  # log10(2) ~ 1233 / 4096: 1-2 short of the count
    if digits < 0:
        digits = 0
    while spread >= tens[digits]:
        digits += 1
    shift = (2 * _DIGITS - digits) >> 1
    scaled = spread * _SQUARES[shift]
    root = isqrt(scaled)
    rest = scaled - root * root
    if not rest:
        return Decimal(root // tens[shift])
    if rest > root:
        root += 1
    return _QUOTIENT.multiply(Decimal(root), _SCALES[shift])


@dataclass(frozen=True)
class SignalOptions:
    """The signals' parameters: the ``signal*`` keys of the ``[flow]`` table (docs/metrics.md)."""

    windows: tuple[str, ...] = ("1m",)
    tick: Decimal | None = Decimal(10)
    value_area: Decimal = Decimal("0.7")
    imbalance_percent: Decimal = Decimal(300)
    imbalance_min_volume: Decimal = _ZERO
    stack_length: int = 3
    divergence_lookback: int = 5
    exhaustion_share: Decimal = Decimal("0.02")
    absorption_share: Decimal = Decimal("0.3")
    absorption_min_levels: int = 3
    naked_poc_max: int = 50
    sweep_levels: int = 3
    session_ms: int = 86_400_000
    session_offset_ms: int = 0
    tape_baseline: int = 60

    @classmethod
    def from_flow(cls, flow: object) -> SignalOptions:
        """The options from a :class:`~.options.Flow` group."""
        get = flow.__getattribute__  # a Flow; typed loosely so options.py need not import this module
        tick = get("footprint_tick")
        return cls(
            # a window the engine does not close bars for has no bars to read: its per-bar signals are off
            windows=tuple(w for w in get("signal_windows") if w in get("windows")),
            tick=Decimal(str(tick)) if tick else None,
            value_area=Decimal(str(get("value_area"))),
            imbalance_percent=Decimal(str(get("imbalance_percent"))),
            imbalance_min_volume=Decimal(str(get("imbalance_min_volume") or 0)),
            stack_length=get("stack_length"), divergence_lookback=get("divergence_lookback"),
            exhaustion_share=Decimal(str(get("exhaustion_share"))),
            absorption_share=Decimal(str(get("absorption_share"))),
            absorption_min_levels=get("absorption_min_levels"), naked_poc_max=get("naked_poc_max"),
            sweep_levels=get("sweep_levels"), session_ms=parse_window(get("session")).ms,
            session_offset_ms=int(get("session_offset")) * 60_000, tape_baseline=get("tape_baseline"),
        )


def imbalances(footprint: Footprint, percent: Decimal, min_volume: Decimal = _ZERO) -> tuple[
        list[tuple[Decimal, Decimal, Decimal]], list[tuple[Decimal, Decimal, Decimal]]]:
    """The diagonal imbalances of ``footprint``: (buy ones, sell ones), each (level, volume, the diagonal).

    A level's buy volume against the sell volume one tick below (a level with no trades counts 0),
    and its sell volume against the buy volume one tick above: an imbalance when the volume is at
    least ``min_volume``, above 0, and at least ``percent`` % of the diagonal.
    """
    tick = footprint.tick
    by_price = {price: (buy, sell) for price, buy, sell in footprint.levels}
    buys, sells = [], []
    for price, buy, sell in footprint.levels:
        below = by_price.get(_sub(price, tick), (_ZERO, _ZERO))[1]
        if buy > 0 and buy >= min_volume and _mul(buy, _HUNDRED) >= _mul(percent, below):
            buys.append((price, buy, below))
        above = by_price.get(_add(price, tick), (_ZERO, _ZERO))[0]
        if sell > 0 and sell >= min_volume and _mul(sell, _HUNDRED) >= _mul(percent, above):
            sells.append((price, sell, above))
    return buys, sells


def stacks(levels: Sequence[Decimal], tick: Decimal, length: int) -> list[tuple[Decimal, Decimal, int]]:
    """Runs of at least ``length`` levels one tick apart in ascending ``levels``: (low, high, count)."""
    runs: list[tuple[Decimal, Decimal, int]] = []
    start = 0
    for i in range(1, len(levels) + 1):
        if i == len(levels) or levels[i] != _add(levels[i - 1], tick):
            if i - start >= length:
                runs.append((levels[start], levels[i - 1], i - start))
            start = i
    return runs


class _NakedPocs:
    """POCs not traded back to, sorted by price (units of 10^-8), so a trade checks only the ones near it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.prices: list[int] = []  # each entry's price in units of 10^-8, ascending
        self.entries: list[NakedPoc] = []
        self.fresh = False  # listed one since the last trade was checked

    def add(self, entry: NakedPoc) -> None:
        self.drop(entry.source, entry.start)  # a revised bar's POC replaces its first one
        if len(self.entries) >= self.limit:  # the oldest listed goes first
            oldest = min(range(len(self.entries)), key=lambda i: self.entries[i].start)
            del self.prices[oldest], self.entries[oldest]
        self.fresh = True
        price = to_e8(entry.price)  # a bucket's price: a whole number of ticks, themselves of 10^-8
        index = bisect.bisect_right(self.prices, price)
        self.prices.insert(index, price)
        self.entries.insert(index, entry)

    def drop(self, source: str, start: int) -> None:
        for i, entry in enumerate(self.entries):
            if entry.source == source and entry.start == start:
                del self.prices[i], self.entries[i]
                return

    def touched(self, previous: int, price: int, tick: int) -> list[NakedPoc]:
        """Remove and return the POCs that a move from ``previous`` to ``price`` traded at or went across.

        In units of 10^-8. Differences, never ``poc + tick``: compiled, that sum could pass 2^63.
        """
        low, high = (previous, price) if previous <= price else (price, previous)
        prices = self.prices
        first = bisect.bisect_right(prices, low - tick)
        last = bisect.bisect_right(prices, high)
        hit = []
        for i in range(last - 1, first - 1, -1):
            poc = prices[i]
            if (poc <= price and price - poc < tick) or (low < poc and high - poc >= tick):
                hit.append(self.entries[i])
                del prices[i], self.entries[i]
        return hit


class FlowSignals:
    """The footprint signals of one symbol: feed it every delivered trade and every closed bar."""

    def __init__(self, symbol: str, options: SignalOptions | None = None) -> None:
        self.symbol = symbol
        self.options = options = options or SignalOptions()
        self._windows = frozenset(options.windows)
        self._tick = options.tick
        try:  # the engine's footprint_tick, which it takes only in units of 10^-8
            self._tick_units = 0 if options.tick is None else to_e8(options.tick)
        except FixedPointError as exc:
            raise ValueError(f"footprint_tick {options.tick} is not a price: {exc}") from None
        if options.tick is not None and self._tick_units <= 0:
            raise ValueError(f"footprint_tick must be > 0, got {options.tick}")
        self._units: dict[Decimal, int] = {}  # a trade's price -> units of 10^-8
        # the bars before the one closing, one more than the lookback: a revision replaces the newest
        self._recent: dict[str, deque[Bar]] = {w: deque(maxlen=options.divergence_lookback + 1)
                                               for w in options.windows}
        self._naked = _NakedPocs(options.naked_poc_max)
        self._last_price = -1  # units of 10^-8; none yet
        # sweep: the run of trades with consecutive ids, one ms and one side
        self._run: list[Trade] = []
        self._run_prices: list[int] = []  # the run's prices and quantities in units of 10^-8, as trade_units took them
        self._run_qtys: list[int] = []
        self._run_last: Trade | None = None
        self._run_price = 0  # the last trade's price and quantity in units
        self._run_qty = 0
        self._last_id = self._last_time = 0  # the last trade's id and time, and whether a buy (read once)
        self._last_buy = False
        # tape speed: the open second and the counts of the seconds before it
        self._second = -1
        self._second_trades = 0
        self._baseline: deque[int] = deque(maxlen=options.tape_baseline)
        self._baseline_sum = self._baseline_squares = 0  # of the counts in it
        self._means: dict[int, Decimal] = {}  # a full baseline's sum -> its mean (its length is fixed then)
        # session profile: bucket number (price // tick) -> [buy volume, sell volume], in units of 10^-8
        self._session_start = -1
        self._session_end = -1  # the first trade is past it: it starts the first session
        self._session_trades = 0
        self._session: dict[int, list[int]] = {}
        self._floor = 0  # the lowest price of the last trade's bucket (units), and that bucket's level
        self._level: list[int] | None = None

    @property
    def naked_pocs(self) -> list[NakedPoc]:
        """The POCs listed and not touched yet, by price."""
        return list(self._naked.entries)

    def session_profile(self) -> SessionProfile | None:
        """The session in progress so far (None before the first trade or without a footprint tick)."""
        if self._session_start < 0 or self.options.tick is None:
            return None
        return self._profile()

    # In

    def _unit(self, trade: Trade, value: Decimal) -> int:
        """``value`` (the trade's price) in units of 10^-8, remembered; FixedPointError naming the trade."""
        try:
            known = units(value)
        except FixedPointError as exc:
            raise FixedPointError(f"{trade.symbol} trade {trade.id}: {exc}") from None
        cache = self._units
        if len(cache) >= _CACHED:
            cache.clear()
        cache[value] = known
        return known

    def trade(self, trade: Trade) -> Sequence[Metric]:
        """Take the next delivered trade (after the engine took it); return the signals it ended.

        Per trade on the hot path: most trades end nothing and get a shared empty tuple, no list.
        Raises FixedPointError (as the engine does) for a price or quantity that is not a whole number of
        10^-8 below ``fixed.LIMIT``, before anything changes.
        """
        price_obj = self._units.get(trade.price)  # prices repeat: remembered here
        if price_obj is None:
            price_obj = self._unit(trade, trade.price)
        try:  # quantities repeat less: fixed.units remembers what the decoder and the engine converted
            qty_obj = units(trade.qty)
        except FixedPointError as exc:
            raise FixedPointError(f"{trade.symbol} trade {trade.id}: {exc}") from None
        return self.trade_units(trade, price_obj, qty_obj)

    def trade_units(self, trade: Trade, price_units: int, qty_units: int) -> Sequence[Metric]:
        """:meth:`trade`, given ``trade``'s price and quantity in units of 10^-8 as the engine just converted them
        (``FlowEngine.last_price_units``, ``last_qty_units``): no second lookup by Decimal. They must be
        ``trade``'s, each below ``fixed.LIMIT`` (the engine refused the trade otherwise)."""
        out: list[Metric] | None = None
        price = price_units  # a C integer when compiled (below fixed.LIMIT = 2^63)
        qty_obj = qty_units
        # Compiled, 64 bits: a time or id that does not fit raises here, before anything changes.
        time_ms = trade.time
        agg_id = trade.id
        buy = trade.side == "buy"
        tick = self._tick_units
        # sweep: the run of consecutive ids in one ms and side goes on, or ends here
        last = self._run_last
        last_id = self._last_id
        run = self._run  # empty unless the last trades continue each other
        # (agg_id - 1 only once agg_id > last_id: compiled, it cannot wrap)
        if (last is not None and agg_id > last_id and agg_id - 1 == last_id and time_ms == self._last_time
                and buy == self._last_buy):
            if not run:
                run.append(last)
                self._run_prices.append(self._run_price)
                self._run_qtys.append(self._run_qty)
            run.append(trade)
            self._run_prices.append(price)
            self._run_qtys.append(qty_obj)
        elif run:
            out = []
            self._end_run(out)
        self._run_last = trade
        self._run_price = price
        self._run_qty = qty_obj
        self._last_id, self._last_time, self._last_buy = agg_id, time_ms, buy
        # tape speed: a trade in the open second (or, backfilled, an earlier one) is counted in it
        second = time_ms - time_ms % 1000
        if second <= self._second:
            self._second_trades += 1
        else:
            if out is None:
                out = []
            self._speed(second, out)
        if tick:
            if time_ms >= self._session_end:
                if out is None:
                    out = []
                self._next_session(time_ms, out)
            # the session profile (a late trade of the session before, time < start, is counted in this one)
            level = self._level
            # The last trade's bucket, as the engine caches it: price - floor, never floor + tick (2^63 compiled).
            if level is None or price < self._floor or price - self._floor >= tick:
                bucket = price // tick
                level = self._session.get(bucket)
                if level is None:
                    level = self._session[bucket] = [0, 0]
                self._floor, self._level = bucket * tick, level
            if buy:
                level[0] += qty_obj
            else:
                level[1] += qty_obj
            self._session_trades += 1
            previous = self._last_price
            naked = self._naked
            # The same price as the last trade touches nothing new (that trade's move ended at it), unless a POC
            # was listed since.
            if naked.entries and previous >= 0 and (price != previous or naked.fresh):
                naked.fresh = False
                for entry in naked.touched(previous, price, tick):
                    if out is None:
                        out = []
                    out.append(NakedPoc(symbol=self.symbol, source=entry.source, start=entry.start,
                                        price=entry.price, tick=self._tick, status="touched", touched_at=time_ms,
                                        touched_id=agg_id))
            self._last_price = price
        return _NOTHING if out is None else out

    def bar(self, bar: Bar) -> list[Metric]:
        """Take a closed (or revised) bar; return its signals. Bars of other windows give none."""
        if bar.window not in self._windows or bar.closed_by == "open":
            return []
        out: list[Metric] = []
        recent = self._recent[bar.window]
        if recent and recent[-1].start == bar.start:  # a revision replaces the bar it revises
            recent.pop()
        previous = list(recent)[-self.options.divergence_lookback:]
        recent.append(bar)
        self._divergence(bar, previous, out)
        footprint = bar.footprint
        if footprint is not None and footprint.levels:
            self._imbalances(bar, footprint, out)
            self._extremes(bar, footprint, out)
            poc = footprint.poc
            assert poc is not None
            entry = NakedPoc(symbol=self.symbol, source=bar.window, start=bar.start, price=poc,
                             tick=footprint.tick, status="naked")
            self._naked.add(entry)
            out.append(entry)
        return out

    # Per bar

    def _imbalances(self, bar: Bar, footprint: Footprint, out: list[Metric]) -> None:
        options = self.options
        buys, sells = imbalances(footprint, options.imbalance_percent, options.imbalance_min_volume)
        if not buys and not sells:
            return
        out.append(Imbalance(symbol=self.symbol, window=bar.window, start=bar.start,
                             percent=options.imbalance_percent, buy=tuple(buys), sell=tuple(sells)))
        for side, found in (("buy", buys), ("sell", sells)):
            for low, high, count in stacks([level[0] for level in found], footprint.tick, options.stack_length):
                out.append(StackedImbalance(symbol=self.symbol, window=bar.window, start=bar.start,
                                            side=side, low=low, high=high, levels=count))  # type: ignore[arg-type]

    def _divergence(self, bar: Bar, previous: list[Bar], out: list[Metric]) -> None:
        if not previous:
            return
        last = previous[-1]
        delta = bar.delta
        make = DeltaDivergence
        if bar.high > last.high and delta < 0:
            out.append(make(symbol=self.symbol, window=bar.window, start=bar.start, side="sell", scope="bar",
                            price=bar.high, delta=delta, against=last.high, against_delta=_ZERO))
        if bar.low < last.low and delta > 0:
            out.append(make(symbol=self.symbol, window=bar.window, start=bar.start, side="buy", scope="bar",
                            price=bar.low, delta=delta, against=last.low, against_delta=_ZERO))
        if len(previous) < self.options.divergence_lookback:
            return
        top = max(previous, key=lambda b: b.high)  # the earliest of equal highs
        if bar.high > top.high and bar.cvd < top.cvd:
            out.append(make(symbol=self.symbol, window=bar.window, start=bar.start, side="sell", scope="lookback",
                            price=bar.high, delta=bar.cvd, against=top.high, against_delta=top.cvd))
        bottom = min(previous, key=lambda b: b.low)
        if bar.low < bottom.low and bar.cvd > bottom.cvd:
            out.append(make(symbol=self.symbol, window=bar.window, start=bar.start, side="buy", scope="lookback",
                            price=bar.low, delta=bar.cvd, against=bottom.low, against_delta=bottom.cvd))

    def _extremes(self, bar: Bar, footprint: Footprint, out: list[Metric]) -> None:
        levels = footprint.levels
        if len(levels) < 2:  # one level is the whole bar: no extreme to read
            return
        options = self.options
        volume = bar.volume
        for extreme, (price, buy, sell) in (("high", levels[-1]), ("low", levels[0])):
            fields = dict(symbol=self.symbol, window=bar.window, start=bar.start, extreme=extreme, price=price,
                          buy_volume=buy, sell_volume=sell)
            if _add(buy, sell) <= _mul(options.exhaustion_share, volume):
                out.append(Exhaustion(**fields))  # type: ignore[arg-type]
            if buy > 0 and sell > 0:
                out.append(UnfinishedAuction(**fields))  # type: ignore[arg-type]
            pushed = buy if extreme == "high" else sell
            if len(levels) >= options.absorption_min_levels and pushed >= _mul(options.absorption_share, volume):
                out.append(Absorption(symbol=self.symbol, window=bar.window, start=bar.start, extreme=extreme,
                                      price=price, volume=pushed, bar_volume=volume))

    # Per trade

    def _end_run(self, out: list[Metric]) -> None:
        run = self._run
        prices = self._run_prices
        quantities = self._run_qtys
        levels = self.options.sweep_levels
        if len(run) >= levels:
            count = len(set(prices))
            if count >= levels:
                qty = notional = 0  # units of 10^-8 and of 10^-16: Python integers, never an overflow
                for i in range(len(prices)):
                    size = quantities[i]
                    qty += size
                    notional += prices[i] * size
                first = run[0]
                # each end as the first trade of the run at that price wrote it, as a set of its Decimals keeps it
                out.append(Sweep(symbol=self.symbol, side=first.side, time=first.time, first_id=first.id,
                                 last_id=run[-1].id, levels=count, low=run[prices.index(min(prices))].price,
                                 high=run[prices.index(max(prices))].price, qty=from_e8(qty),
                                 notional=from_e16(notional)))
        run.clear()
        prices.clear()
        quantities.clear()

    def _count_second(self, count: int) -> None:
        """Append ``count`` to the baseline, and keep its sum and sum of squares (exact integers) with it."""
        baseline = self._baseline
        if not baseline.maxlen:
            return
        if len(baseline) == baseline.maxlen:  # the oldest second leaves
            oldest = baseline[0]
            self._baseline_sum -= oldest
            self._baseline_squares -= oldest * oldest
        baseline.append(count)
        self._baseline_sum += count
        self._baseline_squares += count * count

    def _speed(self, second: int, out: list[Metric]) -> None:
        """The open second ended at a trade of ``second``: report it, and open that one."""
        if self._second >= 0:
            count = self._second_trades
            baseline = self._baseline
            mean = z = None
            if len(baseline) == baseline.maxlen:
                total = self._baseline_sum  # sum(baseline), kept as the seconds come and go
                n = len(baseline)
                means = self._means  # the same few sums come back second after second: one Decimal each
                mean = means.get(total)
                if mean is None:
                    if len(means) >= _CACHED:
                        means.clear()
                    mean = means[total] = _QUOTIENT.divide(Decimal(total), Decimal(n))
                # population variance, exactly: (n * sum(x^2) - sum(x)^2) / n^2
                spread = n * self._baseline_squares - total * total
                if spread > 0:
                    # z = (count - mean) / stdev = (n * count - sum) / sqrt(spread); 34 digits, like the ratios
                    z = _QUOTIENT.divide(Decimal(n * count - total), sqrt34(spread))
            out.append(TapeSpeed(symbol=self.symbol, start=self._second, trades=count, mean=mean, z=z))
            self._count_second(count)
            size = baseline.maxlen or 0
            empty = min((second - self._second) // 1000 - 1, size)
            if empty == size:  # as many empty seconds as the baseline holds: it is all zeros
                baseline.extend([0] * empty)
                self._baseline_sum = self._baseline_squares = 0
            else:
                for _ in range(empty):
                    self._count_second(0)
        self._second = second
        self._second_trades = 1

    def _next_session(self, time_ms: int, out: list[Metric]) -> None:
        """End the session in progress (its profile, its POC listed naked) and start the one ``time_ms`` is in."""
        options = self.options
        if self._session_start >= 0:
            profile = self._profile()
            out.append(profile)
            poc = profile.poc
            if poc is not None:
                entry = NakedPoc(symbol=self.symbol, source="session", start=profile.start, price=poc,
                                 tick=self._tick, status="naked")
                self._naked.add(entry)
                out.append(entry)
        self._session_start = time_ms - (time_ms - options.session_offset_ms) % options.session_ms
        self._session_end = self._session_start + options.session_ms
        self._session = {}
        self._session_trades = 0
        self._level = None  # no cached bucket

    def _profile(self) -> SessionProfile:
        options = self.options
        tick = options.tick
        assert tick is not None
        # a level's price is its bucket number times the tick, as the Decimal engine floored it (same exponent)
        levels = tuple((_mul(Decimal(bucket), tick), from_e8(buy), from_e8(sell))
                       for bucket, (buy, sell) in sorted(self._session.items()))
        return SessionProfile(symbol=self.symbol, start=self._session_start,
                              end=self._session_start + options.session_ms, trades=self._session_trades,
                              profile=Footprint(tick=tick, levels=levels, value_area_share=options.value_area))
