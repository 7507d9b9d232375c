"""Simulator frames are Binance's, byte for byte."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from orderflow_plugin import bundled_tape, load_tape
from orderflow_plugin.sim.frames import aggtrade_payload, combined, server_shutdown, text_frame

DATA = Path(__file__).resolve().parents[1] / "orderflow_plugin" / "data"


@pytest.mark.parametrize("name,market", [
    ("polysim_spot_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl.gz", "spot"),
    ("polysim_perp_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl.gz", "usdm"),
])
def test_payloads_equal_recorded_binance_frames(name: str, market: str) -> None:
    """Re-encoding every recorded row gives the exact bytes Binance sent, envelope included."""
    path = DATA / name
    tape = load_tape(path)
    lines = gzip.open(path, "rb").read().splitlines()
    assert len(lines) == len(tape.rows)
    for row, line in zip(tape.rows, lines, strict=True):
        payload = aggtrade_payload(market, "BTCUSDT", row)
        assert combined("btcusdt@aggTrade", payload) == line


def test_csv_tape_frames_parse_like_recorded_frames() -> None:
    """Frames built from the CSV tape have the recorded frames' keys, key order and value types."""
    recorded = json.loads(gzip.open(DATA / "polysim_spot_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl.gz").readline())
    row = bundled_tape().rows[0]
    ours = json.loads(combined("btcusdt@aggTrade", aggtrade_payload("spot", "BTCUSDT", row)))
    assert list(ours) == list(recorded)
    assert list(ours["data"]) == list(recorded["data"])
    assert [type(v) for v in ours["data"].values()] == [type(v) for v in recorded["data"].values()]
    assert ours["data"]["p"] == "87648.21000000" and ours["data"]["m"] is True


def test_server_shutdown_raw_and_wrapped() -> None:
    """serverShutdown comes raw on /ws and wrapped with stream !serverShutdown on /stream."""
    assert server_shutdown(5, wrapped=False) == b'{"e":"serverShutdown","E":5}'
    assert json.loads(server_shutdown(5, wrapped=True)) == {"stream": "!serverShutdown",
                                                            "data": {"e": "serverShutdown", "E": 5}}


@pytest.mark.parametrize("size,header", [(5, b"\x81\x05"), (300, b"\x81\x7e\x01\x2c"),
                                         (70000, b"\x81\x7f" + (70000).to_bytes(8, "big"))],
                         ids=["7-bit", "16-bit", "64-bit"])
def test_text_frame_lengths(size: int, header: bytes) -> None:
    """Text frames use the 7-bit, 16-bit and 64-bit length forms of RFC 6455."""
    assert text_frame(b"x" * size).startswith(header)
