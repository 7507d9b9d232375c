"""Bars recomputed from scratch: the delivered ids, the exchange's own rows, plain Decimal sums.

A bar the engine emits again (``closed_by="revised"``, a trade found after the timer closed it)
replaces the one it revises; only the last closed bar of a window may be revised.

The engine keeps running totals and rolls coarse windows up from fine ones; the reference does
neither. It groups the delivered trades by window start and sums each group directly (as the
reference in ``tests/test_engine.py`` does), from the exchange's rows rather than the delivered
``Trade`` objects, so a trade altered on its way is caught too.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from ..engine import parse_window
from ..options import Flow

__all__ = ["Row", "compare_bars", "reference_bars"]

Row = tuple[int, Decimal, Decimal, bool, int, int]  # id, price, quantity, taker buys, time (ms), trades in it

_FIELDS = ("end", "open", "high", "low", "close", "buy_volume", "sell_volume", "buy_notional", "sell_notional",
           "trades", "trade_count", "largest_qty", "largest_id", "cvd", "levels")
_ZERO = Decimal(0)
_BUY, _SELL = ("buy_volume", "buy_notional"), ("sell_volume", "sell_notional")


def reference_bars(rows: Sequence[Row], window_ms: int,
                   tick: Decimal | None) -> dict[int, dict[str, Any]]:
    """Every bar of ``rows`` ``(id, price, qty, buy, time ms, trade count)``, by start, summed from scratch."""
    bars: dict[int, dict[str, Any]] = {}
    cvd = _ZERO
    with decimal.localcontext(decimal.Context(prec=80)):
        for agg_id, price, qty, buy, time_ms, count in rows:
            start = time_ms - time_ms % window_ms
            bar = bars.get(start)
            if bar is None:
                bar = bars[start] = {"end": start + window_ms, "open": price, "high": price, "low": price,
                                     "buy_volume": _ZERO, "sell_volume": _ZERO, "buy_notional": _ZERO,
                                     "sell_notional": _ZERO, "trades": 0, "trade_count": 0, "largest_qty": qty,
                                     "largest_id": agg_id, "buckets": {}}
            bar["high"] = max(bar["high"], price)
            bar["low"] = min(bar["low"], price)
            bar["close"] = price
            volume, notional = _BUY if buy else _SELL
            bar[volume] += qty
            bar[notional] += price * qty
            bar["trades"] += 1
            bar["trade_count"] += count
            if qty > bar["largest_qty"]:  # the earliest of equal trades stays
                bar["largest_qty"], bar["largest_id"] = qty, agg_id
            cvd += qty if buy else -qty
            bar["cvd"] = cvd
            if tick is not None:
                level = bar["buckets"].setdefault((price // tick) * tick, [_ZERO, _ZERO])
                level[0 if buy else 1] += qty
        for bar in bars.values():
            buckets = bar.pop("buckets")
            bar["levels"] = tuple((price, *buckets[price]) for price in sorted(buckets)) if tick is not None else None
    return bars


def compare_bars(rows: list[Row], bars: list[tuple[Any, tuple[Decimal, Decimal]]], flow: Flow,
                 settle_ms: int) -> Iterator[str]:
    """What is wrong with the engine's closed ``bars`` (each with the CVD just before and after the trade
    being delivered when it was emitted) for the delivered ``rows`` (the exchange's, in delivery order):
    one line per problem found. A bar ending more than ``settle_ms`` before the last delivered trade
    must be closed by now."""
    tick = Decimal(str(flow.footprint_tick)) if flow.footprint_tick else None
    for name in flow.windows:
        window = parse_window(name)
        expected = reference_bars(rows, window.ms, tick)
        closed: list[tuple[Any, tuple[Decimal, Decimal]]] = []  # a revised bar replaces the one it revises
        for bar, cvd in bars:
            if bar.window != name:
                continue
            last = closed[-1][0].start if closed else None
            if bar.closed_by == "revised" and bar.start == last:
                closed[-1] = (bar, cvd)
                continue
            if (last is not None and bar.start <= last) or bar.closed_by == "revised":
                yield (f"window {name}: bar starting {bar.start} closed by {bar.closed_by} after the bar "
                       f"starting {last} (closed twice, out of order, or a revision of a bar not the last)")
                return
            closed.append((bar, cvd))
        starts = [bar.start for bar, _ in closed]
        for bar, cvd_then in closed:
            ref = expected.get(bar.start)
            if ref is None:
                yield f"window {name}: bar starting {bar.start} has no delivered trade"
                return
            for field in _FIELDS:
                got = bar.footprint.levels if field == "levels" and bar.footprint is not None else (
                    None if field == "levels" else getattr(bar, field))
                if got != ref[field]:
                    yield (f"window {name}: bar starting {bar.start} (closed by {bar.closed_by}) has {field} {got}, "
                           f"the delivered trades give {ref[field]}"
                           + (" (the CVD when the bar was closed)" if field == "cvd" and got in cvd_then else ""))
                    return
        overdue = sorted(set(expected) - set(starts))
        overdue = [start for start in overdue if expected[start]["end"] <= rows[-1][4] - settle_ms]
        if overdue:
            yield (f"window {name}: bars starting {overdue[:5]} ({len(overdue)} in all) were never closed, though "
                   f"a trade {settle_ms / 1000:g} s past their end was delivered")
            return
