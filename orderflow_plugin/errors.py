"""The exceptions this package raises.

::

    OrderFlowError
     ├── SettingsError        a settings file, value or environment override is wrong (lists every error)
     ├── OptionError          an option group was given a bad value in code (names group, field, value, allowed)
     ├── PluginError          something a plugin did
     │    ├── PluginLoadError a plugin could not be imported or registered (names the file and line)
     │    ├── HookFailed      a hook or signal receiver raised (the original is the __cause__)
     │    └── HookTooSlow     a synchronous hook took longer than its budget
     ├── TapeError            a recorded tape file cannot be read (names the file and line)
     ├── BadFrame             a frame is not one Binance would send (skipped, counted, reported)
     ├── EventBacklog         a framework's queue holds more of our events than its bound (reported, none dropped)
     ├── UnknownSymbol        exchangeInfo does not list a symbol (``symbols``, ``suggestions``): raised by start()
     ├── SymbolNotTrading     a listed symbol is not TRADING (``symbol``, ``status``): reported, still subscribed
     └── StreamError          a connection problem, always naming the URL and what was running
          ├── ConnectFailed    a connect stage raised: DNS, refused, certificate, anything (``stage``)
          ├── StageTimeout     a connect stage passed its deadline (``stage``, ``deadline``)
          ├── HandshakeRejected the upgrade was answered with an HTTP error (``status``, ``retry_after``)
          ├── ConnectionLost   an open connection ended (``code``, ``reason``)
          ├── Stalled          an open connection was found dead or silent (``silent_for``)
          └── GaveUp           ``reconnect.max_attempts`` were spent; says what was tried and why it failed

Lower-level exceptions are translated at the boundary with ``raise ... from exc`` so the
original stays available as ``__cause__``. Whatever a connection raises while opening,
streaming or closing arrives as a ``StreamError`` with its ``stage``, and is retried.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BadFrame",
    "ConnectFailed",
    "ConnectionLost",
    "EventBacklog",
    "GaveUp",
    "HandshakeRejected",
    "HookFailed",
    "HookTooSlow",
    "OptionError",
    "OrderFlowError",
    "PluginError",
    "PluginLoadError",
    "SettingsError",
    "StageTimeout",
    "Stalled",
    "StreamError",
    "SymbolNotTrading",
    "TapeError",
    "UnknownSymbol",
]


class OrderFlowError(Exception):
    """Base class of every error raised by orderflow_plugin."""


class SettingsError(OrderFlowError, ValueError):
    """One or more settings are invalid; ``errors`` lists every one of them."""

    def __init__(self, errors: Sequence[str], sources: Sequence[str] = ()) -> None:
        self.errors = list(errors)
        self.sources = list(sources)
        count = len(self.errors)
        lines = [f"invalid settings ({count} error{'s' if count != 1 else ''}):"]
        lines += [f"  - {error}" for error in self.errors]
        if self.sources:
            lines.append(f"  read from: {', '.join(self.sources)}")
        super().__init__("\n".join(lines))


class OptionError(OrderFlowError, ValueError):
    """An option group refused a value at construction: ``Timeouts.rest = -1: must be a number in (0, 300]``."""


class PluginError(OrderFlowError):
    """Something a plugin did; ``plugin`` names it."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(message)


class PluginLoadError(PluginError):
    """A plugin could not be imported or registered; the others still load."""


class HookFailed(PluginError):
    """A hook implementation or signal receiver raised; the event still reached the others."""

    def __init__(self, plugin: str, hook: str, exc: BaseException) -> None:
        self.hook = hook
        super().__init__(plugin, f"{plugin}.{hook} raised {type(exc).__name__}: {exc}")


class HookTooSlow(PluginError):
    """A synchronous hook took longer than ``reporting.slow_hook_ms``."""

    def __init__(self, plugin: str, hook: str, seconds: float, budget: float) -> None:
        self.hook = hook
        self.seconds = seconds
        self.budget = budget
        super().__init__(
            plugin,
            f"{plugin}.{hook} took {seconds * 1000:.1f} ms (budget {budget * 1000:.1f} ms); "
            "hooks run on the event loop: move slow work to a thread or a task",
        )


class TapeError(OrderFlowError, ValueError):
    """A tape file cannot be read; the message names the file and the line."""


class BadFrame(OrderFlowError, ValueError):
    """A frame that is not JSON, has the wrong types, or is an unknown event; it is skipped."""


class EventBacklog(OrderFlowError):
    """A framework adapter's consumer is behind: ``backlog`` of our events wait in its queue, over ``bound``."""

    def __init__(self, message: str, *, backlog: int, bound: int) -> None:
        super().__init__(message)
        self.backlog = backlog
        self.bound = bound


class UnknownSymbol(OrderFlowError, ValueError):
    """Symbols the exchange does not list; ``suggestions`` maps each to its nearest listed symbol (or None).

    One line: ``BTCUSTD is not a Binance spot symbol; did you mean BTCUSDT?``
    """

    def __init__(self, symbols: Sequence[str], suggestions: dict[str, str | None], market: str) -> None:
        self.symbols = list(symbols)
        self.suggestions = dict(suggestions)
        self.market = market
        super().__init__("; ".join(
            f"{symbol} is not a Binance {market} symbol" + (f"; did you mean {near}?" if (near := suggestions.get(
                symbol)) else "") for symbol in self.symbols))


class SymbolNotTrading(OrderFlowError):
    """A listed symbol whose exchangeInfo ``status`` is not TRADING: no trades until it is (not a dead stream)."""

    def __init__(self, symbol: str, status: str, market: str) -> None:
        self.symbol = symbol
        self.status = status
        super().__init__(f"{symbol} is listed on Binance {market} with status {status}, not TRADING: it has no "
                         "trades until it trades again (a halt, a break or a delisting, not a dead stream)")


class StreamError(OrderFlowError):
    """A connection problem; ``url`` says where and ``stage`` what was running."""

    def __init__(self, message: str, *, url: str = "", stage: str = "") -> None:
        self.url = url
        self.stage = stage
        self.stack = ""  # where the stream's task was waiting, when known
        super().__init__(message)


class ConnectFailed(StreamError):
    """A connect stage raised instead of finishing: the original exception is the ``__cause__``."""


class StageTimeout(StreamError, TimeoutError):
    """A connect stage did not finish within its deadline."""

    def __init__(self, message: str, *, url: str, stage: str, deadline: float) -> None:
        self.deadline = deadline
        super().__init__(message, url=url, stage=stage)


class HandshakeRejected(StreamError):
    """The server answered the WebSocket upgrade with an HTTP error."""

    def __init__(self, message: str, *, url: str, status: int, retry_after: float | None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message, url=url, stage="http_upgrade")


class ConnectionLost(StreamError):
    """An open connection ended: a close frame (``code``, ``reason``) or a dropped socket."""

    def __init__(self, message: str, *, url: str, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(message, url=url, stage="streaming")


class Stalled(StreamError):
    """An open connection was found dead: nothing received and no answer to a ping (``stage`` ping), or a
    symbol silent past its learned deadline while REST shows trades it did not send (``stage`` streaming)."""

    def __init__(self, message: str, *, url: str, stage: str, silent_for: float) -> None:
        self.silent_for = silent_for
        super().__init__(message, url=url, stage=stage)


class GaveUp(StreamError):
    """``reconnect.max_attempts`` connection attempts failed; the message lists what was tried."""
