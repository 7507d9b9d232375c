"""A seeded, short run of the random-fault soak (bench/soak.py --random-faults, issue #32)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR


def test_a_random_fault_soak_delivers_every_id_rest_has_after_the_market_freezes() -> None:
    """15 s of real trades at 1,000/s, every connection drawing a fault and reset every ~3 s, then the market
    freezes with its last 100 trades sent on no socket: the delivered ids equal REST's (every one, in order,
    once) within the grace. The old code delivered all but those 100: it waited for a live trade that never
    came, replacing the connection instead of fetching them.
    """
    grace = 30 * TIMEOUT_FACTOR
    run = subprocess.run([sys.executable, "bench/soak.py", "--random-faults", "--seed", "1", "--market-seconds", "15",
                          "--reset-every", "3", "--grace", str(grace)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120 * TIMEOUT_FACTOR)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "delivered == REST: yes" in run.stdout and "missing 0, out of order or repeated 0" in run.stdout
