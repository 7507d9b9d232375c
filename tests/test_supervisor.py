"""The connection state machine as tables: backoff, Retry-After, giving up, rotation, the open limit.

No event loop, no socket, no sleep: every input carries its ``now``, and the jitter comes from a
seeded ``random.Random`` that a twin generator replays to know each delay exactly.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from orderflow_plugin.errors import (
    ConnectFailed,
    ConnectionLost,
    GaveUp,
    HandshakeRejected,
    StageTimeout,
    Stalled,
    StreamError,
)
from orderflow_plugin.options import Reconnect
from orderflow_plugin.supervisor import Connect, OpenLimiter, Retire, Supervisor

URL = "wss://stream.example:9443"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
OLD, NEW = "conn-old", "conn-new"  # any hashable stands for a connection


class Events:
    """The machine's event callback: every (hook, kwargs), in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, hook: str, **kwargs: Any) -> None:
        self.calls.append((hook, kwargs))

    def hooks(self) -> list[str]:
        return [hook if hook != "on_error" else f"on_error:{kw['where']}" for hook, kw in self.calls]

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [kw for h, kw in self.calls if h == hook]

    def clear(self) -> None:
        self.calls.clear()


def machine(seed: int = 0, *, limiter: OpenLimiter | None = None, **reconnect: Any) -> tuple[Supervisor, Events]:
    events = Events()
    options = Reconnect(**reconnect)
    supervisor = Supervisor(1, SYMBOLS, URL, options, event=events, rng=random.Random(seed),
                            limiter=limiter or OpenLimiter(options.connections_per_5min))
    return supervisor, events


def refused(stage: str = "tcp_connect") -> StreamError:
    return ConnectFailed(f"TCP connect to stream.example:9443 failed at {stage}", url=URL, stage=stage)


def rejected(retry_after: float | None) -> StreamError:
    return HandshakeRejected("handshake answered HTTP 429", url=URL, status=429, retry_after=retry_after)


def dropped() -> StreamError:
    return ConnectionLost("connection dropped", url=URL, code=1006, reason="abnormal closure")


def streaming(seed: int = 0, **reconnect: Any) -> tuple[Supervisor, Events]:
    """A machine streaming on OLD since time 0, its events cleared."""
    supervisor, events = machine(seed, **reconnect)
    assert supervisor.start(0.0) == [Connect(1, False)]
    assert supervisor.opened(OLD, 0.0) == []
    events.clear()
    return supervisor, events


# Backoff


@pytest.mark.parametrize(("options", "ceilings"), [
    pytest.param({}, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0], id="defaults: 0.5 s doubling, capped at 30 s"),
    pytest.param({"backoff_initial": 1.0, "backoff_factor": 3.0, "backoff_max": 10.0}, [1.0, 3.0, 9.0, 10.0, 10.0],
                 id="factor 3, capped at 10 s"),
    pytest.param({"backoff_initial": 0.25, "backoff_factor": 1.0, "backoff_max": 5.0}, [0.25, 0.25, 0.25],
                 id="factor 1: a constant ceiling"),
    pytest.param({"backoff_initial": 8.0, "backoff_factor": 2.0, "backoff_max": 5.0}, [5.0, 5.0],
                 id="initial above max: max"),
])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_backoff_ceiling_per_attempt(options: dict[str, float], ceilings: list[float], seed: int) -> None:
    """Attempt n waits uniform(0, min(max, initial * factor ** (n - 2))), drawn from the machine's rng."""
    supervisor, events = machine(seed, **options)
    twin = random.Random(seed)
    now = 0.0
    assert supervisor.start(now) == [Connect(1, False)]
    for attempt, ceiling in enumerate(ceilings, start=2):
        assert supervisor.open_failed(refused(), now) == []
        delay = twin.uniform(0, ceiling)
        scheduled = events.of("on_reconnect_scheduled")[-1]
        assert (scheduled["attempt"], scheduled["delay"]) == (attempt, delay) and 0 <= delay <= ceiling
        assert supervisor.state == "backoff" and supervisor.next_deadline() == now + delay
        if delay > 0:
            assert supervisor.tick(now + delay / 2) == []
        now += delay
        assert supervisor.tick(now) == [Connect(attempt, False)]
        assert events.of("on_connect_attempt")[-1] == {"attempt": attempt, "url": URL, "symbols": SYMBOLS}
        assert supervisor.state == "connecting"


