"""Read recorded aggTrade tapes: data.binance.vision CSV dumps and WebSocket frame files.

Rows keep Binance's exact decimal strings, so a replayed frame carries the same bytes the
exchange sent. Gzip files (``.gz``) are read transparently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

import msgspec

from .errors import TapeError
from .fixed import decimal
from .models import Market, Trade
from .symbols import normalize_symbol

__all__ = ["BUNDLED_TAPE", "Tape", "TapeRow", "bundled_tape", "load_tape"]

BUNDLED_TAPE = "BTCUSDT-aggTrades-2026-01-01_first5000.csv.gz"
_CSV_HEADER_FIRST = "agg_trade_id"
# Epoch microseconds have 16 digits until the year 2286; milliseconds have 13.
_MICROSECONDS = 10**14
_FORMATS = ("a tape is a data.binance.vision aggTrades CSV dump (.csv), or JSON lines of aggTrade frames or of "
            "the recorder hook's trades, optionally gzipped (.gz)")
_DUMP_NAME = re.compile(r"(?<![A-Za-z0-9])([A-Za-z0-9]{2,20})-aggTrades-")
# A base of two or more characters then a quote asset Binance lists pairs in, all upper case: BTCUSDT, ETHBTC.
_SYMBOL_WORD = re.compile(r"[A-Z0-9]{2,15}(?:USDT|USDC|FDUSD|BUSD|TUSD|USD|BTC|ETH|BNB|EUR|TRY|BRL|JPY)")


class TapeRow(msgspec.Struct, frozen=True, gc=False):
    """One aggregate trade as recorded, decimals kept as Binance's strings."""

    id: int
    price: str
    qty: str
    first_id: int
    last_id: int
    time: int  # ms
    buyer_maker: bool
    event_time: int = 0
    notional_qty: str | None = None  # USD-M "nq"

    def to_trade(self, symbol: str, market: Market = "spot") -> Trade:
        """The exact :class:`Trade` this row stands for."""
        return Trade(
            symbol,
            self.id,
            decimal(self.price),  # the same Decimal for a repeated text (fixed.py): the engine knows its units
            decimal(self.qty),
            self.first_id,
            self.last_id,
            self.time,
            "sell" if self.buyer_maker else "buy",
            self.event_time or self.time,
            market,
        )


@dataclass(frozen=True)
class Tape:
    """The rows of one symbol, in the order recorded."""

    symbol: str
    market: Market
    rows: Sequence[TapeRow]
    source: str

    def trades(self) -> Iterator[Trade]:
        """The rows as :class:`Trade` objects."""
        for row in self.rows:
            yield row.to_trade(self.symbol, self.market)


def bundled_tape() -> Tape:
    """The real BTCUSDT spot slice shipped in the package (5,000 aggTrades, 2026-01-01)."""
    resource = resources.files("orderflow_plugin") / "data" / BUNDLED_TAPE
    with resources.as_file(resource) as path:
        return load_tape(path)


