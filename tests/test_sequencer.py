"""The sequencer alone: order, duplicates, holes, fills and skips (no sockets, no loop)."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from orderflow_plugin import Trade
from orderflow_plugin.sequencer import DELIVER, DUPLICATE, GAP, HELD, OVERFLOW, READY, Gap, Sequencer


def t(i: int, source: str = "live") -> Trade:
    return Trade("BTCUSDT", i, Decimal(1), Decimal(1), i, i, i, "buy", i, "spot", source)  # type: ignore[arg-type]


def test_in_order_trades_are_delivered_at_once() -> None:
    """Consecutive ids are delivered immediately; the first id sets the start."""
    s = Sequencer("BTCUSDT")
    assert [s.push(t(i)) for i in (100, 101, 102)] == [DELIVER] * 3
    assert s.last_delivered == 102 and s.gap is None


def test_duplicates_dropped() -> None:
    """An id already delivered, or already held, is a duplicate."""
    s = Sequencer("BTCUSDT")
    s.push(t(1)), s.push(t(2))
    assert s.push(t(2)) == DUPLICATE and s.push(t(1)) == DUPLICATE
    assert s.push(t(5)) == GAP and s.push(t(5)) == DUPLICATE
    assert s.duplicates == 3


def test_hole_then_fill_delivers_everything_in_order() -> None:
    """A jump opens a hole; backfilled trades close it and everything held comes out in order."""
    s = Sequencer("BTCUSDT")
    s.push(t(1))
    assert s.push(t(5)) == GAP and s.push(t(6)) == HELD
    assert s.gap == Gap("BTCUSDT", 2, 4)
    released = s.fill([t(3, "backfill"), t(2, "backfill"), t(4, "backfill"), t(1, "backfill")])
    assert [x.id for x in released] == [2, 3, 4, 5, 6]
    assert [x.source for x in released] == ["backfill"] * 3 + ["live"] * 2
    assert s.gap is None and s.held == 0


def test_reordered_trade_closes_the_front() -> None:
    """The missing trade arriving late (reordered) makes the held ones ready."""
    s = Sequencer("BTCUSDT")
    s.push(t(1))
    assert s.push(t(3)) == GAP
    assert s.push(t(2)) == READY
    assert [x.id for x in s.drain()] == [2, 3]


def test_skip_gives_up_exact_range_and_releases() -> None:
    """Skipping returns the exact missing range and the held trades after it."""
    s = Sequencer("BTCUSDT")
    s.push(t(10))
    s.push(t(15)), s.push(t(16)), s.push(t(20))
    gap, released = s.skip()
    assert gap == Gap("BTCUSDT", 11, 14) and [x.id for x in released] == [15, 16]
    assert s.gap == Gap("BTCUSDT", 17, 19)  # the next hole is still open


def test_overflow_when_too_many_held() -> None:
    """Past max_held waiting trades the answer is OVERFLOW."""
    s = Sequencer("BTCUSDT", max_held=3)
    s.push(t(1))
    assert [s.push(t(i)) for i in (5, 6, 7, 8)] == [GAP, HELD, HELD, OVERFLOW]


def test_start_after_makes_history_a_gap() -> None:
    """With start_after set, the first live trade opens a hole back to the start."""
    s = Sequencer("BTCUSDT", start_after=99)
    assert s.push(t(150)) == GAP and s.gap == Gap("BTCUSDT", 100, 149)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=2**32),
    dup_rate=st.floats(min_value=0, max_value=0.5),
    loss_rate=st.floats(min_value=0, max_value=0.5),
)
def test_any_interleaving_yields_the_exact_ordered_set(n: int, seed: int, dup_rate: float, loss_rate: float) -> None:
    """Duplicates, reorders and holes, once the holes are filled from REST, give each id once, in order."""
    rng = random.Random(seed)
    ids = list(range(1000, 1000 + n))
    arrivals = [i for i in ids if i == ids[0] or rng.random() > loss_rate]  # the first trade sets the start
    arrivals += [rng.choice(arrivals) for _ in range(int(len(arrivals) * dup_rate))]
    head, tail = arrivals[:1], arrivals[1:]
    rng.shuffle(tail)
    s = Sequencer("BTCUSDT")
    delivered: list[int] = []
    for i in head + tail:
        status = s.push(t(i))
        if status == DELIVER:
            delivered.append(i)
        elif status == READY:
            delivered += [x.id for x in s.drain()]
    while s.gap is not None:  # the backfiller fills each hole in turn
        gap = s.gap
        delivered += [x.id for x in s.fill([t(i, "backfill") for i in range(gap.first, gap.last + 1)])]
    last_seen = max(arrivals)
    assert delivered == list(range(ids[0], last_seen + 1))
