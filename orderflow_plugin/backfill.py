"""Fill holes in the aggregate-id sequence from Binance's REST ``aggTrades`` endpoint.

``GET /api/v3/aggTrades?symbol=&fromId=&limit=1000`` (futures: ``/fapi/v1/aggTrades``), paged
until the hole is closed. Every request has a hard timeout; failures are retried with
backoff, and so is a page with none of the ids asked for (REST can trail the live stream by a
moment); the request weight (4 per spot call, 20 per futures call) is kept under the
per-minute budget; a 429's ``Retry-After`` is honoured by every request and counts as a try;
a 418 (IP ban) stops all backfill until its ``Retry-After`` passes. No wait is longer than
``max_wait``: a hole that would need one fails at once, so REST trouble of any kind ends in a
report of the exact missing ids after a bounded time. Trades fetched before a failure are
kept (:attr:`BackfillFailed.fetched`). httpx is the client: its per-phase timeouts are one
small value object, and its exceptions are translated here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import deque
from decimal import Decimal

import httpx
import msgspec

from .errors import StreamError
from .loopclock import loop_time
from .models import Market, Trade
from .tls import client_context

__all__ = ["BackfillFailed", "Backfiller"]

logger = logging.getLogger(__name__)

_PATHS = {"spot": "/api/v3/aggTrades", "usdm": "/fapi/v1/aggTrades"}
_WEIGHT = {"spot": 4, "usdm": 20}
_PAGE = 1000
_WINDOW = 60.0  # seconds the weight budget is counted over


class BackfillFailed(StreamError):
    """A hole could not be filled over REST; ``first``..``last`` are the ids still missing.

    ``fetched`` holds the trades of the hole that did arrive before the failure (ids below
    ``first``), in order, so that they are delivered rather than lost.
    """

    def __init__(self, message: str, *, url: str, symbol: str, first: int, last: int,
                 fetched: list[Trade] | None = None) -> None:
        self.symbol, self.first, self.last = symbol, first, last
        self.fetched: list[Trade] = fetched if fetched is not None else []
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
    """Fetch missing aggregate trades, politely.

    ``max_wait`` bounds every single wait for the server (a 429's ``Retry-After``, room in the
    weight budget); it defaults to ``timeout * (retries + 1)``, as long as a REST that never
    answers would hold a hole open.
    """

    def __init__(
        self,
        rest_url: str,
        market: Market = "spot",
        *,
        # Timeouts
        timeout: float = 5.0,
        max_wait: float | None = None,
        # Limits
        retries: int = 3,
        weight_per_minute: int = 6000,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.market: Market = market
        self.timeout = timeout
        self.retries = retries
        self.max_wait = timeout * (retries + 1) if max_wait is None else max_wait
        self.weight_per_minute = weight_per_minute
        self._timeout = httpx.Timeout(timeout)
        self._client = client
        self._verify = verify if verify is not None else client_context()
        self._owns_client = client is None
        self._spent: deque[tuple[float, int]] = deque()  # (time, weight) in the last minute
        self._checks: deque[float] = deque()  # when latest_id asked, in the last minute
        # No request before this time (a 429's or 418's Retry-After), and why.
        self._hold_until = 0.0
        self._hold_why = ""
        self._banned = False  # the hold is a 418: refuse rather than wait
        self._rows = msgspec.json.Decoder(list[_Row])
        self.requests = 0

    async def aclose(self) -> None:
        """Close the HTTP client if we made it."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client its requests use (made on first use): the stream's exchangeInfo request shares it."""
        return self._http()

    def spent(self, weight: int) -> None:
        """Count another request its client sent (the stream's exchangeInfo) in the per-minute weight budget."""
        self._spent.append((loop_time(), weight))

    async def fetch(self, symbol: str, first: int, last: int) -> list[Trade]:
        """Every trade of ``symbol`` with id in ``first..last``, in order; BackfillFailed otherwise."""
        trades: list[Trade] = []
        next_id = first
        while next_id <= last:
            params = {"symbol": symbol, "fromId": next_id, "limit": min(_PAGE, last - next_id + 1)}
            try:
                page = await self._get(symbol, params, (next_id, last), tries=self.retries + 1)
            except BackfillFailed as exc:
                exc.fetched = trades  # a page came short, the next one failed: keep what arrived
                raise
            for row in page:
                trades.append(Trade(symbol, row.a, row.p, row.q, row.f, row.l, row.T,
                                    "sell" if row.m else "buy", row.T, self.market, "backfill"))
            next_id = page[-1].a + 1
        return trades

    async def latest_id(self, symbol: str) -> int | None:
        """The newest aggregate id REST has for ``symbol`` (None if none), in one try; BackfillFailed otherwise.

        These liveness checks may spend a tenth of the weight budget at most: the rest is kept for backfill.
        """
        now = loop_time()
        while self._checks and now - self._checks[0] >= _WINDOW:
            self._checks.popleft()
        if (len(self._checks) + 1) * _WEIGHT[self.market] > self.weight_per_minute // 10:
            raise BackfillFailed(f"{symbol}: not asking REST for the newest id: liveness checks may spend a tenth "
                                 f"of the weight budget ({self.weight_per_minute // 10} a minute), all spent",
                                 url=self.rest_url, symbol=symbol, first=0, last=-1)
        self._checks.append(now)
        rows = await self._get(symbol, {"symbol": symbol, "limit": 1}, None, tries=1)
        return rows[-1].a if rows else None

    async def _get(self, symbol: str, params: dict[str, str | int], span: tuple[int, int] | None, *,
                   tries: int) -> list[_Row]:
        """The rows of one request, with retries, the weight budget and Retry-After honoured.

        With ``span`` (``first, last``): only rows with ids in it, and an answer without any is
        retried too. Failures name the span (or ``first=0, last=-1``: no ids, without one).
        """
        url = f"{self.rest_url}{_PATHS[self.market]}"
        first, last = span if span is not None else (0, -1)
        what = f"ids {first}..{last}" if span is not None else "the newest id"
        problem = ""
        fresh_retry = True
        attempt = 0
        while attempt < tries:
            attempt += 1
            await self._budget(symbol, what, first, last)
            try:
                async with asyncio.timeout(self.timeout):  # hard: httpx's timeouts are per read
                    response = await self._http().get(url, params=params, timeout=self._timeout)
            except httpx.TimeoutException as exc:
                problem = f"no answer within {self.timeout:g} s ({type(exc).__name__})"
            except TimeoutError:  # no answer, or one too slow to complete
                problem = f"no answer within {self.timeout:g} s"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if fresh_retry:  # a pooled connection the network dropped while idle: once more at once, free
                    fresh_retry = False
                    attempt -= 1
                    continue
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # the client's own bug under a rare interleaving (anyio+uvloop+TLS raised
                # AttributeError on a socket closed mid-request): another try, never a hole given up at once
                problem = f"the HTTP client raised {type(exc).__name__}: {exc}"
                logger.warning("%s: REST request for %s raised %r; trying again", symbol, what, exc)
            else:
                self.requests += 1
                status = response.status_code
                if status == 200:
                    try:
                        rows = self._rows.decode(response.content)
                    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
                        problem = f"answer is not an aggTrades list: {exc}"
                    else:
                        if span is None:
                            return rows
                        wanted = [r for r in rows if first <= r.a <= last]
                        if wanted:
                            return wanted
                        if rows and rows[0].a > last:  # REST starts after the hole: those ids are gone for good
                            raise BackfillFailed(
                                f"{symbol}: {what} are no longer available on REST (its aggTrades start at id "
                                f"{rows[0].a})", url=url, symbol=symbol, first=first, last=last)
                        # REST can trail the live stream by a moment: the ids may be there shortly.
                        problem = f"REST has no aggTrades from id {first} yet ({len(rows)} rows answered)"
                elif status == 418:
                    wait = _retry_after(response, 120.0)
                    self._hold(wait, "REST answered 418 (IP banned for request weight)", banned=True)
                    raise BackfillFailed(
                        f"{symbol}: {what} not fetched: REST answered 418 (IP banned for request weight); "
                        f"backfill stops for {wait:.0f} s", url=url, symbol=symbol, first=first, last=last)
                elif status == 429:
                    wait = _retry_after(response, 1.0)
                    self._hold(wait, "REST answered 429 (rate limited)")
                    problem = f"HTTP 429, Retry-After {wait:g} s"
                    logger.warning("%s: REST rate limited, Retry-After %g s", symbol, wait)
                    continue  # the next try waits for Retry-After in _budget: no backoff on top
                else:
                    problem = f"HTTP {status}: {response.text[:200]}"
            if attempt < tries:
                base = min(5.0, 0.2 * 2**attempt)
                await asyncio.sleep(random.uniform(base / 2, base))  # never ~0: a lagging REST needs time
        raise BackfillFailed(f"{symbol}: backfill of {what} failed after {tries} tries: {problem}",
                             url=url, symbol=symbol, first=first, last=last)

    def _hold(self, seconds: float, why: str, *, banned: bool = False) -> None:
        """No request for ``seconds`` (Retry-After), from any symbol."""
        until = loop_time() + seconds
        if until >= self._hold_until:
            self._hold_until, self._hold_why, self._banned = until, why, banned

    async def _budget(self, symbol: str, what: str, first: int, last: int) -> None:
        """Wait until a request may be sent: past any Retry-After and within the weight budget.

        A 418 ban, or a wait longer than ``max_wait``, fails at once instead: the hole is then
        reported with its exact ids rather than held while the live trades behind it wait.
        """
        weight = _WEIGHT[self.market]
        while True:
            now = loop_time()
            wait, why = self._hold_until - now, self._hold_why
            if wait <= 0:
                while self._spent and now - self._spent[0][0] >= _WINDOW:
                    self._spent.popleft()
                if sum(w for _, w in self._spent) + weight <= self.weight_per_minute:
                    self._spent.append((now, weight))
                    return
                why = f"the REST weight budget of {self.weight_per_minute} a minute is spent"
                if not self._spent:  # waiting would never help
                    raise BackfillFailed(
                        f"{symbol}: {what} not fetched: the REST weight budget of {self.weight_per_minute} a "
                        f"minute is below one request's weight ({weight})",
                        url=self.rest_url, symbol=symbol, first=first, last=last)
                wait = _WINDOW - (now - self._spent[0][0])
            elif self._banned:
                raise BackfillFailed(
                    f"{symbol}: {what} not fetched: REST backfill paused for {wait:.0f} s more after a 418 ban",
                    url=self.rest_url, symbol=symbol, first=first, last=last)
            if wait > self.max_wait:
                raise BackfillFailed(
                    f"{symbol}: {what} not fetched: {why} for {wait:.1f} s more, longer than max_wait "
                    f"{self.max_wait:g} s", url=self.rest_url, symbol=symbol, first=first, last=last)
            logger.info("%s: %s; waiting %.1f s before fetching %s", symbol, why, wait, what)
            await asyncio.sleep(wait)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, verify=self._verify)
        return self._client


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default
