"""What every setting must be: one :class:`Rule` per dotted key, checked by :func:`~.config.load_settings`.

A rule's words (``allowed``) are what the error message says is allowed, so a bad value is
reported as ``timeouts.stall = -1: must be a number in (0, 86400]``. A rule for a list may also
``explain`` which item is wrong: ``flow.windows = ['1m', '7x']: window '7x' is not a number ...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .engine import parse_window
from .symbols import SYMBOL_PATTERN
from .tls import client_context

__all__ = [
    "MOVED", "RULES", "Rule", "boolean", "choice", "integer", "number", "string_list", "symbol_list", "text", "url",
]


@dataclass(frozen=True)
class Rule:
    """One setting: its dotted key, the check it must pass, and the words for what is allowed.

    ``explain``, when given, says what is wrong with a value that fails the check (naming the part
    at fault), or returns None to fall back on ``allowed``.
    """

    key: str
    check: Callable[[Any], bool]
    allowed: str
    cast: Callable[[Any], Any] | None = None
    explain: Callable[[Any], str | None] | None = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(key: str, low: float, high: float, *, low_open: bool = False) -> Rule:
    """A number in ``[low, high]`` (or ``(low, high]`` with ``low_open``)."""
    bracket = "(" if low_open else "["

    def check(value: Any) -> bool:
        if not _is_number(value):
            return False
        return (value > low if low_open else value >= low) and value <= high

    return Rule(key, check, f"a number in {bracket}{low:g}, {high:g}]")


def integer(key: str, low: int, high: int) -> Rule:
    """A whole number in ``[low, high]``."""

    def check(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    return Rule(key, check, f"a whole number in [{low}, {high}]")


def boolean(key: str) -> Rule:
    """``true`` or ``false``."""
    return Rule(key, lambda value: isinstance(value, bool), "true or false")


def choice(key: str, *values: str, cast: Callable[[Any], Any] | None = None) -> Rule:
    """One of ``values``."""
    return Rule(key, lambda value: value in values, f"one of {', '.join(values)}", cast)


def text(key: str, *, empty: bool = False) -> Rule:
    """A string (non-empty unless ``empty``)."""
    return Rule(
        key,
        lambda value: isinstance(value, str) and (empty or bool(value.strip())),
        "a string" if empty else "a non-empty string",
    )


def _split_commas(value: Any) -> Any:
    # Environment overrides may give "a,b" instead of a TOML list.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def string_list(key: str) -> Rule:
    """A list of strings (a comma-separated string is accepted too)."""
    return Rule(
        key,
        lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value),
        "a list of strings",
        _split_commas,
    )


def _upper_symbols(value: Any) -> Any:
    value = _split_commas(value)
    if isinstance(value, list):
        return [v.strip().upper() if isinstance(v, str) else v for v in value]
    return value


_SYMBOL = re.compile(SYMBOL_PATTERN)


def symbol_list(key: str) -> Rule:
    """A non-empty list of distinct symbols matching ``SYMBOL_PATTERN``, any case."""

    def check(value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) > 0
            and len(set(value)) == len(value)
            and all(isinstance(v, str) and _SYMBOL.match(v) for v in value)
        )

    return Rule(key, check, f"a non-empty list of distinct symbols matching {SYMBOL_PATTERN}", _upper_symbols)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def url(key: str, *schemes: str, empty: bool = False) -> Rule:
    """A URL starting with one of ``schemes`` (or "" when ``empty``)."""

    def check(value: Any) -> bool:
        return isinstance(value, str) and (value.startswith(schemes) or (empty and value == ""))

    allowed = " or ".join(f"{s}..." for s in schemes) + (' or ""' if empty else "")
    return Rule(key, check, f"a URL starting with {allowed}")


_WS = ("ws://", "wss://")
_HTTP = ("http://", "https://")


def _windows_problem(value: Any) -> str | None:
    """The window at fault in a list of windows (by the engine's own grammar), or None."""
    if not isinstance(value, list):
        return None
    seen: dict[int, str] = {}
    for item in value:
        try:
            window = parse_window(item)
        except ValueError as exc:
            return str(exc)
        if window.ms in seen:
            return f"windows {seen[window.ms]!r} and {item!r} are the same length: each must differ"
        seen[window.ms] = item
    return None


def _windows_ok(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and _windows_problem(value) is None


def _window_ok(value: Any) -> bool:
    try:
        parse_window(value)
    except ValueError:
        return False
    return True


def _zero_or_decimal_text_ok(value: Any) -> bool:
    return value in ("0", "0.0") or (value != "" and _decimal_text_ok(value))


def _decimal_text_ok(value: Any) -> bool:
    if value == "":
        return True
    if not isinstance(value, str):
        return False
    try:
        return Decimal(value).is_finite() and Decimal(value) > 0
    except InvalidOperation:
        return False


def _ca_file_ok(value: Any) -> bool:
    if value == "":
        return True
    if not isinstance(value, str):
        return False
    try:
        client_context(value)
    except ValueError:
        return False
    return True


def _since_ok(value: str) -> bool:
    from datetime import datetime

    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


RULES: tuple[Rule, ...] = (
    symbol_list("symbols"),
    choice("market", "spot", "usdm"),
    url("endpoints.spot.ws_url", *_WS),
    url("endpoints.spot.rest_url", *_HTTP),
    url("endpoints.usdm.ws_url", *_WS),
    url("endpoints.usdm.rest_url", *_HTTP),
    url("endpoints.spot.archive_url", *_HTTP),
    url("endpoints.usdm.archive_url", *_HTTP),
    url("connector.ws_url", *_WS, empty=True),
    url("connector.rest_url", *_HTTP, empty=True),
    Rule("connector.ca_file", _ca_file_ok, 'a readable PEM CA bundle file, or "" for the system trust store only'),
    choice("connector.transport", "websockets", "fast"),
    # One table per option group (options.py), key for key.
    number("timeouts.resolve", 0, 300, low_open=True),
    number("timeouts.tcp_connect", 0, 300, low_open=True),
    number("timeouts.tls", 0, 300, low_open=True),
    number("timeouts.http_upgrade", 0, 300, low_open=True),
    number("timeouts.subscribed", 0, 300, low_open=True),
    number("timeouts.first_message", 0, 3600, low_open=True),
    number("timeouts.ping_interval", 0, 3600),
    number("timeouts.ping_timeout", 0, 3600, low_open=True),
    number("timeouts.close", 0, 300, low_open=True),
    number("timeouts.stall", 0, 86_400, low_open=True),
    number("timeouts.silence_floor", 0, 3600, low_open=True),
    number("timeouts.rest", 0, 300, low_open=True),
    number("reconnect.backoff_initial", 0, 3600, low_open=True),
    number("reconnect.backoff_max", 0, 86_400, low_open=True),
    number("reconnect.backoff_factor", 1, 100),
    integer("reconnect.max_attempts", 0, 1_000_000),
    number("reconnect.max_connection_age", 1, 86_400),
    integer("reconnect.connections_per_5min", 1, 300),
    integer("limits.max_size", 1024, 2**30),
    integer("limits.streams_per_connection", 1, 1024),
    integer("limits.max_buffered_trades", 1, 100_000_000),
    integer("limits.history_size", 0, 100_000_000),
    number("limits.history_age", 0, 86_400 * 30),
    integer("limits.rest_retries", 0, 100),
    integer("limits.rest_weight_per_minute", 1, 1_000_000),
    integer("limits.async_queue_size", 1, 10_000_000),
    number("sequencing.reorder_window", 0, 60),
    boolean("sequencing.backfill"),
    integer("sequencing.start_from_id", 0, 2**62),
    text("sequencing.checkpoint_path", empty=True),
    number("sequencing.checkpoint_interval", 0, 3600, low_open=True),
    Rule("sequencing.since", lambda v: isinstance(v, str) and (not v or _since_ok(v)),
         'a UTC day or time such as "2025-11-01" or "2025-11-01T00:00Z", or "" to start live'),
    text("sequencing.history_store", empty=True),
    url("sequencing.archive_url", *_HTTP, empty=True),
    boolean("flow.enabled"),
    Rule("flow.windows", _windows_ok, 'a non-empty list of distinct windows like "1s", "1m", "5m", "1h"',
         explain=_windows_problem),
    Rule("flow.footprint_tick", _decimal_text_ok, 'a positive decimal as a string, e.g. "10" or "0.5", or ""'),
    number("flow.value_area", 0, 1, low_open=True),
    number("flow.whale_notional", 0, 1e15),
    number("flow.whale_percentile", 0, 100),
    integer("flow.whale_window", 10, 1_000_000),
    number("flow.bar_close_grace", 0, 3600),
    number("flow.snapshot_interval", 0, 3600, low_open=True),
    boolean("flow.signals"),
    Rule("flow.signal_windows", lambda v: isinstance(v, list) and (not v or _windows_ok(v)),
         'a list of distinct windows from flow.windows, like ["1m"]', explain=_windows_problem),
    number("flow.imbalance_percent", 100, 1_000_000),
    Rule("flow.imbalance_min_volume", _zero_or_decimal_text_ok, 'a decimal >= 0 as a string, e.g. "0" or "0.5"'),
    integer("flow.stack_length", 2, 1000),
    integer("flow.divergence_lookback", 1, 10_000),
    number("flow.exhaustion_share", 0, 1),
    number("flow.absorption_share", 0, 1, low_open=True),
    integer("flow.absorption_min_levels", 2, 10_000),
    integer("flow.naked_poc_max", 0, 100_000),
    integer("flow.sweep_levels", 2, 10_000),
    Rule("flow.session", _window_ok, 'a window like "1d" or "8h"'),
    integer("flow.session_offset", 0, 1440),
    integer("flow.tape_baseline", 2, 86_400),
    number("reporting.slow_hook_ms", 0, 60_000, low_open=True),
    number("reporting.report_interval", 0, 86_400),
    number("reporting.loop_block_threshold", 0, 3600),
    number("reporting.stage_warning", 0, 1),
    choice("logging.level", "DEBUG", "INFO", "WARNING", "ERROR", cast=_upper),
    string_list("plugins.hooks_dirs"),
    boolean("plugins.entry_points"),
    string_list("plugins.allow"),
    string_list("plugins.deny"),
    number("demo.speed", 0, 1_000_000, low_open=True),
    number("demo.duration", 0, 86_400),
    boolean("hooks.diagnostics.enabled"),
    boolean("hooks.whale_alert.enabled"),
    number("hooks.whale_alert.min_notional", 0, 1e15, low_open=True),
    boolean("hooks.recorder.enabled"),
    text("hooks.recorder.path"),
    integer("hooks.recorder.max_bytes", 1024, 2**40),
    integer("hooks.recorder.backups", 0, 1000),
    boolean("hooks.prometheus.enabled"),
    text("hooks.prometheus.host"),
    integer("hooks.prometheus.port", 0, 65535),
    boolean("hooks.redis.enabled"),
    text("hooks.redis.url"),
    integer("hooks.redis.maxlen", 0, 2**40),
    number("hooks.redis.hole_wait", 0, 3600),
    integer("hooks.redis.refill_window", 0, 10_000_000),
    integer("hooks.redis.wait_replicas", 0, 100),
    number("hooks.redis.wait_timeout", 0, 60),
)

# Keys that moved when the settings tables became the option groups (part 10): named in the error.
MOVED: dict[str, str] = {
    "connector.resolve_timeout": "timeouts.resolve",
    "connector.tcp_connect_timeout": "timeouts.tcp_connect",
    "connector.tls_timeout": "timeouts.tls",
    "connector.http_upgrade_timeout": "timeouts.http_upgrade",
    "connector.subscribed_timeout": "timeouts.subscribed",
    "connector.first_message_timeout": "timeouts.first_message",
    "connector.ping_interval": "timeouts.ping_interval",
    "connector.ping_timeout": "timeouts.ping_timeout",
    "connector.silence_floor": "timeouts.silence_floor",
    "connector.close_timeout": "timeouts.close",
    "connector.stall_timeout": "timeouts.stall",
    "connector.max_size": "limits.max_size",
    "connector.streams_per_connection": "limits.streams_per_connection",
    "connector.backoff_initial": "reconnect.backoff_initial",
    "connector.backoff_max": "reconnect.backoff_max",
    "connector.backoff_factor": "reconnect.backoff_factor",
    "connector.max_attempts": "reconnect.max_attempts",
    "connector.max_connection_age": "reconnect.max_connection_age",
    "connector.connections_per_5min": "reconnect.connections_per_5min",
    "sequence.reorder_window": "sequencing.reorder_window",
    "sequence.backfill": "sequencing.backfill",
    "sequence.start_from_id": "sequencing.start_from_id",
    "sequence.checkpoint_path": "sequencing.checkpoint_path",
    "sequence.checkpoint_interval": "sequencing.checkpoint_interval",
    "sequence.max_buffered_trades": "limits.max_buffered_trades",
    "sequence.rest_retries": "limits.rest_retries",
    "sequence.rest_weight_per_minute": "limits.rest_weight_per_minute",
    "sequence.history_size": "limits.history_size",
    "sequence.history_age": "limits.history_age",
    "sequence.rest_timeout": "timeouts.rest",
    "diagnostics.loop_block_threshold": "reporting.loop_block_threshold",
    "diagnostics.stage_warning": "reporting.stage_warning",
    "plugins.slow_hook_ms": "reporting.slow_hook_ms",
    "plugins.report_interval": "reporting.report_interval",
    "plugins.async_queue_size": "limits.async_queue_size",
}
