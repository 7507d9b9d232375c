"""What each ``orderflow`` command does, once :mod:`.cli` has parsed its arguments and loaded the settings.

Each ``*_command(args, settings)`` returns the process's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_output import JsonFeed, LiveView
from .config import Settings
from .errors import TapeError, UnknownSymbol
from .stream import OrderFlow
from .tape import Tape, bundled_tape, load_tape

if TYPE_CHECKING:
    from .sim import Simulator

__all__ = ["config_command", "demo_command", "doctor_command", "replay_command", "run_flow", "run_on_simulator",
           "sim_command", "stream_command"]

logger = logging.getLogger(__name__)


def config_command(args: argparse.Namespace, settings: Settings) -> int:
    """``orderflow config``: the validated settings as JSON."""
    print(json.dumps({"env": settings.env, "settings": settings.to_dict()}, indent=2))
    return 0


def sim_command(args: argparse.Namespace, settings: Settings) -> int:
    """``orderflow sim``: serve the local simulator until ``--duration`` or Ctrl-C."""
    import tempfile

    from .sim import Pace, Scenario, SimCertificates, Simulator  # the server is only imported when asked for

    if args.symbol and len(args.symbol) != len(args.tape):
        print(f"orderflow sim: {len(args.symbol)} --symbol for {len(args.tape)} --tape: give one --symbol per --tape, "
              "in the same order, or none to take each from its file", file=sys.stderr)
        return 2
    try:
        scenario = Scenario.from_file(args.scenario) if args.scenario else None
        tapes = [load_tape(path, symbol=symbol, market=args.market)
                 for path, symbol in zip(args.tape, args.symbol or [None] * len(args.tape), strict=True)] or None
    except ValueError as exc:  # TapeError included
        print(f"orderflow sim: {exc}", file=sys.stderr)
        return 2
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
        try:
            simulator = Simulator(
                tapes, scenario=scenario,
                pace=Pace(speed=args.speed, rate=args.rate, asap=args.asap, smooth=args.smooth),
                loop=args.loop, market=args.market, host=host, port=args.port, record_ids=False,
                ssl_context=server_context,
            )
        except ValueError as exc:  # two tapes of one symbol, ids that go backwards
            print(f"orderflow sim: {exc}", file=sys.stderr)
            return 2

        async def serve() -> int:
            try:
                await simulator.start()
            except OSError as exc:  # the port is taken, or the host is not one of ours
                await simulator.stop()
                # asyncio's own text repeats the address: the system's words for the error number are enough
                reason = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else exc.strerror
                print(f"orderflow sim: cannot listen on {host}:{args.port}: {reason or exc}", file=sys.stderr)
                return 1
            ended = None if args.loop else asyncio.create_task(_tell_when_the_tape_ends(simulator))
            try:
                ws_url = simulator.ws_url.replace(f"//{host}:", f"//{url_host}:", 1)
                rest_url = simulator.rest_url.replace(f"//{host}:", f"//{url_host}:", 1)
                print(f"simulator listening: streams {ws_url}/stream?streams=<symbol>@aggTrade, "
                      f"REST {rest_url}/api/v3/aggTrades; Ctrl-C to stop", flush=True)
                if ca_file:
                    print(f"TLS with a throwaway CA (deleted on exit): {ca_file}\n"
                          f"  trust it with --ca-file {ca_file} or ORDERFLOW_CONNECTOR__CA_FILE={ca_file}, e.g.\n"
                          f"  orderflow doctor --ws-url {ws_url} --rest-url {rest_url} --ca-file {ca_file}",
                          flush=True)
                # SIGINT and SIGTERM stop it cleanly even when its parent started it with SIGINT ignored
                # (as pytest-xdist workers, nohup'd shells and some process managers do).
                stop = asyncio.Event()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    asyncio.get_running_loop().add_signal_handler(signum, stop.set)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.duration or None)
            finally:
                if ended is not None:
                    ended.cancel()
                await simulator.stop()
                record = simulator.record
                print(json.dumps({
                    "event": "summary", "connections": len(record.connections),
                    "rest_requests": len(record.rest),
                    "played": {s: simulator.happened(s) for s in simulator.feeds},
                }), flush=True)
            return 0

        return asyncio.run(serve())


async def _tell_when_the_tape_ends(simulator: Simulator) -> None:
    """``orderflow sim`` without ``--loop``: say when the market has played its last trade, and what to do."""
    await simulator.wait_for(lambda record: record.market_finished, timeout=float("inf"))
    logger.warning("the tape has ended, so clients get no more trades; run orderflow sim with --loop to repeat it "
                   "(ids and times shifted)")


def doctor_command(args: argparse.Namespace, settings: Settings) -> int:
    """``orderflow doctor``: one line (or JSON object) per check; exit code 1 when any failed."""
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


def demo_command(args: argparse.Namespace, settings: Settings) -> int:
    """``orderflow demo``: the bundled (or given) tape through the simulator into the live stream."""
    from .sim import Scenario

    if (args.symbol or args.market) and not args.tape:
        print("orderflow demo: --symbol and --market describe a --tape file; the bundled tape is BTCUSDT spot",
              file=sys.stderr)
        return 2
    speed = args.speed if args.speed is not None else settings.demo.speed
    duration = args.duration if args.duration is not None else settings.demo.duration
    try:
        tape = load_tape(args.tape, symbol=args.symbol, market=args.market) if args.tape else bundled_tape()
        scenario = Scenario.from_file(args.scenario) if args.scenario else None
    except ValueError as exc:  # TapeError included
        print(f"orderflow demo: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run_on_simulator(settings, tape, speed, duration, scenario, as_json=args.json))


def replay_command(args: argparse.Namespace, settings: Settings) -> int:
    """``orderflow replay FILE``: a recorded tape straight into the stream's pipeline; prints its speed."""
    from .replay import replay

    try:
        if Path(args.file).is_dir():  # a store of orderflow history
            try:
                from .history.command import store_tape_of
            except ModuleNotFoundError as exc:
                raise TapeError(f"{args.file} is a store: reading it needs {exc.name}: pip install "
                                "'orderflow-plugin[history]'") from exc
            tape = store_tape_of(args, settings)
        else:
            tape = load_tape(args.file, symbol=args.symbol, market=args.market)
    except TapeError as exc:
        print(f"orderflow replay: {exc}", file=sys.stderr)
        return 2
    flow = OrderFlow.from_settings(settings, symbols=[tape.symbol], market=tape.market)
    view = LiveView(flow.symbols)
    flow.plugins.register(JsonFeed() if args.json else view, name="cli-view")
    result = asyncio.run(replay(flow, tape, speed=args.speed, duration=args.duration))
    summary = {"event": "summary", **flow.summary(), "replayed": result.frames,
               "replay_seconds": round(result.seconds, 6), "replay_trades_per_s": round(result.per_second)}
    if not args.json:
        print(f"replayed {result.frames} {tape.symbol} aggTrades from {tape.source} straight into the pipeline "
              f"in {result.seconds:.3f} s: {result.per_second:,.0f} trades/s", flush=True)
        print(view.line(tape.symbol, flow.health()), flush=True)
    print(json.dumps(summary), flush=True)
    return 0


