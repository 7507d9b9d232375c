"""Soak: 10,000,000 trades through OrderFlow with a fault every --fault-every trades (a reset,
a blackhole or a skip of ids, in turn); reports RSS growth, trades lost and duplicated.

The simulator runs in its own process, as fast as the client reads, replaying the bundled real
tape looped (ids and times shifted, so the expected sequence is every id in order). Connection
k gets "skip_ids" (count --skip) after --fault-every messages and then, after twice that, a
"reset_after" (odd k) or a "blackhole_after" (even k) that the stall watchdog has to notice.
The hook checks every delivered id against the one before it: a jump is a lost trade, a
repeat or a step back is a duplicate. RSS is sampled every 1,000,000 trades; growth is from
the first sample (after the first million) to the last.

Run: .venv/bin/python bench/soak.py [--trades 10000000] [--fault-every 250000] [--transport fast]
Targets (issue #9): RSS growth under 20 MB; 0 lost; 0 duplicated.

``--random-faults`` (issue #32) is another soak: the simulator (in this process) plays real trades at
``--rate`` for ``--market-seconds``, every connection draws a fault from ``--seed`` (a skip of ids REST
keeps, duplicates, reordering, a bad frame, a muted stream, a dead path, a close, serverShutdown, a
hang, a refused or slow handshake) and is reset every ``--reset-every`` seconds or so; then the market
is frozen, its last ``--tail`` trades sent on no socket (REST has them). The end check: the delivered
ids equal REST's (every id played, in order, each once) within ``--grace`` seconds of the freeze; it
reports the time the stream took to catch up. Production timeouts.
Exit code 1 when the delivered ids differ from REST's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe
from _sim import simulator

from orderflow_plugin import OrderFlow, PluginManager, Reconnect, Reporting, Timeouts, bundled_tape
from orderflow_plugin.sim import Fault, Pace, Scenario, Simulator, SymbolFeed
from orderflow_plugin.sim.scenario import MALFORMED_VARIANTS
from orderflow_plugin.tape import Tape
from orderflow_plugin.wsconnection import READERS

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE / 2**20


class Checker:
    """The hook: checks the id sequence, samples RSS, stops at the target."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.seen = self.lost = self.duplicated = 0
        self.last: int | None = None
        self.rss: list[tuple[int, float]] = []
        self.done = asyncio.Event()

    def on_trade(self, trade: object) -> None:
        agg_id = trade.id  # type: ignore[attr-defined]
        last = self.last
        if last is not None:
            if agg_id <= last:
                self.duplicated += 1
                return
            self.lost += agg_id - last - 1
        self.last = agg_id
        self.seen += 1
        if self.seen % 1_000_000 == 0:
            self.rss.append((self.seen, rss_mb()))
        if self.seen >= self.target:
            self.done.set()


def scenario(trades: int, every: int, skip: int) -> dict:
    connections = []
    for k in range(1, math.ceil(trades / (2 * every)) + 2):
        kind = "reset_after" if k % 2 else "blackhole_after"
        ending = {"kind": kind, "after": 2 * every}
        connections.append({"faults": [{"kind": "skip_ids", "after": every, "count": skip}, ending]})
    return {"connection": connections}


async def soak(url: str, trades: int, stall: float,
               transport: str) -> tuple[Checker, OrderFlow, float, float]:
    checker = Checker(trades)
    manager = PluginManager()
    manager.register(checker, name="checker")
    flow = OrderFlow(["BTCUSDT"], ws_url=url, rest_url=url.replace("ws://", "http://"), plugins=manager,
                     reader=transport, timeouts=Timeouts(stall=stall), reconnect=Reconnect(backoff_initial=0.1),
                     reporting=Reporting(loop_block_threshold=0))
    async with flow:
        wall, cpu = time.perf_counter(), time.process_time()
        await checker.done.wait()
        return checker, flow, time.perf_counter() - wall, time.process_time() - cpu


def random_scenario(seed: int, connections: int, reset_after: int) -> Scenario:
    """Every connection draws one fault, and is reset after about ``reset_after`` messages."""
    rng = random.Random(seed)
    drawn = []
    for _ in range(connections):
        fault = draw_fault(rng, rng.choice(RANDOM_FAULTS), rng.randrange(reset_after))
        # the reset first: the fault engine stops at the first fault that takes a message, so a reset behind a
        # skip, a mute or a reordering that covers its count would never fire
        drawn.append((Fault("reset_after", after=int(reset_after * rng.uniform(0.5, 1.5))), fault))
    return Scenario(drawn)


