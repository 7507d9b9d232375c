"""What the sans-I/O core asks of the shell that runs it: plain frozen values, no behaviour.

:class:`~orderflow_plugin.pipeline.Pipeline` returns the data-path actions; the connection
:class:`~orderflow_plugin.supervisor.Supervisor` returns :class:`Connect` and :class:`Retire`.
The asyncio shell (:mod:`.stream`) and the simulation harness (:mod:`.simtest`) carry them out.
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
]


@dataclass(frozen=True, slots=True)
class Backfill:
    """Fetch ids ``first..last`` of ``symbol`` over REST and hand them to :meth:`Pipeline.backfilled`."""

    symbol: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class PauseReading:
    """Stop reading from ``source`` (TCP holds the server back) until told to resume."""

    source: Hashable


@dataclass(frozen=True, slots=True)
class ResumeReading:
    """Read from these sources again."""

    sources: tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class Rotate:
    """Replace ``source``'s connection make-before-break (the server announced its shutdown)."""

    source: Hashable
    reason: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    """``source``'s server answered a control message: ``reply_id``, or the ``error`` it refused with."""

    source: Hashable
    reply_id: int | None
    error: Any


@dataclass(frozen=True, slots=True)
class FirstTrade:
    """The first trade arrived on ``source``."""

    source: Hashable


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Call :meth:`Pipeline.tick` at ``when`` (a deadline nearer than the regular tick was set)."""

    when: float




@dataclass(frozen=True, slots=True)
class Connect:
    """Open a connection for the shard; report it with ``opened`` or ``open_failed``."""

    attempt: int
    replacing: bool  # make-before-break: the current connection streams until this one is open


@dataclass(frozen=True, slots=True)
class Retire:
    """Close ``connection``: its replacement delivers now."""

    connection: Hashable


Action = Backfill | PauseReading | ResumeReading | Rotate | Subscribed | FirstTrade | WakeAt | Connect | Retire


class Sink(Protocol):
    """Where the pipeline's output goes: the shell's dispatcher, or a simulation's recorder."""

    trade: Callable[[Any], None]  # each delivered Trade, in order
    metric: Callable[[Any], None]
    event: Callable[..., None]  # event(hook, **kwargs): on_gap, on_backfill, on_error
