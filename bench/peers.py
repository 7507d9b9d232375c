"""Peers, side by side in one run: python-binance, cryptofeed, unicorn-binance-websocket-api, a bare
websockets + msgspec client, and OrderFlow, all pointed at the local simulator.

Each peer is installed only in this benchmark's own virtual environment (``bench/.peers-venv``,
made on first run from PyPI), runs in its own process with its normal public API, and counts
trades in its callback; the first trade starts its clock. The ceiling, "bare websockets +
msgspec", runs in this process: a plain ``websockets`` asyncio client (``max_queue=None``, as in
``end_to_end.py``) that decodes each frame with msgspec into a small aggTrade Struct and counts
it in a callback. OrderFlow runs here with its defaults (the fast reader, every default metric,
one counting hook), and as variants that each change one option: ``reader="websockets"``,
``flow=Flow(enabled=False)`` (decode, sequence, one hook: closer to what the peers do), and both.
The simulator replays the bundled real tape looped, as fast as each client reads, in a process of
its own (a fresh one per client and run). Every client runs ``--repeat`` times, interleaved
(round after round), and its median trades/s is reported.

Run: .venv/bin/python bench/peers.py [--trades 300000] [--repeat 3]
Targets (issue #16, part 10): OrderFlow with its defaults ahead of every peer, and at least
0.75 x the bare websockets + msgspec client, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe
from _sim import simulator

from orderflow_plugin import Flow, OrderFlow, PluginManager

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


def run_peer(python: Path, name: str, url: str, n: int) -> dict[str, float] | str:
    try:
        done = subprocess.run([str(python), "-c", CLIENTS[name], url, str(n)], capture_output=True,
                              text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "failed: no result in 600 s"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return f"failed: {(done.stderr.strip().splitlines() or ['no output'])[-1][:200]}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


class Count:
    """The counting callback every in-process client calls per trade; stops at the target."""

    def __init__(self, target: int) -> None:
        self.target, self.seen, self.start = target, 0, 0.0
        self.done = asyncio.Event()

    def on_trade(self, trade: object) -> None:
        self.seen += 1
        if self.seen == 1:
            self.start = time.perf_counter()
        if self.seen >= self.target:
            self.done.set()

    def result(self) -> dict[str, float]:
        return {"seconds": time.perf_counter() - self.start, "trades": self.target - 1}


class _AggTrade(msgspec.Struct, gc=False):
    """The aggTrade fields, as in orderflow_plugin/decode.py (msgspec skips "e" and "M")."""

    E: int
    s: str
    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 - Binance's field name
    T: int
    m: bool


class _Frame(msgspec.Struct, gc=False):
    stream: str
    data: _AggTrade


async def run_bare(url: str, n: int, as_bytes: bool = False) -> dict[str, float]:
    """The ceiling: a plain websockets client, msgspec decode, a counting callback."""
    count, decode = Count(n), msgspec.json.Decoder(_Frame).decode
    # max_queue=None as in end_to_end.py: with websockets' default (16) this client reads only
    # ~18,500 frames/s from the simulator, which would make the ceiling meaningless.
    async with websockets.connect(f"{url}/stream?streams=btcusdt@aggTrade", max_queue=None) as ws:
        while count.seen < n:
            count.on_trade(decode(await ws.recv(decode=False) if as_bytes else await ws.recv()).data)
    return count.result()


async def run_ours(url: str, n: int, **options: Any) -> dict[str, float]:
    count = Count(n)
    manager = PluginManager()
    manager.register(count, name="count")
    flow = OrderFlow(["BTCUSDT"], ws_url=url, rest_url=url.replace("ws://", "http://"), plugins=manager, **options)
    async with flow:
        await count.done.wait()
        result = count.result()
    # Anything but 0 here means the run was not the plain read it claims to be.
    result.update({k: flow.counters[k] for k in ("reconnects", "stalls", "gaps", "loop_blocks")})
    return result


CEILING = "bare websockets + msgspec"
BYTES = "bare websockets + msgspec, recv(decode=False)"
OURS: dict[str, dict[str, Any]] = {
    "orderflow-plugin, defaults": {},
    "orderflow-plugin, reader='websockets'": {"reader": "websockets"},
    "orderflow-plugin, flow=Flow(enabled=False)": {"flow": Flow(enabled=False)},
    "orderflow-plugin, both of those": {"reader": "websockets", "flow": Flow(enabled=False)},
}
NOTES = {
    CEILING: "in process; ws.recv() -> msgspec Struct -> callback (the target's reference)",
    BYTES: "the same, frames as bytes: not the reference, shown for scale",
    "orderflow-plugin, defaults": "fast reader, every default metric, one counting hook",
    "orderflow-plugin, reader='websockets'": "websockets parses the frames; every default metric",
    "orderflow-plugin, flow=Flow(enabled=False)": "fast reader; decode, sequence, hook; no engine",
    "orderflow-plugin, both of those": "websockets reader, no engine",
}


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def paired(runs: dict[str, list[dict[str, float] | str]], ours: str, others: list[str], what: str) -> str:
    """Round by round, ours against the fastest of ``others`` in the same round (the machine's noise
    moves a whole round together, so these ratios vary less than the rates)."""
    ratios = []
    for i, result in enumerate(runs[ours]):
        rivals = [r["trades"] / r["seconds"] for r in (runs[o][i] for o in others) if isinstance(r, dict)]
        if isinstance(result, dict) and rivals:
            ratios.append(result["trades"] / result["seconds"] / max(rivals))
    if not ratios:
        return ""
    return (f"\n    round by round, against {what}: {', '.join(f'{r:.2f}' for r in ratios)}"
            f" (median {statistics.median(ratios):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per client; the median is reported")
    parser.add_argument("--only", default=",".join(PEERS), help="peers to run, comma separated")
    args = parser.parse_args()
    n, python = args.trades, peers_python()
    clients: dict[str, Callable[[str], dict[str, float] | str | Awaitable[dict[str, float]]]] = {}
    peer_labels = []
    for name in filter(None, args.only.split(",")):
        label = f"{name} {version_of(python, PEERS[name])}"
        peer_labels.append(label)
        clients[label] = lambda url, name=name: run_peer(python, name, url, n)
    clients[CEILING] = lambda url: run_bare(url, n)
    clients[BYTES] = lambda url: run_bare(url, n, as_bytes=True)
    for label, options in OURS.items():
        clients[label] = lambda url, options=options: run_ours(url, n, **options)

    runs: dict[str, list[dict[str, float] | str]] = {label: [] for label in clients}
    for round_ in range(1, args.repeat + 1):
        for label, client in clients.items():
            print(f"round {round_}/{args.repeat}: {label}...", file=sys.stderr, flush=True)
            with simulator("--asap", "--loop") as sim:
                result = client(sim.url)
                runs[label].append(asyncio.run(result) if asyncio.iscoroutine(result) else result)  # type: ignore[arg-type]

    medians: dict[str, float] = {}
    detail: dict[str, str] = {}
    for label, results in runs.items():
        good = [r for r in results if isinstance(r, dict)]
        rates = [r["trades"] / r["seconds"] for r in good]
        failed = [r for r in results if isinstance(r, str)]
        if rates:
            medians[label] = statistics.median(rates)
        events = {k: sum(int(r.get(k, 0)) for r in good) for k in ("reconnects", "stalls", "gaps", "loop_blocks")}
        detail[label] = ", ".join(f"{r:,.0f}" for r in rates) + "".join(
            f"; {k} {v}" for k, v in events.items() if v) + (f"; {len(failed)} {failed[-1]}" if failed else "")

    fastest = max((label for label in peer_labels if label in medians), key=medians.__getitem__, default=None)
    bare = medians.get(CEILING)
    print(f"machine: {describe()}")
    print(f"peers: {n:,} real BTCUSDT trades (bundled tape looped) from the simulator in its own process "
          f"(a fresh one per run), counted in each client's callback; median of {args.repeat} runs, interleaved")
    print(f"  {'client':48s} {'median':>9s}  {'/ bare':>7s}  {'/ fastest peer':>14s}   runs (trades/s)")
    for label in clients:
        if label not in medians:
            print(f"  {label:48s} {'-':>9s}  {'':7s}  {'':14s}   {detail[label]}")
            continue
        rate = medians[label]
        to_bare = f"{rate / bare:.2f} x" if bare else "-"
        to_peer = f"{rate / medians[fastest]:.2f} x" if fastest else "-"
        print(f"  {label:48s} {rate:>9,.0f}  {to_bare:>7s}  {to_peer:>14s}   {detail[label]}")
    print(f"  ({CEILING}: websockets {version('websockets')}, msgspec {version('msgspec')}, {NOTES[CEILING]})")
    for label in list(clients)[len(peer_labels) + 1:]:
        print(f"  ({label}: {NOTES[label]})")
    print("  (the peers only receive: python-binance and cryptofeed parse JSON, unicorn hands over the raw string)")
    ours = medians.get("orderflow-plugin, defaults")
    print("targets (issue #16, part 10), OrderFlow with its defaults, on the medians:")
    if ours is not None and fastest is not None:
        ratio = ours / medians[fastest]
        print(f"  ahead of every peer: {ratio:.2f} x the fastest peer ({fastest}): {'met' if ratio > 1 else 'not met'}"
              f"{paired(runs, 'orderflow-plugin, defaults', peer_labels, 'the fastest peer of that round')}")
    if ours is not None and bare:
        ratio = ours / bare
        print(f"  >= 0.75 x {CEILING}: {ratio:.2f} x: {'met' if ratio >= 0.75 else 'not met'}"
              f"{paired(runs, 'orderflow-plugin, defaults', [CEILING], 'the ceiling of that round')}")



if __name__ == "__main__":
    main()
