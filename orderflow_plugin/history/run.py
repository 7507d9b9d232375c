"""One history run: download, verify, normalize, store, fill every id hole, recompute the bars, summarize.

Each step reads what the previous one left on disk, so a run killed anywhere and run again picks up
where it stopped: verified zips are kept, a day's trades are rewritten only when its archive changed,
holes are found from the store itself (inside a day, between days, over a missing day) and filled
over REST by the stream's own :class:`~orderflow_plugin.backfill.Backfiller` within its weight budget,
or reported as exact gaps; the bars are recomputed from the whole range.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx

from ..backfill import Backfiller, BackfillFailed
from ..metrics import Bar
from ..models import Market
from ..options import Flow
from ..symbols import normalize_symbol
from .bars import compute_bars
from .download import Downloaded, Downloader
from .normalize import id_holes, read_zip, split_days
from .plan import ArchiveFile, HistoryError, NotPublished, plan, utc_today
from .store import Store, trades_table

__all__ = ["Gap", "HistoryResult", "Progress", "history"]

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Gap:
    """Ids of ``symbol`` the store lacks: ``first``..``last`` (None: not known), and why."""

    symbol: str
    first: int | None
    last: int | None
    why: str

    def __str__(self) -> str:
        first = "?" if self.first is None else self.first
        last = "?" if self.last is None else self.last
        return f"{self.symbol} ids {first}..{last}: {self.why}"


@dataclass
class HistoryResult:
    """What a run did."""

    days: int = 0
    trades: int = 0
    files_fetched: int = 0
    files_kept: int = 0
    missing_days: list[str] = field(default_factory=list)
    out_of_order: int = 0
    duplicates: int = 0
    holes_filled: int = 0
    ids_filled: int = 0
    gaps: list[Gap] = field(default_factory=list)
    bars: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: days, trades, holes filled, gaps left."""
        bars = ", ".join(f"{count} {window}" for window, count in self.bars.items())
        return (f"{self.days} days, {self.trades:,} trades ({self.files_fetched} files downloaded, "
                f"{self.files_kept} kept), {self.holes_filled} holes filled over REST ({self.ids_filled:,} trades), "
                f"{len(self.gaps)} gaps left; bars: {bars or 'none'}")


class Progress:
    """What a run reports as it goes (the CLI draws a rich progress bar from it); the default does nothing."""

    def start(self, days: int) -> None:
        """``days`` days are to be done."""

    def bytes(self, count: int) -> None:
        """``count`` more bytes arrived."""

    def day(self, trades: int) -> None:
        """One more day is done, with ``trades`` trades."""


async def history(
    symbols: Sequence[str],
    first: date,
    last: date,
    out: Path,
    *,
    market: Market = "spot",
    archive_url: str = "https://data.binance.vision",
    rest_url: str = "https://api.binance.com",
    flow: Flow | None = None,
    concurrency: int = 4,
    today: date | None = None,
    backfiller: Backfiller | None = None,
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> HistoryResult:
    """Fetch ``first``..``last`` of each symbol into the store at ``out``; HistoryError on any failure."""
    if market not in ("spot", "usdm"):
        raise HistoryError(f"market must be spot or usdm, got {market!r}")
    try:
        symbols = list(dict.fromkeys(normalize_symbol(s) for s in symbols))
    except ValueError as exc:
        raise HistoryError(str(exc)) from None
    if not symbols:
        raise HistoryError("at least one symbol is needed")
    today = today or utc_today()
    flow = flow or Flow()
    progress = progress or Progress()
    plans = {symbol: plan(market, symbol, first, last, today) for symbol in symbols}
    progress.start(sum(len(f.days) for files in plans.values() for f in files))
    result = HistoryResult()
    owns = backfiller is None
    rest = backfiller or Backfiller(rest_url, market)
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=True) as client:
            for symbol, files in plans.items():
                store = Store(out, market, symbol)
                try:
                    store.archive_dir.mkdir(parents=True, exist_ok=True)
                    downloader = Downloader(archive_url, store.archive_dir, client, on_bytes=progress.bytes)
                    found = await _download(downloader, files, concurrency, symbol, first, last, today, archive_url)
                    _store_days(store, found, result, progress)
                    await _fill(store, first, last, rest, result)
                    _bars(store, first, last, flow, result)
                except OSError as exc:  # the store's own writes: a full disk, a read-only folder
                    if exc.errno == errno.ENOSPC:
                        raise HistoryError(f"no space left on the device writing the store under {out}; free some "
                                           "and run again (it resumes)") from exc
                    raise HistoryError(f"cannot write the store under {out}: {exc.strerror or exc}") from exc
    finally:
        if owns:
            await rest.aclose()
    return result


