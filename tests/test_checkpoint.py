"""Restarts lose nothing: a checkpoint resumes each symbol after its last delivered id (issue #15, section 4)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from orderflow_plugin import Flow, OrderFlow, Sequencing, Trade, bundled_tape
from orderflow_plugin.checkpoint import Checkpoint, CheckpointError
from orderflow_plugin.checkpointer import Checkpointer
from orderflow_plugin.driver import CallSink, Driver, discard
from orderflow_plugin.pipeline import Pipeline
from orderflow_plugin.sim import Fault, Pace, Scenario

from .flowhelpers import TIMEOUT_FACTOR, Events, make_flow

TAPE = bundled_tape()
FIRST = TAPE.rows[0].id
BOT = Path(__file__).resolve().parent.parent / "examples" / "restart_safe_bot.py"
KILLS = Path(__file__).resolve().parent.parent / "bench" / "kills.py"  # its --child: a stream recording (id, source)


def test_missing_file_is_a_first_start(tmp_path: Path) -> None:
    """No checkpoint file yet: every symbol starts from the live stream."""
    assert Checkpoint(tmp_path / "none.json", market="spot").load(("BTCUSDT",)) == {}


@pytest.mark.parametrize("content,words", [
    ("{not json", "is not valid JSON"),
    ('{"hello": 1}', "is not an orderflow checkpoint"),
    ('{"format": "orderflow-checkpoint", "version": 9, "market": "spot", "symbols": {}}', "version 9"),
    ('{"format": "orderflow-checkpoint", "version": 1, "market": "usdm", "symbols": {}}', "for market 'usdm'"),
    ('{"format": "orderflow-checkpoint", "version": 1, "market": "spot", "symbols": {"BTCUSDT": {"last_id": "7"}}}',
     "needs whole numbers"),
], ids=["not JSON", "not a checkpoint", "another version", "another market", "an id that is a string"])
def test_corrupt_or_foreign_checkpoint_is_a_clear_startup_error(tmp_path: Path, content: str, words: str) -> None:
    """A checkpoint that is not ours, or is damaged, stops construction with one line naming the file."""
    path = tmp_path / "checkpoint.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match=words) as caught:
        OrderFlow(["BTCUSDT"], sequencing=Sequencing(checkpoint_path=str(path)))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_write_is_atomic_readable_json_and_keeps_other_symbols(tmp_path: Path) -> None:
    """A write replaces the file whole, as small indented JSON, and keeps symbols this stream does not serve."""
    path = tmp_path / "checkpoint.json"
    first = Checkpoint(path, market="spot")
    first.write(upcoming={"BTCUSDT": 100, "ETHUSDT": 7})
    first.delivered("BTCUSDT", 100)
    first.write(final=True)
    again = Checkpoint(path, market="spot")
    assert again.load(("BTCUSDT",))["BTCUSDT"].last_id == 100
    again.delivered("BTCUSDT", 101)
    again.write(final=True)
    data = json.loads(path.read_text())
    assert data["symbols"] == {"BTCUSDT": {"last_id": 101, "lease": 101}, "ETHUSDT": {"last_id": 6, "lease": 6}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.json.lock"]  # no temporary


def test_lease_covers_one_interval_of_the_recent_rate_and_follows_it_down(tmp_path: Path) -> None:
    """A lease is an interval at the rate since the last write, plus an eighth (at least a floor); it shrinks with it."""
    now = [100.0]
    checkpoint = Checkpoint(tmp_path / "c.json", market="spot", interval=1.0, clock=lambda: now[0])
    checkpoint.write(upcoming={"BTCUSDT": 1})
    assert checkpoint.lease("BTCUSDT") == 0 + 4 + 1 and checkpoint.check_at("BTCUSDT") == 4
    now[0] += 1.0  # an interval, in which 2,000 trades were delivered
    checkpoint.delivered("BTCUSDT", 2000)
    checkpoint.write()
    assert checkpoint.lease("BTCUSDT") == 2000 + 2000 + 250 and checkpoint.check_at("BTCUSDT") == 2000 + 2000
    now[0] += 1.0  # then 100 trades in an interval: the next lease follows the rate down
    checkpoint.delivered("BTCUSDT", 2100)
    checkpoint.write()
    assert checkpoint.lease("BTCUSDT") == 2100 + 100 + 13


def test_a_backfill_burst_lease_is_cut_back_at_the_next_write(tmp_path: Path) -> None:
    """A burst grows its leases by what it delivered; the write a quarter interval after it sizes them to the rate."""
    now = [100.0]
    path = tmp_path / "c.json"
    checkpoint = Checkpoint(path, market="spot", interval=1.0, clock=lambda: now[0])
    checkpoint.write(upcoming={"BTCUSDT": 1})
    trade_id = 0
    while trade_id < 20_000:  # 20,000 backfilled ids in 20 ms: a write each time the lease runs out
        now[0] += 0.001
        trade_id = checkpoint.lease("BTCUSDT")
        checkpoint.delivered("BTCUSDT", trade_id)
        checkpoint.write(upcoming={"BTCUSDT": trade_id + 1})
    burst_lease = checkpoint.lease("BTCUSDT")
    assert burst_lease - trade_id < 20_000 // 2  # never a guess from 20,000 ids/20 ms = a million per second
    assert checkpoint.due == now[0] + 0.25
    now[0] += 0.25  # then the live rate, 2,000/s: the next write is due already, and its lease is an interval's
    checkpoint.delivered("BTCUSDT", trade_id + 500)
    checkpoint.write()
    stored = json.loads(path.read_text())["symbols"]["BTCUSDT"]
    assert stored["lease"] - stored["last_id"] <= 2000 + 250 and checkpoint.lease("BTCUSDT") == stored["lease"]


async def test_clean_restart_resumes_after_the_last_id_with_no_replay(orderflow_sim_factory, tmp_path) -> None:
    """Stop, wait while the market goes on, start again: the missed trades are backfilled, none repeated."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    path = str(tmp_path / "checkpoint.json")
    first, second = Events(), Events()
    async with make_flow(sim, first, sequencing=Sequencing(checkpoint_path=path, checkpoint_interval=0.1)):
        await first.until(lambda e: len(e.trades) >= 200, 10)
    stored = json.loads(Path(path).read_text())["symbols"]["BTCUSDT"]
    assert stored == {"last_id": first.ids()[-1], "lease": first.ids()[-1]}
    await asyncio.sleep(0.3)  # the market plays on while the bot is down
    async with make_flow(sim, second, sequencing=Sequencing(checkpoint_path=path)):
        await second.until(lambda e: len(e.trades) >= 600, 10)
    assert second.ids()[0] == first.ids()[-1] + 1
    union = first.ids() + second.ids()
    assert union == list(range(union[0], union[0] + len(union)))
    assert {t.source for t in second.trades} >= {"backfill", "live"} and "replay" not in {t.source for t in second.trades}
    assert second.of("on_backfill")


