"""One seed's world, drawn up front: symbols and shards, how each symbol trades, the stream's options,
the fault schedule, when faults stop, and the liveness bounds that follow from all of these.

Everything comes from the one ``random.Random(seed)`` the harness owns, in a fixed order, so a
seed is a complete description of a run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from ..liveness import TRADE_GRACE
from ..options import Flow, Limits, Reconnect, Sequencing, Timeouts

__all__ = ["CONNECT_LATENCY", "EPOCH_MS", "NETWORK_LATENCY", "RETRY_AFTER_MAX", "SHUTDOWN_CLOSE", "SWAP_DELAY",
           "TAIL_SHARE", "Activity", "Faults", "World", "draw_world"]

EPOCH_MS = 1_767_225_600_000  # 2026-01-01: trade times are this plus the virtual clock, in ms
CONNECT_LATENCY = 0.05  # seconds a connect stage that succeeds or fails takes at most
NETWORK_LATENCY = (0.002, 0.08)  # one-way latency of a connection, drawn per connection
SHUTDOWN_CLOSE = 5.0  # the server closes at most this long after announcing serverShutdown
RETRY_AFTER_MAX = 5.0  # the largest Retry-After a rejected handshake carries
SWAP_DELAY = 0.5  # a reordered frame arrives at most this late
TAIL_SHARE = 0.15  # of seeds with backfill on play the tail schedule
MAX_TRADES = 2500  # per symbol: keeps a seed to a few milliseconds of CPU
_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
_WINDOW_SETS = (("1s", "1m", "5m"), ("1s", "1m", "5m"), ("1s",), ("5s", "1m"), ("1s", "5s"), ("2s", "3s"),
                ("1s", "7s", "1m"), ("10s",))
_FRAME_FAULTS = ("duplicate", "swap", "drop", "malformed")
_ENDINGS = ("reset", "close", "silent", "shutdown")


@dataclass(frozen=True)
class Activity:
    """How one symbol trades: ``kind`` (busy, normal, quiet), a base rate per second and bursts
    ``(start, seconds, rate)``."""

    kind: str
    rate: float
    bursts: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class Faults:
    """The seed's fault rates; no fault is drawn at or after ``stop``."""

    stop: float
    intensity: str
    stage_fail: float  # a connect stage raises (DNS, refused, TLS)
    stage_stall: float  # a connect stage hangs until its deadline
    reject: float  # the upgrade is answered 429 or 418 with Retry-After
    refuse_subscription: float  # the SUBSCRIBE is answered with an error
    frame_rate: float  # frame faults per frame
    frame_kinds: tuple[str, ...]
    ending_rate: float  # endings per second of an open connection
    ending_kinds: tuple[str, ...]
    rest_fail: float  # a backfill request fails part way (BackfillFailed with the pages fetched)
    rest_timeout: float  # a backfill request runs out of tries
    outages: tuple[tuple[float, float], ...]  # (start, end): every path dies and every connect fails
    freezes: tuple[tuple[float, float], ...]  # (at, seconds): the process does nothing, then catches up


