"""The ``orderflow`` command (also ``python -m orderflow_plugin``): arguments, settings, logging, exit codes.

What each command then does is in :mod:`.commands`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .commands import (
    collect_command,
    config_command,
    demo_command,
    doctor_command,
    replay_command,
    sim_command,
    stream_command,
)
from .config import Settings, load_settings
from .errors import OrderFlowError, SettingsError
from .redisbus.url import redacted

__all__ = ["main"]

logger = logging.getLogger("orderflow_plugin")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    with _stdout_reader_watch() as stdout:
        try:
            code = _run(argv)
        except KeyboardInterrupt:
            code = 130
    # The reader of our stdout left (`orderflow demo | head -1`): exit as a program killed by SIGPIPE
    # would, without its traceback, as `yes | head -1` does.
    return 128 + signal.SIGPIPE if stdout is not None and stdout.reader_gone else code


def _run(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's own parser, so the hint names its --help
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        settings = load_settings(args.settings)
    except SettingsError as exc:
        if len(exc.errors) == 1:  # one bad input, one line; several are listed one per line
            sources = f" (read from {', '.join(exc.sources)})" if exc.sources else ""
            print(f"orderflow: invalid settings: {exc.errors[0]}{sources}", file=sys.stderr)
        else:
            print(f"orderflow: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings)
    try:
        return int(args.run(args, settings))
    except OrderFlowError as exc:
        print(f"orderflow: {exc}", file=sys.stderr)
        return 1


class _StdoutWatch:
    """sys.stdout for one command: when the reader of the pipe leaves, the command stops as on Ctrl-C.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError, wherever it happens: in a
    command, in the JSON feed (a plugin, whose errors the dispatcher isolates and logs) or at exit. Restoring
    SIGPIPE's default would end the demo's own simulator when a client socket closes (Python docs, "Note on
    SIGPIPE"). So the first broken write points the descriptor at os.devnull, which makes every later write
    (and the interpreter's last flush) succeed, and raises SIGINT: each command already stops cleanly on
    Ctrl-C (run_flow and collect through their loop's handler, flushing what they hold; a synchronous
    command through KeyboardInterrupt).
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._left()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._left()

    def _left(self) -> None:
        if self.reader_gone:
            return
        self.reader_gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        signal.raise_signal(signal.SIGINT)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...: the real stream's
        return getattr(self._stream, name)


@contextlib.contextmanager
def _stdout_reader_watch() -> Iterator[_StdoutWatch | None]:
    """Watch sys.stdout for a reader that left, while a command runs; not when stdout is no file (pytest's)."""
    original = sys.stdout
    try:
        original.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        yield None
        return
    watch = _StdoutWatch(original)
    sys.stdout = watch
    try:
        yield watch
    finally:
        sys.stdout = original


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option or value in one line, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once: not when its help already says it, nor for an empty default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        setting = re.search(r"\(default: settings ([\w.]+)\)", text)
        if setting:  # the value too: the settings as loaded without --settings (the packaged ones and ORDERFLOW_*)
            value = _setting_value(setting.group(1))
            if value is not None:
                return text.replace(setting.group(0), f"(default: settings {setting.group(1)}, {value})")
        # By identity and type, not ==: 0 and 0.0 equal False, and a default of 0 is worth showing.
        if ("default:" in text or default is None or default is False or default is argparse.SUPPRESS
                or default == [] or default == ""):
            return text
        if text.endswith(")"):  # "(1 = original timing; default: 1.0)", not two brackets in a row
            return text[:-1] + "; default: %(default)s)"
        return text + " (default: %(default)s)"


def _setting_value(key: str) -> str | None:
    """The value of a dotted settings key, for --help; None when the settings don't load."""
    try:
        value: Any = load_settings().to_dict()
        for part in key.split("."):
            value = value[part]
    except (SettingsError, KeyError, TypeError):
        return None
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="orderflow", description="Binance aggTrade order flow that never hangs silently.")
    parser.set_defaults(parser=parser)
    common = _Parser(add_help=False)
    common.add_argument(
        "--settings", action="append", default=[], metavar="FILE",
        help="a settings file (TOML with a [default] table) layered over the defaults, repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        # description: the line `orderflow NAME --help` starts with; help: its line in `orderflow --help`
        command_parser = sub.add_parser(name, parents=[common], formatter_class=_HelpFormatter, help=summary,
                                        description=summary[0].upper() + summary[1:] + ".")
        command_parser.set_defaults(parser=command_parser)
        return command_parser

    stream = command("stream", "stream live order flow with the hooks from settings (a live view, or --json lines)")
    stream.add_argument("--symbol", action="append", default=None,
                        help="symbol, repeatable (default: settings symbols)")
    stream.add_argument("--market", choices=["spot", "usdm"], default=None, help="market (default: settings market)")
    stream.add_argument("--ws-url", default=None, help="WebSocket base URL (default: settings)")
    stream.add_argument("--rest-url", default=None, help="REST base URL (default: settings)")
    stream.add_argument("--ca-file", type=_ca_file, default=None,
                        help="extra CA bundle (PEM) to trust, e.g. orderflow sim --tls's (default: settings)")
    stream.add_argument("--duration", type=_not_negative, default=0.0, help="seconds to run, 0 = until Ctrl-C")
    stream.add_argument("--since", type=_since, default=None, metavar="DATE",
                        help="warm up from Binance's archive from this UTC day or time (2025-11-01, "
                             "2025-11-01T00:00Z): archive days, then REST, then live, each trade once")
    stream.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    stream.add_argument("--from", dest="from_url", type=_redis_url, default=None,
                        help="read what `orderflow collect` writes to this Redis URL instead of Binance")
    stream.add_argument("--group", default=None, help="with --from: share the trades among a consumer group")
    stream.add_argument("--consumer", default=None, help="with --group: this consumer's name in the group")
    stream.add_argument("--start", choices=["live", "first"], default="live",
                        help="with --from and no checkpoint: new trades only, or all Redis holds")
    stream.add_argument("--redis-signals", action="store_true",
                        help="with --from: the collectors' footprint signals from Redis, computing none here")
    stream.set_defaults(run=stream_command)

    collect = command("collect", "stream from Binance into Redis Streams, exactly once, for bots that read --from")
    collect.add_argument("--to", required=True, type=_redis_url,
                         help="Redis URL: redis://127.0.0.1:6379/0, "
                              "redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE[/DB] or redis+cluster://HOST:PORT[,...]")
    collect.add_argument("--symbol", action="append", default=None,
                         help="symbol, repeatable (default: settings symbols)")
    collect.add_argument("--market", choices=["spot", "usdm"], default=None, help="market (default: settings market)")
    collect.add_argument("--ws-url", default=None, help="WebSocket base URL (default: settings)")
    collect.add_argument("--rest-url", default=None, help="REST base URL (default: settings)")
    collect.add_argument("--ca-file", type=_ca_file, default=None, help="extra CA bundle (PEM) to trust")
    collect.add_argument("--name", default="",
                         help="this collector's name in the health stream (default: no name)")
    collect.add_argument("--duration", type=_not_negative, default=0.0, help="seconds to run, 0 = until Ctrl-C")
    collect.set_defaults(run=collect_command)

    replay = command(
        "replay", "play a recorded tape (CSV dump, frames JSONL, recorder output) straight into the stream's pipeline"
    )
    replay.add_argument("file", help="the tape file, or a store folder of orderflow history (with --from/--to)")
    replay.add_argument("--from", dest="from_day", default=None, metavar="DATE",
                        help="with a store: the first UTC day, YYYY-MM-DD")
    replay.add_argument("--to", dest="to_day", default=None, metavar="DATE",
                        help="with a store: the last UTC day (default: --from)")
    replay.add_argument("--symbol", type=_symbol, default=None,
                        help="the tape's symbol (default: from the file name, e.g. BTCUSDT-aggTrades-..., or its rows)")
    replay.add_argument("--market", choices=["spot", "usdm"], default=None,
                        help="the tape's market (default: from its frames; spot for a CSV dump)")
    replay.add_argument("--speed", type=_not_negative, default=0.0,
                        help="replay speed (1 = original timing, 0 = as fast as the pipeline goes)")
    replay.add_argument("--duration", type=_not_negative, default=0.0, help="seconds to run, 0 = whole tape")
    replay.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    replay.set_defaults(run=replay_command)

    hist = command("history", "download days of Binance's public aggTrades archive into a Parquet store, verified, "
                              "every id hole filled over REST")
    hist.add_argument("--symbol", type=_symbol, action="append", required=True, help="symbol, repeatable")
    hist.add_argument("--market", choices=["spot", "usdm"], default=None, help="market (default: settings)")
    hist.add_argument("--from", dest="from_day", required=True, metavar="DATE", help="first UTC day, YYYY-MM-DD")
    hist.add_argument("--to", dest="to_day", default=None, metavar="DATE", help="last UTC day (default: --from)")
    hist.add_argument("--out", type=Path, required=True, metavar="DIR", help="the store's folder")
    hist.add_argument("--archive-url", type=_url("http", "https"), default=None,
                      help="archive base URL (default: settings endpoints.<market>.archive_url)")
    hist.add_argument("--rest-url", type=_url("http", "https"), default=None,
                      help="REST base URL for filling holes (default: settings)")
    hist.add_argument("--concurrency", type=int, choices=range(1, 17), default=4, metavar="N",
                      help="downloads at once, 1-16")
    hist.set_defaults(run=_history_command)

    demo = command("demo", "offline: the local simulator replays the bundled real BTCUSDT tape into the live stream")
    demo.add_argument("--speed", type=_positive, default=None, help="replay speed (default: settings demo.speed)")
    demo.add_argument(
        "--duration", type=_not_negative, default=None,
        help="seconds to run, 0 = whole tape (default: settings demo.duration)",
    )
    demo.add_argument("--tape", default=None, help="tape file (CSV dump or frames JSONL) instead of the bundled one")
    demo.add_argument("--symbol", type=_symbol, default=None,
                      help="the --tape's symbol (default: from its file name or rows)")
    demo.add_argument("--market", choices=["spot", "usdm"], default=None,
                      help="the --tape's market (default: from its frames; spot for a CSV dump)")
    demo.add_argument("--scenario", default=None,
                      help="simulator fault scenario to watch it recover: a .toml/.json file, or faults (bundled)")
    demo.add_argument("--json", action="store_true", help="one JSON object per event instead of the live view")
    demo.set_defaults(run=demo_command)

    sim = command("sim", "run the local Binance simulator for testing a bot by hand")
    sim.add_argument("--host", default=None,
                     help="address to listen on (default: 127.0.0.1; with --tls, localhost, the certificate's name)")
    sim.add_argument("--port", type=_port, default=9443, help="port to listen on, 0-65535 (0 = any free port)")
    sim.add_argument("--tape", action="append", default=[], help="tape file, repeatable (default: the bundled tape)")
    sim.add_argument("--symbol", type=_symbol, action="append", default=[],
                     help="each --tape's symbol, in the same order (default: from the file names or rows)")
    pace = sim.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_positive, default=1.0, help="replay speed (1 = original timing)")
    pace.add_argument("--rate", type=_positive, default=None, help="fixed trades per second instead of --speed")
    pace.add_argument("--asap", action="store_true", help="as fast as clients read")
    sim.add_argument("--smooth", action="store_true",
                     help="spin between trades instead of sleeping: evenly spaced frames (uses a core)")
    sim.add_argument("--loop", action="store_true", help="repeat the tape with ids and times shifted")
    sim.add_argument("--market", choices=["spot", "usdm"], default=None,
                     help="market of the tapes and shape of the frames (default: the tape's; spot for a CSV dump)")
    sim.add_argument("--scenario", default=None, help="fault scenario: a .toml/.json file, or faults (bundled)")
    sim.add_argument("--duration", type=_not_negative, default=0.0, help="seconds to run, 0 = until Ctrl-C")
    sim.add_argument("--tls", action="store_true",
                     help="serve wss:// and https:// with a throwaway CA written to a temporary folder; its path "
                          "is printed, for --ca-file / connector.ca_file (needs orderflow-plugin[tls])")
    sim.set_defaults(run=sim_command)

    doctor = command("doctor",
                     "check settings, DNS, TCP, TLS, upgrade, subscription, first trade, REST, clock and loop")
    doctor.add_argument("--ws-url", type=_url("ws", "wss"), default=None,
                        help="WebSocket base URL (default: from the settings)")
    doctor.add_argument("--rest-url", type=_url("http", "https"), default=None,
                        help="REST base URL (default: from the settings)")
    doctor.add_argument("--symbol", type=_symbol, default=None,
                        help="symbol to subscribe to (default: the first in settings)")
    doctor.add_argument("--market", choices=["spot", "usdm"], default=None, help="market (default: settings market)")
    doctor.add_argument("--ca-file", type=_ca_file, default=None,
                        help="extra CA bundle (PEM) to trust, e.g. the one `orderflow sim --tls` prints "
                             "(default: settings connector.ca_file)")
    doctor.add_argument("--timeout", type=_positive, default=3.0,
                        help="seconds each check may take at most (a shorter [timeouts] setting still applies)")
    doctor.add_argument("--json", action="store_true", help="one JSON object per check instead of text")
    doctor.set_defaults(run=doctor_command)

    chart = command("chart", "serve a live footprint chart on 127.0.0.1 (needs orderflow-plugin[chart])")
    chart.add_argument("--symbol", type=_symbol, action="append", default=None, help="symbol (default: settings)")
    chart.add_argument("--window", default="1m", help="bar window of the chart (default: 1m)")
    chart.add_argument("--port", type=_port, default=8000, help="port to serve on (0 = any free port)")
    chart.add_argument("--host", default="127.0.0.1", help="address to serve on; anything else needs --expose")
    chart.add_argument("--expose", action="store_true", help="allow --host other than 127.0.0.1 (prints a warning)")
    chart.add_argument("--tick", default=None,
                       help="footprint price level, e.g. 10 (default: settings flow.footprint_tick)")
    chart.add_argument("--from", dest="from_url", type=_url("redis", "rediss"), default=None,
                       help="read what `orderflow collect` writes to this Redis URL instead of Binance")
    chart.add_argument("--store", default=None, metavar="DIR",
                       help="a store `orderflow history` wrote: its closed bars (or bars from its trades), then live")
    chart.add_argument("--redis-signals", action="store_true",
                       help="with --from: the collectors' footprint signals from Redis, computing none here")
    chart.add_argument("--ws-url", default=None, help="WebSocket base URL (default: settings)")
    chart.add_argument("--rest-url", default=None, help="REST base URL (default: settings)")
    chart.add_argument("--demo", action="store_true", help="offline: the simulator replays the bundled real tape")
    chart.add_argument("--speed", type=_positive, default=1.0, help="with --demo: replay speed")
    chart.add_argument("--duration", type=_not_negative, default=0.0, help="seconds to run, 0 = until Ctrl-C")
    chart.set_defaults(run=_chart_command)

    show = command("config", "validate the settings and print them as JSON")
    show.set_defaults(run=config_command)
    return parser


def _history_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from .history.command import history_command  # pyarrow only for this command
    except ModuleNotFoundError as exc:
        raise OrderFlowError(f"orderflow history needs {exc.name}: pip install 'orderflow-plugin[history]'") from exc

    return history_command(args, settings)


def _since(text: str) -> str:
    from datetime import datetime

    try:
        datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a UTC day or time (e.g. 2025-11-01, 2025-11-01T00:00Z)") from None
    return text.strip()


def _chart_command(args: argparse.Namespace, settings: Settings) -> int:
    from .chart.command import chart_command  # Starlette and uvicorn are an extra: imported when asked for

    return chart_command(args, settings)


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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text}")
    return value


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{redacted(text)!r}: {exc}") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise argparse.ArgumentTypeError(f"{redacted(text)!r} must start with "
                                             f"{' or '.join(f'{s}://' for s in schemes)} and name a host")
        return text

    return parse


def _redis_url(text: str) -> str:
    """A Redis URL: one server (redis://, rediss://), a cluster (redis+cluster://) or a primary behind Sentinels."""
    from .redisbus.url import CLUSTER_SCHEMES, SENTINEL_SCHEMES, RedisFeedError, check_url

    if text.partition("://")[0] in (*SENTINEL_SCHEMES, *CLUSTER_SCHEMES):
        try:
            return check_url(text)
        except RedisFeedError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return _url("redis", "rediss")(text)


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
