"""``orderflow doctor``: check, each within its own deadline, everything a stream needs.

One :class:`Check` per step with PASS, FAIL, WARN or SKIP, its time, what it saw, and for a
failure a plain next step. The stream checks (DNS, TCP, TLS, upgrade, subscription, first trade)
use the same staged transport as the stream, so a failure names the exact stage; the REST checks
(DNS, TCP, ping, aggTrades, clock) run at the same time, so the doctor takes about as long as
the slower of the two. A check that depends on a failed one is SKIP at once, naming it. No check
waits longer than ``timeout`` (the configured ``timeouts`` when shorter), and nothing a
check raises escapes: an unexpected exception is a FAIL line naming its type and message.
TLS always verifies, against the system store plus ``ca_file`` when given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.metadata
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orderflow_plugin

from ..config import Settings
from ..hotpath import hot_path
from ..options import Timeouts, from_table
from ..plugins import plugins_from_settings
from ..runwait import run_wait
from ..tls import client_context
from .check import Check
from .rest import REST_CHECKS, check_rest
from .stream import STREAM_CHECKS, check_stream

__all__ = ["Check", "check_install", "check_loop_lag", "check_plugins", "diagnose", "run_doctor"]

_UNEXPECTED_ADVICE = "an unexpected error inside the doctor: please report it with this line"


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
    checks: list[Check] = [settings_check, _run_sync("install", check_install),
                           _run_sync("plugins", check_plugins, settings)]
    configured = from_table(Timeouts, settings.timeouts)
    stream_checks, rest_checks = await asyncio.gather(
        _run_group(STREAM_CHECKS, check_stream, ws_url.rstrip("/"), symbol, market, configured, timeout,
                   settings.limits.max_size, settings.connector.reader, context),
        _run_group(REST_CHECKS, check_rest, rest_url.rstrip("/"), symbol, market, min(configured.rest, timeout),
                   context),
    )
    checks += stream_checks + rest_checks
    checks += await _run_group(["event loop lag"], check_loop_lag)
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


def check_install() -> Check:
    """Which orderflow-plugin is imported, and whether its installed metadata agrees."""
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
    return Check("install", "PASS", 0.0, f"orderflow-plugin {version} from {module}; hot path {hot_path()}")


def check_plugins(settings: Settings) -> Check:
    """The plugins the settings load, each with its hooks; WARN for those that failed to load."""
    started = time.monotonic()
    manager = plugins_from_settings(settings)
    described = []
    for name, plugin in sorted(manager.list_name_plugin(), key=lambda item: str(item[0])):
        hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or ())
        described.append(f"{name} ({', '.join(hooks) or 'no hooks'})")
    detail = "; ".join(described) or "none loaded"
    if manager.disabled:
        detail += f"; disabled: {', '.join(sorted(manager.disabled))}"
    elapsed = time.monotonic() - started
    if manager.load_errors:
        return Check("plugins", "WARN", elapsed, f"{detail}; {len(manager.load_errors)} failed: "
                     + "; ".join(str(e) for e in manager.load_errors),
                     "fix or remove the failing plugin files; correct the plugins.allow/deny names that match none")
    return Check("plugins", "PASS", elapsed, detail)


async def check_loop_lag(done: list[Check], samples: int = 20, interval: float = 0.005) -> None:
    """How late short sleeps wake, less the time the thread waited for a CPU; appends its Check to ``done``."""
    started = time.monotonic()
    worst = 0.0
    for _ in range(samples):
        waited, before = run_wait(), time.monotonic()
        await asyncio.sleep(interval)
        # Less the time the loop's thread waited for a CPU: on a loaded machine a late wake-up is the
        # machine's doing, not something blocking the loop (issue #25).
        worst = max(worst, time.monotonic() - before - interval - (run_wait() - waited))
    status = "PASS" if worst < 0.05 else "WARN"
    done.append(Check("event loop lag", status, time.monotonic() - started, f"worst {worst * 1000:.1f} ms over "
                      f"{samples} sleeps", "" if status == "PASS" else "something blocks the loop; see "
                      "on_loop_blocked reports"))