async def _download(downloader: Downloader, files: list[ArchiveFile], concurrency: int, symbol: str,
                    first: date, last: date, today: date, url: str) -> dict[date, Downloaded | None]:
    """Every asked day's verified zip (a monthly one serves each of its days), None where the archive has none."""
    gate = asyncio.Semaphore(concurrency)

    async def one(file: ArchiveFile) -> list[tuple[ArchiveFile, Downloaded | None]]:
        async with gate:
            got = await downloader.get(file)
        if got is None and file.monthly:  # not published as a month (yet): its days one by one
            return [pair for part in await asyncio.gather(*(one(d) for d in file.daily())) for pair in part]
        return [(file, got)]

    tasks = [asyncio.ensure_future(one(f)) for f in files]
    try:
        results = [pair for part in await asyncio.gather(*tasks) for pair in part]
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    found: dict[date, Downloaded | None] = {}
    for file, got in results:
        for day in file.days:
            found[day] = got
    if all(got is None for got in found.values()):
        raise HistoryError(f"{symbol}: the archive at {url} has no {downloader.folder.parent.parent.name} aggTrades "
                           f"from {first} to {last} (is {symbol} listed on that market?)")
    for day, got in sorted(found.items()):
        if got is None and day >= today - timedelta(days=1):
            raise NotPublished(f"{symbol} {day} is not published yet: Binance's archive adds each UTC day the "
                               f"next day; ask again later or end --to earlier", day)
    return found


def _store_days(store: Store, found: dict[date, Downloaded | None], result: HistoryResult,
                progress: Progress) -> None:
    """Write each day made from a zip that changed (or was never stored); keep the others."""
    done: set[Path] = set()
    for day, got in sorted(found.items()):
        if got is None:
            result.missing_days.append(f"{store.symbol} {day}")
            progress.day(0)
            continue
        if got.fetched:
            result.files_fetched += got.path not in done
        else:
            result.files_kept += got.path not in done
        if got.path in done:
            continue
        done.add(got.path)
        days = got.file.days
        # A day the zip has no trades for keeps the REST-filled file a run made of it ("missing"): the same
        # zip has still no trades for it, and a changed zip changes the other days' tags too.
        if all(store.tag(d) in (got.sha256, "missing") for d in days if d in found):
            for d in days:
                progress.day(store.count(d))
            continue
        parsed = read_zip(got.path, got.file.name)
        result.out_of_order += parsed.out_of_order
        result.duplicates += parsed.duplicates
        by_day = split_days(parsed.table)
        for d in days:
            table = by_day.get(d)
            if table is not None and d in found:
                store.write_day(d, table, got.sha256)
            else:
                result.missing_days.append(f"{store.symbol} {d}")
                if store.tag(d) not in (None, "missing"):  # made from an older zip that had trades that day
                    store.day_path(d).unlink()
            progress.day(0 if table is None else table.num_rows)


async def _fill(store: Store, first: date, last: date, rest: Backfiller, result: HistoryResult) -> None:
    """Find every id hole in the stored days and fetch it over REST, or report it as a gap."""
    holes: list[tuple[int | None, int | None, str]] = []
    previous: tuple[date, int] | None = None
    day = first
    lacking: list[date] = []
    while day <= last:
        table = store.read_day(day, ["id"])
        if table is None or table.num_rows == 0:
            lacking.append(day)
        else:
            ids = table.column("id")
            low, high = ids[0].as_py(), ids[-1].as_py()
            missing_days = f"; {_days(lacking)} missing from the archive" if lacking else ""
            if previous is None and lacking:
                holes.append((None, low - 1, f"{_days(lacking)} missing from the archive, and no earlier day "
                                            "was asked to bound its first id"))
            elif previous is not None and low > previous[1] + 1:
                holes.append((previous[1] + 1, low - 1, f"between {previous[0]} and {day}{missing_days}"))
            holes += [(a, b, f"inside {day}") for a, b in id_holes(ids)]
            previous, lacking = (day, high), []
        day += timedelta(days=1)
    if lacking and previous is not None:
        holes.append((previous[1] + 1, None, f"{_days(lacking)} missing from the archive, and no later day was "
                                             "asked to bound its last id"))
    for low, high, why in holes:
        if low is None or high is None:
            result.gaps.append(Gap(store.symbol, low, high, why))
            continue
        try:
            trades = await rest.fetch(store.symbol, low, high)
        except BackfillFailed as exc:
            trades = exc.fetched
            result.gaps.append(Gap(store.symbol, exc.first, exc.last, f"{why}; REST: {exc}"))
        else:
            result.holes_filled += 1
        if trades:
            table = trades_table(trades, "backfill")
            for d, part in split_days(table).items():
                result.ids_filled += store.merge_day(d, part)


def _bars(store: Store, first: date, last: date, flow: Flow, result: HistoryResult) -> None:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    present = [d for d in days if store.day_path(d).exists()]
    result.days += len(present)
    bars, trades = compute_bars(store, days, flow)
    result.trades += trades
    for window, closed in bars.items():
        by_day: dict[date, list[Bar]] = {d: [] for d in days}
        for bar in closed:
            by_day.setdefault(date(1970, 1, 1) + timedelta(days=bar.start // _DAY_MS), []).append(bar)
        for d, day_bars in by_day.items():
            if day_bars or store.day_path(d).exists():
                store.write_bars(window, d, day_bars)
        result.bars[window] = result.bars.get(window, 0) + len(closed)


def _days(days: list[date]) -> str:
    if len(days) == 1:
        return str(days[0])
    return f"{days[0]}..{days[-1]} ({len(days)} days)"

