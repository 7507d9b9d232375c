"""The stream's options, grouped the way users think of them (in the manner of httpx's ``Timeout``).

Each group is a small frozen dataclass. Each field is written down once, here: its name, its
default and its :class:`~.constraints.Constraint`. A group refuses a bad value at construction, in
one line naming the group, the field, the value and what is allowed::

    >>> Timeouts(rest=-1)
    Traceback (most recent call last):
    orderflow_plugin.errors.OptionError: Timeouts.rest = -1: must be a number in (0, 300]

The settings file has one table per group (:data:`GROUPS`) with the same keys, checked by the same
constraints (:mod:`.rules` reads them from here), so ``Timeouts(**settings.timeouts)`` is the whole
bridge from settings to options; tests/test_options.py proves settings.toml's defaults are these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, TypeVar

from .constraints import Constraint, boolean, decimal, integer, number, text, url, window
from .constraints import since as iso_time
from .constraints import windows as window_list  # not ``windows``: Flow has a field of that name
from .errors import OptionError

__all__ = [
    "GROUPS", "Flow", "Limits", "OptionError", "Reconnect", "Reporting", "Sequencing", "Timeouts", "constraint_of",
    "from_table",
]

_CONSTRAINT = "orderflow_plugin.constraint"


def _option(default: Any, constraint: Constraint) -> Any:
    """A field with its default and the constraint every value of it must pass."""
    return field(default=default, metadata={_CONSTRAINT: constraint})


def constraint_of(group: type, name: str) -> Constraint:
    """The constraint on field ``name`` of option group ``group``."""
    return next(f for f in fields(group) if f.name == name).metadata[_CONSTRAINT]


class _Checked:
    """Checks every field against its constraint once the dataclass has set them."""

    def __post_init__(self) -> None:
        for spec in fields(self):  # type: ignore[arg-type]
            value = getattr(self, spec.name)
            problem = spec.metadata[_CONSTRAINT].problem(value)
            if problem is not None:
                raise OptionError(f"{type(self).__name__}.{spec.name} = {value!r}: {problem}")


_STAGE = number(0, 300, low_open=True)  # one connect stage, in seconds
_HTTP = ("http://", "https://")


@dataclass(frozen=True)
class Timeouts(_Checked):
    """Seconds each connect stage, keepalive and REST request may take."""

    resolve: float = _option(5.0, _STAGE)
    tcp_connect: float = _option(5.0, _STAGE)
    tls: float = _option(5.0, _STAGE)
    http_upgrade: float = _option(10.0, _STAGE)
    subscribed: float = _option(10.0, _STAGE)
    first_message: float = _option(30.0, number(0, 3600, low_open=True))
    # nothing received this long: ping (0 = never)
    ping_interval: float = _option(1.0, number(0, 3600))
    # still nothing this long after the ping: the path is dead
    ping_timeout: float = _option(2.5, number(0, 3600, low_open=True))
    close: float = _option(5.0, _STAGE)
    # the ceiling of each symbol's learned silence deadline
    stall: float = _option(30.0, number(0, 86_400, low_open=True))
    silence_floor: float = _option(2.0, number(0, 3600, low_open=True))  # its floor
    rest: float = _option(5.0, _STAGE)  # one REST request


@dataclass(frozen=True)
class Reconnect(_Checked):
    """How connections are retried and replaced."""

    backoff_initial: float = _option(0.5, number(0, 3600, low_open=True))
    backoff_max: float = _option(30.0, number(0, 86_400, low_open=True))
    backoff_factor: float = _option(2.0, number(1, 100))
    # consecutive failed attempts before giving up (0 = never)
    max_attempts: int = _option(0, integer(0, 1_000_000))
    # replaced make-before-break before Binance's 24 h cut
    max_connection_age: float = _option(85_800.0, number(0, 86_400, low_open=True))
    connections_per_5min: int = _option(300, integer(1, 300))


@dataclass(frozen=True)
class Limits(_Checked):
    """Sizes: frames, connections, buffers, history, REST budget."""

    max_size: int = _option(2**20, integer(1024, 2**30))
    # capped at the market's limit (1024 spot, 200 usdm)
    streams_per_connection: int = _option(1024, integer(1, 1024))
    max_buffered_trades: int = _option(100_000, integer(1, 100_000_000))
    history_size: int = _option(10_000, integer(0, 100_000_000))
    history_age: float = _option(3600.0, number(0, 86_400 * 30))
    rest_retries: int = _option(3, integer(0, 100))
    rest_weight_per_minute: int = _option(6000, integer(1, 1_000_000))
    async_queue_size: int = _option(10_000, integer(1, 10_000_000))


@dataclass(frozen=True)
class Sequencing(_Checked):
    """Gap handling, backfill and where a run starts."""

    reorder_window: float = _option(0.2, number(0, 60))
    backfill: bool = _option(True, boolean())
    start_from_id: int = _option(0, integer(0, 2**62))  # 0 = start live
    # "" = no checkpoint (an os.PathLike is taken as its path)
    checkpoint_path: str = _option("", text(empty=True))
    checkpoint_interval: float = _option(1.0, number(0, 3600, low_open=True))
    # Warm-up from Binance's archive (docs/history.md): a UTC day or time; "" = start live.
    since: str = _option("", iso_time())
    # the store's folder for warm-up; "" = a temporary one
    history_store: str = _option("", text(empty=True))
    archive_url: str = _option("", url(*_HTTP, empty=True))  # "" = https://data.binance.vision

    def __post_init__(self) -> None:
        for name in ("checkpoint_path", "history_store"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        super().__post_init__()


@dataclass(frozen=True)
class Flow(_Checked):
    """Order-flow metrics computed from the delivered trades."""

    enabled: bool = _option(True, boolean())
    windows: tuple[str, ...] = _option(("1s", "1m", "5m"), window_list())
    # "" = no footprint
    footprint_tick: Decimal | str = _option(
        "10", decimal(empty=True, allowed='a positive decimal as a string, e.g. "10" or "0.5", or ""'))
    value_area: float = _option(0.7, number(0, 1, low_open=True))
    whale_notional: Decimal | str | int = _option(100_000, number(0, 1e15, exact=True))  # 0 = off
    whale_percentile: float = _option(99.9, number(0, 100))  # 0 = off
    whale_window: int = _option(1000, integer(10, 1_000_000))
    bar_close_grace: float = _option(2.0, number(0, 3600))
    snapshot_interval: float = _option(1.0, number(0, 3600, low_open=True))
    # Footprint signals (flowsignals.py; docs/metrics.md, "Footprint signals")
    signals: bool = _option(True, boolean())
    signal_windows: tuple[str, ...] = _option(
        ("1m",), window_list(empty=True, allowed='a list of distinct windows from flow.windows, like ["1m"]'))
    imbalance_percent: float = _option(300.0, number(100, 1_000_000))
    imbalance_min_volume: Decimal | str = _option(
        "0", decimal(zero=True, allowed='a decimal >= 0 as a string, e.g. "0" or "0.5"'))
    stack_length: int = _option(3, integer(2, 1000))
    divergence_lookback: int = _option(5, integer(1, 10_000))
    exhaustion_share: float = _option(0.02, number(0, 1))
    absorption_share: float = _option(0.3, number(0, 1, low_open=True))
    absorption_min_levels: int = _option(3, integer(2, 10_000))
    naked_poc_max: int = _option(50, integer(0, 100_000))
    sweep_levels: int = _option(3, integer(2, 10_000))
    session: str = _option("1d", window())
    session_offset: int = _option(0, integer(0, 1440))  # minutes after 00:00 UTC a session starts
    tape_baseline: int = _option(60, integer(2, 86_400))

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "windows", tuple(self.windows))  # a list from settings, still hashable
        object.__setattr__(self, "signal_windows", tuple(self.signal_windows))


@dataclass(frozen=True)
class Reporting(_Checked):
    """What is reported, and how often."""

    slow_hook_ms: float = _option(5.0, number(0, 60_000, low_open=True))
    report_interval: float = _option(60.0, number(0, 86_400))
    loop_block_threshold: float = _option(1.0, number(0, 3600))  # 0 = no loop watchdog
    # share of a stage's deadline before it is reported (0 = off)
    stage_warning: float = _option(0.5, number(0, 1))


# Each group by the name of its OrderFlow keyword, which is also the name of the settings table mirroring it.
GROUPS: dict[str, type[_Checked]] = {
    "timeouts": Timeouts, "reconnect": Reconnect, "limits": Limits, "sequencing": Sequencing, "flow": Flow,
    "reporting": Reporting,
}


_Group = TypeVar("_Group")


def from_table(group: type[_Group], table: Mapping[str, Any] | None) -> _Group:
    """The option group from a settings table with the same keys (unknown keys raise TypeError)."""
    return group(**dict(table or {}))
