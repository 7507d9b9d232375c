"""The stream's side of a checkpoint: tag replays, ask for writes, report failures; and the disk the driver writes to.

:class:`~orderflow_plugin.checkpoint.Checkpoint` is plain code (what to write, which leases are
in force). The pipeline calls :meth:`Checkpointer.tag` per trade and :meth:`Checkpointer.tick`;
neither writes: they queue a :class:`~orderflow_plugin.actions.WriteCheckpoint` among the
pipeline's actions, and a trade past the lease on disk waits in the pipeline for it. The
:class:`~orderflow_plugin.driver.Driver` carries the write out (:meth:`Checkpointer.persist`
now, or :meth:`Checkpointer.persist_in_background` on a thread of its own) and hands the outcome
back through :meth:`~orderflow_plugin.pipeline.Pipeline.checkpoint_written`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from .actions import WriteCheckpoint
from .checkpoint import Checkpoint, CheckpointError, Pending, Resume
from .loopclock import loop_time
from .models import Trade

__all__ = ["Checkpointer"]


class Checkpointer:
    """The stream's side of a checkpoint: tags replays, asks for writes, reports failures.

    Plain code but for the disk part the driver uses (:meth:`persist_in_background` runs on a thread
    of its own, not the loop's default executor, where a hung DNS lookup could hold it up).
    """

    def __init__(self, checkpoint: Checkpoint, resume: dict[str, Resume],
                 on_failure: Callable[[CheckpointError], None], *, report_interval: float = 60.0) -> None:
        self.checkpoint = checkpoint
        self.resumed = {symbol: r.last_id for symbol, r in resume.items()}  # until this run's first delivery
        self._replay_until = {symbol: r.lease for symbol, r in resume.items() if r.lease > r.last_id}
        self._on_failure = on_failure
        self._report_interval = report_interval
        self._reported_at = -math.inf
        self.act: Callable[[Any], None] = _unbound  # the pipeline's outbox (set by the Pipeline that uses it)
        self.waiting: Pending | None = None  # the write trades wait for (their lease ran out)
        self._writing: Pending | None = None  # the background write asked for and not yet answered
        self._future: asyncio.Future[None] | None = None  # ... and its run on the worker thread
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="orderflow-checkpoint")

    def tag(self, trade: Trade, now: float) -> Trade | None:
        """Called before ``trade`` is delivered: the trade to deliver (replays tagged), or None when it is past
        the lease on disk: it waits for the :class:`WriteCheckpoint` asked for (``wait=True``)."""
        checkpoint = self.checkpoint
        symbol, trade_id = trade.symbol, trade.id
        if trade_id > checkpoint.check_at(symbol) or now >= checkpoint.due:
            if trade_id > checkpoint.lease(symbol):  # the background write did not keep up: wait for one
                if self.waiting is None:
                    checkpoint.sync_writes += 1
                    self.waiting = checkpoint.prepare(upcoming={symbol: trade_id})
                    self.act(WriteCheckpoint(self.waiting, True))
                return None
            self.write_soon(upcoming={symbol: trade_id})  # its lease must still cover this trade (seed 1738)
        checkpoint.delivered(symbol, trade_id)
        if self.resumed:
            self.resumed.pop(symbol, None)
        replay_until = self._replay_until.get(symbol)
        if replay_until is not None:
            if trade_id <= replay_until:  # a previous run may have delivered it already
                return msgspec.structs.replace(trade, source="replay")
            del self._replay_until[symbol]
        return trade

    def tick(self, now: float) -> None:
        """Persist a quiet market's last trade too, once the interval is due."""
        if now >= self.checkpoint.due and self.checkpoint.changed:
            self.write_soon()

    def foreign(self, symbol: str, live_id: int) -> CheckpointError:
        """The live stream is behind ``symbol``'s stored id: the entry is from another feed; forget it."""
        stored = self.resumed.pop(symbol)
        self._replay_until.pop(symbol, None)
        self.checkpoint.forget(symbol)
        return CheckpointError(
            f"checkpoint {self.checkpoint.path} says {symbol} was delivered up to id {stored}, but the live stream "
            f"is at id {live_id}, behind it: the checkpoint comes from another feed (a testnet, another "
            f"exchange?); starting {symbol} from the live stream")

    def write_soon(self, upcoming: dict[str, int] | None = None) -> None:
        """Ask for a background write, unless one is under way (or trades wait for one); ``upcoming``: ids about to
        be delivered that its leases must cover (a prepare lowers the lease in force to its own at once)."""
        if self._writing is not None or self.waiting is not None:
            return
        self._writing = self.checkpoint.prepare(upcoming=upcoming)
        self.act(WriteCheckpoint(self._writing, False))

    def written(self, pending: Pending, error: BaseException | None, now: float) -> None:
        """The driver wrote ``pending`` (``error`` None), or could not: its leases are in force, or the
        stream goes on without limits until a write succeeds (reported)."""
        if pending is self._writing:
            self._writing = None
        if pending is self.waiting:
            self.waiting = None
        checkpoint = self.checkpoint
        if isinstance(error, asyncio.CancelledError) or checkpoint.is_stale(pending):  # stopped, or a newer
            return  # write is already in force
        if error is None:
            checkpoint.commit(pending)
        else:
            self._failed(error if isinstance(error, CheckpointError) else
                         CheckpointError(f"checkpoint {checkpoint.path} write failed: {error!r}"), now)

    # The driver's side: the disk

    def persist(self, pending: Pending) -> BaseException | None:
        """Put ``pending`` on disk on this thread (trades wait for it); the error, if it failed."""
        try:
            self.checkpoint.persist(pending)
        except Exception as exc:
            return exc
        return None

    def persist_in_background(self, pending: Pending) -> asyncio.Future[None]:
        """Put ``pending`` on disk on the worker thread; the running loop's future of it."""
        future = asyncio.get_running_loop().run_in_executor(self._thread, self.checkpoint.persist, pending)
        self._future = future
        return future

    async def close(self) -> None:
        """Finish the write under way, write the final checkpoint, release the file."""
        if self._future is not None:
            await asyncio.gather(self._future, return_exceptions=True)
        try:
            error = await asyncio.get_running_loop().run_in_executor(self._thread, self._final)
        finally:
            self._thread.shutdown(wait=False)
            self.checkpoint.close()
        if error is not None:  # reported here, on the loop: hooks and signals never run on the worker thread
            self._reported_at = -math.inf  # the last word is always said
            self._failed(error, loop_time())

    def _final(self) -> CheckpointError | None:
        """The final write, on the worker thread: its error, reported by the caller on the loop."""
        try:
            self.checkpoint.write(final=True)
        except CheckpointError as exc:
            return exc
        return None

    def _failed(self, exc: CheckpointError, now: float) -> None:
        """Keep streaming without limits until a write succeeds; report at most once per report interval."""
        self.checkpoint.failed()
        if now - self._reported_at >= self._report_interval:
            self._reported_at = now
            self._on_failure(exc)


def _unbound(action: Any) -> None:
    raise RuntimeError("a Checkpointer asks for writes through a Pipeline's actions: give it to one")
