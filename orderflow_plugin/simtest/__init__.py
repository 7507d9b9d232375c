"""Deterministic simulation testing: the real ``Pipeline`` and ``Supervisor`` in a simulated world.

In the manner of FoundationDB's simulation and TigerBeetle's VOPR: the stream's real sans-I/O
logic (:class:`~orderflow_plugin.pipeline.Pipeline`, :class:`~orderflow_plugin.supervisor.Supervisor`,
and through them the decoder, sequencer and engine) runs against a simulated exchange, network and
REST in virtual time; every random choice comes from one seed; invariants are checked after every
step; a failing seed is a one-line reproduction. See ``docs/simtest.md``.

::

    python -m orderflow_plugin.simtest --seeds 10000
    python -m orderflow_plugin.simtest --seed 1234
    python -m orderflow_plugin.simtest --plant drop-one-in-10000 --seeds 2000

Modules: :mod:`.world` (what a seed decides), :mod:`.exchange` (timelines, REST), :mod:`.network`
and :mod:`.messages` (connections and what they raise), :mod:`.harness` (clock and wiring),
:mod:`.recorder` (the sink) and :mod:`.invariants`, :mod:`.reference` (bars from scratch),
:mod:`.plants` (bugs to catch), :mod:`.known` (bugs of the real code it found), :mod:`.runner`
(seeds and processes).

The REAL shell (``--shell``): :mod:`.vloop` (an asyncio loop in virtual time), :mod:`.memnet` (its
in-memory DNS/TCP/TLS), :mod:`.shellworld` (what a seed decides), :mod:`.shell` (a real
``OrderFlow`` against the project's simulator, and the invariants), :mod:`.shellplants` (bugs
planted in the real shell modules).
"""

from __future__ import annotations

from .invariants import Violation
from .plants import PLANTS, planted
from .runner import SeedResult, Summary, replay_command, run_seed, run_seeds, trace_lines

__all__ = ["PLANTS", "SeedResult", "Summary", "Violation", "planted", "replay_command", "run_seed", "run_seeds",
           "trace_lines"]
