"""Which symbols the exchange lists and whether they trade: one ``exchangeInfo`` request checks them all.

Binance accepts a SUBSCRIBE to a stream that does not exist and then sends nothing, so a typo'd
symbol looks like a quiet market forever; only ``exchangeInfo`` (``/api/v3/exchangeInfo``,
``/fapi/v1/exchangeInfo``) tells. :func:`read_listing` is pure (bytes in, :class:`Listing` out);
:func:`fetch_listing` is the one request, used by the stream at start and by ``orderflow doctor``.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx
import msgspec

from .errors import StreamError, SymbolNotTrading, UnknownSymbol
from .models import Market

__all__ = ["EXCHANGE_INFO_PATHS", "EXCHANGE_INFO_WEIGHT", "Listing", "fetch_listing", "read_listing"]

EXCHANGE_INFO_PATHS: dict[str, str] = {"spot": "/api/v3/exchangeInfo", "usdm": "/fapi/v1/exchangeInfo"}
EXCHANGE_INFO_WEIGHT: dict[str, int] = {"spot": 20, "usdm": 1}  # Binance's request weight of the whole list
MARKET_NAMES: dict[str, str] = {"spot": "spot", "usdm": "USD-M futures"}
TRADING = "TRADING"


class _Symbol(msgspec.Struct):
    symbol: str
    status: str


class _Info(msgspec.Struct):
    symbols: list[_Symbol]


_decode_info = msgspec.json.Decoder(_Info).decode


@dataclass(frozen=True)
class Listing:
    """Every symbol ``exchangeInfo`` lists for ``market``, with its status (``TRADING``, ``BREAK``, ``HALT``...)."""

    market: Market
    statuses: Mapping[str, str]

    def near(self, symbol: str) -> str | None:
        """The listed symbol closest to ``symbol``, if one is close (a typo's likely meaning)."""
        close = difflib.get_close_matches(symbol, self.statuses, n=1, cutoff=0.75)
        return close[0] if close else None

    def unknown(self, symbols: Iterable[str]) -> UnknownSymbol | None:
        """One error naming every symbol of ``symbols`` not listed, each with its near match; None if all are."""
        missing = [s for s in symbols if s not in self.statuses]
        if not missing:
            return None
        return UnknownSymbol(missing, {s: self.near(s) for s in missing}, MARKET_NAMES[self.market])

    def not_trading(self, symbols: Iterable[str]) -> list[SymbolNotTrading]:
        """One error per listed symbol of ``symbols`` whose status is not TRADING (halted, a break, delisting)."""
        return [SymbolNotTrading(s, self.statuses[s], MARKET_NAMES[self.market]) for s in symbols
                if self.statuses.get(s, TRADING) != TRADING]


def read_listing(body: bytes, market: Market) -> Listing:
    """The listing in an ``exchangeInfo`` answer; ValueError when ``body`` is not one."""
    try:
        info = _decode_info(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ValueError(f"not an exchangeInfo answer: {exc}") from exc
    return Listing(market, {s.symbol: s.status for s in info.symbols})


async def fetch_listing(client: httpx.AsyncClient, rest_url: str, market: Market, *, timeout: float) -> Listing:
    """Ask ``rest_url`` once, within ``timeout`` seconds; StreamError (stage ``exchange_info``) naming why not."""
    url = f"{rest_url.rstrip('/')}{EXCHANGE_INFO_PATHS[market]}"
    try:
        # httpx's own timeout first (it closes what it opened); then a hard one over the whole, large answer
        async with asyncio.timeout(2 * timeout):
            response = await client.get(url, timeout=timeout)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise StreamError(f"exchangeInfo: no answer from {url} within {timeout:g} s", url=url,
                          stage="exchange_info") from exc
    except httpx.HTTPError as exc:
        what = f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise StreamError(f"exchangeInfo: {url} failed: {what}", url=url, stage="exchange_info") from exc
    if response.status_code != 200:
        raise StreamError(f"exchangeInfo: {url} answered HTTP {response.status_code}: {response.text[:160]}",
                          url=url, stage="exchange_info")
    try:
        return read_listing(response.content, market)
    except ValueError as exc:
        raise StreamError(f"exchangeInfo: {url}: {exc}", url=url, stage="exchange_info") from exc
