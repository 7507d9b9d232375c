"""The ``orderflow`` command (also ``python -m orderflow_plugin``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .config import Settings, load_settings
from .errors import OrderFlowError, SettingsError
from .stream import OrderFlow
from .tape import Tape, bundled_tape, load_tape
from .view import JsonFeed, LiveView

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


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option or value in one line, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="orderflow", description="Binance aggTrade order flow that never hangs silently.")
    common = _Parser(add_help=False)
    common.add_argument(
        "--settings", action="append", default=[], metavar="FILE",
        help="settings file layered over the defaults (repeatable; default: none)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    stream = sub.add_parser(
        "stream", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="stream live order flow with the hooks from settings (a live view, or --json lines)",
    )
    stream.add_argument("--symbol", action="append", default=None, help="symbol, repeatable (default: settings)")
    stream.add_argument("--market", choices=["spot", "usdm"], default=None, help="market (default: settings)")
    stream.add_argument("--ws-url", default=None, help="WebSocket base URL (default: settings)")
    stream.add_argument("--rest-url", default=None, help="REST base URL (default: settings)")
    stream.add_argument("--ca-file", type=_ca_file, default=None,
                        help="extra CA bundle (PEM) to trust, e.g. orderflow sim --tls's (default: settings)")
    stream.add_argument("--duration", type=_not_negative, default=0.0, help="seconds to run, 0 = until Ctrl-C")
    stream.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    stream.set_defaults(run=_stream)

    replay = sub.add_parser(
        "replay", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="play a recorded tape (CSV dump, frames JSONL, recorder output) through the same pipeline",
    )
    replay.add_argument("file", help="the tape file")
    replay.add_argument("--speed", type=_positive, default=1.0, help="replay speed (1 = original timing)")
    replay.add_argument("--duration", type=_not_negative, default=0.0, help="seconds to run, 0 = whole tape")
    replay.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    replay.set_defaults(run=_replay)

    demo = sub.add_parser(
        "demo", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="offline: the local simulator replays the bundled real BTCUSDT tape into the live stream",
    )
    demo.add_argument("--speed", type=_positive, default=None, help="replay speed (default: settings demo.speed)")
    demo.add_argument(
        "--duration", type=_not_negative, default=None,
        help="seconds to run, 0 = whole tape (default: settings demo.duration)",
    )
    demo.add_argument("--tape", default=None, help="tape file (CSV dump or frames JSONL) instead of the bundled one")
    demo.add_argument("--scenario", default=None, help="simulator fault scenario (.toml/.json) to watch it recover")
    demo.add_argument("--json", action="store_true", help="one JSON object per event instead of the live view")
    demo.set_defaults(run=_demo)

    sim = sub.add_parser(
        "sim", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="run the local Binance simulator for testing a bot by hand",
    )
    sim.add_argument("--host", default=None,
                     help="address to listen on (default: 127.0.0.1; with --tls, localhost, the certificate's name)")
    sim.add_argument("--port", type=int, default=9443, help="port to listen on (0 = any free port)")
    sim.add_argument("--tape", action="append", default=[], help="tape file, repeatable (default: the bundled tape)")
    pace = sim.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_positive, default=1.0, help="replay speed (1 = original timing)")
    pace.add_argument("--rate", type=_positive, default=None, help="fixed trades per second instead of --speed")
    pace.add_argument("--asap", action="store_true", help="as fast as clients read")
    sim.add_argument("--smooth", action="store_true",
                     help="spin between trades instead of sleeping: evenly spaced frames (uses a core)")
    sim.add_argument("--loop", action="store_true", help="repeat the tape with ids and times shifted")
    sim.add_argument("--market", choices=["spot", "usdm"], default=None, help="frame shape (default: the tape's)")
    sim.add_argument("--scenario", default=None, help="fault scenario file (.toml or .json)")
    sim.add_argument("--duration", type=_not_negative, default=0.0, help="seconds to run, 0 = until Ctrl-C")
    sim.add_argument("--tls", action="store_true",
                     help="serve wss:// and https:// with a throwaway CA written to a temporary folder; its path "
                          "is printed, for --ca-file / connector.ca_file (needs orderflow-plugin[tls])")
    sim.set_defaults(run=_sim)

    doctor = sub.add_parser(
        "doctor", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="check settings, DNS, TCP, TLS, upgrade, subscription, first trade, REST, clock and loop",
    )
    doctor.add_argument("--ws-url", type=_url("ws", "wss"), default=None,
                        help="WebSocket base URL (default: from the settings)")
    doctor.add_argument("--rest-url", type=_url("http", "https"), default=None,
                        help="REST base URL (default: from the settings)")
    doctor.add_argument("--symbol", type=_symbol, default=None,
                        help="symbol to subscribe to (default: the first in settings)")
    doctor.add_argument("--market", choices=["spot", "usdm"], default=None, help="market (default: settings)")
    doctor.add_argument("--ca-file", type=_ca_file, default=None,
                        help="extra CA bundle (PEM) to trust, e.g. the one `orderflow sim --tls` prints "
                             "(default: settings connector.ca_file)")
    doctor.add_argument("--timeout", type=_positive, default=3.0,
                        help="seconds each check may take at most (a shorter connector deadline still applies)")
    doctor.add_argument("--json", action="store_true", help="one JSON object per check instead of text")
    doctor.set_defaults(run=_doctor)

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


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise argparse.ArgumentTypeError(f"{text!r} must start with {' or '.join(f'{s}://' for s in schemes)} "
                                             "and name a host")
        return text

    return parse


def _symbol(text: str) -> str:
    from .symbols import normalize_symbol

    try:
        return normalize_symbol(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ca_file(text: str) -> str:
    from .tls import client_context

    try:
        client_context(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now, so the live view's redirect keeps log lines above it."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging(settings: Settings) -> None:
    handler = _StderrHandler()  # logs go to stderr: stdout is for the program's output
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(settings.logging.level)
    logging.getLogger("orderflow_hooks").handlers[:] = [handler]
    logging.getLogger("orderflow_hooks").setLevel(settings.logging.level)


def _config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps({"env": settings.env, "settings": settings.to_dict()}, indent=2))
    return 0


def _sim(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from .sim import Pace, Scenario, SimCertificates, Simulator  # the server is only imported when asked for

    try:
        scenario = Scenario.from_file(args.scenario) if args.scenario else None
    except ValueError as exc:
        print(f"orderflow sim: {exc}", file=sys.stderr)
        return 2
    tapes = [load_tape(path) for path in args.tape] or None
    # With TLS the URLs must name a host the certificate is for: "localhost" (bound on every loopback
    # address it resolves to, so a client that tries ::1 first finds the server too), or the given host.
    host = args.host or ("localhost" if args.tls else "127.0.0.1")
    url_host = "localhost" if host in ("0.0.0.0", "::", "") else host
    with contextlib.ExitStack() as cleanup:
        server_context, ca_file = None, ""
        if args.tls:
            folder = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="orderflow-sim-tls-"))
            try:
                certificates = SimCertificates(folder, ("localhost", "127.0.0.1", "::1", url_host))
            except ImportError as exc:
                print(f"orderflow sim: {exc}", file=sys.stderr)
                return 1
            server_context, ca_file = certificates.server_context(), certificates.ca_file
        simulator = Simulator(
            tapes, scenario=scenario, pace=Pace(speed=args.speed, rate=args.rate, asap=args.asap, smooth=args.smooth),
            loop=args.loop, market=args.market, host=host, port=args.port, record_ids=False,
            ssl_context=server_context,
        )

        async def serve() -> None:
            async with simulator:
                ws_url = simulator.ws_url.replace(f"//{host}:", f"//{url_host}:", 1)
                rest_url = simulator.rest_url.replace(f"//{host}:", f"//{url_host}:", 1)
                print(f"simulator listening: streams {ws_url}/stream?streams=<symbol>@aggTrade, "
                      f"REST {rest_url}/api/v3/aggTrades; Ctrl-C to stop", flush=True)
                if ca_file:
                    print(f"TLS with a throwaway CA (deleted on exit): {ca_file}\n"
                          f"  trust it with --ca-file {ca_file} or ORDERFLOW_CONNECTOR__CA_FILE={ca_file}, e.g.\n"
                          f"  orderflow doctor --ws-url {ws_url} --rest-url {rest_url} --ca-file {ca_file}",
                          flush=True)
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


def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from .doctor import Check, diagnose

    market = args.market or settings.market
    endpoints = settings.endpoints[market]
    ws_url = args.ws_url or settings.connector.ws_url or endpoints.ws_url
    rest_url = args.rest_url or settings.connector.rest_url or endpoints.rest_url
    symbol = args.symbol or settings.symbols[0]
    ca_file = args.ca_file or settings.connector.ca_file or None
    try:
        checks = diagnose(settings, ws_url=ws_url, rest_url=rest_url, symbol=symbol, market=market, ca_file=ca_file,
                        timeout=args.timeout)
    except Exception as exc:  # the checks never raise; this is the last guard so --json stays JSON
        checks = [Check("doctor", "FAIL", 0.0, f"the doctor itself failed: {type(exc).__name__}: {exc}",
                        "a bug in orderflow doctor: please report it with this line")]
    for check in checks:
        print(json.dumps(check.as_json()) if args.json else check.line(), flush=True)
    failed = [c.name for c in checks if c.status == "FAIL"]
    if not args.json:
        skipped = sum(c.status == "SKIP" for c in checks)
        print(f"{len(checks)} checks: {len(checks) - len(failed) - skipped} without failure, {skipped} skipped"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from .sim import Scenario

    tape = load_tape(args.tape) if args.tape else bundled_tape()
    speed = args.speed if args.speed is not None else settings.demo.speed
    duration = args.duration if args.duration is not None else settings.demo.duration
    try:
        scenario = Scenario.from_file(args.scenario) if args.scenario else None
    except ValueError as exc:
        print(f"orderflow demo: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run_on_simulator(settings, tape, speed, duration, scenario, as_json=args.json))


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run_on_simulator(settings, load_tape(args.file), args.speed, args.duration, None,
                                         as_json=args.json))


def _stream(args: argparse.Namespace, settings: Settings) -> int:
    overrides: dict[str, Any] = {}
    if args.symbol:
        overrides["symbols"] = args.symbol
    if args.market:
        endpoints = settings.endpoints[args.market]
        overrides.update(market=args.market, ws_url=settings.connector.ws_url or endpoints.ws_url,
                         rest_url=settings.connector.rest_url or endpoints.rest_url)
    if args.ws_url:
        overrides["ws_url"] = args.ws_url
    if args.rest_url:
        overrides["rest_url"] = args.rest_url
    if args.ca_file:
        overrides["ca_file"] = args.ca_file
    try:
        flow = OrderFlow.from_settings(settings, **overrides)
    except ValueError as exc:
        print(f"orderflow stream: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(flow, as_json=args.json, duration=args.duration))


async def _run_on_simulator(settings: Settings, tape: Tape, speed: float, duration: float, scenario: Any, *,
                            as_json: bool) -> int:
    """The simulator on loopback plays ``tape``; the real stream consumes it, exactly as `stream` would."""
    from .sim import Pace, Simulator

    async with Simulator(tape, pace=Pace(speed=speed), scenario=scenario, record_ids=False) as sim:
        flow = OrderFlow.from_settings(settings, symbols=[tape.symbol], market=tape.market,
                                       ws_url=sim.ws_url, rest_url=sim.rest_url)
        if not as_json:
            names = sorted(str(name) for name, _ in flow.plugins.list_name_plugin())
            print(f"replaying {len(tape.rows)} real {tape.symbol} aggTrades from {tape.source} at {speed:g}x "
                  f"through the local simulator on {sim.ws_url}; plugins: {', '.join(names) or 'none'}",
                  flush=True)
        last_id = tape.rows[-1].id
        return await _run(flow, as_json=as_json, duration=duration,
                          done=lambda: flow.health()["symbols"][tape.symbol]["last_id"] == last_id)


async def _run(flow: OrderFlow, *, as_json: bool, duration: float, done: Callable[[], bool] | None = None) -> int:
    """Run ``flow`` with the JSON feed or the live view until duration, ``done()``, SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    view = LiveView(flow.symbols)
    flow.plugins.register(JsonFeed() if as_json else view, name="cli-view")
    deadline = loop.time() + duration if duration else float("inf")
    live: Any = None
    if not as_json and sys.stdout.isatty():
        from rich.live import Live

        live = Live(auto_refresh=False)
    async with flow:
        tick = 0.2 if as_json or live is not None else 1.0
        with live if live is not None else contextlib.nullcontext():
            while not stop.is_set() and loop.time() < deadline and not (done is not None and done()):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(tick, deadline - loop.time()))):
                        await stop.wait()
                if live is not None:
                    live.update(view.table(flow.health()), refresh=True)
                elif not as_json:
                    for symbol in flow.symbols:
                        print(view.line(symbol, flow.health()), flush=True)
    if live is not None:
        live.console.print(view.table(flow.health()))
    elif not as_json:  # the final state, from the snapshot the stream sends as it stops
        for symbol in flow.symbols:
            print(view.line(symbol, flow.health()), flush=True)
    print(json.dumps({"event": "summary", **flow.summary()}), flush=True)
    return 0