def test_backoff_is_full_jitter() -> None:
    """Delays spread over the whole of [0, ceiling]: near zero for some seeds, near the ceiling for others."""
    delays = []
    for seed in range(300):
        supervisor, events = machine(seed, backoff_initial=4.0)
        supervisor.start(0.0)
        supervisor.open_failed(refused(), 0.0)
        delays.append(events.of("on_reconnect_scheduled")[0]["delay"])
    assert all(0 <= d <= 4.0 for d in delays)
    assert min(delays) < 0.1 and max(delays) > 3.9


@pytest.mark.parametrize(("error", "initial", "expected"), [
    pytest.param(rejected(7.0), 0.5, "retry-after", id="Retry-After above the backoff wins"),
    pytest.param(rejected(0.01), 30.0, "jitter", id="Retry-After below the backoff: the backoff"),
    pytest.param(rejected(None), 0.5, "jitter", id="HTTP error without Retry-After: the backoff"),
    pytest.param(refused(), 0.5, "jitter", id="any other failure: the backoff"),
])
def test_retry_after_raises_the_delay(error: StreamError, initial: float, expected: str) -> None:
    """A HandshakeRejected Retry-After is a floor under the jittered delay, never a ceiling."""
    supervisor, events = machine(3, backoff_initial=initial)
    supervisor.start(10.0)
    supervisor.open_failed(error, 10.0)
    jitter = random.Random(3).uniform(0, initial)
    delay = {"retry-after": getattr(error, "retry_after", None), "jitter": jitter}[expected]
    assert events.of("on_reconnect_scheduled") == [{"attempt": 2, "delay": delay, "error": error}]
    assert events.of("on_error") == [{"error": error, "where": f"connect:{error.stage}"}]
    assert supervisor.next_deadline() == 10.0 + delay
    assert supervisor.tick(10.0 + delay) == [Connect(2, False)]


@pytest.mark.parametrize(("error", "where"), [
    pytest.param(refused("resolve"), "connect:resolve", id="resolve"),
    pytest.param(StageTimeout("TLS did not complete", url=URL, stage="tls", deadline=5.0), "connect:tls", id="tls"),
    pytest.param(rejected(None), "connect:http_upgrade", id="http_upgrade"),
    pytest.param(refused("first_message"), "connect:first_message", id="first_message"),
])
def test_open_failure_reported_with_its_stage(error: StreamError, where: str) -> None:
    """A failed Connect is reported as on_error with where=connect:<stage>, then a reconnect is scheduled."""
    supervisor, events = machine()
    supervisor.start(0.0)
    supervisor.open_failed(error, 0.0)
    assert events.hooks() == ["on_connect_attempt", f"on_error:{where}", "on_reconnect_scheduled"]
    assert supervisor.last_error is error


# Giving up


@pytest.mark.parametrize(("max_attempts", "hooks"), [
    pytest.param(1, ["on_connect_attempt", "on_error:connect:tls", "on_error:connect"], id="max_attempts 1"),
    pytest.param(3, ["on_connect_attempt", "on_error:connect:tls", "on_reconnect_scheduled"] * 2
                 + ["on_connect_attempt", "on_error:connect:tls", "on_error:connect"], id="max_attempts 3"),
])
def test_max_attempts_gives_up_once(max_attempts: int, hooks: list[str]) -> None:
    """After max_attempts failed Connects, GaveUp is reported once and the machine stays failed."""
    supervisor, events = machine(max_attempts=max_attempts)
    now = 0.0
    actions = supervisor.start(now)
    for attempt in range(1, max_attempts + 1):
        assert actions == [Connect(attempt, False)]
        assert supervisor.open_failed(refused("tls"), now) == []
        if attempt < max_attempts:
            now = supervisor.next_deadline()
            actions = supervisor.tick(now)
    assert events.hooks() == hooks
    (gave_up,) = [kw["error"] for kw in events.of("on_error") if kw["where"] == "connect"]
    assert isinstance(gave_up, GaveUp) and f"after {max_attempts} attempts" in str(gave_up)
    assert "attempt 1: " in str(gave_up) and gave_up.stage == "tls" and gave_up.url == URL
    assert supervisor.state == "failed" and supervisor.last_error is gave_up
    assert supervisor.next_deadline() == math.inf
    assert supervisor.tick(1e9) == [] and len(events.calls) == len(hooks)


# Endings


