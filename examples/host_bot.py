"""A host bot: OrderFlow with a strategy plugin and a signal receiver, reading health() and latest() every second.

    python examples/host_bot.py --duration 10        # starts a local simulator on the bundled real tape
    python examples/host_bot.py --ws-url ws://127.0.0.1:9443 --rest-url http://127.0.0.1:9443   # `orderflow sim`

Without ``--ws-url`` it runs offline against the simulator it starts itself; with the URLs of
Binance (``wss://stream.binance.com:9443``, ``https://api.binance.com``) it streams the real market.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from decimal import Decimal
from typing import Any

from delta_alert import DeltaAlert  # examples/delta_alert.py, beside this file

from orderflow_plugin import OrderFlow, Trade, signals
from orderflow_plugin.sim import Pace, Simulator

whale_count = 0


def count_whales(sender: OrderFlow, metric: Any) -> None:  # a signal receiver; held weakly, so module level
    global whale_count
    if metric.kind == "whale":
        whale_count += 1


async def run(ws_url: str, rest_url: str, duration: float) -> None:
    strategy = DeltaAlert(min_delta=Decimal(5))
    signals.metric.connect(count_whales)
    flow = OrderFlow(["BTCUSDT"], ws_url=ws_url, rest_url=rest_url, plugins=[strategy])
    async with flow:
        for _ in range(round(duration)):
            await asyncio.sleep(1)
            report(flow.health(), flow.latest("BTCUSDT"))
    print(f"done: {flow.summary()['trades']} trades, delta alerts {len(strategy.alerts)}, whales {whale_count}")


def report(health: dict[str, Any], latest: dict[str, Any]) -> None:
    """One line: the stream's state, the newest trade, and the last closed 1 m bar."""
    trade: Trade | None = latest.get("trade")
    bar = latest.get("bar:1m")
    age = health["symbols"]["BTCUSDT"]["last_trade_age_s"]
    print(f"{health['state']} ({health['connections'][0]['state']}), {health['trades']} trades, "
          f"last {trade.price if trade else '-'} {age} s ago, last 1m delta {bar.delta if bar else '-'}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description="A host bot on OrderFlow.")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run (default: 10)")
    parser.add_argument("--ws-url", help="WebSocket base URL (default: a simulator started here)")
    parser.add_argument("--rest-url", help="REST base URL, with --ws-url (default: the simulator's)")
    parser.add_argument("--speed", type=float, default=100.0, help="the local simulator's replay speed (default: 100)")
    args = parser.parse_args()
    if (args.ws_url is None) != (args.rest_url is None):
        parser.error("--ws-url and --rest-url go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    async with contextlib.AsyncExitStack() as stack:
        ws_url, rest_url = args.ws_url, args.rest_url
        if ws_url is None:
            sim = await stack.enter_async_context(Simulator(pace=Pace(speed=args.speed)))
            ws_url, rest_url = sim.ws_url, sim.rest_url
        await run(ws_url, rest_url, args.duration)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # Ctrl-C: asyncio.run cancelled main(), and the stream and simulator have stopped
        sys.exit(130)
