"""What must hold: the recording plugin of the stream under test, checking as things happen and at the end.

Invariants (``S`` = when the faults stop, ``B`` = :meth:`~.world.World.settle`), each named as a
failure names it:

- **order**: per symbol and process life, delivered ids strictly increase and each is the
  exchange's own trade (id, price, quantity, time and side), played already; a repeat after a
  restart is tagged ``replay``;
- **no silent hole**: every id skipped in delivery is named by an ``on_error(where="sequence")``,
  and no id such a report names was delivered (checked at each report);
- **stages**: no connect stage runs past its deadline (first_message: plus the quiet-market look);
- **dead path**: a streaming connection whose path died is ended within ``ping_interval +
  ping_timeout`` (while reading is not paused);
- **delivery**: every trade the exchange played (REST has it) is delivered or reported by
  ``max(played, S) + B``;
- **closed bar**: at each delivery, a trade whose time falls in a bar already closed is noted;
  that bar must be emitted again as ``revised`` (the engine folds a late trade into its last
  closed bar) within the finest window plus ``bar_close_grace`` plus 1 s (a coarse bar rolled up
  from finer ones is revised when the fine bar carrying the trade closes), checked at each loop
  step: no trade is left delivered into a closed bar;
- **metrics**: each snapshot agrees with the trades delivered in its process (count and CVD), and
  every closed bar equals a from-scratch Decimal recomputation from the exchange's rows
  (:mod:`.reference`), at each kill and at the end;
- **rest budget**: the exchange never refused a REST request for its weight (429): backfill, the
  silence watch and the listing keep within the per-minute budget;
- **plugins**: every slow hook reported names the plugin that was slow; the checker never raises.
"""

from __future__ import annotations

import functools
import re
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any

from ..engine import parse_window
from ..errors import HookTooSlow
from ..wsconnection import STAGES
from .memnet import Link
from .reach import is_running
from .reference import Row, compare_bars

if TYPE_CHECKING:
    from ..sim import Simulator
    from ..stream import OrderFlow
    from .vloop import VirtualLoop
    from .world import World

__all__ = ["Checker", "Life", "Violation"]

_GIVEN_UP = re.compile(r"^(\w+): aggTrade ids (\d+)\.\.(\d+) \(\d+\) were not delivered")
_EXACT = Context(prec=80)
LOOK_EVERY = 1.0  # virtual s between looks at the stages and the market (a look is a health() call)


@functools.lru_cache(maxsize=1 << 16)
def _decimals(price: str, qty: str) -> tuple[Decimal, Decimal]:
    """A tape row's price and quantity as Decimals (every seed plays the same bundled rows)."""
    return Decimal(price), Decimal(qty)


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