def draw_fault(rng: random.Random, kind: str, after: int) -> Fault:
    """One fault of ``kind`` after ``after`` messages, its parameters drawn from ``rng``."""
    if kind == "skip_ids":
        return Fault(kind, after=after, count=rng.randint(1, 3000))
    if kind == "duplicate_ids":
        return Fault(kind, after=after, count=rng.randint(1, 500))
    if kind == "out_of_order":
        return Fault(kind, after=after, count=rng.randint(2, 50))
    if kind == "malformed_after":
        return Fault(kind, after=after, variant=rng.choice(MALFORMED_VARIANTS))
    if kind == "close_after":
        return Fault(kind, after=after, code=1011, reason="internal error")
    if kind == "server_shutdown_after":
        return Fault(kind, after=after, seconds=1.0)
    if kind == "http_status":
        return Fault(kind, status=rng.choice((503, 429)), retry_after=1)
    if kind == "slow_handshake":
        return Fault(kind, seconds=rng.uniform(0.1, 2.0))
    return Fault(kind, after=after)  # mute_after, blackhole_after, hang_after_handshake


RANDOM_FAULTS = ("skip_ids", "duplicate_ids", "out_of_order", "malformed_after", "mute_after", "blackhole_after",
                 "close_after", "server_shutdown_after", "hang_after_handshake", "http_status", "slow_handshake")


