"""One seed's world: a market, a network, faults, plugins, kills, all drawn from the seed.

The stream under test is a real :class:`~orderflow_plugin.OrderFlow` (connect stages, keepalive,
silence watch, shard supervision, backfill over httpx, dispatch and plugins); the exchange is
the project's own :class:`~orderflow_plugin.sim.Simulator` (websockets' server protocol and its
REST API). Both run on :class:`~.vloop.VirtualLoop` over :class:`~.memnet.Network`.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..options import Flow, Limits, Reconnect, Reporting, Sequencing, Timeouts
from ..sim.feed import Pace
from ..sim.scenario import Fault, Scenario
from .memnet import NetFaults

if TYPE_CHECKING:
    from .vloop import VirtualLoop

__all__ = ["Bystander", "RaisingPlugin", "SlowPlugin", "World", "WorldPlugin", "draw_world"]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MARKET_AFTER_FAULTS = 5.0  # virtual s the market trades at its pace once the faults stop
TAPE_STARTS = 4000  # a symbol's tape starts at one of the bundled tape's first rows (it has 5,000)
WINDOWS = (("1s",), ("1s", "5s"), ("2s",), ("1s", "1m"))


@dataclass(frozen=True)
class World:
    """Everything one seed drew."""

    seed: int
    symbols: tuple[str, ...]
    streams_per_connection: int
    stretch: tuple[float, ...]  # per symbol: the real tape's gaps times this (0.3: busy .. 30: a quiet market)
    shift: tuple[int, ...]  # per symbol: ms its tape starts after the first
    timeouts: Timeouts
    reconnect: Reconnect
    limits: Limits
    sequencing: Sequencing
    flow: Flow
    reporting: Reporting
    scenario: Scenario
    net: NetFaults
    latency: tuple[float, float]
    slow_plugin: float  # share of trades on which the slow plugin holds the loop past the budget
    raising_plugin: float  # share of trades on which the raising plugin raises
    shard_crash_at: float | None  # a shard task meets a bug then (virtual seconds after the start)
    kills: tuple[float, ...]  # the process dies then (kill -9) and a new one starts on the same checkpoint
    faults_stop: float
    run_for: float
    tape_start: tuple[int, ...] = ()  # per symbol: the row of the real tape it starts at
    trace: list[str] = field(default_factory=list, compare=False)

    @property
    def market_calms(self) -> float:
        """When the market starts trading ten times slower (virtual s): a while after the faults stop, so the
        settling run that checks every trade is delivered costs timers more than trades."""
        return self.faults_stop + MARKET_AFTER_FAULTS

    @property
    def pace(self) -> Pace:
        """How fast the simulator plays the tape."""
        return Pace(speed=1.0)  # the tapes' own times (stretched): trade times keep step with the clock

    def settle(self) -> float:
        """How long after the faults stop every trade must have been delivered or reported."""
        t, r, lim = self.timeouts, self.reconnect, self.limits
        stages = t.resolve + t.tcp_connect + t.tls + t.http_upgrade + t.subscribed + t.first_message
        # each try, and the backoff after it: backfill's REST retries wait at most 0.2 * 2**attempt s, 5 s at most
        rest = (t.rest + min(5.0, 0.2 * 2**lim.rest_retries)) * (lim.rest_retries + 1)
        return (stages + rest + r.backoff_max + 5.0  # a connect that fails at every stage, then the backoff
                + t.stall + t.ping_interval + t.ping_timeout + 2 * rest  # a silent stream found, then filled
                + self.flow.bar_close_grace + 10.0)

    def describe(self) -> str:
        """The world in a few lines."""
        return "\n".join([
            f"seed {self.seed}: {', '.join(self.symbols)} ({self.streams_per_connection} per connection), "
            f"tape gaps x {', '.join(f'{x:.2f}' for x in self.stretch)}"
            f" from rows {', '.join(str(r) for r in self.tape_start)},"
            f" faults stop at {self.faults_stop:.1f} s, the market calms at {self.market_calms:.1f} s,"
            f" run {self.run_for:.1f} s",
            f"timeouts {self.timeouts}", f"reconnect {self.reconnect}", f"network {self.net}",
            f"connection faults {[[f.kind for f in c] for c in self.scenario.connections]}",
            f"rest faults {[(f.kind, f.count) for f in self.scenario.rest]}",
            f"plugins: slow {self.slow_plugin:.3f}, raising {self.raising_plugin:.3f}; shard crash at "
            f"{self.shard_crash_at}; process killed at {', '.join(f'{k:.1f}' for k in self.kills) or 'never'}"
            + (f" (checkpoint every {self.sequencing.checkpoint_interval:.2f} s)" if self.kills else ""),
        ])


_CONNECTION_FAULTS = ("hang_before_handshake", "slow_handshake", "http_status", "hang_after_handshake",
                      "blackhole_after", "mute_after", "reset_after", "close_after", "server_shutdown_after",
                      "skip_ids", "duplicate_ids", "out_of_order", "malformed_after", "max_age")


def _connection_fault(rng: random.Random) -> Fault:
    kind = rng.choice(_CONNECTION_FAULTS)
    after = rng.randint(0, 120)
    if kind == "slow_handshake":
        return Fault(kind, seconds=rng.uniform(0.1, 20.0))
    if kind == "http_status":
        status = rng.choice((429, 503, 500))
        return Fault(kind, status=status, retry_after=rng.randint(1, 4) if status == 429 else None)
    if kind in ("skip_ids", "duplicate_ids", "out_of_order"):
        return Fault(kind, after=after, count=rng.randint(1, 8))
    if kind == "close_after":
        return Fault(kind, after=after, code=rng.choice((1001, 1008, 1011)))
    if kind == "server_shutdown_after":
        return Fault(kind, after=after, seconds=rng.uniform(0.5, 5.0))
    if kind == "malformed_after":
        return Fault(kind, after=after, variant=rng.choice(("truncated", "not_json", "wrong_types")))
    if kind == "max_age":
        return Fault(kind, seconds=rng.uniform(3.0, 30.0))
    return Fault(kind, after=after)


def _rest_fault(rng: random.Random) -> Fault:
    kind = rng.choice(("rest_hang", "rest_status", "rest_short_page", "rest_empty", "rest_slow_body"))
    count = rng.randint(1, 3)
    if kind == "rest_status":
        return Fault(kind, status=rng.choice((500, 503)), count=count)
    if kind == "rest_short_page":
        return Fault(kind, after=rng.randint(1, 50), count=count)
    if kind == "rest_slow_body":
        return Fault(kind, size=rng.choice((64, 512)), seconds=rng.uniform(0.01, 0.3), count=count)
    return Fault(kind, count=count)


def draw_world(seed: int) -> World:
    """The world of ``seed``."""
    rng = random.Random(seed)
    symbols = tuple(rng.sample(SYMBOLS, rng.randint(1, 3)))
    u = rng.uniform
    # Deadlines short enough that a seed settles within a minute or two of virtual time (the cost of a seed
    # is mostly the shell's timers per virtual second), long enough that every stage and retry is exercised.
    timeouts = Timeouts(resolve=u(0.3, 3), tcp_connect=u(0.3, 3), tls=u(0.3, 3), http_upgrade=u(0.3, 4),
                        subscribed=u(0.3, 4), first_message=u(0.5, 5), ping_interval=u(0.5, 2), ping_timeout=u(0.5, 2),
                        close=u(0.5, 2), stall=u(3, 10), silence_floor=u(1, 3), rest=u(0.3, 2))
    reconnect = Reconnect(backoff_initial=u(0.05, 1), backoff_max=u(1, 4), backoff_factor=2.0)
    limits = Limits(rest_retries=rng.randint(1, 3), streams_per_connection=rng.choice((1, 2, 4)))
    checkpoint = rng.random() < 0.4  # its path is the run's own (shell.py); only backfill can fill a restart's hole
    sequencing = Sequencing(reorder_window=u(0.05, 0.5), backfill=checkpoint or rng.random() < 0.9,
                            checkpoint_path="checkpoint.json" if checkpoint else "", checkpoint_interval=u(0.3, 3))
    flow = Flow(windows=rng.choice(WINDOWS), bar_close_grace=u(0.5, 3), snapshot_interval=u(0.5, 3))
    reporting = Reporting(slow_hook_ms=5.0, report_interval=u(1, 30), loop_block_threshold=0.0,
                          stage_warning=rng.choice((0.0, 0.0, 0.0, 0.5)))  # its watch wakes 10 times a s
    faults_stop = u(5, 15)
    hostile = rng.random()  # how hostile this seed is, from calm to rough
    connections = [[_connection_fault(rng)] if rng.random() < hostile * 0.6 else [] for _ in range(40)]
    rest = [_rest_fault(rng) for _ in range(rng.randint(0, int(hostile * 6)))]
    p = hostile * 0.15
    net = NetFaults(stop=faults_stop, dns_fail=u(0, p), dns_stall=u(0, p / 2), tcp_refuse=u(0, p),
                    tcp_stall=u(0, p / 2), tls_fail=u(0, p / 2), tls_stall=u(0, p / 2), dead_path=u(0, p * 2),
                    reset=u(0, p))
    world = World(
        seed=seed, symbols=symbols, streams_per_connection=limits.streams_per_connection,
        stretch=tuple(rng.choice((u(0.3, 1), u(1, 3), u(5, 30))) for _ in symbols),
        shift=tuple(rng.randint(0, 3000) for _ in symbols),
        timeouts=timeouts, reconnect=reconnect, limits=limits, sequencing=sequencing, flow=flow,
        reporting=reporting, scenario=Scenario(connections=connections, rest=rest), net=net,
        latency=(u(0.001, 0.01), u(0.01, 0.08)),
        slow_plugin=rng.choice((0.0, 0.002, 0.02)), raising_plugin=rng.choice((0.0, 0.001, 0.05)),
        shard_crash_at=u(1, faults_stop) if rng.random() < 0.2 else None,
        kills=tuple(sorted(u(1, faults_stop) for _ in range(rng.randint(1, 3)))) if checkpoint else (),
        faults_stop=faults_stop, run_for=0.0)
    if rng.random() < 0.35:  # drawn last, so the draws above stay as they were: a stream that goes silent early
        connections[rng.randrange(4)] = [Fault("mute_after", after=rng.randint(0, 30))]
        world = dataclasses.replace(world, scenario=Scenario(connections=connections, rest=rest))
    # Drawn last too: where in the tape each symbol starts, so a short world's trades are not always the tape's
    # first few hundred ids (a bug that shows on some ids only, one in 1000, needs them to vary)
    tape_start = tuple(rng.randrange(TAPE_STARTS) for _ in symbols)
    return dataclasses.replace(world, run_for=faults_stop + world.settle() + 5.0, tape_start=tape_start)


# The plugins of the world: each seed registers them beside the checker (the rates come from the world)

class WorldPlugin:
    """A plugin of the world whose ``dir()`` is its hooks: the shell's ``register`` scans every name
    (pluggy reads each statically: about 30 names of ``object`` per plugin, at every process start)
    and none of the others is a hook, so it registers exactly the same hooks, sooner."""

    def __dir__(self) -> list[str]:
        return [name for name in vars(type(self)) if name.startswith("on_")]


class SlowPlugin(WorldPlugin):
    """Holds the loop past the hook budget on some trades (a plugin doing I/O in on_trade)."""

    def __init__(self, rng: random.Random, share: float, loop: VirtualLoop, slow: set[tuple[str, str]]) -> None:
        self.rng, self.share, self.loop, self.slow = rng, share, loop, slow

    def on_trade(self, trade: Any) -> None:
        if self.share and self.rng.random() < self.share:
            self.slow.add(("slow", "on_trade"))
            self.loop.block(self.rng.uniform(0.01, 0.8))


class RaisingPlugin(WorldPlugin):
    """Raises on some trades."""

    def __init__(self, rng: random.Random, share: float) -> None:
        self.rng, self.share = rng, share

    def on_trade(self, trade: Any) -> None:
        if self.share and self.rng.random() < self.share:
            raise ValueError(f"plugin bug on trade {trade.id}")


class Bystander(WorldPlugin):
    """Does nothing, quickly: a slow call charged to it is charged wrongly."""

    def on_trade(self, trade: Any) -> None:
        pass
