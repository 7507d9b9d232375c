"""Diagnostics: stuck stages named with their stack, blocked loops named with file and line, misuse refused."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import threading
import time
from dataclasses import replace

import pytest

from orderflow_plugin import Flow, OrderFlow, OrderFlowError, PluginManager, Reporting, StageTimeout, Stalled
from orderflow_plugin.sim import Fault, Pace, Scenario

from .flowhelpers import TIMEOUT_FACTOR, TIMEOUTS, Events, make_flow


def one(*faults: Fault) -> Scenario:
    return Scenario([list(faults)])


@pytest.mark.parametrize("fault,stage", [
    (Fault("hang_before_handshake"), "http_upgrade"),
    (Fault("hang_after_handshake"), "first_message"),
])
async def test_stuck_stage_named_with_stack_before_its_deadline(orderflow_sim_factory, fault, stage) -> None:
    """Half way to the deadline the stage is reported with the await it is stuck in; the timeout carries it too."""
    # The deadline is the test's wall-clock limit, so it is scaled: at a load of 20 on 2 cores, 1 s deadlines
    # saw the stage's own deadline pass before the half-way report ran (issue #26).
    deadline = 1.0 * TIMEOUT_FACTOR
    sim = await orderflow_sim_factory(scenario=one(fault), pace=Pace(rate=500))
    events = Events()
    started = time.monotonic()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, **{stage: deadline})):
        await events.until(lambda e: e.of("on_stall"), 3 * deadline)
        warned = time.monotonic() - started
        await events.until(lambda e: e.of("on_error"), 3 * deadline)
        await events.until(lambda e: len(e.trades) >= 5, 10)
    stall = events.of("on_stall")[0]
    assert stall["stage"] == stage and deadline / 2 <= stall["silent_for"] < deadline and warned < deadline
    assert "open_connection" in stall["stack"] and f'within("{stage}"' in stall["stack"]
    error = events.of("on_error")[0]["error"]
    assert isinstance(error, StageTimeout) and error.stage == stage and error.stack == stall["stack"]


async def test_blackhole_stall_reports_stack(orderflow_sim_factory) -> None:
    """A silent open connection is reported as stage streaming with the shard task's stack."""
    sim = await orderflow_sim_factory(scenario=one(Fault("blackhole_after", after=30)), pace=Pace(rate=500))
    events = Events()
    async with make_flow(sim, events, timeouts=replace(TIMEOUTS, stall=1.0)):
        await events.until(lambda e: e.of("on_stall"), 5)
    stall = events.of("on_stall")[0]
    assert stall["stage"] == "streaming" and "_drive" in stall["stack"]
    assert isinstance(events.of("on_disconnected")[0]["error"], Stalled)


async def test_blocked_loop_named_with_file_and_line(orderflow_sim_factory, caplog) -> None:
    """A host coroutine calling time.sleep(2) on the loop is named, file and line, within 1.5 s of the block."""
    sim = await orderflow_sim_factory(pace=Pace(rate=200))
    events = Events()
    seen: list[tuple[float, str]] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((time.monotonic(), record.getMessage()))

    catcher = Catch()
    logging.getLogger("orderflow_plugin.diagnostics").addHandler(catcher)
    try:
        async with make_flow(sim, events, reporting=Reporting(loop_block_threshold=1.0)):
            await events.until(lambda e: len(e.trades) >= 5, 5)
            blocked_at = time.monotonic()
            time.sleep(2)  # the host's mistake: blocking the event loop
            host_line = inspect.currentframe().f_lineno - 1  # the line of time.sleep above
            await events.until(lambda e: e.of("on_loop_blocked"), 3)
    finally:
        logging.getLogger("orderflow_plugin.diagnostics").removeHandler(catcher)
    when, message = seen[0]
    assert when - blocked_at < 1.0 + 0.5 * TIMEOUT_FACTOR
    assert message.startswith("event loop blocked for 1.")
    assert f"tests/test_diagnostics.py:{host_line} in test_blocked_loop_named_with_file_and_line: time.sleep(2)" in message
    report = events.of("on_loop_blocked")[0]
    assert report["blocked_for"] >= 1.9 and "time.sleep(2)" in report["stack"]


