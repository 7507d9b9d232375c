"""orderflow history: the simulator's archive (with its defects) into a Parquet store, every id exactly once."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from orderflow_plugin import bundled_tape
from orderflow_plugin.backfill import Backfiller
from orderflow_plugin.history import HistoryError, Store, bars_from_table, history
from orderflow_plugin.history.bars import compute_bars
from orderflow_plugin.options import Flow
from orderflow_plugin.sim import Archive, ArchiveFault, Pace, tiled_tape
from orderflow_plugin.tape import Tape

from .flowhelpers import TIMEOUT_FACTOR

FIRST = date(2025, 11, 1)
PER_DAY = 400


def _tape(first: date = FIRST, days: int = 3, market: str = "spot") -> Tape:
    tape = tiled_tape(bundled_tape(), first, days, PER_DAY)
    return Tape(tape.symbol, market, tape.rows, tape.source)  # type: ignore[arg-type]


@pytest.fixture
async def world(orderflow_sim_factory):
    """Start a simulator whose market has played the whole tape (so REST has every id) and serves ``archive``."""
    async def start(tape: Tape, archive: Archive, **kwargs):
        sim = await orderflow_sim_factory(tapes=[tape], archive=archive, pace=Pace(rate=1e9),
                                          start_on_subscribe=False, weight_limit=1_000_000, **kwargs)
        await sim.wait_for(lambda record: record.market_finished, timeout=20 * TIMEOUT_FACTOR)
        return sim
    return start


async def _run(sim, out: Path, first: date, last: date, market: str = "spot", **kwargs):
    backfiller = Backfiller(sim.rest_url, market, timeout=5)  # type: ignore[arg-type]
    try:
        return await history(["BTCUSDT"], first, last, out, market=market, archive_url=sim.archive_url,  # type: ignore[arg-type]
                             rest_url=sim.rest_url, backfiller=backfiller, **kwargs)
    finally:
        await backfiller.aclose()


def _ids(out: Path, market: str = "spot") -> list[int]:
    return ds.dataset(out / market / "BTCUSDT" / "trades").to_table(columns=["id"]).column("id").to_pylist()


async def test_clean_days_into_the_store(world, tmp_path) -> None:
    """Three clean days: every id once, in order, with exact decimals and the archive as source."""
    tape = _tape()
    sim = await world(tape, Archive(tape))
    result = await _run(sim, tmp_path, FIRST, FIRST + timedelta(days=2))
    assert _ids(tmp_path) == [row.id for row in tape.rows]
    assert (result.days, result.trades, result.files_fetched, result.gaps) == (3, 1200, 3, [])
    table = ds.dataset(tmp_path / "spot" / "BTCUSDT" / "trades").to_table()
    assert str(table.schema.field("price").type) == "decimal128(38, 8)"
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"
    row = table.slice(0, 1).to_pylist()[0]
    assert str(row["price"].normalize()) == str(__import__("decimal").Decimal(tape.rows[0].price).normalize())
    assert row["source"] == "archive"


async def test_month_with_missing_out_of_order_and_cut(world, tmp_path) -> None:
    """A month with a day missing, one out of order and one download cut midway: every id once, the missing day
    filled over REST, bars equal to a recomputation from the trades."""
    first = date(2025, 9, 1)
    tape = _tape(first=first, days=30)
    faults = [ArchiveFault("missing_day", date(2025, 9, 10)), ArchiveFault("out_of_order", date(2025, 9, 20)),
              ArchiveFault("truncated", date(2025, 9, 25))]
    sim = await world(tape, Archive(tape, faults=faults, today=date(2025, 10, 1), monthly_delay=3))  # no monthly yet
    result = await _run(sim, tmp_path, first, date(2025, 9, 30))
    assert _ids(tmp_path) == [row.id for row in tape.rows]
    assert result.gaps == [] and result.holes_filled == 1 and result.ids_filled == PER_DAY
    assert result.out_of_order > 0 and result.missing_days == ["BTCUSDT 2025-09-10"]
    cut = "/data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-09-25.zip"
    assert [status for path, status in sim.archive.requests if path == cut] == [200, 206]  # resumed
    store = Store(tmp_path, "spot", "BTCUSDT")
    sources = ds.dataset(store.trades_dir).to_table(columns=["source"]).column("source").to_pylist()
    assert sources.count("backfill") == PER_DAY
    expected, _ = compute_bars(store, [first + timedelta(days=i) for i in range(30)], Flow())
    for window, bars in expected.items():
        assert bars_from_table(ds.dataset(store.bars_dir(window)).to_table().sort_by("start")) == bars


async def test_rerun_keeps_verified_days_and_refetches_a_replaced_one(world, tmp_path) -> None:
    """A second run fetches no zip again except the one replaced upstream, whose hole it had filled over REST."""
    tape = _tape()
    day = FIRST + timedelta(days=1)
    archive = Archive(tape, faults=[ArchiveFault("replaced", day, size=7)])
    sim = await world(tape, archive)
    first_run = await _run(sim, tmp_path, FIRST, FIRST + timedelta(days=2))
    assert first_run.holes_filled == 1 and first_run.ids_filled == 7
    assert _ids(tmp_path) == [row.id for row in tape.rows]
    zips_before = [p for p, _ in archive.requests if p.endswith(".zip")]
    second = await _run(sim, tmp_path, FIRST, FIRST + timedelta(days=2))
    zips = [p for p, _ in archive.requests if p.endswith(".zip")][len(zips_before):]
    assert zips == [f"/data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-{day}.zip"]
    assert (second.files_fetched, second.files_kept, second.holes_filled) == (1, 2, 0)
    assert _ids(tmp_path) == [row.id for row in tape.rows]


async def test_monthly_zip_for_a_whole_month(world, tmp_path) -> None:
    """A whole published month is one monthly download, split into its days."""
    first = date(2024, 2, 1)  # before 2025: millisecond times
    tape = _tape(first=first, days=29)
    archive = Archive(tape)
    sim = await world(tape, archive)
    result = await _run(sim, tmp_path, first, date(2024, 2, 29))
    assert [p for p, _ in archive.requests if p.endswith(".zip")] == [
        "/data/spot/monthly/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-02.zip"]
    assert result.days == 29 and _ids(tmp_path) == [row.id for row in tape.rows]


async def test_usdm_header_rows(world, tmp_path) -> None:
    """USD-M days (7 columns under a header) land in DIR/usdm/."""
    tape = _tape(market="usdm", days=2)
    sim = await world(tape, Archive(tape))
    await _run(sim, tmp_path, FIRST, FIRST + timedelta(days=1), market="usdm")
    assert _ids(tmp_path, "usdm") == [row.id for row in tape.rows]


@pytest.mark.parametrize(("faults", "message"), [
    ([ArchiveFault("bad_checksum", FIRST, count=0)], "checksum mismatch"),
    ([ArchiveFault("truncated", FIRST, count=0)], "failed 5 times, last: RemoteProtocolError"),
    ([ArchiveFault("status", FIRST, count=0, status=503)], "failed 5 times, last: HTTP 503"),
], ids=["checksum", "truncated", "503"])
async def test_failures_are_one_line_and_leave_no_file(world, tmp_path, faults, message) -> None:
    """A failing download is one HistoryError line; no trades file or unverified zip is left."""
    tape = _tape(days=1)
    sim = await world(tape, Archive(tape, faults=faults))
    with pytest.raises(HistoryError, match=message) as caught:
        await _run(sim, tmp_path, FIRST, FIRST)
    assert "\n" not in str(caught.value)
    store = Store(tmp_path, "spot", "BTCUSDT")
    assert store.days() == [] and not (store.archive_dir / "BTCUSDT-aggTrades-2025-11-01.zip").exists()


async def test_not_published_and_unknown_symbol(world, tmp_path) -> None:
    """A day not published yet is named; a symbol the archive lacks is named."""
    tape = _tape(days=1)
    sim = await world(tape, Archive(tape))
    with pytest.raises(HistoryError, match="2099-01-01 is not published yet"):
        await _run(sim, tmp_path, date(2099, 1, 1), date(2099, 1, 1))
    backfiller = Backfiller(sim.rest_url, "spot")
    with pytest.raises(HistoryError, match=r"ETHUSDT: the archive .* has no spot aggTrades"):
        await history(["ETHUSDT"], FIRST, FIRST, tmp_path, archive_url=sim.archive_url, backfiller=backfiller)
    await backfiller.aclose()


async def test_full_disk_is_one_line(world, tmp_path) -> None:
    """A download that meets a full disk (the part file is /dev/full) fails in one line naming it."""
    tape = _tape(days=1)
    archive = Archive(tape)
    sim = await world(tape, archive)
    folder = Store(tmp_path, "spot", "BTCUSDT").archive_dir
    folder.mkdir(parents=True)
    name = "BTCUSDT-aggTrades-2025-11-01.zip"
    checksum = archive.answer("/" + "data/spot/daily/aggTrades/BTCUSDT/" + name + ".CHECKSUM").body.split()[0]
    (folder / (name + ".part.CHECKSUM")).write_bytes(checksum)
    (folder / (name + ".part")).symlink_to("/dev/full")
    with pytest.raises(HistoryError, match="no space left on the device") as caught:
        await _run(sim, tmp_path, FIRST, FIRST)
    assert "\n" not in str(caught.value) and Store(tmp_path, "spot", "BTCUSDT").days() == []


async def test_cli_history_session(world, tmp_path, capsys) -> None:
    """orderflow history prints its summary and exits 0; a bad date is one line and exit 1."""
    from orderflow_plugin.cli import main

    tape = _tape(days=2)
    sim = await world(tape, Archive(tape))
    argv = ["history", "--symbol", "btcusdt", "--from", "2025-11-01", "--to", "2025-11-02", "--out", str(tmp_path),
            "--archive-url", sim.archive_url, "--rest-url", sim.rest_url]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert "orderflow history: 2 days, 800 trades (2 files downloaded, 0 kept), 0 holes filled" in out
    assert _ids(tmp_path) == [row.id for row in tape.rows]
    assert await asyncio.to_thread(main, [*argv[:4], "2025-13-01", *argv[5:]]) == 1
    assert capsys.readouterr().err.strip() == "orderflow: --from '2025-13-01' is not a date written YYYY-MM-DD (e.g. 2025-11-01)"


@pytest.mark.parametrize("seed", [1, 2], ids=["seed1", "seed2"])
async def test_killed_at_random_and_run_again(world, tmp_path, seed) -> None:
    """orderflow history killed (SIGKILL) at random moments and run again: after every kill the store reads whole
    with no id twice, and the last run ends with every id exactly once."""
    import random
    import sys

    tape = _tape(days=10)
    faults = [ArchiveFault("missing_day", FIRST + timedelta(days=4)),
              ArchiveFault("slow_body", count=0, size=4096, seconds=0.01)]
    sim = await world(tape, Archive(tape, faults=faults))
    argv = [sys.executable, "-m", "orderflow_plugin", "history", "--symbol", "BTCUSDT", "--from", "2025-11-01",
            "--to", "2025-11-10", "--out", str(tmp_path), "--archive-url", sim.archive_url, "--rest-url",
            sim.rest_url, "--concurrency", "2"]
    rnd = random.Random(seed)
    trades_dir = tmp_path / "spot" / "BTCUSDT" / "trades"
    kills = 0
    for attempt in range(4):
        process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.DEVNULL)
        if attempt == 0:  # the first run is killed mid-way, however fast the machine: once its first day is stored
            async with asyncio.timeout(60 * TIMEOUT_FACTOR):
                while process.returncode is None and not (
                        trades_dir.exists() and any(not p.name.startswith(".") for p in trades_dir.iterdir())):
                    await asyncio.sleep(0.005)
            await asyncio.sleep(rnd.uniform(0.0, 0.2))
        try:
            await asyncio.wait_for(process.wait(), 0.001 if attempt == 0 else rnd.uniform(0.5, 4.0))
        except TimeoutError:
            process.kill()
            await process.wait()
            kills += 1
        if trades_dir.exists() and any(not p.name.startswith(".") for p in trades_dir.iterdir()):
            ids = _ids(tmp_path)  # a run killed before its first day's file leaves the folder empty: nothing to read
            assert len(ids) == len(set(ids))
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(process.wait(), 60 * TIMEOUT_FACTOR) == 0
    assert sorted(_ids(tmp_path)) == [row.id for row in tape.rows]
    assert kills  # the seed killed at least one run
    store = Store(tmp_path, "spot", "BTCUSDT")
    expected, _ = compute_bars(store, [FIRST + timedelta(days=i) for i in range(10)], Flow())
    for window, bars in expected.items():
        assert bars_from_table(ds.dataset(store.bars_dir(window)).to_table().sort_by("start")) == bars


async def test_replay_a_store_range(world, tmp_path, capsys) -> None:
    """orderflow replay DIR --from --to plays the stored days through the pipeline, every trade once."""
    import json

    from orderflow_plugin.cli import main

    tape = _tape(days=3)
    sim = await world(tape, Archive(tape))
    await _run(sim, tmp_path, FIRST, FIRST + timedelta(days=2))
    argv = ["replay", str(tmp_path), "--symbol", "BTCUSDT", "--from", "2025-11-02", "--to", "2025-11-03", "--json"]
    assert await asyncio.to_thread(main, argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ids = [line["id"] for line in lines if line.get("event") == "trade"]
    assert ids == [row.id for row in tape.rows[PER_DAY:]]
    assert await asyncio.to_thread(main, ["replay", str(tmp_path), "--from", "2025-12-01"]) == 2
    assert "no spot BTCUSDT trades from 2025-12-01 to 2025-12-01" in capsys.readouterr().err


async def test_gaps_are_exact_and_exit_3(world, tmp_path, capsys) -> None:
    """A first day missing (no earlier bound) and a hole REST cannot fill (503) are reported as exact gaps; the
    command exits 3 and prints each."""
    from orderflow_plugin.cli import main
    from orderflow_plugin.sim import Fault, Scenario

    tape = _tape(days=4)
    day3 = [row.id for row in tape.rows[2 * PER_DAY : 3 * PER_DAY]]
    faults = [ArchiveFault("missing_day", FIRST), ArchiveFault("missing_day", FIRST + timedelta(days=2))]
    sim = await world(tape, Archive(tape, faults=faults),
                      scenario=Scenario(rest=[Fault("rest_status", status=503, count=1000)]))
    argv = ["history", "--symbol", "BTCUSDT", "--from", "2025-11-01", "--to", "2025-11-04", "--out", str(tmp_path),
            "--archive-url", sim.archive_url, "--rest-url", sim.rest_url]
    assert await asyncio.to_thread(main, argv) == 3
    out = capsys.readouterr().out.splitlines()
    gaps = [line for line in out if line.startswith("orderflow history: gap: ")]
    assert gaps[0] == (f"orderflow history: gap: BTCUSDT ids ?..{tape.rows[PER_DAY].id - 1}: 2025-11-01 missing from "
                       "the archive, and no earlier day was asked to bound its first id")
    assert gaps[1].startswith(f"orderflow history: gap: BTCUSDT ids {day3[0]}..{day3[-1]}: between 2025-11-02 and "
                              "2025-11-04; 2025-11-03 missing from the archive; REST: ")
    assert "HTTP 503" in gaps[1] and len(gaps) == 2
    assert _ids(tmp_path) == [row.id for row in tape.rows if row.id not in set(day3)][PER_DAY:]


async def test_monthly_with_a_missing_day_twice(world, tmp_path) -> None:
    """A monthly zip without one day: the day is filled over REST once; the second run fetches nothing."""
    first = date(2024, 2, 1)
    tape = _tape(first=first, days=29)
    archive = Archive(tape, faults=[ArchiveFault("missing_day", date(2024, 2, 14))])
    sim = await world(tape, archive)
    result = await _run(sim, tmp_path, first, date(2024, 2, 29))
    assert (result.holes_filled, result.ids_filled, result.missing_days) == (1, PER_DAY, ["BTCUSDT 2024-02-14"])
    again = await _run(sim, tmp_path, first, date(2024, 2, 29))
    assert (again.files_fetched, again.files_kept, again.holes_filled, again.gaps) == (0, 1, 0, [])
    assert [p for p, _ in archive.requests if p.endswith(".zip")] == [
        "/data/spot/monthly/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-02.zip"]
    assert _ids(tmp_path) == [row.id for row in tape.rows]


async def test_bad_symbol_and_market_are_one_line(tmp_path) -> None:
    """A symbol that is not a Binance symbol and an unknown market are refused before any request."""
    with pytest.raises(HistoryError, match="symbol 'BTC/USDT' does not match"):
        await history(["BTC/USDT"], FIRST, FIRST, tmp_path, archive_url="http://127.0.0.1:9")
    with pytest.raises(HistoryError, match="market must be spot or usdm, got 'coinm'"):
        await history(["BTCUSDT"], FIRST, FIRST, tmp_path, market="coinm", archive_url="http://127.0.0.1:9")  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())