def load_tape(path: str | Path, *, symbol: str | None = None, market: Market | None = None) -> Tape:
    """Read a CSV dump or a frames JSONL file; the symbol comes from the file when not given.

    A CSV dump's rows do not say their symbol: it is taken from anywhere in the file name
    (``spot_BTCUSDT-aggTrades-2026-01-01.csv``, ``binance_ETHUSDT_may.csv``) unless ``symbol``
    names it. A frames file names its own symbol, and a different ``symbol`` is refused.
    """
    path = Path(path)
    name = path.name.removesuffix(".gz")
    if symbol:
        try:
            symbol = normalize_symbol(symbol)
        except ValueError as exc:
            raise TapeError(f"tape {path}: {exc}") from None
    try:
        with _open_text(path) as handle:
            if name.endswith(".csv"):
                plain = _read_plain_csv(handle.buffer)  # type: ignore[attr-defined]  # a TextIOWrapper's bytes
                if plain is None:  # not a plain dump, or a bad row: the csv module reads it, and names the line
                    handle.buffer.seek(0)  # type: ignore[attr-defined]
                rows = _read_csv(handle, path) if plain is None else plain
                found_market: Market | None = None
                found_symbol = _symbol_from_name(name)
            else:
                found_symbol, found_market, rows = _read_frames(handle, path)
                if symbol and found_symbol and symbol != found_symbol:
                    raise TapeError(f"tape {path} holds {found_symbol} trades, not {symbol}")
    except UnicodeDecodeError as exc:
        raise TapeError(f"tape {path}: not a text file (byte {exc.object[exc.start]:#04x} at {exc.start} is not "
                        f"UTF-8); {_FORMATS}") from exc
    except csv.Error as exc:  # NUL bytes and the like: a binary file named .csv
        raise TapeError(f"tape {path}: not a CSV file ({exc}); {_FORMATS}") from exc
    except (OSError, EOFError, zlib.error) as exc:  # missing, unreadable, or a broken .gz
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise TapeError(f"tape {path}: cannot be read ({reason})") from exc
    chosen = symbol or found_symbol
    if not chosen:
        raise TapeError(f"tape {path}: its name does not say which symbol it holds (as "
                        "BTCUSDT-aggTrades-2026-01-01.csv does): give it with --symbol (symbol= in Python)")
    if not rows:
        raise TapeError(f"tape {path}: no aggTrade rows; {_FORMATS}")
    return Tape(normalize_symbol(chosen), market or found_market or "spot", rows, str(path))


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _symbol_from_name(name: str) -> str | None:
    """The symbol a file name states: Binance's ``<SYMBOL>-aggTrades-`` anywhere in it, else the one
    upper-case word ending in a quote asset (``my_BTCUSDT_dump``); None rather than a guess."""
    match = _DUMP_NAME.search(name)
    if match:
        return match.group(1)
    words = {word for word in re.split(r"[^A-Za-z0-9]+", name) if _SYMBOL_WORD.fullmatch(word)}
    return words.pop() if len(words) == 1 else None


def _bool(text: str, path: Path, line: int) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise TapeError(f"tape {path}, line {line}: is_buyer_maker {text!r} is not True or False")


def _read_csv(handle: IO[str], path: Path) -> list[TapeRow]:
    rows: list[TapeRow] = []
    for line, fields in enumerate(csv.reader(handle), start=1):
        if not fields or (line == 1 and fields[0].strip() == _CSV_HEADER_FIRST):
            continue
        try:
            agg, price, qty, first, last, ts, maker = fields[:7]
            stamp = int(ts)
            # Reject what is not a price (fixed.py) now, not at replay; a repeated text is checked once (and its
            # Decimal is the one the replay's trades get).
            decimal(price), decimal(qty)
            rows.append(
                TapeRow(
                    int(agg),
                    price,
                    qty,
                    int(first),
                    int(last),
                    stamp // 1000 if stamp >= _MICROSECONDS else stamp,
                    _bool(maker, path, line),
                )
            )
        except TapeError:
            raise
        except (ValueError, ArithmeticError) as exc:
            raise TapeError(f"tape {path}, line {line}: not an aggTrades CSV row ({exc}): {fields!r:.120}"
                           + (f"; {_FORMATS}" if line == 1 else "")) from exc
    return rows


# Bytes of a CSV dump split at once by the plain reader (whole lines of it: the rest waits for the next read).
_CHUNK = 1 << 22
_MAKER = {"True": True, "False": False, "true": True, "false": False}


