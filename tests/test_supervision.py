"""Nothing ends supervision: whatever a connect stage raises is named, reported, retried (issue #15)."""

from __future__ import annotations

import itertools
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from orderflow_plugin import ConnectFailed, GaveUp, OrderFlow, Reconnect, bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario
from orderflow_plugin.supervisor import Supervisor
from orderflow_plugin.wsconnection import STAGES, WsConnection

from .flowhelpers import TIMEOUT_FACTOR, Events, make_flow, require_unshare

FIRST = bundled_tape().rows[0].id
ROOT = Path(__file__).resolve().parent.parent

# One of each kind a real network or library raises; each must end as a named, retried StreamError.
FAULTS = {
    "gaierror": lambda: socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    "refused": lambda: ConnectionRefusedError(111, "Connection refused"),
    "certificate": lambda: ssl.SSLCertVerificationError(1, "certificate verify failed"),
    "timeout": lambda: TimeoutError("the library's own timeout"),
    "runtime": lambda: RuntimeError("a library bug"),
}


@pytest.fixture
async def tls_sim(orderflow_sim_factory, orderflow_tls):
    """A simulator over wss:// and https:// on localhost; yields (sim, ca_file)."""
    return await orderflow_sim_factory(pace=Pace(rate=1000), tls=True), orderflow_tls.ca_file


def inject(monkeypatch: pytest.MonkeyPatch, stage: str, make_exc, times: int) -> list[BaseException]:
    """Raise ``make_exc()`` as a connection enters ``stage``, for the first ``times`` attempts."""
    raised: list[BaseException] = []
    enter = WsConnection.enter

    def failing_enter(self: WsConnection, name: str) -> None:
        enter(self, name)
        if name == stage and len(raised) < times:
            raised.append(make_exc())
            raise raised[-1]

    monkeypatch.setattr(WsConnection, "enter", failing_enter)
    return raised


@pytest.mark.parametrize("kind", FAULTS)
@pytest.mark.parametrize("stage", STAGES)
async def test_any_exception_in_any_stage_is_named_and_retried(tls_sim, monkeypatch, stage: str, kind: str,
                                                               frame_reader: str) -> None:
    """Each exception type raised in each connect stage is a StreamError naming the stage; trades then flow."""
    sim, ca_file = tls_sim
    raised = inject(monkeypatch, stage, FAULTS[kind], times=2)
    events = Events()
    async with OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, ca_file=ca_file,
                         plugins=_manager(events), reconnect=Reconnect(backoff_initial=0.05, backoff_max=0.1),
                         reader=frame_reader) as flow:
        await events.until(lambda e: len(e.trades) >= 50, 15)
        health = flow.health()
    failures = [c for c in events.of("on_error") if c["where"].startswith("connect:")]
    assert len(raised) == 2 and len(failures) == 2
    for call, cause in zip(failures, raised, strict=True):
        error = call["error"]
        assert isinstance(error, ConnectFailed) and error.stage == stage and call["where"] == f"connect:{stage}"
        assert error.__cause__ is cause and "localhost" in str(error)
    assert len(events.of("on_reconnect_scheduled")) >= 2
    ids = events.ids()
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert health["state"] == "running" and health["connections"][0]["state"] == "streaming"


async def test_a_crashed_supervisor_is_reported_and_restarted(orderflow_sim_factory, monkeypatch) -> None:
    """A bug that ends a shard's task is reported with its traceback and the shard starts again."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    calls = []
    start = Supervisor.start

    def crashing_start(self: Supervisor, now: float) -> list:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug in the shell")
        return start(self, now)

    monkeypatch.setattr(Supervisor, "start", crashing_start)
    events = Events()
    async with make_flow(sim, events) as flow:
        await events.until(lambda e: len(e.trades) >= 50, 10)
        health = flow.health()
    crash = [c for c in events.of("on_error") if c["where"] == "task:orderflow shard 1"]
    assert len(crash) == 1 and isinstance(crash[0]["error"].__cause__, KeyError)
    assert "KeyError" in crash[0]["error"].stack and "crashing_start" in crash[0]["error"].stack
    assert health["connections"][0]["state"] == "streaming"
    assert health["connections"][0]["last_error"]["stage"] == "supervise"


async def test_health_shows_no_stage_clock_while_backing_off(unused_tcp_port: int) -> None:
    """Between attempts health says backoff with the last error, never a stage clock that keeps growing."""
    events = Events()
    flow = OrderFlow(["BTCUSDT"], ws_url=f"ws://127.0.0.1:{unused_tcp_port}", plugins=_manager(events),
                     reconnect=Reconnect(backoff_initial=5.0, backoff_max=5.0, backoff_factor=1.0))
    async with flow:
        await events.until(lambda e: len(e.of("on_reconnect_scheduled")) >= 1, 5)  # sent once in backoff
        connection = flow.health()["connections"][0]
    assert connection["state"] == "backoff"
    assert connection["stage"] is None and connection["stage_for_s"] is None
    assert connection["last_error"]["stage"] == "tcp_connect"
    assert "refused" in connection["last_error"]["message"]


async def test_gave_up_shows_failed_in_health(unused_tcp_port: int) -> None:
    """After reconnect.max_attempts the stream's health says failed, with GaveUp as the last error."""
    events = Events()
    flow = OrderFlow(["BTCUSDT"], ws_url=f"ws://127.0.0.1:{unused_tcp_port}", plugins=_manager(events),
                     reconnect=Reconnect(backoff_initial=0.01, backoff_max=0.01, max_attempts=3))
    async with flow:
        await events.until(lambda e: any(isinstance(c["error"], GaveUp) for c in e.of("on_error")), 5)
        health = flow.health()
    assert health["state"] == "failed" and health["connections"][0]["state"] == "failed"
    assert health["connections"][0]["last_error"]["type"] == "GaveUp"