@pytest.mark.parametrize(("error", "hooks", "stalls"), [
    pytest.param(dropped(), ["on_disconnected", "on_reconnect_scheduled"], 0, id="connection lost"),
    pytest.param(Stalled("silent for 4.0 s", url=URL, stage="ping", silent_for=4.0),
                 ["on_stall", "on_disconnected", "on_reconnect_scheduled"], 1, id="stalled: on_stall first"),
])
def test_an_ending_backs_off_then_connects_from_attempt_one(error: StreamError, hooks: list[str],
                                                            stalls: int) -> None:
    """An open connection ending is reported, then a short jittered pause, then Connect attempt 1."""
    supervisor, events = machine(5, backoff_initial=0.5)
    supervisor.start(0.0)
    supervisor.open_failed(refused(), 0.0)  # the attempt count from an earlier failure does not carry over
    supervisor.tick(supervisor.next_deadline())
    supervisor.opened(OLD, 1.0)
    events.clear()
    assert supervisor.ended(OLD, error, 10.0) == []
    assert events.hooks() == hooks
    assert events.of("on_disconnected") == [{"url": URL, "code": getattr(error, "code", None),
                                             "reason": getattr(error, "reason", str(error)), "error": error}]
    if stalls:
        assert events.of("on_stall") == [{"symbols": SYMBOLS, "silent_for": 4.0, "stage": "ping", "stack": ""}]
    scheduled = events.of("on_reconnect_scheduled")[0]
    assert scheduled["attempt"] == 1 and 0 <= scheduled["delay"] <= 0.5
    assert supervisor.state == "backoff" and supervisor.connection is None
    assert supervisor.next_deadline() == 10.0 + scheduled["delay"]
    assert supervisor.tick(supervisor.next_deadline()) == [Connect(1, False)]
    assert supervisor.opened(NEW, 11.0) == []
    assert supervisor.state == "streaming" and supervisor.connection == NEW
    assert supervisor.counters == {"reconnects": 1, "stalls": stalls, "rotations": 0}


def test_a_stale_connection_ends_quietly() -> None:
    """An ending of a connection that is not the current one changes nothing and reports nothing."""
    supervisor, events = streaming()
    assert supervisor.ended("some-other", dropped(), 5.0) == []
    assert events.calls == [] and supervisor.state == "streaming" and supervisor.connection == OLD


# Rotation


def test_connection_age_replaces_make_before_break() -> None:
    """At max_connection_age a replacement opens while the old streams; once open, the old is retired."""
    supervisor, events = streaming(max_connection_age=100.0)
    assert supervisor.next_deadline() == 100.0
    assert supervisor.tick(99.9) == []
    assert supervisor.tick(100.0) == [Connect(1, True)]
    assert supervisor.state == "streaming" and supervisor.connection == OLD  # the old one still delivers
    assert events.of("on_connect_attempt") == [{"attempt": 1, "url": URL, "symbols": SYMBOLS}]
    assert supervisor.tick(100.5) == []  # nothing while the replacement is under way
    assert supervisor.opened(NEW, 101.0) == [Retire(OLD)]
    assert supervisor.connection == NEW and supervisor.next_deadline() == 201.0
    assert supervisor.ended(OLD, dropped(), 101.5) == []  # the retired one ends quietly
    assert events.hooks() == ["on_connect_attempt"]
    assert supervisor.counters == {"reconnects": 0, "stalls": 0, "rotations": 1}


def test_old_ending_while_replacing_makes_the_replacement_the_way_back() -> None:
    """The old connection ending while its replacement is opening: that replacement is how the shard comes back."""
    supervisor, events = streaming(max_connection_age=100.0)
    supervisor.tick(100.0)
    events.clear()
    assert supervisor.ended(OLD, dropped(), 100.5) == []
    assert events.hooks() == ["on_disconnected"]  # no second Connect: one is under way
    assert supervisor.state == "connecting" and supervisor.connection is None
    assert supervisor.next_deadline() == math.inf  # the Connect in flight answers next
    assert supervisor.opened(NEW, 101.0) == []  # nothing to retire
    assert supervisor.state == "streaming" and supervisor.connection == NEW
    assert supervisor.counters["reconnects"] == 1


