"""Plugin loading: built-ins, entry points, hooks folders, allow/deny, and clear load errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pluggy
import pytest

from orderflow_plugin import PluginLoadError, PluginManager, hookimpl, load_plugins, plugins_from_settings
from orderflow_plugin.plugins import HOOK_NAMES

from .conftest import ROOT


def hooks_file(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def names(manager: PluginManager) -> set[str]:
    return {name for name, _ in manager.list_name_plugin()}


def test_hooks_folder_file_is_loaded(tmp_path: Path) -> None:
    """A plain .py file dropped in a hooks folder is registered under its file name."""
    hooks_file(tmp_path, "mine", "seen = []\ndef on_trade(trade):\n    seen.append(trade)\n")
    manager = load_plugins(entry_points=False, hooks_dirs=[tmp_path])
    assert names(manager) == {"mine"}
    manager.hook.on_trade(trade="t")
    assert manager.get_plugin("mine").seen == ["t"]


def test_broken_hooks_file_names_file_and_line_and_others_load(tmp_path: Path) -> None:
    """An import error and a syntax error each name their file and line; good files still load."""
    hooks_file(tmp_path, "a_good", "def on_trade(trade):\n    pass\n")
    raising = hooks_file(tmp_path, "b_raises", "x = 1\nraise RuntimeError('no config')\n")
    syntax = hooks_file(tmp_path, "c_syntax", "def on_trade(trade)\n    pass\n")
    manager = load_plugins(entry_points=False, hooks_dirs=[tmp_path])
    assert names(manager) == {"a_good"}
    messages = [str(error) for error in manager.load_errors]
    assert f"hooks file {raising}, line 2: RuntimeError: no config" in messages
    assert any(m.startswith(f"hooks file {syntax}, line 1: SyntaxError") for m in messages)
    assert all(isinstance(error, PluginLoadError) for error in manager.load_errors)


def test_unknown_hook_name_is_refused_with_suggestion(tmp_path: Path) -> None:
    """A misspelt hook is a load error suggesting the real name, not a silently ignored function."""
    hooks_file(tmp_path, "typo", "def on_trades(trade):\n    pass\n")
    manager = load_plugins(entry_points=False, hooks_dirs=[tmp_path])
    assert names(manager) == set()
    assert "on_trades is not an orderflow hook (did you mean on_trade?)" in str(manager.load_errors[0])


def test_unknown_argument_is_refused(tmp_path: Path) -> None:
    """A hook asking for an argument the spec does not have fails to load with pluggy's reason."""
    hooks_file(tmp_path, "badarg", "def on_trade(trade, price):\n    pass\n")
    manager = load_plugins(entry_points=False, hooks_dirs=[tmp_path])
    assert "price" in str(manager.load_errors[0])


def test_wrappers_are_refused(manager: PluginManager) -> None:
    """Hook wrappers are refused because every orderflow hook is a plain notification."""

    class Wrapper:
        @hookimpl(wrapper=True)
        def on_trade(self, trade):
            return (yield)

    with pytest.raises(PluginLoadError, match="is a wrapper"):
        manager.register(Wrapper())


def test_marked_and_unmarked_implementations_both_count(manager: PluginManager) -> None:
    """@hookimpl methods and plain on_* methods are both hook implementations."""
    calls = []

    class Plugin:
        @hookimpl(tryfirst=True)
        def on_gap(self, symbol, first_missing, last_missing):
            calls.append(("gap", symbol))

        def on_trade(self, trade):
            calls.append(("trade", trade))

        def helper(self):
            raise AssertionError("not a hook")

    manager.register(Plugin(), name="p")
    manager.hook.on_gap(symbol="BTCUSDT", first_missing=1, last_missing=2)
    manager.hook.on_trade(trade=7)
    assert calls == [("gap", "BTCUSDT"), ("trade", 7)]


def test_allow_and_deny_lists(tmp_path: Path) -> None:
    """allow keeps only the named plugins; deny removes plugins even when allowed."""
    for name in ("one", "two", "three"):
        hooks_file(tmp_path, name, "def on_trade(trade):\n    pass\n")
    assert names(load_plugins(entry_points=False, hooks_dirs=[tmp_path], allow=["one", "two"])) == {"one", "two"}
    assert names(load_plugins(entry_points=False, hooks_dirs=[tmp_path], deny=["two"])) == {"one", "three"}
    both = load_plugins(entry_points=False, hooks_dirs=[tmp_path], allow=["one", "two"], deny=["two"])
    assert names(both) == {"one"}


def test_missing_hooks_folder_is_reported(tmp_path: Path) -> None:
    """A configured hooks folder that does not exist is a load error, not silence."""
    manager = load_plugins(entry_points=False, hooks_dirs=[tmp_path / "nowhere"])
    assert "does not exist" in str(manager.load_errors[0])