async def test_stored_id_older_than_rest_serves_is_an_exact_gap(orderflow_sim_factory, tmp_path) -> None:
    """A checkpoint older than anything REST still has: the missing ids are named exactly, then trades flow."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps({"format": "orderflow-checkpoint", "version": 1, "market": "spot",
                                "symbols": {"BTCUSDT": {"last_id": FIRST - 101, "lease": FIRST - 101}}}))
    events = Events()
    async with make_flow(sim, events, sequencing=Sequencing(checkpoint_path=str(path))):
        await events.until(lambda e: len(e.trades) >= 100, 10)
    errors = [c["error"] for c in events.of("on_error") if c["where"] == "sequence"]
    assert len(errors) == 1 and f"{FIRST - 100}..{FIRST - 1} (100)" in str(errors[0])
    assert "no longer available on REST" in str(errors[0])
    assert events.ids()[0] == FIRST and events.ids() == list(range(FIRST, FIRST + len(events.trades)))


@pytest.mark.timeout(240)  # 20 bot processes started one after another: ~40 s idle, past 60 s on a busy machine
@pytest.mark.default_loop  # the bots are child processes on their own default loop; the parent only serves
async def test_sigkill_at_twenty_random_moments_loses_nothing(orderflow_sim_factory, tmp_path, frame_reader) -> None:
    """kill -9 at 20 random moments at 2,000 trades/s: the example bot's CSV holds every published id once."""
    sim = await orderflow_sim_factory(pace=Pace(rate=2000), loop=True,
                                      scenario=Scenario(every=[Fault("reset_after", after=1500)]))
    rng = random.Random(int(os.environ.get("ORDERFLOW_TEST_SEED", "15")))
    csv = tmp_path / "trades.csv"
    env = {**os.environ, "ORDERFLOW_ENV": "testing", "ORDERFLOW_SYMBOLS": "BTCUSDT",
           "ORDERFLOW_CONNECTOR__WS_URL": sim.ws_url, "ORDERFLOW_CONNECTOR__REST_URL": sim.rest_url,
           "ORDERFLOW_CONNECTOR__READER": frame_reader, "ORDERFLOW_FLOW__ENABLED": "false",
           "ORDERFLOW_SEQUENCING__CHECKPOINT_PATH": str(tmp_path / "checkpoint.json"),
           "ORDERFLOW_SEQUENCING__CHECKPOINT_INTERVAL": "0.2", "ORDERFLOW_SEQUENCING__REORDER_WINDOW": "0.05",
           "ORDERFLOW_TIMEOUTS__REST": "2.0", "ORDERFLOW_REPORTING__LOOP_BLOCK_THRESHOLD": "0"}
    for _ in range(20):
        bot = await asyncio.create_subprocess_exec(sys.executable, str(BOT), str(csv), stdout=asyncio.subprocess.PIPE,
                                                   env=env)
        assert bot.stdout is not None
        async with asyncio.timeout(30 * TIMEOUT_FACTOR):
            assert await bot.stdout.readline() == b"streaming\n"
        await asyncio.sleep(rng.uniform(0.05, 1.5))  # a random moment: connecting, backfilling or streaming
        bot.send_signal(signal.SIGKILL)
        await bot.wait()
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    ids = [int(row[1]) for row in rows]
    assert len(ids) > 5_000  # the runs together really streamed
    assert ids == list(range(ids[0], ids[0] + len(ids))), "an id missing, repeated or out of order"
    assert set(ids) <= set(sim.played_ids("BTCUSDT"))
    sources = Counter(row[5] for row in rows)
    assert sources["backfill"] > 0 and sources["live"] > 0  # restarts were backfilled, then joined live
    assert sources["replay"] > 0  # some kills came before the checkpoint caught up: their repeats were tagged


