"""``orderflow doctor``: check, in order and each within its own deadline, everything a stream needs.

One :class:`Check` per step with PASS, FAIL, WARN or SKIP, its time, what it saw, and for a
failure a plain next step. The stream checks use the same staged transport as the stream, so a
failure names the exact stage.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import socket
import ssl
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

import orderflow_plugin

from .config import Settings
from .decode import Decoder, Reply
from .errors import HandshakeRejected, StreamError
from .models import Trade
from .plugins import plugins_from_settings
from .symbols import normalize_symbol, stream_name
from .transport import STAGES, Deadlines, WsConnection, open_connection

__all__ = ["Check", "run_doctor"]

_REST_PATHS = {"spot": "/api/v3", "usdm": "/fapi/v1"}
_STAGE_NAMES = {
    "resolve": "stream DNS", "tcp_connect": "stream TCP connect", "tls": "stream TLS handshake",
    "http_upgrade": "stream HTTP upgrade", "subscribed": "stream subscription", "first_message": "first aggTrade",
}
_STAGE_ADVICE = {
    "resolve": "the host name did not resolve: check connector.ws_url, DNS and network access",
    "tcp_connect": "nothing accepted the TCP connection: check host and port, firewall or proxy "
                   "(for the simulator: is `orderflow sim` running on that port?)",
    "tls": "the TLS handshake failed: check the system clock, CA certificates and any TLS-intercepting proxy",
    "http_upgrade": "TCP is up but the WebSocket upgrade failed: a proxy that does not pass WebSockets, "
                    "or the wrong port or path",
    "subscribed": "the subscription was not confirmed: check the symbol and the market (spot or usdm)",
    "first_message": "subscribed, but no trade came: the symbol may be quiet or wrong; try a liquid one",
}


@dataclass
class Check:
    """One step of the doctor."""

    name: str
    status: str  # PASS, FAIL, WARN, SKIP
    seconds: float
    detail: str
    next_step: str = ""

    def line(self) -> str:
        """The human line (and the next step under it)."""
        text = f"{self.status:<4}  {self.name:<22} {self.seconds * 1000:8.1f} ms  {self.detail}"
        return text + (f"\n      -> {self.next_step}" if self.next_step else "")

    def as_json(self) -> dict[str, Any]:
        """The machine form."""
        return asdict(self)


async def run_doctor(settings: Settings, *, ws_url: str, rest_url: str, symbol: str, market: str) -> list[Check]:
    """Run every check in order; never raises for a failing check."""
    checks: list[Check] = [
        Check("settings", "PASS", 0.0, f"env {settings.env}; read from {', '.join(settings.sources)}"),
        _install(),
        _plugins(settings),
    ]
    c = settings.connector
    deadlines = Deadlines(c.resolve_timeout, c.tcp_connect_timeout, c.tls_timeout, c.http_upgrade_timeout,
                          c.subscribed_timeout, c.first_message_timeout)
    checks += await _stream(ws_url.rstrip("/"), normalize_symbol(symbol), market, deadlines, c.max_size,
                            c.transport)
    checks += await _rest(rest_url.rstrip("/"), normalize_symbol(symbol), market, settings.sequence.rest_timeout)
    checks.append(await _loop_lag())
    return checks


def _install() -> Check:
    module = orderflow_plugin.__file__
    version = orderflow_plugin.__version__
    try:
        installed = importlib.metadata.version("orderflow-plugin")
    except importlib.metadata.PackageNotFoundError:
        return Check("install", "WARN", 0.0, f"version {version} imported from {module}, but no installed "
                     "distribution", "install it with `pip install -e .` (or `make demo`) so the console script "
                     "and entry points exist")
    if installed != version:
        return Check("install", "WARN", 0.0, f"imported {version} from {module} but the installed metadata says "
                     f"{installed}", "a stale install: reinstall, or check which environment runs your bot")
    return Check("install", "PASS", 0.0, f"orderflow-plugin {version} from {module}")


def _plugins(settings: Settings) -> Check:
    started = time.monotonic()
    manager = plugins_from_settings(settings)
    described = []
    for name, plugin in sorted(manager.list_name_plugin(), key=lambda item: str(item[0])):
        hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or ())
        described.append(f"{name} ({', '.join(hooks) or 'no hooks'})")
    detail = "; ".join(described) or "none loaded"
    elapsed = time.monotonic() - started
    if manager.load_errors:
        return Check("plugins", "WARN", elapsed, f"{detail}; {len(manager.load_errors)} failed: "
                     + "; ".join(str(e) for e in manager.load_errors), "fix or remove the failing plugin files")
    return Check("plugins", "PASS", elapsed, detail)


async def _stream(url: str, symbol: str, market: str, deadlines: Deadlines, max_size: int,
                  reader: str) -> list[Check]:
    decoder = Decoder(market)  # type: ignore[arg-type]
    opened: list[WsConnection] = []

    def on_frame(connection: WsConnection, frame: bytes) -> None:
        try:
            event = decoder.decode(frame)
        except Exception:
            return
        if type(event) is Trade:
            connection.first_trade()
        elif type(event) is Reply:
            connection.subscribed(event.id, event.error)

    def on_stage(connection: WsConnection) -> None:
        if not opened:
            opened.append(connection)

    secure = url.startswith("wss://")
    error: StreamError | None = None
    try:
        connection = await open_connection(f"{url}/stream", [stream_name(symbol)], on_frame, deadlines=deadlines,
                                           max_size=max_size, on_stage=on_stage, reader=reader)
    except StreamError as exc:
        error = exc
        connection = opened[0] if opened else None
    timings = connection.timings if connection is not None else {}
    checks = []
    failed = False
    for stage in STAGES:
        name = _STAGE_NAMES[stage]
        if stage == "tls" and not secure:
            checks.append(Check(name, "SKIP", 0.0, "ws:// has no TLS"))
            continue
        if failed:
            checks.append(Check(name, "SKIP", 0.0, "an earlier stream check failed"))
        elif error is not None and error.stage == stage:
            failed = True
            elapsed = time.monotonic() - connection.stage_started if connection is not None else 0.0
            checks.append(Check(name, "FAIL", elapsed, str(error), _advice(stage, error)))
        else:
            checks.append(Check(name, "PASS", timings.get(stage, 0.0), _detail(stage, connection, symbol)))
    if connection is not None:
        await connection.close(1000, "doctor done", 1.0)
    return checks


def _detail(stage: str, connection: WsConnection | None, symbol: str) -> str:
    if connection is None:
        return ""
    if stage == "tls" and connection.transport is not None:
        cert = connection.transport.get_extra_info("peercert") or {}
        subject = dict(x[0] for x in cert.get("subject", ())).get("commonName", "?")
        expires = cert.get("notAfter", "?")
        if expires != "?":
            days = (ssl.cert_time_to_seconds(expires) - time.time()) / 86400
            return f"certificate for {subject}, expires {expires} (in {days:.0f} days)"
        return f"certificate for {subject}"
    return {
        "resolve": f"{connection.uri.host} resolved",
        "tcp_connect": f"connected to {connection.endpoint}",
        "http_upgrade": "101 Switching Protocols",
        "subscribed": f"{stream_name(symbol)} confirmed",
        "first_message": f"{symbol} aggTrade received",
    }.get(stage, "")


def _advice(stage: str, error: StreamError) -> str:
    if isinstance(error, HandshakeRejected):
        wait = f" (Retry-After {error.retry_after:g} s)" if error.retry_after is not None else ""
        if error.status in (418, 429):
            return (f"Binance rate-limited or banned this IP (HTTP {error.status}); wait{wait} and open fewer "
                    "connections (connector.connections_per_5min)")
        return f"the server refused the upgrade (HTTP {error.status}): check the URL path and the market"
    return _STAGE_ADVICE[stage]


async def _rest(base: str, symbol: str, market: str, timeout: float) -> list[Check]:
    prefix = _REST_PATHS[market]
    host = urlsplit(base).hostname or ""
    checks = []
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        checks.append(Check("REST DNS", "PASS", time.monotonic() - started, f"{host} resolved"))
    except (OSError, TimeoutError) as exc:
        checks.append(Check("REST DNS", "FAIL", time.monotonic() - started, f"{host}: {exc or 'no answer'}",
                            "check connector.rest_url and DNS; without REST, gaps cannot be backfilled"))
        return checks + [Check(n, "SKIP", 0.0, "REST DNS failed") for n in ("REST ping", "REST aggTrades",
                                                                          "clock offset")]
    async with httpx.AsyncClient(base_url=base, timeout=timeout) as client:
        for name, path, params in (("REST ping", "/ping", {}),
                                   ("REST aggTrades", "/aggTrades", {"symbol": symbol, "limit": 1})):
            started = time.monotonic()
            try:
                response = await client.get(prefix + path, params=params)
                ok = response.status_code == 200
                detail = f"HTTP {response.status_code}" + ("" if ok else f": {response.text[:160]}")
                if ok and path == "/aggTrades":
                    detail += f", last id {response.json()[-1]['a']}" if response.json() else ", no trades yet"
                checks.append(Check(name, "PASS" if ok else "FAIL", time.monotonic() - started, detail,
                                    "" if ok else "REST answers with an error: backfill will fail; see the status"))
            except httpx.HTTPError as exc:
                checks.append(Check(name, "FAIL", time.monotonic() - started, f"{type(exc).__name__}: {exc}",
                                    "REST is unreachable or too slow: check connector.rest_url and the network"))
        started = time.monotonic()
        try:
            before = time.time()
            response = await client.get(prefix + "/time")
            after = time.time()
            offset = response.json()["serverTime"] / 1000 - (before + after) / 2
            status = "PASS" if abs(offset) < 1.0 else "WARN"
            checks.append(Check("clock offset", status, time.monotonic() - started,
                                f"server clock is {offset * 1000:+.0f} ms from ours",
                                "" if status == "PASS" else "sync the system clock (NTP); trade ages will look off"))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            checks.append(Check("clock offset", "FAIL", time.monotonic() - started, f"{type(exc).__name__}: {exc}",
                                "REST /time did not answer properly"))
    return checks


async def _loop_lag(samples: int = 20, interval: float = 0.005) -> Check:
    started = time.monotonic()
    worst = 0.0
    for _ in range(samples):
        before = time.monotonic()
        await asyncio.sleep(interval)
        worst = max(worst, time.monotonic() - before - interval)
    status = "PASS" if worst < 0.05 else "WARN"
    return Check("event loop lag", status, time.monotonic() - started, f"worst {worst * 1000:.1f} ms over {samples} "
                 "sleeps", "" if status == "PASS" else "something blocks the loop; see on_loop_blocked reports")
