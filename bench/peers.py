"""Peers: the end-to-end run through python-binance, cryptofeed and unicorn-binance-websocket-api,
next to OrderFlow, all pointed at the local simulator.

Each peer is installed only in this benchmark's own virtual environment (``bench/.peers-venv``,
made on first run from PyPI), runs in its own process with its normal public API, and counts
trades in its callback; the first trade starts its clock. The simulator replays the bundled real
tape looped, as fast as each client reads, in a process of its own (a fresh one per client).
OrderFlow runs here doing all its work (decode, sequence, every default metric, one hook), and
again with ``flow=Flow(enabled=False)`` (decode, sequence, one hook): closer to what the peers do.

Run: .venv/bin/python bench/peers.py [--trades 200000]  (ours runs on both transports)
Target (issue #9): OrderFlow at least 3 x the fastest peer's trades/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe
from _sim import simulator

from orderflow_plugin import Flow, OrderFlow, PluginManager, Reporting, Timeouts
from orderflow_plugin.transport import READERS

HERE = Path(__file__).resolve().parent
PEERS_VENV = HERE / ".peers-venv"
PEERS = {"python-binance": "python-binance", "cryptofeed": "cryptofeed",
         "unicorn-binance-websocket-api": "unicorn-binance-websocket-api"}

# Each client gets ws://127.0.0.1:PORT and N, counts N trades in its callback and prints
# {"seconds": ..., "trades": ...} measured from its first trade.
CLIENTS = {
    "python-binance": '''
import asyncio, json, sys, time
from binance import AsyncClient, BinanceSocketManager
url, n = sys.argv[1], int(sys.argv[2])
async def main():
    client = AsyncClient()  # no create(): that would ping api.binance.com
    manager = BinanceSocketManager(client)
    manager.STREAM_URL = url + "/"
    seen, start = 0, None
    async with manager.aggtrade_socket("BTCUSDT") as socket:
        while seen < n:
            message = await socket.recv()
            if message.get("e") == "aggTrade":
                seen += 1
                if start is None:
                    start = time.perf_counter()
    print(json.dumps({"seconds": time.perf_counter() - start, "trades": seen - 1}))
    await client.close_connection()
asyncio.run(main())
''',
    "cryptofeed": '''
import json, sys, time
from cryptofeed import FeedHandler
from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.defines import TRADES
from cryptofeed.exchanges import Binance
import cryptofeed.connection
url, n = sys.argv[1], int(sys.argv[2])
# cryptofeed refuses any address but wss://; the simulator (like every client here) speaks plain ws://.
_init = cryptofeed.connection.WSAsyncConn.__init__
def _init_ws(self, address, *args, **kwargs):
    _init(self, address.replace("ws://", "wss://", 1), *args, **kwargs)
    self.address = address
cryptofeed.connection.WSAsyncConn.__init__ = _init_ws
http = url.replace("ws://", "http://")
class LocalBinance(Binance):
    websocket_endpoints = [WebsocketEndpoint(url)]
    rest_endpoints = [RestEndpoint(http, routes=Routes("/api/v3/exchangeInfo",
                                                       l2book="/api/v3/depth?symbol={}&limit={}"))]
state = {"seen": 0, "start": None}
async def trade(t, receipt_timestamp):
    state["seen"] += 1
    if state["start"] is None:
        state["start"] = time.perf_counter()
    if state["seen"] == n:
        print(json.dumps({"seconds": time.perf_counter() - state["start"], "trades": n - 1}), flush=True)
        import os
        os._exit(0)
handler = FeedHandler(config={"log": {"disabled": True}})
handler.add_feed(LocalBinance(symbols=["BTC-USDT"], channels=[TRADES], callbacks={TRADES: trade}))
handler.run()
''',
    "unicorn-binance-websocket-api": '''
import json, os, sys, time, threading
from unicorn_binance_websocket_api import BinanceWebSocketApiManager
url, n = sys.argv[1], int(sys.argv[2])
state = {"seen": 0, "start": None}
done = threading.Event()
def trade(data, stream_id=None):
    if '"aggTrade"' not in data:
        return
    state["seen"] += 1
    if state["start"] is None:
        state["start"] = time.perf_counter()
    if state["seen"] == n:
        state["end"] = time.perf_counter()
        done.set()
manager = BinanceWebSocketApiManager(exchange="binance.com", warn_on_update=False, disable_colorama=True,
                                     websocket_base_uri=url + "/",
                                     restful_base_uri=url.replace("ws://", "http://") + "/", high_performance=True)
manager.create_stream(channels=["aggTrade"], markets=["btcusdt"], process_stream_data=trade)
done.wait(600)
print(json.dumps({"seconds": state["end"] - state["start"], "trades": n - 1}), flush=True)
os._exit(0)
''',
}


def peers_python() -> Path:
    """The peers' own environment, made and filled on first use."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {PEERS_VENV} with {', '.join(PEERS.values())} (first run only)...", flush=True)
        venv.create(PEERS_VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS.values()], check=True)
    return python


