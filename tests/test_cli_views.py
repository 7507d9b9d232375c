"""Every view of the command line works for every source: plain lines, the terminal (on a pty) and --json,
for the live stream, a replay and the Redis source (issue #30)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Pace

from .flowhelpers import TIMEOUT_FACTOR
from .test_cli_stream import parse, run_on_a_terminal, screen, start

TRADES = 300  # trades each source has to give


def seed_redis(url: str) -> None:
    """The first TRADES trades of the bundled tape in Redis, as a collector writes them."""
    import redis

    from orderflow_plugin.redisbus.keys import entry_id, trade_payload, trades_key

    client = redis.Redis.from_url(url)
    try:
        for trade in list(bundled_tape().trades())[:TRADES]:
            client.xadd(trades_key("spot", trade.symbol), {"d": trade_payload(trade)}, id=entry_id(trade.id))
    finally:
        client.close()


def tape_file(folder: Path) -> Path:
    """The first TRADES trades of the bundled tape as recorder output."""
    path = folder / "trades.jsonl"
    path.write_text("".join(json.dumps(t.as_json()) + "\n" for t in list(bundled_tape().trades())[:TRADES]))
    return path


async def run(args: list[str], mode: str, tmp_path: Path) -> tuple[list[str], str]:
    """Run the command in ``mode``: stdout's lines (a terminal's as it shows them) and stderr; asserts exit 0."""
    if mode == "terminal":  # the pty is read on a thread: the simulator serves from this test's loop
        out = await asyncio.to_thread(run_on_a_terminal, *args, stderr_path=tmp_path / "stderr.txt",
                                      timeout=40.0 * TIMEOUT_FACTOR)
        return screen(out), (tmp_path / "stderr.txt").read_text()
    process = await start(*args, *(["--json"] if mode == "json" else []))
    async with asyncio.timeout(40 * TIMEOUT_FACTOR):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode().splitlines(), err.decode()


def summary(lines: list[str]) -> dict[str, Any]:
    """The summary the command prints last."""
    last = json.loads(next(line for line in reversed(lines) if line.strip()))
    assert last["event"] == "summary"
    return last


MODES = ["plain", "terminal", "json"]


def check(lines: list[str], stderr: str, mode: str, *, table: bool = True) -> None:
    """Trades reached the view: no traceback, the symbol's row with a price (``table``: on a terminal), a summary."""
    assert "Traceback" not in stderr, stderr[-2000:]
    assert summary(lines)["trades"] > 0
    if mode == "json":
        events = parse("\n".join(lines).encode())
        assert any(e["event"] == "trade" and e["symbol"] == "BTCUSDT" for e in events)
    elif mode == "terminal" and table:
        assert any("orderflow: live aggTrade order flow" in line for line in lines), "\n".join(lines)
        rows = [line for line in lines if line.startswith("│ BTCUSDT │ ")]
        assert rows and rows[-1].split("│")[2].strip() not in ("", "-"), "\n".join(lines)  # a last price
    else:
        rows = [line for line in lines if line.startswith("BTCUSDT  last ")]
        assert rows and not rows[-1].startswith("BTCUSDT  last -"), "\n".join(lines)


@pytest.mark.parametrize("mode", MODES)
async def test_live_stream_in_every_view(mode: str, orderflow_sim_factory: Any, tmp_path: Path) -> None:
    """`orderflow stream` from the simulator shows its trades as plain lines, a terminal table and JSON."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    lines, stderr = await run(["stream", "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--duration", "2"],
                              mode, tmp_path)
    check(lines, stderr, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_replay_in_every_view(mode: str, tmp_path: Path) -> None:
    """`orderflow replay` shows its result in every view (on a terminal, the plain result line: no live table)."""
    lines, stderr = await run(["replay", str(tape_file(tmp_path)), "--speed", "1000", "--duration", "2"], mode,
                              tmp_path)
    check(lines, stderr, mode, table=False)


@pytest.mark.parametrize("mode", MODES)
async def test_redis_source_in_every_view(mode: str, orderflow_redis: Any, tmp_path: Path) -> None:
    """`orderflow stream --from redis://` shows what collectors wrote as plain lines, a terminal table and JSON."""
    seed_redis(orderflow_redis.url)
    lines, stderr = await run(["stream", "--from", orderflow_redis.url, "--start", "first", "--duration", "2"],
                              mode, tmp_path)
    check(lines, stderr, mode)
