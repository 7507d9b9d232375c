"""A plugin that records every hook call, and waits on them with deadlines (no sleeps)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from orderflow_plugin import Limits, OrderFlow, PluginManager, Reconnect, Reporting, Timeouts, Trade

READER = "websockets"  # the frame reader make_flow uses; conftest runs the fault suites on each


# At most this much from load: a bound that separates working from broken (a 3 s catch-up against a bug's 40 s)
# must still fail on the bug however loaded the machine is.
_LOAD_CAP = 4.0


class _TimeoutFactor:
    """ORDERFLOW_TESTS_TIMEOUT_FACTOR times the machine's load per CPU over the last minute (1 to 4), read
    each time a limit is computed.

    A shared CI machine at a load of 20 on 2 cores gives each runnable thread a tenth of a CPU: a limit that holds
    idle fails there (issue #26: the doctor, stuck-stage, long-hole and slow-subscriber tests, seen at 15-20).
    Idle, the factor is the variable's (1): limits stay as tight as written. A hang still fails at any load.
    """

    def __init__(self, base: float) -> None:
        self.base = base

    def __float__(self) -> float:
        return self.base * min(_LOAD_CAP, max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))

    def __mul__(self, seconds: float) -> float:
        return float(self) * seconds

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"TIMEOUT_FACTOR({float(self):.2f})"


# Wall-clock limits in tests are multiplied by this (websockets' WEBSOCKETS_TESTS_TIMEOUT_FACTOR): a slow machine
# sets ORDERFLOW_TESTS_TIMEOUT_FACTOR=3 rather than editing tests, and a loaded one scales itself (above).
TIMEOUT_FACTOR = _TimeoutFactor(float(os.environ.get("ORDERFLOW_TESTS_TIMEOUT_FACTOR", "1")))


def require_unshare() -> None:
    """Skip unless ``unshare -n`` (a network namespace with no network) works; in CI, fail instead of skipping."""
    if shutil.which("unshare") is None:
        refusal = "`unshare` is not installed (util-linux)"
    else:
        result = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, timeout=10)
        if result.returncode == 0:
            return
        refusal = f"`unshare -n` is not permitted here ({result.stderr.strip() or result.returncode}): it needs root"
    if os.environ.get("CI"):
        pytest.fail(f"{refusal}; CI runs as root, where it must work", pytrace=False)
    pytest.skip(refusal)


class Events:
    """Records every hook call with its arrival time; trades also by symbol."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, dict[str, Any]]] = []
        self.trades: list[Trade] = []
        self.metrics: list[Any] = []
        self._changed = asyncio.Event()

    def _add(self, hook: str, **kwargs: Any) -> None:
        self.calls.append((time.monotonic(), hook, kwargs))
        self._changed.set()

    def on_startup(self, settings): self._add("on_startup", settings=settings)
    def on_connect_attempt(self, attempt, url, symbols): self._add("on_connect_attempt", attempt=attempt, url=url, symbols=symbols)
    def on_connected(self, url, stage_timings): self._add("on_connected", url=url, stage_timings=stage_timings)
    def on_disconnected(self, url, code, reason, error): self._add("on_disconnected", code=code, reason=reason, error=error)
    def on_reconnect_scheduled(self, attempt, delay, error): self._add("on_reconnect_scheduled", attempt=attempt, delay=delay, error=error)
    def on_stall(self, symbols, silent_for, stage, stack): self._add("on_stall", symbols=symbols, silent_for=silent_for, stage=stage, stack=stack)
    def on_loop_blocked(self, blocked_for, stack): self._add("on_loop_blocked", blocked_for=blocked_for, stack=stack)
    def on_gap(self, symbol, first_missing, last_missing): self._add("on_gap", symbol=symbol, first=first_missing, last=last_missing)
    def on_backfill(self, symbol, first_id, last_id, count): self._add("on_backfill", symbol=symbol, first=first_id, last=last_id, count=count)
    def on_error(self, error, where): self._add("on_error", error=error, where=where)
    def on_shutdown(self, summary): self._add("on_shutdown", summary=summary)

    def on_trade(self, trade):
        self.trades.append(trade)
        self._changed.set()

    def on_metric(self, metric):
        self.metrics.append(metric)
        self._changed.set()

    def of(self, hook: str) -> list[dict[str, Any]]:
        """The arguments of every call of ``hook``."""
        return [kwargs for _, name, kwargs in self.calls if name == hook]

    def at(self, hook: str) -> list[float]:
        """When ``hook`` was called."""
        return [when for when, name, _ in self.calls if name == hook]

    def ids(self, symbol: str = "BTCUSDT") -> list[int]:
        """Delivered ids of ``symbol``."""
        return [t.id for t in self.trades if t.symbol == symbol]

    async def until(self, predicate: Callable[[Events], bool], timeout: float) -> None:
        """Wait until ``predicate(self)`` holds; TimeoutError after ``timeout`` s (times TIMEOUT_FACTOR)."""
        async with asyncio.timeout(timeout * TIMEOUT_FACTOR):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()


# The suite's short test timings: make_flow's groups unless a test passes its own, which it builds from these
# (replace(TIMEOUTS, stall=1.0)) so that only the fields it names differ.
TIMEOUTS = Timeouts(stall=5.0, close=1.0, rest=1.0)
RECONNECT = Reconnect(backoff_initial=0.1, backoff_max=0.5)
LIMITS = Limits(rest_retries=1)


def make_flow(sim, events: Events, symbols=("BTCUSDT",), **kwargs: Any) -> OrderFlow:
    """An OrderFlow on the simulator with short test timings, reporting to ``events``."""
    manager = PluginManager()
    manager.register(events, name="events")
    kwargs.setdefault("timeouts", TIMEOUTS)
    kwargs.setdefault("reconnect", RECONNECT)
    kwargs.setdefault("limits", LIMITS)
    kwargs.setdefault("reader", READER)
    # ``events`` is the test's instrument, not what it tests: its hooks get no 5 ms budget, or a loaded machine
    # (another thread taking the GIL, a page fault) adds a HookTooSlow to the errors the test counts (issue #25).
    kwargs.setdefault("reporting", Reporting(slow_hook_ms=60_000))
    return OrderFlow(list(symbols), ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=manager, **kwargs)
