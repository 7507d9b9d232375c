"""Decoding frames: strict types, exact decimals, clear errors."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import pytest

from orderflow_plugin import BadFrame, Trade
from orderflow_plugin.decode import Decoder, Reply, ServerShutdown

DATA = Path(__file__).resolve().parents[1] / "orderflow_plugin" / "data"
SPOT = (b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1784410630175,"s":"BTCUSDT","a":4017087867,'
        b'"p":"64682.62000000","q":"0.02435000","f":6516181178,"l":6516181180,"T":1784410630170,"m":true,"M":true}}')


def test_spot_frame_to_exact_trade() -> None:
    """A spot frame decodes to a Trade with exact Decimals and the taker side."""
    trade = Decoder("spot").decode(SPOT)
    assert trade == Trade("BTCUSDT", 4017087867, Decimal("64682.62000000"), Decimal("0.02435000"),
                          6516181178, 6516181180, 1784410630170, "sell", 1784410630175, "spot", "live")
    assert isinstance(trade.price, Decimal) and str(trade.price) == "64682.62000000"


@pytest.mark.parametrize("name,market", [
    ("polysim_spot_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl.gz", "spot"),
    ("polysim_perp_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl.gz", "usdm"),
])
def test_every_recorded_binance_frame_decodes(name: str, market: str) -> None:
    """All recorded real frames (spot and futures shapes) decode, ids contiguous."""
    decoder = Decoder(market)
    trades = [decoder.decode(line) for line in gzip.open(DATA / name).read().splitlines()]
    assert all(type(t) is Trade and t.market == market for t in trades)
    assert [t.id for t in trades] == list(range(trades[0].id, trades[0].id + len(trades)))


def test_shutdown_and_reply() -> None:
    """serverShutdown and control replies decode to their own types."""
    decoder = Decoder()
    assert decoder.decode(b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":5}}') == ServerShutdown(5)
    assert decoder.decode(b'{"result": null, "id": 1}') == Reply(id=1)
    assert decoder.decode(b'{"e":"serverShutdown","E":7}') == ServerShutdown(7)  # raw-stream form


def test_raw_stream_trade_decodes() -> None:
    """An unwrapped aggTrade event (raw /ws stream) decodes like a wrapped one."""
    raw = SPOT[len(b'{"stream":"btcusdt@aggTrade","data":'):-1]
    assert Decoder().decode(raw) == Decoder().decode(SPOT)


# The frames are byte blobs: the test ids are the reasons.
BAD_FRAMES = [
    (SPOT[: len(SPOT) // 2], "truncated"),
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    (SPOT.replace(b'"a":4017087867', b'"a":"4017087867"'), "id as a string"),
    (SPOT.replace(b'"p":"64682.62000000"', b'"p":64682.62'), "price as a float"),
    (SPOT.replace(b'"e":"aggTrade"', b'"e":"trade"'), "unknown event"),
    (SPOT.replace(b'"T":1784410630170,', b""), "missing field"),
    (SPOT.replace(b'"q":"0.02435000"', b'"q":"lots"'), "quantity not a number"),
    (SPOT.replace(b'"q":"0.02435000"', b'"q":"NaN"'), "quantity NaN"),
    (SPOT.replace(b'"p":"64682.62000000"', b'"p":"64682.620000001"'), "price with 9 decimals"),
    (SPOT.replace(b'"q":"0.02435000"', b'"q":"92233720368.54775808"'), "quantity past 2^63 units"),
    (SPOT.replace(b'"q":"0.02435000"', b'"q":"-0.02435000"'), "negative quantity"),
    (SPOT.replace(b'"p":"64682.62000000"', b'"p":"6.468262E+4"'), "price with an exponent"),
    (b'{"unexpected": true}', "unknown object"),
    (b"{}", "empty object"),
]


@pytest.mark.parametrize("frame,why", BAD_FRAMES, ids=[why for _, why in BAD_FRAMES])
def test_bad_frames_raise_with_sample(frame: bytes, why: str) -> None:
    """Anything Binance would not send raises BadFrame naming the problem and quoting the frame."""
    with pytest.raises(BadFrame) as info:
        Decoder().decode(frame)
    assert repr(frame[:20].decode())[1:-1] in str(info.value)


def test_a_price_that_does_not_fit_fixed_point_names_itself_and_the_frame() -> None:
    """More than 8 decimals is one line naming the value and quoting the frame, never a rounding."""
    frame = SPOT.replace(b'"p":"64682.62000000"', b'"p":"64682.620000001"')
    with pytest.raises(BadFrame) as info:
        Decoder().decode(frame)
    message = str(info.value)
    assert "'64682.620000001' has more than 8 decimals" in message and "4017087867" in message
    assert "\n" not in message


def test_trailing_zeros_past_8_decimals_are_the_same_price() -> None:
    """``1.000000000`` has 9 decimals but is a whole number of 10^-8: it decodes, its Decimal as written."""
    trade = Decoder().decode(SPOT.replace(b'"p":"64682.62000000"', b'"p":"64682.620000000"'))
    assert str(trade.price) == "64682.620000000"
