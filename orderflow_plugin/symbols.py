"""Symbol names: one pattern, upper case for display, lower case for stream names."""

from __future__ import annotations

import re

__all__ = ["SYMBOL_PATTERN", "normalize_symbol", "stream_name"]

SYMBOL_PATTERN = r"^[A-Z0-9]{2,20}$"
_SYMBOL = re.compile(SYMBOL_PATTERN)


def normalize_symbol(symbol: str) -> str:
    """Return ``symbol`` in upper case, or raise ValueError naming the allowed pattern."""
    if not isinstance(symbol, str):
        raise ValueError(f"symbol {symbol!r} must be a string matching {SYMBOL_PATTERN}")
    upper = symbol.strip().upper()
    if not _SYMBOL.match(upper):
        raise ValueError(f"symbol {symbol!r} does not match {SYMBOL_PATTERN} (e.g. BTCUSDT)")
    return upper


def stream_name(symbol: str) -> str:
    """Return the aggTrade stream name Binance uses for ``symbol`` (``btcusdt@aggTrade``)."""
    return f"{normalize_symbol(symbol).lower()}@aggTrade"
