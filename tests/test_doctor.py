"""`orderflow doctor`: all PASS against the simulator (also over TLS), and every failure a FAIL line, fast, never a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orderflow_plugin import cli, load_settings
from orderflow_plugin import doctor as doctor_module
from orderflow_plugin.sim import Fault, Pace, Scenario

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR, require_unshare

# Every wall-clock limit below is multiplied by this (slow CI machines), as websockets does.
DEADLINES = {"ORDERFLOW_TIMEOUTS__HTTP_UPGRADE": "1", "ORDERFLOW_TIMEOUTS__TCP_CONNECT": "1",
             "ORDERFLOW_TIMEOUTS__FIRST_MESSAGE": "2", "ORDERFLOW_TIMEOUTS__REST": "1"}
SUM_OF_DEADLINES = 5 + 1 + 5 + 1 + 10 + 2 + 4 * 1  # resolve, tcp, tls, upgrade, subscribed, first, REST x4
STREAM_CHECKS = ["stream DNS", "stream TCP connect", "stream TLS handshake", "stream HTTP upgrade",
                 "stream subscription", "first aggTrade"]
REST_CHECKS = ["REST DNS", "REST TCP connect", "REST ping", "REST aggTrades", "clock offset"]
ALL_CHECKS = ["settings", "install", "plugins", *STREAM_CHECKS, *REST_CHECKS, "event loop lag"]


def clean_environment(**overrides: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    return {**environ, "ORDERFLOW_ENV": "testing", **overrides}


async def doctor(ws_url: str, rest_url: str, *extra: str, deadlines: bool = True,
                 env: dict[str, str] | None = None) -> tuple[int, list[dict], float]:
    environ = clean_environment(**(DEADLINES if deadlines else {}), **(env or {}))
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow_plugin", "doctor", "--ws-url", ws_url, "--rest-url", rest_url, "--json",
        *extra, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await process.communicate()
    assert b"Traceback" not in out + err, (out + err).decode()
    checks = [json.loads(line) for line in out.decode().splitlines()]
    return process.returncode, checks, time.monotonic() - started


def status(checks: list[dict]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in checks}


def check(checks: list[dict], name: str) -> dict:
    return next(c for c in checks if c["name"] == name)


async def test_doctor_passes_every_check_against_the_simulator(orderflow_sim_factory) -> None:
    """Against a healthy simulator every check passes (TLS is skipped on ws://) and the exit code is 0."""
    sim = await orderflow_sim_factory(pace=Pace(rate=200))
    code, checks, _ = await doctor(sim.ws_url, sim.rest_url)
    assert code == 0
    assert [c["name"] for c in checks] == ALL_CHECKS
    assert {c["status"] for c in checks if c["name"] != "stream TLS handshake"} == {"PASS"}
    assert status(checks)["stream TLS handshake"] == "SKIP"


@pytest.mark.parametrize("fault,failing,words", [
    (Fault("hang_before_handshake"), "stream HTTP upgrade", "got no HTTP response within 1.0 s"),
    (Fault("http_status", status=418, retry_after=60), "stream HTTP upgrade", "HTTP 418"),
])
async def test_doctor_names_the_failing_check(orderflow_sim_factory, fault, failing, words) -> None:
    """A hung or banned upgrade fails that check with a next step, skips the later stream checks, exits 1."""
    sim = await orderflow_sim_factory(scenario=Scenario(every=[fault]))
    code, checks, elapsed = await doctor(sim.ws_url, sim.rest_url)
    assert code == 1 and elapsed < SUM_OF_DEADLINES * TIMEOUT_FACTOR
    failed = [c for c in checks if c["status"] == "FAIL"]
    assert [c["name"] for c in failed] == [failing]
    assert words in failed[0]["detail"] and failed[0]["next_step"]
    assert status(checks)["first aggTrade"] == "SKIP" and status(checks)["REST ping"] == "PASS"


async def test_doctor_on_a_closed_port(unused_tcp_port: int) -> None:
    """Nothing listening: both TCP connects fail once each with a clean line and next step; what needs them is SKIP."""
    url = f"127.0.0.1:{unused_tcp_port}"
    code, checks, elapsed = await doctor(f"ws://{url}", f"http://{url}")
    assert code == 1 and elapsed < SUM_OF_DEADLINES * TIMEOUT_FACTOR
    assert status(checks)["stream TCP connect"] == "FAIL" and status(checks)["REST TCP connect"] == "FAIL"
    tcp = check(checks, "stream TCP connect")
    assert tcp["detail"] == f"TCP connect to {url} failed: connection refused"
    assert "orderflow sim" in tcp["next_step"]
    assert check(checks, "REST TCP connect")["detail"] == f"TCP connect to {url} failed: connection refused"
    for name in ["stream HTTP upgrade", "stream subscription", "first aggTrade"]:
        assert check(checks, name) == {"name": name, "status": "SKIP", "seconds": 0.0,
                                       "detail": "skipped: stream TCP connect failed", "next_step": ""}
    for name in ["REST ping", "REST aggTrades", "clock offset"]:
        assert check(checks, name)["detail"] == "skipped: REST TCP connect failed"


# No network, a silent network, TLS, and crashes


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_doctor_without_any_network_fails_fast_and_skips_what_depends_on_dns(as_json: bool) -> None:
    """In a namespace without network (unshare -n): both DNS checks FAIL, what depends on them SKIP, exit 1, no traceback, < 5 s."""
    require_unshare()
    command = Path(sys.executable).with_name("orderflow")
    argv = [str(command)] if command.exists() else [sys.executable, "-m", "orderflow_plugin"]
    started = time.monotonic()
    result = subprocess.run(["unshare", "-n", *argv, "doctor", *(["--json"] if as_json else [])], cwd=ROOT,
                            env=clean_environment(), capture_output=True, text=True, timeout=30 * TIMEOUT_FACTOR)
    elapsed = time.monotonic() - started
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < 5 * TIMEOUT_FACTOR
    if as_json:
        checks = [json.loads(line) for line in result.stdout.splitlines()]
    else:  # "STATUS  name  123.4 ms  detail" lines, each FAIL followed by its "-> next step" line
        lines = result.stdout.splitlines()
        checks = []
        for line, after in zip(lines, [*lines[1:], ""], strict=True):
            if line[:4] in ("PASS", "FAIL", "WARN", "SKIP"):
                name = next(n for n in ALL_CHECKS if line[6:].startswith(n + " "))
                checks.append({"name": name, "status": line[:4], "detail": line.split(" ms  ", 1)[1],
                               "next_step": after.strip()[3:] if after.strip().startswith("->") else ""})
        assert lines[-1].endswith("; FAILED: stream DNS, REST DNS")
    assert [c["name"] for c in checks] == ALL_CHECKS
    for name in ("stream DNS", "REST DNS"):
        failed = check(checks, name)
        assert failed["status"] == "FAIL" and "failed" in failed["detail"] and failed["next_step"]
    for name in [*STREAM_CHECKS[1:], *REST_CHECKS[1:]]:
        assert check(checks, name)["status"] == "SKIP"
        assert check(checks, name)["detail"] == f"skipped: {'stream' if name in STREAM_CHECKS else 'REST'} DNS failed"


async def _silent_server() -> tuple[asyncio.Server, int]:
    """A server on 127.0.0.1 that accepts TCP and then never sends a byte (packets silently dropped)."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("scheme,failing,words", [
    ("ws", "stream HTTP upgrade", "got no HTTP response within 3.0 s"),
    ("wss", "stream TLS handshake", "did not complete within 3.0 s"),
])
async def test_doctor_against_a_server_that_never_answers(scheme: str, failing: str, words: str) -> None:
    """TCP accepted, nothing ever answered, default deadlines (TLS 5 s, upgrade 10 s, REST 5 s): the stage and REST ping FAIL in < 10 s."""
    server, port = await _silent_server()
    async with server:
        code, checks, elapsed = await doctor(f"{scheme}://127.0.0.1:{port}", f"http://127.0.0.1:{port}",
                                             deadlines=False, env={"ORDERFLOW_TIMEOUTS__REST": "5"})
    assert code == 1 and elapsed < 10 * TIMEOUT_FACTOR
    assert [c["name"] for c in checks if c["status"] == "FAIL"] == [failing, "REST ping"]
    assert words in check(checks, failing)["detail"] and check(checks, failing)["next_step"]
    assert check(checks, "REST ping")["detail"] == "no HTTP response within 3.0 s"
    later = [*STREAM_CHECKS[STREAM_CHECKS.index(failing) + 1:], "REST aggTrades", "clock offset"]
    assert {status(checks)[name] for name in later} == {"SKIP"}
    assert status(checks)["stream TCP connect"] == "PASS" and status(checks)["REST TCP connect"] == "PASS"


@pytest.mark.parametrize("trust", ["--ca-file", "connector.ca_file"])
async def test_doctor_shows_the_certificate_of_the_tls_simulator(orderflow_sim_factory, orderflow_tls,
                                                                 trust: str) -> None:
    """Trusting the simulator's CA (--ca-file or settings), every check passes and TLS shows subject and expiry."""
    sim = await orderflow_sim_factory(tls=True, pace=Pace(rate=200))
    if trust == "--ca-file":
        code, checks, _ = await doctor(sim.ws_url, sim.rest_url, "--ca-file", orderflow_tls.ca_file)
    else:
        code, checks, _ = await doctor(sim.ws_url, sim.rest_url, env={"ORDERFLOW_CONNECTOR__CA_FILE": orderflow_tls.ca_file})
    assert code == 0, checks
    assert {c["status"] for c in checks} == {"PASS"}
    tls = check(checks, "stream TLS handshake")["detail"]
    assert tls.startswith("verified certificate for localhost issued by orderflow simulator CA, expires ")
    assert tls.endswith(" GMT (in 30 days)")
    assert check(checks, "REST ping")["detail"] == "HTTP 200"


async def test_doctor_without_the_ca_fails_tls_on_both_and_never_skips_verification(orderflow_tls_sim) -> None:
    """Not trusting the simulator's CA: stream TLS and REST ping FAIL on certificate verification, with the --ca-file hint."""
    code, checks, _ = await doctor(orderflow_tls_sim.ws_url, orderflow_tls_sim.rest_url)
    assert code == 1
    assert [c["name"] for c in checks if c["status"] == "FAIL"] == ["stream TLS handshake", "REST ping"]
    for name in ("stream TLS handshake", "REST ping"):
        assert "certificate verification failed" in check(checks, name)["detail"]
        assert "--ca-file" in check(checks, name)["next_step"]
    assert orderflow_tls_sim.record.connections == [] and orderflow_tls_sim.record.rest == []


def _raise(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected failure")


@pytest.fixture
def in_process_cli() -> Iterator[None]:
    """cli.main configures the package's loggers; put them back for the tests that follow."""
    loggers = [logging.getLogger(name) for name in ("orderflow_plugin", "orderflow_hooks")]
    saved = [(logger.handlers[:], logger.level) for logger in loggers]
    yield
    for logger, (handlers, level) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("function,failing,skipped", [  # patched where the doctor looks each one up
    ("orderflow_plugin.doctor.check_stream", "stream DNS", STREAM_CHECKS[1:]),
    ("orderflow_plugin.doctor.check_rest", "REST DNS", REST_CHECKS[1:]),
    ("orderflow_plugin.doctor.check_install", "install", []),
    ("orderflow_plugin.doctor.check_loop_lag", "event loop lag", []),
])
def test_a_check_that_crashes_is_a_fail_line_not_a_traceback(monkeypatch, capsys, in_process_cli, unused_tcp_port: int,
                                                             as_json: bool, function: str, failing: str,
                                                             skipped: list[str]) -> None:
    """An unexpected exception inside a check: a FAIL line naming its type and message, its dependents SKIP, exit 1."""
    monkeypatch.setattr(function, _raise)
    url = f"127.0.0.1:{unused_tcp_port}"
    code = cli.main(["doctor", "--ws-url", f"ws://{url}", "--rest-url", f"http://{url}",
                     *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    if as_json:
        checks = [json.loads(line) for line in out.splitlines()]
        assert [c["name"] for c in checks] == ALL_CHECKS
        crashed = check(checks, failing)
        assert crashed["status"] == "FAIL" and crashed["detail"] == "unexpected RuntimeError: injected failure"
        assert crashed["next_step"]
        assert all(check(checks, name)["detail"] == f"skipped: {failing} failed" for name in skipped)
    else:
        assert any(line.startswith("FAIL") and failing in line and "unexpected RuntimeError: injected failure" in line
                   for line in out.splitlines())


def test_a_crash_outside_every_check_still_prints_json(monkeypatch, capsys, in_process_cli) -> None:
    """If the doctor itself raises, --json still prints one valid JSON FAIL object and exits 1."""
    monkeypatch.setattr(doctor_module, "diagnose", _raise)
    code = cli.main(["doctor", "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    assert [json.loads(line) for line in out.splitlines()] == [{
        "name": "doctor", "status": "FAIL", "seconds": 0.0,
        "detail": "the doctor itself failed: RuntimeError: injected failure",
        "next_step": "a bug in orderflow doctor: please report it with this line"}]


def test_a_resolver_that_never_answers_is_abandoned_at_the_deadline(monkeypatch) -> None:
    """DNS that hangs (a network with no upstream): both DNS checks FAIL at the timeout and diagnose returns at once."""
    release = threading.Event()

    def hanging_getaddrinfo(*args: object, **kwargs: object) -> list:
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "released by the test")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    started = time.monotonic()
    try:
        checks = doctor_module.diagnose(load_settings(), ws_url="wss://stream.example.invalid:9443",
                                        rest_url="https://api.example.invalid", symbol="BTCUSDT", market="spot",
                                        timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 2 * TIMEOUT_FACTOR
    by_name = {c.name: c for c in checks}
    assert by_name["stream DNS"].status == "FAIL" and by_name["REST DNS"].status == "FAIL"
    assert "resolving stream.example.invalid got no answer within 0.5 s" in by_name["stream DNS"].detail
    assert by_name["REST DNS"].detail == "resolving api.example.invalid got no answer within 0.5 s"


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose accept queue is full, so the kernel drops every further SYN: a connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # never accepted: they fill the queue
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


async def test_doctor_against_a_blackhole_says_each_tcp_timeout_once(blackhole_port: int) -> None:
    """SYNs dropped on 127.0.0.1: both TCP checks FAIL with one sentence naming endpoint and deadline, said once."""
    url = f"127.0.0.1:{blackhole_port}"
    code, checks, elapsed = await doctor(f"ws://{url}", f"http://{url}", "--timeout", "5")
    assert code == 1 and elapsed < 5 * TIMEOUT_FACTOR
    for name in ("stream TCP connect", "REST TCP connect"):
        assert check(checks, name)["detail"] == f"TCP connect to {url} did not complete within 1.0 s"
        assert check(checks, name)["next_step"].startswith("nothing accepted the TCP connection")


@pytest.mark.parametrize("waited,expected", [(0.5, "PASS"), (0.0, "WARN")], ids=["preempted", "blocked"])
async def test_loop_lag_leaves_out_time_the_machine_ran_other_processes(monkeypatch: pytest.MonkeyPatch, waited: float,
                                                                         expected: str) -> None:
    """Sleeps woken late are no lag if the thread waited that long for a CPU; blocked that long, they are (#25)."""
    total = [0.0]

    def run_wait() -> float:  # each sleep is bracketed by two reads: it waited ``waited`` s for a CPU
        total[0] += waited
        return total[0]

    async def blocker() -> None:  # holds the loop 60 ms whenever it runs: each sleep wakes 60 to 120 ms late
        while True:
            time.sleep(0.06)
            await asyncio.sleep(0)

    monkeypatch.setattr(doctor_module, "run_wait", run_wait)
    task = asyncio.create_task(blocker())
    done: list = []
    try:
        await doctor_module.check_loop_lag(done, samples=3)
    finally:
        task.cancel()
    assert [(c.name, c.status) for c in done] == [("event loop lag", expected)], done