class Checker:
    """The recording plugin and the invariants."""

    def __init__(self, world: World, loop: VirtualLoop, sim: Simulator, slow: set[tuple[str, str]]) -> None:
        self.world, self.loop, self.sim, self.slow = world, loop, sim, slow
        self.flow: OrderFlow | None = None
        self.last: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.delivered: dict[str, dict[int, float]] = {s: {} for s in world.symbols}
        self.holes: list[tuple[str, int, int]] = []
        self.reported: dict[str, list[tuple[int, int]]] = {s: [] for s in world.symbols}
        self.closed_end: dict[tuple[str, str], int] = {}
        # symbol, window, trade time, id, and by when (virtual s) the revision must have come: a coarse window
        # built from finer bars is revised when the finest bar carrying the late trade closes and rolls up
        self.late: list[tuple[str, str, int, int, float]] = []
        finest = min(parse_window(w).ms for w in world.flow.windows) / 1000 if world.flow.windows else 0.0
        self.revise_within = finest + world.flow.bar_close_grace + 1.0
        self.played_at: dict[str, list[float]] = {s: [] for s in world.symbols}  # position -> when played
        self.trace: list[str] = []
        self.counts: dict[str, int] = {"errors": 0, "connects": 0, "revised": 0, "slow_reports": 0}
        self.violation: Violation | None = None
        self.settled_at: float | None = None  # when nothing was left to check (the run may end then)
        self.caught_up: dict[str, int] = {}  # per symbol: the first position played and not yet delivered or reported
        self.life = 1  # process lives: a kill starts the next one on the same checkpoint
        self.seen: dict[str, int] = {}  # the highest id delivered in any earlier life
        self.repeats = 0  # ids delivered again after a restart (each tagged replay)
        self.replays = 0  # deliveries tagged replay
        # This process life's deliveries as the exchange's rows, its CVD, and its closed bars with the CVD around them
        self.rows: dict[str, list[Row]] = {s: [] for s in world.symbols}
        self.cvd: dict[str, tuple[Decimal, Decimal]] = dict.fromkeys(world.symbols, (Decimal(0), Decimal(0)))
        self.bars: dict[str, list[tuple[Any, tuple[Decimal, Decimal]]]] = {s: [] for s in world.symbols}

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
        feed = self.sim.feeds[symbol]
        position = feed.position_of_id(agg_id)
        row = feed.row(position)
        price, qty = _decimals(row.price, row.qty)
        buy = not row.buyer_maker
        if (row.id != agg_id or price != trade.price or qty != trade.qty or row.time != trade.time
                or (trade.side == "buy") != buy or position >= self.sim.happened(symbol)):
            self.fail("order", f"{symbol}: id {agg_id} is not the exchange's trade (or was not played yet)")
            return
        self.rows[symbol].append((agg_id, price, qty, buy, row.time, row.last_id - row.first_id + 1))
        before = self.cvd[symbol][1]
        self.cvd[symbol] = (before, _EXACT.add(before, qty) if buy else _EXACT.subtract(before, qty))
        if self.closed_end:  # none before the first bar closes
            for window in self.world.flow.windows:
                end = self.closed_end.get((symbol, window))
                if end is not None and trade.time < end:
                    self.late.append((symbol, window, trade.time, agg_id, self.loop.time() + self.revise_within))
        if trade.source == "replay":
            self.replays += 1
        if agg_id <= self.seen.get(symbol, -1) and agg_id in self.delivered[symbol]:
            self.repeats += 1  # a restart delivers again what the killed process may have delivered
            if trade.source != "replay":
                self.fail("order", f"{symbol}: id {agg_id} delivered again after a restart, not tagged replay")
                return
            self.last[symbol] = agg_id
            return
        if last is not None and agg_id != last + 1:
            self.holes.append((symbol, last + 1, agg_id - 1))
        self.first.setdefault(symbol, agg_id)
        self.last[symbol] = agg_id
        self.delivered[symbol].setdefault(agg_id, self.loop.time())

    def on_metric(self, metric: Any) -> None:
        kind = metric.kind
        if kind == "snapshot":
            symbol = metric.symbol
            delivered, cvd = len(self.rows[symbol]), self.cvd[symbol][1]
            if metric.trades != delivered or metric.cvd != cvd:
                self.fail("metrics", f"{symbol}: a snapshot says {metric.trades} trades, cvd {metric.cvd}; this "
                                     f"process delivered {delivered}, cvd {cvd}")
            return
        if kind != "bar" or metric.closed_by == "open":
            return
        key = (metric.symbol, metric.window)
        self.bars[metric.symbol].append((metric, self.cvd[metric.symbol]))
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
                symbol, first, last = match[1], int(match[2]), int(match[3])
                self.reported[symbol].append((first, last))
                delivered = [row[0] for row in self.rows[symbol] if first <= row[0] <= last]
                if delivered:
                    self.fail("no silent hole", f"{symbol}: ids {first}..{last} reported not delivered, but "
                                                f"{delivered[:5]} were delivered")
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
        self.check_bars()
        for symbol in self.world.symbols:
            self.rows[symbol], self.bars[symbol] = [], []
            self.cvd[symbol] = (Decimal(0), Decimal(0))
        self.note(f"process killed; life {self.life} starts")

    def check_bars(self) -> None:
        """This process life's closed bars equal the bars recomputed from the trades it delivered."""
        flow = self.world.flow
        settle_ms = int((flow.bar_close_grace + 5.0) * 1000)  # a bar due closes by then
        for symbol in self.world.symbols:
            if not self.rows[symbol]:
                continue
            for problem in compare_bars(self.rows[symbol], self.bars[symbol], flow, settle_ms):
                self.fail("metrics", f"{symbol}: {problem}")
                return

    # Checks as it runs

    def after_step(self) -> None:
        if self.late and min(x[4] for x in self.late) <= self.loop.time():
            symbol, window, at, agg_id, _ = min(self.late, key=lambda x: x[4])
            self.fail("closed bar", f"{symbol}: trade {agg_id} (time {at}) delivered into the closed {window} bar")

    def look(self) -> None:
        """Every LOOK_EVERY virtual s: what the market played, and how long each connect stage has been running."""
        now = self.loop.time()
        for symbol in self.world.symbols:
            played = self.played_at[symbol]
            played.extend([now] * (self.sim.happened(symbol) - len(played)))
        flow = self.flow
        if flow is not None and is_running(flow):
            t = self.world.timeouts
            connections = flow.health()["connections"]
            for entry in connections:
                stage, spent = entry["stage"], entry["stage_for_s"]
                if stage not in STAGES or spent is None:
                    continue
                deadline = getattr(t, stage) + 0.15 + self.loop.blocked_since(now - spent)
                if stage == "first_message":  # the quiet-market look asks REST once the deadline passed
                    deadline += t.rest + 0.5
                if spent > deadline:
                    self.fail("stages", f"shard {entry['shard']}: stage {stage} has run {spent:.2f} s, "
                                        f"its deadline is {getattr(t, stage):.2f} s")
            if self.settled_at is None and self._settled(now, connections):
                self.settled_at = now
                self.note("settled: every trade played is delivered or reported, every shard streaming")
        self.loop.call_later(LOOK_EVERY, self.look)

    def _settled(self, now: float, connections: list[dict[str, Any]]) -> bool:
        """Nothing is left to check: the market has calmed, every shard streams, no dead path is held, no closed bar
        waits for its revision, and every trade played is delivered or reported. The run may end here instead of at
        the world's bound."""
        net = self.loop.network
        if now < net.start + self.world.market_calms + 5.0 or any(e["state"] != "streaming" for e in connections):
            return False
        if self.late:  # a bar a late trade went into is still to be revised (seed 3280 of a short world ended first)
            return False
        if any(link.dead_at is not None and link.client_closed_at is None for link in net.links):
            return False
        for symbol in self.world.symbols:
            happened, first = self.sim.happened(symbol), self.first.get(symbol)
            if first is None:
                if happened:
                    return False
                continue
            feed, delivered, reported = self.sim.feeds[symbol], self.delivered[symbol], self.reported[symbol]
            position = self.caught_up.get(symbol) or feed.position_of_id(first)
            while position < happened:
                agg_id = feed.row(position).id
                if agg_id not in delivered and not any(a <= agg_id <= b for a, b in reported):
                    break
                position += 1
            self.caught_up[symbol] = position
            if position < happened:
                return False
        return all(any(a <= first and last <= b for a, b in self.reported[symbol])
                   for symbol, first, last in self.holes)

    def link_opened(self, link: Link) -> None:
        """The world may end this WebSocket path later: dead (nobody told) or reset."""
        net, rng = self.loop.network, self.loop.network.rng
        if net._faulty(net.faults.dead_path):  # the world's timers: they outlive the process that opened the link
            self.loop.call_later(rng.uniform(0.5, 15), self._die, link, context=net.context)
        elif net._faulty(net.faults.reset):
            self.loop.call_later(rng.uniform(0.5, 15), net.kill, link, "reset", context=net.context)

    def _die(self, link: Link) -> None:
        connection = link.client.get_protocol() if link.client is not None else None
        if connection is None or link.client_closed_at is not None:
            return
        self.loop.network.kill(link, "dead")
        if link.dead_at is not None and getattr(connection, "stage", None) == "streaming":  # None: it was closing
            t = self.world.timeouts
            self.loop.call_later(t.ping_interval + t.ping_timeout + 0.3, self._dead_found, link, connection)

    def _dead_found(self, link: Link, connection: Any) -> None:
        if link.dead_at is None or link.client_closed_at is not None or self.flow is None or not is_running(self.flow):
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
        """The delivery bound, every hole reported, the REST budget, and the last process life's bars."""
        self.check_bars()
        refused = [path for path, status in self.sim.record.rest if status == 429]  # the world scripts no REST 429
        if refused:
            self.fail("rest budget", f"the exchange refused {len(refused)} REST request(s) for their weight, first "
                                     f"{refused[0]}: the streams spent more than its per-minute budget")
            return
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

class Life:
    """The checker as one process's plugin: a killed process's late calls are not the next one's."""

    def __init__(self, checker: Checker) -> None:
        self.checker, self.life = checker, checker.life

    def __dir__(self) -> list[str]:
        return [name for name in vars(Life) if name.startswith("on_")]  # as WorldPlugin's: the hooks only

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
