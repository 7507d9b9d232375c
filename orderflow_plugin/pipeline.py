"""The stream's logic with no I/O: frames in, trades, metrics and actions for the shell out.

``Pipeline`` is plain synchronous code, like websockets' ``protocol.py``. A
:class:`~orderflow_plugin.driver.Driver` feeds it frames (:meth:`Pipeline.receive`), backfill
results (:meth:`Pipeline.backfilled`), checkpoint writes done (:meth:`Pipeline.checkpoint_written`)
and the time (:meth:`Pipeline.tick`); every timer is a deadline compared with the ``now`` passed
in. Out come trades, metrics and events, straight to a :class:`Sink` (no object allocated per
trade), and :data:`Action` values, queued in :attr:`Pipeline.outbox` for the driver to carry out
once the input returned: fetch these ids, pause or resume reading, replace a connection, tell a
connection it is subscribed or has its first trade, wake me at this time, write this checkpoint.
The pipeline never calls out to the shell while it runs, so nothing re-enters it: an input given
while another runs raises :class:`Reentered`.

One trade: decode -> sequencer (each id once, in order; a hole filled over REST or given up in a
report) -> liveness, checkpoint tag, history -> sink.trade -> engine -> sink.metric.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from .actions import (
    Action,
    Backfill,
    FirstTrade,
    PauseReading,
    ResumeReading,
    Rotate,
    Sink,
    Subscribed,
    WakeAt,
    WriteCheckpoint,
)
from .barclock import TICK, BarClock
from .decode import Decoder, Reply, ServerShutdown
from .engine import FlowEngine
from .errors import BadFrame, StreamError
from .flowsignals import FlowSignals, SignalOptions
from .liveness import Liveness
from .models import Market, Trade
from .options import Flow, Limits, Sequencing, Timeouts
from .sequencer import DELIVER, DUPLICATE, GAP, OVERFLOW, READY, Sequencer

__all__ = ["BACKFILL_CHUNK", "Action", "Backfill", "FirstTrade", "PauseReading", "Pipeline", "Reentered",
           "ResumeReading", "Rotate", "Sink", "Subscribed", "WakeAt", "WriteCheckpoint"]

logger = logging.getLogger("orderflow_plugin.stream")

BACKFILL_CHUNK = 10_000  # ids fetched (10 REST pages) and delivered before the next are fetched


class Reentered(RuntimeError):
    """An input was given to a :class:`Pipeline` while another input was still running in it (a bug in the caller)."""


class Pipeline:
    """Frames to delivered trades for ``symbols``: decode, sequence, backfill and pause decisions, metrics."""

    def __init__(
        self,
        symbols: Iterable[str],
        market: Market,
        sink: Sink,
        *,
        sequencing: Sequencing | None = None,
        limits: Limits | None = None,
        flow: Flow | None = None,
        timeouts: Timeouts | None = None,
        resume: dict[str, int] | None = None,
        checkpointer: Any = None,
        report_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        sequencing = sequencing or Sequencing()
        limits = limits or Limits()
        flow = flow or Flow()
        timeouts = timeouts or Timeouts()
        self.symbols = tuple(symbols)
        self.sink = sink
        self._trade_out = sink.trade  # the per-trade call, looked up once
        # What the driver is to carry out once the running input returned, oldest first.
        self.outbox: deque[Action] = deque()
        self._act = self.outbox.append
        self._inside: str | None = None  # the input running now: another one is a re-entry
        self._held: list[Trade] = []  # trades waiting for a checkpoint write (their lease ran out)
        self.clock = clock
        self.backfill = sequencing.backfill
        self.reorder_window = sequencing.reorder_window
        self.checkpointer = checkpointer  # tags replays and keeps leases; None when checkpoints are off
        if checkpointer is not None:
            checkpointer.act = self._act  # the writes it asks for join the actions
        self._decode = Decoder(market).decode  # bound once: called per frame
        start_after = sequencing.start_from_id - 1 if sequencing.start_from_id else None
        resume = resume or {}
        self.sequencers = {
            s: Sequencer(s, start_after=resume.get(s, start_after), max_held=limits.max_buffered_trades)
            for s in self.symbols
        }
        self.history = {s: deque[Trade](maxlen=limits.history_size) for s in self.symbols}
        self.history_age_ms = int(limits.history_age * 1000)
        self.latest: dict[str, dict[str, Any]] = {s: {} for s in self.symbols}
        self.engines = {
            s: FlowEngine(s, windows=flow.windows, footprint_tick=flow.footprint_tick or None,
                          value_area=flow.value_area, whale_notional=flow.whale_notional or None,
                          whale_percentile=flow.whale_percentile or None, whale_window=flow.whale_window)
            for s in self.symbols
        } if flow.enabled else {}
        signal_options = SignalOptions.from_flow(flow) if flow.enabled and flow.signals else None
        self.signals = {s: FlowSignals(s, signal_options) for s in self.symbols} if signal_options else {}
        # Per symbol, where a delivered trade goes: one lookup per trade instead of three.
        self._outs = {s: (self.history[s], self.latest[s], self.engines.get(s)) for s in self.symbols}
        self.bar_close_grace = flow.bar_close_grace
        self.snapshot_interval = flow.snapshot_interval
        self._next_snapshot = -math.inf
        self.bar_clock = BarClock(flow.bar_close_grace)
        self._stale = self.bar_clock.stale  # read per trade: the same set
        self.liveness = Liveness(self.symbols, floor=timeouts.silence_floor, ceiling=timeouts.stall)
        self._delivered, self._last_at = self.liveness.delivered, self.liveness.last_at  # read per trade
        # Past half the buffer, reads pause until the hole is filled, for at most one REST timeout.
        self.pause_at = max(1, limits.max_buffered_trades // 2)
        self.max_pause = timeouts.rest
        self.paused: set[Hashable] = set()
        self._pause_ends: float | None = None
        self._may_pause = True  # false after a pause ran out, until a hole is filled or given up
        self._resuming = False  # this tick asked for a resume: the held frames come in before more is judged
        self._gap_due: dict[str, float] = {}  # symbol -> when its open hole is declared a gap
        self._gap_last: dict[str, int] = {}  # symbol -> the last id missing when that deadline was set
        self.filling: dict[str, tuple[int, int]] = {}  # symbol -> (first id of the chunk asked for, last of the hole)
        self._started: set[Hashable] = set()  # connections that delivered a trade
        self._report_interval = report_interval
        self._bad_frame_logged = -math.inf
        self.now = 0.0
        self.counters = dict.fromkeys(("trades", "gaps", "backfilled", "bad_frames", "duplicates"), 0)

    # In: frames

    def receive(self, connection: Hashable, frame: bytes, now: float | None = None) -> None:
        """One frame from ``connection`` (a handle), read at ``now`` (by default, the ``clock``'s now).

        The driver's :meth:`~orderflow_plugin.driver.Driver.receive_read` is the transport's ``on_frames``: it
        calls this, then carries out what it queued (a pause lands before the next frame of the read).
        """
        if self._inside is not None:
            raise Reentered(f"Pipeline.receive called while {self._inside} runs")
        self._inside = "receive"
        try:
            self.now = self.clock() if now is None else now
            try:
                event = self._decode(frame)
            except BadFrame as exc:
                self._bad_frame(exc, connection)
                return
            if type(event) is Trade:
                self._take(connection, event)
            elif type(event) is ServerShutdown:
                self._act(Rotate(connection, "serverShutdown"))
            elif type(event) is Reply:
                self._act(Subscribed(connection, event.id, event.error))
        finally:
            self._inside = None

    def _enter(self, name: str) -> None:
        if self._inside is not None:
            raise Reentered(f"Pipeline.{name} called while {self._inside} runs")
        self._inside = name

    def receive_trade(self, connection: Hashable, trade: Trade, now: float) -> None:
        """One trade from ``connection``, decoded already (a tape read from a file): as :meth:`receive` takes the
        frame it came in, without making one and decoding it again."""
        self._enter("receive_trade")
        try:
            self.now = now
            self._take(connection, trade)
        finally:
            self._inside = None

    def receive_trades(self, connection: Hashable, trades: Sequence[Trade], start: int, stop: int, now: float) -> int:
        """``trades[start:stop]`` from ``connection``, decoded already (a tape), all read at ``now``: each taken as
        :meth:`receive_trade` takes it, in one input. It stops after a trade that queued an action, so the driver
        carries that out before the next trade, as it would after :meth:`receive_trade`; returns the index after
        the last trade taken."""
        self._enter("receive_trades")
        try:
            self.now = now
            take, outbox = self._take, self.outbox
            index = start
            while index < stop:
                take(connection, trades[index])
                index += 1
                if outbox:
                    break
            return index
        finally:
            self._inside = None

    def _take(self, connection: Hashable, event: Trade) -> None:
        """Sequence one trade from ``connection`` and act on the answer."""
        if connection not in self._started:
            self._started.add(connection)
            self._act(FirstTrade(connection))
        sequencer = self.sequencers.get(event.symbol)
        if sequencer is None:
            self._bad_frame(BadFrame(f"trade for {event.symbol}, which this stream did not subscribe to"), connection)
            return
        status = sequencer.push(event)
        if status == DUPLICATE and self._duplicate(sequencer, event):
            status = sequencer.push(event)  # the sequencer starts again from the live stream
        if status == DELIVER:
            self._deliver(event)
        elif status == DUPLICATE:
            pass
        elif status == READY:
            self._release(sequencer)
        elif status == GAP:
            self._hole_opened(sequencer)
        elif status == OVERFLOW:
            self._give_up(sequencer, "more than max_buffered_trades live trades waited behind it")
        elif sequencer.held >= self.pause_at and self._may_pause and connection not in self.paused:  # HELD
            logger.info("%s: %d trades wait behind a hole; pausing reads until it is filled",
                        sequencer.symbol, sequencer.held)
            self.paused.add(connection)
            self._act(PauseReading(connection))
            if self._pause_ends is None:
                self._pause_ends = self.now + self.max_pause
                self._act(WakeAt(self._pause_ends))

    @property
    def tick_interval(self) -> float:
        """How often the shell should call :meth:`tick` besides the :class:`WakeAt` times."""
        return max(0.01, min(TICK, self.snapshot_interval, self.bar_close_grace / 2 or TICK))

    def feed_lost(self, symbols: Iterable[str]) -> None:
        """The connection carrying ``symbols`` ended: their bars wait (see :mod:`.barclock`)."""
        self.bar_clock.feed_lost(symbols)

    def heard(self, symbols: Iterable[str], when: float) -> None:
        """The connection carrying ``symbols`` last read a byte at ``when`` (see :mod:`.barclock`)."""
        self.bar_clock.heard(symbols, when)

    def forget(self, connection: Hashable) -> None:
        """``connection`` ended: a connection that replaces it reports its own first trade."""
        self._started.discard(connection)
        self.paused.discard(connection)
        if not self.paused:  # nothing left paused: no pause runs out (a new one gets its own deadline)
            self._pause_ends = None

    # In: backfill results

    def backfilled(self, symbol: str, first: int, last: int, trades: list[Trade], failed: Exception | None,
                   now: float) -> None:
        """The answer to :class:`Backfill` ``(symbol, first, last)``: the trades fetched, and why it stopped short."""
        self._enter("backfilled")
        try:
            self._backfilled(symbol, first, last, trades, failed, now)
        finally:
            self._inside = None

    def _backfilled(self, symbol: str, first: int, last: int, trades: list[Trade], failed: Exception | None,
                    now: float) -> None:
        self.now = now
        sequencer = self.sequencers[symbol]
        if self.filling.get(symbol, (None,))[0] != first:  # given up meanwhile: what still fits is delivered
            released = sequencer.fill(trades)
            self.counters["backfilled"] += len(released)
            for trade in released:
                self._deliver(trade)
            self._maybe_resume()
            return
        if trades:
            self.counters["backfilled"] += len(trades)
            for trade in sequencer.fill(trades):
                self._deliver(trade)
            self.sink.event("on_backfill", symbol=symbol, first_id=first,
                            last_id=min(last, trades[-1].id), count=len(trades))
        if failed is not None:
            self.filling.pop(symbol, None)
            logger.error("%s", failed)
            self.sink.event("on_error", error=failed, where="backfill")
            self._give_up(sequencer, f"backfill failed: {failed}")
            return
        _, hole_last = self.filling[symbol]
        if last < hole_last:
            self._fetch(symbol, last + 1, hole_last)
            return
        del self.filling[symbol]
        if sequencer.gap is not None:
            self._hole_opened(sequencer)
        self._may_pause = True
        self._maybe_resume()

    # In: time

    def tick(self, now: float) -> None:
        """Fire the deadlines that are due: gaps past the reorder window, a pause run out, bars, snapshots."""
        self._enter("tick")
        try:
            self._tick(now)
        finally:
            self._inside = None

    def _tick(self, now: float) -> None:
        self.now = now
        self._resuming = False
        if self._gap_due:
            for symbol, due in list(self._gap_due.items()):
                if now >= due:
                    if self._resuming:  # the frames a resume hands back may close this hole: look again after
                        self._act(WakeAt(now))
                        break
                    del self._gap_due[symbol]
                    self._declare_gap(self.sequencers[symbol])
        if self._pause_ends is not None and now >= self._pause_ends:
            self._resume(expired=True)
        if self.checkpointer is not None:
            self.checkpointer.tick(now)
        self.liveness.roll(now)
        on_time = self.bar_clock.tick(now)
        if self.engines:  # while reads are paused (or resume next) a read may hold frames of any symbol: bars wait
            self._close_bars(now, close=on_time and not self.paused and not self._resuming)

    def next_deadline(self) -> float:
        """The nearest time :meth:`tick` has something to do (``inf``: only the regular tick)."""
        return min([*self._gap_due.values(), math.inf if self._pause_ends is None else self._pause_ends])

    def health(self, now: float) -> dict[str, dict[str, Any]]:
        """Per symbol: seconds since its last trade, the last id delivered, trades held behind a hole."""
        last_at = self.liveness.last_at
        return {symbol: {"last_trade_age_s": round(now - last_at[symbol], 3) if symbol in last_at else None,
                         "last_id": sequencer.last_delivered, "held": sequencer.held}
                for symbol, sequencer in self.sequencers.items()}

    def trades_since(self, symbol: str, since: int | None) -> list[Trade]:
        """Delivered trades of ``symbol`` still in the bounded history, from trade time ``since`` (ms)."""
        trades = self.history[symbol]
        newest = trades[-1].time if trades else 0
        oldest = max(since or 0, newest - self.history_age_ms)
        return [t for t in trades if t.time >= oldest]

    def busy(self, symbol: str) -> bool:
        """A hole of ``symbol`` is open or being filled: trades are arriving, the feed is alive."""
        return self.sequencers[symbol].gap is not None or symbol in self.filling

    def prime(self, trades: Iterable[Trade], now: float) -> int:
        """Deliver stored trades (a warm-up from the archive) before the stream starts, in id order; the
        stream goes on after the last one, the hole to its first live trade backfilled. Returns how many."""
        self._enter("prime")
        try:
            count = 0
            self.now = now
            for trade in trades:
                sequencer = self.sequencers[trade.symbol]
                last = sequencer.last_delivered
                if last is not None and trade.id <= last:
                    continue
                sequencer.expected = trade.id + 1
                self._deliver(trade)
                count += 1
            return count
        finally:
            self._inside = None

    def fill_tail(self, symbol: str, newest: int, now: float) -> bool:
        """REST shows ids up to ``newest`` beyond the last delivered one: fetch them over REST, although no
        live trade opened a hole (the socket skipped the last trades before a quiet stretch). False when
        there is nothing to fetch, nowhere to start from, backfill is off, or a hole is handled already."""
        sequencer = self.sequencers[symbol]
        last = sequencer.last_delivered
        if not self.backfill or last is None or newest <= last or self.busy(symbol):
            return False
        self._enter("fill_tail")
        try:
            self.now = now
            self.counters["gaps"] += 1
            logger.warning("%s: aggTrade ids %d..%d missing at the tail (%d): REST has them, the stream did not "
                           "send them", symbol, last + 1, newest, newest - last)
            self.sink.event("on_gap", symbol=symbol, first_missing=last + 1, last_missing=newest)
            self._fetch(symbol, last + 1, newest)
            return True
        finally:
            self._inside = None

    def caught_up(self, symbol: str) -> None:
        """REST's newest id of ``symbol`` is the last delivered one: its feed is caught up, as a live trade in
        order would show, so bars a lost feed held back may close (on a quiet market no live trade comes)."""
        if not self.busy(symbol):
            self._stale.discard(symbol)

    def deliver_as_is(self, trade: Trade, now: float) -> None:
        """Deliver ``trade`` unsequenced: a Redis consumer group's share of a stream has holes by design."""
        self._enter("deliver_as_is")
        try:
            self.now = now
            self._deliver(trade)
        finally:
            self._inside = None

    def checkpoint_written(self, pending: Any, error: BaseException | None, now: float) -> None:
        """The answer to :class:`WriteCheckpoint`: ``pending`` is on disk (``error`` None) or could not be
        written; trades that waited for it are delivered (a failed write lets them go on, reported)."""
        self._enter("checkpoint_written")
        try:
            self.now = now
            assert self.checkpointer is not None
            self.checkpointer.written(pending, error, now)
            if self._held and self.checkpointer.waiting is None:
                held, self._held = self._held, []
                for trade in held:
                    self._deliver(trade)  # one past the new lease waits again, for a write it asks for
        finally:
            self._inside = None

    # Delivery

    def _deliver(self, trade: Trade) -> None:
        checkpointer = self.checkpointer
        if checkpointer is not None:  # off by default: costs nothing then
            if self._held:  # in order behind those waiting for a checkpoint write
                self._held.append(trade)
                return
            tagged = checkpointer.tag(trade, self.now)
            if tagged is None:  # past the lease on disk: it waits for the write the checkpointer asked for
                self._held.append(trade)
                return
            trade = tagged
        self.counters["trades"] += 1
        symbol = trade.symbol
        now = self.now
        live = trade.source != "backfill"
        if self._stale and live:  # in order after everything before it: caught up (see BarClock)
            self._stale.discard(symbol)
        if self._last_at.get(symbol) is not now:  # the frames of one read share one `now`: only its first counts
            self._delivered(symbol, now, live)
        history, latest, engine = self._outs[symbol]
        history.append(trade)
        latest["trade"] = trade
        self._trade_out(trade)
        if engine is not None:
            metrics = engine.add(trade)
            price_units, qty_units = engine.last_price_units, engine.last_qty_units  # this trade's, whatever hooks do
            if metrics:
                for metric in metrics:
                    self.metric(metric)
            signals = self.signals.get(symbol)
            if signals is not None:  # after the bars the trade closed: a POC listed at their close may be touched
                metrics = signals.trade_units(trade, price_units, qty_units)
                if metrics:
                    for metric in metrics:
                        self.metric(metric)

    def metric(self, metric: Any) -> None:
        """Keep ``metric`` as the latest of its kind and send it on."""
        bar = metric.kind == "bar"
        self.latest[metric.symbol][f"bar:{metric.window}" if bar else metric.kind] = metric
        self.sink.metric(metric)
        if bar and (signals := self.signals.get(metric.symbol)) is not None:
            for signal in signals.bar(metric):
                self.metric(signal)

    def _duplicate(self, sequencer: Sequencer, trade: Trade) -> bool:
        """Count a duplicate; True when it shows the checkpoint is from another feed (the sequencer restarted:
        the caller pushes the trade again, with no second pass through :meth:`receive`)."""
        self.counters["duplicates"] += 1
        checkpointer = self.checkpointer
        if checkpointer is not None and trade.symbol in checkpointer.resumed and not sequencer.held:
            # The first live trade is behind the stored id: the checkpoint is from another feed.
            error = checkpointer.foreign(trade.symbol, trade.id)
            logger.error("%s", error)
            self.sink.event("on_error", error=error, where="checkpoint")
            sequencer.restart()
            return True
        return False

    def _close_bars(self, now: float, *, close: bool) -> None:
        """Close bars a quiet market left open past their grace; send snapshots every snapshot_interval."""
        for symbol, engine in self.engines.items():
            last = self.latest[symbol].get("trade")
            if last is not None and last.source == "live":
                self.bar_clock.live_trade(symbol, last.time, self.liveness.last_at[symbol])
            # Never while a hole is open: a backfilled trade may still belong to the bar.
            if close and not self.busy(symbol) and symbol not in self._gap_due:
                until = self.bar_clock.close_before(symbol, now)
                if until is not None:
                    for bar in engine.close_until(until):
                        self.metric(bar)
        if now >= self._next_snapshot:
            self._next_snapshot = now + self.snapshot_interval
            for engine in self.engines.values():
                if engine.trades:
                    self.metric(engine.snapshot())

    # Holes in the sequence

    def _release(self, sequencer: Sequencer) -> None:
        """Deliver what became contiguous; if a hole is still open, make sure it is handled."""
        for trade in sequencer.drain():
            self._deliver(trade)
        gap = sequencer.gap
        if gap is None or gap.first > self._gap_last.get(sequencer.symbol, gap.first):
            self._gap_due.pop(sequencer.symbol, None)  # that hole is closed: a new one gets a whole window
        if gap is not None:
            self._hole_opened(sequencer)
        self._maybe_resume()

    def _hole_opened(self, sequencer: Sequencer) -> None:
        """Give reordered trades ``reorder_window`` to arrive before declaring the hole a gap."""
        symbol = sequencer.symbol
        if symbol in self.filling or symbol in self._gap_due:
            return
        due = self._gap_due[symbol] = self.now + self.reorder_window
        self._gap_last[symbol] = sequencer.gap.last  # type: ignore[union-attr]
        self._act(WakeAt(due))

    def _declare_gap(self, sequencer: Sequencer) -> None:
        gap = sequencer.gap
        if gap is None:
            return
        self.counters["gaps"] += 1
        logger.warning("%s: aggTrade ids %d..%d missing (%d)", gap.symbol, gap.first, gap.last, gap.size)
        self.sink.event("on_gap", symbol=gap.symbol, first_missing=gap.first, last_missing=gap.last)
        if not self.backfill:
            self._give_up(sequencer, "backfill is off")
            return
        self._fetch(gap.symbol, gap.first, gap.last)

    def _fetch(self, symbol: str, first: int, last: int) -> None:
        """Ask for the next chunk: a long hole is fetched and delivered oldest first, memory bounded."""
        end = min(last, first + BACKFILL_CHUNK - 1)
        self.filling[symbol] = (first, last)
        self._act(Backfill(symbol, first, end))

    def _give_up(self, sequencer: Sequencer, why: str) -> None:
        """Skip the open hole so the stream goes on; say exactly which ids were not seen."""
        self.filling.pop(sequencer.symbol, None)
        self._gap_due.pop(sequencer.symbol, None)
        gap, released = sequencer.skip()
        for trade in released:
            self._deliver(trade)
        if gap is not None:
            error = StreamError(f"{gap.symbol}: aggTrade ids {gap.first}..{gap.last} ({gap.size}) were not "
                                f"delivered: {why}; continuing after them", stage="sequence")
            logger.error("%s", error)
            self.sink.event("on_error", error=error, where="sequence")
        if sequencer.gap is not None:
            self._hole_opened(sequencer)
        self._may_pause = True
        self._maybe_resume()

    # Backpressure

    def _maybe_resume(self) -> None:
        if self.paused and all(s.held < self.pause_at for s in self.sequencers.values()):
            self._resume(expired=False)

    def _resume(self, *, expired: bool) -> None:
        """Resume reading: no symbol has too many trades waiting, or the pause ran out (the overflow policy then)."""
        self._pause_ends = None
        self._may_pause = not expired
        if expired:
            logger.warning("reads were paused %.1f s (timeouts.rest) for a hole still open; reading on", self.max_pause)
        if self.paused:
            connections = tuple(self.paused)
            self.paused.clear()
            self._resuming = True
            # The driver resumes them after this input returned: their held-back frames come in as new inputs
            # (and may pause them again).
            self._act(ResumeReading(connections))

    def _bad_frame(self, error: BadFrame, connection: Hashable) -> None:
        self.counters["bad_frames"] += 1
        if self.now - self._bad_frame_logged >= self._report_interval:
            self._bad_frame_logged = self.now
            logger.warning("bad frame from %s skipped (%d so far): %s", getattr(connection, "endpoint", connection),
                           self.counters["bad_frames"], error)
        self.sink.event("on_error", error=error, where="decode")
