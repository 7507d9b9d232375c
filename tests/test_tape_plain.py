"""The plain CSV reader (split by hand) reads exactly what the csv module reads, and leaves it everything else."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import pytest

from orderflow_plugin import TapeError, load_tape
from orderflow_plugin.tape import BUNDLED_TAPE, _read_csv, _read_plain_csv

from .realtapes import SHARED

BUNDLED = Path(__file__).resolve().parents[1] / "orderflow_plugin" / "data" / BUNDLED_TAPE
REAL_CSV = SHARED / "spot_BTCUSDT-aggTrades-2026-01-01_first5000.csv"
HEADER = b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match\n"


def _both(content: bytes, path: Path) -> tuple[object, object]:
    """What the plain reader and the csv reader make of ``content``."""
    plain = _read_plain_csv(io.BytesIO(content))
    text = io.TextIOWrapper(io.BytesIO(content), encoding="utf-8", newline="")
    return plain, _read_csv(text, path)


@pytest.mark.parametrize("source", ["bundled", "shared"], ids=["bundled", "shared"])
def test_the_plain_reader_gives_the_csv_readers_rows_and_trades(source: str) -> None:
    """On the bundled tape and the shared real dump, the plain reader runs and gives the same rows, so trades."""
    if source == "shared" and not REAL_CSV.is_file():
        pytest.skip("../shared is not present (set ORDERFLOW_REAL_DATA)")
    path = BUNDLED if source == "bundled" else REAL_CSV
    content = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    plain, rows = _both(content, path)
    assert plain is not None and len(rows) == 5000  # type: ignore[arg-type]
    assert plain == rows
    tape = load_tape(path)
    assert list(tape.rows) == rows
    assert [row.to_trade("BTCUSDT") for row in tape.rows] == [row.to_trade("BTCUSDT") for row in rows]


def test_the_plain_reader_splits_across_its_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines cut by the end of one read are joined to the next: the same rows with a read of a few bytes."""
    monkeypatch.setattr("orderflow_plugin.tape._CHUNK", 37)
    content = HEADER + gzip.decompress(BUNDLED.read_bytes())[:20_000].rsplit(b"\n", 1)[0]  # no final newline
    plain, rows = _both(content, BUNDLED)
    assert plain is not None and plain == rows and len(rows) > 100  # type: ignore[arg-type]


@pytest.mark.parametrize("content,plain", [
    (HEADER + b"7,3000.10,1.5,70,72,1714521600000,false,true\n", True),
    (b"7,3000.10,1.5,70,72,1714521600000,False,True\r\n8,3000.1,2,73,73,1714521600001000,True,True\r\n", True),
    (b"7,3000.10,1.5,70,72,1714521600000,False\n\n8,3000.1,2,73,73,1714521600001,True,True,extra\n", True),
    (b'7,"3000.10",1.5,70,72,1714521600000,False,True\n', False),
    (b"7,3000.10,1.5,70,72,1714521600000, TRUE ,True\n", False),
    (b"7,3000.10,1.5,70,72,1714521600000,False,True\r8,3000.1,2,73,73,1714521600001,True,True\r", False),
], ids=["header", "crlf-and-microseconds", "blank-line-and-more-columns", "quoted", "spaced-maker", "cr-only"])
def test_other_shapes_read_the_same(tmp_path: Path, content: bytes, plain: bool) -> None:
    """Plain shapes are read by hand; quotes, odd booleans and lone CRs go to the csv reader: the same rows."""
    path = tmp_path / "ETHUSDT-aggTrades-2024-05-01.csv"
    path.write_bytes(content)
    fast, rows = _both(content, path)
    assert (fast is not None) is plain
    assert list(load_tape(path).rows) == rows and rows


@pytest.mark.parametrize("bad,match", [
    (b"2,abc,1.0,2,2,1714521600001,True,True", r"line 2: not an aggTrades CSV row"),
    (b"2,1.000000001,1.0,2,2,1714521600001,True,True", r"line 2: not an aggTrades CSV row .*more than 8 decimals"),
    (b"2,1.0,1.0,2,2,1714521600001", r"line 2: not an aggTrades CSV row"),
    (b"2,1.0,1.0,2,2,1714521600001,maybe,True", r"line 2: is_buyer_maker 'maybe' is not True or False"),
], ids=["price", "nine-decimals", "short", "maker"])
def test_a_malformed_row_is_one_line_naming_file_and_line(tmp_path: Path, bad: bytes, match: str) -> None:
    """A bad row after good ones (in a gzipped dump too) is the csv reader's one-line error with file and line."""
    good = b"1,1.0,1.0,1,1,1714521600000,True,True\n"
    for name, content in (("BTCUSDT-aggTrades-x.csv", good + bad + b"\n" + good),
                          ("BTCUSDT-aggTrades-x.csv.gz", gzip.compress(good + bad + b"\n", mtime=0))):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(TapeError, match=rf"^tape {re.escape(str(path))}, {match}") as raised:
            load_tape(path)
        assert "\n" not in str(raised.value)
