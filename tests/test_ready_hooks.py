"""The bundled plugins (orderflow_plugin/bundled/, loaded through entry points): diagnostics, whale_alert, recorder, prometheus."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path

import pytest

from orderflow_plugin import Dispatcher, Trade, load_plugins, load_settings


def trade(i: int, price: str = "87648.21", qty: str = "0.5", side: str = "buy") -> Trade:
    return Trade("BTCUSDT", i, Decimal(price), Decimal(qty), i, i, 1767225600000 + i, side)  # type: ignore[arg-type]


@pytest.fixture
def hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sender):
    """Load one bundled plugin with settings overrides; return (dispatcher, plugin)."""

    def load(name: str, toml: str = ""):
        user = tmp_path / "user.toml"
        user.write_text(toml)
        settings = load_settings([user])
        manager = load_plugins(entry_points=True, allow=[name])
        assert manager.load_errors == []
        dispatcher = Dispatcher(manager, sender)
        dispatcher.emit("on_startup", settings=settings)
        return dispatcher, manager.get_plugin(name)

    return load


def test_diagnostics_logs_what_the_stream_does_not(hooks, caplog) -> None:
    """The start line and each backfill, and none of the events the stream logs itself (they were logged twice)."""
    with caplog.at_level(logging.INFO, logger="orderflow_hooks"):
        dispatcher, _ = hooks("diagnostics")
        dispatcher.emit("on_connect_attempt", attempt=1, url="ws://127.0.0.1:9/stream", symbols=("BTCUSDT",))
        dispatcher.emit("on_connected", url="ws://127.0.0.1:9/stream", stage_timings={"tcp_connect": 0.0123})
        dispatcher.emit("on_gap", symbol="BTCUSDT", first_missing=10, last_missing=14)
        dispatcher.emit("on_backfill", symbol="BTCUSDT", first_id=10, last_id=14, count=5)
        dispatcher.emit("on_shutdown", summary={"trades": 5})
    lines = [r.getMessage() for r in caplog.records if r.name == "orderflow_hooks.diagnostics"]
    assert lines == ["starting: symbols BTCUSDT, market spot, env testing",
                     "BTCUSDT backfilled 5 trades (10..14) over REST"]


def test_diagnostics_can_be_disabled(hooks, caplog) -> None:
    """enabled = false silences the diagnostics plugin."""
    with caplog.at_level(logging.INFO, logger="orderflow_hooks"):
        dispatcher, _ = hooks("diagnostics", "[default.hooks.diagnostics]\nenabled = false\n")
        dispatcher.emit("on_backfill", symbol="BTCUSDT", first_id=1, last_id=1, count=1)
    assert not [r for r in caplog.records if r.name == "orderflow_hooks.diagnostics"]


def test_whale_alert_at_or_over_threshold(hooks, caplog) -> None:
    """A trade whose notional reaches min_notional is alerted; a smaller one is not."""
    with caplog.at_level(logging.WARNING, logger="orderflow_hooks"):
        dispatcher, module = hooks("whale_alert", "[default.hooks.whale_alert]\nmin_notional = 1000\n")
        dispatcher.emit("on_trade", trade=trade(1, "100.00000000", "10.00000000"))  # exactly 1000
        dispatcher.emit("on_trade", trade=trade(2, "100", "9.99999999"))
    assert [t.id for t in module.alerts] == [1]
    assert "whale BTCUSDT buy 10 @ 100 = 1,000.00 notional (id 1)" in caplog.text


def test_recorder_writes_json_lines_and_flushes_on_disconnect(hooks, tmp_path: Path) -> None:
    """Trades are appended as stable JSON lines and are on disk after a disconnect."""
    path = tmp_path / "rec" / "trades.jsonl"
    dispatcher, _ = hooks("recorder", f"[default.hooks.recorder]\nenabled = true\npath = \"{path}\"\n")
    dispatcher.emit("on_trade", trade=trade(1, "87648.21000000", "0.08185000", "sell"))
    dispatcher.emit("on_disconnected", url="ws://x", code=1006, reason="reset", error=None)
    line = json.loads(path.read_text().splitlines()[0])
    assert line == {"symbol": "BTCUSDT", "id": 1, "price": "87648.21", "qty": "0.08185", "side": "sell",
                    "time": 1767225600001, "first_id": 1, "last_id": 1, "source": "live"}
    dispatcher.emit("on_shutdown", summary={})


def test_recorder_rotates_by_size(hooks, tmp_path: Path) -> None:
    """Past max_bytes the file rotates to .1, .2 and at most `backups` old files are kept."""
    path = tmp_path / "trades.jsonl"
    dispatcher, _ = hooks(
        "recorder", f"[default.hooks.recorder]\nenabled = true\npath = \"{path}\"\nmax_bytes = 1024\nbackups = 2\n"
    )
    for i in range(60):  # ~150 bytes each: about 9 files' worth
        dispatcher.emit("on_trade", trade=trade(i))
    dispatcher.emit("on_shutdown", summary={})
    files = sorted(p.name for p in tmp_path.glob("trades*"))
    assert files == ["trades.jsonl", "trades.jsonl.1", "trades.jsonl.2"]
    ids = [json.loads(line)["id"] for name in ("trades.jsonl.2", "trades.jsonl.1", "trades.jsonl")
           for line in (tmp_path / name).read_text().splitlines()]
    assert ids == list(range(ids[0], 60))  # newest trades kept, in order, none twice


def test_recorder_off_by_default(hooks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default settings the recorder writes nothing."""
    monkeypatch.chdir(tmp_path)
    dispatcher, _ = hooks("recorder")
    dispatcher.emit("on_trade", trade=trade(1))
    dispatcher.emit("on_shutdown", summary={})
    assert list(tmp_path.iterdir()) == [tmp_path / "user.toml"]


