"""`replay()`: a tape straight into the pipeline, with no socket, no simulator and no REST."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from orderflow_plugin import Limits, OrderFlow, PluginManager, Reporting, Sequencing, bundled_tape, load_tape
from orderflow_plugin.replay import BATCH, replay
from orderflow_plugin.tape import Tape

from .flowhelpers import Events
from .realtapes import SHARED


def _flow(events: Events) -> OrderFlow:
    manager = PluginManager()
    manager.register(events, name="events")
    # The default rest_url is Binance's: a replay must never use it, even for a hole.
    return OrderFlow(["BTCUSDT"], plugins=manager)


async def test_replay_delivers_the_tape_in_order_with_metrics() -> None:
    """Every row is delivered once, in id order, through the engine: bars and a final snapshot come out."""
    tape = bundled_tape()
    events = Events()
    result = await replay(_flow(events), tape)
    assert result.frames == len(tape.rows) and result.per_second > 0
    assert events.ids() == [row.id for row in tape.rows]
    kinds = {m.kind for m in events.metrics}
    assert "bar" in kinds and "snapshot" in kinds
    assert [c["summary"]["trades"] for c in events.of("on_shutdown")] == [len(tape.rows)]


async def test_a_hole_in_the_tape_is_reported_as_a_gap_and_never_fetched() -> None:
    """Rows missing from a tape are reported as an exact gap; nothing asks REST; the rest is delivered."""
    tape = bundled_tape()
    rows = list(tape.rows[:300])
    del rows[100:110]
    events = Events()
    flow = _flow(events)
    await replay(flow, dataclasses.replace(tape, rows=rows))
    assert flow.backfiller is None
    assert events.ids() == [row.id for row in rows]
    missing = tape.rows[100].id, tape.rows[109].id
    assert [(g["first"], g["last"]) for g in events.of("on_gap")] == [missing]
    errors = [c["error"] for c in events.of("on_error") if c["where"] == "sequence"]
    assert len(errors) == 1 and f"{missing[0]}..{missing[1]}" in str(errors[0]) and "backfill is off" in str(errors[0])
    assert events.of("on_backfill") == []


SHARED_TAPES = ["polysim_spot_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl",
                "polysim_perp_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl"]


def _holed(tape: Tape) -> Tape:
    """The bundled tape with two holes and two trades swapped: held, paused, given up and reordered mid-replay."""
    rows = list(tape.rows)
    rows[2000], rows[2001] = rows[2001], rows[2000]
    del rows[3000:3004]
    del rows[1000:1010]
    return dataclasses.replace(tape, rows=rows)


def _tapes() -> list[tuple[str, Callable[[], Tape]]]:
    """(id, a function reading the tape): the bundled slice, it holed, and the shared real tapes present."""
    tapes: list[tuple[str, Callable[[], Tape]]] = [("bundled", bundled_tape), ("bundled-holed", lambda: _holed(
        bundled_tape()))]
    tapes += [(name.split("_ws")[0], lambda name=name: load_tape(SHARED / name)) for name in SHARED_TAPES
              if (SHARED / name).exists()]
    return tapes


async def _replayed(tape: Tape, batch: int, window: float = 60) -> tuple[Events, OrderFlow]:
    """``tape`` replayed unpaced, ``batch`` trades an input, a hole waiting ``window`` s: what hooks saw, the flow."""
    events = Events()
    manager = PluginManager()
    manager.register(events, name="events")
    # Holes wait for trades, not for the wall clock: given up when 40 trades wait behind one (a pause at 20),
    # the same in both runs however fast the machine replays.
    # A slow-hook report depends on the machine's load, not on the batch: the budget is out of reach.
    flow = OrderFlow([tape.symbol], market=tape.market, plugins=manager, limits=Limits(max_buffered_trades=40),
                     sequencing=Sequencing(reorder_window=window), reporting=Reporting(slow_hook_ms=60_000))
    result = await replay(flow, tape, batch=batch)
    assert result.frames == len(tape.rows)
    return events, flow


def _delivered(events: Events) -> dict[str, Any]:
    """Everything a replay sends out that does not depend on the wall clock (periodic snapshots do: the last one,
    the replay's final state, does not)."""
    metrics = [m for m in events.metrics if m.kind != "snapshot"]
    snapshots = [m for m in events.metrics if m.kind == "snapshot"]
    return {"trades": events.trades, "metrics": metrics, "final": snapshots[-1:],
            "gaps": events.of("on_gap"), "errors": [(c["where"], str(c["error"])) for c in events.of("on_error")],
            "backfills": events.of("on_backfill"), "summary": [c["summary"]["trades"] for c in events.of("on_shutdown")]}


@pytest.mark.parametrize("name,make", _tapes(), ids=[name for name, _ in _tapes()])
async def test_a_batched_replay_delivers_what_a_trade_by_trade_replay_does(name: str,
                                                                          make: Callable[[], Tape]) -> None:
    """Trades taken ``batch`` at a time give the same trades, bars, whales, signals, gaps and errors, in the same
    order, as each trade in its own input: on the bundled tape, the same with holes and a swap, and real tapes."""
    tape = make()
    one, _ = await _replayed(tape, 1)
    batched, _ = await _replayed(tape, BATCH)
    expected, got = _delivered(one), _delivered(batched)
    assert sorted(t.id for t in expected["trades"]) == sorted(row.id for row in tape.rows)  # every row, once
    assert any(m.kind == "bar" for m in expected["metrics"]) and expected["final"]
    if name == "bundled-holed":  # both holes given up with 40 trades behind each
        assert [where for where, _ in expected["errors"]] == ["sequence", "sequence"]
    for key in expected:
        assert got[key] == expected[key], key


async def test_a_batch_ends_at_a_hole_due_at_once_as_a_trade_by_trade_replay_does() -> None:
    """With no reorder window a hole is due the instant it opens: a batch must stop there (its wake-up acted on
    before the next trade), so the swapped pair is given up as it is trade by trade, not filled by the batch."""
    tape = _holed(bundled_tape())
    one, _ = await _replayed(tape, 1, window=0)
    batched, _ = await _replayed(tape, BATCH, window=0)
    expected, got = _delivered(one), _delivered(batched)
    assert len(expected["errors"]) > 2  # the swap's hole is given up too, not only the two real ones
    for key in expected:
        assert got[key] == expected[key], key


@pytest.mark.parametrize("batch", [0, -5, 2.5], ids=["zero", "negative", "fraction"])
async def test_a_batch_below_one_trade_is_a_one_line_error(batch: Any) -> None:
    """``replay(batch=...)`` refuses a batch that is not a whole number >= 1, naming the value, before any trade."""
    events = Events()
    with pytest.raises(ValueError, match=rf"batch must be a whole number of trades >= 1, not {batch!r}"):
        await replay(_flow(events), bundled_tape(), batch=batch)
    assert events.trades == []
