"""The stream over real TLS: verified against the simulator's CA or refused (and retried), never unverified."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import websockets

from orderflow_plugin import OrderFlow, SettingsError, StageTimeout, StreamError, load_settings
from orderflow_plugin.sim import Fault, Pace, Scenario, SimCertificates
from orderflow_plugin.tls import client_context

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR, TIMEOUTS, Events, make_flow

# Every wall-clock limit below is multiplied by this (slow CI machines), as websockets does.


def contiguous(ids: list[int]) -> bool:
    return ids == list(range(ids[0], ids[0] + len(ids)))


async def test_trades_and_backfill_flow_over_verified_tls(orderflow_sim_factory, orderflow_tls) -> None:
    """With the CA, trades stream over wss://localhost and skipped ids are backfilled over https://, each once."""
    sim = await orderflow_sim_factory(tls=True, pace=Pace(rate=500),
                                      scenario=Scenario([[Fault("skip_ids", after=50, count=40)]]))
    assert sim.ws_url.startswith("wss://localhost:") and sim.rest_url.startswith("https://localhost:")
    events = Events()
    async with make_flow(sim, events, ca_file=orderflow_tls.ca_file):
        await events.until(lambda e: bool(e.of("on_backfill")) and len(e.trades) >= 150, timeout=10)
    assert events.of("on_connected")[0]["url"].startswith("wss://localhost:")
    assert events.of("on_backfill")[0]["count"] == 40
    ids = events.ids()
    assert contiguous(ids) and len(set(ids)) == len(ids)
    assert sum(t.source == "backfill" for t in events.trades) == 40
    assert any(path.startswith("/api/v3/aggTrades?") and status == 200 for path, status in sim.record.rest)
    assert not events.of("on_error")


async def test_without_the_ca_verification_fails_in_stage_tls_and_is_retried(orderflow_tls_sim) -> None:
    """Without the CA each attempt fails in stage tls ("certificate verification failed") and is retried; no trade, no upgrade."""
    events = Events()
    flow = make_flow(orderflow_tls_sim, events)
    async with flow:
        await events.until(lambda e: len(e.of("on_connect_attempt")) >= 3 and len(e.of("on_reconnect_scheduled")) >= 2,
                           timeout=10 * TIMEOUT_FACTOR)
        health = flow.health()
        assert health["state"] == "running"
        assert health["connections"][0]["state"] != "failed"
        assert health["connections"][0]["last_error"]["stage"] == "tls"
    errors = [call["error"] for call in events.of("on_reconnect_scheduled")]
    for error in errors:
        assert isinstance(error, StreamError) and error.stage == "tls"
        assert "certificate verification failed" in str(error)
    assert events.trades == []
    record = orderflow_tls_sim.record
    assert record.tcp_accepted == 0 and record.connections == []  # no TLS session completed, no upgrade sent


async def test_a_server_silent_after_tcp_accept_hits_the_tls_deadline(orderflow_tls) -> None:
    """A server that accepts TCP and never answers the ClientHello: the tls deadline fires, named, and is retried."""
    hellos: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            hellos.append(data)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # REST refuses (port 9: nothing listens there): the start's exchangeInfo request would otherwise hang in a TLS
    # handshake here too, and one cancelled there by stop() leaves its socket to the garbage collector (httpcore)
    silent = SimpleNamespace(ws_url=f"wss://127.0.0.1:{port}", rest_url="https://127.0.0.1:9")
    events = Events()
    async with server:
        async with make_flow(silent, events, ca_file=orderflow_tls.ca_file, timeouts=replace(TIMEOUTS, tls=0.5)):
            await events.until(lambda e: len(e.of("on_reconnect_scheduled")) >= 2, timeout=10)
    error = events.of("on_reconnect_scheduled")[0]["error"]
    assert isinstance(error, StageTimeout) and error.stage == "tls" and error.deadline == 0.5
    assert f"TLS handshake with 127.0.0.1:{port} did not complete within 0.5 s" in str(error)
    assert hellos and hellos[0][0] == 0x16  # it was a TLS record (a handshake) that went unanswered
    assert events.trades == []


