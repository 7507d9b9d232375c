"""`orderflow chart` in a real browser: Debian's chromium driven by Playwright, on the simulator's real tape."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from playwright import async_api as playwright_api

from orderflow_plugin import Flow, Reconnect
from orderflow_plugin import signals as blinker_signals
from orderflow_plugin.chart import ChartFeed, serve
from orderflow_plugin.models import format_decimal
from orderflow_plugin.sim import Fault, Pace, Scenario, Simulator
from orderflow_plugin.stream import OrderFlow
from orderflow_plugin.tape import bundled_tape

from .flowhelpers import LIMITS, TIMEOUT_FACTOR

CHROMIUM = os.environ.get("ORDERFLOW_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.default_loop  # one browser run per test is enough: the page does not see the loop


async def until(check, timeout: float, what: str) -> None:
    """Wait for ``check()`` to be true, polling, for ``timeout`` s (scaled)."""
    async with asyncio.timeout(timeout * TIMEOUT_FACTOR):
        while not await check():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def charted(sim: Simulator, history: list | None = None,
                  **flow_kwargs) -> AsyncIterator[tuple[OrderFlow, ChartFeed, list, object]]:
    """A stream on ``sim``, its chart served on a free port (``history``'s bars before the live ones), and a
    headless chromium page showing it."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's (or set ORDERFLOW_CHROMIUM)")
    flow = OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, limits=LIMITS,
                     reconnect=Reconnect(backoff_initial=0.1, backoff_max=0.5),
                     flow=Flow(windows=("1s", "1m"), footprint_tick="10"), **flow_kwargs)
    metrics: list = []  # every metric; bars() picks the chart's

    def on_metric(sender, metric) -> None:
        metrics.append(metric)

    blinker_signals.metric.connect(on_metric, sender=flow)
    feed = ChartFeed(flow, "BTCUSDT", "1m")
    if history:
        feed.add_history(history)
    started = asyncio.Event()
    async with flow:
        server = asyncio.ensure_future(serve(feed, port=0, started=started))
        poller = asyncio.ensure_future(feed.run())
        await asyncio.wait_for(started.wait(), 10 * TIMEOUT_FACTOR)
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = await browser.new_page(viewport={"width": 1400, "height": 800})
            await page.goto(f"http://127.0.0.1:{feed.port}/")
            try:
                yield flow, feed, metrics, page
            finally:
                await browser.close()
                poller.cancel()
                server.cancel()
                await asyncio.gather(poller, server, return_exceptions=True)
                feed.close()
                blinker_signals.metric.disconnect(on_metric, sender=flow)


def chart_bars(metrics: list) -> list:
    """The closed 1 m bars among ``metrics``, a revised one in place of the bar it revises."""
    return list({m.start: m for m in metrics if m.kind == "bar" and m.window == "1m"}.values())


def expected(bar) -> dict:
    """What the page must hold for an engine bar: its levels, delta and POC as exact strings."""
    fp = bar.footprint
    return {"start": bar.start, "delta": format_decimal(bar.delta), "poc": format_decimal(fp.poc),
            "levels": [[format_decimal(p), format_decimal(b), format_decimal(s)] for p, b, s in fp.levels]}


PAGE_BARS = """() => [...window.footprint.bars.values()].map(b => ({start: b.start, delta: b.delta, poc: b.poc,
    levels: b.levels}))"""


async def test_page_draws_the_engines_bars_and_keeps_up_at_2000_trades_per_second() -> None:
    """At 2,000 trades/s the page holds every closed 1 m bar exactly as the engine closed it, with no backlog."""
    tape = bundled_tape()
    async with Simulator(tape, pace=Pace(rate=2000), record_ids=False) as sim:
        async with charted(sim) as (flow, feed, metrics, page):
            backlog: list[int] = []
            last = tape.rows[-1].id

            async def delivered() -> bool:
                backlog.append(feed.health()["backlog"])
                return flow.health()["symbols"]["BTCUSDT"]["last_id"] == last

            await until(delivered, 20, "the tape delivered")  # 5,000 trades at 2,000/s: 2.5 s
            feed.poll_open()

            async def caught_up() -> bool:
                return await page.evaluate("() => window.footprint.seq") == feed.seq

            await until(caught_up, 5, "the page caught up")
            page_bars = await page.evaluate(PAGE_BARS)
            state = await page.evaluate("() => ({hellos: window.footprint.hellos, state: window.footprint.state,"
                                        " open: window.footprint.open && window.footprint.open.last_id})")
            naked = await page.evaluate("() => window.footprint.naked.map(n => [n.source, n.start, n.price])")
            whales = await page.evaluate("() => window.footprint.whales.map(w => [w.time, w.price, w.qty])")
            listed = flow.pipeline.signals["BTCUSDT"].naked_pocs
    bars = chart_bars(metrics)
    assert len(bars) >= 10  # about 11 minutes of trade time
    assert page_bars == [expected(b) for b in bars]
    assert state == {"hellos": 1, "state": "live", "open": last}  # never dropped and started over; the open bar live
    assert max(backlog) < feed.queue_size // 4 and feed.dropped_pages == 0
    # naked POCs as the stream's signals list them (1 m bars here), whales as the engine found them
    assert sorted(map(tuple, naked)) == sorted((n.source, n.start, format_decimal(n.price)) for n in listed)
    whale_metrics = [m for m in metrics if m.kind == "whale"]
    assert naked and whale_metrics
    assert [tuple(w) for w in whales] == [(m.trade.time, format_decimal(m.trade.price), format_decimal(m.trade.qty))
                                          for m in whale_metrics]


