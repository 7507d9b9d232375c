"""The lifecycle hooks a plugin can implement (pluggy project ``orderflow_plugin``).

Hooks are synchronous and called on the stream's event loop, so they must be cheap: a hook
that needs I/O schedules its own task (``asyncio.get_running_loop().create_task(...)``) or
subscribes an ``async def`` receiver to the matching signal instead. Every hook is a
notification: return values are ignored, and a hook that raises is isolated (logged,
counted, reported through ``on_error``) while the event still reaches every other plugin.

A plugin implements any subset, taking any subset of the arguments by name. Functions are
recognised by name (``def on_trade(trade): ...``) or marked with ``@hookimpl``.

Every hook except the per-trade ``on_trade`` and ``on_metric`` is called through pluggy
(``manager.hook.<name>``), so ``add_hookcall_monitoring`` and ``enable_tracing`` see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .config import Settings
    from .metrics import Bar
    from .models import Metric, Trade

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "orderflow_plugin"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def on_startup(settings: Settings) -> None:
    """The stream is starting, before its first connection; read your settings here.

    Historic: a plugin registered after the stream started gets it once, as it registers.

    :param settings: the validated settings; a plugin's own table is ``settings.hooks.<name>``.
    """


@hookspec
def on_connect_attempt(attempt: int, url: str, symbols: tuple[str, ...]) -> None:
    """A connection attempt is starting.

    :param attempt: 1 for the first attempt, counting up until a connection succeeds.
    :param url: the WebSocket URL being opened (never contains secrets).
    :param symbols: the upper-case symbols this connection carries.
    """


@hookspec
def on_connected(url: str, stage_timings: Mapping[str, float]) -> None:
    """A connection is open, subscribed and delivering.

    :param url: the WebSocket URL.
    :param stage_timings: seconds each connect stage took (``resolve``, ``tcp_connect``,
        ``tls``, ``http_upgrade``, ``subscribed``, ``first_message``).
    """


@hookspec
def on_disconnected(url: str, code: int | None, reason: str, error: BaseException | None) -> None:
    """A connection closed, cleanly or not.

    :param url: the WebSocket URL.
    :param code: the WebSocket close code, or None when no close frame was received.
    :param reason: the close reason, or a description of why the connection was dropped.
    :param error: the exception that ended the connection, or None for a clean close.
    """


@hookspec
def on_reconnect_scheduled(attempt: int, delay: float, error: BaseException | None) -> None:
    """A reconnect will be tried after ``delay`` seconds.

    :param attempt: the number the next attempt will have.
    :param delay: seconds until it starts (backoff with jitter, or Retry-After).
    :param error: what made the previous attempt or connection fail.
    """


@hookspec
def on_stall(symbols: tuple[str, ...], silent_for: float, stage: str, stack: str) -> None:
    """A connection is stuck: a connect stage passed its warning threshold (half its deadline by
    default), or an open connection was silent past ``stall_timeout`` and will be replaced.

    :param symbols: the symbols the connection carries.
    :param silent_for: seconds without progress.
    :param stage: the stage it is in (``http_upgrade``, ``first_message``, ``streaming``, ...).
    :param stack: where the stream's task is waiting (its awaiting stack), as text.
    """


@hookspec
def on_gap(symbol: str, first_missing: int, last_missing: int) -> None:
    """Aggregate trade ids ``first_missing..last_missing`` (inclusive) were not received live.

    :param symbol: the upper-case symbol.
    :param first_missing: the first missing aggregate trade id.
    :param last_missing: the last missing aggregate trade id.
    """


@hookspec
def on_backfill(symbol: str, first_id: int, last_id: int, count: int) -> None:
    """A gap was filled over REST.

    :param symbol: the upper-case symbol.
    :param first_id: the first aggregate trade id filled.
    :param last_id: the last aggregate trade id filled.
    :param count: how many trades were fetched.
    """


@hookspec
def on_trade(trade: Trade) -> None:
    """A trade, delivered once per aggregate id, in increasing id order per symbol.

    :param trade: the :class:`~orderflow_plugin.Trade`.
    """


@hookspec
def on_metric(metric: Metric | Bar) -> None:
    """An order-flow metric (a closed bar, a whale trade, a snapshot, ...).

    :param metric: a :class:`~orderflow_plugin.Bar` (not a ``Metric`` subclass: a compiled class of its own) or a
        :class:`~orderflow_plugin.Metric`; ``metric.kind`` says which, ``metric.symbol`` for what.
    """


@hookspec
def on_error(error: BaseException, where: str) -> None:
    """Something went wrong and was handled; the stream goes on.

    :param error: the exception (an :class:`~orderflow_plugin.errors.OrderFlowError` where possible).
    :param where: what was running: ``connect``, ``decode``, ``plugin:<name>.<hook>``, ...
    """


@hookspec
def on_loop_blocked(blocked_for: float, stack: str) -> None:
    """The event loop did not run for longer than ``loop_block_threshold``; called once it runs again.

    The watchdog thread has already logged the block as it happened.

    :param blocked_for: seconds the loop was blocked.
    :param stack: the loop thread's Python stack while it was blocked (the code that blocked it).
    """


@hookspec
def on_shutdown(summary: Mapping[str, Any]) -> None:
    """The stream has stopped; flush and close what you hold.

    :param summary: counters of the run (``trades``, ``reconnects``, ``gaps``, ``backfilled``,
        ``bad_frames``, ``plugin_errors``, ``slow_hooks``, ``uptime_s``, ...).
    """
