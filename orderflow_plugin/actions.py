"""What the sans-I/O core asks of the shell that runs it: plain frozen values, no behaviour.

:class:`~orderflow_plugin.pipeline.Pipeline` queues the data-path actions, and one
:class:`~orderflow_plugin.driver.Driver` carries them out after each input (for the live stream,
replay, the doctor and the Redis source); the connection
:class:`~orderflow_plugin.supervisor.Supervisor` returns :class:`Connect` and :class:`Retire`.
A connection handle is named ``connection`` everywhere here (``Trade.source`` is something else).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Action",
    "Backfill",
    "Connect",
    "FirstTrade",
    "PauseReading",
    "ResumeReading",
    "Retire",
    "Rotate",
    "Subscribed",
    "WakeAt",
    "WriteCheckpoint",
]


@dataclass(frozen=True, slots=True)
class Backfill:
    """Fetch ids ``first..last`` of ``symbol`` over REST and hand them to :meth:`Pipeline.backfilled`."""

    symbol: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class PauseReading:
    """Stop reading from ``connection`` (TCP holds the server back) until told to resume."""

    connection: Hashable


@dataclass(frozen=True, slots=True)
class ResumeReading:
    """Read from these connections again: their held-back frames come back in as new inputs."""

    connections: tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class Rotate:
    """Replace ``connection`` make-before-break (the server announced its shutdown)."""

    connection: Hashable
    reason: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    """``connection``'s server answered a control message: ``reply_id``, or the ``error`` it refused with."""

    connection: Hashable
    reply_id: int | None
    error: Any


@dataclass(frozen=True, slots=True)
class FirstTrade:
    """The first trade arrived on ``connection``."""

    connection: Hashable


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Call :meth:`Pipeline.tick` at ``when`` (a deadline nearer than the regular tick was set)."""

    when: float


@dataclass(frozen=True, slots=True)
class WriteCheckpoint:
    """Put ``pending`` (a :class:`~orderflow_plugin.checkpoint.Pending`) on disk, then hand the outcome to
    :meth:`Pipeline.checkpoint_written`. ``wait``: trades wait for it (the lease ran out): write it before
    anything else; otherwise in the background."""

    pending: Any
    wait: bool


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a connection for the shard; report it with ``opened`` or ``open_failed``."""

    attempt: int
    replacing: bool  # make-before-break: the current connection streams until this one is open


@dataclass(frozen=True, slots=True)
class Retire:
    """Close ``connection``: its replacement delivers now."""

    connection: Hashable


Action = (Backfill | PauseReading | ResumeReading | Rotate | Subscribed | FirstTrade | WakeAt | WriteCheckpoint
          | Connect | Retire)


class Sink(Protocol):
    """Where the pipeline's output goes: the shell's dispatcher, or a simulation's recorder."""

    trade: Callable[[Any], None]  # each delivered Trade, in order
    metric: Callable[[Any], None]
    event: Callable[..., None]  # event(hook, **kwargs): on_gap, on_backfill, on_error
