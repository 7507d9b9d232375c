"""A vn.py script that gets the order flow as vn.py events, through OrderFlowEngine.

    orderflow sim --port 9443 &                      # the local simulator, in another terminal
    python examples/vnpy_bot.py --duration 10        # its default URLs are that simulator's

Needs vn.py (``pip install 'orderflow-plugin[vnpy]'``). Handlers run on vn.py's event engine
thread; the stream runs on a thread of its own. At the end it prints one summary line.
"""

from __future__ import annotations

import argparse
import threading

from vnpy.event import Event, EventEngine
from vnpy.trader.engine import MainEngine

from orderflow_plugin import Flow, OrderFlow
from orderflow_plugin.adapters.vnpy import (
    EVENT_ORDERFLOW_BAR,
    EVENT_ORDERFLOW_HEALTH,
    EVENT_ORDERFLOW_TRADE,
    OrderFlowEngine,
)

VT_SYMBOL = "BTCUSDT_SPOT_BINANCE.GLOBAL"  # the name vnpy_binance gives BTCUSDT spot


class DeltaWatch:
    """A vn.py-side consumer: counts trades, checks their ids follow each other, keeps 1 m bar deltas."""

    def __init__(self) -> None:
        self.trades = 0
        self.out_of_order = 0
        self.last_id: int | None = None
        self.deltas: list[str] = []
        self.health: list[str] = []
        self.done = threading.Event()

    def on_trade(self, event: Event) -> None:
        trade = event.data
        if self.last_id is not None and trade.id != self.last_id + 1:
            self.out_of_order += 1
        self.last_id = trade.id
        self.trades += 1

    def on_bar(self, event: Event) -> None:
        bar = event.data
        if bar.window == "1m":
            self.deltas.append(f"{bar.delta:+}")
            if len(self.deltas) == 2:
                self.done.set()

    def on_health(self, event: Event) -> None:
        health = event.data  # an error's kind is followed by its class: "error:HookTooSlow"
        self.health.append(f"{health.kind}:{type(health.error).__name__}" if health.kind == "error" else health.kind)


def main() -> None:
    parser = argparse.ArgumentParser(description="A vn.py script on OrderFlowEngine.")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run at most (default: 10)")
    parser.add_argument("--ws-url", default="ws://127.0.0.1:9443", help="WebSocket base URL (default: %(default)s)")
    parser.add_argument("--rest-url", default="http://127.0.0.1:9443", help="REST base URL (default: %(default)s)")
    args = parser.parse_args()

    event_engine = EventEngine()
    main_engine = MainEngine(event_engine)  # starts the event engine
    engine = main_engine.add_engine(OrderFlowEngine)
    watch = DeltaWatch()
    event_engine.register(EVENT_ORDERFLOW_TRADE + VT_SYMBOL, watch.on_trade)
    event_engine.register(EVENT_ORDERFLOW_BAR + VT_SYMBOL, watch.on_bar)
    event_engine.register(EVENT_ORDERFLOW_HEALTH, watch.on_health)  # every symbol's, and errors
    engine.start(OrderFlow(["BTCUSDT"], ws_url=args.ws_url, rest_url=args.rest_url, flow=Flow(windows=("1m",))))
    try:
        watch.done.wait(args.duration)  # the host's own work goes here
    finally:
        main_engine.close()  # stops the event engine, then engine.close() stops the stream and joins its thread
    print(f"trades {watch.trades}, out of order {watch.out_of_order}, 1m deltas {' '.join(watch.deltas)}, "
          f"health {' '.join(watch.health) or '-'}, stream thread alive {engine.running}", flush=True)


if __name__ == "__main__":
    main()