def test_builtins_load_first_and_name_clash_is_reported(tmp_path: Path) -> None:
    """Built-ins register first; a hooks file with a taken name is a load error."""

    class Builtin:
        def on_trade(self, trade):
            pass

    hooks_file(tmp_path, "core", "def on_trade(trade):\n    pass\n")
    manager = load_plugins(builtins=[("core", Builtin())], entry_points=False, hooks_dirs=[tmp_path])
    assert isinstance(manager.get_plugin("core"), Builtin)
    assert "already registered" in str(manager.load_errors[0])


def make_distribution(site: Path, dist: str, module: str, body: str, entry: str) -> None:
    """Write an installed distribution (module + dist-info with entry_points.txt) into ``site``."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[orderflow_plugin]\n{entry} = {module}\n")
    (info / "RECORD").write_text("")


def test_entry_point_plugin_from_installed_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A separate distribution with an orderflow_plugin entry point is discovered and loaded."""
    make_distribution(
        tmp_path, "orderflow-strategy-demo", "strategy_demo",
        "seen = []\ndef on_trade(trade):\n    seen.append(trade)\n", "strategy",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = load_plugins(entry_points=True)
    assert "strategy" in names(manager)
    manager.hook.on_trade(trade=1)
    assert sys.modules["strategy_demo"].seen == [1]
    denied = load_plugins(entry_points=True, deny=["strategy"])
    assert "strategy" not in names(denied)


def test_entry_point_that_fails_to_import_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point whose module raises becomes a load error naming the plugin."""
    make_distribution(tmp_path, "orderflow-broken", "broken_mod", "raise ImportError('missing dep')\n", "broken")
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = load_plugins(entry_points=True)
    assert any("broken: ImportError: missing dep" in str(e) for e in manager.load_errors)


def test_fresh_manager_each_time(tmp_path: Path) -> None:
    """Two loads give two managers with separate module state (no plugin loading at import)."""
    hooks_file(tmp_path, "state", "seen = []\ndef on_trade(trade):\n    seen.append(trade)\n")
    first = load_plugins(entry_points=False, hooks_dirs=[tmp_path])
    second = load_plugins(entry_points=False, hooks_dirs=[tmp_path])
    first.hook.on_trade(trade=1)
    assert first.get_plugin("state").seen == [1]
    assert second.get_plugin("state").seen == []


def test_project_hooks_folder_loads_from_settings(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's own hooks/ folder loads cleanly through the [plugins] settings."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("ORDERFLOW_PLUGINS__HOOKS_DIRS", '["hooks"]')
    from orderflow_plugin import load_settings

    manager = plugins_from_settings(load_settings())
    assert manager.load_errors == []
    assert names(manager) == {"diagnostics", "prometheus_export", "recorder", "whale_alert"}


def test_hook_names_match_hookspecs() -> None:
    """HOOK_NAMES is exactly the set of hookspecs."""
    manager = PluginManager()
    specs = {name for name in dir(manager.hook) if not name.startswith("_")}
    assert specs == HOOK_NAMES


def test_impl_caller_is_the_innermost_step_of_every_hook_call(manager: PluginManager) -> None:
    """impl_caller gets every call through manager.hook, historic replays included, inside hookcall monitoring."""
    got: list[tuple[str, list[str]]] = []
    monitored: list[str] = []

    def impl_caller(hook, impls, kwargs):
        got.append((hook, [impl.plugin_name for impl in impls]))
        return []

    class Plugin:
        def on_startup(self, settings):
            raise AssertionError("impl_caller decides who is called")

        def on_gap(self, symbol):
            raise AssertionError("impl_caller decides who is called")

    manager.impl_caller = impl_caller
    manager.add_hookcall_monitoring(lambda hook, impls, kwargs: monitored.append(hook), lambda *args: None)
    manager.hook.on_startup.call_historic(kwargs={"settings": None})
    manager.register(Plugin(), name="p")
    manager.hook.on_gap(symbol="BTCUSDT", first_missing=1, last_missing=2)
    assert got == [("on_startup", []), ("on_startup", ["p"]), ("on_gap", ["p"])]
    assert monitored == ["on_startup", "on_startup", "on_gap"]


def test_without_impl_caller_pluggy_calls_hooks_itself(manager: PluginManager) -> None:
    """With no dispatcher attached, hooks run in pluggy's own loop and a raising one propagates."""

    class Boom:
        def on_gap(self, symbol):
            raise ZeroDivisionError("no isolation without a dispatcher")

    manager.register(Boom(), name="boom")
    with pytest.raises(ZeroDivisionError):
        manager.hook.on_gap(symbol="BTCUSDT", first_missing=1, last_missing=2)


def test_the_pluggy_internals_we_replace_are_there() -> None:
    """PluginManager replaces pluggy's innermost executor _inner_hookexec, the slot add_hookcall_monitoring wraps."""
    probe = pluggy.PluginManager("probe")
    innermost = probe._inner_hookexec
    undo = probe.add_hookcall_monitoring(lambda *args: None, lambda *args: None)
    assert probe._inner_hookexec is not innermost
    undo()
    assert probe._inner_hookexec is innermost
