"""Binance's public aggTrades archive (data.binance.vision) over the simulated market, with its defects.

Files, as Binance lays them out (USD-M under ``data/futures/um/`` instead of ``data/spot/``)::

    data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-11-01.zip           one CSV of one UTC day
    data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-11-01.zip.CHECKSUM  "<sha256>  <zip name>\\n"
    data/spot/monthly/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-11.zip            (and its .CHECKSUM)

Spot CSVs have 8 columns and no header, with times in microseconds from 2025-01-01 and in
milliseconds before; USD-M CSVs have 7 columns under a header row, in milliseconds. A day is
published once ``today`` is past it; a month once ``today`` is past its last day.

The defects (:class:`ArchiveFault`) are those the real archive has shown: a missing day, a checksum
that does not match, rows out of order, an archive replaced after it was first published (the first
version lacks a run of rows), and, on the wire, a truncated body, a slow body and 404/503 answers.
:class:`Archive` is pure (bytes in, bytes out); :func:`serve` writes one answer to a transport.
:func:`tiled_tape` spreads a short real tape over whole UTC days, so one tape feeds the archive,
REST and the live stream with the same ids.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import io
import random
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus

from ..models import Market
from ..tape import Tape, TapeRow
from .feed import SymbolFeed

__all__ = ["ARCHIVE_FAULTS", "Archive", "ArchiveAnswer", "ArchiveFault", "archive_path", "serve", "tiled_tape"]

ARCHIVE_FAULTS = ("missing_day", "bad_checksum", "out_of_order", "replaced", "truncated", "slow_body", "status")
_DAY_MS = 86_400_000
_MICROS_FROM = date(2025, 1, 1)  # spot archive times are in microseconds from this day on
_FUTURES_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
_ROOT = {"spot": "data/spot", "usdm": "data/futures/um"}


@dataclass(frozen=True)
class ArchiveFault:
    """One archive defect for ``day`` (None: every file), on ``count`` requests (0: all of them).

    ``replaced``: the first ``count`` downloads of the day's zip get a first version lacking
    ``size`` rows from its middle (with its own checksum); later requests see the full one.
    ``status``: ``count`` requests of the day's files answer ``status``. ``truncated``: the body is
    cut after half. ``slow_body``: ``size`` bytes every ``seconds``.
    """

    kind: str
    day: date | None = None
    count: int = 1
    status: int = 503
    seconds: float = 0.05
    size: int = 10

    def __post_init__(self) -> None:
        if self.kind not in ARCHIVE_FAULTS:
            raise ValueError(f"unknown archive fault {self.kind!r}; known: {', '.join(ARCHIVE_FAULTS)}")
        if self.count < 0 or self.size < 1 or self.seconds < 0:
            raise ValueError(f"archive fault {self.kind}: count >= 0, size >= 1 and seconds >= 0 are required")


@dataclass(frozen=True)
class ArchiveAnswer:
    """One HTTP answer: status, headers, body; ``cut``: close after that many body bytes; ``drip``: (size, s)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    cut: int | None = None
    drip: tuple[int, float] | None = None


def archive_path(market: Market, symbol: str, day: date | None = None, month: tuple[int, int] | None = None) -> str:
    """The path of a daily (``day``) or monthly (``month`` = (year, month)) zip, without a leading slash."""
    if day is not None:
        return f"{_ROOT[market]}/daily/aggTrades/{symbol}/{symbol}-aggTrades-{day.isoformat()}.zip"
    assert month is not None
    return f"{_ROOT[market]}/monthly/aggTrades/{symbol}/{symbol}-aggTrades-{month[0]:04d}-{month[1]:02d}.zip"


def tiled_tape(tape: Tape, first_day: date, days: int, per_day: int) -> Tape:
    """``per_day`` trades on each of ``days`` UTC days from ``first_day``: ``tape`` looped (ids contiguous),
    each day's trades at their recorded spacing from midnight, squeezed into the day if they would overrun it."""
    feed = SymbolFeed(tape, loop=True)
    rows: list[TapeRow] = []
    for d in range(days):
        base = d * per_day
        midnight = _midnight_ms(first_day + timedelta(days=d))
        start = feed.relative_ms(base)
        span = feed.relative_ms(base + per_day - 1) - start
        for position in range(base, base + per_day):
            row = feed.row(position)
            offset = feed.relative_ms(position) - start
            if span >= _DAY_MS:
                offset = offset * (_DAY_MS - 1) // span
            time = midnight + offset
            rows.append(TapeRow(row.id, row.price, row.qty, row.first_id, row.last_id, time, row.buyer_maker, time,
                                row.notional_qty))
    return Tape(tape.symbol, tape.market, rows, f"{tape.source} tiled over {days} days from {first_day}")