def test_old_ending_while_the_replacement_backs_off() -> None:
    """The old connection ending while the replacement waits to retry: an ordinary reconnect from attempt 1."""
    supervisor, events = streaming(max_connection_age=100.0)
    supervisor.tick(100.0)
    supervisor.open_failed(refused(), 100.2)  # the replacement backs off; the old one streams on
    assert supervisor.state == "streaming" and supervisor.connection == OLD
    events.clear()
    assert supervisor.ended(OLD, dropped(), 100.3) == []
    assert events.hooks() == ["on_disconnected", "on_reconnect_scheduled"]
    assert events.of("on_reconnect_scheduled")[0]["attempt"] == 1
    assert supervisor.state == "backoff" and supervisor.connection is None and not supervisor.replacing
    assert supervisor.tick(supervisor.next_deadline()) == [Connect(1, False)]


def test_a_replacement_that_gives_up_keeps_the_old_connection() -> None:
    """A replacement spending max_attempts reports GaveUp but the shard goes on streaming on the old one."""
    supervisor, events = streaming(max_attempts=1, max_connection_age=100.0)
    assert supervisor.tick(100.0) == [Connect(1, True)]
    assert supervisor.open_failed(refused("tls"), 100.5) == []
    assert events.hooks() == ["on_connect_attempt", "on_error:connect:tls", "on_error:connect"]
    assert supervisor.state == "streaming" and supervisor.connection == OLD and not supervisor.replacing


def test_a_rotation_that_gives_up_is_not_retried() -> None:
    """serverShutdown's replacement giving up: the old connection streams on and nothing is retried before it ends."""
    supervisor, events = streaming(max_attempts=1)
    assert supervisor.rotate(OLD, 50.0) == [Connect(1, True)]
    supervisor.open_failed(refused("tls"), 50.5)
    assert supervisor.state == "streaming" and supervisor.connection == OLD
    assert supervisor.tick(51.0) == [] and supervisor.next_deadline() > 51.0
    assert events.hooks() == ["on_connect_attempt", "on_error:connect:tls", "on_error:connect"]


def test_an_aged_replacement_that_gives_up_is_not_retried_at_once() -> None:
    """After an age replacement gives up, the next replacement attempt does not start at the same instant."""
    supervisor, _ = streaming(max_attempts=1, max_connection_age=100.0)
    supervisor.tick(100.0)
    supervisor.open_failed(refused("tls"), 101.0)
    assert supervisor.next_deadline() > 101.0
    assert supervisor.tick(101.0) == []


def test_rotate_while_streaming() -> None:
    """rotate() (the server announced serverShutdown) replaces the current connection make-before-break."""
    supervisor, events = streaming()
    assert supervisor.rotate(OLD, 50.0) == [Connect(1, True)]
    assert supervisor.counters["rotations"] == 1 and supervisor.connection == OLD
    assert events.hooks() == ["on_connect_attempt"]
    assert supervisor.opened(NEW, 50.2) == [Retire(OLD)]
    assert supervisor.connection == NEW and supervisor.next_deadline() == 50.2 + Reconnect().max_connection_age


def _replacing() -> Supervisor:
    supervisor, _ = streaming()
    supervisor.rotate(OLD, 50.0)
    return supervisor


def _backing_off() -> Supervisor:
    supervisor, _ = streaming()
    supervisor.ended(OLD, dropped(), 50.0)
    return supervisor


@pytest.mark.parametrize(("setup", "connection"), [
    pytest.param(lambda: streaming()[0], "some-other", id="not the current connection"),
    pytest.param(_replacing, OLD, id="a replacement already under way"),
    pytest.param(_backing_off, OLD, id="not streaming (backing off)"),
])
def test_rotate_ignored(setup: Any, connection: str) -> None:
    """rotate() does nothing unless it names the current connection, streaming, with no replacement under way."""
    supervisor = setup()
    rotations = supervisor.counters["rotations"]
    assert supervisor.rotate(connection, 60.0) == []
    assert supervisor.counters["rotations"] == rotations


# The open limit


@pytest.mark.parametrize(("per_5min", "opens", "waits"), [
    pytest.param(3, [0, 10, 20, 30], [0, 0, 0, 270], id="fourth of three waits for the oldest to be 300 s old"),
    pytest.param(3, [0, 10, 20, 300], [0, 0, 0, 0], id="the oldest exactly 300 s old: allowed"),
    pytest.param(1, [0, 299.5, 300, 301], [0, 0.5, 0, 299], id="one per 5 min"),
    pytest.param(2, [0, 0, 0, 100, 300, 300], [0, 0, 300, 200, 0, 0], id="a refused open is not counted"),
])
def test_open_limiter(per_5min: int, opens: list[float], waits: list[float]) -> None:
    """The (per_5min+1)-th open within 300 s waits exactly until the oldest open is 300 s old."""
    limiter = OpenLimiter(per_5min)
    assert [limiter.wait(now) for now in opens] == waits


