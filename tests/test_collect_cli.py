"""`orderflow collect` as a user runs it: a real subprocess, the simulator and a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

from orderflow_plugin.sim import Pace

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR


async def test_collect_logs_its_progress_while_it_runs_and_names_redis_duplicates_apart(
    orderflow_redis: Any, orderflow_sim_factory: Any
) -> None:
    """A line once the first trade is in Redis (it printed nothing until it stopped); one `duplicates` per meaning."""
    sim = await orderflow_sim_factory(pace=Pace(rate=200))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderflow_plugin", "collect", "--to", orderflow_redis.url, "--ws-url", sim.ws_url,
        "--rest-url", sim.rest_url, cwd=ROOT, env={**env, "ORDERFLOW_ENV": "testing"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stderr is not None
    seen = []
    try:
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            while "collected: " not in (line := (await process.stderr.readline()).decode()):
                assert line, "collect ended without a progress line:\n" + "".join(seen)
                seen.append(line)
        assert process.returncode is None  # said while it runs, not in the summary at the end
        assert "trades written to Redis" in line
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
    out, _ = await process.communicate()
    assert process.returncode == 0
    summary = json.loads(out.decode().splitlines()[-1])
    assert "duplicates" in summary and "already_in_redis" in summary["redis"] and "duplicates" not in summary["redis"]
    assert summary["redis"]["written"] > 0
