"""Bars from the archive equal, field by field, the bars the live stream builds from the same trades."""

from __future__ import annotations

from datetime import date

import pyarrow.dataset as ds

from orderflow_plugin import bundled_tape
from orderflow_plugin.backfill import Backfiller
from orderflow_plugin.history import Store, bars_from_table, history
from orderflow_plugin.metrics import Bar
from orderflow_plugin.sim import Archive, Pace, tiled_tape

from .flowhelpers import Events, make_flow

DAY = date(2025, 11, 1)
_FIELDS = [name for name in Bar.__struct_fields__ if name != "closed_by"]


def _final(bars: list[Bar]) -> dict[tuple[str, int], Bar]:
    """The last word on each (window, start): a revised bar replaces the one it revises."""
    out: dict[tuple[str, int], Bar] = {}
    for bar in bars:
        out[(bar.window, bar.start)] = bar
    return out


async def test_archive_bars_equal_live_bars(orderflow_sim_factory, tmp_path) -> None:
    """One day served as archive and as live stream: every bar the live stream closed is in the store, equal."""
    tape = tiled_tape(bundled_tape(), DAY, 1, 5000)
    sim = await orderflow_sim_factory(tapes=[tape], archive=Archive(tape), pace=Pace(asap=True),
                                      weight_limit=1_000_000)
    events = Events()
    async with make_flow(sim, events):
        await events.until(lambda e: len(e.trades) >= 5000, 30)
    assert events.ids() == [row.id for row in tape.rows]
    live = _final([m for m in events.metrics if isinstance(m, Bar)])
    backfiller = Backfiller(sim.rest_url)
    try:
        result = await history(["BTCUSDT"], DAY, DAY, tmp_path, archive_url=sim.archive_url, backfiller=backfiller)
    finally:
        await backfiller.aclose()
    assert result.gaps == [] and result.trades == 5000
    store = Store(tmp_path, "spot", "BTCUSDT")
    stored = _final([bar for window in ("1s", "1m", "5m")
                     for bar in bars_from_table(ds.dataset(store.bars_dir(window)).to_table())])
    assert len(live) > 300 and {w for w, _ in live} == {"1s", "1m", "5m"}
    for key, bar in live.items():
        assert key in stored, key
        assert [getattr(stored[key], f) for f in _FIELDS] == [getattr(bar, f) for f in _FIELDS], key
