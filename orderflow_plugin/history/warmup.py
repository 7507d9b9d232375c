"""Warm-up with no seam: ``Sequencing(since=...)`` delivers the archive's days, then REST, then live.

Before the stream connects, the days from ``since`` to the newest published one are made whole in
the store by :func:`~orderflow_plugin.history.history` (kept days are not fetched again; holes in
them are filled over REST with the stream's own backfiller and weight budget), then delivered in id
order through the pipeline, so the same hooks, signals and engine see them, tagged ``archive`` (or
``backfill`` for the holes). The pipeline goes on after the last of them: the first live trade opens
the hole to it, which the stream fills over REST (tagged ``backfill``) like any other, so each trade
comes once and in order across both seams.

A restart on a checkpoint whose hole is older than a day (``Sequencing(archive_url=...)`` set) is
warmed up the same way from the day the hole starts (``resume_from``): the archive's days fill the
hole (ids up to the checkpoint's ``last_id`` skipped; up to its lease tagged ``replay`` as after
any crash), and REST only the part of today the archive does not have.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from ..backfill import Backfiller
from ..driver import Driver
from ..models import Market, Trade
from ..options import Flow, Sequencing
from ..pipeline import Pipeline
from .plan import NotPublished, utc_today
from .run import history
from .store import Store, trades_of

__all__ = ["WarmingStream", "parse_since", "warm_up"]


class WarmingStream(Protocol):
    """What the warm-up reads of the stream it warms (an OrderFlow), and the pipeline it delivers into."""

    symbols: tuple[str, ...]
    market: Market
    rest_url: str
    sequencing: Sequencing
    flow: Flow
    pipeline: Pipeline
    driver: Driver
    backfiller: Backfiller | None

logger = logging.getLogger(__name__)

_ARCHIVE = "https://data.binance.vision"


def parse_since(text: str) -> datetime:
    """``"2025-11-01"`` or ``"2025-11-01T00:00Z"`` -> an aware UTC datetime; ValueError otherwise."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def warm_up(flow: WarmingStream, resume_from: datetime | None = None) -> int:
    """Deliver every archived trade of ``flow``'s symbols from ``sequencing.since`` (or, resuming on an old
    checkpoint, those after each symbol's stored id, from ``resume_from``); return how many."""
    since = parse_since(flow.sequencing.since) if flow.sequencing.since else resume_from
    if since is None:
        return 0
    first, last = since.date(), utc_today() - timedelta(days=1)
    if first > last:
        logger.info("warm-up from %s: the archive has no day that recent yet; REST and live go on from the "
                    "stream's first trade", since.isoformat())
        return 0
    folder = flow.sequencing.history_store
    temporary = None if folder else tempfile.TemporaryDirectory(prefix="orderflow-history-")
    root = Path(folder or temporary.name)  # type: ignore[union-attr]
    try:
        try:
            fetched = await _fetch(flow, root, first, last)
        except Exception as exc:  # resuming, the archive only spares REST: REST can fill the hole
            if flow.sequencing.since:
                raise
            logger.warning("warm-up: the archive cannot fill the checkpoint's hole (%s); REST fills it", exc)
            return 0
        if fetched is None:
            logger.info("warm-up from %s: the archive has no day that recent yet", since.isoformat())
            return 0
        last = fetched
        since_ms = int(since.timestamp() * 1000)
        loop = asyncio.get_running_loop()
        delivered = 0
        resuming = not flow.sequencing.since
        for symbol in flow.symbols:
            store = Store(root, flow.market, symbol)
            # Resuming: the checkpoint's id per symbol, the archive goes on after it (a symbol it lacks starts live).
            after = flow.pipeline.sequencers[symbol].last_delivered if resuming else None
            if resuming and after is None:
                continue
            checked = not resuming
            day = first
            while day <= last:
                table = store.read_day(day)
                if table is not None:
                    trades: Iterator[Trade]
                    if after is None:
                        trades = (t for t in trades_of(table, symbol, flow.market) if t.time >= since_ms)
                    else:
                        trades = (t for t in trades_of(table, symbol, flow.market) if t.id > after)
                    if not checked:
                        head = next(trades, None)
                        if head is None:  # the whole day is before the hole
                            day += timedelta(days=1)
                            continue
                        if head.id != after + 1:  # type: ignore[operator]  # the archive starts after the hole
                            logger.warning("warm-up: %s's archive from %s starts at id %d, after the checkpoint's "
                                           "id %d; REST fills the hole", symbol, first, head.id, after)
                            break
                        checked = True
                        trades = itertools.chain((head,), trades)
                    delivered += flow.driver.prime(trades, loop.time())
                    await asyncio.sleep(0)  # a day at a time: the loop's other tasks are not starved
                day += timedelta(days=1)
        logger.info("warm-up: %d archived trades of %s from %s to %s delivered; live follows", delivered,
                    ", ".join(flow.symbols), since.isoformat(), last)
        return delivered
    finally:
        if temporary is not None:
            temporary.cleanup()


async def _fetch(flow: WarmingStream, root: Path, first: date, last: date) -> date | None:
    """Make ``first``..``last`` whole in the store (one day less when the newest is not published yet);
    the last day made whole, or None when there is none."""
    url = flow.sequencing.archive_url or _ARCHIVE
    for attempt in (1, 2):
        try:
            result = await history(flow.symbols, first, last, root, market=flow.market, archive_url=url,
                                   rest_url=flow.rest_url, flow=flow.flow, backfiller=flow.backfiller)
        except NotPublished as exc:
            if attempt == 2 or exc.day != last:
                raise
            if last <= first:  # the only day asked is not out yet
                return None
            last -= timedelta(days=1)
            continue
        for gap in result.gaps:
            logger.warning("warm-up: %s", gap)
        return last
    raise AssertionError("unreachable")
