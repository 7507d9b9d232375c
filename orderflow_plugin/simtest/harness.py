"""The simulation: a virtual clock and an event heap driving the real ``Pipeline`` and ``Supervisor``.

It plays the part of the asyncio shell (:mod:`orderflow_plugin.stream`): it carries out the
pipeline's actions and the supervisors' ``Connect`` / ``Retire``, feeds frames, backfill answers
and the time, and ticks the supervisors at their deadlines, in the same order the shell does
(a supervisor's actions are carried out "soon", as the shell's tasks are). No asyncio, no threads,
no real time, no sockets: an event is ``(time, sequence, callback)``, and every random choice comes
from the one ``random.Random(seed)``. After every event the step invariants are checked.
"""

from __future__ import annotations

import heapq
import math
import random
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

from ..actions import Backfill, Connect, FirstTrade, PauseReading, ResumeReading, Retire, Rotate, Subscribed, WakeAt
from ..errors import StreamError
from ..pipeline import Pipeline
from ..sequencer import Sequencer
from ..supervisor import OpenLimiter, Supervisor
from .exchange import Exchange, Rest, ShardFeed
from .invariants import Failure, Violation, check_end, check_ending, check_step
from .network import URL, SimConnection
from .recorder import Recorder
from .silence import SilenceLook
from .world import World, draw_world

__all__ = ["Shard", "Simulation", "WatchedLimiter"]

MAX_STEPS_AT_ONE_TIME = 100_000  # more events than this without the clock moving: a livelock


class WatchedLimiter(OpenLimiter):
    """The real limiter, remembering when it held opens back (the liveness bound allows for it)."""

    def __init__(self, per_5min: int) -> None:
        super().__init__(per_5min)
        self.blocked: list[tuple[float, float]] = []

    def wait(self, now: float) -> float:
        """As :meth:`OpenLimiter.wait`; a refusal is remembered."""
        wait = super().wait(now)
        if wait > 0:
            self.blocked.append((now, now + wait))
        return wait


class Shard:
    """One shard: its symbols, the trades its connections receive, its supervisor and connections."""

    def __init__(self, number: int, symbols: tuple[str, ...], feed: ShardFeed) -> None:
        self.number = number
        self.symbols = symbols
        self.feed = feed
        self.sup: Supervisor
        self.opening: set[SimConnection] = set()  # in a connect stage
        self.open: set[SimConnection] = set()  # open and not ended
        self.history: list[SimConnection] = []
        self.gave_up = False
        self.wake_at = math.inf


