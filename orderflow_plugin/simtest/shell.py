"""Run one seed of the real shell in virtual time, and check it as it runs.

Invariants (``S`` = when the faults stop, ``B`` = :meth:`~.shellworld.ShellWorld.settle`):

- **order**: per symbol, delivered ids strictly increase and each is the exchange's own trade;
- **no silent hole**: every id skipped in delivery is named by an ``on_error(where="sequence")``;
- **stages**: no connect stage runs past its deadline (first_message: plus the quiet-market look);
- **dead path**: a streaming connection whose path died is ended within ``ping_interval +
  ping_timeout`` (while reading is not paused);
- **delivery**: every trade the exchange played (REST has it) is delivered or reported by
  ``max(played, S) + B``;
- **closed bar**: no trade is delivered into a bar already closed, unless that bar is revised
  with it in the same step;
- **plugins**: every slow hook reported names the plugin that was slow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from .. import OrderFlow
from ..errors import HookTooSlow
from ..plugins import plugin_manager
from ..sim import Simulator
from ..tape import Tape, bundled_tape
from ..transport import STAGES
from .memnet import Link, Network
from .shellworld import ShellWorld, draw_world
from .vloop import VirtualLoop

__all__ = ["ShellResult", "run_shell_seed", "run_shell_seeds", "shell_trace"]


_GIVEN_UP = re.compile(r"^(\w+): aggTrade ids (\d+)\.\.(\d+) \(\d+\) were not delivered")
_BASE: list[Tape] = []


def _tape(symbol: str, stretch: float, shift: int) -> Tape:
    """The bundled real tape as ``symbol``'s, its gaps times ``stretch``, starting ``shift`` ms later."""
    if not _BASE:
        _BASE.append(bundled_tape())
    base = _BASE[0]
    t0 = base.rows[0].time

    def at(ms: int) -> int:
        return t0 + shift + round((ms - t0) * stretch)

    rows = [msgspec.structs.replace(row, time=at(row.time), event_time=at(row.event_time) if row.event_time else 0)
            for row in base.rows]
    return Tape(symbol, base.market, rows, f"{base.source} as {symbol} x{stretch:.2f}")


class Violation(Exception):
    """An invariant broke."""

    def __init__(self, invariant: str, at: float, detail: str) -> None:
        super().__init__(f"{invariant} at {at:.3f} s: {detail}")
        self.invariant = invariant
        self.at = at
        self.detail = detail

    def __reduce__(self) -> tuple[type[Violation], tuple[str, float, str]]:
        # A worker process sends it back pickled: Exception's default would call __init__ with the message only.
        return (Violation, (self.invariant, self.at, self.detail))