@pytest.mark.default_loop  # the streams are child processes on their own default loop; the parent only serves
async def test_sigkills_at_2000_trades_per_second_tag_about_an_interval_each(orderflow_sim_factory, tmp_path) -> None:
    """kill -9 six times at 2,000 trades/s: every repeat is tagged replay, and the tags are about an interval's worth
    per crash (bench/kills.py is the 20-kill measure: tags at most 3x the real repeats)."""
    rate, interval, kills = 2000, 0.5, 6
    sim = await orderflow_sim_factory(pace=Pace(rate=rate), loop=True)
    rng = random.Random(int(os.environ.get("ORDERFLOW_TEST_SEED", "26")))
    out = tmp_path / "deliveries.csv"
    command = [sys.executable, str(KILLS), "--child", "--url", sim.ws_url, "--checkpoint",
               str(tmp_path / "checkpoint.json"), "--out", str(out), "--interval", str(interval)]
    for run in range(kills + 1):
        child = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        assert child.stdout is not None
        async with asyncio.timeout(30 * TIMEOUT_FACTOR):
            assert await child.stdout.readline() == b"streaming\n"
        if run < kills:
            await asyncio.sleep(rng.uniform(0.3, 2.5))  # a random moment: connecting, backfilling or streaming
            child.send_signal(signal.SIGKILL)
        else:  # the last run catches up, then stops cleanly
            await asyncio.sleep(2.0)
            child.send_signal(signal.SIGTERM)
        await child.wait()
    seen: set[int] = set()
    repeats = untagged = tags = 0
    for line in out.read_text().splitlines():
        text, source = line.split(",")
        trade_id = int(text)
        tags += source == "replay"
        if trade_id in seen:
            repeats += 1
            untagged += source != "replay"
        seen.add(trade_id)
    assert len(seen) > 5_000 and seen == set(range(min(seen), max(seen) + 1)), "an id was lost"
    assert untagged == 0, f"{untagged} of {repeats} repeats were not tagged replay"
    # A crash tags what its lease covers: about an interval's worth (the old leases ran on for many).
    assert tags <= kills * 2 * rate * interval, f"{tags} replay tags for {repeats} real repeats after {kills} kills"


