"""The command line, run as a real subprocess."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR


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
                 env={"ORDERFLOW_PLUGINS__ENTRY_POINTS": "true"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("replaying 5000 real BTCUSDT aggTrades")
    assert lines[0].endswith("; plugins: diagnostics, whale_alert (disabled: prometheus, recorder, redis)")
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
    assert 0 < summary["trades"] < 5000 and summary["uptime_s"] < 1 + 2 * TIMEOUT_FACTOR


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
                    await asyncio.wait_for(ws.recv(), 3 * TIMEOUT_FACTOR)
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


def dump(folder: Path, name: str, rows: int = 5000) -> Path:
    """The bundled real dump's first ``rows`` rows, saved under ``name`` as a user might have renamed it."""
    bundled = ROOT / "orderflow_plugin" / "data" / "BTCUSDT-aggTrades-2026-01-01_first5000.csv.gz"
    path = folder / name
    path.write_text("".join(gzip.open(bundled, "rt").readlines()[:rows]))
    return path


def bad_inputs(folder: Path) -> None:
    """Files a user might pass by mistake: binary, a tape whose symbol is a path or a number, deep JSON, UTF-16 TOML."""
    frame = {"e": "aggTrade", "E": 2, "a": 1, "p": "1.0", "q": "2.0", "f": 1, "l": 1, "T": 1, "m": False}
    (folder / "garbage.bin").write_bytes(bytes(range(128, 256)) * 8)
    (folder / "badsym.jsonl").write_text(json.dumps({**frame, "s": "../../etc"}) + "\n")
    (folder / "numsym.jsonl").write_text(json.dumps({**frame, "s": 123}) + "\n")
    (folder / "deep.jsonl").write_text("[" * 100_000 + "\n")
    (folder / "u16.toml").write_text('[default]\nsymbols = ["ETHUSDT"]\n', encoding="utf-16")


