"""The public surface: every hook and signal documented and tested, __all__ curated."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import typing
from decimal import Decimal
from pathlib import Path

import orderflow_plugin
from orderflow_plugin import hookspecs, signals
from orderflow_plugin.plugins import HOOK_NAMES

from .conftest import ROOT

TESTS = Path(__file__).resolve().parent
CURATED = {
    "FlowThread", "Bar", "BarUnits", "FlowEngine", "Footprint", "Snapshot", "Whale", "BadFrame", "ConnectFailed", "ConnectionLost", "GaveUp", "HandshakeRejected", "OrderFlow", "StageTimeout",
    "Stalled", "StreamError", "Dispatcher", "HookFailed", "HookTooSlow", "Metric", "OrderFlowError", "PluginError", "PluginLoadError",
    "PluginManager", "Settings", "SettingsError", "Tape", "TapeError", "TapeRow", "Trade", "bundled_tape",
    "hookimpl", "load_plugins", "load_settings", "load_tape", "normalize_symbol", "plugins_from_settings",
    "signals", "stream_name", "Timeouts", "Reconnect", "Limits", "Sequencing", "Flow", "Reporting",
    "OptionError",
    "UnknownSymbol", "SymbolNotTrading",
}


def test_public_api_is_curated() -> None:
    """orderflow_plugin.__all__ is exactly the curated API and every name resolves."""
    assert set(orderflow_plugin.__all__) == CURATED
    for name in orderflow_plugin.__all__:
        assert getattr(orderflow_plugin, name) is not None


def test_every_module_declares_all() -> None:
    """Every public module declares __all__, and every name in it exists."""
    for info in pkgutil.iter_modules(orderflow_plugin.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"orderflow_plugin.{info.name}")
        assert hasattr(module, "__all__"), f"{info.name} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.__all__ names missing {name}"


def test_every_hookspec_has_typed_params_and_doc() -> None:
    """Each hookspec has a docstring with one :param: line per argument and type hints."""
    for name in HOOK_NAMES:
        function = getattr(hookspecs, name)
        params = inspect.signature(function).parameters
        for param in params:
            assert f":param {param}:" in function.__doc__, f"{name} does not document {param}"
            assert params[param].annotation is not inspect.Parameter.empty


def test_every_hook_has_a_doc_section_and_a_test() -> None:
    """docs/hooks.md has a section with each hook's exact signature; some test names each hook."""
    docs = (ROOT / "docs" / "hooks.md").read_text()
    tests = "".join(p.read_text() for p in TESTS.glob("test_*.py") if p.name != "test_surface.py")
    for name in HOOK_NAMES:
        args = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"## `{name}({args})`" in docs, f"docs/hooks.md has no section for {name}({args})"
        assert re.search(rf"\b{name}\b", tests), f"no test mentions {name}"


def test_every_signal_has_a_doc_section_and_a_test() -> None:
    """docs/signals.md has a section per signal, and there is exactly one signal per hook."""
    docs = (ROOT / "docs" / "signals.md").read_text()
    assert {signals.signal_for_hook(h).name for h in HOOK_NAMES} == set(signals.SIGNALS)
    tests = (TESTS / "test_dispatch.py").read_text()
    assert "signal_for_hook(hook)" in tests  # the parametrised test sends every signal
    for name in signals.SIGNALS:
        assert f"## `{name}`" in docs, f"docs/signals.md has no section for {name}"
        assert getattr(signals, name.replace("-", "_")) is signals.SIGNALS[name]


def test_on_metric_is_typed_with_what_the_engine_emits() -> None:
    """on_metric's annotation, resolved, admits every metric the engine emits: a Bar is not a Metric, so it says so."""
    hint = typing.get_type_hints(hookspecs.on_metric, localns={"Metric": orderflow_plugin.Metric,
                                                                "Bar": orderflow_plugin.Bar})["metric"]
    engine = orderflow_plugin.FlowEngine("BTCUSDT", whale_notional=Decimal(10_000))
    metrics = [m for t in orderflow_plugin.bundled_tape().trades() for m in engine.add(t)]
    metrics.append(engine.snapshot())
    assert {m.kind for m in metrics} == {"bar", "whale", "snapshot"}
    assert not isinstance(next(m for m in metrics if m.kind == "bar"), orderflow_plugin.Metric)
    assert [m.kind for m in metrics if not isinstance(m, hint)] == []
