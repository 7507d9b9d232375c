"""A nautilus_trader node whose actor gets the order flow as custom data, through OrderFlowActor.

    orderflow sim --port 9443 --speed 100 &              # the local simulator, in another terminal
    python examples/nautilus_bot.py --duration 10        # its default URLs are that simulator's

Needs Python >= 3.12 and nautilus_trader (``pip install 'orderflow-plugin[nautilus]'``). The stream
runs on the node's own event loop, where the message bus calls ``on_data``. At the end it prints
one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from nautilus_trader.common.actor import Actor
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.config import LiveDataEngineConfig, LoggingConfig, TradingNodeConfig
from nautilus_trader.core.data import Data
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.data import DataType

from orderflow_plugin.adapters.nautilus import (
    ORDERFLOW_CLIENT_ID,
    FeedHealth,
    OrderFlowActor,
    OrderFlowActorConfig,
    OrderFlowBar,
    OrderFlowTrade,
)

INSTRUMENT_ID = "BTCUSDT.BINANCE"


class DeltaWatch(Actor):
    """A nautilus-side consumer: counts trades, checks their ids follow each other, keeps 1 m bar deltas."""

    def __init__(self) -> None:
        super().__init__(ActorConfig(component_id="DeltaWatch"))
        self.trades = 0
        self.out_of_order = 0
        self.last_id: int | None = None
        self.deltas: list[str] = []
        self.health: list[str] = []
        self.done = asyncio.Event()

    def on_start(self) -> None:
        for data_type in (
            DataType(OrderFlowTrade, metadata={"instrument_id": INSTRUMENT_ID}),
            DataType(OrderFlowBar, metadata={"instrument_id": INSTRUMENT_ID, "window": "1m"}),
            DataType(FeedHealth, metadata={"instrument_id": INSTRUMENT_ID}),  # gaps, backfills, stalls
            DataType(FeedHealth),  # the stream's errors
        ):
            self.subscribe_data(data_type, client_id=ORDERFLOW_CLIENT_ID)

    def on_data(self, data: Data) -> None:
        if isinstance(data, OrderFlowTrade):
            if self.last_id is not None and data.trade_id != self.last_id + 1:
                self.out_of_order += 1
            self.last_id = data.trade_id
            self.trades += 1
        elif isinstance(data, OrderFlowBar):
            self.deltas.append(data.delta if data.delta.startswith("-") else f"+{data.delta}")
            if len(self.deltas) == 2:
                self.done.set()
        elif isinstance(data, FeedHealth):
            self.health.append(data.kind)

    def on_stop(self) -> None:
        pass  # the node drops the subscriptions with the actor


async def run(args: argparse.Namespace) -> TradingNode:
    node = TradingNode(TradingNodeConfig(
        trader_id="ORDERFLOW-001",
        logging=LoggingConfig(log_level="WARNING"),
        # The order flow comes from an actor, not a data client: no client is looked for.
        data_engine=LiveDataEngineConfig(external_clients=[ORDERFLOW_CLIENT_ID]),
        timeout_post_stop=1.0,  # the node waits this long after stopping its actors
    ), loop=asyncio.get_running_loop())
    flow_actor = OrderFlowActor(OrderFlowActorConfig(symbols=("BTCUSDT",), ws_url=args.ws_url, rest_url=args.rest_url))
    watch = DeltaWatch()
    node.trader.add_actor(flow_actor)
    node.trader.add_actor(watch)
    node.build()
    running = asyncio.create_task(node.run_async())
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.done.wait(), args.duration)  # the node's own work goes here
    finally:
        await node.stop_async()  # stops the actors: OrderFlowActor.on_stop schedules the stream's stop
        await flow_actor.wait_stopped()
        await running
    print(f"trades {watch.trades}, out of order {watch.out_of_order}, 1m deltas {' '.join(watch.deltas)}, "
          f"health {' '.join(watch.health) or '-'}, stream {flow_actor.flow.health()['state']}", flush=True)
    return node


def main() -> None:
    parser = argparse.ArgumentParser(description="A nautilus_trader node with OrderFlowActor.")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run at most (default: 10)")
    parser.add_argument("--ws-url", default="ws://127.0.0.1:9443", help="WebSocket base URL (default: %(default)s)")
    parser.add_argument("--rest-url", default="http://127.0.0.1:9443", help="REST base URL (default: %(default)s)")
    args = parser.parse_args()
    node = asyncio.run(run(args))
    node.dispose()  # after asyncio.run closed the loop: releases the node's engines and executor


if __name__ == "__main__":
    main()
