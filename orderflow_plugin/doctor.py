"""``orderflow doctor``: check, each within its own deadline, everything a stream needs.

One :class:`Check` per step with PASS, FAIL, WARN or SKIP, its time, what it saw, and for a
failure a plain next step. The stream checks (DNS, TCP, TLS, upgrade, subscription, first trade)
use the same staged transport as the stream, so a failure names the exact stage; the REST checks
(DNS, TCP, ping, aggTrades, clock) run at the same time, so the doctor takes about as long as
the slower of the two. A check that depends on a failed one is SKIP at once, naming it. No check
waits longer than ``timeout`` (the connector's own deadline when that is shorter), and nothing a
check raises escapes: an unexpected exception is a FAIL line naming its type and message.
TLS always verifies, against the system store plus ``ca_file`` when given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.metadata
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

import orderflow_plugin

from .config import Settings
from .decode import Decoder, Reply
from .errors import HandshakeRejected, StageTimeout
from .models import Trade
from .plugins import plugins_from_settings
from .symbols import normalize_symbol, stream_name
from .tls import client_context
from .transport import STAGES, Deadlines, WsConnection, open_connection

__all__ = ["Check", "diagnose", "run_doctor"]

_REST_PATHS = {"spot": "/api/v3", "usdm": "/fapi/v1"}
_STAGE_NAMES = {
    "resolve": "stream DNS", "tcp_connect": "stream TCP connect", "tls": "stream TLS handshake",
    "http_upgrade": "stream HTTP upgrade", "subscribed": "stream subscription", "first_message": "first aggTrade",
}
_REST_NAMES = ("REST DNS", "REST TCP connect", "REST ping", "REST aggTrades", "clock offset")
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
_CERTIFICATE_ADVICE = ("the server's certificate did not verify: for `orderflow sim --tls` pass the CA file it "
                       "printed (--ca-file, connector.ca_file); otherwise check the system clock, the CA store "
                       "and any TLS-intercepting proxy")
_UNEXPECTED_ADVICE = "an unexpected error inside the doctor: please report it with this line"
_EXPIRY_WARNING_DAYS = 14


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


def diagnose(settings: Settings, **kwargs: Any) -> list[Check]:
    """:func:`run_doctor` on a new event loop whose blocking calls (``getaddrinfo``) run on daemon threads.

    A resolver that never answers is abandoned at its deadline instead of holding the process
    until the operating system gives up (``asyncio.run`` would wait for its executor thread).
    """
    with asyncio.Runner() as runner:
        runner.get_loop().set_default_executor(_DaemonThreads())
        return runner.run(run_doctor(settings, **kwargs))


async def run_doctor(settings: Settings, *, ws_url: str, rest_url: str, symbol: str, market: str,
                     ca_file: str | None = None, timeout: float = 3.0) -> list[Check]:
    """Run every check; never raises for a failing or crashing check."""
    settings_check, context = _settings(settings, ca_file)
    checks: list[Check] = [settings_check, _run_sync("install", _install), _run_sync("plugins", _plugins, settings)]
    c = settings.connector
    configured = Deadlines(c.resolve_timeout, c.tcp_connect_timeout, c.tls_timeout, c.http_upgrade_timeout,
                           c.subscribed_timeout, c.first_message_timeout)
    stream_names = [_STAGE_NAMES[stage] for stage in STAGES]
    stream_checks, rest_checks = await asyncio.gather(
        _run_group(stream_names, _stream, ws_url.rstrip("/"), symbol, market, configured, timeout, c.max_size,
                   c.transport, context),
        _run_group(_REST_NAMES, _rest, rest_url.rstrip("/"), symbol, market,
                   min(settings.sequence.rest_timeout, timeout), context),
    )
    checks += stream_checks + rest_checks
    checks += await _run_group(["event loop lag"], _loop_lag)
    return checks


# Running checks: nothing escapes, and what depends on a failure is skipped at once


def _unexpected(name: str, exc: BaseException, seconds: float) -> Check:
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Check(name, "FAIL", seconds, f"unexpected {what}", _UNEXPECTED_ADVICE)


def _run_sync(name: str, check: Callable[..., Check], *args: Any) -> Check:
    started = time.monotonic()
    try:
        return check(*args)
    except Exception as exc:
        return _unexpected(name, exc, time.monotonic() - started)


async def _run_group(names: Sequence[str], run: Callable[..., Awaitable[None]], *args: Any) -> list[Check]:
    """Run checks that append to a list in the order of ``names``; each after a FAIL is SKIP.

    ``run`` returns early after a FAIL that the rest depend on; if it raises, the check it was
    working on (the next name) becomes a FAIL naming the exception.
    """
    done: list[Check] = []
    started = time.monotonic()
    try:
        await run(done, *args)
    except Exception as exc:
        if len(done) < len(names):
            done.append(_unexpected(names[len(done)], exc,
                                    max(0.0, time.monotonic() - started - sum(c.seconds for c in done))))
    failed = next((c.name for c in reversed(done) if c.status == "FAIL"), None)
    reason = f"skipped: {failed} failed" if failed else "skipped"
    return done + [Check(name, "SKIP", 0.0, reason) for name in names[len(done):]]


class _DaemonThreads(concurrent.futures.ThreadPoolExecutor):
    """Each call on its own daemon thread; ``shutdown`` waits for none of them (see :func:`diagnose`)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=call, name="orderflow doctor", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


