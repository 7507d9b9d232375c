"""One blinker signal per hook, named like the hook in kebab case (``on_connect_attempt`` ->
``connect-attempt``). The sender is always the stream; the keyword arguments are the hook's.

Receivers run in the order they connected: those connected for any sender first, then those
connected for this stream. Receivers are held by weak reference unless connected with ``weak=False``: keep a reference
to a receiver that is a bound method or a closure, or it disappears with its object.
``async def`` receivers work too: each gets its events in order on a task of its own.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterable, Iterator, MutableSet
from contextlib import contextmanager
from typing import Any

from blinker import ANY, NamedSignal, Namespace

__all__ = [
    "ANY",
    "SIGNALS",
    "backfill",
    "connect_attempt",
    "connected",
    "disconnected",
    "error",
    "gap",
    "loop_blocked",
    "metric",
    "reconnect_scheduled",
    "shutdown",
    "signal_for_hook",
    "stall",
    "startup",
    "trade",
]

class _OrderedSet(MutableSet[Any]):
    """A set that iterates in insertion order: blinker's ``set_class`` hook for ordered receivers."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items = dict.fromkeys(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Any) -> None:
        self._items[item] = None

    def discard(self, item: Any) -> None:
        self._items.pop(item, None)

    def copy(self) -> _OrderedSet:
        return _OrderedSet(self._items)


Held = tuple[Callable[[], Any], bool]  # (a weak reference to the receiver, or a callable returning it; is it async)


class _OrderedSignal(NamedSignal):
    """A signal whose receivers run in the order they connected (blinker's ``set_class`` hook).

    ``version`` changes whenever a receiver connects or disconnects, or the signal is muted or
    unmuted, so a sender may cache :meth:`held_receivers` instead of asking blinker for every
    event. A weakly connected receiver that is collected changes no version (blinker removes it
    without a public trace): the cache holds it by weak reference too, and a dead one means stale.
    """

    set_class = _OrderedSet  # type: ignore[assignment]

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(name, doc)
        self.version = 0  # bumped by every change of who receives what
        self._mutes = 0

    def connect(self, receiver: Any, sender: Any = ANY, weak: bool = True) -> Any:
        try:
            return super().connect(receiver, sender, weak)
        finally:
            self.version += 1

    def disconnect(self, receiver: Callable[..., Any], sender: Any = ANY) -> None:
        try:
            super().disconnect(receiver, sender)
        finally:
            self.version += 1

    @contextmanager
    def muted(self) -> Iterator[None]:
        """Send to nobody inside the block, as blinker's ``muted()`` (the dispatcher honours it too)."""
        with super().muted():
            self._mutes += 1
            self.version += 1
            try:
                yield
            finally:
                self._mutes -= 1
                self.version += 1

    def held_receivers(self, sender: Any) -> tuple[Held, ...]:
        """The receivers for ``sender`` in order, none while muted (valid while ``version`` stays)."""
        if self._mutes:
            return ()
        return tuple((_hold(receiver), inspect.iscoroutinefunction(receiver))
                     for receiver in self.receivers_for(sender))


def _hold(receiver: Any) -> Callable[[], Any]:
    """A weak reference to ``receiver``: the cache must not keep a weakly connected one alive."""
    try:
        return weakref.WeakMethod(receiver) if inspect.ismethod(receiver) else weakref.ref(receiver)
    except TypeError:  # not weakly referenceable, so blinker holds it strongly: until it disconnects
        return lambda: receiver


class _Namespace(Namespace):
    def signal(self, name: str, doc: str | None = None) -> NamedSignal:
        if name not in self:
            self[name] = _OrderedSignal(name, doc)
        return self[name]


_signals = _Namespace()

startup = _signals.signal("startup", doc="The stream is starting. Kwargs: settings.")
connect_attempt = _signals.signal("connect-attempt", doc="A connection attempt starts. Kwargs: attempt, url, symbols.")
connected = _signals.signal("connected", doc="A connection is delivering. Kwargs: url, stage_timings.")
disconnected = _signals.signal("disconnected", doc="A connection closed. Kwargs: url, code, reason, error.")
reconnect_scheduled = _signals.signal(
    "reconnect-scheduled", doc="A reconnect is scheduled. Kwargs: attempt, delay, error."
)
stall = _signals.signal("stall", doc="A connection is silent or stuck. Kwargs: symbols, silent_for, stage, stack.")
loop_blocked = _signals.signal("loop-blocked", doc="The event loop was blocked. Kwargs: blocked_for, stack.")
gap = _signals.signal("gap", doc="Aggregate ids were missed. Kwargs: symbol, first_missing, last_missing.")
backfill = _signals.signal("backfill", doc="A gap was filled over REST. Kwargs: symbol, first_id, last_id, count.")
trade = _signals.signal("trade", doc="A trade, in order, once. Kwargs: trade.")
metric = _signals.signal("metric", doc="An order-flow metric. Kwargs: metric.")
error = _signals.signal("error", doc="A handled error. Kwargs: error, where.")
shutdown = _signals.signal("shutdown", doc="The stream stopped. Kwargs: summary.")

SIGNALS: dict[str, NamedSignal] = {
    sig.name: sig
    for sig in (
        startup,
        connect_attempt,
        connected,
        disconnected,
        reconnect_scheduled,
        stall,
        gap,
        backfill,
        trade,
        metric,
        error,
        loop_blocked,
        shutdown,
    )
}


# hook name -> signal: what signal_for_hook reads; the dispatcher reads it directly on the per-trade path
HOOK_SIGNALS: dict[str, NamedSignal] = {f"on_{name.replace('-', '_')}": sig for name, sig in SIGNALS.items()}


def signal_for_hook(hook: str) -> NamedSignal:
    """Return the signal parallel to hook ``hook`` (``on_trade`` -> ``trade``)."""
    return HOOK_SIGNALS[hook]
