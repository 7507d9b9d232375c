"""FlowThread's lifecycle: a start that times out leaves nothing running behind the caller's back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from orderflow_plugin import OrderFlow, OrderFlowError, Timeouts
from orderflow_plugin.threaded import FlowThread

from .flowhelpers import TIMEOUT_FACTOR

CLOSED_PORT = "ws://127.0.0.1:1"  # nothing listens: a stream that gets to connect fails fast and retries


class BlockingStartup:
    """A plugin whose ``on_startup`` blocks the stream's loop until ``release`` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def on_startup(self, settings: object) -> None:
        self.entered.set()
        self.release.wait(30 * TIMEOUT_FACTOR)  # the blocked hook itself, not a wait in the test


def test_start_timeout_cancels_the_start_and_ends_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow.start() still waiting at the start timeout is cancelled: start() raises one line and no thread runs."""
    flow = OrderFlow(["BTCUSDT"], ws_url=CLOSED_PORT, rest_url="http://127.0.0.1:1")
    waiting = threading.Event()

    async def start_never_returns() -> None:  # a source that never answers, say
        waiting.set()
        await asyncio.Event().wait()  # until cancelled

    monkeypatch.setattr(flow, "start", start_never_returns)
    runner = FlowThread(flow)
    with pytest.raises(OrderFlowError, match=r"^the orderflow thread did not start within 0\.2 s$") as raised:
        runner.start(timeout=0.2)
    assert waiting.is_set() and "\n" not in str(raised.value)
    assert not runner.running
    runner.stop()  # nothing left to stop: a no-op


def test_start_blocked_past_its_stop_says_so_and_stop_ends_it_later() -> None:
    """A loop blocked in a hook through the start timeout and the stop after it: the error says so, stop() ends it."""
    gate = BlockingStartup()
    flow = OrderFlow(["BTCUSDT"], ws_url=CLOSED_PORT, rest_url="http://127.0.0.1:1", plugins=[gate],
                     timeouts=Timeouts(close=0.1))
    runner = FlowThread(flow)
    with pytest.raises(OrderFlowError, match=r"did not start within 0\.2 s, nor stop within 2\.1 s after"):
        runner.start(timeout=0.2)
    assert gate.entered.is_set() and runner.running
    gate.release.set()
    runner.stop(timeout=5 * TIMEOUT_FACTOR)
    assert not runner.running and flow.health()["state"] == "stopped"