class Simulation:
    """One seed, start to end."""

    def __init__(self, seed: int, *, allow_known: bool = False) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.world: World = draw_world(seed, rng)
        self.exchange = Exchange(self.world, rng)
        self.rest = Rest(self.exchange, rng)
        self.now = 0.0
        self.steps = 0
        self.frozen_until = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._sequence = 0
        self.recorder = Recorder(self, allow_known=allow_known)
        world = self.world
        self.pipeline = Pipeline(world.symbols, "spot", self.recorder, sequencing=world.sequencing,
                                 limits=world.limits, flow=world.flow, timeouts=world.timeouts)
        self.sequencers: list[Sequencer] = list(self.pipeline.sequencers.values())
        self.arrivals = {s: [math.inf] * len(t.times) for s, t in self.exchange.timelines.items()}
        self.limiter = WatchedLimiter(world.reconnect.connections_per_5min)
        self.shards = [Shard(n, symbols, self.exchange.feeds[symbols]) for n, symbols in enumerate(world.shards, 1)]
        for shard in self.shards:
            shard.sup = Supervisor(shard.number, shard.symbols, URL, world.reconnect, limiter=self.limiter, rng=rng,
                                   event=partial(self.recorder.supervisor_event, shard))
        self.tick_interval = self.pipeline.tick_interval  # as the shell ticks
        self.violation: Violation | None = None
        self.silence = SilenceLook(self)  # the shell's silence watch, looked at each regular tick

    # The clock

    def at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` at virtual time ``when``."""
        self._sequence += 1
        heapq.heappush(self._heap, (when, self._sequence, callback, args))

    def soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` after what is running now (the shell's tasks and ``call_soon``)."""
        self.at(self.now, callback, *args)

    def run(self) -> Violation | None:
        """Run the seed to its end; the first violation, or None."""
        world = self.world
        self.at(0.0, self._start)
        for start, _ in world.faults.outages:
            self.at(start, self._outage, start)
        for start, seconds in world.faults.freezes:
            self.at(start, self._freeze, seconds)
        self.at(self.tick_interval, self._tick)
        heap, end, pop = self._heap, world.end, heapq.heappop
        same_time, last_time = 0, -1.0
        try:
            while heap:
                when, _, callback, args = pop(heap)
                if when > end:
                    break
                if when > self.now:
                    self.now = when
                if self.now < self.frozen_until:
                    self.now = self.frozen_until
                self.steps += 1
                if self.now == last_time:
                    same_time += 1
                    if same_time > MAX_STEPS_AT_ONE_TIME:
                        self.recorder.fail("4 supervision", f"{same_time} steps without the clock moving: livelock")
                else:
                    same_time, last_time = 0, self.now
                callback(*args)
                self._drain()  # what a step's pipeline input queued (a fill_tail from the silence look)
                check_step(self)
            self.now = end
            check_end(self)
        except Failure as failure:
            self.violation = failure.violation
        except Exception as exc:  # a crash of the real code (or the harness) is a failure of the seed too
            where = "".join(traceback.format_exception(exc)[-4:]).strip()
            self.violation = Violation("crash", self.now, self.steps, f"{type(exc).__name__}: {exc}\n{where}")
        return self.violation

    # The world's own events

    def _start(self) -> None:
        for shard in self.shards:
            self._carry_out(shard, shard.sup.start(self.now))

    def _outage(self, start: float) -> None:
        self.recorder.event("sim:outage")
        for shard in self.shards:
            for connection in (*shard.opening, *shard.open):
                if connection.created < start:  # not one opened after a freeze that hid the outage's start
                    connection.go_dead()

    def _freeze(self, seconds: float) -> None:
        self.recorder.event("sim:freeze", seconds=seconds)
        self.frozen_until = max(self.frozen_until, self.now + seconds)

    def _tick(self) -> None:
        self._tick_once()
        self.silence.look()
        self.at(self.now + self.tick_interval, self._tick)

    def _tick_once(self) -> None:
        """The shell's ticker (a tick that raises is a crash: the harness reports it)."""
        for shard in self.shards:  # as the shell does: when the streaming connection last read a byte
            connection = shard.sup.connection
            if connection is not None and shard.sup.state == "streaming" and not connection.paused:
                # alive, it reads pongs, pings and trades: everything the server sent a latency ago is in
                connection.heard = max(connection.heard, min(self.now, connection.dead_since) - connection.latency)
            if connection is not None and shard.sup.state == "streaming":
                self.pipeline.heard(shard.symbols, connection.heard)
        self.pipeline.tick(self.now)
        self._drain()

    # The supervisors' side of the shell

    def _carry_out(self, shard: Shard, actions: list[Any]) -> None:
        for action in actions:
            if type(action) is Connect:
                connection = SimConnection(self, shard, len(shard.history) + 1)
                shard.opening.add(connection)
                shard.history.append(connection)
                self.soon(connection.start)
            elif type(action) is Retire:
                self.soon(action.connection.close)
        self.soon(self._drive, shard)

    def _drive(self, shard: Shard) -> None:
        """One turn of the shell's ``_drive`` loop: tick, then sleep until the next deadline."""
        supervisor = shard.sup
        if supervisor.state == "failed" and not shard.opening:
            return
        actions = supervisor.tick(self.now)
        if actions:
            self._carry_out(shard, actions)
            return
        due = supervisor.next_deadline()
        if due < shard.wake_at or shard.wake_at <= self.now:
            shard.wake_at = due
            if due < math.inf:
                self.at(due, self._drive, shard)

    def opened(self, connection: SimConnection) -> None:
        """``connection`` passed its stages: the supervisor hears of it."""
        shard = connection.shard
        shard.opening.discard(connection)
        shard.open.add(connection)
        self.recorder.event("on_connected", url=URL, shard=shard.number, connection=connection.number)
        self._carry_out(shard, shard.sup.opened(connection, self.now))

    def ended(self, connection: SimConnection, error: StreamError) -> None:
        """``connection`` ended (its ``done`` resolved): stage failure or ending, as the shell reports it."""
        shard = connection.shard
        check_ending(self, connection, error)
        self.pipeline.forget(connection)
        if connection.opened:
            if shard.sup.connection is connection:  # as the shell does: not a retired one
                self.pipeline.feed_lost(shard.symbols)
            shard.open.discard(connection)
            if connection.closing:
                self.recorder.event("on_disconnected", code=1000, reason="rotated", error=None)
            self._carry_out(shard, shard.sup.ended(connection, error, self.now))
        else:
            shard.opening.discard(connection)
            self._carry_out(shard, shard.sup.open_failed(error, self.now))

    # The pipeline's side of the shell

    def arrived(self, connection: SimConnection, index: int) -> None:
        """Trade ``index`` of ``connection``'s feed reached our socket (read now, or queued while paused)."""
        symbol, position = connection.shard.feed.keys[index]
        arrivals = self.arrivals[symbol]
        if arrivals[position] == math.inf:
            arrivals[position] = self.now

    def receive(self, connection: SimConnection, item: int | bytes) -> None:
        """A frame read from ``connection``: a feed index (a trade) or control bytes."""
        frame = connection.shard.feed.frames[item] if type(item) is int else item
        self.pipeline.receive(connection, frame, self.now)  # type: ignore[arg-type]
        self._drain()

    def _drain(self) -> None:
        """Carry out what the pipeline queued, after its input returned (a resume's frames come back in)."""
        outbox = self.pipeline.outbox
        while outbox:
            self._act(outbox.popleft())

    def _act(self, action: Any) -> None:
        kind = type(action)
        if kind is PauseReading:
            self.recorder.counts["pauses"] += 1
            action.connection.pause()
        elif kind is FirstTrade:
            action.connection.first_trade()
        elif kind is WakeAt:
            self.at(action.when, self._tick_once)
        elif kind is Backfill:
            when, trades, failed = self.rest.answer(action.symbol, action.first, action.last, self.now)
            self.at(when, self._backfilled, action, trades, failed)
        elif kind is ResumeReading:
            for connection in action.connections:
                connection.resume()
        elif kind is Subscribed:
            action.connection.subscribed(action.reply_id, action.error)
        elif kind is Rotate:
            for shard in self.shards:
                if shard.sup.connection is action.connection:
                    self._carry_out(shard, shard.sup.rotate(action.connection, self.now))

    def _backfilled(self, action: Backfill, trades: list[Any], failed: Exception | None) -> None:
        self.pipeline.backfilled(action.symbol, action.first, action.last, trades, failed, self.now)
        self._drain()
        self.silence.filled(action.symbol)
