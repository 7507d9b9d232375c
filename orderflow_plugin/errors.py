"""The exceptions this package raises.

::

    OrderFlowError
     ├── SettingsError        a settings file, value or environment override is wrong (lists every error)
     ├── PluginError          something a plugin did
     │    ├── PluginLoadError a plugin could not be imported or registered (names the file and line)
     │    ├── HookFailed      a hook or signal receiver raised (the original is the __cause__)
     │    └── HookTooSlow     a synchronous hook took longer than its budget
     └── TapeError            a recorded tape file cannot be read (names the file and line)

Lower-level exceptions are translated at the boundary with ``raise ... from exc`` so the
original stays available as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "HookFailed",
    "HookTooSlow",
    "OrderFlowError",
    "PluginError",
    "PluginLoadError",
    "SettingsError",
    "TapeError",
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
    """A synchronous hook took longer than ``plugins.slow_hook_ms``."""

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
