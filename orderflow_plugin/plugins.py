"""Build a fresh plugin manager: built-in plugins, then entry points, then hooks folders.

Nothing is loaded at import time. A plugin that cannot be imported or registered becomes a
:class:`PluginLoadError` in ``manager.load_errors`` (naming the file and the line) and the
others still load. A plugin whose ``hooks.<name>.enabled`` setting is false is not loaded at
all; its name is kept in ``manager.disabled``. An entry point may name a module, an object or
a class; a class is instantiated once per manager, so each stream has its own plugin state.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import importlib.util
import inspect
import logging
import sys
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .config import ENTRY_POINT_GROUP
from .errors import PluginLoadError

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["ENTRY_POINT_GROUP", "HOOK_NAMES", "HookRunner", "PluginHooks", "PluginManager", "disabled_in",
           "implementation", "load_plugins", "plugin_manager", "plugins_from_settings"]

HOOK_NAMES = frozenset(
    name for name, value in vars(hookspecs).items() if name.startswith("on_") and inspect.isfunction(value)
)
logger = logging.getLogger(__name__)
# Plugins that were renamed: old name -> new name, so plugins.allow/deny with the old one says what to write.
_RENAMED = {"prometheus_export": "prometheus"}

# (plugin name, hook name, the plugin's function, positional args, keyword args) -> its result
HookRunner = Callable[[str, str, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]


class PluginHooks:
    """What pluggy registers in a plugin's place: each of its hooks as a function that runs it
    through the manager's ``hook_runner`` (the dispatcher's isolation and timing).

    pluggy calls one implementation after another and stops at the first that raises; it has no
    way to isolate one (pytest-dev/pluggy#419 calls that out of scope). Handing pluggy a function
    per hook that does is the seam its public API leaves, and it sits inside every call pluggy
    makes: a plain call, ``call_historic``, the replay of a historic call to a late plugin (run
    inside ``register()``), hookcall monitoring and tracing. The manager maps the plugin object
    back everywhere it hands one out, so ``get_plugin(name)`` is the plugin itself.
    """

    def __init__(self, plugin: Any) -> None:
        self.plugin = plugin
        self.hook_opts: dict[str, pluggy.HookimplOpts] = {}

    def __repr__(self) -> str:
        return f"<hooks of {self.plugin!r}>"


def _run_through(manager: PluginManager, plugin_name: str, hook: str,
                 function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as pluggy calls it: through the manager's hook runner when one is set."""

    @functools.wraps(function)  # pluggy reads the argument names through __wrapped__
    def run(*args: Any, **kwargs: Any) -> Any:
        runner = manager.hook_runner
        if runner is None:
            return function(*args, **kwargs)
        return runner(plugin_name, hook, function, args, kwargs)

    return run


class PluginManager(pluggy.PluginManager):
    """A pluggy manager for our hooks that also accepts unmarked ``on_*`` functions.

    ``version`` changes on every register and unregister so a dispatcher can cache the
    call lists. Wrappers are refused: our hooks are notifications with nothing to wrap.

    Every call pluggy makes to a plugin's hook (a plain call through ``manager.hook``,
    ``call_historic``, and the replay of a historic call to a plugin registered later) goes
    through ``hook_runner`` when one is set: the :class:`~orderflow_plugin.Dispatcher` sets it
    to call each one isolated and timed. Without one, pluggy's own loop runs them and the first
    that raises stops it. Hookcall monitoring and ``enable_tracing`` see every call, and see it
    complete even when one plugin raised (see :class:`PluginHooks`).
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.version = 0
        self.load_errors: list[PluginLoadError] = []
        self.disabled: list[str] = []  # found, but turned off by their hooks.<name>.enabled setting
        self.hook_runner: HookRunner | None = None
        self._hooks_of: dict[int, PluginHooks] = {}  # id(plugin) -> what pluggy holds in its place

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        """Take ``@hookimpl`` functions, and plain functions named like a hook."""
        if isinstance(plugin, PluginHooks):
            opts = plugin.hook_opts.get(name)
            return None if opts is None else pluggy.HookimplOpts(**opts)  # a copy: pluggy fills it in
        return self._unmarked_hook(plugin, name, super().parse_hookimpl_opts(plugin, name))

    @staticmethod
    def _unmarked_hook(plugin: Any, name: str, opts: pluggy.HookimplOpts | None) -> pluggy.HookimplOpts | None:
        """``opts`` (pluggy's reading of ``plugin.name``), or empty options for a plain function named like a hook."""
        if opts is None and name in HOOK_NAMES:
            attr = inspect.getattr_static(plugin, name, None)
            if inspect.isroutine(attr) or isinstance(attr, (staticmethod, classmethod)):
                return {}  # type: ignore[typeddict-item]  # pluggy fills in the defaults
        return opts

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """Register ``plugin``, refusing unknown ``on_*`` names and wrappers with a clear error."""
        label = name or self.get_canonical_name(plugin)
        markers: dict[str, pluggy.HookimplOpts | None] = {}  # pluggy's static scan is the cost: once per name
        for attr in dir(plugin):
            marked = markers[attr] = pluggy.PluginManager.parse_hookimpl_opts(self, plugin, attr)
            unknown = attr not in HOOK_NAMES and (
                marked is not None or (attr.startswith("on_") and callable(getattr(plugin, attr, None)))
            )
            if unknown and not (marked and marked.get("specname") in HOOK_NAMES):
                close = difflib.get_close_matches(attr, sorted(HOOK_NAMES), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise PluginLoadError(label, f"plugin {label}: {attr} is not an orderflow hook{hint}")
            if marked and (marked.get("wrapper") or marked.get("hookwrapper")):
                raise PluginLoadError(
                    label, f"plugin {label}: {attr} is a wrapper; orderflow hooks are notifications, use a plain hook"
                )
        if plugin is None:
            return None  # as pluggy does
        if self.is_registered(plugin):
            raise PluginLoadError(label, f"plugin {label}: already registered as {self.get_name(plugin)}")
        hooks = PluginHooks(plugin)
        for attr, marked in markers.items():
            opts = self._unmarked_hook(plugin, attr, marked)
            if opts is not None:
                hook = opts.get("specname") or attr
                setattr(hooks, attr, _run_through(self, label, hook, getattr(plugin, attr)))
                hooks.hook_opts[attr] = pluggy.HookimplOpts(**opts)
        try:
            registered = super().register(hooks, label)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginLoadError(label, f"plugin {label}: {exc}") from exc
        if registered is not None:
            self._hooks_of[id(plugin)] = hooks
        self.version += 1
        return registered

    def unregister(self, plugin: Any | None = None, name: str | None = None) -> Any | None:
        """Unregister a plugin (by object or name); return the plugin, or None if it was not registered."""
        held = self._held(plugin) if plugin is not None else None
        if held is None and name is not None:
            held = pluggy.PluginManager.get_plugin(self, name)
            if held is None:
                return None
        removed = _plugin_of(super().unregister(held, name))
        self._hooks_of.pop(id(removed), None)
        self.version += 1
        return removed

    # pluggy holds a PluginHooks in each plugin's place: what it hands out is mapped back to the plugin.
    def get_plugin(self, name: str) -> Any | None:
        """The plugin registered as ``name``, or None."""
        return _plugin_of(super().get_plugin(name))

    def get_name(self, plugin: Any) -> str | None:
        """The name ``plugin`` is registered as, or None."""
        return super().get_name(self._held(plugin))

    def is_registered(self, plugin: Any) -> bool:
        """Whether ``plugin`` is registered."""
        return super().is_registered(self._held(plugin))

    def get_plugins(self) -> set[Any]:
        """Every registered plugin."""
        return {_plugin_of(plugin) for plugin in super().get_plugins()}

    def list_name_plugin(self) -> list[tuple[str, Any]]:
        """(name, plugin) for every registered plugin."""
        return [(name, _plugin_of(plugin)) for name, plugin in super().list_name_plugin()]

    def get_hookcallers(self, plugin: Any) -> list[pluggy.HookCaller] | None:
        """The hook callers ``plugin`` implements, or None if it is not registered."""
        return super().get_hookcallers(self._held(plugin))

    def subset_hook_caller(self, name: str, remove_plugins: Iterable[Any]) -> pluggy.HookCaller:
        """A caller of hook ``name`` that leaves out ``remove_plugins``."""
        return super().subset_hook_caller(name, [self._held(plugin) for plugin in remove_plugins])

    def _held(self, plugin: Any) -> Any:
        return self._hooks_of.get(id(plugin), plugin)

    def plugin_name(self, plugin: Any) -> str:
        """The name ``plugin`` was registered under."""
        return self.get_name(plugin) or self.get_canonical_name(plugin)

    def describe(self) -> str:
        """The active plugins, then the disabled ones: ``diagnostics, whale_alert (disabled: recorder)``."""
        active = ", ".join(sorted(str(name) for name, _ in self.list_name_plugin())) or "none"
        return f"{active} (disabled: {', '.join(sorted(self.disabled))})" if self.disabled else active


def implementation(impl: pluggy.HookImpl) -> Callable[..., Any]:
    """The plugin's own function behind ``impl`` (one of ``manager.hook.<name>.get_hookimpls()``).

    What a caller that isolates and times each call itself calls directly (the dispatcher's per-trade path).
    """
    if isinstance(impl.plugin, PluginHooks):
        return impl.function.__wrapped__  # type: ignore[attr-defined, no-any-return]  # set by _run_through
    return impl.function


def _plugin_of(held: Any) -> Any:
    return held.plugin if isinstance(held, PluginHooks) else held


def plugin_manager(plugins: PluginManager | Sequence[object] | None) -> PluginManager:
    """``plugins`` as a manager: a manager as it is, or a list of plugins registered in a fresh one.

    Raises TypeError, saying what to pass, for anything else (a single module, a plugin's name,
    a class, an object without hooks); a plugin with a misspelt hook raises PluginLoadError.
    """
    if plugins is None:
        return PluginManager()
    if isinstance(plugins, PluginManager):
        return plugins
    if isinstance(plugins, (str, bytes, ModuleType)) or not isinstance(plugins, Sequence):
        if isinstance(plugins, ModuleType):
            what, hint = f"the module {plugins.__name__}", plugins.__name__.rsplit(".", 1)[-1]
        else:
            what, hint = f"a {type(plugins).__name__}", "my_plugin"
        raise TypeError(f"plugins must be a list of plugins (modules or objects with on_* hooks) or a "
                        f"PluginManager, got {what}: pass plugins=[{hint}]")
    manager = PluginManager()
    for index, plugin in enumerate(plugins):
        if isinstance(plugin, (str, bytes)):
            raise TypeError(f"plugins[{index}] is the name {plugin!r}: pass the imported module or object itself")
        if isinstance(plugin, type):
            raise TypeError(f"plugins[{index}] is the class {plugin.__name__}: pass an instance, {plugin.__name__}()")
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if manager.has_plugin(name):
            name = f"{name}#{index}"
        manager.register(plugin, name=name)
        if not manager.get_hookcallers(plugin):
            raise TypeError(f"plugins[{index}] ({name}) has no orderflow hooks: give it functions named like "
                            "the hooks (on_trade, on_metric, ...; see docs/hooks.md)")
    return manager


def disabled_in(settings: Mapping[str, Any]) -> set[str]:
    """Names of the plugins whose ``hooks.<name>.enabled`` setting is false."""
    hooks = settings.get("hooks") or {}
    return {name for name, table in hooks.items() if isinstance(table, Mapping) and table.get("enabled") is False}


def load_plugins(
    *,
    builtins: Iterable[tuple[str, object]] = (),
    entry_points: bool = True,
    hooks_dirs: Sequence[str | Path] = (),
    allow: Sequence[str] = (),
    deny: Sequence[str] = (),
    disabled: Collection[str] = (),
) -> PluginManager:
    """Return a new manager with the allowed plugins registered, in that order.

    ``disabled`` plugins are not loaded; those found are listed in ``manager.disabled``. A name
    taken by an earlier plugin is a load error: the first one stays. So is a name in ``allow`` or
    ``deny`` that no plugin found has: a typo or an old name would otherwise load nothing, silently.
    """
    manager = PluginManager()
    allowed = set(allow)
    denied = set(deny)
    found: set[str] = set()

    def wanted(name: str) -> bool:
        found.add(name)
        if name in denied or (allowed and name not in allowed):
            return False
        if name in disabled:
            if name not in manager.disabled:
                manager.disabled.append(name)
            return False
        return True

    def taken(name: str, what: str) -> bool:
        if manager.has_plugin(name):
            _failed(manager, PluginLoadError(name, f"{what}: the plugin name {name} is already registered by an "
                                                   "earlier plugin; rename this one"))
            return True
        return False

    def add(name: str, load: Any) -> None:
        try:
            plugin = load()
            if isinstance(plugin, type):  # one instance per manager: no state shared between streams
                plugin = plugin()
            manager.register(plugin, name=name)
        except PluginLoadError as exc:
            _failed(manager, exc)
        except Exception as exc:  # a plugin's import may raise anything
            _failed(manager, PluginLoadError(name, f"plugin {name}: {type(exc).__name__}: {exc}"), exc)
        else:
            logger.debug("loaded plugin %s", name)

    for name, plugin in builtins:
        if wanted(name) and not taken(name, f"built-in plugin {name}"):
            add(name, lambda plugin=plugin: plugin)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if wanted(ep.name) and not taken(ep.name, f"entry point {ep.name} = {ep.value}"):
                add(ep.name, ep.load)
    for folder in hooks_dirs:
        folder = Path(folder)
        if not folder.is_dir():  # named in settings, so missing is a mistake worth a word
            _failed(manager, PluginLoadError(str(folder), f"hooks folder {folder} does not exist"))
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_") or not wanted(path.stem) or taken(path.stem, f"hooks file {path}"):
                continue
            try:
                module = _import_file(path)
            except PluginLoadError as exc:
                _failed(manager, exc)
                continue
            add(path.stem, lambda module=module: module)
    listed = ", ".join(sorted(found)) or "none"
    for setting, names in (("allow", allow), ("deny", deny)):
        for name in dict.fromkeys(names):
            if name not in found:
                renamed = f" (it is now named {_RENAMED[name]})" if name in _RENAMED else ""
                message = f"plugins.{setting} names {name}, but no plugin has that name{renamed}"
                _failed(manager, PluginLoadError(name, f"{message}; plugins found: {listed}"))
    return manager


def plugins_from_settings(settings: Settings, builtins: Iterable[tuple[str, object]] = ()) -> PluginManager:
    """``load_plugins`` configured by the ``[plugins]`` table and each plugin's ``hooks.<name>.enabled``."""
    table = settings.plugins
    return load_plugins(
        builtins=builtins,
        entry_points=table.entry_points,
        hooks_dirs=table.hooks_dirs,
        allow=table.allow,
        deny=table.deny,
        disabled=disabled_in(settings),
    )


def _import_file(path: Path) -> ModuleType:
    """Import a hooks file as a fresh module; a failure names the file and the line."""
    module_name = f"orderflow_hooks.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(path.stem, f"hooks file {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise PluginLoadError(path.stem, f"hooks file {path}, line {_line_in(exc, path)}: {_describe(exc)}") from exc
    return module


def _line_in(exc: BaseException, path: Path) -> int | str:
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return exc.lineno
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return lines[-1] if lines and lines[-1] is not None else "?"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


def _failed(manager: PluginManager, error: PluginLoadError, cause: BaseException | None = None) -> None:
    if cause is not None:
        error.__cause__ = cause
    manager.load_errors.append(error)
    logger.error("%s (other plugins still load)", error)