async def test_healthy_loop_reports_nothing_and_measures_lag(orderflow_sim_factory) -> None:
    """With no blocking there is no report, and health() carries the loop lag."""
    sim = await orderflow_sim_factory(pace=Pace(rate=500))
    events = Events()
    async with make_flow(sim, events, reporting=Reporting(loop_block_threshold=0.5)) as flow:
        await events.until(lambda e: len(e.trades) >= 300, 5)
        health = flow.health()
    assert events.of("on_loop_blocked") == [] and 0 <= health["loop_lag_s"] < 0.1 * TIMEOUT_FACTOR


async def test_start_on_another_loop_is_refused(orderflow_sim_factory) -> None:
    """start() or stop() from another thread's loop raises an error that says what to do."""
    sim = await orderflow_sim_factory()
    flow = make_flow(sim, Events())
    async with flow:
        errors: list[BaseException] = []

        def other_thread() -> None:
            for call in (flow.start, flow.stop):
                try:
                    asyncio.run(call())
                except OrderFlowError as exc:
                    errors.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        await asyncio.to_thread(thread.join)
        assert len(errors) == 2
        assert "another event loop" in str(errors[0]) and "run_coroutine_threadsafe" in str(errors[0])


async def test_fire_and_forget_start_still_streams(orderflow_sim_factory) -> None:
    """A host that fires start() with create_task and drops the task still gets trades."""
    sim = await orderflow_sim_factory(pace=Pace(rate=500))
    events = Events()
    flow = make_flow(sim, events)
    asyncio.get_running_loop().create_task(flow.start())  # no reference kept, on purpose
    gc.collect()
    await events.until(lambda e: len(e.trades) >= 20, 5)
    await flow.stop()


class _BrokenFeed:
    """A ``source`` whose reading task raises: a bug in one of the stream's tasks."""

    async def open(self, flow: OrderFlow) -> None:
        pass

    async def run(self) -> None:
        raise RuntimeError("bug in a task")

    async def aclose(self) -> None:
        pass

    def summary(self) -> dict:
        return {}

    def health(self) -> dict:
        return {"state": "broken"}

    def __str__(self) -> str:
        return "a broken feed"


async def test_crashing_internal_task_is_logged(caplog) -> None:
    """An exception in one of the stream's tasks (here the source's reader) is logged and reported, never swallowed."""
    events = Events()
    manager = PluginManager()
    manager.register(events, name="events")
    async with OrderFlow(["BTCUSDT"], feed=_BrokenFeed(), plugins=manager):
        await events.until(lambda e: any(c["where"] == "task:orderflow redis source" for c in e.of("on_error")), 2)
    assert "task orderflow redis source failed" in caplog.text and "bug in a task" in caplog.text


def test_threaded_runner_streams_while_host_thread_sleeps() -> None:
    """run_in_thread streams on its own loop while the synchronous host sleeps; state is read safely."""
    from orderflow_plugin.sim import Simulator

    # The simulator runs on a loop of its own in a thread, so this test's host code is plain sync code.
    sim_loop = asyncio.new_event_loop()
    sim_thread = threading.Thread(target=sim_loop.run_forever, daemon=True)
    sim_thread.start()
    sim = Simulator(pace=Pace(rate=1000))
    asyncio.run_coroutine_threadsafe(sim.start(), sim_loop).result(5)
    try:
        events = Events()
        runner = make_flow(sim, events, flow=Flow(snapshot_interval=0.2)).run_in_thread()
        time.sleep(1.0)  # the host does its own synchronous work
        health = runner.health()
        latest = runner.latest("BTCUSDT")
        runner.stop()
        assert not runner.running
        assert len(events.trades) > 300 and health["state"] == "running"
        assert latest["trade"].id >= events.trades[0].id and "snapshot" in latest
        assert events.of("on_shutdown")
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), sim_loop).result(5)
        sim_loop.call_soon_threadsafe(sim_loop.stop)
        sim_thread.join(5)
        sim_loop.close()


def test_threaded_runner_reports_start_failure() -> None:
    """A stream that cannot start reports it to the host thread."""
    flow = OrderFlow(["BTCUSDT"], ws_url="ws://127.0.0.1:1")
    asyncio.run(flow.stop())  # stopped before it ran: start() must refuse
    with pytest.raises(OrderFlowError, match="failed to start"):
        flow.run_in_thread()