async def test_page_shows_a_feed_reconnect_a_backfill_and_its_own_reconnect() -> None:
    """A cut connection and a skipped stretch show as reconnects and backfills; a page reconnect is backfilled."""
    tape = bundled_tape()
    scenario = Scenario([[Fault("skip_ids", after=300, count=400), Fault("close_after", after=2000)], []])
    async with Simulator(tape, pace=Pace(rate=2000), scenario=scenario, record_ids=False) as sim:
        async with charted(sim) as (flow, _, metrics, page):
            last = tape.rows[-1].id

            async def delivered() -> bool:
                return flow.health()["symbols"]["BTCUSDT"]["last_id"] == last

            await until(delivered, 30, "the tape delivered")

            async def health_shown() -> bool:
                text = await page.text_content("#feed")
                return "| reconnects 0 |" not in text and "| backfills 0 |" not in text

            await until(health_shown, 5, "the header shows the reconnect and the backfill")
            await page.evaluate("() => window.footprint.socket.close()")

            async def back() -> bool:
                return await page.evaluate("() => window.footprint.hellos === 2 && window.footprint.state === 'live'")

            await until(back, 10, "the page reconnected")
            page_bars = await page.evaluate(PAGE_BARS)
            text = await page.text_content("#feed")
    assert "page reconnects 1" in text
    assert page_bars == [expected(b) for b in chart_bars(metrics)]  # the backfill on reconnect


async def test_screenshot_of_the_bundled_tape(tmp_path: Path) -> None:
    """The page on the bundled real tape draws a footprint (the screenshot docs/chart.md shows, when asked for)."""
    tape = bundled_tape()
    async with Simulator(tape, pace=Pace(rate=2000), record_ids=False) as sim:
        async with charted(sim) as (_, _, _, page):
            async def enough() -> bool:
                return await page.evaluate("() => window.footprint.bars.size") >= 10

            await until(enough, 20, "ten bars")
            await page.evaluate("() => window.footprint.redraw()")
            out = Path(os.environ.get("FOOTPRINT_SCREENSHOT", tmp_path / "chart.png"))
            await page.screenshot(path=str(out))
            # the canvas has drawn something besides the background
            colours = await page.evaluate("""() => { const c = document.getElementById('chart');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const seen = new Set();
                for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] + ',' + d[i+1] + ',' + d[i+2]); return seen.size; }""")
    assert out.stat().st_size > 10_000 and colours > 20


def test_a_host_other_than_loopback_needs_expose(capsys) -> None:
    """--host other than 127.0.0.1 is refused in one line unless --expose is given."""
    from orderflow_plugin.cli import main

    assert main(["chart", "--demo", "--host", "127.0.0.2", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add --expose" in err


def test_expose_serves_with_a_warning(capsys) -> None:
    """With --expose the chart serves on the other address and warns that anyone reaching it sees the chart."""
    from orderflow_plugin.cli import main

    assert main(["chart", "--demo", "--speed", "50", "--host", "127.0.0.2", "--expose", "--port", "0",
                 "--duration", "1"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: serving on 127.0.0.2" in captured.err
    assert "footprint chart of BTCUSDT 1m on http://127.0.0.2:" in captured.out


@pytest.mark.parametrize("args,words", [
    (["--window", "7x"], "window '7x'"),
    (["--tick", "-1"], "--tick -1 must be > 0"),
    (["--tick", "abc"], "--tick abc must be > 0"),
], ids=["window", "tick", "tick-text"])
def test_bad_chart_options_are_one_line(capsys, args: list[str], words: str) -> None:
    """A bad --window or --tick is one clear line and exit code 2."""
    from orderflow_plugin.cli import main

    assert main(["chart", "--demo", *args]) == 2
    assert words in capsys.readouterr().err


async def test_a_revised_bar_replaces_its_column() -> None:
    """A bar sent again with closed_by="revised" replaces the page's column with that start, adding none."""
    import dataclasses

    from orderflow_plugin.metrics import Footprint

    tape = bundled_tape()
    async with Simulator(tape, pace=Pace(rate=2000), record_ids=False) as sim:
        async with charted(sim) as (flow, _, metrics, page):
            last = tape.rows[-1].id

            async def delivered() -> bool:
                return flow.health()["symbols"]["BTCUSDT"]["last_id"] == last

            await until(delivered, 20, "the tape delivered")
            bar = chart_bars(metrics)[3]
            fp = bar.footprint
            extra = fp.levels[-1][0] + fp.tick
            # A late trade of 0.5 bought one level above the bar's high, as the engine would fold it in.
            revised = dataclasses.replace(
                bar, closed_by="revised", high=extra, buy_volume=bar.buy_volume + Decimal("0.5"),
                footprint=Footprint(tick=fp.tick, value_area_share=fp.value_area_share,
                                    levels=(*fp.levels, (extra, Decimal("0.5"), Decimal(0)))))
            count = await page.evaluate("() => window.footprint.bars.size")
            blinker_signals.metric.send(flow, metric=revised)  # what the dispatcher sends for a revision

            async def replaced() -> bool:
                levels = await page.evaluate(f"() => window.footprint.bars.get({bar.start}).levels")
                return len(levels) == len(fp.levels) + 1

            await until(replaced, 5, "the column replaced")
            page_bar = await page.evaluate(f"() => window.footprint.bars.get({bar.start})")
            assert await page.evaluate("() => window.footprint.bars.size") == count
    assert expected(revised) == {k: page_bar[k] for k in ("start", "delta", "poc", "levels")}
    assert page_bar["closed_by"] == "revised"
