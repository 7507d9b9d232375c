"""The real-shell simulation: one seed repeats exactly, and every bug planted in the real shell is caught."""

from __future__ import annotations

import pytest

from orderflow_plugin.simtest.shell import run_shell_seed
from orderflow_plugin.simtest.shellplants import SHELL_PLANTS, seeds_to_catch

# Seeds from 0 to the first failure, measured on the merged parts 15-19 (docs/simtest.md has them from three
# starts): ping 20, stages 20, silent stream 7, crashed shard 3, slow hook 2, checkpoint 7. Each must be caught
# within about three times that.
_WITHIN = {
    "ping-never-fails": 60,
    "stages-without-deadline": 60,
    "silent-stream-judged-quiet": 20,
    "crashed-shard-not-restarted": 10,
    "slow-hook-wrong-plugin": 6,
    "checkpoint-before-delivery": 20,
}


def test_every_shell_plant_has_a_bound() -> None:
    """Each plant in the real shell has a seed bound in this test."""
    assert set(_WITHIN) == set(SHELL_PLANTS)


@pytest.mark.parametrize("name", sorted(_WITHIN), ids=sorted(_WITHIN))
def test_a_bug_planted_in_the_real_shell_is_caught(name: str) -> None:
    """The real-shell simulation fails within a few seeds once the bug is planted in the real module."""
    caught = seeds_to_catch(name, 0, _WITHIN[name])
    assert caught is not None, f"{name} not caught within {_WITHIN[name]} seeds"


def test_the_same_seed_repeats_exactly() -> None:
    """A seed replayed gives the same deliveries, reports and network faults (its digest); seed 14 has kills."""
    first, again = run_shell_seed(14), run_shell_seed(14)
    assert first.ok, first.violation
    assert first.digest == again.digest
    assert first.delivered > 0


def test_the_unplanted_seeds_pass() -> None:
    """Without a plant, the first seeds hold every invariant (the real shell keeps its promises)."""
    for seed in range(4):
        result = run_shell_seed(seed)
        assert result.ok, f"seed {seed}: {result.violation}"