@dataclass(frozen=True)
class World:
    """Everything one seed decides before the run starts."""

    seed: int
    symbols: tuple[str, ...]
    shards: tuple[tuple[str, ...], ...]
    activity: dict[str, Activity]
    timeouts: Timeouts
    reconnect: Reconnect
    limits: Limits
    sequencing: Sequencing
    flow: Flow
    faults: Faults
    epoch_ms: int
    rest_lag: float  # REST knows the trades published this long ago
    rest_latency: float  # one REST page takes at most this long
    gap_allowance: float  # G: once settled, a shard is never without a subscribed connection longer
    bound_connect: float  # after faults stop, a shard settles within this
    bound_fill: float  # a trade is delivered this long after a later one arrived (and faults stopped)
    end: float
    # The tail schedule (issue #32): the server never sends the last ``tail`` trades published before faults
    # stop (REST has them), then the market is quiet for minutes. 0: not this schedule.
    tail: int = 0
    bound_tail: float = math.inf  # a trade REST has is delivered this long after REST has it, no later trade needed

    @property
    def quiet_after(self) -> float:
        """From then on nothing is reported: every effect of the faults has settled."""
        return self.faults.stop + self.bound_connect + self.bound_fill

    def describe(self) -> str:
        """A few lines for ``--seed S``."""
        t, r, f = self.timeouts, self.reconnect, self.faults
        lines = [
            f"seed {self.seed}: {len(self.symbols)} symbol(s) in {len(self.shards)} shard(s) "
            f"{[list(s) for s in self.shards]}; run {self.end:.1f} s, faults stop at {f.stop:.1f} s ({f.intensity})",
            "  markets: " + ", ".join(f"{s} {a.kind} {a.rate:.2f}/s, {len(a.bursts)} burst(s)"
                                      for s, a in self.activity.items()),
            f"  deadlines: stages {[round(getattr(t, s), 2) for s in _STAGES]}, ping {t.ping_interval:.2f}+"
            f"{t.ping_timeout:.2f}, rest {t.rest:.2f}; backoff {r.backoff_initial:.2f}..{r.backoff_max:.2f} "
            f"x{r.backoff_factor}, max_attempts {r.max_attempts}, age {r.max_connection_age:.0f} s, "
            f"{r.connections_per_5min} opens/5 min",
            f"  limits: buffer {self.limits.max_buffered_trades}, rest_retries {self.limits.rest_retries}, rest page "
            f"<= {self.rest_latency:.2f} s; "
            f"reorder {self.sequencing.reorder_window:.2f} s, backfill {self.sequencing.backfill}; windows "
            f"{list(self.flow.windows)}, tick {self.flow.footprint_tick!r}, grace {self.flow.bar_close_grace:.2f}",
            f"  faults: stage fail {f.stage_fail:.3f} stall {f.stage_stall:.3f} reject {f.reject:.3f} "
            f"refuse {f.refuse_subscription:.3f}; frames {f.frame_rate:.3f} {list(f.frame_kinds)}; endings "
            f"{f.ending_rate * 60:.2f}/min {list(f.ending_kinds)}; rest fail {f.rest_fail:.2f} timeout "
            f"{f.rest_timeout:.2f}; outages {_spans(f.outages)}; freezes {_spans(f.freezes)}",
            f"  bounds: settle {self.bound_connect:.1f} s, gap allowance {self.gap_allowance:.1f} s, "
            f"fill {self.bound_fill:.1f} s, tail {self.bound_tail:.1f} s",
        ]
        if self.tail:
            lines.append(f"  tail: the server skips the last {self.tail} trade(s) of each symbol published before "
                         f"{self.faults.stop:.1f} s; then no trade until the end at {self.end:.1f} s")
        return "\n".join(lines)


_STAGES = ("resolve", "tcp_connect", "tls", "http_upgrade", "subscribed", "first_message")


def _spans(spans: tuple[tuple[float, float], ...]) -> str:
    return "[" + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in spans) + "]"


def _subset(rng: random.Random, items: tuple[str, ...]) -> tuple[str, ...]:
    chosen = tuple(item for item in items if rng.random() < 0.6)
    return chosen or (rng.choice(items),)


def _activity(rng: random.Random, span: float) -> Activity:
    kind = rng.choices(("busy", "normal", "quiet"), (0.3, 0.5, 0.2))[0]
    if kind == "quiet":
        return Activity(kind, 1.0 / rng.uniform(8.0, 90.0), ())
    if kind == "normal":
        return Activity(kind, rng.uniform(0.3, 4.0), ())
    bursts = tuple(sorted((rng.uniform(0, span), rng.uniform(0.2, 1.2), rng.uniform(100, 400))
                          for _ in range(rng.randint(0, 3))))
    return Activity(kind, rng.uniform(1.0, 6.0), bursts)


