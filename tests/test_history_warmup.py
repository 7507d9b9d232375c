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
        await events.until(lambda e: sum(t.source == "live" for t in e.trades) >= 200, 30)
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


async def test_a_restart_on_a_days_old_checkpoint_is_filled_from_the_archive(orderflow_sim_factory, tmp_path) -> None:
    """A checkpoint written three days ago: its hole comes from the archive (replay-tagged up to its lease), REST is
    asked only for today's part, then live; every id after the checkpoint once, in order."""
    import json
    from datetime import UTC, datetime

    today = utc_today()
    first_day = today - timedelta(days=3)
    tape = tiled_tape(bundled_tape(), first_day, 4, PER_DAY)  # the fourth day is today: not in the archive
    sim = await orderflow_sim_factory(tapes=[tape], archive=Archive(tape, today=today), pace=Pace(rate=400),
                                      loop=True, start_on_subscribe=False, weight_limit=1_000_000)
    await sim.wait_for(lambda _: sim.happened("BTCUSDT") >= 3 * PER_DAY + 100, 30 * TIMEOUT_FACTOR)
    stored = tape.rows[200]  # delivered on the first day, then the bot was down for days
    written = datetime.fromtimestamp(stored.time / 1000 + 0.5, UTC).isoformat(timespec="milliseconds")
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps({"format": "orderflow-checkpoint", "version": 1, "market": "spot",
                                "written_at": written.replace("+00:00", "Z"), "interval_s": 1.0,
                                "symbols": {"BTCUSDT": {"last_id": stored.id, "lease": stored.id + 20}}}))
    events = Events()
    sequencing = Sequencing(checkpoint_path=str(path), history_store=str(tmp_path / "store"),
                            archive_url=sim.archive_url)
    async with make_flow(sim, events, sequencing=sequencing):
        await events.until(lambda e: sum(t.source == "live" for t in e.trades) >= 100, 30)
    ids = events.ids()
    assert ids == list(range(stored.id + 1, stored.id + 1 + len(ids)))  # no hole, no repeat, in order
    sources = [t.source for t in events.trades]
    archived = 3 * PER_DAY - 201  # the rest of the first day and the next two, all in the archive
    assert sources[:20] == ["replay"] * 20  # up to the lease: a previous run may have delivered them
    assert set(sources[20:archived]) == {"archive"}
    backfilled = sources[archived:].count("backfill")
    assert backfilled >= 100 and set(sources[archived:archived + backfilled]) == {"backfill"}
    assert set(sources[archived + backfilled:]) == {"live"}
    today_first = tape.rows[3 * PER_DAY].id
    asked = [int(p.split("fromId=")[1].split("&")[0]) for p, _ in sim.record.rest if "aggTrades" in p and "fromId=" in p]
    assert asked and min(asked) >= today_first, asked  # REST only for the part of today the archive does not have


async def test_a_restart_on_a_recent_checkpoint_is_filled_over_rest(orderflow_sim_factory, tmp_path) -> None:
    """A checkpoint written minutes ago (younger than a day) is filled over REST as before, the archive not asked."""
    import json
    from datetime import UTC, datetime

    today = utc_today()
    tape = tiled_tape(bundled_tape(), today, 1, PER_DAY)
    archive = Archive(tape, today=today)
    sim = await orderflow_sim_factory(tapes=[tape], archive=archive, pace=Pace(rate=400), loop=True,
                                      start_on_subscribe=False, weight_limit=1_000_000)
    await sim.wait_for(lambda _: sim.happened("BTCUSDT") >= 300, 30 * TIMEOUT_FACTOR)
    stored = tape.rows[100]
    path = tmp_path / "checkpoint.json"
    written = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    path.write_text(json.dumps({"format": "orderflow-checkpoint", "version": 1, "market": "spot",
                                "written_at": written, "interval_s": 1.0,
                                "symbols": {"BTCUSDT": {"last_id": stored.id, "lease": stored.id}}}))
    events = Events()
    sequencing = Sequencing(checkpoint_path=str(path), history_store=str(tmp_path / "store"),
                            archive_url=sim.archive_url)
    async with make_flow(sim, events, sequencing=sequencing):
        await events.until(lambda e: sum(t.source == "live" for t in e.trades) >= 50, 30)
    ids = events.ids()
    assert ids == list(range(stored.id + 1, stored.id + 1 + len(ids)))
    assert "archive" not in {t.source for t in events.trades} and not archive.requests
