"""One shard's connection lifecycle as a state machine: connection events in, actions out.

Plain code with no I/O and no clock of its own: the shell (or the simulation harness, in
virtual time) tells it what happened (:meth:`Supervisor.opened`, :meth:`~Supervisor.open_failed`,
:meth:`~Supervisor.ended`, :meth:`~Supervisor.rotate`) and the time (:meth:`~Supervisor.tick`),
and carries out what it returns: :class:`Connect` (open a connection, stage by stage) and
:class:`Retire` (close one a replacement took over). Rules: capped exponential backoff with
full jitter and at least any Retry-After; at most ``connections_per_5min`` opens per 300 s
across shards; retry forever unless ``max_attempts``; replace a connection make-before-break
when it reaches ``max_connection_age`` or the server announces its shutdown.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from .actions import Connect, Retire
from .errors import GaveUp, HandshakeRejected, Stalled, StreamError
from .options import Reconnect

__all__ = ["Connect", "OpenLimiter", "Retire", "Supervisor"]

logger = logging.getLogger("orderflow_plugin.stream")


class OpenLimiter:
    """At most ``per_5min`` connection opens in any 300 s, shared by every shard (Binance's per-IP limit)."""

    def __init__(self, per_5min: int) -> None:
        self.per_5min = per_5min
        self._opens: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until an open is allowed; 0.0 means now, and the open is recorded."""
        opens = self._opens
        while opens and now - opens[0] >= 300:
            opens.popleft()
        if len(opens) >= self.per_5min:
            return 300 - (now - opens[0])
        opens.append(now)
        return 0.0


class Supervisor:
    """Decides when a shard connects, backs off, gives up, rotates, and what each ending means."""

    def __init__(self, number: int, symbols: tuple[str, ...], url: str, reconnect: Reconnect, *,
                 event: Callable[..., None], limiter: OpenLimiter, rng: random.Random | None = None,
                 counters: dict[str, int] | None = None) -> None:
        self.number = number
        self.symbols = symbols
        self.url = url
        self.options = reconnect
        self.event = event
        self.limiter = limiter
        self.rng = rng or random.Random(random.getrandbits(64))  # from the global one: a seeded run repeats
        self.counters = counters if counters is not None else dict.fromkeys(("reconnects", "stalls", "rotations"), 0)
        self.state = "new"  # starting, connecting, streaming, backoff, failed, stopped
        self.connection: Hashable | None = None
        self.opened_at = 0.0
        self.last_error: StreamError | None = None
        self.connects = 0
        self.attempt = 0
        self.replacing = False  # a replacement is being opened while the connection streams
        self._in_flight = False  # a Connect is being carried out
        self._due = math.inf  # when the next Connect may go out
        self._rotate_at = math.inf  # when the connection is replaced for its age
        self._failures: list[str] = []

    # Inputs

    def start(self, now: float) -> list[Any]:
        """Connect as soon as the rate limit allows."""
        self.state = "starting"
        self._due = now
        return self.tick(now)

    def stop(self) -> None:
        """Nothing more: the shell is closing everything."""
        self.state = "stopped"
        self._due = math.inf

    def tick(self, now: float) -> list[Any]:
        """Send the Connect that is due, or start a rotation the connection's age calls for."""
        if self.state == "stopped":
            return []
        if self.state == "streaming" and not self.replacing and now >= self._rotate_at:
            return self._start_replacing(now, "it reached max_connection_age")
        if self._in_flight or now < self._due:
            return []
        wait = self.limiter.wait(now)
        if wait > 0:
            logger.warning("connection rate limit reached; waiting %.1f s", wait)
            self._due = now + wait
            return []
        self._due = math.inf
        self._in_flight = True
        self.attempt += 1
        if not self.replacing:
            self.state = "connecting"
        self.event("on_connect_attempt", attempt=self.attempt, url=self.url, symbols=self.symbols)
        return [Connect(self.attempt, self.replacing)]

    def opened(self, connection: Hashable, now: float) -> list[Any]:
        """The Connect succeeded: ``connection`` delivers from now on."""
        if self.state == "stopped":
            return []
        self._in_flight = False
        self.connects += 1
        old, replaced = self.connection, self.replacing
        if self.connects > 1 and not replaced:
            self.counters["reconnects"] += 1
        self.connection = connection
        self.opened_at = now
        self._rotate_at = now + self.options.max_connection_age
        self.state = "streaming"
        self.replacing = False
        self.attempt = 0
        self._failures.clear()
        return [Retire(old)] if replaced and old is not None else []

    def open_failed(self, error: StreamError, now: float) -> list[Any]:
        """The Connect failed at a stage: back off and try again, or give up after ``max_attempts``."""
        if self.state == "stopped":
            return []
        self._in_flight = False
        self.last_error = error
        self._failures.append(f"attempt {self.attempt}: {error}")
        self.event("on_error", error=error, where=f"connect:{error.stage}")
        max_attempts = self.options.max_attempts
        if max_attempts and self.attempt >= max_attempts:
            gave_up = GaveUp(f"gave up connecting to {self.url} for {', '.join(self.symbols)} after {self.attempt} "
                             f"attempts; " + "; ".join(self._failures[-5:]), url=self.url, stage=error.stage)
            logger.error("%s", gave_up)
            self.event("on_error", error=gave_up, where="connect")
            self.attempt = 0
            self._failures.clear()
            if self.replacing:  # keep streaming on the current connection; try replacing it again later
                self.replacing = False
                if self._rotate_at <= now:  # aged: not again at once, but after the longest backoff
                    self._rotate_at = now + self.options.backoff_max
                return []
            self.state = "failed"
            self.last_error = gave_up
            return []
        self._backoff(self.attempt + 1, error, now)
        return []

    def ended(self, connection: Hashable, error: StreamError, now: float) -> list[Any]:
        """``connection`` ended with ``error``; a retired one ends quietly."""
        if connection is not self.connection or self.state == "stopped":
            return []
        self.connection = None
        self.last_error = error
        if isinstance(error, Stalled):
            self.counters["stalls"] += 1
            logger.warning("%s; %s", error, error.stack)
            self.event("on_stall", symbols=self.symbols, silent_for=error.silent_for, stage=error.stage,
                       stack=error.stack)
        else:
            logger.info("%s", error)
        self.event("on_disconnected", url=self.url, code=getattr(error, "code", None),
                   reason=getattr(error, "reason", str(error)), error=error)
        if self.replacing:  # the replacement under way becomes the way back
            self.replacing = False
            self.state = "connecting" if self._in_flight else self.state
            if self._in_flight:
                return []
        self.attempt = 0
        self._failures.clear()
        self._backoff(1, error, now)  # a short jittered pause, then reconnect
        return self.tick(now)

    def rotate(self, connection: Hashable, now: float) -> list[Any]:
        """Replace ``connection`` make-before-break (the server announced its shutdown)."""
        if connection is not self.connection or self.state != "streaming" or self.replacing:
            return []
        return self._start_replacing(now, "the server asked")

    def next_deadline(self) -> float:
        """When :meth:`tick` next has something to do (``inf``: only an input can change anything)."""
        if self.state == "stopped":
            return math.inf
        due = self._due if not self._in_flight else math.inf
        if self.state == "streaming" and not self.replacing:
            due = min(due, self._rotate_at)
        return due

    # Rules

    def _start_replacing(self, now: float, why: str) -> list[Any]:
        self.counters["rotations"] += 1
        logger.info("rotating connection %d to %s: %s", self.number, self.url, why)
        self.replacing = True
        self.attempt = 0
        self._due = now
        return self.tick(now)

    def _backoff(self, attempt: int, error: StreamError, now: float) -> None:
        """Wait a capped exponential delay with full jitter, at least any Retry-After."""
        o = self.options
        ceiling = min(o.backoff_max, o.backoff_initial * o.backoff_factor ** max(0, attempt - 2))
        delay = self.rng.uniform(0, ceiling)
        if isinstance(error, HandshakeRejected) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if not self.replacing:
            self.state = "backoff"
        self._due = now + delay
        self.event("on_reconnect_scheduled", attempt=attempt, delay=delay, error=error)
        logger.info("reconnecting in %.2f s (%s)", delay, self.attempt_text(attempt))

    def attempt_text(self, attempt: int) -> str:
        """Which attempt, for the log: counted since the last connection ended, so it says which that was."""
        limit = f"/{self.options.max_attempts}" if self.options.max_attempts else ""
        if not self.connects:
            return f"attempt {attempt}{limit}"
        return f"connection {self.connects + 1}, attempt {attempt}{limit} since connection {self.connects} ended"