def _no_signals(flow: Any, settings: Settings) -> Any:
    """The Flow group with the stream's own signals off (they come from Redis: ``--redis-signals``)."""
    from .options import Flow, from_table

    return dataclasses.replace(flow or from_table(Flow, settings.flow), signals=False)


def stream_command(args: argparse.Namespace, settings: Settings) -> int:
    """``orderflow stream``: the live stream built from the settings and the command's options."""
    overrides = _stream_overrides(args, settings)
    if args.redis_signals and not args.from_url:
        print("orderflow stream: --redis-signals reads the signals collectors wrote: it needs --from redis://...",
              file=sys.stderr)
        return 2
    try:
        if args.from_url:
            from .redisbus.source import RedisSource

            overrides["feed"] = RedisSource(args.from_url, group=args.group, consumer=args.consumer,
                                            start=args.start, signals=args.redis_signals)
            if args.redis_signals:
                overrides["flow"] = _no_signals(overrides.get("flow"), settings)
        flow = OrderFlow.from_settings(settings, **overrides)
    except ValueError as exc:
        print(f"orderflow stream: {exc}", file=sys.stderr)
        return 2
    try:
        code = asyncio.run(run_flow(flow, as_json=args.json, duration=args.duration))
    except UnknownSymbol as exc:  # exchangeInfo does not list one: bad input, like a bad option
        print(f"orderflow stream: {exc}", file=sys.stderr)
        return 2
    source = flow.feed
    if source is not None and not source.connects:  # a run that read nothing because it reached nothing failed
        summary = flow.summary()
        print(f"orderflow stream: never connected to {summary['source']['url']} in {summary['uptime_s']:.1f} s "
              f"({source.failures} tries): {source.last_error or 'no answer yet'}", file=sys.stderr)
        return 1
    return code


def collect_command(args: argparse.Namespace, settings: Settings) -> int:
    """``orderflow collect``: the live stream written into Redis Streams (see redisbus/collector.py)."""
    from .redisbus.collector import collect

    try:
        return asyncio.run(collect(settings, args.to, name=args.name, duration=args.duration,
                                   **_stream_overrides(args, settings)))
    except ValueError as exc:
        print(f"orderflow collect: {exc}", file=sys.stderr)
        return 2


