"""`orderflow stream --json` and `replay` as real subprocesses against the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario

from .conftest import ROOT

TRADE_KEYS = ["event", "symbol", "id", "price", "qty", "side", "time", "first_id", "last_id", "source"]
SUMMARY_KEYS = {"event", "trades", "reconnects", "gaps", "backfilled", "bad_frames", "plugin_errors", "uptime_s"}


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    return {**env, "ORDERFLOW_ENV": "testing"}


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow_plugin", *args, cwd=ROOT, env=environ(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def parse(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.decode().splitlines()]


async def test_stream_json_lines_have_the_stable_shapes(orderflow_sim_factory) -> None:
    """Every stdout line is JSON: trades, bars, snapshots and lifecycle in their shapes; summary last."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    process = await start("stream", "--json", "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--duration", "3")
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    events = parse(out)
    assert events[-1]["event"] == "summary" and SUMMARY_KEYS <= set(events[-1])
    kinds = {e["event"] for e in events}
    assert {"startup", "connect-attempt", "connected", "trade", "metric"} <= kinds
    trades = [e for e in events if e["event"] == "trade"]
    assert list(trades[0]) == TRADE_KEYS and isinstance(trades[0]["price"], str)
    assert trades[0]["price"] == "87648.21" and trades[0]["side"] == "sell" and trades[0]["source"] == "live"
    assert [t["id"] for t in trades] == list(range(trades[0]["id"], trades[0]["id"] + len(trades)))
    assert events[-1]["trades"] == len(trades)
    bars = [e for e in events if e["event"] == "metric" and e["kind"] == "bar"]
    assert bars and {"window", "start", "end", "open", "high", "low", "close", "buy_volume", "sell_volume",
                     "delta", "cvd", "vwap", "trades", "footprint"} <= set(bars[0])
    assert all(isinstance(bars[0][k], str) for k in ("open", "buy_volume", "delta", "cvd", "vwap"))
    connected = next(e for e in events if e["event"] == "connected")
    assert set(connected["stage_timings"]) >= {"tcp_connect", "http_upgrade", "first_message"}
    assert "Traceback" not in err.decode()


async def test_stream_json_with_faults_reports_lifecycle_and_fills_gaps(orderflow_sim_factory) -> None:
    """A reset and skipped ids show as disconnected, reconnect-scheduled, gap, backfill; trades stay complete."""
    scenario = Scenario([[Fault("reset_after", after=300)], [Fault("skip_ids", after=100, count=50)]])
    sim = await orderflow_sim_factory(scenario=scenario, pace=Pace(rate=1000))
    process = await start("stream", "--json", "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--duration", "3")
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    events = parse(out)
    kinds = [e["event"] for e in events]
    for kind in ("disconnected", "reconnect-scheduled", "gap", "backfill"):
        assert kind in kinds, kind
    disconnected = next(e for e in events if e["event"] == "disconnected")
    assert disconnected["error"]["type"] == "ConnectionLost" and disconnected["error"]["stage"] == "streaming"
    ids = [e["id"] for e in events if e["event"] == "trade"]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert any(e["source"] == "backfill" for e in events if e["event"] == "trade")
    assert kinds[-1] == "summary" and events[-1]["gaps"] >= 2


async def test_sigint_stops_cleanly_with_summary_last(orderflow_sim_factory) -> None:
    """SIGINT stops the stream within timeouts.close + 1 s; the summary is the last line and the exit code 0."""
    sim = await orderflow_sim_factory(pace=Pace(rate=200))
    process = await start("stream", "--json", "--ws-url", sim.ws_url, "--rest-url", sim.rest_url)
    assert process.stdout is not None
    async with asyncio.timeout(10):
        while b'"event":"trade"' not in await process.stdout.readline():
            pass
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    rest, _ = await process.communicate()
    assert time.monotonic() - started < 5.0 + 1.0  # timeouts.close + 1 s
    assert process.returncode == 0
    assert parse(rest)[-1]["event"] == "summary"


async def test_replay_of_recorder_output(tmp_path: Path) -> None:
    """`replay` plays the recorder's JSON lines through the whole pipeline and delivers every trade."""
    trades = list(bundled_tape().trades())[:200]
    path = tmp_path / "trades.jsonl"
    path.write_text("".join(json.dumps(t.as_json()) + "\n" for t in trades))
    process = await start("replay", str(path), "--speed", "1000", "--json", "--duration", "20")
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    events = parse(out)
    assert [e["id"] for e in events if e["event"] == "trade"] == [t.id for t in trades]
    assert events[-1]["event"] == "summary" and events[-1]["trades"] == 200


@pytest.mark.parametrize("args,words", [
    (["stream", "--duration", "soon"], "argument --duration: not a number: 'soon'"),
    (["replay"], "the following arguments are required: file"),
    (["stream", "--market", "margin"], "argument --market: invalid choice: 'margin'"),
])
def test_bad_option_exits_2_with_one_line(args: list[str], words: str) -> None:
    """A bad option or value exits 2 with one clear line on stderr."""
    result = subprocess.run([sys.executable, "-m", "orderflow_plugin", *args], cwd=ROOT, env=environ(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["stream", "demo", "replay", "sim", "doctor", "config"])
def test_help_lists_every_option(command: str) -> None:
    """--help on every command lists its options; options with a default show it."""
    result = subprocess.run([sys.executable, "-m", "orderflow_plugin", command, "--help"], cwd=ROOT, env=environ(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--settings" in result.stdout
    if command in ("stream", "replay", "sim"):
        assert "(default:" in result.stdout
