"""Latency: from a frame's bytes reaching Python to the on_trade call and to the metric signal,
at fixed rates (default 1k, 10k and 50k trades/s), with p50, p99, p99.9 and max.

The simulator runs in its own process at ``--rate`` trades/s (bundled real tape, looped), each
frame sent at its time (``--smooth``; ``--grouped`` lets it sleep and send ~1 ms groups). The
clock starts when the event loop hands the socket's bytes to the connection (its
``data_received``: the earliest point Python sees them) and stops inside a no-op ``on_trade``
hook and a no-op ``metric`` signal receiver. Every frame in one read shares that start, so a
frame waiting behind others of the same read counts its wait. Metrics counted are those a
frame produces (bars closed by a trade, whales), not the ticker's snapshots.

Run: .venv/bin/python bench/latency.py [--rates 1000,10000,50000] [--seconds 10] [--transport fast]
Target (issue #9): p99 under 200 µs from socket to on_trade at 10k trades/s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe
from _sim import simulator

from orderflow_plugin import OrderFlow, PluginManager, Reporting, Timeouts, signals
from orderflow_plugin.wsconnection import READERS, WsConnection

_clock = time.perf_counter_ns
_arrived = [0]  # when the bytes being handled reached data_received


def _timed(original):  # type: ignore[no-untyped-def]
    def data_received(self: WsConnection, data: bytes) -> None:
        _arrived[0] = _clock()
        original(self, data)
    return data_received


class Probe:
    """The no-op hook and receiver, each writing down its latency."""

    def __init__(self) -> None:
        self.trades: list[int] = []
        self.metrics: list[int] = []
        self.recording = False

    def on_trade(self, trade: object) -> None:
        if self.recording:
            self.trades.append(_clock() - _arrived[0])

    def metric(self, sender: object, metric: object) -> None:
        if self.recording and (getattr(metric, "closed_by", "trade") == "trade") and metric.kind != "snapshot":
            self.metrics.append(_clock() - _arrived[0])


def percentiles(samples: list[int]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(n * q))] / 1000

    return (f"p50 {at(0.50):7.1f}  p99 {at(0.99):7.1f}  p99.9 {at(0.999):7.1f}  max {ordered[-1] / 1000:8.1f} µs"
            f"  ({n:,} samples)")


async def measure(url: str, seconds: float, warmup: float, transport: str) -> tuple[Probe, int]:
    probe = Probe()
    manager = PluginManager()
    manager.register(probe, name="probe")
    signals.metric.connect(probe.metric)
    flow = OrderFlow(["BTCUSDT"], ws_url=url, rest_url=url.replace("ws://", "http://"), plugins=manager,
                     reader=transport, timeouts=Timeouts(stall=60), reporting=Reporting(loop_block_threshold=0))
    try:
        async with flow:
            await asyncio.sleep(warmup)
            before = flow.counters["trades"]
            probe.recording = True
            await asyncio.sleep(seconds)
            probe.recording = False
            return probe, flow.counters["trades"] - before
    finally:
        signals.metric.disconnect(probe.metric)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,10000,50000", help="trades/s, comma separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--transport", default="fast", choices=READERS, help="frame reader (fast: the default)")
    parser.add_argument("--grouped", action="store_true",
                        help="let the simulator sleep between trades (frames leave in ~1 ms groups) instead of "
                             "spinning so each frame leaves at its time")
    args = parser.parse_args()
    WsConnection.data_received = _timed(WsConnection.data_received)  # type: ignore[method-assign]
    print(f"machine: {describe()}")
    print("latency from bytes handed to data_received to the no-op on_trade hook / metric signal receiver;")
    print(f"simulator in its own process, bundled real BTCUSDT tape looped, frames "
          f"{'in ~1 ms groups' if args.grouped else 'evenly spaced'}, {args.seconds:g} s per rate after "
          f"{args.warmup:g} s warm-up, gc {'on' if gc.isenabled() else 'off'}, transport {args.transport!r}")
    for rate in (int(r) for r in args.rates.split(",")):
        with simulator("--rate", str(rate), "--loop", *([] if args.grouped else ["--smooth"])) as sim:
            probe, delivered = asyncio.run(measure(sim.url, args.seconds, args.warmup, args.transport))
        print(f"{rate:>6,} trades/s offered, {delivered / args.seconds:,.0f} delivered:")
        print(f"  socket -> on_trade : {percentiles(probe.trades)}")
        print(f"  socket -> metric   : {percentiles(probe.metrics)}")


if __name__ == "__main__":
    main()
