"""The command line's live view: what its numbers count."""

from __future__ import annotations

from decimal import Decimal

from orderflow_plugin.cli_output import LiveView
from orderflow_plugin.metrics import Bar


def one_second_bar(start: int, trades: int, closed_by: str = "trade") -> Bar:
    """A BTCUSDT 1 s bar of ``trades`` trades."""
    one = Decimal(1)
    return Bar("1s", start, start + 1000, one, one, one, one, one, one, one, one, trades, trades, one, 1, one, None,
               closed_by, symbol="BTCUSDT")


def test_a_revised_bar_replaces_its_second_in_trades_per_second() -> None:
    """A 1 s bar revised after a late trade stands for the same second: trades/s does not count it twice."""
    view, straight = LiveView(("BTCUSDT",)), LiveView(("BTCUSDT",))
    for bar in (one_second_bar(0, 10, "timer"), one_second_bar(0, 11, "revised"), one_second_bar(1000, 10)):
        view.on_metric(bar)
    for bar in (one_second_bar(0, 11, "timer"), one_second_bar(1000, 10)):  # as if the late trade came in time
        straight.on_metric(bar)
    assert view.rate["BTCUSDT"] == straight.rate["BTCUSDT"] == 10.8
