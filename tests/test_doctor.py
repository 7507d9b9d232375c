"""`orderflow doctor` against the simulator: all PASS, and each failure named, non-zero, within the deadlines."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from orderflow_plugin.sim import Fault, Pace, Scenario

from .conftest import ROOT

DEADLINES = {"ORDERFLOW_CONNECTOR__HTTP_UPGRADE_TIMEOUT": "1", "ORDERFLOW_CONNECTOR__TCP_CONNECT_TIMEOUT": "1",
             "ORDERFLOW_CONNECTOR__FIRST_MESSAGE_TIMEOUT": "2", "ORDERFLOW_SEQUENCE__REST_TIMEOUT": "1"}
SUM_OF_DEADLINES = 5 + 1 + 5 + 1 + 10 + 2 + 4 * 1  # resolve, tcp, tls, upgrade, subscribed, first, REST x4


async def doctor(ws_url: str, rest_url: str, *extra: str) -> tuple[int, list[dict], float]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    environ.update({"ORDERFLOW_ENV": "testing", **DEADLINES})
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow_plugin", "doctor", "--ws-url", ws_url, "--rest-url", rest_url, "--json",
        *extra, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = await process.communicate()
    checks = [json.loads(line) for line in out.decode().splitlines()]
    return process.returncode, checks, time.monotonic() - started


def status(checks: list[dict]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in checks}


async def test_doctor_passes_every_check_against_the_simulator(orderflow_sim_factory) -> None:
    """Against a healthy simulator every check passes (TLS is skipped on ws://) and the exit code is 0."""
    sim = await orderflow_sim_factory(pace=Pace(rate=200))
    code, checks, _ = await doctor(sim.ws_url, sim.rest_url)
    assert code == 0
    assert [c["name"] for c in checks] == [
        "settings", "install", "plugins", "stream DNS", "stream TCP connect", "stream TLS handshake",
        "stream HTTP upgrade", "stream subscription", "first aggTrade", "REST DNS", "REST ping", "REST aggTrades",
        "clock offset", "event loop lag"]
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
    assert code == 1 and elapsed < SUM_OF_DEADLINES
    failed = [c for c in checks if c["status"] == "FAIL"]
    assert [c["name"] for c in failed] == [failing]
    assert words in failed[0]["detail"] and failed[0]["next_step"]
    assert status(checks)["first aggTrade"] == "SKIP" and status(checks)["REST ping"] == "PASS"


async def test_doctor_on_a_closed_port(unused_tcp_port: int) -> None:
    """Nothing listening: TCP connect and every REST check fail with next steps, within the deadlines."""
    url = f"127.0.0.1:{unused_tcp_port}"
    code, checks, elapsed = await doctor(f"ws://{url}", f"http://{url}")
    assert code == 1 and elapsed < SUM_OF_DEADLINES
    assert status(checks)["stream TCP connect"] == "FAIL" and status(checks)["REST ping"] == "FAIL"
    tcp = next(c for c in checks if c["name"] == "stream TCP connect")
    assert "Connect call failed" in tcp["detail"] or "refused" in tcp["detail"].lower()
    assert "orderflow sim" in tcp["next_step"]
