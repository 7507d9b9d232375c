"""Run seeds: the real ``OrderFlow`` against the project's simulator on a loop in virtual time.

:func:`run_seed` builds one seed's world (:mod:`.world`) on :class:`~.vloop.VirtualLoop` over
:class:`~.memnet.Network`, starts a real stream with the checker (:mod:`.invariants`) and the
world's plugins registered, kills and restarts it when the world says, and returns what happened.
:func:`run_seeds` runs many over worker processes, in seed order, stopping at the first failure.

Hot path (issue #28): the seeds run on the compiled hot modules, and every ``pure_every``-th seed
(``seed % pure_every == pure_every - 1``) on the pure-Python ones, in a worker process started
with ``ORDERFLOW_PURE=1`` (the path is chosen when the package is imported: :mod:`..hotpath`).
A seed always runs on its own path, so ``--seed S`` replays it exactly.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import gc
import hashlib
import importlib.util
import inspect
import logging
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .. import OrderFlow, hotpath
from ..config import Settings
from ..plugins import plugin_manager
from ..sim import Simulator
from ..tape import Tape, bundled_tape
from .invariants import LOOK_EVERY, Checker, Life, Violation
from .memnet import LIFE, Network
from .plants import PLANTS, planted
from .reach import crash_a_shard, kill, one_trust_store
from .vloop import VirtualLoop
from .world import Bystander, RaisingPlugin, SlowPlugin, draw_world

__all__ = ["PURE_EVERY", "SeedResult", "Summary", "is_pure_seed", "replay_command", "run_seed", "run_seeds",
           "seeds_to_catch", "trace_lines"]

PURE_EVERY = 10  # one seed in ten runs on the pure-Python hot path
CALM = 10.0  # how much slower a busy market trades once it calms, a while after the faults stop
CALM_STRETCH = 3.0  # ... but no slower than the tape's gaps times this
_BASE: list[Tape] = []
_DEFAULTS: list[Settings] = []


@dataclass
class SeedResult:
    """How one seed went."""

    seed: int
    violation: Violation | None
    digest: str  # of its deliveries, reports and network faults: the same seed gives the same digest
    delivered: int
    played: int
    steps: int
    virtual: float
    counts: dict[str, int] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list, repr=False)
    pure: bool = False  # ran on the pure-Python hot path

    @property
    def ok(self) -> bool:
        """No invariant broke."""
        return self.violation is None


@dataclass
class Summary:
    """How a run of many seeds went."""

    start: int
    ran: int = 0
    pure: int = 0  # of them on the pure-Python hot path
    failed: SeedResult | None = None
    seconds: float = 0.0
    cpu: float = 0.0  # CPU seconds of the worker processes
    played: int = 0
    delivered: int = 0
    virtual: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def _tape(symbol: str, stretch: float, shift: int, calms: float, until: float, start: int = 0) -> Tape:
    """The bundled real tape from row ``start`` as ``symbol``'s, its gaps times ``stretch``, starting ``shift`` ms
    later.

    From ``calms`` virtual seconds on, a busy market trades up to CALM times slower (its gaps at most
    CALM_STRETCH times the tape's: a quiet market is not made quieter, so a trade a muted stream missed is
    still followed by a later one that shows the hole); only the rows it plays within ``until`` are kept.
    """
    if not _BASE:
        _BASE.append(bundled_tape())
    base = _BASE[0]
    t0 = base.rows[0].time
    start = min(start, len(base.rows) - 1)
    first = base.rows[start].time  # played as if at t0
    calm_ms, until_ms = calms * 1000, until * 1000

    calm = max(1.0, min(CALM, CALM_STRETCH / stretch))  # a busy market calms; a quiet one stays as it is

    def at(ms: int) -> int:
        offset = shift + (ms - first) * stretch
        if offset > calm_ms:
            offset = calm_ms + (offset - calm_ms) * calm
        return t0 + round(offset)

    rows = []
    for row in base.rows[start:]:
        time = at(row.time)
        if time - t0 > until_ms and rows:
            break
        rows.append(msgspec.structs.replace(row, time=time, event_time=at(row.event_time) if row.event_time else 0))
    return Tape(symbol, base.market, rows, f"{base.source} as {symbol} x{stretch:.2f}")


def _process_setup() -> None:
    """Once per process: what the machine gives every seed alike.

    httpcore asks ``import sniffio`` on every request; where sniffio is not installed, each failed
    import searches the whole path again (half a millisecond, a fifth of a quiet seed). Recording
    its absence in ``sys.modules`` gives the same ImportError at once.
    """
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def _settings_for(flow: OrderFlow) -> Settings:
    """What ``on_startup`` is given: the packaged defaults with the stream's own values written over them.

    The same as the stream's own ``Settings.defaults_for(flow)``, but the packaged file is parsed once
    per process rather than at every start (a few ms of TOML: a tenth of a seed).
    """
    if not _DEFAULTS:
        _DEFAULTS.append(Settings.defaults_for(flow))
    return _DEFAULTS[0].as_run_by(flow)


def run_seed(seed: int) -> SeedResult:
    """Run ``seed``: the real stream against the simulator, in virtual time."""
    _process_setup()
    world = draw_world(seed)
    rng = random.Random(f"{seed}-run")
    random.seed(seed)  # the shell's own jitter (backoff, retries) comes from the global generator
    network = Network(random.Random(f"{seed}-net"), world.net, world.latency)
    loop = VirtualLoop(network)
    slow: set[tuple[str, str]] = set()
    tapes = [_tape(s, x, d, world.market_calms, world.run_for + 10.0, r)
             for s, x, d, r in zip(world.symbols, world.stretch, world.shift, world.tape_start, strict=True)]
    sim = Simulator(tapes, scenario=world.scenario, pace=world.pace, port=9443,
                    ping_interval=20.0, pong_timeout=60.0)
    checker = Checker(world, loop, sim, slow)
    plugins: list[Any] = [SlowPlugin(random.Random(f"{seed}-slow"), world.slow_plugin, loop, slow),
                          RaisingPlugin(random.Random(f"{seed}-raise"), world.raising_plugin), Bystander()]
    names = ("checker", "slow", "raising", "bystander")

    folder = tempfile.mkdtemp(prefix=f"orderflow-sim-{seed}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    sequencing = world.sequencing
    if sequencing.checkpoint_path:
        sequencing = dataclasses.replace(sequencing, checkpoint_path=os.path.join(folder, sequencing.checkpoint_path))

    def build() -> OrderFlow:
        manager = plugin_manager([])
        for name, plugin in zip(names, [Life(checker), *plugins], strict=True):
            manager.register(plugin, name=name)
        flow = OrderFlow(
            world.symbols, ws_url="wss://127.0.0.1:9443", rest_url="http://127.0.0.1:9443", plugins=manager,
            timeouts=world.timeouts, reconnect=world.reconnect, limits=world.limits, sequencing=sequencing,
            flow=world.flow, reporting=world.reporting)
        flow.settings = _settings_for(flow)
        return flow

    restarting: list[bool] = []
    lives = [1]  # the running process's LIFE: its tasks and timers carry it, and a kill drops them all

    async def start(flow: OrderFlow) -> None:
        """Start ``flow`` as process ``lives[-1]``: everything it schedules belongs to that process."""
        process = contextvars.copy_context()
        process.run(LIFE.set, lives[-1])
        await loop.create_task(flow.start(), context=process)

    async def restart() -> None:
        if restarting:  # killed again while it was starting: the same restart goes on
            return
        restarting.append(True)
        assert checker.flow is not None
        kill(checker.flow, loop, lives[-1])
        lives.append(lives[-1] + 1)
        checker.new_life()
        await asyncio.sleep(rng.uniform(0.05, 3.0))  # the supervisor (systemd, docker) starts it again
        try:
            checker.flow = build()
            await start(checker.flow)
        except Exception as exc:
            checker.fail("restart", f"the restarted process did not start: {exc!r}")
        finally:
            restarting.clear()

    async def main() -> None:
        network.start = loop.time()
        network.on_link = checker.link_opened
        network.on_step = checker.after_step
        await sim.start()
        checker.flow = build()
        await start(checker.flow)
        loop.call_soon(checker.look)
        if world.shard_crash_at is not None:
            loop.call_later(world.shard_crash_at, lambda: crash_a_shard(checker.flow, rng))
        loop.call_at(network.start + world.faults_stop, sim.end_rest_faults)  # the REST faults stop with the others
        for at in world.kills:
            loop.call_at(network.start + at, lambda: loop.create_task(restart()))
        end = network.start + world.run_for
        while loop.time() < end and (checker.settled_at is None or restarting):
            await asyncio.sleep(LOOK_EVERY)
        checker.look()
        checker.finish()
        await checker.flow.stop()
        await sim.stop()

    over: list[bool] = []

    def uncaught(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A callback or task that raised with nobody to tell: the checker's own look, or the shell's glue.
        exc = context.get("exception")
        if over:  # the run's cleanup: the verdict is in
            return
        if checker.violation is None and exc is not None and not isinstance(exc, (asyncio.CancelledError,)):
            checker.fail("crash", f"{context.get('message', 'uncaught')}: {exc!r}")

    loop.set_exception_handler(uncaught)
    asyncio.set_event_loop(loop)
    root = logging.getLogger("orderflow_plugin")
    level = root.level
    root.setLevel(logging.CRITICAL + 1)
    try:
        with one_trust_store():
            loop.run_until_complete(main())
    except Exception as exc:  # the checker stopped the loop, or the run itself broke
        if checker.violation is None:
            checker.violation = Violation("crash", loop.time() - network.start, repr(exc))
    finally:
        for failure in loop.unread_failures()[:1]:  # a task that raised with nobody to tell, not yet collected
            checker.fail("crash", f"Task exception was never retrieved: {failure}")
        # The record is taken at the verdict: the teardown below runs the killed processes' leftovers, in no set order
        digest = hashlib.blake2b(digest_size=12)
        for symbol in world.symbols:
            digest.update(repr(sorted(checker.delivered[symbol].items())).encode())
        digest.update(repr(checker.trace).encode())
        digest.update(repr(network.events).encode())
        digest.update(repr(checker.violation).encode())
        over.append(True)
        loop.revive()  # the killed processes' tasks end as the live ones do: cancelled, after the verdict
        for _ in range(10):  # a task cancelled may await another's end: a few passes, until none is left
            tasks = asyncio.all_tasks(loop)
            if not tasks:
                break
            for task in tasks:
                # A task not started yet takes its first step before it is cancelled: anyio's task wrapper, cancelled
                # first, drops the coroutine it wraps unawaited (a RuntimeWarning at seed 9119, on the pure path)
                if inspect.getcoroutinestate(task.get_coro()) != inspect.CORO_CREATED:
                    task.cancel()
            try:
                loop.run_until_complete(asyncio.sleep(0))
            except RuntimeError:
                break
        root.setLevel(level)
        asyncio.set_event_loop(None)
        loop.close()
        shutil.rmtree(folder, ignore_errors=True)
    return SeedResult(seed, checker.violation, digest.hexdigest(),
                       sum(len(d) for d in checker.delivered.values()),
                       sum(sim.happened(s) for s in world.symbols), loop.steps, loop.time() - network.start,
                       dict(checker.counts, links=len(network.links), kills=len(world.kills),
                            repeats=checker.repeats, replays=checker.replays,
                            settled_early=checker.settled_at is not None), trace=checker.trace)


def is_pure_seed(seed: int, pure_every: int = PURE_EVERY) -> bool:
    """Whether ``seed`` runs on the pure-Python hot path (0: none does)."""
    return pure_every > 0 and seed % pure_every == pure_every - 1


def _worker_start(plant: str | None) -> None:
    # A worker allocates and frees asyncio's objects by the hundred thousand a seed: the cyclic collector's
    # default 700-object generation made it a tenth of a seed. What a worker has loaded is never collected.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    if plant is not None:
        PLANTS[plant].apply()  # this worker process only, for its lifetime


def _worker_seed(seed: int) -> tuple[SeedResult, float]:
    began = time.process_time()
    result = run_seed(seed)
    result.pure = not hotpath.is_compiled()
    if result.ok:
        result.trace = []  # only a failure's trace is worth sending back
    return result, time.process_time() - began


def _pool(jobs: int, plant: str | None, pure: bool) -> Any:
    """Worker processes on the compiled path (forked from this one) or on the pure path (started afresh)."""
    if not pure:
        return multiprocessing.get_context("fork").Pool(jobs, _worker_start, (plant,))
    saved = os.environ.get("ORDERFLOW_PURE")
    os.environ["ORDERFLOW_PURE"] = "1"  # a spawned worker imports the package anew: hotpath reads it then
    try:
        return multiprocessing.get_context("spawn").Pool(jobs, _worker_start, (plant,))
    finally:
        if saved is None:
            del os.environ["ORDERFLOW_PURE"]
        else:
            os.environ["ORDERFLOW_PURE"] = saved


def run_seeds(start: int, count: int, *, jobs: int = 2, plant: str | None = None, pure_every: int = PURE_EVERY,
              keep_going: bool = False) -> Summary:
    """Run seeds ``start .. start+count-1``, each on its hot path; stop at the first failure in seed order.

    ``jobs`` processes run the compiled seeds and one more the pure ones (it has a tenth of the work).
    Where this process already runs the pure path (no compiler, or ``ORDERFLOW_PURE=1``), every
    seed runs on it.
    """
    summary = Summary(start)
    seeds = range(start, start + count)
    compiled_here = hotpath.is_compiled()
    pure_seeds = [s for s in seeds if is_pure_seed(s, pure_every)] if compiled_here else []
    other = set(pure_seeds)
    compiled_seeds = [s for s in seeds if s not in other]
    began = time.perf_counter()
    with _pool(jobs, plant, pure=False) as main, _pool(1, plant, pure=True) if pure_seeds else _nothing() as pure:
        results: dict[str, Iterator[tuple[SeedResult, float]]] = {
            "main": main.imap(_worker_seed, compiled_seeds, chunksize=4)}
        if pure is not None:
            results["pure"] = pure.imap(_worker_seed, pure_seeds, chunksize=2)
        for seed in seeds:
            result, cpu = next(results["pure" if seed in other else "main"])
            summary.ran += 1
            summary.pure += result.pure
            summary.cpu += cpu
            summary.played += result.played
            summary.delivered += result.delivered
            summary.virtual += result.virtual
            for key, value in result.counts.items():
                summary.counts[key] = summary.counts.get(key, 0) + value
            if not result.ok and summary.failed is None:
                summary.failed = result
                if not keep_going:
                    break
        main.terminate()
        if pure is not None:
            pure.terminate()
    summary.seconds = time.perf_counter() - began
    return summary


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def replay_command(seed: int, plant: str | None = None) -> str:
    """The one line that replays ``seed`` (with ``plant`` planted)."""
    return f"python -m orderflow_plugin.simtest --seed {seed}" + (f" --plant {plant}" if plant else "")


def trace_lines(seed: int, plant: str | None = None, pure_every: int = PURE_EVERY) -> tuple[list[str], SeedResult]:
    """Run one seed on its own hot path and describe it: the world, the reports in virtual time, the outcome.

    A seed of the other path than this process's runs in a child process with ``ORDERFLOW_PURE`` set for it.
    """
    pure = is_pure_seed(seed, pure_every) and hotpath.is_compiled()
    if pure:
        with _pool(1, plant, pure=True) as pool:
            result, _ = pool.apply(_worker_seed_with_trace, (seed,))
    else:
        with planted(plant):
            result = run_seed(seed)
        result.pure = not hotpath.is_compiled()
    path = "pure-Python hot path" if result.pure else "compiled hot path"
    return [draw_world(seed).describe() + f"\non the {path}", *result.trace], result


def _worker_seed_with_trace(seed: int) -> tuple[SeedResult, float]:
    result = run_seed(seed)
    result.pure = not hotpath.is_compiled()
    return result, 0.0


def seeds_to_catch(name: str, start: int = 0, limit: int = 200) -> int | None:
    """How many seeds from ``start`` run until the first failure with ``name`` planted (None: not caught)."""
    with planted(name):
        for count, seed in enumerate(range(start, start + limit), 1):
            if not run_seed(seed).ok:
                return count
    return None
