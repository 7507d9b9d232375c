"""orderflow_plugin: a live Binance aggTrade order-flow feed for event-bus trading bots."""

from . import signals
from .config import Settings, load_settings
from .dispatch import Dispatcher
from .errors import (
    HookFailed,
    HookTooSlow,
    OrderFlowError,
    PluginError,
    PluginLoadError,
    SettingsError,
    TapeError,
)
from .hookspecs import hookimpl
from .models import Metric, Trade
from .plugins import PluginManager, load_plugins, plugins_from_settings
from .symbols import normalize_symbol, stream_name
from .tape import Tape, TapeRow, bundled_tape, load_tape

__all__ = [
    "Dispatcher",
    "HookFailed",
    "HookTooSlow",
    "Metric",
    "OrderFlowError",
    "PluginError",
    "PluginLoadError",
    "PluginManager",
    "Settings",
    "SettingsError",
    "Tape",
    "TapeError",
    "TapeRow",
    "Trade",
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
