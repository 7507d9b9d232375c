"""The Driver: every input into the pipeline, then its queued actions carried out, with no event loop needed."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from orderflow_plugin.checkpoint import Checkpoint
from orderflow_plugin.checkpointer import Checkpointer
from orderflow_plugin.driver import CallSink, Driver, discard
from orderflow_plugin.models import Trade
from orderflow_plugin.options import Flow, Limits, Sequencing
from orderflow_plugin.pipeline import Pipeline

BTC = "BTCUSDT"


def frame(agg_id: int) -> bytes:
    """One Binance combined-stream aggTrade frame."""
    return (f'{{"stream":"btcusdt@aggTrade","data":{{"e":"aggTrade","E":1,"s":"{BTC}","a":{agg_id},'
            f'"p":"100.0","q":"1.0","f":{agg_id},"l":{agg_id},"T":{agg_id},"m":false}}}}').encode()


class Connection:
    """What the driver addresses on a connection, counted."""

    def __init__(self) -> None:
        self.first_trades = 0

    def first_trade(self) -> None:
        self.first_trades += 1

    def subscribed(self, reply_id: int | None, error: Any) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


def test_without_rest_a_backfill_ends_in_a_report_and_the_stream_goes_on() -> None:
    """A Backfill with no backfiller to run it is answered at once as failed: the hole is reported, not left open."""
    trades: list[Trade] = []
    errors: list[tuple[str, str]] = []
    sink = CallSink(trades.append, discard, lambda hook, **kw: errors.append((kw["where"], str(kw["error"])))
                    if hook == "on_error" else None)
    pipeline = Pipeline([BTC], "spot", sink, sequencing=Sequencing(reorder_window=0.5), flow=Flow(enabled=False))
    driver = Driver(pipeline)
    connection = Connection()
    for agg_id in (1, 2, 5, 6):
        driver.receive(connection, frame(agg_id), 1.0)
    assert driver.due == 1.5  # the hole's reorder window, from its WakeAt
    driver.tick(1.5)
    assert [t.id for t in trades] == [1, 2, 5, 6] and not pipeline.busy(BTC)
    assert [where for where, _ in errors] == ["backfill", "sequence"]
    assert "ids 3..4 cannot be fetched: no REST here" in errors[0][1] and "3..4 (2) were not delivered" in errors[1][1]
    assert connection.first_trades == 1 and not pipeline.outbox and driver.due == float("inf")


def test_checkpoint_writes_need_no_event_loop_and_every_delivery_is_covered_on_disk(tmp_path: Path) -> None:
    """With no loop running, the driver writes each checkpoint the pipeline asks for on this thread; a trade past
    the lease on disk waits for the write, so the file always covers what was delivered."""
    path = tmp_path / "c.json"
    clock = [0.0]  # the checkpoint's clock is the pipeline's: the leases do not depend on the machine's speed
    checkpoint = Checkpoint(path, market="spot", interval=1.0, clock=lambda: clock[0])
    checkpoint.load((BTC,))
    covered: list[bool] = []

    def deliver(trade: Trade) -> None:
        covered.append(json.loads(path.read_text())["symbols"][BTC]["lease"] >= trade.id)

    pipeline = Pipeline([BTC], "spot", CallSink(deliver, discard, discard), flow=Flow(enabled=False),
                        checkpointer=Checkpointer(checkpoint, {}, lambda exc: None))
    driver = Driver(pipeline)
    connection = Connection()
    for agg_id in range(1, 2001):
        clock[0] = agg_id / 1000
        driver.receive(connection, frame(agg_id), clock[0])
    assert covered == [True] * 2000 and checkpoint.sync_writes >= 1 and checkpoint.writes >= 2
    assert json.loads(path.read_text())["symbols"][BTC]["last_id"] > 1  # written again as trades went on
    driver.deliver_as_is(Trade(BTC, 2001, Decimal(1), Decimal(1), 2001, 2001, 0, "buy"), 3.0)
    assert covered[-1] is True and len(covered) == 2001
    checkpoint.close()


class Pausing(Connection):
    """A connection that counts its pauses."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses = 0

    def pause(self) -> None:
        self.pauses += 1


def test_a_read_is_taken_up_to_the_frame_that_pauses_and_its_actions_carried_out_after_it() -> None:
    """receive_read takes a read's frames until one pauses the connection: the pause lands before the next
    frame (the connection keeps the rest), and what the read queued is carried out once it is taken."""
    trades: list[Trade] = []
    pipeline = Pipeline([BTC], "spot", CallSink(trades.append, discard, discard), flow=Flow(enabled=False),
                        sequencing=Sequencing(reorder_window=5.0), limits=Limits(max_buffered_trades=8))
    driver = Driver(pipeline)
    connection = Pausing()
    read = [frame(agg_id) for agg_id in (1, 2, 10, 11, 12, 13, 14, 15, 16)]  # a hole at 3..9: 4 held pause
    assert driver.receive_read(connection, read, 1.0) == 6  # 10..13 held: the pause came before 14
    assert connection.pauses == 1 and connection.first_trades == 1 and not pipeline.outbox
    assert [t.id for t in trades] == [1, 2]
    # Not paused after all (its transport was closing): a connection hands the rest on, one frame at a time.
    assert driver.receive_read(connection, read[6:], 1.0) == 1 and connection.pauses == 1