class TailSkipping(Simulator):
    """The simulator, whose sockets never send the market's last ``tail`` trades (REST has them): the hole at the
    tail the freeze leaves. The scenario's skip_ids counts one connection's messages, so it cannot name the
    market's last trades; this sends those to no subscriber (it reaches into our own simulator's publisher)."""

    def __init__(self, *args: Any, tail: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tail_from = sum(len(feed) for feed in self.feeds.values()) - tail

    def _publish(self, batch: list[tuple[str, int]]) -> None:
        super()._publish([item for item in batch if item[1] < self.tail_from])
        tail = [item for item in batch if item[1] >= self.tail_from]
        if tail:
            subscribers, self._subscribers = self._subscribers, {}
            try:
                super()._publish(tail)  # played (REST has them), offered to nobody
            finally:
                self._subscribers = subscribers


class Delivered:
    """The hook of the random-fault soak: every delivered id, in order, and how many came by REST."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.backfilled = 0
        self.changed = asyncio.Event()

    def on_trade(self, trade: object) -> None:
        self.ids.append(trade.id)  # type: ignore[attr-defined]
        if trade.source == "backfill":  # type: ignore[attr-defined]
            self.backfilled += 1
        self.changed.set()


async def random_soak(seed: int, rate: float, market_seconds: float, reset_every: float, grace: float,
                      transport: str, tail: int) -> dict[str, object]:
    """Play the random-fault soak; what happened, for :func:`report`."""
    count = int(rate * market_seconds)
    tape = bundled_tape()
    feed = SymbolFeed(tape, loop=True)
    rows = [feed.row(i) for i in range(count)]
    scenario = random_scenario(seed, connections=10_000, reset_after=max(1, int(rate * reset_every)))
    delivered = Delivered()
    manager = PluginManager()
    manager.register(delivered, name="delivered")
    async with TailSkipping(Tape(tape.symbol, tape.market, rows, "bundled tape, looped"), scenario=scenario,
                            pace=Pace(rate=rate), record_ids=False, tail=tail) as sim:
        flow = OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, plugins=manager, reader=transport,
                         reporting=Reporting(loop_block_threshold=0))
        async with flow:
            await sim.wait_for(lambda record: record.market_finished, timeout=market_seconds * 3 + 60)
            frozen = time.monotonic()
            caught_up: float | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    while len(delivered.ids) < count or delivered.ids[-1] != rows[-1].id:
                        delivered.changed.clear()
                        await delivered.changed.wait()
                    caught_up = time.monotonic() - frozen
            async with httpx.AsyncClient() as client:  # REST's own word on what it has
                newest = (await client.get(f"{sim.rest_url}/api/v3/aggTrades",
                                           params={"symbol": "BTCUSDT", "limit": 1})).json()[-1]["a"]
            summary = flow.summary()
            connections = len(sim.record.connections)
    published = [row.id for row in rows]
    return {"seed": seed, "published": published, "rest_newest": newest, "delivered": delivered,
            "caught_up": caught_up, "summary": summary, "connections": connections, "rate": rate,
            "market_seconds": market_seconds, "reset_every": reset_every, "grace": grace, "transport": transport,
            "tail": tail}


def report(result: dict[str, object]) -> bool:
    """Print the random-fault soak's outcome; True when the delivered ids equal REST's."""
    published: list[int] = result["published"]  # type: ignore[assignment]
    delivered: Delivered = result["delivered"]  # type: ignore[assignment]
    summary: dict[str, int] = result["summary"]  # type: ignore[assignment]
    ok = delivered.ids == published and result["rest_newest"] == published[-1]
    missing = len(set(published) - set(delivered.ids))
    disorder = sum(b <= a for a, b in itertools.pairwise(delivered.ids))
    caught_up = result["caught_up"]
    print(f"machine: {describe()}")
    print(f"random-fault soak, seed {result['seed']}: {len(published):,} real BTCUSDT trades at {result['rate']:g}/s "
          f"for {result['market_seconds']:g} s, every connection drew a fault and was reset every "
          f"~{result['reset_every']:g} s, then the market froze, its last {result['tail']} trades never sent on a "
          f"socket (REST has them); transport {result['transport']!r}, "
          "production timeouts")
    print(f"  connections {result['connections']}, reconnects {summary['reconnects']}, stalls {summary['stalls']}, "
          f"gaps {summary['gaps']}, backfilled {summary['backfilled']:,}, "
          f"duplicates dropped {summary['duplicates']:,}, bad frames {summary['bad_frames']}")
    print(f"  delivered {len(delivered.ids):,} ({delivered.backfilled:,} by REST), REST's newest id "
          f"{result['rest_newest']}, last delivered {delivered.ids[-1] if delivered.ids else None}; "
          f"missing {missing}, out of order or repeated {disorder}")
    print(f"  caught up {f'{caught_up:.2f} s' if caught_up is not None else 'NOT within'} after the freeze "
          f"(grace {result['grace']:g} s); delivered == REST: {'yes' if ok else 'NO'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument("--fault-every", type=int, default=250_000, help="messages between faults on a connection")
    parser.add_argument("--skip", type=int, default=500, help="ids each skip_ids fault leaves out (REST backfills)")
    parser.add_argument("--stall-timeout", type=float, default=1.0, help="seconds of silence before a reconnect")
    parser.add_argument("--transport", default="fast", choices=READERS, help="frame reader (fast: the default)")
    random_mode = parser.add_argument_group("random faults (issue #32)")
    random_mode.add_argument("--random-faults", action="store_true", help="the random-fault soak instead")
    random_mode.add_argument("--seed", type=int, default=1, help="the faults' seed")
    random_mode.add_argument("--rate", type=float, default=1000.0, help="trades per second")
    random_mode.add_argument("--market-seconds", type=float, default=600.0, help="seconds the market trades")
    random_mode.add_argument("--reset-every", type=float, default=8.0, help="seconds between resets (about)")
    random_mode.add_argument("--grace", type=float, default=150.0, help="seconds to catch up after the freeze")
    random_mode.add_argument("--tail", type=int, default=100, help="the market's last trades no socket sends")
    args = parser.parse_args()
    if args.random_faults:
        result = asyncio.run(random_soak(args.seed, args.rate, args.market_seconds, args.reset_every, args.grace,
                                         args.transport, args.tail))
        sys.exit(0 if report(result) else 1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "soak.json"
        path.write_text(json.dumps(scenario(args.trades, args.fault_every, args.skip)))
        with simulator("--asap", "--loop", "--scenario", str(path)) as sim:
            checker, flow, wall, cpu = asyncio.run(soak(sim.url, args.trades, args.stall_timeout, args.transport))
    counters = flow.summary()
    faults = counters["reconnects"] + counters["gaps"]
    print(f"machine: {describe()}")
    print(f"soak: {checker.seen:,} real BTCUSDT trades (bundled tape looped) from the simulator in its own process,")
    print(f"  a fault every {args.fault_every:,} messages per connection (skip_ids of {args.skip}, then reset or "
          f"blackhole), stall timeout {args.stall_timeout:g} s, transport {args.transport!r}")
    print(f"  {wall:.1f} s wall, {checker.seen / wall:,.0f} trades/s, CPU {cpu / checker.seen * 1e6:.2f} µs/trade; "
          f"about one fault every {wall / max(1, faults):.1f} s")
    print(f"  reconnects {counters['reconnects']}, stalls {counters['stalls']}, gaps {counters['gaps']}, "
          f"backfilled {counters['backfilled']:,}, duplicates dropped {counters['duplicates']:,}, "
          f"plugin errors {counters['plugin_errors']}, slow hooks {counters['slow_hooks']}")
    print("  RSS (trades: MB): " + ", ".join(f"{n / 1e6:g}M: {mb:.1f}" for n, mb in checker.rss))
    growth = checker.rss[-1][1] - checker.rss[0][1] if len(checker.rss) > 1 else 0.0
    print(f"  RSS growth from the first to the last sample: {growth:+.1f} MB (target < 20)")
    print(f"  lost: {checker.lost} (target 0), duplicated: {checker.duplicated} (target 0)")


if __name__ == "__main__":
    main()