# Local checks


def _settings(settings: Settings, ca_file: str | None) -> tuple[Check, ssl.SSLContext]:
    detail = f"env {settings.env}; read from {', '.join(settings.sources)}"
    try:
        context = client_context(ca_file)
    except ValueError as exc:  # validated at load; only a file removed since ends here
        return (Check("settings", "FAIL", 0.0, f"{detail}; {exc}", "point connector.ca_file (or --ca-file) at the "
                      "CA bundle again; TLS checks use the system store only"), client_context())
    if ca_file:
        detail += f"; TLS trusts {ca_file} besides the system store"
    return Check("settings", "PASS", 0.0, detail), context


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


async def _loop_lag(done: list[Check], samples: int = 20, interval: float = 0.005) -> None:
    started = time.monotonic()
    worst = 0.0
    for _ in range(samples):
        before = time.monotonic()
        await asyncio.sleep(interval)
        worst = max(worst, time.monotonic() - before - interval)
    status = "PASS" if worst < 0.05 else "WARN"
    done.append(Check("event loop lag", status, time.monotonic() - started, f"worst {worst * 1000:.1f} ms over "
                      f"{samples} sleeps", "" if status == "PASS" else "something blocks the loop; see "
                      "on_loop_blocked reports"))


# The stream: the transport's own stages


async def _stream(done: list[Check], url: str, symbol: str, market: str, configured: Deadlines, timeout: float,
                  max_size: int, reader: str, context: ssl.SSLContext) -> None:
    symbol = normalize_symbol(symbol)
    deadlines = Deadlines(*(min(getattr(configured, stage), timeout) for stage in STAGES))
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

    error: Exception | None = None
    connection: WsConnection | None = None
    try:
        connection = await open_connection(f"{url}/stream", [stream_name(symbol)], on_frame, deadlines=deadlines,
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


def _stream_failure(error: Exception, stage: str, deadlines: Deadlines, configured: Deadlines, url: str) -> str:
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
                    "connections (connector.connections_per_5min)")
        return f"the server refused the upgrade (HTTP {error.status}): check the URL path and the market"
    if _certificate_error(error) is not None:
        return _CERTIFICATE_ADVICE
    if stage == "tls" and isinstance(error, StageTimeout):
        return ("TCP is up but the TLS handshake got no answer: not a TLS port (ws:// rather than wss://?), or a "
                "firewall or proxy silently dropping packets")
    return _STAGE_ADVICE[stage]


def _certificate_error(error: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# REST: the backfill's endpoint


async def _rest(done: list[Check], base: str, symbol: str, market: str, timeout: float,
                context: ssl.SSLContext) -> None:
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
            transport = await _connect_first(loop, infos)
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


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):  # asyncio's strerror repeats the address: say it as the stream does
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


_REST_DNS_ADVICE = "check connector.rest_url and DNS; without REST, gaps cannot be backfilled"


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
    certificate = _certificate_error(exc)
    if certificate is not None:
        return f"TLS certificate verification failed: {certificate.verify_message or certificate.reason}"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect did not complete within {timeout:.1f} s"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return f"no HTTP response within {timeout:.1f} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _http_advice(exc: Exception) -> str:
    if _certificate_error(exc) is not None:
        return _CERTIFICATE_ADVICE
    return "REST is unreachable or too slow: check connector.rest_url and the network; without REST, gaps " \
           "cannot be backfilled"


async def _connect_first(loop: asyncio.AbstractEventLoop, infos: list[Any]) -> asyncio.BaseTransport:
    """A TCP connection to the first resolved address that accepts one (localhost: ::1, then 127.0.0.1)."""
    error: OSError = OSError("no address")
    for family, _, proto, _, address in dict.fromkeys(infos):
        try:
            transport, _ = await loop.create_connection(asyncio.Protocol, address[0], address[1], family=family,
                                                        proto=proto)
            return transport
        except OSError as exc:
            error = exc
    raise error