async def test_a_checkpoint_that_cannot_be_written_is_reported_and_trades_go_on(orderflow_sim_factory, tmp_path):
    """Every write fails (the temporary file's name is too long): on_error says so, and no trade is held back."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    events = Events()
    async with make_flow(sim, events, sequencing=Sequencing(checkpoint_path=str(tmp_path / ("c" * 250)),
                                                            checkpoint_interval=0.1)):
        await events.until(lambda e: len(e.trades) >= 400, 10)
    errors = [c["error"] for c in events.of("on_error") if c["where"] == "checkpoint"]
    assert errors and all(isinstance(e, CheckpointError) and "cannot be written" in str(e) for e in errors)
    assert events.ids() == list(range(FIRST, FIRST + len(events.trades)))


async def test_a_final_write_that_fails_is_reported_on_the_loop_thread(tmp_path: Path) -> None:
    """The final checkpoint write runs on the worker thread; its failure reaches on_failure (hooks) on the loop's."""
    checkpoint = Checkpoint(tmp_path / ("c" * 250), market="spot")  # the temporary file's name is too long
    checkpoint.load(("BTCUSDT",))
    checkpoint.delivered("BTCUSDT", 5)
    reported: list[tuple[int, CheckpointError]] = []
    checkpointer = Checkpointer(checkpoint, {}, lambda exc: reported.append((threading.get_ident(), exc)))
    await checkpointer.close()
    assert len(reported) == 1 and "cannot be written" in str(reported[0][1])
    assert reported[0][0] == threading.get_ident()  # the old code reported from the worker thread