class Archive:
    """The archive files of ``tapes`` (one per symbol) as published on ``today``, with ``faults``.

    A day is published once ``today`` is past it; a month ``monthly_delay`` days after that (Binance's come
    early in the next month).
    """

    def __init__(self, tapes: Tape | Sequence[Tape], *, market: Market | None = None, today: date | None = None,
                 faults: Iterable[ArchiveFault] = (), seed: int = 0, monthly_delay: int = 0) -> None:
        tapes = [tapes] if isinstance(tapes, Tape) else list(tapes)
        self.market: Market = market or tapes[0].market
        self.faults = list(faults)
        self.seed = seed
        self.monthly_delay = monthly_delay  # days after a month's end before its monthly zip is published
        self._uses = [0] * len(self.faults)
        self._days: dict[str, dict[date, list[TapeRow]]] = {}
        for tape in tapes:
            by_day: dict[date, list[TapeRow]] = {}
            for row in tape.rows:
                by_day.setdefault(datetime.fromtimestamp(row.time / 1000, UTC).date(), []).append(row)
            self._days[tape.symbol] = by_day
        last = max(day for days in self._days.values() for day in days)
        self.today = today or last + timedelta(days=1)
        self.requests: list[tuple[str, int]] = []  # (path, status) of every answer
        self._cache: dict[tuple[str, str, int], bytes] = {}

    def days(self, symbol: str) -> list[date]:
        """The days with trades of ``symbol`` (published or not, missing or not)."""
        return sorted(self._days.get(symbol, {}))

    def rows(self, symbol: str, day: date) -> list[TapeRow]:
        """The true trades of ``symbol`` on ``day``, in id order (what the archive should hold)."""
        return list(self._days[symbol][day])

    # What is published

    def _published(self, symbol: str, day: date) -> bool:
        return day < self.today and day in self._days.get(symbol, {}) and not self._fault("missing_day", day)

    def _fault(self, kind: str, day: date | None, *, use: bool = False) -> ArchiveFault | None:
        for index, fault in enumerate(self.faults):
            if fault.kind != kind or (fault.day is not None and fault.day != day):
                continue
            if fault.count and self._uses[index] >= fault.count:
                continue
            if use:
                self._uses[index] += 1
            return fault
        return None

    def _day_rows(self, symbol: str, day: date, version: int) -> list[TapeRow]:
        rows = self.rows(symbol, day)
        if version == 1:  # the first, defective version of a replaced archive
            fault = self._fault("replaced", day)
            assert fault is not None
            middle = len(rows) // 2
            del rows[middle : middle + fault.size]
        if self._fault("out_of_order", day):
            rnd = random.Random(f"{self.seed}:{symbol}:{day}")
            for _ in range(max(1, len(rows) // 50)):
                i = rnd.randrange(len(rows) - 1)
                j = min(len(rows) - 1, i + rnd.randint(1, 5))
                rows[i], rows[j] = rows[j], rows[i]
        return rows

    def _zip(self, symbol: str, name: str, days: list[date], version: int) -> bytes:
        key = (symbol, name, version)
        if key not in self._cache:
            csv_name = name.removesuffix(".zip") + ".csv"
            parts = [_FUTURES_HEADER] if self.market == "usdm" else []
            for day in days:
                parts.append(_csv(self.market, self._day_rows(symbol, day, version if len(days) == 1 else 2), day))
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                archive.writestr(csv_name, "".join(parts))
            self._cache[key] = buffer.getvalue()
        return self._cache[key]

    def _resolve(self, path: str) -> tuple[str, str, list[date]] | None:
        """(symbol, zip name, days) for a published zip path, else None."""
        parts = path.strip("/").split("/")
        root = _ROOT[self.market].split("/")
        if parts[: len(root)] != root or len(parts) != len(root) + 4 or parts[len(root) + 1] != "aggTrades":
            return None
        period, symbol, name = parts[len(root)], parts[len(root) + 2], parts[len(root) + 3]
        stem = f"{symbol}-aggTrades-"
        if not name.startswith(stem) or not name.endswith(".zip") or symbol not in self._days:
            return None
        text = name[len(stem) : -4]
        try:
            if period == "daily":
                day = date.fromisoformat(text)
                return (symbol, name, [day]) if self._published(symbol, day) and len(text) == 10 else None
            if period == "monthly" and len(text) == 7:
                year, month = int(text[:4]), int(text[5:])
                last = date(year, month, calendar.monthrange(year, month)[1])
                if last + timedelta(days=self.monthly_delay) >= self.today:
                    return None
                days = [d for d in self.days(symbol)
                        if (d.year, d.month) == (year, month) and self._published(symbol, d)]
                return (symbol, name, days) if days else None
        except ValueError:
            return None
        return None

    # Answers

    def answer(self, path: str, range_header: str | None = None) -> ArchiveAnswer:
        """What ``GET path`` gets (``Range: bytes=N-`` honoured with 206)."""
        result = self._answer(path, range_header)
        self.requests.append((path, result.status))
        return result

    def _answer(self, path: str, range_header: str | None) -> ArchiveAnswer:
        checksum = path.endswith(".CHECKSUM")
        resolved = self._resolve(path.removesuffix(".CHECKSUM"))
        if resolved is None:
            return _plain(404, b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
                               b"</Error>", "application/xml")
        symbol, name, days = resolved
        day = days[0] if len(days) == 1 else None
        status = self._fault("status", day, use=True)
        if status is not None:
            return _plain(status.status, HTTPStatus(status.status).phrase.encode(), "text/plain")
        replaced = self._fault("replaced", day) if day is not None else None
        version = 1 if replaced is not None else 2
        body = self._zip(symbol, name, days, version)
        if checksum:
            digest = hashlib.sha256(body).hexdigest()
            if self._fault("bad_checksum", day, use=True):
                digest = hashlib.sha256(body + b"x").hexdigest()
            return _plain(200, f"{digest}  {name}\n".encode(), "text/plain")
        if replaced is not None:
            self._fault("replaced", day, use=True)
        total = len(body)
        start = _range_start(range_header)
        headers: list[tuple[str, str]] = [("Content-Type", "application/zip"), ("Accept-Ranges", "bytes"),
                                          ("ETag", f'"{hashlib.md5(body).hexdigest()}"')]
        status_code = 200
        if start is not None:
            if start >= total:
                return _plain(416, b"Range Not Satisfiable", "text/plain", [("Content-Range", f"bytes */{total}")])
            body = body[start:]
            status_code = 206
            headers.append(("Content-Range", f"bytes {start}-{total - 1}/{total}"))
        headers.append(("Content-Length", str(len(body))))
        cut = len(body) // 2 if self._fault("truncated", day, use=True) else None
        slow = self._fault("slow_body", day, use=True)
        return ArchiveAnswer(status_code, body, tuple(headers), cut, (slow.size, slow.seconds) if slow else None)


async def serve(transport: asyncio.Transport, answer: ArchiveAnswer) -> None:
    """Write ``answer`` (cut short or dripped as it says), then close the connection."""
    head = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}", "Connection: close",
            *(f"{k}: {v}" for k, v in answer.headers)]
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + answer.body
    if answer.cut is not None:
        data = data[: len(data) - len(answer.body) + answer.cut]
    if answer.drip is None:
        transport.write(data)
    else:
        size, seconds = answer.drip
        for start in range(0, len(data), size):
            if transport.is_closing():
                return
            transport.write(data[start : start + size])
            await asyncio.sleep(seconds)
    transport.close()


def _plain(status: int, body: bytes, content_type: str,
           extra: list[tuple[str, str]] | None = None) -> ArchiveAnswer:
    return ArchiveAnswer(status, body, (("Content-Type", content_type), ("Content-Length", str(len(body))),
                                        *(extra or [])))


def _range_start(header: str | None) -> int | None:
    if not header or not header.startswith("bytes="):
        return None
    first, _, last = header[6:].partition("-")
    return int(first) if first.isdigit() and not last else None


def _midnight_ms(day: date) -> int:
    return calendar.timegm(day.timetuple()) * 1000


def _csv(market: Market, rows: list[TapeRow], day: date) -> str:
    if market == "usdm":
        return "".join(f"{r.id},{r.price},{r.qty},{r.first_id},{r.last_id},{r.time},"
                       f"{'true' if r.buyer_maker else 'false'}\n" for r in rows)
    scale = 1000 if day >= _MICROS_FROM else 1
    # Binance's spot rows carry microsecond precision from 2025; ours are whole milliseconds times 1000.
    return "".join(f"{r.id},{r.price},{r.qty},{r.first_id},{r.last_id},{r.time * scale},{r.buyer_maker},True\n"
                   for r in rows)
