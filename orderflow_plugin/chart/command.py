"""``orderflow chart``: the stream (Binance, a Redis URL, or the simulator on the bundled tape) and the page."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

from ..config import Settings
from ..engine import parse_window
from ..options import Flow, from_table
from ..stream import OrderFlow
from ..tape import bundled_tape
from .feed import ChartFeed
from .server import LOOPBACK, serve

__all__ = ["chart_command", "chart_flow"]


def chart_flow(flow_options: Flow, window: str, tick: str | None) -> Flow:
    """The stream's Flow group with the chart's window in it and the chart's footprint tick."""
    windows = flow_options.windows if window in flow_options.windows else (*flow_options.windows, window)
    changes: dict[str, Any] = {"windows": windows}
    if tick:
        changes["footprint_tick"] = tick
    if not (changes.get("footprint_tick") or flow_options.footprint_tick):
        changes["footprint_tick"] = "10"  # a footprint chart needs levels
    return dataclasses.replace(flow_options, **changes)


def _positive_decimal(text: str) -> bool:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return False
    return value.is_finite() and value > 0


def chart_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run the stream and serve its chart until Ctrl-C or ``--duration``."""
    if args.host != LOOPBACK and not args.expose:
        print(f"orderflow chart: --host {args.host} serves the page beyond this machine; add --expose to do so",
              file=sys.stderr)
        return 2
    try:
        parse_window(args.window)
        if args.tick is not None and not _positive_decimal(args.tick):
            raise ValueError(f"--tick {args.tick} must be > 0, as a decimal like 10 or 0.5")
    except ValueError as exc:
        print(f"orderflow chart: {exc}", file=sys.stderr)
        return 2
    if args.redis_signals and not args.from_url:
        print("orderflow chart: --redis-signals reads the signals collectors wrote: it needs --from redis://...",
              file=sys.stderr)
        return 2
    if args.store is not None and not os.path.isdir(args.store):
        print(f"orderflow chart: --store {args.store} is not a folder (a store `orderflow history` wrote)",
              file=sys.stderr)
        return 2
    if args.host != LOOPBACK:
        print(f"orderflow chart: WARNING: serving on {args.host}: anyone who can reach it sees the chart "
              "(read-only)", file=sys.stderr)
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    flow_options = chart_flow(from_table(Flow, settings.flow), args.window, args.tick)
    overrides: dict[str, Any] = {"flow": flow_options}
    sim = None
    if args.demo:
        from ..sim import Pace, Simulator

        tape = bundled_tape()
        sim = Simulator(tape, pace=Pace(speed=args.speed), record_ids=False)
        await sim.start()
        overrides.update(symbols=[tape.symbol], ws_url=sim.ws_url, rest_url=sim.rest_url)
    else:
        if args.symbol:
            overrides["symbols"] = args.symbol
        if args.ws_url:
            overrides["ws_url"] = args.ws_url
        if args.rest_url:
            overrides["rest_url"] = args.rest_url
        if args.from_url:
            from ..redisbus.source import RedisSource

            overrides["feed"] = RedisSource(args.from_url, signals=args.redis_signals)
            if args.redis_signals:  # the collectors' signals, read from Redis: none computed here
                overrides["flow"] = dataclasses.replace(flow_options, signals=False)
    try:
        flow = OrderFlow.from_settings(settings, **overrides)
    except ValueError as exc:
        print(f"orderflow chart: {exc}", file=sys.stderr)
        return 2
    feed = ChartFeed(flow, flow.symbols[0], args.window)
    if args.store is not None:
        try:
            past = await _store_bars(args.store, flow, feed)
        except ValueError as exc:
            print(f"orderflow chart: {exc}", file=sys.stderr)
            feed.close()
            if sim is not None:
                await sim.stop()
            return 2
        print(f"{past}, then live", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started = asyncio.Event()
    try:
        async with flow:
            server = asyncio.ensure_future(serve(feed, host=args.host, port=args.port, started=started))
            poller = asyncio.ensure_future(feed.run())
            await asyncio.wait([server, asyncio.ensure_future(started.wait())], return_when=asyncio.FIRST_COMPLETED)
            if server.done():
                server.result()
            print(f"footprint chart of {feed.symbol} {feed.window} on http://{args.host}:{feed.port}/", flush=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.duration or None):
                    await stop.wait()
            poller.cancel()
            server.cancel()
            await asyncio.gather(poller, server, return_exceptions=True)
    finally:
        feed.close()
        if sim is not None:
            await sim.stop()
    return 0


async def _store_bars(root: str, flow: OrderFlow, feed: ChartFeed) -> str:
    """Put the store's closed bars of the chart's symbol and window in ``feed``; say how many and from what."""
    from pathlib import Path

    from .history import store_bars

    bars, origin = await asyncio.to_thread(store_bars, Path(root), flow.market, feed.symbol, feed.window, flow.flow)
    feed.add_history(bars)
    return f"{len(bars)} {feed.symbol} {feed.window} bars from the store's {origin} in {root}"
