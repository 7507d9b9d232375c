"""The ``orderflow`` command (also ``python -m orderflow_plugin``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence

from .config import Settings, load_settings
from .dispatch import Dispatcher
from .errors import OrderFlowError, SettingsError
from .models import format_decimal
from .plugins import plugins_from_settings
from .replay import ReplayStats, TapeReplay
from .tape import bundled_tape, load_tape

__all__ = ["main"]

logger = logging.getLogger("orderflow_plugin")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.settings)
    except SettingsError as exc:
        print(f"orderflow: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings)
    try:
        return int(args.run(args, settings))
    except OrderFlowError as exc:
        print(f"orderflow: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orderflow", description="Binance aggTrade order flow that never hangs silently."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--settings", action="append", default=[], metavar="FILE",
        help="settings file layered over the defaults (repeatable; default: none)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="replay the bundled real BTCUSDT tape through the plugins, offline",
    )
    demo.add_argument("--speed", type=_positive, default=None, help="replay speed (default: settings demo.speed)")
    demo.add_argument(
        "--duration", type=_not_negative, default=None,
        help="seconds to run, 0 = whole tape (default: settings demo.duration)",
    )
    demo.add_argument("--tape", default=None, help="tape file (CSV dump or frames JSONL) instead of the bundled one")
    demo.set_defaults(run=_demo)

    sim = sub.add_parser(
        "sim", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="run the local Binance simulator for testing a bot by hand",
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sim.add_argument("--port", type=int, default=9443, help="port to listen on (0 = any free port)")
    sim.add_argument("--tape", action="append", default=[], help="tape file, repeatable (default: the bundled tape)")
    pace = sim.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_positive, default=1.0, help="replay speed (1 = original timing)")
    pace.add_argument("--rate", type=_positive, default=None, help="fixed trades per second instead of --speed")
    pace.add_argument("--asap", action="store_true", help="as fast as clients read")
    sim.add_argument("--loop", action="store_true", help="repeat the tape with ids and times shifted")
    sim.add_argument("--market", choices=["spot", "usdm"], default=None, help="frame shape (default: the tape's)")
    sim.add_argument("--scenario", default=None, help="fault scenario file (.toml or .json)")
    sim.add_argument("--duration", type=_not_negative, default=0.0, help="seconds to run, 0 = until Ctrl-C")
    sim.set_defaults(run=_sim)

    show = sub.add_parser(
        "config", parents=[common], help="validate the settings and print them as JSON"
    )
    show.set_defaults(run=_config)
    return parser


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _not_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)  # stdout is for the program's output
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(settings.logging.level)
    logging.getLogger("orderflow_hooks").handlers[:] = [handler]
    logging.getLogger("orderflow_hooks").setLevel(settings.logging.level)


def _config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps({"env": settings.env, "settings": settings.to_dict()}, indent=2))
    return 0


def _sim(args: argparse.Namespace, settings: Settings) -> int:
    from .sim import Pace, Scenario, Simulator  # the server is only imported when asked for

    try:
        scenario = Scenario.from_file(args.scenario) if args.scenario else None
    except ValueError as exc:
        print(f"orderflow sim: {exc}", file=sys.stderr)
        return 2
    tapes = [load_tape(path) for path in args.tape] or None
    simulator = Simulator(
        tapes, scenario=scenario, pace=Pace(speed=args.speed, rate=args.rate, asap=args.asap),
        loop=args.loop, market=args.market, host=args.host, port=args.port, record_ids=False,
    )

    async def serve() -> None:
        async with simulator:
            print(f"simulator listening: streams {simulator.ws_url}/stream?streams=<symbol>@aggTrade, "
                  f"REST {simulator.rest_url}/api/v3/aggTrades; Ctrl-C to stop", flush=True)
            try:
                await asyncio.sleep(args.duration or float("inf"))
            finally:
                record = simulator.record
                print(json.dumps({
                    "event": "summary", "connections": len(record.connections),
                    "rest_requests": len(record.rest),
                    "played": {s: simulator.happened(s) for s in simulator.feeds},
                }), flush=True)

    asyncio.run(serve())
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    tape = load_tape(args.tape) if args.tape else bundled_tape()
    speed = args.speed if args.speed is not None else settings.demo.speed
    duration = args.duration if args.duration is not None else settings.demo.duration
    return asyncio.run(_run_demo(settings, TapeReplay(tape, speed=speed, duration=duration)))


async def _run_demo(settings: Settings, replay: TapeReplay) -> int:
    manager = plugins_from_settings(settings)
    dispatcher = Dispatcher(
        manager, replay,
        slow_hook_ms=settings.plugins.slow_hook_ms,
        report_interval=settings.plugins.report_interval,
        async_queue_size=settings.plugins.async_queue_size,
    )
    for error in manager.load_errors:
        dispatcher.emit("on_error", error=error, where="plugins")
    started = time.monotonic()
    tape = replay.tape
    print(f"replaying {len(tape.rows)} real {tape.symbol} aggTrades from {tape.source} at {replay.speed:g}x; "
          f"plugins: {', '.join(sorted(n for n, _ in manager.list_name_plugin())) or 'none'}", flush=True)
    dispatcher.emit("on_startup", settings=settings)
    stats = await replay.run(dispatcher, on_tick=lambda s: print(_line(tape.symbol, s), flush=True))
    print(_line(tape.symbol, stats), flush=True)
    summary = {
        "trades": stats.trades,
        "plugin_errors": dispatcher.plugin_errors,
        "uptime_s": round(time.monotonic() - started, 3),
    }
    dispatcher.emit("on_shutdown", summary=summary)
    await dispatcher.aclose()
    print(json.dumps({"event": "summary", **summary}), flush=True)
    return 0


def _line(symbol: str, stats: ReplayStats) -> str:
    last = stats.last
    price = format_decimal(last.price) if last else "-"
    return (
        f"{symbol}  last {price}  trades {stats.trades}  "
        f"buy {format_decimal(stats.buy_volume)}  sell {format_decimal(stats.sell_volume)}  "
        f"delta {'+' if stats.delta >= 0 else ''}{format_decimal(stats.delta)}"
    )