def _stream_overrides(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """What ``--symbol``, ``--market`` and the URL options change in the settings' stream."""
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
    if getattr(args, "since", None):  # warm up from the archive (history/warmup.py)
        from .options import Sequencing, from_table

        sequencing = from_table(Sequencing, settings.sequencing)
        endpoints = settings.endpoints[args.market or settings.market]
        overrides["sequencing"] = dataclasses.replace(
            sequencing, since=args.since, archive_url=sequencing.archive_url or endpoints.get("archive_url", ""))
    return overrides


async def run_on_simulator(settings: Settings, tape: Tape, speed: float, duration: float, scenario: Any, *,
                            as_json: bool) -> int:
    """The simulator on loopback plays ``tape``; the real stream consumes it, exactly as `stream` would."""
    from .sim import Pace, Simulator

    async with Simulator(tape, pace=Pace(speed=speed), scenario=scenario, record_ids=False) as sim:
        flow = OrderFlow.from_settings(settings, symbols=[tape.symbol], market=tape.market,
                                       ws_url=sim.ws_url, rest_url=sim.rest_url)
        if not as_json:
            print(f"replaying {len(tape.rows)} real {tape.symbol} aggTrades from {tape.source} at {speed:g}x "
                  f"through the local simulator on {sim.ws_url}; plugins: {flow.plugins.describe()}", flush=True)
        last_id = tape.rows[-1].id
        return await run_flow(flow, as_json=as_json, duration=duration,
                          done=lambda: flow.health()["symbols"][tape.symbol]["last_id"] == last_id)


async def run_flow(flow: OrderFlow, *, as_json: bool, duration: float, done: Callable[[], bool] | None = None) -> int:
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

        # Logs go to stderr. Rich's redirect would send them to the view's terminal even with 2>file,
        # so it is only used when stderr is a terminal too: there it keeps each log line above the view.
        live = Live(auto_refresh=False, redirect_stderr=sys.stderr.isatty())
    tick = 0.2 if as_json or live is not None else 1.0
    with live if live is not None else contextlib.nullcontext(), _lines_held_for_the_view(live) as held:
        async with flow:
            while not stop.is_set() and loop.time() < deadline and not (done is not None and done()):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(tick, deadline - loop.time()))):
                        await stop.wait()
                if live is not None:
                    held.release()
                    live.update(view.table(flow.health()), refresh=True)
                elif not as_json:
                    for symbol in flow.symbols:
                        print(view.line(symbol, flow.health()), flush=True)
        if live is not None:  # the final state, drawn over the last one: the table is on screen once
            held.release()
            live.update(view.table(flow.health()), refresh=True)
    if live is None and not as_json:  # the final state, from the snapshot the stream sends as it stops
        for symbol in flow.symbols:
            print(view.line(symbol, flow.health()), flush=True)
    print(json.dumps({"event": "summary", **flow.summary()}), flush=True)
    return 0


class _HeldLines:
    """stderr under the live view: what the loop's thread writes waits for the view's next draw.

    Rich's redirect draws each line written to stderr above the view at once, and redraws the whole view
    with it: a few milliseconds in a terminal. A log line written inside a hook (whale_alert's whales,
    diagnostics' start line) then charged that drawing to the hook, which was reported too slow in a
    terminal and not in a pipe. Held here, the lines cost the hook an append, and the view's tick writes
    them all at once, outside any hook. Other threads write through at once: the loop watchdog's warning
    must show while the loop is blocked.
    """

    def __init__(self, target: Any) -> None:
        self.target = target
        self._thread = threading.get_ident()
        self._lines: list[str] = []

    def write(self, text: str) -> int:
        if threading.get_ident() != self._thread:
            return int(self.target.write(text))
        self._lines.append(text)
        return len(text)

    def flush(self) -> None:
        if threading.get_ident() != self._thread:
            self.target.flush()

    def release(self) -> None:
        """Write what is held, in one piece, through the view's redirect."""
        if self._lines:
            text, self._lines = "".join(self._lines), []
            self.target.write(text)
            self.target.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the terminal's
        return getattr(self.target, name)


@contextlib.contextmanager
def _lines_held_for_the_view(live: Any) -> Iterator[_HeldLines]:
    """Hold stderr's lines for the live view's draws while ``live`` redirects stderr; release them at the end."""
    from rich.file_proxy import FileProxy

    held = _HeldLines(sys.stderr)
    if live is None or not isinstance(sys.stderr, FileProxy):  # no redirect: a line to a file costs no drawing
        yield held
        return
    sys.stderr = held  # type: ignore[assignment]
    try:
        yield held
    finally:
        held.release()
        if sys.stderr is held:
            sys.stderr = held.target

