"""The simulated market's feed: positions, looping and pacing (no sockets)."""

from __future__ import annotations

import itertools

import pytest

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Pace, SymbolFeed
from orderflow_plugin.sim.feed import schedule


def test_looped_feed_has_contiguous_ids_and_trade_ids() -> None:
    """Across the loop boundary ids, first/last trade ids and times keep increasing without gaps."""
    feed = SymbolFeed(bundled_tape(), loop=True)
    rows = [feed.row(p) for p in range(4990, 5010)]
    assert [r.id for r in rows] == list(range(rows[0].id, rows[0].id + 20))
    assert all(b.first_id == a.last_id + 1 for a, b in itertools.pairwise(rows))
    assert all(b.time >= a.time for a, b in itertools.pairwise(rows))
    assert rows[10].price == feed.rows[0].price  # the same real trade, shifted


def test_positions_of_ids_and_times_also_in_later_loops() -> None:
    """position_of_id and position_of_time invert row() in any loop."""
    feed = SymbolFeed(bundled_tape(), loop=True)
    for position in (0, 1, 4999, 5000, 12345):
        row = feed.row(position)
        assert feed.position_of_id(row.id) == position
        assert feed.row(feed.position_of_time(row.time)).time == row.time


def test_unlooped_feed_ends() -> None:
    """Without looping the feed has the tape's length and no rows past it."""
    feed = SymbolFeed(bundled_tape())
    assert feed.length == 5000
    with pytest.raises(IndexError):
        feed.row(5000)


def test_schedule_original_timing_scaled_by_speed() -> None:
    """At speed 10 a trade 12.3 s into the tape is due 1.23 s after the start."""
    feed = SymbolFeed(bundled_tape())
    due = list(schedule({"BTCUSDT": feed}, Pace(speed=10)))
    assert len(due) == 5000
    assert due[-1][0] == pytest.approx(feed.relative_ms(4999) / 10_000)


def test_schedule_fixed_rate_and_asap() -> None:
    """A fixed rate spaces trades evenly; asap has no spacing."""
    feed = {"BTCUSDT": SymbolFeed(bundled_tape())}
    assert [d for d, _, _ in itertools.islice(schedule(feed, Pace(rate=100)), 3)] == pytest.approx([0, 0.01, 0.02])
    assert {d for d, _, _ in itertools.islice(schedule(feed, Pace(asap=True)), 100)} == {0.0}


def test_bad_pace_rejected() -> None:
    """A pace of zero or less is refused."""
    with pytest.raises(ValueError):
        Pace(speed=0)
