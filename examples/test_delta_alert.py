"""The delta alert strategy, tested with the pytest fixtures orderflow-plugin ships: a local simulator, no network.

Run it like any test of yours: ``pytest examples/test_delta_alert.py`` (docs/testing.md).
"""

from decimal import Decimal

from delta_alert import DeltaAlert


async def test_alerts_on_the_minute_with_a_strong_delta(orderflow_stream):
    """On the bundled real tape, the second minute (+5.84 BTC) alerts and the first (-0.48 BTC) does not."""
    strategy = DeltaAlert(min_delta=Decimal(5))
    await orderflow_stream(strategy, trades=1000)  # the first two minutes hold 924 trades
    assert [bar.delta for bar in strategy.alerts] == [Decimal("5.83961000")]


async def test_threshold_comes_from_the_settings_or_its_default(orderflow_stream):
    """Without a threshold in code or settings, on_startup leaves the default of 5 and the strategy runs."""
    strategy = DeltaAlert()
    flow = await orderflow_stream(strategy, trades=1000)
    assert strategy.min_delta == 5 and len(strategy.alerts) == 1
    assert flow.health()["plugin_errors"] == 0