def test_prometheus_export_serves_health_from_events(hooks, unused_tcp_port: int) -> None:
    """The exporter serves counters built from events on 127.0.0.1 and stops at shutdown."""
    import httpx

    from orderflow_plugin.engine import FlowEngine

    dispatcher, _ = hooks("prometheus",
                          f"[default.hooks.prometheus]\nenabled = true\nport = {unused_tcp_port}\n")
    engine = FlowEngine("BTCUSDT")
    dispatcher.emit("on_connect_attempt", attempt=1, url="ws://127.0.0.1:1/stream", symbols=("BTCUSDT",))
    dispatcher.emit("on_connected", url="ws://127.0.0.1:1/stream", stage_timings={"tcp_connect": 0.002})
    for i in range(3):
        t = trade(i, side="sell")
        engine.add(t)
        dispatcher.emit("on_trade", trade=t)
    dispatcher.emit("on_metric", metric=engine.snapshot())
    dispatcher.emit("on_gap", symbol="BTCUSDT", first_missing=10, last_missing=14)
    dispatcher.emit("on_backfill", symbol="BTCUSDT", first_id=10, last_id=14, count=5)
    dispatcher.emit("on_error", error=ValueError("x"), where="connect:http_upgrade")
    dispatcher.emit("on_loop_blocked", blocked_for=1.5, stack="")
    text = httpx.get(f"http://127.0.0.1:{unused_tcp_port}/metrics", timeout=5).text
    dispatcher.emit("on_shutdown", summary={})
    for line in ('orderflow_trades_total{source="live",symbol="BTCUSDT"} 3.0', "orderflow_connected 1.0",
                 'orderflow_gap_ids_total{symbol="BTCUSDT"} 5.0', 'orderflow_backfilled_total{symbol="BTCUSDT"} 5.0',
                 'orderflow_errors_total{where="connect"} 1.0', "orderflow_loop_blocked_seconds_total 1.5",
                 'orderflow_cvd{symbol="BTCUSDT"} -1.5', 'orderflow_connect_stage_seconds{stage="tcp_connect"} 0.002'):
        assert line in text, line
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{unused_tcp_port}/metrics", timeout=1)
