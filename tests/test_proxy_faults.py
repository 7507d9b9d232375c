"""OrderFlow through the fault proxy to the simulator: faults below the WebSocket layer, over ws:// and wss://.

Each fault must be noticed by the right stage or watchdog, the stream must recover, and the
delivered ids must be exactly the ids the market played from the first on: none lost, none twice.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from orderflow_plugin import ConnectionLost, OrderFlow, Stalled, StreamError
from orderflow_plugin.sim import FaultProxy, Pace, Simulator
from orderflow_plugin.wsconnection import READERS

from .flowhelpers import RECONNECT, TIMEOUT_FACTOR, TIMEOUTS, Events, make_flow

pytestmark = pytest.mark.parametrize("frame_reader", READERS, indirect=True)
SCHEMES = ["ws", "wss"]
ALARMS = ("on_error", "on_stall", "on_disconnected", "on_reconnect_scheduled")
FIRST_HANDSHAKE = {"ws": "http_upgrade", "wss": "tls"}  # the first stage a slow path delays past its deadline


@dataclass
class Rig:
    """A simulator, a proxy in front of it, and the URLs a stream uses to go through the proxy."""

    sim: Simulator
    proxy: FaultProxy
    ws_url: str
    rest_url: str
    ca_file: str | None
    reader: str

    def flow(self, events: Events, **kwargs: Any) -> OrderFlow:
        """An OrderFlow through the proxy with the test timings of make_flow."""
        flow = make_flow(self, events, ca_file=self.ca_file, **kwargs)
        assert flow.reader == self.reader
        return flow


@pytest.fixture
async def rig(orderflow_sim_factory, request: pytest.FixtureRequest, frame_reader: str) -> AsyncIterator[Any]:
    """Start a simulator (wss:// with TLS) and a proxy; the stream's URLs point at the proxy."""
    proxies: list[FaultProxy] = []

    async def start(scheme: str, **sim_kwargs: Any) -> Rig:
        ca_file = None
        if scheme == "wss":
            certificates = request.getfixturevalue("orderflow_tls")  # the shipped fixture: localhost, 127.0.0.1, ::1
            sim_kwargs["ssl_context"], ca_file = certificates.server_context(), certificates.ca_file
        sim = await orderflow_sim_factory(**sim_kwargs)
        host = "localhost" if scheme == "wss" else "127.0.0.1"  # the certificate names localhost
        # The stream connects to the first address a name resolves to: listen on that one (::1 on some hosts).
        address = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
        proxy = FaultProxy("127.0.0.1", sim.port, host=address)
        await proxy.start()
        proxies.append(proxy)
        rest = "https" if scheme == "wss" else "http"
        return Rig(sim, proxy, proxy.url(scheme, host), proxy.url(rest, host), ca_file, frame_reader)

    yield start
    for proxy in proxies:
        await proxy.stop()


def assert_exact(events: Events, sim: Simulator) -> None:
    """Delivered ids are the played ids from the first one on: nothing lost, nothing twice."""
    ids, played = events.ids(), sim.played_ids("BTCUSDT")
    assert ids and len(ids) <= len(played)
    duplicated = sorted(i for i, n in Counter(ids).items() if n > 1)
    lost = sorted(set(played[: played.index(ids[-1]) + 1]) - set(ids)) if ids[-1] in played else ["?"]
    assert (duplicated, lost) == ([], []), f"duplicated {duplicated[:20]}, lost {lost[:20]} ({len(lost)})"
    assert ids == played[: len(ids)]


def hooks(events: Events, *names: str) -> dict[str, int]:
    """How many times each of ``names`` was called."""
    return {name: len(events.of(name)) for name in names}


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_latency_tolerated_until_a_stage_deadline_names_it(rig, scheme: str) -> None:
    """Latency under the deadlines raises no alarm; a round trip over the first handshake's deadline fails that
    stage by name (http_upgrade over ws://, tls over wss://)."""
    r = await rig(scheme, pace=Pace(rate=300))
    first = FIRST_HANDSHAKE[scheme]
    r.proxy.latency(0.2)  # from the first byte: the handshake is delayed too
    events = Events()
    async with r.flow(events, timeouts=replace(TIMEOUTS, ping_interval=0.3, ping_timeout=1.0, tls=1.0, http_upgrade=1.0)):
        await events.until(lambda e: len(e.trades) >= 150, 10)
        assert hooks(events, *ALARMS) == dict.fromkeys(ALARMS, 0)
        r.proxy.latency(0.6)  # the next handshake's round trip takes 1.2 s
        r.proxy.reset()
        await events.until(lambda e: any(c["where"] == f"connect:{first}" for c in e.of("on_error")), 10)
        r.proxy.clear()
        after = len(events.trades)
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= after + 300, 10)
    assert events.of("on_connected")[0]["stage_timings"]["http_upgrade"] >= 0.4 - 0.01  # 0.2 s each way
    error = next(c["error"] for c in events.of("on_error") if c["where"].startswith("connect:"))
    assert isinstance(error, StreamError) and error.stage == first
    assert_exact(events, r.sim)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_bandwidth_cap_lags_without_loss_until_too_slow_to_connect(rig, scheme: str) -> None:
    """Under a cap below the market the stream lags but keeps its connection and loses nothing; a cap too
    low for the handshake fails its first stage by name; lifted, the stream catches up exactly."""
    r = await rig(scheme, pace=Pace(rate=500))  # about 100 kB/s of frames
    first = FIRST_HANDSHAKE[scheme]
    events = Events()
    async with r.flow(events, timeouts=replace(TIMEOUTS, ping_interval=0.3, ping_timeout=1.0, tls=1.0, http_upgrade=1.0)):
        await events.until(lambda e: len(e.trades) >= 100, 10)
        capped_at = len(events.trades)
        r.proxy.bandwidth(4000, "down")  # about 20 trades a second
        await events.until(lambda e: r.sim.happened("BTCUSDT") - len(e.trades) >= 300, 10)
        assert len(events.trades) > capped_at  # still flowing, only slower than the market
        assert hooks(events, *ALARMS) == dict.fromkeys(ALARMS, 0)  # a slow path is not a dead one
        r.proxy.bandwidth(100)  # the upgrade request (or the TLS hello) alone now takes over 2 s
        r.proxy.reset()
        await events.until(lambda e: any(c["where"] == f"connect:{first}" for c in e.of("on_error")), 10)
        r.proxy.clear()
        after = len(events.trades)
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= after + 300, 10)
    error = next(c["error"] for c in events.of("on_error") if c["where"].startswith("connect:"))
    assert isinstance(error, StreamError) and error.stage == first
    assert_exact(events, r.sim)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_hold_half_open_detected_then_recovers(rig, scheme: str) -> None:
    """A half-open path (sockets open, nothing passes, new connections too) is found by the keepalive or the
    silence watchdog in time; connects during the hold fail at a named stage; after release, exact recovery."""
    r = await rig(scheme, pace=Pace(rate=300))
    events = Events()
    async with r.flow(events, timeouts=replace(TIMEOUTS, stall=2.0, ping_interval=0.3, ping_timeout=0.6, tls=0.5,
                                               http_upgrade=0.5)):
        await events.until(lambda e: len(e.trades) >= 100, 10)
        held_at = time.monotonic()
        r.proxy.hold()  # new connections too: reconnecting cannot help until release
        await events.until(lambda e: e.of("on_disconnected"), 5)
        detected = time.monotonic() - held_at
        await events.until(lambda e: any(c["where"].startswith("connect:") for c in e.of("on_error")), 5)
        r.proxy.release()
        after = len(events.trades)
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= after + 300, 10)
    error = events.of("on_disconnected")[0]["error"]
    assert isinstance(error, Stalled) and error.stage in ("ping", "streaming")  # keepalive or silence watchdog
    assert events.of("on_stall")[0]["stage"] == error.stage
    assert detected < (2.0 + 1.0) * TIMEOUT_FACTOR  # within the stall timeout + 1 s, whichever watchdog fires
    during = [c["error"] for c in events.of("on_error") if c["where"].startswith("connect:")]
    assert {failure.stage for failure in during} == {"tls" if scheme == "wss" else "http_upgrade"}
    assert_exact(events, r.sim)


