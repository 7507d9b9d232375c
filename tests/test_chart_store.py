"""`orderflow chart --store DIR`: the past from a part 16 store, then live, in a real browser (Debian's chromium)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from orderflow_plugin import Flow
from orderflow_plugin.chart.history import store_bars
from orderflow_plugin.history.bars import compute_bars
from orderflow_plugin.history.store import Store, trades_table
from orderflow_plugin.sim import Pace, Simulator
from orderflow_plugin.tape import Tape, bundled_tape

from .flowhelpers import TIMEOUT_FACTOR
from .test_chart import PAGE_BARS, chart_bars, charted, expected, until
from .test_cli_stream import start

pytestmark = pytest.mark.default_loop
STORED = 2500  # the bundled tape's first trades go in the store; the stream goes on live from the next one
CHART_FLOW = Flow(windows=("1m",), footprint_tick="10")


def make_store(root: Path, *, with_bars: bool) -> list:
    """A store of the bundled tape's first STORED trades (one UTC day), with its 1 m bars when ``with_bars``;
    returns the store's bars (computed from its trades by the history engine, as `orderflow history` does)."""
    tape = bundled_tape()
    trades = list(tape.trades())[:STORED]
    store = Store(root, "spot", "BTCUSDT")
    day = datetime.fromtimestamp(trades[0].time / 1000, UTC).date()
    store.write_day(day, trades_table(trades, "archive"), "missing")
    bars, _count = compute_bars(store, [day], CHART_FLOW)
    if with_bars:
        store.write_bars("1m", day, bars["1m"])
    return bars["1m"]


@pytest.mark.parametrize("with_bars", [True, False], ids=["bars", "trades"])
def test_the_store_gives_its_bars_or_computes_them_from_its_trades(tmp_path: Path, with_bars: bool) -> None:
    """store_bars reads bars/1m when the store has them, else computes the same bars from its trades."""
    made = make_store(tmp_path, with_bars=with_bars)
    bars, origin = store_bars(tmp_path, "spot", "BTCUSDT", "1m", CHART_FLOW)
    assert origin == ("bars" if with_bars else "trades")
    assert [expected(b) for b in bars] == [expected(b) for b in made] and len(bars) >= 5


def test_stored_bars_of_another_tick_are_computed_again(tmp_path: Path) -> None:
    """Bars written with a 1-wide footprint do not serve a 10-wide chart: it computes them from the trades."""
    make_store(tmp_path, with_bars=False)
    store = Store(tmp_path, "spot", "BTCUSDT")
    day = store.days()[0]
    other, _count = compute_bars(store, [day], Flow(windows=("1m",), footprint_tick="1"))
    store.write_bars("1m", day, other["1m"])
    bars, origin = store_bars(tmp_path, "spot", "BTCUSDT", "1m", CHART_FLOW)
    assert origin == "trades" and {b.footprint.tick for b in bars} == {Decimal(10)}


@pytest.mark.parametrize("with_bars", [True, False], ids=["bars", "trades"])
async def test_page_shows_the_stores_past_then_goes_on_live(tmp_path: Path, with_bars: bool) -> None:
    """The page holds the store's bars exactly, then the live ones; scrolling back shows the store's oldest bar."""
    stored = make_store(tmp_path, with_bars=with_bars)
    history, _origin = store_bars(tmp_path, "spot", "BTCUSDT", "1m", CHART_FLOW)
    tape = bundled_tape()
    live = Tape(tape.symbol, tape.market, tape.rows[STORED:], "the bundled tape after the stored trades")
    async with Simulator(live, pace=Pace(rate=2000), record_ids=False) as sim:
        async with charted(sim, history=history) as (flow, feed, metrics, page):
            last = live.rows[-1].id

            async def delivered() -> bool:
                return flow.health()["symbols"]["BTCUSDT"]["last_id"] == last

            await until(delivered, 20, "the live tape delivered")

            async def caught_up() -> bool:
                return await page.evaluate("() => window.footprint.seq") == feed.seq

            await until(caught_up, 5, "the page caught up")
            page_bars = await page.evaluate(PAGE_BARS)
            newest = await page.evaluate("() => window.footprint.shown")
            box = await page.locator("#chart").bounding_box()
            await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            await page.keyboard.down("Shift")
            for _ in range(len(page_bars)):  # a screenful back per notch: far more than enough
                await page.mouse.wheel(0, -100)
            await page.keyboard.up("Shift")

            async def scrolled() -> bool:
                shown = await page.evaluate("() => window.footprint.shown")
                return bool(shown) and shown[0] == stored[0].start

            await until(scrolled, 5, "the page scrolled back to the store's first bar")
    live_bars = chart_bars(metrics)
    first_live = live_bars[0].start
    assert first_live == stored[-1].start  # the store ends inside a minute the stream goes on in
    past = [b for b in page_bars if b["start"] < first_live]
    assert past == [expected(b) for b in stored if b.start < first_live] and len(past) >= 5
    assert page_bars[len(past):] == [expected(b) for b in live_bars]  # the live column replaces the store's last
    assert stored[0].start not in newest  # the oldest was off screen before the scroll


async def test_orderflow_chart_store_serves_the_stores_bars(tmp_path: Path) -> None:
    """`orderflow chart --store DIR --demo`: says where the past came from and serves the store's bars exactly."""
    stored = make_store(tmp_path / "store", with_bars=True)
    process = await start("chart", "--store", str(tmp_path / "store"), "--demo", "--port", "0",
                          "--duration", str(20 * TIMEOUT_FACTOR))
    lines: list[str] = []
    try:
        async with asyncio.timeout(20 * TIMEOUT_FACTOR):
            while not (lines and lines[-1].startswith("footprint chart of")):
                line = (await process.stdout.readline()).decode()
                assert line, (await process.stderr.read()).decode()[-2000:]
                lines.append(line.strip())
        url = re.search(r"http://127\.0\.0\.1:\d+/", lines[-1]).group(0)
        async with httpx.AsyncClient() as client:
            state = (await client.get(url + "api/state")).json()
    finally:
        process.terminate()
        await process.wait()
    assert lines[0] == f"{len(stored)} BTCUSDT 1m bars from the store's bars in {tmp_path / 'store'}, then live"
    # at speed 1 the demo's first minute is still open: every closed bar on the page is the store's
    assert [{k: b[k] for k in ("start", "delta", "poc", "levels")} for b in state["bars"]] == \
        [expected(b) for b in stored]


def test_a_store_that_is_not_a_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--store naming no folder is a one-line error, exit 2, before anything starts."""
    from orderflow_plugin.cli import main

    assert main(["chart", "--store", str(tmp_path / "nothing"), "--demo"]) == 2
    err = capsys.readouterr().err
    assert "--store" in err and err.count("\n") == 1


def test_an_empty_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store with no bars or trades of the symbol is a one-line error naming the folder, exit 2."""
    from orderflow_plugin.cli import main

    assert main(["chart", "--store", str(tmp_path), "--demo", "--port", "0"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("orderflow chart:")]
    assert errors == [f"orderflow chart: no 1m bars or trades of BTCUSDT in {tmp_path / 'spot' / 'BTCUSDT'}"]
