"""What every setting must be: one :class:`Rule` per dotted key, checked by :func:`~.config.load_settings`.

A rule is a key and a :class:`~.constraints.Constraint`, whose words (``allowed``) are what the error
message says is allowed, so a bad value is reported as ``timeouts.stall = -1: must be a number in
(0, 86400]``. A constraint for a list may also ``explain`` which item is wrong: ``flow.windows =
['1m', '7x']: window '7x' is not a number ...``.

The option groups' tables (``timeouts``, ``flow``, ...) are not written here: their rules are read
from the groups' fields (:mod:`.options`), so a field's constraint is written once, beside its default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from .constraints import (
    Constraint,
    boolean,
    choice,
    integer,
    number,
    split_commas,
    string_list,
    text,
    url,
)
from .options import GROUPS, constraint_of
from .symbols import SYMBOL_PATTERN
from .tls import client_context

__all__ = ["MOVED", "RENAMED", "RULES", "Rule", "group_rules"]


@dataclass(frozen=True)
class Rule:
    """One setting: its dotted key and the constraint its value must pass."""

    key: str
    constraint: Constraint


def _upper_symbols(value: Any) -> Any:
    value = split_commas(value)
    if isinstance(value, list):
        return [v.strip().upper() if isinstance(v, str) else v for v in value]
    return value


_SYMBOL = re.compile(SYMBOL_PATTERN)


def _symbol_list() -> Constraint:
    """A non-empty list of distinct symbols matching ``SYMBOL_PATTERN``, any case."""

    def check(value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) > 0
            and len(set(value)) == len(value)
            and all(isinstance(v, str) and _SYMBOL.match(v) for v in value)
        )

    return Constraint(check, f"a non-empty list of distinct symbols matching {SYMBOL_PATTERN}", _upper_symbols)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


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


_WS = ("ws://", "wss://")
_HTTP = ("http://", "https://")


def group_rules() -> tuple[Rule, ...]:
    """One rule per field of every option group, keyed ``table.field``, with the field's own constraint."""
    return tuple(Rule(f"{table}.{spec.name}", constraint_of(group, spec.name))
                 for table, group in GROUPS.items() for spec in fields(group))


RULES: tuple[Rule, ...] = (
    Rule("symbols", _symbol_list()),
    Rule("market", choice("spot", "usdm")),
    Rule("endpoints.spot.ws_url", url(*_WS)),
    Rule("endpoints.spot.rest_url", url(*_HTTP)),
    Rule("endpoints.usdm.ws_url", url(*_WS)),
    Rule("endpoints.usdm.rest_url", url(*_HTTP)),
    Rule("endpoints.spot.archive_url", url(*_HTTP)),
    Rule("endpoints.usdm.archive_url", url(*_HTTP)),
    Rule("connector.ws_url", url(*_WS, empty=True)),
    Rule("connector.rest_url", url(*_HTTP, empty=True)),
    Rule("connector.ca_file",
         Constraint(_ca_file_ok, 'a readable PEM CA bundle file, or "" for the system trust store only')),
    Rule("connector.reader", choice("websockets", "fast")),
    # One table per option group (options.py), key for key, each with its field's constraint.
    *group_rules(),
    Rule("logging.level", choice("DEBUG", "INFO", "WARNING", "ERROR", cast=_upper)),
    Rule("plugins.hooks_dirs", string_list()),
    Rule("plugins.entry_points", boolean()),
    Rule("plugins.allow", string_list()),
    Rule("plugins.deny", string_list()),
    Rule("demo.speed", number(0, 1_000_000, low_open=True)),
    Rule("demo.duration", number(0, 86_400)),
    Rule("hooks.diagnostics.enabled", boolean()),
    Rule("hooks.whale_alert.enabled", boolean()),
    Rule("hooks.whale_alert.min_notional", number(0, 1e15, low_open=True)),
    Rule("hooks.recorder.enabled", boolean()),
    Rule("hooks.recorder.path", text()),
    Rule("hooks.recorder.max_bytes", integer(1024, 2**40)),
    Rule("hooks.recorder.backups", integer(0, 1000)),
    Rule("hooks.prometheus.enabled", boolean()),
    Rule("hooks.prometheus.host", text()),
    Rule("hooks.prometheus.port", integer(0, 65535)),
    Rule("hooks.redis.enabled", boolean()),
    Rule("hooks.redis.url", text()),
    Rule("hooks.redis.maxlen", integer(0, 2**40)),
    Rule("hooks.redis.hole_wait", number(0, 3600)),
    Rule("hooks.redis.refill_window", integer(0, 10_000_000)),
    Rule("hooks.redis.wait_replicas", integer(0, 100)),
    Rule("hooks.redis.wait_timeout", number(0, 60)),
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

# Keys renamed so that a name has one meaning (issue #26): the old name is still read, with a warning,
# until the next release. Old and new are in the same table.
RENAMED: dict[str, str] = {
    "connector.transport": "connector.reader",  # "transport" also named the asyncio transport and a module
}