def _read_plain_csv(raw: IO[bytes]) -> list[TapeRow] | None:
    """The rows of a plain dump (7 or more unquoted columns, lines ending in ``\n`` or ``\r\n``), split by hand:
    about twice as cheap as ``csv.reader`` plus its text decoding. The same rows as :func:`_read_csv`, or None
    for anything else (quotes, a NUL, a lone ``\r``, a bad row): the csv reader then reads the file again, and
    names a bad line exactly as before."""
    rows: list[TapeRow] = []
    tail = b""
    first = True  # the block holding line 1 (a header may be there)
    try:
        while chunk := raw.read(_CHUNK):
            chunk = tail + chunk
            cut = chunk.rfind(b"\n") + 1
            tail = chunk[cut:]
            if cut:
                _plain_rows(chunk[:cut].decode("utf-8"), rows, first)
                first = False
        if tail:
            _plain_rows(tail.decode("utf-8"), rows, first)
    except (ValueError, ArithmeticError, LookupError):  # UnicodeDecodeError and FixedPointError among them
        return None
    return rows


def _plain_rows(text: str, rows: list[TapeRow], first: bool) -> None:
    """Append the rows of ``text`` (whole lines); ValueError, ArithmeticError or KeyError at the first doubt."""
    if '"' in text or "\x00" in text:
        raise ValueError("not a plain dump")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise ValueError("not a plain dump")
    lines = text.split("\n")
    if first and lines[0].split(",", 1)[0].strip() == _CSV_HEADER_FIRST:
        del lines[0]
    append, maker, check, row, micro = rows.append, _MAKER, decimal, TapeRow, _MICROSECONDS  # locals: cheaper
    for line in lines:
        if not line:
            continue
        fields = line.split(",")
        if len(fields) < 7:
            raise ValueError("a short row")
        price, qty = fields[1], fields[2]
        check(price), check(qty)  # as _read_csv: checked now, and the replay's trades get these Decimals
        stamp = int(fields[5])
        append(row(int(fields[0]), price, qty, int(fields[3]), int(fields[4]),
                   stamp // 1000 if stamp >= micro else stamp, maker[fields[6]]))


def _price(value: object) -> str:
    """A price or quantity as Binance writes it, a string the engine takes (``fixed.decimal``): checked when
    the tape is read, not when it is replayed. A JSON number is refused, as the decoder refuses it."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a decimal string")
    decimal(value)
    return value


def _read_frames(handle: IO[str], path: Path) -> tuple[str | None, Market | None, list[TapeRow]]:
    """Raw (``{"e":"aggTrade",...}``) or combined (``{"stream":...,"data":{...}}``) frames, or the
    recorder hook's trade lines, one per line."""
    rows: list[TapeRow] = []
    symbol: str | None = None
    market: Market | None = None
    for line, text in enumerate(handle, start=1):
        text = text.strip()
        if not text:
            continue
        try:
            frame = json.loads(text)
            if "side" in frame and "id" in frame:  # a line of the recorder hook (Trade.as_json())
                symbol = symbol or normalize_symbol(frame["symbol"])  # a path or a number: ValueError, below
                rows.append(TapeRow(int(frame["id"]), _price(frame["price"]), _price(frame["qty"]),
                                    int(frame["first_id"]), int(frame["last_id"]), int(frame["time"]),
                                    frame["side"] == "sell"))
                continue
            data = frame.get("data", frame)
            if data.get("e") != "aggTrade":
                continue
            symbol = symbol or normalize_symbol(data["s"])
            market = market or ("usdm" if "nq" in data or "st" in data else "spot")
            rows.append(
                TapeRow(
                    int(data["a"]),
                    _price(data["p"]),
                    _price(data["q"]),
                    int(data["f"]),
                    int(data["l"]),
                    int(data["T"]),
                    bool(data["m"]),
                    int(data.get("E", 0)),
                    data.get("nq"),
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
            raise TapeError(f"tape {path}, line {line}: not an aggTrade frame ({exc})"
                           + (f"; {_FORMATS}" if not rows else "")) from exc
        except RecursionError:  # [[[[... thousands deep: json gives up on the stack, not with a ValueError
            raise TapeError(f"tape {path}, line {line}: not an aggTrade frame (JSON nested too deeply); "
                            f"{_FORMATS}") from None
    return symbol, market, rows