@pytest.mark.parametrize("watchdog", ["ping", "silence"])
async def test_one_connection_half_open_is_replaced(rig, watchdog: str) -> None:
    """The open connection goes half-open while new ones work (a NAT forgot it): the idle ping, or with
    pings off the silence watchdog, names it; the replacement backfills the hole exactly."""
    r = await rig("ws", pace=Pace(rate=300))
    timeouts = {"ping": replace(TIMEOUTS, ping_interval=0.3, ping_timeout=0.6, stall=5.0),
                "silence": replace(TIMEOUTS, ping_interval=0, stall=2.0)}[watchdog]
    events = Events()
    async with r.flow(events, timeouts=timeouts):
        await events.until(lambda e: len(e.trades) >= 100, 10)
        held_at = time.monotonic()
        r.proxy.hold(new=False)  # for good: only a new connection can go on
        await events.until(lambda e: e.of("on_disconnected"), 5)
        detected = time.monotonic() - held_at
        after = len(events.trades)
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= after + 300, 10)
    error = events.of("on_disconnected")[0]["error"]
    assert isinstance(error, Stalled) and error.stage == {"ping": "ping", "silence": "streaming"}[watchdog]
    assert events.of("on_stall")[0]["stage"] == error.stage
    assert detected < ({"ping": 0.3 + 0.6, "silence": 2.0 + 0.5}[watchdog] + 1.0) * TIMEOUT_FACTOR  # + REST grace
    assert [c for c in events.of("on_error") if c["where"].startswith("connect:")] == []
    assert_exact(events, r.sim)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_reset_seen_at_once_and_backfilled(rig, scheme: str) -> None:
    """An RST on the path is a ConnectionLost at once (not a watchdog); the trades lost with it are backfilled."""
    r = await rig(scheme, pace=Pace(rate=500))
    events = Events()
    async with r.flow(events, timeouts=replace(TIMEOUTS, stall=30.0)):
        await events.until(lambda e: len(e.trades) >= 100, 10)
        r.proxy.reset()
        after = len(events.trades)
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= after + 300, 10)
    assert r.proxy.record.faults == ["reset 1"]
    disconnected = events.of("on_disconnected")[0]
    assert isinstance(disconnected["error"], ConnectionLost) and disconnected["code"] is None
    assert disconnected["error"].stage == "streaming"
    assert events.at("on_connected")[1] - events.at("on_disconnected")[0] < 1.0 * TIMEOUT_FACTOR
    assert events.of("on_stall") == []
    assert_exact(events, r.sim)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_repeated_resets_lose_and_repeat_nothing(rig, scheme: str) -> None:
    """An RST every 0.3 s until five stream connections were cut: each is recovered from, the sequence is exact."""
    r = await rig(scheme, pace=Pace(rate=1000))
    events = Events()
    async with r.flow(events, timeouts=replace(TIMEOUTS, stall=30.0)):
        await events.until(lambda e: len(e.trades) >= 100, 10)
        r.proxy.schedule([(0.3, "reset")], repeat=True)
        await events.until(lambda e: len(e.of("on_disconnected")) >= 5, 10)  # some resets hit REST or nothing
        r.proxy.clear()
        after = len(events.trades)
        await events.until(lambda e: len(e.trades) >= after + 300, 10)
    assert all(isinstance(c["error"], ConnectionLost) for c in events.of("on_disconnected"))
    assert_exact(events, r.sim)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_byte_at_a_time_is_read_correctly(rig, scheme: str) -> None:
    """Every byte in its own write, from the handshake on: frames are reassembled without an error or alarm."""
    r = await rig(scheme, pace=Pace(rate=200))
    r.proxy.trickle(0.0)
    events = Events()
    async with r.flow(events):
        await events.until(lambda e: len(e.trades) >= 100, 15)
        link = max(r.proxy.record.links, key=lambda k: k.sent["down"])  # the stream's (start's exchangeInfo: REST)
        assert link.writes == link.sent and link.sent["down"] > 10_000  # one byte per write, both ways
        r.proxy.clear()
        after = len(events.trades)
        await events.until(lambda e: len(e.trades) >= after + 200, 10)
    assert hooks(events, *ALARMS) == dict.fromkeys(ALARMS, 0)
    assert len(r.sim.record.connections) == 1  # one connection did it all
    assert_exact(events, r.sim)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_refused_connects_retried_until_listening_again(rig, scheme: str) -> None:
    """While the port refuses, reconnects fail at tcp_connect and are retried with backoff; then recovery."""
    r = await rig(scheme, pace=Pace(rate=500))
    events = Events()
    async with r.flow(events, timeouts=replace(TIMEOUTS, stall=30.0)):
        await events.until(lambda e: len(e.trades) >= 100, 10)
        r.proxy.refuse(1.0)
        r.proxy.reset()  # the open connection goes, so the stream must connect while refused
        await r.proxy.wait_for(lambda record: "listen" in record.faults, 5 * TIMEOUT_FACTOR)
        after = len(events.trades)
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= after + 300, 10)
    assert isinstance(events.of("on_disconnected")[0]["error"], ConnectionLost)
    refused = [c for c in events.of("on_error") if c["where"] == "connect:tcp_connect"]
    assert refused and all(isinstance(c["error"], StreamError) and c["error"].stage == "tcp_connect" for c in refused)
    assert len(events.of("on_reconnect_scheduled")) >= 2
    assert len(events.of("on_connected")) == 2  # no connection got through while refused
    assert_exact(events, r.sim)