@pytest.mark.parametrize("args,words", [
    (["doctor", "--symbol", "../../etc"], ["argument --symbol: symbol '../../etc' does not match ^[A-Z0-9]{2,20}$"]),
    (["sim", "--port", "99999"], ["argument --port: must be a port number 0-65535, got 99999"]),
    (["replay", "{tmp}/garbage.bin"], ["orderflow replay: tape", "garbage.bin: not a text file",
                                       "a tape is a data.binance.vision aggTrades CSV dump"]),
    (["replay", "{tmp}/missing.csv"], ["orderflow replay: tape", "missing.csv: cannot be read"]),
    (["sim", "--tape", "{tmp}/garbage.bin"], ["orderflow sim: tape", "garbage.bin: not a text file"]),
    (["demo", "--tape", "{tmp}/garbage.bin"], ["orderflow demo: tape", "garbage.bin: not a text file"]),
    (["sim", "--tape", "{tmp}/garbage.bin", "--symbol", "BTCUSDT", "--symbol", "ETHUSDT"],
     ["orderflow sim: 2 --symbol for 1 --tape: give one --symbol per --tape"]),
    (["replay", "{tmp}/badsym.jsonl"], ["orderflow replay: tape", "badsym.jsonl, line 1: not an aggTrade frame",
                                        "symbol '../../etc' does not match ^[A-Z0-9]{2,20}$"]),
    (["replay", "{tmp}/numsym.jsonl"], ["orderflow replay: tape", "numsym.jsonl, line 1:", "symbol 123 must be a string"]),
    (["replay", "{tmp}/deep.jsonl"], ["orderflow replay: tape", "deep.jsonl, line 1: not an aggTrade frame (JSON nested"]),
    (["sim", "--tape", "{tmp}/deep.jsonl"], ["orderflow sim: tape", "deep.jsonl, line 1: not an aggTrade frame"]),
    (["config", "--settings", "{tmp}/u16.toml"], ["orderflow: invalid settings: settings file", "u16.toml: not UTF-8",
                                                  "must be UTF-8 TOML"]),
    (["config", "--settings", "{tmp}/garbage.bin"], ["garbage.bin: not UTF-8", "must be UTF-8 TOML"]),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path: Path, args: list[str], words: list[str]) -> None:
    """A bad symbol, port, tape or settings file exits 2 with one stderr line naming it and what is allowed, no traceback."""
    bad_inputs(tmp_path)
    result = run(*(arg.replace("{tmp}", str(tmp_path)) for arg in args))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr


@pytest.mark.parametrize("name", ["u16.toml", "garbage.bin"])
def test_a_settings_file_from_the_environment_that_is_not_utf8_is_one_line(tmp_path: Path, name: str) -> None:
    """ORDERFLOW_SETTINGS_FILES naming a UTF-16 or binary file exits 2 with one line naming it, no traceback."""
    bad_inputs(tmp_path)
    result = run("config", env={"ORDERFLOW_SETTINGS_FILES": str(tmp_path / name)})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"settings file {tmp_path / name}: not UTF-8" in result.stderr and "must be UTF-8 TOML" in result.stderr


@pytest.mark.parametrize(("value", "words"), [
    ("@int x", "Cannot convert 'x' to integer"),
    ("@json [", "Cannot parse as JSON"),
    ("@format {this.nope}", "can't interpolate"),
    ("@read_file {tmp}/missing", "missing does not exist"),
], ids=["int", "json", "format", "read-file"])
def test_an_environment_value_its_converter_refuses_is_one_line(tmp_path: Path, value: str, words: str) -> None:
    """ORDERFLOW_TIMEOUTS__STALL='@int x' exits 2 with one line naming the variable and why, no traceback."""
    value = value.replace("{tmp}", str(tmp_path))
    result = run("config", env={"ORDERFLOW_TIMEOUTS__STALL": value})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"invalid settings: environment ORDERFLOW_TIMEOUTS__STALL = {value!r}: " in result.stderr
    assert words in result.stderr


def test_replay_of_a_renamed_binance_dump(tmp_path: Path) -> None:
    """A dump with its symbol inside a longer name replays as is; one named my_btc.csv asks for --symbol, then replays."""
    found = run("replay", str(dump(tmp_path, "spot_BTCUSDT-aggTrades-2026-01-01_first5000.csv")), cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout.splitlines()[-1])["trades"] == 5000
    assert found.stdout.startswith("replayed 5000 BTCUSDT aggTrades")
    renamed = dump(tmp_path, "my_btc.csv")
    refused = run("replay", str(renamed), cwd=tmp_path)
    assert refused.returncode == 2 and "give it with --symbol" in refused.stderr and "symbol=" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    given = run("replay", str(renamed), "--symbol", "btcusdt", "--market", "usdm", "--json", cwd=tmp_path)
    assert given.returncode == 0, given.stderr
    events = [json.loads(line) for line in given.stdout.splitlines()]
    trades = [e for e in events if e["event"] == "trade"]
    assert len(trades) == 5000 and {t["symbol"] for t in trades} == {"BTCUSDT"}
    assert events[-1] == {**events[-1], "event": "summary", "trades": 5000, "gaps": 0}


async def start_sim(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    """`orderflow sim --port 0 ARGS` as a subprocess, and the port it printed it listens on."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow_plugin", "sim", "--port", "0", *args, cwd=ROOT,
        env={**environ, "ORDERFLOW_ENV": "testing"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    async with asyncio.timeout(10 * TIMEOUT_FACTOR):
        line = (await process.stdout.readline()).decode()
    match = re.search(r"127\.0\.0\.1:(\d+)", line)
    assert match, line
    return process, int(match.group(1))


async def receive(port: int, stream: str, count: int) -> list[dict]:
    """The first ``count`` aggTrade events a plain client gets on ``stream``."""
    events: list[dict] = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/stream?streams={stream}", max_queue=None) as ws:
        async with asyncio.timeout(10 * TIMEOUT_FACTOR):
            while len(events) < count:
                message = json.loads(await ws.recv())
                if "data" in message:
                    events.append(message["data"])
    return events


async def stop(process: asyncio.subprocess.Process) -> tuple[str, str]:
    """Ctrl-C the process; its stdout and stderr."""
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(10 * TIMEOUT_FACTOR):
        out, err = await process.communicate()
    return out.decode(), err.decode()


async def test_sim_serves_a_renamed_tape_under_the_given_symbol_and_market(tmp_path: Path) -> None:
    """`sim --tape my_dump.csv --symbol ETHUSDT --market usdm` serves its rows as ETHUSDT futures frames."""
    process, port = await start_sim("--tape", str(dump(tmp_path, "my_dump.csv", rows=50)), "--symbol", "ethusdt",
                                    "--market", "usdm", "--asap")
    try:
        events = await receive(port, "ethusdt@aggTrade", 50)
    finally:
        out, err = await stop(process)
    assert {e["s"] for e in events} == {"ETHUSDT"} and all("nq" in e for e in events), err
    assert events[0]["p"] == "87648.21000000" and json.loads(out.splitlines()[-1])["played"] == {"ETHUSDT": 50}


async def test_sim_says_when_the_tape_has_ended_and_points_at_loop() -> None:
    """After one pass of the tape, `orderflow sim` logs that it ended and that --loop repeats it."""
    process, port = await start_sim("--asap")
    assert process.stderr is not None
    try:
        assert len(await receive(port, "btcusdt@aggTrade", 5000)) == 5000
        lines: list[str] = []
        async with asyncio.timeout(10 * TIMEOUT_FACTOR):
            while not lines or "the tape has ended" not in lines[-1]:
                lines.append((await process.stderr.readline()).decode())
                assert lines[-1], "stderr closed without a word about the tape's end"
    finally:
        await stop(process)
    assert "WARNING" in lines[-1] and "run orderflow sim with --loop to repeat it" in lines[-1]


def test_sim_on_a_port_in_use_says_so_in_one_line() -> None:
    """A port another program listens on: exit 1 with one line naming the address and the reason, no traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("sim", "--port", str(port), "--duration", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"orderflow sim: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert "summary" not in result.stdout


@pytest.mark.parametrize("command,options", [
    ("replay", ["--speed SPEED replay speed (1 = original timing, 0 = as fast as the pipeline goes; default: 0.0)",
                "--duration DURATION seconds to run, 0 = whole tape (default: 0.0)"]),
    ("sim", ["--duration DURATION seconds to run, 0 = until Ctrl-C (default: 0.0)"]),
    ("stream", ["--duration DURATION seconds to run, 0 = until Ctrl-C (default: 0.0)"]),
])
def test_help_shows_a_default_of_zero(command: str, options: list[str]) -> None:
    """--help shows a default of 0.0 (equal to False, yet a real default) while still hiding None, False and []."""
    result = run(command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # wrapped lines joined
    for option in options:
        assert option in text
    assert "(default: False)" not in text and "(default: None)" not in text and "(default: [])" not in text


def test_help_shows_the_value_of_a_default_from_the_settings_and_no_empty_default() -> None:
    """--help names the setting a default comes from with its value, and shows no `(default: )` for an empty one."""
    demo = " ".join(run("demo", "--help").stdout.split())
    assert "--speed SPEED replay speed (default: settings demo.speed, 50.0)" in demo
    assert "(default: settings demo.duration, 0)" in demo
    stream = " ".join(run("stream", "--help", env={"ORDERFLOW_SYMBOLS": '["ETHUSDT"]'}).stdout.split())
    assert "(default: settings symbols, ETHUSDT)" in stream  # the settings as loaded, environment included
    collect = " ".join(run("collect", "--help").stdout.split())
    assert "(default: )" not in collect and "--name NAME this collector's name in the health stream" in collect


def test_every_pip_install_hint_quotes_its_extras() -> None:
    """`pip install 'orderflow-plugin[tls]'`, quoted everywhere: unquoted brackets are a glob pattern in zsh."""
    unquoted = []
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "orderflow_plugin").rglob("*.py"),
                 *(ROOT / "examples").glob("*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for command in re.findall(r"pip install ([^`\n]*)", line):
                words = [w for w in command.split() if "[" in w and not w.startswith(("'", '"'))]
                if words:
                    unquoted.append(f"{path.relative_to(ROOT)}:{number}: {words[0]}")
    assert not unquoted, "\n".join(unquoted)


def test_the_demo_logs_each_event_once_and_counts_attempts_from_the_last_connection() -> None:
    """A reset mid-tape: each lifecycle event is one log line, and the reconnect says which connection it is."""
    result = run("demo", "--speed", "500", "--duration", "30", "--scenario", "faults", "--json",
                 env={"ORDERFLOW_PLUGINS__ENTRY_POINTS": "true", "ORDERFLOW_LOGGING__LEVEL": "INFO"})
    assert result.returncode == 0, result.stderr
    log = result.stderr.splitlines()
    assert sum("orderflow_hooks.diagnostics: starting: symbols BTCUSDT" in line for line in log) == 1  # it ran
    assert sum("Connection reset by peer" in line for line in log) == 1, result.stderr  # it was three lines
    assert sum(" connected to " in line for line in log) == 2, result.stderr  # two connections, a line each
    assert sum("stopped: trades 5000" in line for line in log) == 1, result.stderr
    assert sum("connect attempt" in line or ": connecting to" in line for line in log) == 1, result.stderr
    assert sum(": reconnecting to" in line for line in log) == 1, result.stderr
    assert "(connection 2, attempt 1 since connection 1 ended)" in result.stderr  # not "attempt 1" as if anew
