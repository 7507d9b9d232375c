"""What a history run asks the archive for: days and whole months, their URLs, and the errors it reports.

Binance publishes each UTC day's aggTrades the next day and each month's early in the next month.
A whole month inside the asked range, already over, is asked for as one monthly zip (one request
instead of ~30); any other day as a daily zip. Pure code, no I/O.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ..errors import OrderFlowError
from ..models import Market

__all__ = ["ArchiveFile", "HistoryError", "NotPublished", "parse_day", "plan", "utc_today"]

_ROOT = {"spot": "data/spot", "usdm": "data/futures/um"}


class HistoryError(OrderFlowError):
    """A history run could not finish; the message is one line that names the day, file or value."""


class NotPublished(HistoryError):
    """``day`` is not in the archive yet (Binance adds each UTC day the next day)."""

    def __init__(self, message: str, day: date) -> None:
        super().__init__(message)
        self.day = day


@dataclass(frozen=True)
class ArchiveFile:
    """One archive zip: a day, or a month (``days`` holds every day it covers)."""

    market: Market
    symbol: str
    days: tuple[date, ...]
    monthly: bool = False

    @property
    def name(self) -> str:
        """The zip's file name (``BTCUSDT-aggTrades-2025-11-01.zip``, ``BTCUSDT-aggTrades-2025-11.zip``)."""
        first = self.days[0]
        stamp = f"{first.year:04d}-{first.month:02d}" if self.monthly else first.isoformat()
        return f"{self.symbol}-aggTrades-{stamp}.zip"

    @property
    def path(self) -> str:
        """Its path under the archive's base URL."""
        period = "monthly" if self.monthly else "daily"
        return f"{_ROOT[self.market]}/{period}/aggTrades/{self.symbol}/{self.name}"

    def daily(self) -> list[ArchiveFile]:
        """The daily files of the same days (a monthly zip not published yet)."""
        return [ArchiveFile(self.market, self.symbol, (day,)) for day in self.days]


def utc_today() -> date:
    """Today's date in UTC."""
    return datetime.now(UTC).date()


def parse_day(text: str, what: str = "date") -> date:
    """``YYYY-MM-DD`` -> date; HistoryError naming ``what`` otherwise."""
    try:
        if len(text.strip()) != 10:
            raise ValueError
        return date.fromisoformat(text.strip())
    except ValueError:
        raise HistoryError(f"{what} {text!r} is not a date written YYYY-MM-DD (e.g. 2025-11-01)") from None


def plan(market: Market, symbol: str, first: date, last: date, today: date) -> list[ArchiveFile]:
    """The zips holding ``first``..``last`` (inclusive), monthly where a whole month is over; HistoryError for a
    range that is empty or not published yet."""
    if last < first:
        raise HistoryError(f"--to {last} is before --from {first}")
    if last >= today:
        raise NotPublished(f"{symbol} {last} is not published yet: Binance's archive has each UTC day from the "
                           f"next day on (the newest is {today - timedelta(days=1)})", last)
    files: list[ArchiveFile] = []
    day = first
    while day <= last:
        month_end = date(day.year, day.month, calendar.monthrange(day.year, day.month)[1])
        if day.day == 1 and month_end <= last and month_end < today - timedelta(days=1):
            days = tuple(day + timedelta(days=i) for i in range(month_end.day))
            files.append(ArchiveFile(market, symbol, days, monthly=True))
            day = month_end + timedelta(days=1)
        else:
            files.append(ArchiveFile(market, symbol, (day,)))
            day += timedelta(days=1)
    return files
