"""`replay()`: a tape straight into the pipeline, with no socket, no simulator and no REST."""

from __future__ import annotations

import dataclasses

from orderflow_plugin import OrderFlow, PluginManager, bundled_tape
from orderflow_plugin.replay import replay

from .flowhelpers import Events


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
