"""Shared fixtures: settings in the testing environment, a fresh plugin manager, a dispatcher."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import uvloop

from orderflow_plugin import Dispatcher, PluginManager, Settings, load_settings
from orderflow_plugin.wsconnection import READERS

from . import flowhelpers

ROOT = Path(__file__).resolve().parent.parent
# tests/nautilus needs nautilus_trader (Python >= 3.12), which only .venv-nautilus has: `make test` runs them
# there. The main venv leaves them out whatever its Python is (a python3 that is 3.12 makes a 3.12 .venv).
collect_ignore = [] if importlib.util.find_spec("nautilus_trader") else ["nautilus"]
# The fault suites run on every frame reader: the fast one must pass them too (issue #9).
_ON_EVERY_READER = {"tests.test_stream", "tests.test_backfill", "tests.test_supervision", "tests.test_liveness",
                    "tests.test_checkpoint"}
# ... and on every event loop: nautilus_trader and many bots run on uvloop (issue #15).
_ON_EVERY_LOOP = {"tests.test_stream", "tests.test_backfill", "tests.test_supervision", "tests.test_liveness",
                  "tests.test_checkpoint", "tests.test_proxy_faults"}
_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The stream's fault suites run on the default loop and on uvloop; everything else on the default."""
    module = getattr(item, "module", None)
    if module is not None and module.__name__ in _ON_EVERY_LOOP and not item.get_closest_marker("once") \
            and not item.get_closest_marker("default_loop"):
        return _LOOPS
    return {"asyncio": asyncio.new_event_loop}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    function = metafunc.function  # a test streams if it calls make_flow or asks for frame_reader itself
    streams = "make_flow" in function.__code__.co_names or "frame_reader" in inspect.signature(function).parameters
    once = metafunc.definition.get_closest_marker("once")
    if metafunc.module.__name__ in _ON_EVERY_READER and streams and not once:
        metafunc.parametrize("frame_reader", READERS, indirect=True)


@pytest.fixture(autouse=True)
def frame_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The frame reader make_flow uses: websockets, or each in turn for the fault suites."""
    reader = getattr(request, "param", "websockets")
    monkeypatch.setattr(flowhelpers, "READER", reader)
    return reader


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the testing environment with no stray ORDERFLOW_ overrides."""
    for key in list(os.environ):
        if key.startswith("ORDERFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ORDERFLOW_ENV", "testing")


@pytest.fixture
def settings() -> Settings:
    """The validated defaults of the testing environment."""
    return load_settings()


@pytest.fixture
def manager() -> PluginManager:
    """A fresh plugin manager with no plugins."""
    return PluginManager()


class Sender:
    """Stands in for the stream as the sender of signals."""


@pytest.fixture
def sender() -> Sender:
    """The object events are sent from."""
    return Sender()


@pytest.fixture
def dispatcher(manager: PluginManager, sender: Sender) -> Dispatcher:
    """A dispatcher over the fresh manager, with a 5 ms slow-hook budget."""
    return Dispatcher(manager, sender, slow_hook_ms=5.0, report_interval=60.0, async_queue_size=100)