@dataclass
class ShellResult:
    """How one seed of the real shell went."""

    seed: int
    violation: Violation | None
    digest: str
    delivered: int
    played: int
    steps: int
    virtual: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No invariant broke."""
        return self.violation is None


class SlowPlugin:
    """Holds the loop past the hook budget on some trades (a plugin doing I/O in on_trade)."""

    def __init__(self, rng: random.Random, share: float, loop: VirtualLoop, slow: set[tuple[str, str]]) -> None:
        self.rng, self.share, self.loop, self.slow = rng, share, loop, slow

    def on_trade(self, trade: Any) -> None:
        if self.share and self.rng.random() < self.share:
            self.slow.add(("slow", "on_trade"))
            self.loop.block(self.rng.uniform(0.01, 0.8))


class RaisingPlugin:
    """Raises on some trades."""

    def __init__(self, rng: random.Random, share: float) -> None:
        self.rng, self.share = rng, share

    def on_trade(self, trade: Any) -> None:
        if self.share and self.rng.random() < self.share:
            raise ValueError(f"plugin bug on trade {trade.id}")


class Bystander:
    """Does nothing, quickly: a slow call charged to it is charged wrongly."""

    def on_trade(self, trade: Any) -> None:
        pass


class Checker:
    """The recording plugin and the invariants."""

    def __init__(self, world: ShellWorld, loop: VirtualLoop, sim: Simulator, slow: set[tuple[str, str]]) -> None:
        self.world, self.loop, self.sim, self.slow = world, loop, sim, slow
        self.flow: OrderFlow | None = None
        self.last: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.delivered: dict[str, dict[int, float]] = {s: {} for s in world.symbols}
        self.holes: list[tuple[str, int, int]] = []
        self.reported: dict[str, list[tuple[int, int]]] = {s: [] for s in world.symbols}
        self.closed_end: dict[tuple[str, str], int] = {}
        self.late: list[tuple[str, str, int, int]] = []  # symbol, window, trade time, id: waiting for a revision
        self.played_at: dict[str, list[float]] = {s: [] for s in world.symbols}  # position -> when played
        self.trace: list[str] = []
        self.counts: dict[str, int] = {"errors": 0, "connects": 0, "revised": 0, "slow_reports": 0}
        self.violation: Violation | None = None
        self.life = 1  # process lives: a kill starts the next one on the same checkpoint
        self.seen: dict[str, int] = {}  # the highest id delivered in any earlier life
        self.repeats = 0  # ids delivered again after a restart (each tagged replay)
        self.replays = 0  # deliveries tagged replay

    def fail(self, invariant: str, detail: str) -> None:
        if self.violation is None:
            self.violation = Violation(invariant, self.loop.time() - self.loop.network.start, detail)
            self.loop.stop()

    def note(self, line: str) -> None:
        self.trace.append(f"{self.loop.time() - self.loop.network.start:10.3f}  {line}")

    # Hooks (a plugin of the stream under test)

    def on_trade(self, trade: Any) -> None:
        symbol, agg_id = trade.symbol, trade.id
        last = self.last.get(symbol)
        if last is not None and agg_id <= last:
            self.fail("order", f"{symbol}: id {agg_id} delivered after id {last}")
            return
        if trade.source == "replay":
            self.replays += 1
        if agg_id <= self.seen.get(symbol, -1) and agg_id in self.delivered[symbol]:
            self.repeats += 1  # a restart delivers again what the killed process may have delivered
            if trade.source != "replay":
                self.fail("order", f"{symbol}: id {agg_id} delivered again after a restart, not tagged replay")
                return
            self.last[symbol] = agg_id
            return
        feed = self.sim.feeds[symbol]
        position = feed.position_of_id(agg_id)
        row = feed.row(position)
        if (row.id != agg_id or Decimal(row.price) != trade.price or Decimal(row.qty) != trade.qty
                or position >= self.sim.happened(symbol)):
            self.fail("order", f"{symbol}: id {agg_id} is not the exchange's trade (or was not played yet)")
            return
        if last is not None and agg_id != last + 1:
            self.holes.append((symbol, last + 1, agg_id - 1))
        self.first.setdefault(symbol, agg_id)
        self.last[symbol] = agg_id
        self.delivered[symbol].setdefault(agg_id, self.loop.time())
        for window in self.world.flow.windows:
            end = self.closed_end.get((symbol, window))
            if end is not None and trade.time < end:
                self.late.append((symbol, window, trade.time, agg_id))

    def on_metric(self, metric: Any) -> None:
        if metric.kind != "bar" or metric.closed_by == "open":
            return
        key = (metric.symbol, metric.window)
        if metric.closed_by == "revised":
            self.counts["revised"] += 1
            self.late = [x for x in self.late if not (x[:2] == key and metric.start <= x[2] < metric.end)]
        self.closed_end[key] = max(self.closed_end.get(key, 0), metric.end)

    def on_error(self, error: BaseException, where: str) -> None:
        self.counts["errors"] += 1
        self.note(f"on_error {where}: {str(error)[:160]}")
        if where.startswith("plugin:checker") and not isinstance(error, HookTooSlow):
            self.fail("checker", f"the checker itself raised: {error!r}")
        if where == "sequence":
            match = _GIVEN_UP.match(str(error))
            if match:
                self.reported[match[1]].append((int(match[2]), int(match[3])))
        if isinstance(error, HookTooSlow):
            self.counts["slow_reports"] += 1
            name = where.removeprefix("plugin:").rsplit(".", 1)[0]
            if (name, error.hook) not in self.slow:
                self.fail("plugins", f"a slow {error.hook} was charged to {name!r}, which was never slow")

    def on_connected(self, url: str, stage_timings: dict[str, float]) -> None:
        self.counts["connects"] += 1
        self.note("on_connected")

    def on_gap(self, **kwargs: Any) -> None:
        self.note(f"on_gap {kwargs.get('symbol')} {kwargs.get('first')}..{kwargs.get('last')}")

    def new_life(self) -> None:
        """The process was killed: what it delivered stays delivered; ids start afresh in the next one."""
        self.life += 1
        for symbol, last in self.last.items():
            self.seen[symbol] = max(self.seen.get(symbol, -1), last)
        self.last.clear()
        self.late.clear()  # the new process's engine starts with no closed bars
        self.closed_end.clear()
        self.note(f"process killed; life {self.life} starts")

    # Checks as it runs

    def after_step(self) -> None:
        if self.late:
            symbol, window, at, agg_id = self.late[0]
            self.fail("closed bar", f"{symbol}: trade {agg_id} (time {at}) delivered into the closed {window} bar")

    def look(self) -> None:
        """Every 0.1 virtual s: what the market played, and how long each connect stage has been running."""
        now = self.loop.time()
        for symbol in self.world.symbols:
            played = self.played_at[symbol]
            played.extend([now] * (self.sim.happened(symbol) - len(played)))
        flow = self.flow
        if flow is not None and flow._state == "running":
            t = self.world.timeouts
            for entry in flow.health()["connections"]:
                stage, spent = entry["stage"], entry["stage_for_s"]
                if stage not in STAGES or spent is None:
                    continue
                deadline = getattr(t, stage) + 0.15 + self.loop.blocked_since(now - spent)
                if stage == "first_message":  # the quiet-market look asks REST once the deadline passed
                    deadline += t.rest + 0.5
                if spent > deadline:
                    self.fail("stages", f"shard {entry['shard']}: stage {stage} has run {spent:.2f} s, "
                                        f"its deadline is {getattr(t, stage):.2f} s")
        self.loop.call_later(0.1, self.look)

    def link_opened(self, link: Link) -> None:
        """The world may end this WebSocket path later: dead (nobody told) or reset."""
        net, rng = self.loop.network, self.loop.network.rng
        if net._faulty(net.faults.dead_path):
            self.loop.call_later(rng.uniform(0.5, 15), self._die, link)
        elif net._faulty(net.faults.reset):
            self.loop.call_later(rng.uniform(0.5, 15), net.kill, link, "reset")

    def _die(self, link: Link) -> None:
        connection = link.client._protocol if link.client is not None else None
        if connection is None or link.client_closed_at is not None:
            return
        self.loop.network.kill(link, "dead")
        if getattr(connection, "stage", None) == "streaming":
            t = self.world.timeouts
            self.loop.call_later(t.ping_interval + t.ping_timeout + 0.3, self._dead_found, link, connection)

    def _dead_found(self, link: Link, connection: Any) -> None:
        if link.client_closed_at is not None or self.flow is None or self.flow._state != "running":
            return
        if connection.paused:  # a paused connection is not judged (a hole is being filled): look again
            self.loop.call_later(0.5, self._dead_found, link, connection)
            return
        t = self.world.timeouts
        assert link.dead_at is not None
        late = self.loop.time() - (link.dead_at + t.ping_interval + t.ping_timeout + 0.3)
        if self.loop.blocked_since(link.dead_at) > late:  # the loop was held: the keepalive's timers ran late
            self.loop.call_later(0.5, self._dead_found, link, connection)
            return
        self.fail("dead path", f"link {link.number} died at {link.dead_at - self.loop.network.start:.2f} s and the "
                               f"stream still holds it (bound ping {t.ping_interval:.2f} + {t.ping_timeout:.2f} s)")

    # At the end

    def finish(self) -> None:
        """The delivery bound and every hole reported."""
        for symbol, first, last in self.holes:
            if not any(a <= first and last <= b for a, b in self.reported[symbol]):
                self.fail("no silent hole", f"{symbol}: ids {first}..{last} skipped in delivery and not reported")
                return
        start, world = self.loop.network.start, self.world
        stop, bound, end = start + world.faults_stop, world.settle(), self.loop.time()
        for symbol in world.symbols:
            first = self.first.get(symbol)
            if first is None:
                continue
            feed, delivered = self.sim.feeds[symbol], self.delivered[symbol]
            reported = self.reported[symbol]
            for position in range(feed.position_of_id(first), len(self.played_at[symbol])):
                due = max(self.played_at[symbol][position], stop) + bound
                if due > end:
                    break
                agg_id = feed.row(position).id
                at = delivered.get(agg_id)
                if at is not None and at <= due:
                    continue
                if at is None and any(a <= agg_id <= b for a, b in reported):
                    continue
                played = self.played_at[symbol][position] - start
                self.fail("delivery", f"{symbol}: id {agg_id} played at {played:.2f} s "
                                      f"{'delivered at %.2f s' % (at - start) if at else 'never delivered'}; "
                                      f"due by {due - start:.2f} s")
                return


class _Life:
    """The checker as one process's plugin: a killed process's late calls are not the next one's."""

    def __init__(self, checker: Checker) -> None:
        self.checker, self.life = checker, checker.life

    def on_trade(self, trade: Any) -> None:
        if self.checker.life == self.life:
            self.checker.on_trade(trade)

    def on_metric(self, metric: Any) -> None:
        if self.checker.life == self.life:
            self.checker.on_metric(metric)

    def on_error(self, error: BaseException, where: str) -> None:
        if self.checker.life == self.life:
            self.checker.on_error(error, where)

    def on_connected(self, url: str, stage_timings: dict[str, float]) -> None:
        if self.checker.life == self.life:
            self.checker.on_connected(url, stage_timings)


