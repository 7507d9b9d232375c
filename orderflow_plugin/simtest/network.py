"""Simulated WebSocket connections: the transport's connect stages with their deadlines, then frames.

A :class:`SimConnection` stands where the shell's ``WsConnection`` and ``connect.open_connection``
stand, and behaves as they do: each stage (``resolve`` .. ``first_message``) succeeds, raises
(the matching :class:`~orderflow_plugin.errors.StreamError`) or hangs until its deadline, when
the stage watch raises :class:`~orderflow_plugin.errors.StageTimeout`; ``subscribed`` and
``first_message`` finish when the pipeline's ``Subscribed`` and ``FirstTrade`` actions say so.
Once open, the server sends every trade published after the subscription, with the seed's frame
faults, and the connection may be reset, closed, announce ``serverShutdown`` or go silent (a dead
path: the keepalive's ping goes unanswered and the connection fails ``ping_interval +
ping_timeout`` later). Paused reading queues frames; none are lost. The connection is the
``source`` the pipeline sees.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING

from ..errors import ConnectionLost, StreamError
from ..liveness import QUIET_CHECKS, TRADE_GRACE, no_new_trades
from ..sim.frames import server_shutdown
from ..transport import STAGES
from . import messages
from .messages import ENDPOINT, URL
from .world import CONNECT_LATENCY, NETWORK_LATENCY, RETRY_AFTER_MAX, SHUTDOWN_CLOSE, SWAP_DELAY

if TYPE_CHECKING:
    from .harness import Shard, Simulation

__all__ = ["ENDPOINT", "URL", "SimConnection"]

_OPENING = ("resolve", "tcp_connect", "tls", "http_upgrade")


class SimConnection:
    """One connection attempt of a shard, from ``resolve`` to its end."""

    def __init__(self, sim: Simulation, shard: Shard, number: int) -> None:
        self.sim = sim
        self.shard = shard
        self.number = number
        self.url = URL
        self.endpoint = ENDPOINT
        self.stage = "new"
        self.created = self.stage_started = sim.now
        self.deadline = math.inf  # when the current stage must end: what the invariants hold it to
        self.opened = False  # the supervisor was told (the stages are done)
        self.ended = False
        self.closing = False  # retired: we sent a close frame
        self.paused = False
        self.pending: deque[int | bytes] = deque()
        self.got_trade = False
        self.replied = False
        self.dead_since = math.inf  # the path died then: nothing arrives any more
        self.heard = 0.0  # when it last read a byte (the transport's last_received)
        self.quiet_before: dict[str, int | None] | None = None  # REST's newest ids half way through first_message
        self.ping_due = math.inf  # the keepalive fails the connection then, if reading is not paused
        self.receiving_since = math.inf  # the server subscribed us then
        self.stopped_at = math.inf  # we closed it, or it ended, then
        self.server_stops = math.inf  # the server got our close frame then: it sends nothing published later
        self.latency = sim.rng.uniform(*NETWORK_LATENCY)
        self.cursor = 0
        self.next_fault = math.inf
        self._token = 0
        faults = sim.world.faults
        self.faulty = sim.now < faults.stop
        if self.faulty and faults.frame_rate:
            self.next_fault = int(sim.rng.expovariate(faults.frame_rate))

    def __repr__(self) -> str:
        return f"<conn {self.shard.number}.{self.number} {self.stage}>"

    def __hash__(self) -> int:
        # Not id(): the pipeline keeps sources in sets, and a seed must replay in the same order every time.
        return self.shard.number * 1_000_003 + self.number

    # Stages

    def start(self) -> None:
        """Begin with ``resolve``."""
        self.enter("resolve")

    def enter(self, stage: str) -> None:
        """Start ``stage`` and its deadline."""
        sim = self.sim
        self.stage, self.stage_started = stage, sim.now
        self._token += 1
        self.deadline = sim.now + getattr(sim.world.timeouts, stage)
        self.arm_watch(stage)
        if stage in _OPENING:
            self._plan_stage(stage)
        elif stage == "subscribed":
            sim.at(sim.now + self.latency, self._server_subscribes)
        elif stage == "first_message" and self.got_trade:
            sim.soon(self._open, self._token)
        elif stage == "first_message":  # the shell's quiet look, half way (REST is asked with backfill off too)
            # or at the silence deadline, if sooner (silence._quiet_baseline)
            liveness = sim.pipeline.liveness
            sim.at(sim.now + min(sim.world.timeouts.first_message / 2, *map(liveness.deadline, self.shard.symbols)),
                   self._quiet_look, self._token)

    def arm_watch(self, stage: str) -> None:
        """The stage's deadline, as ``asyncio.timeout`` in ``connect.open_connection`` sets it."""
        self.sim.at(self.deadline, self._watch, self._token)

    def _watch(self, token: int) -> None:
        if token == self._token and not self.ended and self.stage in STAGES:
            if self.stage == "first_message" and self.quiet_before is not None:
                if self._quiet_market():
                    self._open(token)  # as connect.open_connection does when the shell's quiet() says so
                    return
                # as the shell does: a trade REST already shows may still be on its way; it opens the stage
                self.deadline = self.sim.now + TRADE_GRACE
                self.sim.at(self.deadline, self._grace_over, token)
                return
            self._time_out()

    def _grace_over(self, token: int) -> None:
        if token == self._token and not self.ended and self.stage == "first_message":
            self._time_out()

    def _time_out(self) -> None:
        self.end(messages.stage_timeout(self.stage, getattr(self.sim.world.timeouts, self.stage)))

    def _newest_ids(self) -> dict[str, int | None]:
        """REST's newest id of the shard's first QUIET_CHECKS symbols now (the simulated REST always answers)."""
        timelines = self.sim.exchange.timelines
        newest: dict[str, int | None] = {}
        for symbol in self.shard.symbols[:QUIET_CHECKS]:
            count = timelines[symbol].published(self.sim.now)
            newest[symbol] = timelines[symbol].rows[count - 1].id if count else None
        return newest

    def _quiet_look(self, token: int) -> None:
        if token == self._token and not self.ended and self.stage == "first_message":
            self.quiet_before = self._newest_ids()
            self._fill_tails(self.quiet_before)

    def _fill_tails(self, newest: dict[str, int | None]) -> None:
        """As the shell's looks at connect do (silence._fill_tails): fetch what REST has beyond the delivered."""
        for symbol, latest in newest.items():
            if latest is not None:
                self.sim.pipeline.fill_tail(symbol, latest, self.sim.now)

    def _quiet_market(self) -> bool:
        """The shell's judgement at the first_message deadline (silence._quiet_market), with the same rule."""
        before, self.quiet_before = self.quiet_before, None
        assert before is not None
        after = self._newest_ids()
        self._fill_tails(after)
        if not no_new_trades(before, after):
            return False
        for symbol, newest in after.items():
            if newest is not None:
                self.sim.pipeline.liveness.baseline[symbol] = newest
        return True

    def _plan_stage(self, stage: str) -> None:
        sim, faults = self.sim, self.sim.world.faults
        took = sim.now + sim.rng.uniform(0.001, CONNECT_LATENCY)
        if any(a <= sim.now < b for a, b in faults.outages):  # no network: the first stage fails
            sim.at(took, self._stage_failed, self._token, messages.stage_failed(stage, "resolve"))
            return
        draw = sim.rng.random() if self.faulty else 1.0
        if draw < faults.stage_stall:
            return  # hangs: the watch ends it
        draw -= faults.stage_stall
        if stage == "http_upgrade" and draw < faults.reject:
            error = messages.rejected(sim.rng.choice((429, 418)), round(sim.rng.uniform(0.5, RETRY_AFTER_MAX), 1))
            sim.at(took, self._stage_failed, self._token, error)
        elif draw < faults.stage_fail:
            sim.at(took, self._stage_failed, self._token, messages.stage_failed(stage))
        else:
            sim.at(took, self._stage_done, self._token)

    def _stage_done(self, token: int) -> None:
        if token != self._token or self.ended or self.sim.now >= self.dead_since:
            return
        following = _OPENING.index(self.stage) + 1
        self.enter(_OPENING[following] if following < len(_OPENING) else "subscribed")

    def _stage_failed(self, token: int, error: StreamError) -> None:
        if token == self._token and not self.ended and self.sim.now < self.dead_since:
            self.end(error)

    def _server_subscribes(self) -> None:
        """The server got our SUBSCRIBE: it answers and streams every trade published from now on."""
        sim = self.sim
        if self.ended or sim.now >= self.dead_since:
            return
        faults = sim.world.faults
        if self.faulty and sim.rng.random() < faults.refuse_subscription:
            if sim.rng.random() < 0.5:
                return  # never answered: the subscribed watch ends it
            sim.at(sim.now + self.latency, self._arrive, messages.REFUSED)
            return
        sim.at(sim.now + self.latency, self._arrive, messages.SUBSCRIBED)
        self.receiving_since = sim.now
        feed = self.shard.feed
        self.cursor = bisect_left(feed.times, sim.now)
        self._next_send()
        if self.faulty and faults.ending_rate:
            when = sim.now + sim.rng.expovariate(faults.ending_rate)
            if when < faults.stop:
                sim.at(when, self._fault_ending, sim.rng.choice(faults.ending_kinds))

    def subscribed(self, reply_id: int | None, error: object) -> None:
        """The pipeline's ``Subscribed`` action: the server answered our SUBSCRIBE."""
        if self.replied:
            return
        if error is not None:
            self.replied = True
            self.sim.soon(self._refused, self._token, error)
        elif reply_id == 1:
            self.replied = True
            self.sim.soon(self._confirmed, self._token)

    def _refused(self, token: int, error: object) -> None:
        if token == self._token and not self.ended and self.stage == "subscribed":
            self.end(messages.refused(error))

    def _confirmed(self, token: int) -> None:
        if token == self._token and not self.ended and self.stage == "subscribed":
            self.enter("first_message")

    def first_trade(self) -> None:
        """The pipeline's ``FirstTrade`` action."""
        if not self.got_trade:
            self.got_trade = True
            if self.stage == "first_message":
                self.sim.soon(self._open, self._token)

    def _open(self, token: int) -> None:
        if token == self._token and not self.ended and self.stage == "first_message":
            self.stage, self.deadline, self.opened = "streaming", math.inf, True
            self._token += 1
            self.sim.opened(self)
            if self.dead_since < math.inf:
                self._arm_ping(max(self.dead_since, self.sim.now))

    # Frames

    def _next_send(self) -> None:
        feed = self.shard.feed
        if self.cursor < len(feed.times):
            self.sim.at(feed.times[self.cursor] + self.latency, self._send)

    def _send(self) -> None:
        """The next trade of the feed reaches us, with the seed's frame faults."""
        sim = self.sim
        k = self.cursor
        if self.ended or sim.now >= self.dead_since or self.shard.feed.times[k] > self.server_stops:
            return
        self.cursor += 1
        self._next_send()
        if sim.exchange.skipped and self.shard.feed.keys[k] in sim.exchange.skipped:
            return  # the tail schedule: the server skips it, REST has it
        if k >= self.next_fault:
            self.next_fault = k + 1 + int(sim.rng.expovariate(sim.world.faults.frame_rate))
            if sim.now < sim.world.faults.stop:
                kind = sim.rng.choice(sim.world.faults.frame_kinds)
                if kind == "drop":
                    return
                if kind == "swap":
                    sim.at(sim.now + sim.rng.uniform(0.001, SWAP_DELAY), self._arrive, k)
                    return
                if kind == "duplicate":
                    sim.at(sim.now + sim.rng.uniform(0.0, SWAP_DELAY), self._arrive, k)
                else:
                    self._arrive(sim.rng.choice(messages.MALFORMED))
        self._arrive(k)

    def _arrive(self, item: int | bytes) -> None:
        """A frame (a feed index, or bytes) reaches us: handled now, or queued while reading is paused."""
        if self.ended or self.sim.now >= self.dead_since:
            return
        if type(item) is int:
            self.sim.arrived(self, item)
        if self.paused:
            self.pending.append(item)
        else:
            self.sim.receive(self, item)

    def pause(self) -> None:
        """``PauseReading``: frames wait, in order, until :meth:`resume`."""
        self.paused = True

    def resume(self) -> None:
        """``ResumeReading``: handle what waited (which may pause again), then read on."""
        if not self.paused:
            return
        self.paused = False
        pending = self.pending
        while pending and not self.paused and not self.ended:
            self.sim.receive(self, pending.popleft())
        if self.ping_due < self.sim.now and not self.paused:  # the keepalive judges again from now
            self._arm_ping(self.sim.now)

    # Endings

    def _fault_ending(self, kind: str) -> None:
        sim = self.sim
        if self.ended or self.closing or sim.now >= self.dead_since:
            return
        if kind == "reset":
            self.end(messages.reset())
        elif kind == "close":
            self.end(messages.closed(*sim.rng.choice(((1001, "going away"), (1011, "internal error"),
                                                       (1008, "policy")))))
        elif kind == "silent":
            self.go_dead()
        else:
            self._arrive(server_shutdown(sim.world.epoch_ms + int(sim.now * 1000), wrapped=True))
            sim.at(sim.now + sim.rng.uniform(0.5, SHUTDOWN_CLOSE), self._fault_ending, "close")

    def go_dead(self) -> None:
        """The path dies: nothing more arrives; an open connection's keepalive notices."""
        if self.ended or self.dead_since < math.inf:
            return
        self.dead_since = self.sim.now
        if self.opened:
            self._arm_ping(self.sim.now)

    def _arm_ping(self, since: float) -> None:
        timeouts = self.sim.world.timeouts
        self.ping_due = since + timeouts.ping_interval + timeouts.ping_timeout
        self.sim.at(self.ping_due, self._ping)

    def _ping(self) -> None:
        if self.ended or self.sim.now < self.ping_due or self.paused:
            return  # a paused connection is not judged: resume() arms the keepalive again
        self.end(messages.stalled(self.sim.now - self.dead_since, self.sim.world.timeouts.ping_timeout))

    def close(self) -> None:
        """Retired: we send a close frame; what the server sent before it got ours still arrives (websockets
        delivers data frames while CLOSING), then its close frame. Paused, or a dead path: abort after ``close``."""
        if self.ended or self.closing:
            return
        sim = self.sim
        self.closing, self.stopped_at, self.server_stops = True, sim.now, sim.now + self.latency
        alive = sim.now < self.dead_since and not self.paused
        sim.at(sim.now + (2 * self.latency + 1e-6 if alive else sim.world.timeouts.close), self.end, messages.rotated())

    def end(self, error: StreamError) -> None:
        """The connection is over (as ``WsConnection.done`` resolving)."""
        if self.ended:
            return
        if not self.opened and isinstance(error, ConnectionLost) and self.stage in STAGES:
            error.stage = self.stage  # the socket dropped while this stage waited
        self.ended = True
        self.stopped_at = min(self.stopped_at, self.sim.now)
        self.pending.clear()
        self._token += 1
        self.sim.ended(self, error)
