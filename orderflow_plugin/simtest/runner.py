"""Running seeds: one (with its trace), or many over worker processes, stopping at the first failure.

Logging from the code under test is silenced here (the trace records every hook call instead),
and a planted bug is applied in each worker process only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .harness import Simulation
from .invariants import Violation
from .plants import PLANTS, planted

__all__ = ["SeedResult", "Summary", "replay_command", "run_seed", "run_seeds", "trace_lines"]


@dataclass(frozen=True)
class SeedResult:
    """How one seed went."""

    seed: int
    violation: Violation | None
    digest: str  # of the trace and the delivered ids: the same seed gives the same digest
    published: int
    delivered: int
    steps: int
    virtual: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No invariant was broken."""
        return self.violation is None


@dataclass
class Summary:
    """How a run of many seeds went."""

    start: int
    ran: int = 0
    failed: SeedResult | None = None
    seconds: float = 0.0
    published: int = 0
    delivered: int = 0
    virtual: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Seeds per second of wall time."""
        return self.ran / self.seconds if self.seconds else 0.0


def replay_command(seed: int, plant: str | None = None, allow_known: bool = False) -> str:
    """The one line that replays ``seed``."""
    return (f"python -m orderflow_plugin.simtest --seed {seed}" + (f" --plant {plant}" if plant else "")
            + (" --allow-known" if allow_known else ""))


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The code under test logs every reconnect and gap: not wanted ten thousand times over."""
    root = logging.getLogger("orderflow_plugin")
    level = root.level
    root.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        root.setLevel(level)


def simulate(seed: int, allow_known: bool = False) -> tuple[Simulation, SeedResult]:
    """Run ``seed`` with whatever is planted now; the simulation (for its trace) and the result."""
    sim = Simulation(seed, allow_known=allow_known)
    violation = sim.run()
    recorder = sim.recorder
    digest = hashlib.blake2b(digest_size=12)
    digest.update(repr(recorder.trace).encode())
    for symbol in sim.world.symbols:
        digest.update(repr([t.id for t in recorder.trades[symbol]]).encode())
        digest.update(repr([(b.window, b.start, b.closed_by) for b, _ in recorder.bars[symbol]]).encode())
    digest.update(repr(violation).encode())
    published = sum(t.published(sim.now) for t in sim.exchange.timelines.values())
    delivered = sum(len(trades) for trades in recorder.trades.values())
    counts = dict(recorder.counts)
    for shard in sim.shards:  # the supervisors' own counters
        for key in ("rotations", "reconnects"):
            counts[key] = counts.get(key, 0) + shard.sup.counters[key]
    counts.update({f"known:{name}": 1 for name in recorder.known})  # seeds where each known bug showed
    return sim, SeedResult(seed, violation, digest.hexdigest(), published, delivered, sim.steps, sim.now, counts)


def run_seed(seed: int, plant: str | None = None, *, allow_known: bool = False) -> SeedResult:
    """Run one seed, with ``plant`` planted for its duration."""
    with quiet_logs(), planted(plant):
        return simulate(seed, allow_known)[1]


def trace_lines(seed: int, plant: str | None = None, *, allow_known: bool = False) -> tuple[list[str], SeedResult]:
    """Run one seed and describe it: the world, every hook call in virtual time, the outcome."""
    with quiet_logs(), planted(plant):
        sim, result = simulate(seed, allow_known)
    lines = [sim.world.describe()]
    lines += [f"{when:10.3f}  {hook:24} {detail}" for when, hook, detail in sim.recorder.trace]
    return lines, result


_allow_known = False  # set in each worker process by _worker_start


def _worker_start(plant: str | None, allow_known: bool) -> None:
    global _allow_known
    _allow_known = allow_known
    logging.getLogger("orderflow_plugin").setLevel(logging.CRITICAL + 1)
    if plant is not None:
        PLANTS[plant].apply()  # this process only, for its lifetime


def _worker_seed(seed: int) -> SeedResult:
    return simulate(seed, _allow_known)[1]


def run_seeds(start: int, count: int, *, jobs: int = 2, plant: str | None = None, keep_going: bool = False,
              allow_known: bool = False, progress: bool = False) -> Summary:
    """Run seeds ``start .. start+count-1`` in order over ``jobs`` processes; stop at the first failure
    (the lowest failing seed) unless ``keep_going``."""
    summary = Summary(start)
    began = time.perf_counter()
    seeds = range(start, start + count)
    if jobs <= 1:
        with quiet_logs(), planted(plant):
            _collect(summary, (simulate(seed, allow_known)[1] for seed in seeds), keep_going, progress, count)
    else:
        with multiprocessing.get_context().Pool(jobs, _worker_start, (plant, allow_known)) as pool:
            _collect(summary, pool.imap(_worker_seed, seeds, chunksize=max(1, min(50, count // (jobs * 8)))),
                     keep_going, progress, count)
            pool.terminate()
    summary.seconds = time.perf_counter() - began
    return summary


def _collect(summary: Summary, results: Iterator[SeedResult], keep_going: bool, progress: bool, count: int) -> None:
    step = max(1, count // 10)
    for result in results:
        summary.ran += 1
        summary.published += result.published
        summary.delivered += result.delivered
        summary.virtual += result.virtual
        for key, value in result.counts.items():
            summary.counts[key] = summary.counts.get(key, 0) + value
        if not result.ok and summary.failed is None:
            summary.failed = result
            if not keep_going:
                return
        if progress and summary.ran % step == 0:
            print(f"  {summary.ran}/{count} seeds", flush=True)