def _kill(flow: OrderFlow) -> None:
    """kill -9: the kernel resets the process's sockets and releases its file lock; nothing of it runs again."""
    flow._state = "stopped"  # its timers still in the loop find a dead process
    for connection in list(flow._live):
        connection.abort()
    for task in list(flow._tasks):
        task.cancel()
    checkpointer = flow._checkpointer
    if checkpointer is not None and checkpointer.checkpoint._lock_file is not None:
        checkpointer.checkpoint._lock_file.close()
        checkpointer.checkpoint._lock_file = None


def _crash_a_shard(flow: OrderFlow, rng: random.Random) -> None:
    """A bug in a shard's supervisor: its next tick raises (the shell must report it and start the shard again)."""
    shards = flow._shards
    if not shards or flow._state != "running":
        return
    shard = rng.choice(shards)
    machine = shard.machine

    def broken(now: float) -> list[Any]:
        del machine.tick  # once
        raise RuntimeError("simulated bug in the supervisor")

    machine.tick = broken  # type: ignore[method-assign]
    shard.wake.set()


def run_shell_seed(seed: int) -> ShellResult:
    """Run ``seed``: the real stream against the simulator, in virtual time."""
    world = draw_world(seed)
    rng = random.Random(f"{seed}-run")
    random.seed(seed)  # the shell's own jitter (backoff, retries) comes from the global generator
    network = Network(random.Random(f"{seed}-net"), world.net, world.latency)
    loop = VirtualLoop(network)
    slow: set[tuple[str, str]] = set()
    tapes = [_tape(s, x, d) for s, x, d in zip(world.symbols, world.stretch, world.shift, strict=True)]
    sim = Simulator(tapes, scenario=world.scenario, pace=world.pace, port=9443,
                    ping_interval=20.0, pong_timeout=60.0)
    checker = Checker(world, loop, sim, slow)
    plugins: list[Any] = [checker, SlowPlugin(random.Random(f"{seed}-slow"), world.slow_plugin, loop, slow),
               RaisingPlugin(random.Random(f"{seed}-raise"), world.raising_plugin), Bystander()]
    names = ("checker", "slow", "raising", "bystander")

    folder = tempfile.mkdtemp(prefix=f"orderflow-sim-{seed}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    sequencing = world.sequencing
    if sequencing.checkpoint_path:
        sequencing = dataclasses.replace(sequencing, checkpoint_path=os.path.join(folder, sequencing.checkpoint_path))

    def build() -> OrderFlow:
        manager = plugin_manager([])
        for name, plugin in zip(names, [_Life(checker), *plugins[1:]], strict=True):
            manager.register(plugin, name=name)
        return OrderFlow(
            world.symbols, ws_url="wss://127.0.0.1:9443", rest_url="http://127.0.0.1:9443", plugins=manager,
            timeouts=world.timeouts, reconnect=world.reconnect, limits=world.limits, sequencing=sequencing,
            flow=world.flow, reporting=world.reporting)

    restarting: list[bool] = []

    async def restart() -> None:
        if restarting:  # killed again while it was starting: the same restart goes on
            return
        restarting.append(True)
        assert checker.flow is not None
        _kill(checker.flow)
        checker.new_life()
        await asyncio.sleep(rng.uniform(0.05, 3.0))  # the supervisor (systemd, docker) starts it again
        try:
            checker.flow = build()
            await checker.flow.start()
        except Exception as exc:
            checker.fail("restart", f"the restarted process did not start: {exc!r}")
        finally:
            restarting.clear()

    async def main() -> None:
        network.start = loop.time()
        network.on_link = checker.link_opened
        network.on_step = checker.after_step
        await sim.start()
        flow = checker.flow = build()
        await flow.start()
        loop.call_soon(checker.look)
        if world.shard_crash_at is not None:
            loop.call_later(world.shard_crash_at, lambda: _crash_a_shard(checker.flow, rng))
        for at in world.kills:
            loop.call_at(network.start + at, lambda: loop.create_task(restart()))
        await asyncio.sleep(world.run_for)
        checker.look()
        checker.finish()
        await checker.flow.stop()
        await sim.stop()

    asyncio.set_event_loop(loop)
    root = logging.getLogger("orderflow_plugin")
    level = root.level
    root.setLevel(logging.CRITICAL + 1)
    try:
        loop.run_until_complete(main())
    except RuntimeError as exc:  # the checker stopped the loop
        if checker.violation is None:
            raise Violation("crash", loop.time() - network.start, repr(exc)) from exc
    finally:
        root.setLevel(level)
        for task in asyncio.all_tasks(loop):
            task.cancel()
        try:
            loop.run_until_complete(asyncio.sleep(0))
        except RuntimeError:
            pass
        asyncio.set_event_loop(None)
        loop.close()
        shutil.rmtree(folder, ignore_errors=True)
    digest = hashlib.blake2b(digest_size=12)
    for symbol in world.symbols:
        digest.update(repr(sorted(checker.delivered[symbol].items())).encode())
    digest.update(repr(checker.trace).encode())
    digest.update(repr(network.events).encode())
    digest.update(repr(checker.violation).encode())
    return ShellResult(seed, checker.violation, digest.hexdigest(),
                       sum(len(d) for d in checker.delivered.values()),
                       sum(sim.happened(s) for s in world.symbols), loop.steps, loop.time() - network.start,
                       dict(checker.counts, links=len(network.links), kills=len(world.kills),
                            repeats=checker.repeats, replays=checker.replays))


def _shell_worker_start(plant: str | None) -> None:
    if plant is not None:
        from .shellplants import SHELL_PLANTS

        SHELL_PLANTS[plant].apply()  # this worker process only, for its lifetime


def _shell_worker_seed(seed: int) -> ShellResult:
    return run_shell_seed(seed)


def run_shell_seeds(start: int, count: int, *, jobs: int = 2,
                    plant: str | None = None) -> tuple[int, ShellResult | None, dict[str, int]]:
    """Run real-shell seeds ``start .. start+count-1`` over ``jobs`` processes; stop at the lowest failing one.

    Returns how many ran, the first failure (or None) and the summed counts.
    """
    import multiprocessing

    ran, failed, counts = 0, None, {}
    with multiprocessing.get_context().Pool(jobs, _shell_worker_start, (plant,)) as pool:
        for result in pool.imap(_shell_worker_seed, range(start, start + count)):
            ran += 1
            for key, value in result.counts.items():
                counts[key] = counts.get(key, 0) + value
            if not result.ok:
                failed = result
                break
        pool.terminate()
    return ran, failed, counts


def shell_trace(seed: int) -> tuple[list[str], ShellResult]:
    """Run one seed and describe it: the world, the reports in virtual time, the network's faults, the outcome."""
    lines: list[str] = []
    original = Checker.finish

    def keep(self: Checker) -> None:
        lines.extend(self.trace)
        original(self)

    Checker.finish = keep  # type: ignore[method-assign]
    try:
        result = run_shell_seed(seed)
    finally:
        Checker.finish = original  # type: ignore[method-assign]
    return [draw_world(seed).describe(), *lines], result
