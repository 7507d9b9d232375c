"""Deterministic simulation testing: the real ``OrderFlow`` shell in a simulated world, in virtual time.

In the manner of FoundationDB's simulation and TigerBeetle's VOPR: a real
:class:`~orderflow_plugin.OrderFlow` (staged connect with its deadlines, keepalive, silence watch,
shard supervision, backfill over httpx, checkpoints, dispatch and plugins, and under them the
pipeline, sequencer and engine) runs unchanged against the project's own simulator
(:class:`~orderflow_plugin.sim.Simulator`) on an asyncio loop in virtual time; every random choice
comes from one seed; invariants are checked as things happen; a failing seed is a one-line
reproduction. See ``docs/simtest.md``.

::

    python -m orderflow_plugin.simtest --seeds 10000
    python -m orderflow_plugin.simtest --seed 1234
    python -m orderflow_plugin.simtest --plant ping-never-fails --seeds 200

The world: :mod:`.vloop` (the loop and its clock), :mod:`.memnet` (DNS, TCP and TLS in memory),
:mod:`.world` (what a seed decides: market, faults, plugins, kills). The invariants:
:mod:`.invariants` (the checker) and :mod:`.reference` (bars from scratch). :mod:`.plants` (bugs to
catch), :mod:`.runner` (seeds, processes and hot paths), :mod:`.reach` (the only module that
touches the stream's private parts).
"""

from __future__ import annotations

from .invariants import Violation
from .plants import PLANTS, planted
from .runner import (
                     PURE_EVERY,
                     SeedResult,
                     Summary,
                     is_pure_seed,
                     replay_command,
                     run_seed,
                     run_seeds,
                     seeds_to_catch,
                     trace_lines,
)

__all__ = ["PLANTS", "PURE_EVERY", "SeedResult", "Summary", "Violation", "is_pure_seed", "planted", "replay_command",
           "run_seed", "run_seeds", "seeds_to_catch", "trace_lines"]