def test_cli_stream_without_network_retries_resolve_and_exits_cleanly() -> None:
    """With no network at all the CLI keeps retrying, each failure an error event at stage resolve, summary last."""
    require_unshare()
    command = ["unshare", "-n", str(ROOT / ".venv/bin/orderflow"), "stream", "--ws-url",
               "ws://orderflow-test.invalid:9443", "--rest-url", "http://orderflow-test.invalid:9443", "--json",
               "--duration", "6"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ORDERFLOW_ENV": "testing"})
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30 * TIMEOUT_FACTOR
    import json

    events = [json.loads(line) for line in done.stdout.splitlines()]
    attempts = [e for e in events if e["event"] == "connect-attempt"]
    errors = [e for e in events if e["event"] == "error" and e["where"].startswith("connect")]
    assert len(attempts) >= 3 and len(errors) >= 3
    assert all(e["error"]["stage"] == "resolve" for e in errors)
    assert events[-1]["event"] == "summary"
    assert "Traceback" not in done.stderr


def _manager(events: Events):
    from orderflow_plugin import PluginManager

    manager = PluginManager()
    manager.register(events, name="events")
    return manager


async def test_a_failing_keepalive_takes_its_connection_with_it_by_name(orderflow_sim_factory, monkeypatch) -> None:
    """The keepalive raising (a bug) is not a watchdog quietly gone: the connection ends, named, and is replaced."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    keepalive, calls = WsConnection.keepalive, []

    async def failing_keepalive(self: WsConnection, idle: float, timeout: float) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the keepalive")
        await keepalive(self, idle, timeout)

    monkeypatch.setattr(WsConnection, "keepalive", failing_keepalive)
    events = Events()
    async with make_flow(sim, events):
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= 300, 10)
    error = events.of("on_disconnected")[0]["error"]
    assert "failing_keepalive failed" in str(error) and isinstance(error.__cause__, RuntimeError)
    ids = events.ids()
    assert ids == list(range(ids[0], ids[0] + len(ids)))


async def test_a_failing_silence_check_is_reported_and_the_watchdog_goes_on(orderflow_sim_factory, monkeypatch):
    """A bug in one look of the silence watchdog is reported; the next looks still run."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    events = Events()
    flow = make_flow(sim, events)
    check, looks = flow.silence.check, []

    def failing_once(now: float) -> None:
        looks.append(now)
        if len(looks) == 1:
            raise KeyError("a bug in the watchdog")
        check(now)

    monkeypatch.setattr(flow.silence, "check", failing_once)
    async with flow:
        await events.until(lambda e: len(looks) >= 3, 5)
    errors = [c for c in events.of("on_error") if c["where"] == "task:orderflow ticker"]
    assert len(errors) == 1 and isinstance(errors[0]["error"], KeyError)


@pytest.mark.parametrize("news", ["opened", "ended"])
async def test_a_bug_met_in_another_task_restarts_the_shard(orderflow_sim_factory, monkeypatch, news) -> None:
    """The machine hears of an open (in the opening task) or an ending (in a done callback) outside the shard's
    own task: a bug it meets there still restarts the shard, which streams again. It used to hang for good."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000), scenario=Scenario([[Fault("reset_after", after=100)]]))
    calls = []
    original = getattr(Supervisor, news)

    def crashing(self: Supervisor, *args: object) -> list:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError(f"a bug in Supervisor.{news}")
        return original(self, *args)

    monkeypatch.setattr(Supervisor, news, crashing)
    events = Events()
    async with make_flow(sim, events) as flow:
        crashed = lambda e: any(c["where"] == "task:orderflow shard 1" for c in e.of("on_error"))  # noqa: E731
        await events.until(crashed, 10)
        await events.until(lambda e: len(e.of("on_connected")) >= 2 and len(e.trades) >= 150, 10)
        health = flow.health()
    crash = next(c["error"] for c in events.of("on_error") if c["where"] == "task:orderflow shard 1")
    assert isinstance(crash.__cause__, KeyError) and f"a bug in Supervisor.{news}" in str(crash)
    assert health["connections"][0]["state"] == "streaming"
    assert contiguous_or_reported(events)


def contiguous_or_reported(events: Events) -> bool:
    """Delivered ids increase; any hole is reported as a gap."""
    ids = events.ids()
    holes = [(a + 1, b - 1) for a, b in itertools.pairwise(ids) if b != a + 1]
    reported = {(g["first"], g["last"]) for g in events.of("on_gap")}
    return all(b > a for a, b in itertools.pairwise(ids)) and all(h in reported for h in holes)
