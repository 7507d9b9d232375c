"""Every command whose stdout reader leaves early (`orderflow demo | head -1`) ends quietly, on a real pipe."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from orderflow_plugin.sim import Pace

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR

TAPE = ROOT / "orderflow_plugin" / "data" / "BTCUSDT-aggTrades-2026-01-01_first5000.csv.gz"
QUIET_CODES = (0, 128 + signal.SIGPIPE, -signal.SIGPIPE)  # exit 0, or as a process SIGPIPE ended

# (command line, lines read before the reader leaves); {ws}, {rest} and {redis} are filled in per test.
COMMANDS = {
    "config": (["config"], 0),
    "help": (["stream", "--help"], 0),
    "demo": (["demo"], 1),
    "demo-json": (["demo", "--json"], 2),
    "demo-json-unread": (["demo", "--json"], 0),
    "replay": (["replay", str(TAPE)], 0),
    "replay-json": (["replay", str(TAPE), "--json"], 2),
    "sim": (["sim", "--port", "0", "--duration", "1"], 0),
    # the doctor's checks take milliseconds here: read after its first line, the rest would already be in the pipe
    "doctor": (["doctor", "--ws-url", "{ws}", "--rest-url", "{rest}"], 0),
    "doctor-json": (["doctor", "--ws-url", "{ws}", "--rest-url", "{rest}", "--json"], 0),
    "stream": (["stream", "--ws-url", "{ws}", "--rest-url", "{rest}", "--duration", "30"], 1),
    "stream-json": (["stream", "--ws-url", "{ws}", "--rest-url", "{rest}", "--json", "--duration", "30"], 2),
    "collect": (["collect", "--to", "{redis}", "--ws-url", "{ws}", "--rest-url", "{rest}", "--duration", "2"], 0),
}


async def run_and_leave(args: list[str], lines: int, stderr_path: Path) -> tuple[int | None, str]:
    """Run ``orderflow ARGS`` with stdout on a pipe whose reader closes after ``lines`` lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    env["ORDERFLOW_ENV"] = "testing"
    read_end, write_end = os.pipe()
    with open(stderr_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orderflow_plugin", *args, cwd=ROOT, env=env, stdout=write_end, stderr=stderr)
    os.close(write_end)
    reader = os.fdopen(read_end, "rb")
    try:
        async with asyncio.timeout(30 * TIMEOUT_FACTOR):
            for _ in range(lines):
                assert await asyncio.to_thread(reader.readline), "the command ended before writing its lines"
    finally:
        reader.close()  # the reader leaves, as `head` does
    try:
        async with asyncio.timeout(30 * TIMEOUT_FACTOR):
            code = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        code = None
    return code, stderr_path.read_text(errors="replace")


@pytest.mark.parametrize("name", list(COMMANDS), ids=list(COMMANDS))
async def test_a_reader_that_leaves_ends_the_command_quietly(
    name: str, tmp_path: Path, orderflow_sim_factory, request: pytest.FixtureRequest
) -> None:
    """The command stops soon, exits 0 or with SIGPIPE's code, and prints no traceback nor plugin error."""
    args, lines = COMMANDS[name]
    sim = await orderflow_sim_factory(pace=Pace(rate=200))
    redis = request.getfixturevalue("orderflow_redis").url if name == "collect" else ""
    args = [a.format(ws=sim.ws_url, rest=sim.rest_url, redis=redis) for a in args]
    code, stderr = await run_and_leave(args, lines, tmp_path / "stderr.txt")
    assert code in QUIET_CODES, f"exit {code}: {stderr[-2000:]}"
    for noise in ("Traceback", "BrokenPipe", "Exception ignored", "raised"):
        assert noise not in stderr, stderr[-2000:]
