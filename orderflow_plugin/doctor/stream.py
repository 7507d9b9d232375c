"""The doctor's stream checks: one per transport stage, from DNS to the first trade, with the TLS certificate."""

from __future__ import annotations

import ssl
import time
from dataclasses import replace
from typing import Any

from ..connect import open_connection
from ..driver import CallSink, Driver, discard
from ..errors import HandshakeRejected, StageTimeout
from ..options import Flow, Sequencing, Timeouts
from ..pipeline import Pipeline
from ..stages import STAGES
from ..symbols import normalize_symbol, stream_name
from ..wsconnection import WsConnection
from .check import CERTIFICATE_ADVICE, Check, certificate_error

__all__ = ["STREAM_CHECKS", "check_stream"]

# In the order of stages.STAGES; zip(strict=True) fails at import if a stage is added there and not named here.
STREAM_CHECKS = ("stream DNS", "stream TCP connect", "stream TLS handshake", "stream HTTP upgrade",
                 "stream subscription", "first aggTrade")
_STAGE_NAMES = dict(zip(STAGES, STREAM_CHECKS, strict=True))
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
_EXPIRY_WARNING_DAYS = 14


async def check_stream(done: list[Check], url: str, symbol: str, market: str, configured: Timeouts,
                       timeout: float, max_size: int, reader: str, context: ssl.SSLContext) -> None:
    """Open one connection as the stream does and append a check per stage, stopping after the one that failed."""
    symbol = normalize_symbol(symbol)
    deadlines = replace(configured, **{stage: min(getattr(configured, stage), timeout) for stage in STAGES})
    # The stream's own pipeline ends the subscribed and first_message stages, as it does for the stream.
    pipeline = Pipeline([symbol], market, CallSink(discard, discard, discard),  # type: ignore[arg-type]
                        sequencing=Sequencing(backfill=False), flow=Flow(enabled=False))
    on_frames = Driver(pipeline).receive_read  # no REST, nothing to rotate: only the connection's own actions
    opened: list[WsConnection] = []

    def on_stage(connection: WsConnection) -> None:
        if not opened:
            opened.append(connection)

    error: Exception | None = None
    connection: WsConnection | None = None
    try:
        connection = await open_connection(f"{url}/stream", [stream_name(symbol)], on_frames, deadlines=deadlines,
                                           max_size=max_size, ssl_context=context, on_stage=on_stage, reader=reader)
    except Exception as exc:  # a StreamError naming its stage; anything else is named by the stage it ran in
        error = exc
        connection = opened[0] if opened else None
    try:
        failed_stage = _failed_stage(error, connection) if error is not None else None
        for stage in STAGES:
            name = _STAGE_NAMES[stage]
            if stage == failed_stage:
                assert error is not None
                elapsed = time.monotonic() - connection.stage_started if connection is not None else 0.0
                done.append(Check(name, "FAIL", elapsed, _stream_failure(error, stage, deadlines, configured, url),
                                  _advice(stage, error)))
                return
            if stage == "tls" and not url.startswith("wss://"):
                done.append(Check(name, "SKIP", 0.0, "ws:// has no TLS"))
                continue
            assert connection is not None
            seconds = connection.timings.get(stage, 0.0)
            if stage == "tls":
                done.append(_certificate(connection, seconds))
            else:
                done.append(Check(name, "PASS", seconds, _detail(stage, connection, symbol)))
    finally:
        if connection is not None:
            await connection.close(1000, "doctor done", 1.0)


def _failed_stage(error: Exception, connection: WsConnection | None) -> str:
    stage = getattr(error, "stage", "")
    if stage in STAGES:
        return stage
    if connection is not None and connection.stage in STAGES:
        return connection.stage
    return STAGES[0]  # nothing was opened: the URL itself is wrong


def _stream_failure(error: Exception, stage: str, deadlines: Timeouts, configured: Timeouts, url: str) -> str:
    if getattr(error, "stage", None) is None:  # not from the transport: an invalid URL or a bug
        return f"cannot open {url}: {type(error).__name__}: {error}"
    text = str(error)
    if isinstance(error, StageTimeout) and getattr(deadlines, stage) < getattr(configured, stage):
        text += f" (the doctor's --timeout; the stream itself waits {getattr(configured, stage):g} s)"
    return text


def _certificate(connection: WsConnection, seconds: float) -> Check:
    """The peer certificate's subject, issuer and expiry; WARN when it expires within two weeks."""
    name = _STAGE_NAMES["tls"]
    cert = connection.transport.get_extra_info("peercert") if connection.transport is not None else None
    if not cert:
        return Check(name, "PASS", seconds, "verified (no certificate details available)")
    subject = _name_field(cert.get("subject", ()), "commonName")
    alt_names = [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    who = subject or ", ".join(alt_names) or "?"
    issuer = _name_field(cert.get("issuer", ()), "organizationName") or _name_field(cert.get("issuer", ()),
                                                                                   "commonName")
    expires = cert.get("notAfter", "")
    detail = f"verified certificate for {who}" + (f" issued by {issuer}" if issuer else "")
    if not expires:
        return Check(name, "PASS", seconds, detail)
    days = (ssl.cert_time_to_seconds(expires) - time.time()) / 86400
    detail += f", expires {expires} (in {days:.0f} days)"
    if days < _EXPIRY_WARNING_DAYS:
        return Check(name, "WARN", seconds, detail, "the server's certificate expires soon; connections will fail "
                     "after that date")
    return Check(name, "PASS", seconds, detail)


def _name_field(name: Any, field: str) -> str:
    for rdn in name:
        for key, value in rdn:
            if key == field:
                return str(value)
    return ""


def _detail(stage: str, connection: WsConnection, symbol: str) -> str:
    return {
        "resolve": f"{connection.uri.host} resolved",
        "tcp_connect": f"connected to {connection.endpoint}",
        "http_upgrade": "101 Switching Protocols",
        "subscribed": f"{stream_name(symbol)} confirmed",
        "first_message": f"{symbol} aggTrade received",
    }.get(stage, "")


def _advice(stage: str, error: Exception) -> str:
    if getattr(error, "stage", None) is None:
        return "check --ws-url / connector.ws_url (wss://host:port)"
    if isinstance(error, HandshakeRejected):
        wait = f" (Retry-After {error.retry_after:g} s)" if error.retry_after is not None else ""
        if error.status in (418, 429):
            return (f"Binance rate-limited or banned this IP (HTTP {error.status}); wait{wait} and open fewer "
                    "connections (reconnect.connections_per_5min)")
        return f"the server refused the upgrade (HTTP {error.status}): check the URL path and the market"
    if certificate_error(error) is not None:
        return CERTIFICATE_ADVICE
    if stage == "tls" and isinstance(error, StageTimeout):
        return ("TCP is up but the TLS handshake got no answer: not a TLS port (ws:// rather than wss://?), or a "
                "firewall or proxy silently dropping packets")
    return _STAGE_ADVICE[stage]
