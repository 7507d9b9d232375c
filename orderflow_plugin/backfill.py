"""Fill holes in the aggregate-id sequence from Binance's REST ``aggTrades`` endpoint.

``GET /api/v3/aggTrades?symbol=&fromId=&limit=1000`` (futures: ``/fapi/v1/aggTrades``), paged
until the hole is closed. Every request has a hard timeout; failures are retried with
backoff; the request weight (4 per spot call, 20 per futures call) is kept under the
per-minute budget; a 429's ``Retry-After`` is honoured; a 418 (IP ban) stops all backfill
until its ``Retry-After`` passes, with a clear error. httpx is the client: its per-phase
timeouts are one small value object, and its exceptions are translated here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from decimal import Decimal

import httpx
import msgspec

from .errors import StreamError
from .models import Market, Trade
from .tls import client_context

__all__ = ["BackfillFailed", "Backfiller"]

logger = logging.getLogger(__name__)

_PATHS = {"spot": "/api/v3/aggTrades", "usdm": "/fapi/v1/aggTrades"}
_WEIGHT = {"spot": 4, "usdm": 20}
_PAGE = 1000


class BackfillFailed(StreamError):
    """A hole could not be filled over REST; ``first``..``last`` are the ids still missing."""

    def __init__(self, message: str, *, url: str, symbol: str, first: int, last: int) -> None:
        self.symbol, self.first, self.last = symbol, first, last
        super().__init__(message, url=url, stage="backfill")


class _Row(msgspec.Struct, gc=False):
    a: int
    p: Decimal
    q: Decimal
    f: int
    l: int  # noqa: E741 - Binance's field name
    T: int
    m: bool


class Backfiller:
    """Fetch missing aggregate trades, politely."""

    def __init__(
        self,
        rest_url: str,
        market: Market = "spot",
        *,
        timeout: float = 5.0,
        retries: int = 3,
        weight_per_minute: int = 6000,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.market: Market = market
        self.retries = retries
        self.weight_per_minute = weight_per_minute
        self._timeout = httpx.Timeout(timeout)
        self._client = client
        self._verify = verify if verify is not None else client_context()
        self._owns_client = client is None
        self._spent: deque[tuple[float, int]] = deque()  # (time, weight) in the last minute
        self._banned_until = 0.0
        self._rows = msgspec.json.Decoder(list[_Row])
        self.requests = 0

    async def aclose(self) -> None:
        """Close the HTTP client if we made it."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._client = None

    async def fetch(self, symbol: str, first: int, last: int) -> list[Trade]:
        """Every trade of ``symbol`` with id in ``first..last``, in order; BackfillFailed otherwise."""
        trades: list[Trade] = []
        next_id = first
        while next_id <= last:
            rows = await self._page(symbol, next_id, last)
            page = [r for r in rows if next_id <= r.a <= last]
            if not page:
                raise BackfillFailed(
                    f"{symbol}: REST has no aggTrades from id {next_id} (missing {next_id}..{last})",
                    url=self.rest_url, symbol=symbol, first=next_id, last=last)
            for row in page:
                trades.append(Trade(symbol, row.a, row.p, row.q, row.f, row.l, row.T,
                                    "sell" if row.m else "buy", row.T, self.market, "backfill"))
            next_id = page[-1].a + 1
        return trades

    async def _page(self, symbol: str, from_id: int, last: int) -> list[_Row]:
        """One page, with retries, the weight budget and Retry-After honoured."""
        url = f"{self.rest_url}{_PATHS[self.market]}"
        params = {"symbol": symbol, "fromId": from_id, "limit": min(_PAGE, last - from_id + 1)}
        problem = ""
        for attempt in range(1, self.retries + 2):
            await self._budget()
            try:
                response = await self._http().get(url, params=params, timeout=self._timeout)
            except httpx.TimeoutException as exc:
                problem = f"no answer within {self._timeout.read:.1f} s ({type(exc).__name__})"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                self.requests += 1
                status = response.status_code
                if status == 200:
                    try:
                        return self._rows.decode(response.content)
                    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
                        problem = f"answer is not an aggTrades list: {exc}"
                elif status == 418:
                    wait = _retry_after(response, 120.0)
                    self._banned_until = time.monotonic() + wait
                    raise BackfillFailed(
                        f"{symbol}: REST answered 418 (IP banned for request weight); backfill stops for "
                        f"{wait:.0f} s", url=url, symbol=symbol, first=from_id, last=last)
                elif status == 429:
                    wait = _retry_after(response, 1.0)
                    problem = f"HTTP 429, Retry-After {wait:g} s"
                    logger.warning("%s: REST rate limited, waiting %.1f s", symbol, wait)
                    await asyncio.sleep(wait)
                    continue
                else:
                    problem = f"HTTP {status}: {response.text[:200]}"
            if attempt <= self.retries:
                await asyncio.sleep(random.uniform(0, min(5.0, 0.2 * 2**attempt)))
        raise BackfillFailed(
            f"{symbol}: backfill of ids {from_id}..{last} failed after {self.retries + 1} tries: {problem}",
            url=url, symbol=symbol, first=from_id, last=last)

    async def _budget(self) -> None:
        """Wait until this request's weight fits in the per-minute budget; refuse while banned."""
        if time.monotonic() < self._banned_until:
            raise BackfillFailed(
                f"REST backfill paused for {self._banned_until - time.monotonic():.0f} s more after a 418 ban",
                url=self.rest_url, symbol="", first=0, last=-1)
        weight = _WEIGHT[self.market]
        while True:
            now = time.monotonic()
            while self._spent and now - self._spent[0][0] >= 60:
                self._spent.popleft()
            if sum(w for _, w in self._spent) + weight <= self.weight_per_minute:
                self._spent.append((now, weight))
                return
            await asyncio.sleep(60 - (now - self._spent[0][0]))

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, verify=self._verify)
        return self._client


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default
