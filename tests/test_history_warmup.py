"""Sequencing(since=...): archive days, then REST, then live, each trade once and in order, with no seam."""

from __future__ import annotations

from datetime import timedelta

from orderflow_plugin import bundled_tape
from orderflow_plugin.history.plan import utc_today
from orderflow_plugin.metrics import Bar
from orderflow_plugin.options import Sequencing
from orderflow_plugin.sim import Archive, Pace, tiled_tape

from .flowhelpers import TIMEOUT_FACTOR, Events, make_flow

PER_DAY = 600


async def test_since_warms_up_from_the_archive_with_no_seam(orderflow_sim_factory, tmp_path) -> None:
    """Two archived days, then the part of today REST has, then live: every id once, in order, tagged by source,
    and bars through the same engine from the first archived trade on."""
    today = utc_today()
    first_day = today - timedelta(days=2)
    tape = tiled_tape(bundled_tape(), first_day, 3, PER_DAY)  # the third day is today: not in the archive
    sim = await orderflow_sim_factory(tapes=[tape], archive=Archive(tape, today=today), pace=Pace(rate=400),
                                      loop=True, start_on_subscribe=False, weight_limit=1_000_000)
    # The market has played the archived days and part of today before the stream starts.
    await sim.wait_for(lambda _: sim.happened("BTCUSDT") >= 2 * PER_DAY + 100, 20 * TIMEOUT_FACTOR)
    events = Events()
    sequencing = Sequencing(since=first_day.isoformat(), history_store=str(tmp_path), archive_url=sim.archive_url)
    flow = make_flow(sim, events, sequencing=sequencing)
    async with flow:
        await events.until(lambda e: sum(t.source == "live" for t in e.trades) >= 200, 30 * TIMEOUT_FACTOR)
    ids = events.ids()
    start = tape.rows[0].id
    assert ids == list(range(start, start + len(ids)))  # no hole, no repeat, in order
    sources = [t.source for t in events.trades]
    archived = sources.count("archive")
    assert archived == 2 * PER_DAY and set(sources[:archived]) == {"archive"}
    backfilled = sources[archived:].count("backfill")
    assert backfilled >= 100 and set(sources[archived:archived + backfilled]) == {"backfill"}
    assert set(sources[archived + backfilled:]) == {"live"}  # one seam each way, in that order
    bars = [m for m in events.metrics if isinstance(m, Bar) and m.window == "1m"]
    assert bars[0].start == tape.rows[0].time - tape.rows[0].time % 60_000  # CVD and bars count from since


def test_since_setting_is_validated(tmp_path) -> None:
    """A bad since is named by the settings check; a good one is taken."""
    from orderflow_plugin.config import load_settings
    from orderflow_plugin.errors import SettingsError

    path = tmp_path / "settings.toml"
    path.write_text('[default.sequencing]\nsince = "yesterday"\n')
    try:
        load_settings([str(path)])
    except SettingsError as exc:
        assert any("sequencing.since" in error for error in exc.errors)
    else:
        raise AssertionError("a bad since was accepted")
    path.write_text('[default.sequencing]\nsince = "2025-11-01T00:00Z"\n')
    assert load_settings([str(path)]).sequencing.since == "2025-11-01T00:00Z"