def test_open_limit_is_shared_by_shards() -> None:
    """A second shard over the limit waits for the shared window, then connects at exactly that time."""
    limiter = OpenLimiter(1)
    first, _ = machine(limiter=limiter)
    second, events = machine(limiter=limiter)
    assert first.start(0.0) == [Connect(1, False)]
    assert second.start(10.0) == []
    assert second.next_deadline() == 300.0 and events.calls == []
    assert second.tick(299.0) == []
    assert second.tick(300.0) == [Connect(1, False)]


# Always a next step


def _walk(seed: int) -> None:
    """Random inputs in a valid order; after each one the machine has a next step unless failed or stopped."""
    rng = random.Random(seed)
    options = {"max_attempts": rng.choice([0, 0, 1, 3]), "max_connection_age": rng.choice([5.0, 60.0]),
               "connections_per_5min": rng.choice([2, 300])}
    supervisor, _ = machine(seed, **options)
    in_flight, live, now, made = 0, [], 0.0, 0

    def carry_out(actions: list[Any]) -> None:
        nonlocal in_flight
        in_flight += sum(type(a) is Connect for a in actions)
        assert in_flight <= 1, "two Connects in flight for one shard"

    carry_out(supervisor.start(now))
    for _ in range(80):
        roll = rng.random()
        if in_flight and roll < 0.4:
            in_flight -= 1
            if rng.random() < 0.5:
                made += 1
                live.append(f"c{made}")
                carry_out(supervisor.opened(live[-1], now))
            else:
                carry_out(supervisor.open_failed(rng.choice([refused(), rejected(rng.choice([None, 2.0]))]), now))
        elif live and roll < 0.6:
            connection = live.pop(rng.randrange(len(live)))
            carry_out(supervisor.ended(connection, dropped(), now))
        elif live and roll < 0.65:
            carry_out(supervisor.rotate(rng.choice(live), now))
        else:
            deadline = supervisor.next_deadline()
            now = deadline if deadline < math.inf and rng.random() < 0.7 else now + rng.random() * 3
            carry_out(supervisor.tick(now))
        if not in_flight and supervisor.state not in ("failed", "stopped"):
            assert supervisor.next_deadline() < math.inf, (seed, supervisor.state)
        if supervisor.state == "backoff":
            assert not in_flight and supervisor.next_deadline() < math.inf


@pytest.mark.parametrize("seeds", [range(0, 250), range(250, 500)], ids=["seeds 0-249", "seeds 250-499"])
def test_never_idle_without_a_next_step(seeds: range) -> None:
    """next_deadline() is never inf while nothing is in flight (backoff included), over random input orders."""
    for seed in seeds:
        _walk(seed)


# Stopping


@pytest.mark.parametrize("setup", [
    pytest.param(lambda: streaming()[0], id="streaming"),
    pytest.param(_backing_off, id="backing off"),
    pytest.param(_replacing, id="replacing"),
])
def test_stop_makes_it_inert(setup: Any) -> None:
    """After stop() no tick, ending or rotation does anything or reports anything."""
    supervisor = setup()
    supervisor.stop()
    events = Events()
    supervisor.event = events
    assert supervisor.state == "stopped" and supervisor.next_deadline() == math.inf
    assert supervisor.tick(1e9) == []
    assert supervisor.ended(OLD, dropped(), 1e9) == []
    assert supervisor.rotate(OLD, 1e9) == []
    assert events.calls == [] and supervisor.state == "stopped"


@pytest.mark.parametrize("answer", ["opened", "open_failed"])
def test_stop_with_a_connect_in_flight_stays_inert(answer: str) -> None:
    """The answer to a Connect that was in flight at stop() leaves the machine stopped, with no next step."""
    supervisor, _ = machine()
    supervisor.start(0.0)
    supervisor.stop()
    if answer == "opened":
        assert supervisor.opened(NEW, 1.0) == []
    else:
        assert supervisor.open_failed(refused(), 1.0) == []
    assert supervisor.state == "stopped" and supervisor.next_deadline() == math.inf
    assert supervisor.tick(1e9) == []
