"""Tapes: the bundled real slice, CSV dumps with or without header, and frame files."""

from __future__ import annotations

import gzip
import json
import os
import re
from decimal import Decimal
from pathlib import Path

import pytest

from orderflow_plugin import TapeError, bundled_tape, load_tape

# The shared recordings: next to the repository, or where ORDERFLOW_REAL_DATA says (as tests/test_replay.py).
SHARED = Path(os.environ.get("ORDERFLOW_REAL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "real")


def test_bundled_tape_is_the_real_contiguous_slice() -> None:
    """The bundled tape holds 5,000 contiguous real aggTrades with µs times turned into ms."""
    tape = bundled_tape()
    assert (tape.symbol, tape.market, len(tape.rows)) == ("BTCUSDT", "spot", 5000)
    ids = [row.id for row in tape.rows]
    assert ids == list(range(3800397495, 3800402495))
    assert all(b.first_id == a.last_id + 1 for a, b in zip(tape.rows, tape.rows[1:], strict=False))
    assert sum(row.last_id - row.first_id + 1 for row in tape.rows) == 16028
    first = tape.rows[0]
    assert (first.price, first.qty, first.time, first.buyer_maker) == ("87648.21000000", "0.08185000", 1767225600039, True)
    assert sum(row.buyer_maker for row in tape.rows) == 2003


def test_trades_are_exact_with_taker_side() -> None:
    """Rows become Trades with exact Decimals; m=true is a taker sell."""
    trade = next(bundled_tape().trades())
    assert trade.price == Decimal("87648.21") and trade.qty == Decimal("0.08185")
    assert trade.side == "sell" and trade.trade_count == 1 and trade.source == "live"


def test_csv_with_header_and_milliseconds(tmp_path: Path) -> None:
    """A dump with a header row and ms timestamps reads the same way."""
    path = tmp_path / "ETHUSDT-aggTrades-2024-05-01.csv"
    path.write_text(
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match\n"
        "7,3000.10,1.5,70,72,1714521600000,false,true\n"
    )
    tape = load_tape(path)
    assert tape.symbol == "ETHUSDT"
    assert tape.rows[0].time == 1714521600000 and tape.rows[0].buyer_maker is False


def test_bad_csv_row_names_file_and_line(tmp_path: Path) -> None:
    """A malformed row is reported with the file and its line number."""
    path = tmp_path / "BTCUSDT-aggTrades-x.csv"
    path.write_text("1,1.0,1.0,1,1,1714521600000,True,True\n2,abc,1.0,2,2,1714521600001,True,True\n")
    with pytest.raises(TapeError, match=rf"{path}, line 2"):
        load_tape(path)


@pytest.mark.parametrize("name,market,count,first", [
    ("polysim_spot_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl.gz", "spot", 188, 4017087867),
    ("polysim_perp_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl.gz", "usdm", 228, 3387056463),
])
def test_bundled_frame_files(name: str, market: str, count: int, first: int) -> None:
    """Recorded combined-stream frames read with their symbol and market detected."""
    path = Path(__file__).resolve().parents[1] / "orderflow_plugin" / "data" / name
    tape = load_tape(path)
    assert (tape.symbol, tape.market, len(tape.rows), tape.rows[0].id) == ("BTCUSDT", market, count, first)
    raw = json.loads(gzip.open(path, "rt").readline())["data"]
    assert tape.rows[0].price == raw["p"] and tape.rows[0].event_time == raw["E"]


def test_raw_frames_and_bad_frame(tmp_path: Path) -> None:
    """Raw (unwrapped) frames are read; a frame missing a field names its line."""
    path = tmp_path / "frames.jsonl"
    good = {"e": "aggTrade", "E": 2, "s": "BTCUSDT", "a": 1, "p": "1.0", "q": "2.0", "f": 1, "l": 1, "T": 1, "m": False}
    path.write_text(json.dumps(good) + "\n")
    assert load_tape(path).rows[0].qty == "2.0"
    bad = dict(good)
    del bad["p"]
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(TapeError, match="line 2"):
        load_tape(path)


@pytest.mark.parametrize("field,value", [("p", "1.123456789"), ("q", "-2"), ("p", 1.5)], ids=["9-decimals", "negative",
                                                                                            "json-number"])
def test_a_frame_whose_decimal_is_not_a_price_is_refused_at_load_naming_its_line(tmp_path: Path, field: str,
                                                                                   value: object) -> None:
    """A frames tape is checked as a CSV tape is: a price or quantity the engine cannot take fails the load."""
    path = tmp_path / "frames.jsonl"
    good = {"e": "aggTrade", "E": 2, "s": "BTCUSDT", "a": 1, "p": "1.0", "q": "2.0", "f": 1, "l": 1, "T": 1, "m": False}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "a": 2, field: value}) + "\n")
    with pytest.raises(TapeError, match="line 2: not an aggTrade frame"):
        load_tape(path)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared is not present")
