"""orderflow_plugin: a live Binance aggTrade order-flow feed for event-bus trading bots."""

from . import hotpath, signals  # noqa: F401 - hotpath first: it decides whether the hot modules load compiled
from .config import Settings, load_settings
from .dispatch import Dispatcher
from .engine import Bar, FlowEngine, Footprint, Snapshot, Whale
from .errors import (
    BadFrame,
    ConnectFailed,
    ConnectionLost,
    GaveUp,
    HandshakeRejected,
    HookFailed,
    HookTooSlow,
    OptionError,
    OrderFlowError,
    PluginError,
    PluginLoadError,
    SettingsError,
    StageTimeout,
    Stalled,
    StreamError,
    SymbolNotTrading,
    TapeError,
    UnknownSymbol,
)
from .hookspecs import hookimpl
from .metrics import BarUnits
from .models import Metric, Trade
from .options import Flow, Limits, Reconnect, Reporting, Sequencing, Timeouts
from .plugins import PluginManager, load_plugins, plugins_from_settings
from .stream import OrderFlow
from .symbols import normalize_symbol, stream_name
from .tape import Tape, TapeRow, bundled_tape, load_tape
from .threaded import FlowThread

__all__ = [
    "BadFrame",
    "Bar",
    "BarUnits",
    "ConnectFailed",
    "ConnectionLost",
    "Dispatcher",
    "Flow",
    "FlowEngine",
    "FlowThread",
    "Footprint",
    "GaveUp",
    "HandshakeRejected",
    "HookFailed",
    "HookTooSlow",
    "Limits",
    "Metric",
    "OptionError",
    "OrderFlow",
    "OrderFlowError",
    "PluginError",
    "PluginLoadError",
    "PluginManager",
    "Reconnect",
    "Reporting",
    "Sequencing",
    "Settings",
    "SettingsError",
    "Snapshot",
    "StageTimeout",
    "Stalled",
    "StreamError",
    "SymbolNotTrading",
    "Tape",
    "TapeError",
    "TapeRow",
    "Timeouts",
    "Trade",
    "UnknownSymbol",
    "Whale",
    "bundled_tape",
    "hookimpl",
    "load_plugins",
    "load_settings",
    "load_tape",
    "normalize_symbol",
    "plugins_from_settings",
    "signals",
    "stream_name",
]

__version__ = "0.1.0"