def test_a_second_crash_still_tags_what_the_first_run_sent(tmp_path: Path) -> None:
    """Run 1 may have sent up to its lease; run 2 crashes (or stops) before passing it: run 3 still tags all of it."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": "orderflow-checkpoint", "version": 1, "market": "spot",
                                "symbols": {"BTCUSDT": {"last_id": 100, "lease": 500}}}))
    second = Checkpoint(path, market="spot")
    assert second.load(("BTCUSDT",))["BTCUSDT"].lease == 500
    assert second.check_at("BTCUSDT") == 100  # its first delivery starts a fresh write
    assert second.lease("BTCUSDT") == 500  # up to the lease on disk, replays need no new write
    second.delivered("BTCUSDT", 101)
    second.write()
    assert json.loads(path.read_text())["symbols"]["BTCUSDT"]["lease"] >= 500
    second.delivered("BTCUSDT", 102)
    second.write(final=True)
    assert json.loads(path.read_text())["symbols"]["BTCUSDT"] == {"last_id": 102, "lease": 500}


def test_an_older_write_never_replaces_a_newer_one(tmp_path: Path) -> None:
    """A background write that finishes after a newer synchronous one changes neither the file nor the leases."""
    path = tmp_path / "c.json"
    checkpoint = Checkpoint(path, market="spot")
    checkpoint.write(upcoming={"BTCUSDT": 1})
    checkpoint.delivered("BTCUSDT", 10)
    older = checkpoint.prepare()
    checkpoint.delivered("BTCUSDT", 40)
    checkpoint.write(upcoming={"BTCUSDT": 41})  # the lease ran out while the older write was under way
    newer = json.loads(path.read_text())
    checkpoint.persist(older)
    checkpoint.commit(older)
    assert json.loads(path.read_text()) == newer
    assert checkpoint.lease("BTCUSDT") == newer["symbols"]["BTCUSDT"]["lease"] >= 41



async def test_no_trade_is_delivered_past_the_lease_on_disk_while_a_slow_write_runs(tmp_path: Path) -> None:
    """A burst while a slow background fsync is under way: at every delivery the file on disk covers the id."""
    path = tmp_path / "c.json"
    checkpoint = Checkpoint(path, market="spot", interval=1.0)
    checkpoint.load(("BTCUSDT",))
    persist = checkpoint.persist

    def slow_persist(pending):  # a disk that takes 50 ms per fsync
        time.sleep(0.05)
        persist(pending)

    checkpoint.persist = slow_persist  # type: ignore[method-assign]
    checkpointer = Checkpointer(checkpoint, {}, lambda exc: pytest.fail(str(exc)))
    delivered: list[int] = []

    def deliver(trade: Trade) -> None:  # the sink: what is on disk when a trade goes out
        assert json.loads(path.read_text())["symbols"]["BTCUSDT"]["lease"] >= trade.id
        delivered.append(trade.id)

    pipeline = Pipeline(["BTCUSDT"], "spot", CallSink(deliver, discard, discard), flow=Flow(enabled=False),
                        checkpointer=checkpointer)
    driver = Driver(pipeline)  # carries out the writes the pipeline asks for, as the stream's does
    trade_id = 1_000
    for burst in (1, 100, 1000, 5000):  # quiet, then bursts (a backfill page): each lease outgrows the last
        for _ in range(burst):
            driver.deliver_as_is(Trade("BTCUSDT", trade_id, Decimal(1), Decimal(1), trade_id, trade_id, 0, "buy"),
                                 time.monotonic())
            trade_id += 1
        await asyncio.sleep(0.3)  # the background write finishes between bursts
    await checkpointer.close()
    assert delivered == list(range(1_000, trade_id))  # every one, in order: those that waited for a write too
    assert checkpoint.sync_writes >= 1  # the burst outran the background write and waited for one


def test_a_checkpoint_is_locked_against_a_second_stream(tmp_path: Path) -> None:
    """Two streams on one checkpoint file would overwrite each other: the second is refused at start."""
    path = tmp_path / "checkpoint.json"
    first = OrderFlow(["BTCUSDT"], sequencing=Sequencing(checkpoint_path=str(path)))
    with pytest.raises(CheckpointError, match="in use by another stream"):
        OrderFlow(["BTCUSDT"], sequencing=Sequencing(checkpoint_path=str(path)))
    del first


def test_a_write_interrupted_by_a_kill_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    """A temporary file left by a kill -9 in the middle of a write is removed at the next start."""
    path = tmp_path / "checkpoint.json"
    (tmp_path / ".checkpoint.json.abc123.tmp").write_text("{half")
    Checkpoint(path, market="spot").load(("BTCUSDT",))
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


async def test_a_checkpoint_ahead_of_the_live_stream_is_reported_not_waited_on(orderflow_sim_factory, tmp_path):
    """A stored id beyond anything live (another feed's checkpoint) is an error naming both ids; trades flow."""
    sim = await orderflow_sim_factory(pace=Pace(rate=1000))
    path = tmp_path / "checkpoint.json"
    ahead = FIRST + 10_000_000
    path.write_text(json.dumps({"format": "orderflow-checkpoint", "version": 1, "market": "spot",
                                "symbols": {"BTCUSDT": {"last_id": ahead, "lease": ahead + 40}}}))
    events = Events()
    async with make_flow(sim, events, sequencing=Sequencing(checkpoint_path=str(path))):
        await events.until(lambda e: len(e.trades) >= 100, 10)
    errors = [c["error"] for c in events.of("on_error") if c["where"] == "checkpoint"]
    assert len(errors) == 1 and f"up to id {ahead}" in str(errors[0]) and "behind it" in str(errors[0])
    ids = events.ids()
    assert ids == list(range(ids[0], ids[0] + len(ids))) and {t.source for t in events.trades} == {"live"}
    assert json.loads(path.read_text())["symbols"]["BTCUSDT"]["last_id"] == ids[-1]


async def test_a_trade_past_a_resumed_lease_stays_covered_by_the_background_write_after_it(tmp_path: Path) -> None:
    """Simulation seed 1738: resumed at last_id 533 with lease 538, ids 534..539 given up, then 540 waits for a write
    whose lease covers it and goes out. The background write that check asks for next must not put a lease below 540
    on disk (it did: a kill then repeated 540 without ``source="replay"``)."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": "orderflow-checkpoint", "version": 1, "market": "spot", "interval_s": 1.0,
                                "symbols": {"SOLUSDT": {"last_id": 533, "lease": 538}}}))
    checkpoint = Checkpoint(path, market="spot", interval=1.0)
    checkpointer = Checkpointer(checkpoint, checkpoint.load(("SOLUSDT",)), lambda exc: pytest.fail(str(exc)))
    delivered: list[int] = []
    pipeline = Pipeline(["SOLUSDT"], "spot", CallSink(lambda trade: delivered.append(trade.id), discard, discard),
                        flow=Flow(enabled=False), checkpointer=checkpointer)
    driver = Driver(pipeline)
    driver.deliver_as_is(Trade("SOLUSDT", 540, Decimal(1), Decimal(1), 540, 540, 0, "buy"), time.monotonic())
    assert delivered == [540]
    deadline = time.monotonic() + 5 * TIMEOUT_FACTOR
    while checkpoint.writes < 2 and time.monotonic() < deadline:  # the sync write, then the background one
        await asyncio.sleep(0.01)
    assert checkpoint.writes == 2
    on_disk = json.loads(path.read_text())["symbols"]["SOLUSDT"]
    assert on_disk["lease"] >= 540 or on_disk["last_id"] >= 540, on_disk
    await checkpointer.close()
