"""The suite's test ids are the same in every collection: pytest-xdist workers collect it each on their own and
refuse the whole run when their ids differ (issue #25: a gzip header's timestamp in an id)."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import time

import pytest

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR


def _collect(hash_seed: str) -> list[str]:
    """The test ids of the whole suite, collected in a fresh interpreter with this PYTHONHASHSEED."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "-p", "no:xdist"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=240 * TIMEOUT_FACTOR)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


# Two collections of the whole suite take 20 s on an idle machine and over a minute beside three busy xdist workers.
@pytest.mark.timeout(600 * TIMEOUT_FACTOR)
def test_two_collections_a_second_apart_collect_the_same_ids() -> None:
    """Collected twice, in other seconds of the clock and with other string hashes, the suite has the same ids."""
    first = _collect("1")
    # Not waiting for an event: the clock itself must move on, so that an id holding the time (a gzip header, a
    # timestamp) differs. Every id of the second collection is made a whole second after every id of the first.
    time.sleep(1.05)
    second = _collect("2")
    assert len(first) > 1000  # the whole suite, not a collection that stopped early
    assert first == second, "test ids differ between two collections:\n" + "\n".join(
        difflib.unified_diff(first, second, "first", "second", lineterm="", n=0))