def draw_world(seed: int, rng: random.Random) -> World:
    """Draw the world of ``seed`` from ``rng`` (a fresh ``random.Random(seed)``)."""
    u = rng.uniform
    symbols = _SYMBOLS[: rng.choice((1, 1, 2, 2, 3, 4))]
    per = rng.choice((1, 2, 4)) if len(symbols) > 1 else 1
    shards = tuple(symbols[k : k + per] for k in range(0, len(symbols), per))
    timeouts = Timeouts(resolve=u(0.5, 3), tcp_connect=u(0.5, 3), tls=u(0.5, 3), http_upgrade=u(1, 5),
                        subscribed=u(1, 5), first_message=u(2, 15), ping_interval=u(0.5, 2), ping_timeout=u(0.5, 3),
                        close=u(0.5, 3), rest=u(0.5, 3))
    reconnect = Reconnect(
        backoff_initial=u(0.05, 1.0), backoff_max=u(1.0, 8.0), backoff_factor=rng.choice((1.5, 2.0, 3.0)),
        max_attempts=0 if rng.random() < 0.9 else rng.randint(4, 12),
        max_connection_age=85_800.0 if rng.random() < 0.7 else u(8.0, 60.0),
        connections_per_5min=300 if rng.random() < 0.85 else rng.randint(15, 60))
    buffered = 100_000 if rng.random() < 0.5 else rng.randint(4, 120)  # small: pauses and overflows
    limits = Limits(streams_per_connection=per, max_buffered_trades=buffered, history_size=1000,
                    rest_retries=rng.randint(0, 3))
    sequencing = Sequencing(reorder_window=u(0.05, 0.5), backfill=rng.random() < 0.9)
    flow = Flow(windows=rng.choice(_WINDOW_SETS), footprint_tick=rng.choice(("10", "1", "0.5", "")),
                whale_percentile=rng.choice((99.9, 0.0)), bar_close_grace=u(0.5, 3.0),
                snapshot_interval=rng.choice((1.0, 5.0, 30.0)))

    intensity = rng.choices(("none", "light", "heavy", "storm"), (0.15, 0.35, 0.35, 0.15))[0]
    scale = {"none": 0.0, "light": 0.3, "heavy": 1.0, "storm": 2.5}[intensity]
    stop = u(15.0, 75.0)
    outages = tuple(sorted(_span(rng, stop, 3.0, 25.0) for _ in range(rng.randint(1, 2)))) \
        if rng.random() < 0.35 * min(scale, 1.0) else ()
    freezes = tuple(sorted(_span(rng, stop, 0.3, 5.0) for _ in range(rng.randint(1, 3)))) \
        if scale and rng.random() < 0.3 else ()
    faults = Faults(
        stop=stop, intensity=intensity, stage_fail=0.08 * scale, stage_stall=0.04 * scale, reject=0.03 * scale,
        refuse_subscription=0.02 * scale, frame_rate=rng.choice((0.0, 0.002, 0.01, 0.05)) * min(scale, 1.0),
        frame_kinds=_subset(rng, _FRAME_FAULTS), ending_rate=u(0.0, 2.0) * scale / 60.0,
        ending_kinds=_subset(rng, _ENDINGS), rest_fail=0.1 * scale * rng.random(),
        rest_timeout=0.05 * scale * rng.random(), outages=outages,
        freezes=tuple((a, b - a) for a, b in freezes))

    rest_latency = u(0.01, 0.12) if rng.random() < 0.8 else u(0.3, 0.9 * timeouts.rest)  # slow REST: long holes

    # Liveness bounds, from the options: see docs/simtest.md.
    t, r = timeouts, reconnect
    freeze = max((seconds for _, seconds in faults.freezes), default=0.0)
    stage_max = max(getattr(t, s) for s in _STAGES)
    gap_allowance = max(r.backoff_max, RETRY_AFTER_MAX) + 6 * CONNECT_LATENCY + 2 * NETWORK_LATENCY[1] + 0.5
    bound_connect = (stage_max + gap_allowance + t.ping_interval + t.ping_timeout + t.rest + SHUTDOWN_CLOSE
                     + t.close + freeze + 1.0)
    rest_worst = (t.rest + 0.2) * (limits.rest_retries + 1) + rest_latency
    bound_fill = (2 * rest_worst + t.rest + freeze + SWAP_DELAY + NETWORK_LATENCY[1]
                  + 20 * (sequencing.reorder_window + rest_latency) + 1.0)
    end = stop + bound_connect + bound_fill + 5.0
    activity = {s: _activity(rng, end) for s in symbols}
    epoch_ms = EPOCH_MS + rng.randrange(300_000)
    rest_lag = u(0.0, 0.05)
    # Every trade REST has is delivered within this, even with no later trade: the silence look comes at the
    # learned deadline (at most timeouts.stall, and once more if a look just missed it), asks REST, waits
    # TRADE_GRACE for a trade on its way, then fills (see the harness's SilenceLook).
    bound_tail = (2 * t.stall + 2 * TRADE_GRACE + rest_lag + 2 * rest_latency + rest_worst + freeze + 1.0
                  if sequencing.backfill else math.inf)  # backfill off: nothing fetches a tail
    world = World(seed, symbols, shards, activity, timeouts, reconnect, limits, sequencing, flow, faults,
                  epoch_ms, rest_lag, rest_latency, gap_allowance, bound_connect,
                  bound_fill, end, bound_tail=bound_tail)
    # The tail schedule, from a generator of its own so that every other seed's world stays as it was.
    tail_rng = random.Random(f"tail {seed}")
    if sequencing.backfill and tail_rng.random() < TAIL_SHARE:
        world = replace(world, tail=tail_rng.randint(1, 20), end=max(end, stop + tail_rng.uniform(120.0, 300.0)))
    return world


def _span(rng: random.Random, stop: float, shortest: float, longest: float) -> tuple[float, float]:
    start = rng.uniform(0.0, stop)
    return start, min(stop, start + rng.uniform(shortest, longest))
