"""The doctor's REST checks against the backfill's endpoint: DNS, TCP, ping, aggTrades and the clock offset.

A symbol aggTrades refuses is looked up in exchangeInfo with the stream's own check (:mod:`..listing`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..connect import connect_first
from ..errors import StreamError
from ..listing import fetch_listing
from ..symbols import normalize_symbol
from .check import CERTIFICATE_ADVICE, Check, certificate_error

__all__ = ["REST_CHECKS", "check_rest"]

REST_CHECKS = ("REST DNS", "REST TCP connect", "REST ping", "REST aggTrades", "clock offset")
_REST_PATHS = {"spot": "/api/v3", "usdm": "/fapi/v1"}
_REST_DNS_ADVICE = "check connector.rest_url and DNS; without REST, gaps cannot be backfilled"


async def check_rest(done: list[Check], base: str, symbol: str, market: str, timeout: float,
                     context: ssl.SSLContext) -> None:
    """Append DNS, TCP, ping, aggTrades and clock checks against the backfill's endpoint, stopping at a FAIL."""
    symbol = normalize_symbol(symbol)
    prefix = _REST_PATHS[market]
    try:
        parts = urlsplit(base)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        parts, host, port, why = None, "", 0, str(exc)
    else:
        why = "" if parts.scheme in ("http", "https") and host else "not an http:// or https:// URL with a host"
    if why:
        done.append(Check("REST DNS", "FAIL", 0.0, f"cannot use {base!r}: {why}",
                          "check --rest-url / connector.rest_url (https://host[:port])"))
        return
    loop = asyncio.get_running_loop()

    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        done.append(Check("REST DNS", "FAIL", time.monotonic() - started,
                          f"resolving {host} got no answer within {timeout:.1f} s", _REST_DNS_ADVICE))
        return
    except (OSError, UnicodeError) as exc:
        why = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
        done.append(Check("REST DNS", "FAIL", time.monotonic() - started, f"resolving {host} failed: {why}",
                          _REST_DNS_ADVICE))
        return
    done.append(Check("REST DNS", "PASS", time.monotonic() - started, f"{host} resolved"))

    started = time.monotonic()
    endpoint = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout) as deadline:
            transport = await connect_first(loop, asyncio.Protocol, infos)
        transport.close()
    except OSError as exc:
        if deadline.expired():
            detail = f"TCP connect to {endpoint} did not complete within {timeout:.1f} s"
        else:
            detail = f"TCP connect to {endpoint} failed: {_os_reason(exc)}"
        done.append(Check("REST TCP connect", "FAIL", time.monotonic() - started, detail,
                          "nothing accepted the TCP connection: check connector.rest_url, firewall or proxy; "
                          "without REST, gaps cannot be backfilled"))
        return
    done.append(Check("REST TCP connect", "PASS", time.monotonic() - started, f"connected to {endpoint}"))

    async with httpx.AsyncClient(base_url=base, timeout=timeout, verify=context) as client:
        started = time.monotonic()
        response = await _get(client, prefix + "/ping", {}, timeout)
        if isinstance(response, Exception):  # unreachable: the rest would only wait as long again
            done.append(Check("REST ping", "FAIL", time.monotonic() - started, _http_failure(response, timeout),
                              _http_advice(response)))
            return
        done.append(_answered("REST ping", response, time.monotonic() - started, ""))

        started = time.monotonic()
        response = await _get(client, prefix + "/aggTrades", {"symbol": symbol, "limit": 1}, timeout)
        if isinstance(response, Exception):
            done.append(Check("REST aggTrades", "FAIL", time.monotonic() - started,
                              _http_failure(response, timeout), _http_advice(response)))
            return
        extra = ""
        if response.status_code == 200:
            try:
                trades = response.json()
                extra = f", last id {trades[-1]['a']}" if trades else ", no trades yet"
            except (ValueError, LookupError, TypeError) as exc:
                done.append(Check("REST aggTrades", "FAIL", time.monotonic() - started,
                                  f"HTTP 200 but not a list of aggTrades ({type(exc).__name__}: {exc}): "
                                  f"{response.text[:120]}", "is connector.rest_url a Binance REST API?"))
                return
        if response.status_code == 400:  # Invalid symbol? exchangeInfo, as the stream asks it, names the near one
            unknown = await _unknown_symbol(client, base, market, symbol, timeout)
            if unknown:
                done.append(Check("REST aggTrades", "FAIL", time.monotonic() - started, unknown,
                                  "check --symbol / the symbols setting: the stream refuses it at start (exit 2)"))
                return
        done.append(_answered("REST aggTrades", response, time.monotonic() - started, extra))

        started = time.monotonic()
        before = time.time()
        response = await _get(client, prefix + "/time", {}, timeout)
        after = time.time()
        if isinstance(response, Exception):
            done.append(Check("clock offset", "FAIL", time.monotonic() - started, _http_failure(response, timeout),
                              _http_advice(response)))
            return
        try:
            offset = response.json()["serverTime"] / 1000 - (before + after) / 2
        except (ValueError, LookupError, TypeError) as exc:
            done.append(Check("clock offset", "FAIL", time.monotonic() - started,
                              f"REST /time answered HTTP {response.status_code} without a serverTime "
                              f"({type(exc).__name__}: {exc})", "REST /time did not answer properly"))
            return
        status = "PASS" if abs(offset) < 1.0 else "WARN"
        done.append(Check("clock offset", status, time.monotonic() - started,
                          f"server clock is {offset * 1000:+.0f} ms from ours",
                          "" if status == "PASS" else "sync the system clock (NTP); trade ages will look off"))


async def _unknown_symbol(client: httpx.AsyncClient, base: str, market: str, symbol: str, timeout: float) -> str:
    """The stream's own line for a symbol exchangeInfo does not list ("" when it does, or REST cannot tell)."""
    try:
        listing = await fetch_listing(client, base, market, timeout=timeout)  # type: ignore[arg-type]
    except StreamError:
        return ""
    unknown = listing.unknown([symbol])
    return "" if unknown is None else str(unknown)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):  # asyncio's strerror repeats the address: say it as the stream does
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


async def _get(client: httpx.AsyncClient, path: str, params: dict[str, Any],
               timeout: float) -> httpx.Response | Exception:
    """The response, or the transport error (a hard ``timeout`` over the whole request, however it drips)."""
    try:
        async with asyncio.timeout(timeout):
            return await client.get(path, params=params)
    except (httpx.HTTPError, TimeoutError) as exc:
        return exc


def _answered(name: str, response: httpx.Response, seconds: float, extra: str) -> Check:
    if response.status_code == 200:
        return Check(name, "PASS", seconds, f"HTTP 200{extra}")
    return Check(name, "FAIL", seconds, f"HTTP {response.status_code}: {response.text[:160]}",
                 "REST answers with an error: backfill will fail; see the status"
                 + (" (Binance rate limit or IP ban)" if response.status_code in (418, 429) else ""))


def _http_failure(exc: Exception, timeout: float) -> str:
    certificate = certificate_error(exc)
    if certificate is not None:
        return f"TLS certificate verification failed: {certificate.verify_message or certificate.reason}"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect did not complete within {timeout:.1f} s"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return f"no HTTP response within {timeout:.1f} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _http_advice(exc: Exception) -> str:
    if certificate_error(exc) is not None:
        return CERTIFICATE_ADVICE
    return "REST is unreachable or too slow: check connector.rest_url and the network; without REST, gaps " \
           "cannot be backfilled"
