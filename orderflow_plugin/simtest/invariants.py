"""What must hold, checked while the seed runs and at its end.

The :class:`~.recorder.Recorder` (the pipeline's sink) checks invariants 1 and 2 as trades and
reports arrive. :func:`check_step` runs after every step (every event of the virtual
clock): 2 (no hole left unreported when the step ends), 4 (supervision: never streaming on an ended
connection, never idle without a next step, no stage and no dead path past its deadline) and 5
(buffers within ``max_buffered_trades``). :func:`check_end` runs once at the end: 3 (liveness after
faults stop) and 6 (every closed bar equals a from-scratch Decimal recomputation,
:mod:`.reference`). :func:`check_ending` checks 7 (no false alarm: a connection of the fault-free
world ends only when retired) each time a connection ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import StreamError
from .reference import compare_bars

if TYPE_CHECKING:
    from .harness import Simulation
    from .network import SimConnection

__all__ = ["Failure", "Violation", "check_end", "check_ending", "check_step"]

EPSILON = 1e-6


@dataclass(frozen=True)
class Violation:
    """The first invariant broken: which, when (virtual seconds, step number) and how."""

    invariant: str
    time: float
    step: int
    detail: str


class Failure(Exception):
    """Raised to stop the run at the first violation."""

    def __init__(self, violation: Violation) -> None:
        self.violation = violation
        super().__init__(violation.detail)


def check_ending(sim: Simulation, connection: SimConnection, error: StreamError) -> None:
    """Invariant 7: a connection of the fault-free world ends only when retired."""
    if connection.faulty or connection.closing:
        return
    sim.recorder.fail("7 false alarm", f"shard {connection.shard.number} connection {connection.number}, opened "
                      f"after faults stopped, ended: {type(error).__name__}: {error}")


def check_step(sim: Simulation) -> None:
    """Invariants 2, 4 and 5 after one step."""
    recorder = sim.recorder
    if recorder.holes:
        symbol, first, last = recorder.holes[0]
        recorder.fail("2 gap report", f"{symbol}: ids {first}..{last} were skipped in delivery and not reported")
    limit = sim.world.limits.max_buffered_trades
    for sequencer in sim.sequencers:
        if sequencer.held > limit:
            recorder.fail("5 buffer", f"{sequencer.symbol}: {sequencer.held} trades held, max_buffered_trades {limit}")
    now = sim.now
    catching_up = now <= sim.frozen_until  # after a freeze, timers that came due run in time order at its end
    for shard in sim.shards:
        supervisor = shard.sup
        state = supervisor.state
        if state == "streaming":
            connection = supervisor.connection
            if connection is None or connection.ended:  # type: ignore[attr-defined]
                recorder.fail("4 supervision", f"shard {shard.number} is streaming on "
                                               f"{'no' if connection is None else 'an ended'} connection")
            if supervisor.replacing and not shard.opening and supervisor.next_deadline() == math.inf:
                recorder.fail("4 supervision", f"shard {shard.number} is replacing its connection, but nothing is "
                                               "opening and no deadline is set")
        elif state == "failed":
            if not shard.gave_up:
                recorder.fail("4 supervision", f"shard {shard.number} failed without reporting GaveUp")
        elif not shard.opening and supervisor.next_deadline() == math.inf:
            recorder.fail("4 supervision", f"shard {shard.number} is {state} with no connection opening and no "
                                           "deadline: nothing will ever happen")
        if catching_up:
            continue
        for connection in shard.opening:
            if now > connection.deadline + EPSILON:
                recorder.fail("4 supervision", f"shard {shard.number}: stage {connection.stage} began at "
                                               f"{connection.stage_started:.3f} and is past its deadline "
                                               f"{connection.deadline:.3f} without a report")
        for connection in shard.open:
            if now > connection.ping_due + EPSILON and not connection.paused:
                recorder.fail("4 supervision", f"shard {shard.number}: the path died at {connection.dead_since:.3f}"
                                               f"; the keepalive should have ended it at {connection.ping_due:.3f}")


def check_end(sim: Simulation) -> None:
    """Invariants 3 (liveness once faults stop) and 6 (bars equal the reference) at the end of the run."""
    _check_connected(sim)
    _check_delivered(sim)
    recorder = sim.recorder
    flow = sim.world.flow
    settle_ms = int((flow.bar_close_grace + 2 * sim.tick_interval + 5.0) * 1000)  # a bar due closes by then
    for symbol, timeline in sim.exchange.timelines.items():
        if sim.pipeline.busy(symbol):
            continue  # a hole is open: the trades after it are not delivered yet
        for problem, known in compare_bars(recorder.trades[symbol], recorder.bars[symbol], timeline, flow, settle_ms):
            if known is None:
                recorder.fail("6 metrics", f"{symbol}: {problem}")
            recorder.known_bug(known, "6 metrics", f"{symbol}: {problem}")


def _check_connected(sim: Simulation) -> None:
    """3a: once settled, no shard is without a subscribed connection longer than the gap allowance."""
    world = sim.world
    settled, end = world.faults.stop + world.bound_connect, world.end
    for shard in sim.shards:
        if shard.gave_up:
            continue
        spans = sorted((c.receiving_since, min(c.dead_since, c.stopped_at, end)) for c in shard.history
                       if c.receiving_since < math.inf)
        covered = settled
        for start, stop in [*spans, (end, end)]:
            if start > covered:
                allowed = world.gap_allowance + _overlap(sim.limiter.blocked, covered, start)
                if start - covered > allowed:
                    sim.recorder.fail("3 liveness", f"shard {shard.number} had no subscribed connection from "
                                                    f"{covered:.3f} to {start:.3f} ({start - covered:.1f} s, allowed "
                                                    f"{allowed:.1f} s once settled at {settled:.1f} s)")
            covered = max(covered, stop)


def _overlap(spans: list[tuple[float, float]], start: float, stop: float) -> float:
    return sum(max(0.0, min(b, stop) - max(a, start)) for a, b in spans)


def _check_delivered(sim: Simulation) -> None:
    """3b: a trade is delivered (or reported) by ``max(faults stop, arrival of it or a later trade) + bound``;
    3c: and, even if neither it nor a later trade ever arrives, by ``max(REST has it, the shard receiving after
    faults stopped) + bound_tail`` (with backfill on: REST's newest id says what is missing, issue #32)."""
    world, recorder = sim.world, sim.recorder
    stop, bound, end = world.faults.stop, world.bound_fill, world.end
    for shard in sim.shards:
        if shard.gave_up:
            continue
        # when, once faults stopped, the shard first had a subscribed connection (the limiter may hold it back)
        receiving = min((max(c.receiving_since, stop) for c in shard.history
                         if min(c.dead_since, c.stopped_at) > max(c.receiving_since, stop)), default=math.inf)
        for symbol in shard.symbols:
            timeline = sim.exchange.timelines[symbol]
            delivered = [math.inf] * len(timeline.times)
            first_id = timeline.first_id
            for trade, when in zip(recorder.trades[symbol], recorder.times[symbol], strict=True):
                delivered[trade.id - first_id] = when
            for first, last in recorder.gaps[symbol]:
                for index in range(first - first_id, last - first_id + 1):
                    delivered[index] = -1.0  # reported: never owed
            start = recorder.trades[symbol][0].id - first_id if recorder.trades[symbol] else 0
            # with nothing delivered the stream does not know where it starts: no tail is owed
            tail = world.bound_tail if recorder.trades[symbol] else math.inf
            arrivals = sim.arrivals[symbol]
            seen = math.inf
            late: tuple[int, float, float] | None = None
            for index in range(len(delivered) - 1, start - 1, -1):
                seen = min(seen, arrivals[index])
                due = min(max(stop, seen) + bound, max(receiving, timeline.times[index] + world.rest_lag) + tail)
                when = delivered[index]
                if when > due and (when < math.inf or due <= end):
                    late = (index, when, due)
            if late is not None:
                index, when, due = late
                fate = f"delivered at {when:.3f}" if when < math.inf else "never delivered nor reported"
                recorder.fail("3 liveness", f"{symbol}: id {first_id + index} published at "
                                            f"{timeline.times[index]:.3f} was {fate}; due by {due:.3f} (faults "
                                            f"stopped at {stop:.1f}, it or a later trade arrived at "
                                            f"{min(arrivals[index:]):.3f}, bound {bound:.1f} s; REST had it "
                                            f"from {timeline.times[index] + world.rest_lag:.3f}, tail bound "
                                            f"{tail:.1f} s)")