def test_bundled_slice_matches_shared_original() -> None:
    """The bundled CSV is byte-for-byte the shared original."""
    bundled = Path(__file__).resolve().parents[1] / "orderflow_plugin" / "data" / "BTCUSDT-aggTrades-2026-01-01_first5000.csv.gz"
    original = SHARED / "spot_BTCUSDT-aggTrades-2026-01-01_first5000.csv"
    assert gzip.open(bundled).read() == original.read_bytes()


def test_recorder_output_reads_as_a_tape(tmp_path: Path) -> None:
    """The recorder hook's JSON lines are a tape: ids, exact decimals and taker side come back."""
    trades = list(bundled_tape().trades())[:3]
    path = tmp_path / "trades.jsonl"
    path.write_text("".join(json.dumps(t.as_json()) + "\n" for t in trades))
    tape = load_tape(path)
    assert tape.symbol == "BTCUSDT" and [r.id for r in tape.rows] == [t.id for t in trades]
    assert [r.to_trade("BTCUSDT").price for r in tape.rows] == [t.price for t in trades]
    assert [r.buyer_maker for r in tape.rows] == [t.side == "sell" for t in trades]


def _dump(folder: Path, name: str, rows: int = 5) -> Path:
    """The first ``rows`` lines of the bundled real dump, written under ``name`` as its owner might rename it."""
    bundled = Path(__file__).resolve().parents[1] / "orderflow_plugin" / "data" / "BTCUSDT-aggTrades-2026-01-01_first5000.csv.gz"
    path = folder / name
    path.write_text("".join(gzip.open(bundled, "rt").readlines()[:rows]))
    return path


@pytest.mark.parametrize("name,symbol", [
    ("spot_BTCUSDT-aggTrades-2026-01-01_first5000.csv", "BTCUSDT"),
    ("2026/ethusdt-aggTrades-2026-01.csv", "ETHUSDT"),
    ("binance_SOLUSDT_january.csv", "SOLUSDT"),
    ("dump-ETHBTC-2026.csv", "ETHBTC"),
])
def test_symbol_is_found_anywhere_in_the_file_name(tmp_path: Path, name: str, symbol: str) -> None:
    """A dump renamed around its symbol still names it: Binance's <SYMBOL>-aggTrades- anywhere, or one symbol word."""
    (tmp_path / "2026").mkdir()
    assert load_tape(_dump(tmp_path, name)).symbol == symbol


@pytest.mark.parametrize("name", ["my_btc.csv", "BTCUSDT_vs_ETHUSDT.csv", "trades.csv"])
def test_a_name_without_one_symbol_asks_for_it(tmp_path: Path, name: str) -> None:
    """No symbol (or two) in the name: the error says how to give it, and given, the tape loads as that symbol."""
    path = _dump(tmp_path, name)
    with pytest.raises(TapeError, match="give it with --symbol") as raised:
        load_tape(path)
    assert "pass symbol=" not in str(raised.value)
    tape = load_tape(path, symbol="btcusdt", market="usdm")
    assert (tape.symbol, tape.market, len(tape.rows)) == ("BTCUSDT", "usdm", 5)


