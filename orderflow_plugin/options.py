"""The stream's options, grouped the way users think of them (in the manner of httpx's ``Timeout``).

Each group is a small frozen dataclass with the defaults written down once, here. The settings
file has one table per group with the same keys, so ``Timeouts(**settings.timeouts)`` is the
whole bridge from settings to options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

__all__ = ["Flow", "Limits", "Reconnect", "Reporting", "Sequencing", "Timeouts", "from_table"]


@dataclass(frozen=True)
class Timeouts:
    """Seconds each connect stage, keepalive and REST request may take."""

    resolve: float = 5.0
    tcp_connect: float = 5.0
    tls: float = 5.0
    http_upgrade: float = 10.0
    subscribed: float = 10.0
    first_message: float = 30.0
    ping_interval: float = 1.0  # nothing received this long: ping (0 = never)
    ping_timeout: float = 2.5  # still nothing this long after the ping: the path is dead
    close: float = 5.0
    stall: float = 30.0  # the ceiling of each symbol's learned silence deadline
    silence_floor: float = 2.0  # its floor
    rest: float = 5.0  # one REST request


@dataclass(frozen=True)
class Reconnect:
    """How connections are retried and replaced."""

    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_factor: float = 2.0
    max_attempts: int = 0  # consecutive failed attempts before giving up (0 = never)
    max_connection_age: float = 85_800.0  # replaced make-before-break before Binance's 24 h cut
    connections_per_5min: int = 300


@dataclass(frozen=True)
class Limits:
    """Sizes: frames, connections, buffers, history, REST budget."""

    max_size: int = 2**20
    streams_per_connection: int = 1024  # capped at the market's limit (1024 spot, 200 usdm)
    max_buffered_trades: int = 100_000
    history_size: int = 10_000
    history_age: float = 3600.0
    rest_retries: int = 3
    rest_weight_per_minute: int = 6000
    async_queue_size: int = 10_000


@dataclass(frozen=True)
class Sequencing:
    """Gap handling, backfill and where a run starts."""

    reorder_window: float = 0.2
    backfill: bool = True
    start_from_id: int = 0  # 0 = start live
    checkpoint_path: str = ""  # "" = no checkpoint
    checkpoint_interval: float = 1.0
    # Warm-up from Binance's archive (docs/history.md): a UTC day or time; "" = start live.
    since: str = ""
    history_store: str = ""  # the store's folder for warm-up; "" = a temporary one
    archive_url: str = ""  # "" = https://data.binance.vision


@dataclass(frozen=True)
class Flow:
    """Order-flow metrics computed from the delivered trades."""

    enabled: bool = True
    windows: tuple[str, ...] = ("1s", "1m", "5m")
    footprint_tick: Decimal | str = "10"  # "" = no footprint
    value_area: float = 0.7
    whale_notional: Decimal | str | int = 100_000  # 0 = off
    whale_percentile: float = 99.9  # 0 = off
    whale_window: int = 1000
    bar_close_grace: float = 2.0
    snapshot_interval: float = 1.0
    # Footprint signals (flowsignals.py; docs/metrics.md, "Footprint signals")
    signals: bool = True
    signal_windows: tuple[str, ...] = ("1m",)
    imbalance_percent: float = 300.0
    imbalance_min_volume: Decimal | str = "0"
    stack_length: int = 3
    divergence_lookback: int = 5
    exhaustion_share: float = 0.02
    absorption_share: float = 0.3
    absorption_min_levels: int = 3
    naked_poc_max: int = 50
    sweep_levels: int = 3
    session: str = "1d"
    session_offset: int = 0  # minutes after 00:00 UTC a session starts
    tape_baseline: int = 60

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(self.windows))  # a list from settings, still hashable
        object.__setattr__(self, "signal_windows", tuple(self.signal_windows))


@dataclass(frozen=True)
class Reporting:
    """What is reported, and how often."""

    slow_hook_ms: float = 5.0
    report_interval: float = 60.0
    loop_block_threshold: float = 1.0  # 0 = no loop watchdog
    stage_warning: float = 0.5  # share of a stage's deadline before it is reported (0 = off)


_Group = TypeVar("_Group")


def from_table(group: type[_Group], table: Mapping[str, Any] | None) -> _Group:
    """The option group from a settings table with the same keys (unknown keys raise TypeError)."""
    return group(**dict(table or {}))