async def test_refused_replacement_keeps_the_open_connection_streaming(rig) -> None:
    """A make-before-break rotation whose new connects are refused keeps the old connection delivering:
    every refusal is named at tcp_connect, and once listening again the rotation completes without a gap."""
    r = await rig("ws", pace=Pace(rate=500))
    events = Events()
    async with r.flow(events, reconnect=replace(RECONNECT, max_connection_age=0.3)) as flow:
        await events.until(lambda e: len(e.trades) >= 100, 10)
        r.proxy.refuse(1.0)
        await events.until(lambda e: any(c["where"] == "connect:tcp_connect" for c in e.of("on_error")), 5)
        during = len(events.trades)
        await r.proxy.wait_for(lambda record: "listen" in record.faults, 5 * TIMEOUT_FACTOR)
        assert len(events.trades) > during + 100  # the open connection kept delivering while refused
        connected = len(events.of("on_connected"))
        await events.until(lambda e: len(e.of("on_connected")) > connected and len(e.trades) >= during + 600, 10)
    assert flow.counters["rotations"] >= 1  # the refused one, completed once listening
    assert {c["where"] for c in events.of("on_error")} == {"connect:tcp_connect"}
    assert events.of("on_gap") == []
    assert all(c["reason"] == "rotated" and c["error"] is None for c in events.of("on_disconnected"))  # retired
    assert_exact(events, r.sim)


async def test_dead_path_with_pings_off_and_rest_dead_too_is_replaced(rig) -> None:
    """Pings off and REST unreachable over the same dead path: the silent connection is still replaced."""
    r = await rig("ws", pace=Pace(rate=300))
    events = Events()
    async with r.flow(events, timeouts=replace(TIMEOUTS, ping_interval=0, stall=2.0, rest=0.5)):
        await events.until(lambda e: len(e.trades) >= 100, 10)
        held_at = time.monotonic()
        r.proxy.hold()  # everything, new connections and REST too
        await events.until(lambda e: e.of("on_disconnected"), 8)
        detected = time.monotonic() - held_at
        r.proxy.release()
        after = len(events.trades)
        await events.until(lambda e: len(e.trades) >= after + 300, 15)
    error = events.of("on_disconnected")[0]["error"]
    assert isinstance(error, Stalled) and error.stage == "streaming" and "REST cannot tell either" in str(error)
    assert detected < (2.0 + 0.5 + 1.5) * TIMEOUT_FACTOR
    assert_exact(events, r.sim)
