"""The command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def run(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    environ.update({"ORDERFLOW_ENV": "testing", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "orderflow_plugin", *args],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=60,
    )


def test_demo_replays_bundled_tape_through_plugins() -> None:
    """`orderflow demo` replays real trades through the project's hooks and ends with a summary line."""
    result = run("demo", "--speed", "100000", "--duration", "20",
                 env={"ORDERFLOW_PLUGINS__HOOKS_DIRS": '["hooks"]'})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("replaying 5000 real BTCUSDT aggTrades")
    assert "plugins: diagnostics, prometheus_export, recorder, whale_alert" in lines[0]
    summary = json.loads(lines[-1])
    assert summary["event"] == "summary" and summary["trades"] == 5000 and summary["plugin_errors"] == 0
    assert lines[-2].startswith("BTCUSDT  last 87759.14  cvd +17.30342")  # the final state: exact tape totals
    assert "whale BTCUSDT" in result.stderr  # whale_alert ran on the real tape; logs go to stderr
    assert "stopped: trades 5000" in result.stderr


def test_demo_recovers_from_a_fault_scenario(tmp_path: Path) -> None:
    """With a reset in the scenario the demo reconnects, backfills, and still delivers the whole tape."""
    scenario = tmp_path / "s.toml"
    scenario.write_text('[[connection]]\nfaults = [{kind = "reset_after", after = 1000}]\n')
    result = run("demo", "--speed", "500", "--duration", "30", "--scenario", str(scenario))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["trades"] == 5000 and summary["reconnects"] == 1 and summary["gaps"] == 1
    assert summary["backfilled"] > 0


def test_demo_stops_at_duration() -> None:
    """--duration bounds the run even when the tape is longer."""
    result = run("demo", "--speed", "1", "--duration", "1")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 < summary["trades"] < 5000 and summary["uptime_s"] < 3


def test_bad_settings_file_exits_2_with_every_error(tmp_path: Path) -> None:
    """A bad settings file gives exit 2 and one message listing each error, no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[default]\nsymbols = ["BTC/USDT"]\nmarket = "margin"\n')
    result = run("config", "--settings", str(bad))
    assert result.returncode == 2
    assert "invalid settings (2 errors)" in result.stderr
    assert "symbols" in result.stderr and "market = 'margin'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_option_value_exits_2() -> None:
    """A bad option value exits 2 with argparse's one clear error line."""
    result = run("demo", "--speed", "-3")
    assert result.returncode == 2
    assert "argument --speed: must be > 0, got -3" in result.stderr


def test_config_prints_effective_settings() -> None:
    """`orderflow config` prints the validated settings, environment overrides applied."""
    result = run("config", env={"ORDERFLOW_SYMBOLS": "ethusdt"})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["env"] == "testing" and shown["settings"]["symbols"] == ["ETHUSDT"]


def test_sim_command_serves_a_plain_client(tmp_path: Path) -> None:
    """`orderflow sim` serves the bundled tape with a scenario file until --duration ends, then prints a summary."""
    import asyncio
    import re

    import websockets

    scenario = tmp_path / "s.toml"
    scenario.write_text('[[connection]]\nfaults = [{kind = "close_after", after = 3, code = 1001}]\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "orderflow_plugin", "sim", "--port", "0", "--rate", "500", "--duration", "4",
         "--scenario", str(scenario)],
        cwd=ROOT, env={**environ, "ORDERFLOW_ENV": "testing"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    port = int(re.search(r"127\.0\.0\.1:(\d+)", server.stdout.readline()).group(1))

    async def client() -> tuple[int, int]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/stream?streams=btcusdt@aggTrade") as ws:
            received = 0
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 3)
                    received += 1
            except websockets.ConnectionClosed as closed:
                return received, closed.rcvd.code

    assert asyncio.run(client()) == (3, 1001)
    out, err = server.communicate(timeout=15)
    assert server.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["connections"] == 1 and summary["played"]["BTCUSDT"] >= 3


def test_sim_command_rejects_bad_scenario(tmp_path: Path) -> None:
    """A scenario naming an unknown fault exits 2 with the list of known faults."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"connection": [{"faults": [{"kind": "explode"}]}]}')
    result = run("sim", "--port", "0", "--scenario", str(bad))
    assert result.returncode == 2
    assert "unknown fault 'explode'" in result.stderr and "blackhole_after" in result.stderr
