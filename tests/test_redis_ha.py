"""High availability over Redis: two collectors, random SIGKILLs, and Redis still equal to the tape."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from orderflow_plugin.redisbus.drill import kill_drill
from orderflow_plugin.sim import Pace
from orderflow_plugin.tape import bundled_tape


@pytest.mark.timeout(240)
async def test_two_collectors_killed_at_random_lose_and_repeat_nothing(orderflow_redis: Any, orderflow_sim_factory: Any,
                                                                       tmp_path: Path) -> None:
    """Collectors SIGKILLed at random (once both at the same time) leave every played trade in Redis exactly once."""
    seed = int(os.environ.get("DRILL_SEED", random.randrange(1_000_000)))
    sim = await orderflow_sim_factory(bundled_tape(), pace=Pace(rate=250))  # 5,000 real trades in 20 s
    result = await kill_drill(orderflow_redis.url, sim, tmp_path, seed=seed)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("collector*.log")))
    assert result.ok, f"DRILL_SEED={seed}: {result}\n{logs}"
    assert result.kills >= 5 and result.played == 5000, result
