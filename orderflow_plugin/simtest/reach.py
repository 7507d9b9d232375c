"""Every place the simulation reaches inside a running ``OrderFlow``, in one module.

The world the simulation plays (a kill -9, a bug in a shard task, the machine's trust store) has
no public surface in the stream, so these few functions use its private parts. Nothing else in
``simtest`` does: when the stream's parts are renamed or become objects, only this module changes.

Private names used here: ``OrderFlow._checkpointer`` (``.checkpoint.close()``), a
shard's ``.machine.tick`` and ``.wake``, and the module attribute ``stream.client_context``; the
rest goes through the stream's parts (``flow.life``, ``flow.shards``).
"""

from __future__ import annotations

import contextlib
import functools
import random
import ssl
from collections.abc import Callable, Iterator
from typing import Any

from .. import stream
from ..stream import OrderFlow
from .vloop import VirtualLoop

__all__ = ["crash_a_shard", "is_running", "kill", "one_trust_store"]


def is_running(flow: OrderFlow) -> bool:
    """The stream was started, and neither stopped nor killed (cheaper than ``health()["state"]``)."""
    return flow.life.running


def kill(flow: OrderFlow, loop: VirtualLoop, life: int) -> None:
    """kill -9 of ``flow``, process ``life``: the kernel resets its sockets and releases its file lock; nothing of it
    runs again (none of its tasks, timers or pending callbacks: no ``finally``, no write not yet issued)."""
    flow.life.state = "stopped"  # what the checker's looks read of a dead process
    loop.kill_process(life)
    checkpointer = flow._checkpointer
    if checkpointer is not None:
        checkpointer.checkpoint.close()  # the kernel drops the flock of a dead process


def crash_a_shard(flow: OrderFlow, rng: random.Random) -> None:
    """A bug in a shard's supervisor: its next tick raises (the shell must report it and start the shard again)."""
    shards = flow.shards.shards
    if not shards or not is_running(flow):
        return
    shard = rng.choice(shards)
    machine = shard.machine

    def broken(now: float) -> list[Any]:
        del machine.tick  # once
        raise RuntimeError("simulated bug in the supervisor")

    machine.tick = broken  # type: ignore[method-assign]
    shard.wake.set()


@functools.cache
def _default_context(ca_file: Any = None) -> ssl.SSLContext:
    return _CLIENT_CONTEXT(ca_file)


_CLIENT_CONTEXT: Callable[..., ssl.SSLContext] = stream.client_context


@contextlib.contextmanager
def one_trust_store() -> Iterator[None]:
    """While it runs, every stream of this process shares one TLS client context.

    Loading the system's trust store costs ~50 ms (most of a seed): the machine's store is part of
    the world, read once per process. The simulated network never uses the context (memnet's
    ``start_tls``), so sharing it changes nothing a seed can see.
    """
    stream.client_context = _default_context  # type: ignore[assignment]
    try:
        yield
    finally:
        stream.client_context = _CLIENT_CONTEXT  # type: ignore[assignment]
