"""Trade values: exact decimals and the stable JSON shape."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orderflow_plugin import Trade, normalize_symbol, stream_name
from orderflow_plugin.models import format_decimal


@pytest.mark.parametrize("value,text", [
    ("87648.21000000", "87648.21"), ("100.00000000", "100"), ("0.00001000", "0.00001"), ("1E+2", "100"), ("5", "5"),
])
def test_format_decimal_is_exact_without_exponent(value: str, text: str) -> None:
    """Decimals print exactly, with no exponent and no trailing zeros."""
    assert format_decimal(Decimal(value)) == text


def test_trade_notional_and_json() -> None:
    """notional is exact; as_json has the documented keys with decimals as strings."""
    trade = Trade("BTCUSDT", 5, Decimal("87648.21000000"), Decimal("0.08185000"), 5, 7, 1767225600039, "sell")
    assert trade.notional == Decimal("7174.0059885")
    assert trade.trade_count == 3
    assert trade.as_json() == {"symbol": "BTCUSDT", "id": 5, "price": "87648.21", "qty": "0.08185", "side": "sell",
                               "time": 1767225600039, "first_id": 5, "last_id": 7, "source": "live"}


def test_trade_is_immutable() -> None:
    """Plugins cannot change a trade other plugins will see."""
    trade = Trade("BTCUSDT", 5, Decimal(1), Decimal(1), 5, 5, 0, "buy")
    with pytest.raises(AttributeError):
        trade.price = Decimal(2)  # type: ignore[misc]


@pytest.mark.parametrize("raw,upper", [("btcusdt", "BTCUSDT"), (" EthUsdt ", "ETHUSDT"), ("1000PEPEUSDT", "1000PEPEUSDT")])
def test_symbols_normalised(raw: str, upper: str) -> None:
    """Symbols are upper case for display and lower case in stream names."""
    assert normalize_symbol(raw) == upper
    assert stream_name(raw) == f"{upper.lower()}@aggTrade"


@pytest.mark.parametrize("bad", ["BTC-USDT", "B", "", "A" * 21, 5])
def test_bad_symbols_rejected_with_pattern(bad) -> None:
    """A symbol outside the pattern is rejected, and the error shows the pattern."""
    with pytest.raises(ValueError, match=r"\^\[A-Z0-9\]\{2,20\}\$"):
        normalize_symbol(bad)
