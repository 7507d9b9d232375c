"""`orderflow stream --json` and `replay` as real subprocesses against the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR

TRADE_KEYS = ["event", "symbol", "id", "price", "qty", "side", "time", "first_id", "last_id", "source"]
SUMMARY_KEYS = {"event", "trades", "reconnects", "gaps", "backfilled", "bad_frames", "plugin_errors", "slow_hooks", "uptime_s"}


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
    async with asyncio.timeout(10 * TIMEOUT_FACTOR):
        while b'"event":"trade"' not in await process.stdout.readline():
            pass
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    rest, _ = await process.communicate()
    assert time.monotonic() - started < 5.0 + 1.0 * TIMEOUT_FACTOR  # timeouts.close + 1 s
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
    (["demo", "--bogus"], "orderflow demo: error: unrecognized arguments: --bogus (see orderflow demo --help)"),
    (["replay", "x.csv", "--speed", "1", "extra"], "unrecognized arguments: extra (see orderflow replay --help)"),
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


def run_on_a_terminal(*args: str, stderr_path: Path, timeout: float = 40.0) -> bytes:
    """Run the CLI with stdout on a pseudo-terminal (160x50) and stderr to a file; all it wrote to the terminal."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {k: v for k, v in environ().items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")}
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "orderflow_plugin", *args], cwd=ROOT,
                                   env={**env, "TERM": "xterm-256color"}, stdin=subprocess.DEVNULL,
                                   stdout=slave, stderr=stderr)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert process.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, stderr_path.read_text()[-2000:]
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return bytes(out)


def screen(output: bytes) -> list[str]:
    """The lines a terminal holds after ``output``: plain text, with the cursor moves and erases rich's Live uses."""
    lines, row, col = [""], 0, 0
    for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", output.decode()):
        if token == "\n":
            row, col = row + 1, 0
        elif token == "\r":
            col = 0
        elif token.startswith("\x1b["):
            if token.endswith("K"):  # erase the line
                lines[row] = ""
            elif token.endswith("A"):  # cursor up
                row = max(0, row - int(token[2:-1] or 1))
            continue  # colours, showing and hiding the cursor: nothing to keep
        elif token:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token):]
            col += len(token)
        lines.extend("" for _ in range(row + 1 - len(lines)))
    return lines


@pytest.fixture(scope="module")
def live_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], bytes, str]:
    """`orderflow demo` with its live view on a terminal, a reset in the scenario, stderr to a file."""
    folder = tmp_path_factory.mktemp("live")
    scenario = folder / "reset.toml"
    scenario.write_text('[[connection]]\nfaults = [{kind = "reset_after", after = 1000}]\n')
    out = run_on_a_terminal("demo", "--speed", "500", "--duration", "30", "--scenario", str(scenario),
                            stderr_path=folder / "stderr.txt")
    return screen(out), out, (folder / "stderr.txt").read_text()


def test_live_view_on_a_terminal_leaves_the_logs_on_stderr(live_demo: tuple[list[str], bytes, str]) -> None:
    """With the live view on a terminal, 2>file gets every log line, the reconnect's too, and the terminal none."""
    lines, out, stderr = live_demo
    assert "orderflow_plugin.stream: reconnecting in" in stderr  # logged while the view was live
    assert "orderflow_plugin.stream: stopped: trades 5000" in stderr
    assert b"orderflow_plugin.stream" not in out
    assert any("orderflow: live aggTrade order flow" in line for line in lines)  # and the view was there


def test_live_view_ends_with_the_final_table_once(live_demo: tuple[list[str], bytes, str]) -> None:
    """When the live view ends, the terminal shows its table once, in the final (stopped) state, then the summary."""
    lines, _, _ = live_demo
    assert sum("orderflow: live aggTrade order flow" in line for line in lines) == 1
    assert sum(line.startswith("reconnects ") for line in lines) == 1
    [row] = [line for line in lines if line.startswith("│ BTCUSDT │ 87759.14 │ +17.30342 │")]  # the tape's totals
    assert "stopped" in row
    summary = json.loads(next(line for line in reversed(lines) if line.strip()))
    assert summary["event"] == "summary" and summary["trades"] == 5000


def test_live_view_labels_the_delta_bar_and_the_trade_time_rate(live_demo: tuple[list[str], bytes, str]) -> None:
    """The delta bar's column says the bar is a share of volume; trades/s says it counts trade time."""
    lines, _, _ = live_demo
    header = [line for line in lines if line.startswith("┃")]
    assert any("1m delta" in line for line in header) and any("bar: share of volume" in line for line in header)
    assert any("trades/s" in line for line in header) and any("of trade time" in line for line in header)


async def test_plain_view_says_trades_per_second_are_trade_time(tmp_path: Path) -> None:
    """Without a terminal, the per-symbol line says its trades/s is per second of trade time."""
    trades = list(bundled_tape().trades())[:200]
    path = tmp_path / "trades.jsonl"
    path.write_text("".join(json.dumps(t.as_json()) + "\n" for t in trades))
    process = await start("replay", str(path), "--speed", "1000", "--duration", "20")
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    [line] = [line for line in out.decode().splitlines() if line.startswith("BTCUSDT  last")]
    assert " trades/s of trade time  [" in line


@pytest.mark.parametrize("command", ["stream", "demo", "replay", "sim", "doctor", "config"])
def test_help_has_a_description_and_says_each_default_once(command: str) -> None:
    """`orderflow COMMAND --help` starts with what the command does, and no option states its default twice."""
    result = subprocess.run([sys.executable, "-m", "orderflow_plugin", command, "--help"], cwd=ROOT, env=environ(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    _usage, description, *_ = result.stdout.split("\n\n")
    assert description[0].isupper() and not description.startswith("options:"), result.stdout
    options = " ".join(result.stdout.split("options:", 1)[1].split())  # wrapped lines joined
    for option in re.split(r" (?=--?[a-z])(?<![,|/] )", options):
        assert option.count("default:") <= 1, option
        assert "(default: None)" not in option and "(default: [])" not in option and "(default: False)" not in option
