"""``orderflow history``: the command line over :func:`~orderflow_plugin.history.history`, with a rich progress bar.

Exit codes: 0 when every asked id is in the store, 3 when gaps are left (each printed with its ids
and why), 1 on a failure (one line: ``orderflow: ...``), 2 on a bad option.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar

from ..config import Settings
from ..errors import TapeError
from ..options import Flow, from_table
from ..tape import Tape
from .plan import HistoryError, parse_day
from .run import Progress, history

__all__ = ["history_command", "store_tape_of"]


class _Bar(Progress):
    """Days done of all, trades stored, MB/s of downloads and the time left, on stderr."""

    def __init__(self, console: Console) -> None:
        self.bar = RichBar(TextColumn("[bold]history"), BarColumn(), MofNCompleteColumn(), TextColumn("days"),
                           TextColumn("{task.fields[trades]:>12,} trades"), TextColumn("{task.fields[speed]}"),
                           TimeRemainingColumn(), console=console, transient=False)
        self.task = self.bar.add_task("history", total=0, trades=0, speed="")
        self.started = time.monotonic()
        self.received = 0
        self.trades = 0
        self.shown = False

    def start(self, days: int) -> None:
        self.bar.update(self.task, total=days)
        self.bar.start()  # only once the range is known good: a bad one is just its error line
        self.shown = True

    def bytes(self, count: int) -> None:
        self.received += count
        seconds = max(time.monotonic() - self.started, 1e-3)
        self.bar.update(self.task, speed=f"{self.received / seconds / 1e6:6.1f} MB/s")

    def day(self, trades: int) -> None:
        self.trades += trades
        self.bar.update(self.task, advance=1, trades=self.trades)


def history_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``orderflow history``; print the summary and every gap left."""
    market = args.market or settings.market
    first = parse_day(args.from_day, "--from")
    last = parse_day(args.to_day, "--to") if args.to_day else first
    endpoints = settings.endpoints[market]
    archive_url = args.archive_url or endpoints.get("archive_url") or "https://data.binance.vision"
    rest_url = args.rest_url or settings.connector.rest_url or endpoints.rest_url
    console = Console(stderr=True)
    bar = _Bar(console)
    try:
        result = asyncio.run(history(args.symbol, first, last, args.out, market=market, archive_url=archive_url,
                                     rest_url=rest_url, flow=from_table(Flow, settings.flow),
                                     concurrency=args.concurrency, progress=bar))
    finally:
        if bar.shown:
            bar.bar.stop()
    print(f"orderflow history: {result.summary()}", file=sys.stdout)
    for gap in result.gaps:
        print(f"orderflow history: gap: {gap}", file=sys.stdout)
    return 3 if result.gaps else 0


def store_tape_of(args: argparse.Namespace, settings: Settings) -> Tape:
    """``orderflow replay DIR --symbol S --from D [--to D]``: the store's trades as a tape; TapeError otherwise."""
    from .tape import store_tape

    if not args.from_day:
        raise TapeError(f"{args.file} is a folder: give the days of its store to replay with --from (and --to)")
    symbol = args.symbol or settings.symbols[0]
    try:
        first = parse_day(args.from_day, "--from")
        last = parse_day(args.to_day, "--to") if args.to_day else first
    except HistoryError as exc:
        raise TapeError(str(exc)) from None
    return store_tape(args.file, symbol, args.market or settings.market, first, last)