# Ids are the file names: the contents are byte blobs, and gzip's header holds the time it was written (mtime=0
# keeps the blob itself the same in every xdist worker too).
@pytest.mark.parametrize("name,content", [
    ("garbage.bin", bytes(range(128, 256)) * 4),
    ("garbage.csv", b"\x84\x00\xff\xfe" * 64),
    ("one_huge_field.csv", b"x" * 200_000),
    ("garbage.csv.gz", b"not gzip at all"),
    ("cut.jsonl.gz", gzip.compress(b'{"e": "aggTrade", "s": "BTCUSDT", "a": 1}\n' * 1000, mtime=0)[:60]),
], ids=["garbage.bin", "garbage.csv", "one_huge_field.csv", "garbage.csv.gz", "cut.jsonl.gz"])
def test_a_file_that_is_no_tape_is_a_tape_error(tmp_path: Path, name: str, content: bytes) -> None:
    """Binary, one-field, non-gzip and truncated gzip files raise a one-line TapeError naming the file, no other error."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TapeError, match=rf"^tape {re.escape(str(path))}: ") as raised:
        load_tape(path, symbol="BTCUSDT")
    assert "\n" not in str(raised.value)


def test_a_frames_file_refuses_another_symbol(tmp_path: Path) -> None:
    """Frames name their symbol: the same one given is fine, a different one is refused rather than relabelled."""
    path = tmp_path / "frames.jsonl"
    frame = {"e": "aggTrade", "E": 2, "s": "BTCUSDT", "a": 1, "p": "1.0", "q": "2.0", "f": 1, "l": 1, "T": 1, "m": False}
    path.write_text(json.dumps(frame) + "\n")
    assert load_tape(path, symbol="btcusdt").symbol == "BTCUSDT"
    with pytest.raises(TapeError, match="holds BTCUSDT trades, not ETHUSDT"):
        load_tape(path, symbol="ETHUSDT")


_FRAME = {"e": "aggTrade", "E": 2, "a": 1, "p": "1.0", "q": "2.0", "f": 1, "l": 1, "T": 1, "m": False}


@pytest.mark.parametrize("line", [
    {**_FRAME, "s": "../../etc"},
    {**_FRAME, "s": 123},
    {"data": {**_FRAME, "s": ""}},
    {"id": 1, "symbol": "../x", "price": "1", "qty": "1", "first_id": 1, "last_id": 1, "time": 1, "side": "buy"},
], ids=["path symbol", "number symbol", "empty symbol in a combined frame", "path symbol in a recorder line"])
def test_a_frames_file_naming_a_bad_symbol_is_a_tape_error(tmp_path: Path, line: dict) -> None:
    """A frame whose symbol is a path, a number or empty is a one-line TapeError naming file and line, no ValueError."""
    path = tmp_path / "badsym.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(TapeError, match=rf"^tape {re.escape(str(path))}, line 1: .*symbol") as raised:
        load_tape(path)
    assert "\n" not in str(raised.value)


def test_a_bad_symbol_argument_is_a_tape_error(tmp_path: Path) -> None:
    """symbol='../../etc' is a TapeError naming the tape and the symbol pattern, for a dump as for frames."""
    frames = tmp_path / "frames.jsonl"
    frames.write_text(json.dumps({**_FRAME, "s": "BTCUSDT"}) + "\n")
    for path in (_dump(tmp_path, "BTCUSDT-aggTrades-2026-01-01.csv"), frames):
        with pytest.raises(TapeError, match=rf"^tape {re.escape(str(path))}: symbol '../../etc' does not match"):
            load_tape(path, symbol="../../etc")


def test_a_deeply_nested_frames_file_is_a_tape_error(tmp_path: Path) -> None:
    """A line of JSON nested 100,000 deep is a TapeError naming file and line, not a RecursionError."""
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "\n")
    with pytest.raises(TapeError, match=rf"^tape {re.escape(str(path))}, line 1: not an aggTrade frame \(JSON nested"):
        load_tape(path, symbol="BTCUSDT")
