"""Per-stage cost of the hot path on the bundled real frames, each stage timed alone (no network).

Stages: websockets' sans-I/O frame parsing, the fast reader's frame cutting, decode, sequencer,
engine, and dispatch of on_trade to one hook and one receiver (emit and emitter), then the emitter
the pipeline calls per trade with nothing listening, a receiver only, a hook only, and both. Best of three
runs, in µs per trade. cProfile's per-call overhead distorts small functions; this times each
stage with perf_counter instead.

Run: .venv/bin/python bench/stages.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from websockets.protocol import Protocol, Side, State

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe

from orderflow_plugin import PluginManager, bundled_tape, signals
from orderflow_plugin.decode import Decoder
from orderflow_plugin.dispatch import Dispatcher
from orderflow_plugin.engine import FlowEngine
from orderflow_plugin.sequencer import Sequencer
from orderflow_plugin.sim import frames
from orderflow_plugin.wsconnection import WsConnection

ROWS = bundled_tape().rows
PAYLOADS = [frames.combined("btcusdt@aggTrade", frames.aggtrade_payload("spot", "BTCUSDT", r)) for r in ROWS]
WIRE = b"".join(frames.text_frame(p) for p in PAYLOADS)
TRADES = [Decoder().decode(p) for p in PAYLOADS]


def timed(label: str, stage: Callable[[], None], reps: int = 10) -> None:
    best = min(_once(stage, reps) for _ in range(3))
    print(f"  {label:38s} {best / (reps * len(ROWS)) * 1e6:6.2f} µs/trade")


def _once(stage: Callable[[], None], reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        stage()
    return time.perf_counter() - start


def parse() -> None:
    protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=2**20)
    for i in range(0, len(WIRE), 65536):
        protocol.receive_data(WIRE[i:i + 65536])
        protocol.events_received()


def _fast_reader() -> WsConnection:
    async def make() -> WsConnection:
        connection = WsConnection("ws://127.0.0.1:9/stream", lambda c, frames, now: len(frames), max_size=2**20,
                                  reader="fast")
        connection.fast, connection._head = True, None  # as after the handshake
        return connection

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(make())
    finally:
        loop.close()


FAST = _fast_reader()


def cut() -> None:
    for i in range(0, len(WIRE), 65536):
        FAST._scan(WIRE[i:i + 65536])


def decode() -> None:
    run = Decoder().decode
    for payload in PAYLOADS:
        run(payload)


def sequence() -> None:
    push = Sequencer("BTCUSDT").push
    for trade in TRADES:
        push(trade)  # type: ignore[arg-type]


def engine() -> None:
    add = FlowEngine("BTCUSDT").add  # a new engine each time: bars close as on the tape
    for trade in TRADES:
        add(trade)  # type: ignore[arg-type]


class Hook:
    def on_trade(self, trade: object) -> None:
        """No-op hook."""


def receiver(sender: object, trade: object) -> None:
    """No-op receiver."""


def main() -> None:
    manager = PluginManager()
    manager.register(Hook(), name="hook")
    dispatcher = Dispatcher(manager, object())
    signals.trade.connect(receiver)
    print(f"machine: {describe()}")
    print(f"hot path stages on {len(ROWS):,} bundled real BTCUSDT frames, best of 3:")
    timed("websockets sans-I/O frame parsing", parse)
    timed("fast reader (transport = \"fast\")", cut)
    timed("decode", decode)
    timed("sequencer", sequence)
    timed("engine (1s/1m/5m, footprint, whales)", engine, reps=5)
    timed("dispatch on_trade: emit, hook + receiver",
          lambda: [dispatcher.emit("on_trade", trade=t) for t in TRADES] and None)
    emit_trade = dispatcher.emitter("on_trade", "trade")  # what the stream's pipeline calls per trade
    timed("dispatch on_trade: emitter", lambda: [emit_trade(t) for t in TRADES] and None)
    signals.trade.disconnect(receiver)
    for label, hook, listens in (("nothing listening", False, False), ("a receiver only", False, True),
                                 ("a hook only", True, False), ("a hook and a receiver", True, True)):
        plugins = PluginManager()
        if hook:
            plugins.register(Hook(), name="hook")
        if listens:
            signals.trade.connect(receiver)
        emit = Dispatcher(plugins, object()).emitter("on_trade", "trade")
        timed(f"on_trade emitter, {label}", lambda emit=emit: [emit(t) for t in TRADES] and None)  # type: ignore[misc]
        if listens:
            signals.trade.disconnect(receiver)


if __name__ == "__main__":
    main()
