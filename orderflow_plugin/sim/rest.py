"""Binance's public REST market-data endpoints over the simulated market. Pure: no sockets.

Spot under ``/api/v3/`` and USD-M futures under ``/fapi/v1/``: ``ping``, ``time``,
``exchangeInfo`` and ``aggTrades`` (``symbol``, ``fromId`` inclusive, ``startTime``,
``endTime``, ``limit`` default 500, max 1000). Only trades the market has already played are
visible, as on the exchange. Errors use Binance's ``{"code": ..., "msg": ...}`` form; request
weight is counted per window and a request over the limit gets ``429`` with ``Retry-After``.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..models import Market
from .feed import SymbolFeed
from .frames import trade_row_json

__all__ = ["RestApi", "RestResponse"]

# (weight, futures weight) per endpoint
_WEIGHTS = {"ping": (1, 1), "time": (1, 1), "exchangeInfo": (20, 1), "aggTrades": (4, 20)}
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_HOUR_MS = 3_600_000


class MarketView(Protocol):
    """What the REST API reads from the market."""

    feeds: Mapping[str, SymbolFeed]

    def happened(self, symbol: str) -> int:
        """How many of ``symbol``'s trades have been played so far."""
        ...


@dataclass
class RestResponse:
    """Status, JSON body and extra headers of one answer."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


class BinanceError(Exception):
    """An error Binance answers with ``{"code", "msg"}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class RestApi:
    """Answer REST requests from ``market``, counting request weight per ``window`` seconds."""

    def __init__(
        self,
        market: MarketView,
        *,
        weight_limit: int = 6000,
        futures_weight_limit: int = 2400,
        window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.market = market
        self.limits = {"spot": weight_limit, "usdm": futures_weight_limit}
        self.window = window
        self.clock = clock
        self.statuses: dict[str, str] = {}  # symbol -> its exchangeInfo status when not TRADING (a halt, a break)
        self._used: dict[str, tuple[int, int]] = {}  # family -> (window number, weight used)
        self._filters: dict[str, list[dict[str, str]]] = {}  # symbol -> its exchangeInfo filters (its rows are fixed)

    def handle(self, path: str, query: Mapping[str, list[str]], *, max_rows: int | None = None) -> RestResponse:
        """Answer ``GET path?query``; ``aggTrades`` with at most ``max_rows`` rows (a short page)."""
        family: Market
        if path.startswith("/api/v3/"):
            family, endpoint = "spot", path.removeprefix("/api/v3/")
        elif path.startswith("/fapi/v1/"):
            family, endpoint = "usdm", path.removeprefix("/fapi/v1/")
        else:
            return _error(BinanceError(404, -5000, f"Path {path}, Method GET is invalid"))
        if endpoint not in _WEIGHTS:
            return _error(BinanceError(404, -5000, f"Path {path}, Method GET is invalid"))
        weight = _WEIGHTS[endpoint][family == "usdm"]
        used, retry_after = self._spend(family, weight)
        headers = [("X-MBX-USED-WEIGHT-1M", str(used))]
        if retry_after is not None:
            limit = self.limits[family]
            error = BinanceError(
                429, -1003,
                f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
                "Please use WebSocket Streams for live updates to avoid polling the API.",
            )
            return _error(error, [*headers, ("Retry-After", str(retry_after))])
        try:
            if endpoint == "ping":
                body = b"{}"
            elif endpoint == "time":
                body = json.dumps({"serverTime": int(self.clock() * 1000)}).encode()
            elif endpoint == "exchangeInfo":
                body = self._exchange_info(family)
            else:
                body = self._agg_trades(family, query, max_rows)
        except BinanceError as exc:
            return _error(exc, headers)
        return RestResponse(200, body, headers)

    def _spend(self, family: str, weight: int) -> tuple[int, int | None]:
        """Add ``weight``; return the weight used and, when over the limit, seconds to wait."""
        now = self.clock()
        number = int(now // self.window)
        current, used = self._used.get(family, (number, 0))
        if current != number:
            used = 0
        used += weight
        self._used[family] = (number, used)
        if used > self.limits[family]:
            return used, max(1, math.ceil((number + 1) * self.window - now))
        return used, None

    def _exchange_info(self, family: Market) -> bytes:
        symbols = []
        for symbol, feed in sorted(self.market.feeds.items()):
            base, quote = _split_symbol(symbol)
            symbols.append({
                "symbol": symbol,
                "status": self.statuses.get(symbol, "TRADING"),
                "baseAsset": base,
                "quoteAsset": quote,
                "filters": self._filters.get(symbol) or self._filters.setdefault(symbol, [
                    {"filterType": "PRICE_FILTER", "tickSize": _step(frozenset(map(_PRICE, feed.rows[:1000])))},
                    {"filterType": "LOT_SIZE", "stepSize": _step(frozenset(map(_QTY, feed.rows[:1000])))},
                ]),
            })
        limit = self.limits[family]
        return json.dumps({
            "timezone": "UTC",
            "serverTime": int(self.clock() * 1000),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limit}
            ],
            "symbols": symbols,
        }).encode()

    def _agg_trades(self, family: Market, query: Mapping[str, list[str]], max_rows: int | None) -> bytes:
        symbol = _one(query, "symbol")
        if not symbol:
            raise BinanceError(
                400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        feed = self.market.feeds.get(symbol)
        if feed is None:
            raise BinanceError(400, -1121, "Invalid symbol.")
        limit = _integer(query, "limit", 500)
        if not 1 <= limit <= 1000:
            raise BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        from_id = _integer(query, "fromId", None)
        start = _integer(query, "startTime", None)
        end = _integer(query, "endTime", None)
        if from_id is not None and (start is not None or end is not None):
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        if start is not None and end is not None and end - start > _HOUR_MS:
            raise BinanceError(400, -1127, "More than 1 hours between startTime and endTime.")
        visible = self.market.happened(symbol)
        if from_id is not None:
            first = feed.position_of_id(from_id)
            stop = visible
        elif start is not None or end is not None:
            start = start if start is not None else end - _HOUR_MS  # type: ignore[operator]
            end = end if end is not None else start + _HOUR_MS
            first = feed.position_of_time(start)
            stop = min(visible, feed.position_of_time(end + 1))
        else:
            first, stop = max(0, visible - limit), visible
        if max_rows is not None:
            limit = min(limit, max_rows)
        rows = []
        for position in range(first, min(stop, first + limit)):
            rows.append(trade_row_json(family, feed.row(position)))
        return ("[" + ",".join(rows) + "]").encode()


def _error(error: BinanceError, headers: list[tuple[str, str]] | None = None) -> RestResponse:
    body = json.dumps({"code": error.code, "msg": error.msg}).encode()
    return RestResponse(error.status, body, headers or [])


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _integer(query: Mapping[str, list[str]], name: str, default: int | None) -> int | None:
    text = _one(query, name)
    if text is None or text == "":
        return default
    if not text.isdigit():
        raise BinanceError(
            400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        )
    return int(text)


def _split_symbol(symbol: str) -> tuple[str, str]:
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-3], symbol[-3:]


_PRICE, _QTY = operator.attrgetter("price"), operator.attrgetter("qty")


@functools.lru_cache(maxsize=256)  # a process's simulators mostly serve the same bundled tape's numbers
def _step(values: frozenset[str]) -> str:
    """The smallest decimal step the sample uses, in Binance's 8-decimal format."""
    decimals = max((len(v.split(".")[1].rstrip("0")) for v in values if "." in v), default=0)
    return f"{10 ** -decimals:.8f}"
