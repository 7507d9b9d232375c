"""The stream's side of a checkpoint: tag replays, write on a thread of its own, report failures.

:class:`~orderflow_plugin.checkpoint.Checkpoint` is plain code (what to write, which leases are
in force); this is the part that runs on the event loop and hands the fsync to a worker thread.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import msgspec

from .checkpoint import Checkpoint, CheckpointError, Resume
from .loopclock import loop_time
from .models import Trade

__all__ = ["Checkpointer"]


class Checkpointer:
    """The stream's side of a checkpoint: tags replays, writes on a worker thread, reports failures.

    Plain code on the event loop but for :meth:`persist`, which runs on a thread of its own (not the
    loop's default executor, where a hung DNS lookup could hold it up).
    """

    def __init__(self, checkpoint: Checkpoint, resume: dict[str, Resume],
                 on_failure: Callable[[CheckpointError], None], *, report_interval: float = 60.0) -> None:
        self.checkpoint = checkpoint
        self.resumed = {symbol: r.last_id for symbol, r in resume.items()}  # until this run's first delivery
        self._replay_until = {symbol: r.lease for symbol, r in resume.items() if r.lease > r.last_id}
        self._on_failure = on_failure
        self._report_interval = report_interval
        self._reported_at = -math.inf
        self._writing: asyncio.Future[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="orderflow-checkpoint")

    def tag(self, trade: Trade, now: float) -> Trade:
        """Called before ``trade`` is delivered: never past the lease on disk; replays tagged."""
        checkpoint = self.checkpoint
        symbol, trade_id = trade.symbol, trade.id
        if trade_id > checkpoint.check_at(symbol) or now >= checkpoint.due:
            if trade_id > checkpoint.lease(symbol):  # the background write did not keep up: wait for one
                checkpoint.sync_writes += 1
                self.write_now(upcoming={symbol: trade_id})
            else:
                self.write_soon()
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

    def write_now(self, *, upcoming: dict[str, int] | None = None, final: bool = False) -> None:
        """Write on this thread (a lease ran out, a first symbol, the final write)."""
        try:
            self.checkpoint.write(upcoming=upcoming, final=final)
        except CheckpointError as exc:
            self._failed(exc)

    def write_soon(self) -> None:
        """Write on the worker thread, unless a write is under way."""
        if self._writing is not None:
            return
        checkpoint = self.checkpoint
        pending = checkpoint.prepare()
        future = asyncio.get_running_loop().run_in_executor(self._thread, checkpoint.persist, pending)
        self._writing = future

        def written(future: asyncio.Future[None]) -> None:
            self._writing = None
            if future.cancelled() or checkpoint.is_stale(pending):  # a newer write is already in force
                return
            exc = future.exception()
            if exc is None:
                checkpoint.commit(pending)
            else:
                self._failed(exc if isinstance(exc, CheckpointError) else
                             CheckpointError(f"checkpoint {checkpoint.path} write failed: {exc!r}"))

        future.add_done_callback(written)

    async def close(self) -> None:
        """Finish the write under way, write the final checkpoint, release the file."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._final)
        finally:
            self._thread.shutdown(wait=False)
            self.checkpoint.close()

    def _final(self) -> None:
        try:
            self.checkpoint.write(final=True)
        except CheckpointError as exc:
            self._reported_at = -math.inf  # the last word is always said
            self._failed(exc)

    def _failed(self, exc: CheckpointError) -> None:
        """Keep streaming without limits until a write succeeds; report at most once per report interval."""
        self.checkpoint.failed()
        now = loop_time()
        if now - self._reported_at >= self._report_interval:
            self._reported_at = now
            self._on_failure(exc)