def version_of(python: Path, package: str) -> str:
    out = subprocess.run([str(python), "-m", "pip", "show", package], capture_output=True, text=True).stdout
    match = re.search(r"^Version: (.+)$", out, re.M)
    return match.group(1) if match else "?"


def run_peer(python: Path, name: str, n: int) -> dict[str, float] | str:
    with simulator("--asap", "--loop") as sim:
        try:
            done = subprocess.run([str(python), "-c", CLIENTS[name], sim.url, str(n)], capture_output=True,
                                  text=True, timeout=600)
        except subprocess.TimeoutExpired:
            return "failed: no result in 600 s"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return f"failed: {(done.stderr.strip().splitlines() or ['no output'])[-1][:200]}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


class Count:
    """OrderFlow's no-op hook: counts and stops at the target."""

    def __init__(self, target: int) -> None:
        self.target, self.seen, self.start = target, 0, 0.0
        self.done = asyncio.Event()

    def on_trade(self, trade: object) -> None:
        self.seen += 1
        if self.seen == 1:
            self.start = time.perf_counter()
        if self.seen >= self.target:
            self.done.set()


async def run_ours(url: str, n: int, transport: str, metrics: bool) -> dict[str, float]:
    count = Count(n)
    manager = PluginManager()
    manager.register(count, name="count")
    async with OrderFlow(["BTCUSDT"], ws_url=url, rest_url=url.replace("ws://", "http://"), plugins=manager,
                         transport=transport, timeouts=Timeouts(stall=60), flow=Flow(enabled=metrics),
                         reporting=Reporting(loop_block_threshold=0)):
        await count.done.wait()
        return {"seconds": time.perf_counter() - count.start, "trades": n - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--only", default=",".join(PEERS), help="peers to run, comma separated")
    args = parser.parse_args()
    python = peers_python()
    results: dict[str, dict[str, float] | str] = {}
    for name in args.only.split(","):
        results[f"{name} {version_of(python, PEERS[name])}"] = run_peer(python, name, args.trades)
    ours = {}
    with simulator("--asap", "--loop") as sim:
        for metrics in (True, False):
            for transport in READERS:
                ours[transport, metrics] = asyncio.run(run_ours(sim.url, args.trades, transport, metrics))
    print(f"machine: {describe()}")
    print(f"peers: {args.trades:,} real BTCUSDT trades (bundled tape looped) from the simulator in its own process, "
          "counted in each library's callback")
    rates = []
    for label, result in results.items():
        if isinstance(result, str):
            print(f"  {label:40s} {result}")
            continue
        rate = result["trades"] / result["seconds"]
        rates.append(rate)
        print(f"  {label:40s} {rate:>10,.0f} trades/s (the library alone, no metrics)")
    for (transport, metrics), result in ours.items():
        our_rate = result["trades"] / result["seconds"]
        label = f"orderflow-plugin, transport {transport!r}"
        ratio = f"   {our_rate / max(rates):.2f} x the fastest peer (target >= 3)" if rates else ""
        work = "every default metric" if metrics else "flow=Flow(enabled=False)"
        print(f"  {label:40s} {our_rate:>10,.0f} trades/s ({work}){ratio}")


if __name__ == "__main__":
    main()