@pytest.mark.parametrize("kind", ["missing", "not PEM"])
def test_a_bad_ca_file_is_refused_at_construction_and_in_settings(tmp_path: Path, monkeypatch, kind: str) -> None:
    """A missing or non-PEM ca_file: OrderFlow raises ValueError naming it, load_settings a SettingsError on connector.ca_file."""
    path = tmp_path / "ca.pem"
    if kind == "not PEM":
        path.write_text("this is not a certificate\n")
    with pytest.raises(ValueError, match=re.escape(repr(str(path)))):
        OrderFlow(["BTCUSDT"], ca_file=str(path))
    monkeypatch.setenv("ORDERFLOW_CONNECTOR__CA_FILE", str(path))
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert [e for e in raised.value.errors if e.startswith("connector.ca_file")], raised.value.errors


def test_sim_certificates_write_the_ca_and_serve_a_verifying_context(tmp_path: Path) -> None:
    """SimCertificates writes ca.pem, which client_context accepts, and gives a server context with the certificate."""
    certificates = SimCertificates(tmp_path / "certs")
    assert certificates.ca_file == str(tmp_path / "certs" / "ca.pem")
    assert Path(certificates.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")
    client_context(certificates.ca_file)
    assert certificates.server_context().get_ca_certs() == []  # a server context: it asks clients for nothing


async def test_sim_command_with_tls_prints_the_ca_and_serves_https_and_wss() -> None:
    """`orderflow sim --tls` prints localhost URLs and the CA file; clients trusting it connect, others are refused."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")} | {"ORDERFLOW_ENV": "testing"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow_plugin", "sim", "--tls", "--port", "0", "--rate", "100",
        "--duration", str(60 * TIMEOUT_FACTOR), cwd=ROOT, env=environ,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(10 * TIMEOUT_FACTOR):
            banner = (await process.stdout.readline()).decode() + (await process.stdout.readline()).decode()
        ws_url = re.search(r"streams (wss://localhost:\d+)/stream", banner)
        rest_url = re.search(r"REST (https://localhost:\d+)/api", banner)
        ca_file = re.search(r"throwaway CA \(deleted on exit\): (\S+)", banner)
        assert ws_url and rest_url and ca_file, banner
        ca_file = ca_file.group(1)
        assert ca_file.endswith("ca.pem") and Path(ca_file).is_file()
        async with httpx.AsyncClient(verify=client_context(ca_file)) as client:
            assert (await client.get(f"{rest_url.group(1)}/api/v3/ping")).status_code == 200
        async with websockets.connect(f"{ws_url.group(1)}/ws/btcusdt@aggTrade", ssl=client_context(ca_file),
                                      open_timeout=5 * TIMEOUT_FACTOR) as ws:
            assert b'"e":"aggTrade"' in (await ws.recv(decode=False))
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"{rest_url.group(1)}/api/v3/ping")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10 * TIMEOUT_FACTOR):
            await process.communicate()
    assert not Path(ca_file).exists()  # the throwaway CA goes with the simulator


async def test_stream_command_trusts_a_ca_file_given_on_the_command_line(orderflow_tls_sim, orderflow_tls) -> None:
    """orderflow stream --ca-file streams over wss:// from a simulator signed by that CA."""
    # Stopped once a trade came, not after a fixed 1.5 s: on a loaded machine starting Python and connecting can
    # take longer than that (issue #25).
    command = [sys.executable, "-m", "orderflow_plugin", "stream", "--ws-url", orderflow_tls_sim.ws_url,
               "--rest-url", orderflow_tls_sim.rest_url, "--ca-file", orderflow_tls.ca_file, "--json",
               "--duration", str(60 * TIMEOUT_FACTOR)]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(30 * TIMEOUT_FACTOR):
            while not lines or b'"event":"trade"' not in lines[-1]:
                line = await process.stdout.readline()
                if not line:
                    break
                lines.append(line)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30 * TIMEOUT_FACTOR):
            out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    events = [json.loads(line) for line in b"".join(lines).decode().splitlines() + out.decode().splitlines()]
    # A HookTooSlow is the JSON feed's own report that writing a line held the loop over 5 ms: its reader is
    # this test, whose loop also runs the simulator, and on a loaded machine it drains the pipe late. It says
    # nothing of TLS; any other error (a refused certificate, a stage deadline) fails the test.
    errors = [e for e in events if e["event"] == "error" and e["error"]["type"] != "HookTooSlow"]
    assert any(e["event"] == "trade" for e in events), (events, err.decode())
    assert not errors, (errors, err.decode())
    assert events[-1]["event"] == "summary"
