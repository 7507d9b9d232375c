"""Plugin loading: built-ins, entry points, hooks folders, allow/deny, and clear load errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import types
from decimal import Decimal
from pathlib import Path

import pytest

from orderflow_plugin import (
    OrderFlow,
    PluginLoadError,
    PluginManager,
    Trade,
    hookimpl,
    load_plugins,
    load_settings,
    plugins_from_settings,
)
from orderflow_plugin.doctor import run_doctor
from orderflow_plugin.plugins import HOOK_NAMES

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR, Events

BUNDLED = {"diagnostics", "whale_alert", "recorder", "prometheus", "redis"}


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


def test_missing_relative_hooks_folder_is_reported_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder named "hooks" is no exception: the default names no folder, so a missing one is a mistake."""
    monkeypatch.chdir(tmp_path)
    manager = load_plugins(entry_points=False, hooks_dirs=["hooks"])
    assert [str(e) for e in manager.load_errors] == ["hooks folder hooks does not exist"]


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
    manager = load_plugins(entry_points=True, allow=["strategy"])
    assert names(manager) == {"strategy"}
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


def test_project_hooks_folder_example_loads_and_runs(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """The repository's hooks/ folder is the drop-in example: its plugin loads from settings and counts big buys."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("ORDERFLOW_PLUGINS__HOOKS_DIRS", '["hooks"]')
    monkeypatch.setenv("ORDERFLOW_HOOKS__BIG_BUYERS__THRESHOLD", "1000")
    settings = load_settings()
    manager = plugins_from_settings(settings)
    assert manager.load_errors == []
    assert names(manager) == {"big_buyers"}
    manager.hook.on_startup.call_historic(kwargs={"settings": settings})
    for i, (side, qty) in enumerate([("buy", "0.1"), ("buy", "0.01"), ("sell", "1")]):
        manager.hook.on_trade(trade=Trade("BTCUSDT", i, Decimal(87000), Decimal(qty), i, i, 0, side))
    with caplog.at_level(logging.INFO, logger="orderflow_hooks"):
        manager.hook.on_shutdown(summary={})
    assert "big buyers: 1 taker buys at or over 1000 notional" in caplog.text


def test_bundled_plugins_load_through_entry_points_by_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled plugins come from the orderflow_plugin entry points; hooks.<name>.enabled = false keeps one out."""
    monkeypatch.setenv("ORDERFLOW_PLUGINS__ENTRY_POINTS", "true")
    manager = plugins_from_settings(load_settings())
    assert manager.load_errors == []
    assert names(manager) == {"diagnostics", "whale_alert"}
    assert sorted(manager.disabled) == ["prometheus", "recorder", "redis"]
    assert manager.describe() == "diagnostics, whale_alert (disabled: prometheus, recorder, redis)"
    monkeypatch.setenv("ORDERFLOW_HOOKS__RECORDER__ENABLED", "true")
    monkeypatch.setenv("ORDERFLOW_HOOKS__DIAGNOSTICS__ENABLED", "false")
    manager = plugins_from_settings(load_settings())
    assert manager.describe() == "recorder, whale_alert (disabled: diagnostics, prometheus, redis)"


def test_every_bundled_module_is_an_entry_point() -> None:
    """Each module in orderflow_plugin/bundled/ is registered in pyproject's orderflow_plugin entry points."""
    import tomllib

    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["orderflow_plugin"]
    modules = {path.stem for path in (ROOT / "orderflow_plugin" / "bundled").glob("[!_]*.py")}
    assert set(entry_points) == BUNDLED
    assert {value.split(":")[0].rsplit(".", 1)[1] for value in entry_points.values()} == modules
    assert names(load_plugins(entry_points=True, allow=sorted(BUNDLED))) == BUNDLED


def test_enabled_false_turns_off_a_drop_in_plugin_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hooks.<name>.enabled = false keeps any plugin out, a hooks file as much as an entry point, and lists it."""
    hooks_file(tmp_path / "hooks", "mine", "def on_trade(trade):\n    raise AssertionError('disabled')\n")
    hooks_file(tmp_path / "hooks", "other", "def on_trade(trade):\n    pass\n")
    monkeypatch.setenv("ORDERFLOW_PLUGINS__HOOKS_DIRS", json.dumps([str(tmp_path / "hooks")]))
    monkeypatch.setenv("ORDERFLOW_HOOKS__MINE__ENABLED", "false")
    manager = plugins_from_settings(load_settings())
    assert names(manager) == {"other"} and manager.disabled == ["mine"]
    assert manager.describe() == "other (disabled: mine)"


def test_entry_point_class_gets_one_instance_per_manager() -> None:
    """A class named by an entry point is instantiated for each manager: two streams never share its state."""
    first = load_plugins(entry_points=True, allow=["whale_alert"]).get_plugin("whale_alert")
    second = load_plugins(entry_points=True, allow=["whale_alert"]).get_plugin("whale_alert")
    assert type(first).__name__ == "WhaleAlert" and first is not second
    first.on_trade(Trade("BTCUSDT", 1, Decimal(100000), Decimal(2), 1, 1, 0, "buy"))
    assert len(first.alerts) == 1 and len(second.alerts) == 0


def test_drop_in_file_named_like_a_bundled_plugin_is_a_clear_load_error(tmp_path: Path) -> None:
    """A hooks file named like a bundled plugin does not register twice: the bundled one stays, the file is reported."""
    path = hooks_file(tmp_path, "diagnostics", "def on_trade(trade):\n    pass\n")
    manager = load_plugins(entry_points=True, allow=["diagnostics"], hooks_dirs=[tmp_path])
    assert type(manager.get_plugin("diagnostics")).__name__ == "Diagnostics"
    assert [str(e) for e in manager.load_errors] == [
        f"hooks file {path}: the plugin name diagnostics is already registered by an earlier plugin; rename this one"]


async def test_orderflow_takes_a_list_of_plugins(orderflow_sim) -> None:
    """OrderFlow(plugins=[a module, an object]) registers each in a fresh manager and both get the trades."""
    module = types.ModuleType("my_strategy")
    exec("seen = []\ndef on_trade(trade):\n    seen.append(trade)\n", module.__dict__)
    events = Events()
    flow = OrderFlow(["BTCUSDT"], ws_url=orderflow_sim.ws_url, rest_url=orderflow_sim.rest_url,
                     plugins=[module, events])
    assert flow.plugins.describe() == "Events, my_strategy"
    async with flow:
        await events.until(lambda e: len(e.trades) >= 5 and len(module.seen) >= 5, 10)
    assert module.seen[:5] == events.trades[:5]
    assert flow.summary()["plugin_errors"] == 0


class NoHooks:
    """Has no on_* function."""


@pytest.mark.parametrize(("plugins", "message"), [
    (types.ModuleType("my_strategy"), "plugins must be a list of plugins (modules or objects with on_* hooks) or a "
                                      "PluginManager, got the module my_strategy: pass plugins=[my_strategy]"),
    ({"a": 1}, "plugins must be a list of plugins (modules or objects with on_* hooks) or a PluginManager, "
               "got a dict: pass plugins=[my_plugin]"),
    (["my_strategy"], "plugins[0] is the name 'my_strategy': pass the imported module or object itself"),
    ([Events], "plugins[0] is the class Events: pass an instance, Events()"),
    ([Events(), NoHooks()], "plugins[1] (NoHooks) has no orderflow hooks: give it functions named like the hooks "
                            "(on_trade, on_metric, ...; see docs/hooks.md)"),
])
def test_orderflow_refuses_other_plugins_at_once(plugins, message: str) -> None:
    """Anything but a manager or a list of plugins is refused when OrderFlow is built, saying what to pass."""
    with pytest.raises(TypeError) as caught:
        OrderFlow(["BTCUSDT"], ws_url="ws://127.0.0.1:9", plugins=plugins)
    assert str(caught.value) == message


def test_from_settings_takes_a_list_of_plugins(settings) -> None:
    """OrderFlow.from_settings(plugins=[...]) uses exactly those plugins instead of the ones settings load."""
    flow = OrderFlow.from_settings(settings, plugins=[Events()])
    assert flow.plugins.describe() == "Events"


async def test_doctor_lists_active_plugins_and_names_the_disabled(orderflow_sim, monkeypatch) -> None:
    """The doctor's plugins line describes only the active plugins and names the disabled ones."""
    monkeypatch.setenv("ORDERFLOW_PLUGINS__ENTRY_POINTS", "true")
    checks = await run_doctor(load_settings(), ws_url=orderflow_sim.ws_url, rest_url=orderflow_sim.rest_url,
                              symbol="BTCUSDT", market="spot", timeout=3.0 * TIMEOUT_FACTOR)
    plugins = next(check for check in checks if check.name == "plugins")
    assert plugins.status == "PASS"
    assert plugins.detail.startswith("diagnostics (on_backfill, ")
    assert "; whale_alert (on_startup, on_trade); disabled: prometheus, recorder, redis" in plugins.detail
    assert "recorder (" not in plugins.detail and "prometheus (" not in plugins.detail


def test_an_allow_or_deny_name_that_matches_no_plugin_is_a_load_error(caplog: pytest.LogCaptureFixture) -> None:
    """plugins.allow/deny naming no plugin is a logged load error; the exporter's old name says its new one."""
    with caplog.at_level(logging.ERROR, logger="orderflow_plugin.plugins"):
        manager = load_plugins(entry_points=True, allow=["diagnostics", "prometheus_export"], deny=["whale_alrt"])
    assert names(manager) == {"diagnostics"}
    found = "plugins found: diagnostics, prometheus, recorder, redis, whale_alert"
    assert [str(e) for e in manager.load_errors] == [
        f"plugins.allow names prometheus_export, but no plugin has that name (it is now named prometheus); {found}",
        f"plugins.deny names whale_alrt, but no plugin has that name; {found}",
    ]
    assert all(isinstance(e, PluginLoadError) for e in manager.load_errors)
    assert "it is now named prometheus" in caplog.text


async def test_doctor_warns_about_an_allow_name_that_matches_no_plugin(orderflow_sim, monkeypatch) -> None:
    """With plugins.allow naming the exporter's old name the doctor's plugins check is WARN naming it, not PASS."""
    monkeypatch.setenv("ORDERFLOW_PLUGINS__ENTRY_POINTS", "true")
    monkeypatch.setenv("ORDERFLOW_PLUGINS__ALLOW", '["diagnostics", "prometheus_export"]')
    checks = await run_doctor(load_settings(), ws_url=orderflow_sim.ws_url, rest_url=orderflow_sim.rest_url,
                              symbol="BTCUSDT", market="spot", timeout=3.0 * TIMEOUT_FACTOR)
    plugins = next(check for check in checks if check.name == "plugins")
    assert plugins.status == "WARN"
    assert "plugins.allow names prometheus_export, but no plugin has that name (it is now named prometheus)" in plugins.detail
    assert "plugins.allow/deny" in plugins.next_step


def test_demo_lists_active_plugins_and_names_the_disabled() -> None:
    """`orderflow demo` starts with the active plugins and says which are disabled; the bundled ones run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    env.update(ORDERFLOW_ENV="testing", ORDERFLOW_PLUGINS__ENTRY_POINTS="true")
    result = subprocess.run([sys.executable, "-m", "orderflow_plugin", "demo", "--speed", "100000", "--duration", "20"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.endswith("; plugins: diagnostics, whale_alert (disabled: prometheus, recorder, redis)"), first
    assert "whale BTCUSDT" in result.stderr and "stopped: trades 5000" in result.stderr


def test_hook_names_match_hookspecs() -> None:
    """HOOK_NAMES is exactly the set of hookspecs."""
    manager = PluginManager()
    specs = {name for name in dir(manager.hook) if not name.startswith("_")}
    assert specs == HOOK_NAMES


def test_hook_runner_runs_every_call_pluggy_makes(manager: PluginManager) -> None:
    """hook_runner gets every call through manager.hook, historic replays included, inside hookcall monitoring."""
    got: list[tuple[str, str, tuple]] = []
    monitored: list[tuple[str, list[str]]] = []

    def hook_runner(name, hook, function, args, kwargs):
        got.append((name, hook, args))
        return None

    class Plugin:
        def on_startup(self, settings):
            raise AssertionError("hook_runner decides whether it is called")

        def on_gap(self, symbol):
            raise AssertionError("hook_runner decides whether it is called")

    manager.hook_runner = hook_runner
    manager.add_hookcall_monitoring(lambda hook, impls, kwargs: monitored.append(
        (hook, [impl.plugin_name for impl in impls])), lambda *args: None)
    manager.hook.on_startup.call_historic(kwargs={"settings": None})
    manager.register(Plugin(), name="p")
    manager.hook.on_gap(symbol="BTCUSDT", first_missing=1, last_missing=2)
    assert got == [("p", "on_startup", (None,)), ("p", "on_gap", ("BTCUSDT",))]
    assert monitored == [("on_startup", []), ("on_startup", ["p"]), ("on_gap", ["p"])]


def test_the_manager_hands_out_the_plugin_objects_registered(manager: PluginManager) -> None:
    """get_plugin, list_name_plugin, get_plugins, get_name, get_hookcallers and unregister all speak of the plugin."""

    class Plugin:
        def on_gap(self, symbol):
            pass

    plugin, other = Plugin(), Plugin()
    manager.register(plugin, name="p")
    manager.register(other, name="q")
    assert manager.get_plugin("p") is plugin and manager.get_name(plugin) == "p" and manager.is_registered(plugin)
    assert dict(manager.list_name_plugin()) == {"p": plugin, "q": other}
    assert manager.get_plugins() == {plugin, other}
    assert [caller.name for caller in manager.get_hookcallers(plugin) or ()] == ["on_gap"]
    assert [impl.plugin_name for impl in manager.subset_hook_caller("on_gap", [other]).get_hookimpls()] == ["p"]
    with pytest.raises(PluginLoadError, match="already registered as p"):
        manager.register(plugin, name="again")
    assert manager.unregister(plugin) is plugin
    assert not manager.is_registered(plugin) and manager.get_plugin("p") is None
    assert manager.unregister(name="q") is other
    assert manager.list_name_plugin() == [] and manager.unregister(name="q") is None
    manager.register(plugin, name="p")  # and back again
    assert [impl.plugin_name for impl in manager.hook.on_gap.get_hookimpls()] == ["p"]


def test_without_hook_runner_pluggy_calls_hooks_itself(manager: PluginManager) -> None:
    """With no dispatcher attached, hooks run in pluggy's own loop and a raising one propagates."""

    class Boom:
        def on_gap(self, symbol):
            raise ZeroDivisionError("no isolation without a dispatcher")

    manager.register(Boom(), name="boom")
    with pytest.raises(ZeroDivisionError):
        manager.hook.on_gap(symbol="BTCUSDT", first_missing=1, last_missing=2)


def test_a_direct_pluggy_call_is_isolated_once_a_dispatcher_is_attached(manager: PluginManager) -> None:
    """manager.hook.<name>(...) called by anyone, not only the dispatcher, isolates a raising plugin and completes."""
    from orderflow_plugin import Dispatcher

    seen: list[str] = []
    outcomes: list[BaseException | None] = []

    class Boom:
        def on_gap(self, symbol):
            raise ZeroDivisionError("strategy bug")

    class Good:
        def on_gap(self, symbol):
            seen.append(symbol)

        def on_error(self, error, where):
            seen.append(where)

    manager.register(Good(), name="good")
    manager.register(Boom(), name="boom")  # registered last, so called first
    dispatcher = Dispatcher(manager, object())
    manager.add_hookcall_monitoring(lambda *args: None, lambda outcome, *args: outcomes.append(outcome.exception))
    assert manager.hook.on_gap(symbol="BTCUSDT", first_missing=1, last_missing=2) == []
    assert seen == ["plugin:boom.on_gap", "BTCUSDT"] and dispatcher.plugin_errors == 1
    assert outcomes == [None, None]  # on_error inside, then on_gap: both complete
