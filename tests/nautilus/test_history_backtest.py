"""OrderFlowActor in a real BacktestEngine over one archive day: the same bars as the store's (issue #27)."""

import asyncio
from datetime import date
from decimal import Decimal
from typing import Any

import pyarrow.dataset as ds
import pytest
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.config import DataEngineConfig, LoggingConfig
from nautilus_trader.model.currencies import BTC, USDT
from nautilus_trader.model.data import DataType, TradeTick
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.test_kit.providers import TestInstrumentProvider

from orderflow_plugin import bundled_tape
from orderflow_plugin.adapters.nautilus import ORDERFLOW_CLIENT_ID, OrderFlowActor, OrderFlowActorConfig, OrderFlowBar
from orderflow_plugin.backfill import Backfiller
from orderflow_plugin.history import Store, bars_from_table, history
from orderflow_plugin.history.nautilus import write_catalog
from orderflow_plugin.sim import Archive, Simulator, tiled_tape

DAY = date(2025, 11, 1)
_FIELDS = ("start", "end", "open", "high", "low", "close", "volume", "buy_volume", "sell_volume", "delta", "vwap",
           "cvd", "trades")


class BarWatch(Actor):
    """Subscribes to the actor's 1 m bars, as a strategy would."""

    def __init__(self) -> None:
        super().__init__(ActorConfig(component_id="BarWatch"))
        self.bars: list[OrderFlowBar] = []

    def on_start(self) -> None:
        self.subscribe_data(DataType(OrderFlowBar, metadata={"instrument_id": "BTCUSDT.BINANCE", "window": "1m"}),
                            client_id=ORDERFLOW_CLIENT_ID)

    def on_data(self, data: Any) -> None:
        self.bars.append(data)


# nautilus_trader 1.231's BacktestEngine.run() calls pandas' deprecated Timestamp.utcnow().
@pytest.mark.filterwarnings("ignore:Timestamp.utcnow is deprecated")
def test_backtest_bars_equal_the_store_bars(tmp_path) -> None:
    """One archive day into the store, then into a ParquetDataCatalog as TradeTicks; OrderFlowActor in a
    BacktestEngine over them publishes every 1 m bar equal to the store's (which equal the live stream's)."""
    tape = tiled_tape(bundled_tape(), DAY, 1, 5000)

    async def store_the_day() -> None:
        async with Simulator([tape], archive=Archive(tape)) as sim:
            backfiller = Backfiller(sim.rest_url)
            try:
                await history(["BTCUSDT"], DAY, DAY, tmp_path / "store", archive_url=sim.archive_url,
                              backfiller=backfiller)
            finally:
                await backfiller.aclose()

    asyncio.run(store_the_day())
    instrument = TestInstrumentProvider.btcusdt_binance()
    assert write_catalog(tmp_path / "store", tmp_path / "catalog", instrument, "BTCUSDT", "spot", DAY, DAY) == 5000
    ticks = ParquetDataCatalog(str(tmp_path / "catalog")).trade_ticks(instrument_ids=[instrument.id.value])
    assert len(ticks) == 5000 and all(isinstance(t, TradeTick) for t in ticks)

    engine = BacktestEngine(BacktestEngineConfig(
        logging=LoggingConfig(bypass_logging=True),
        data_engine=DataEngineConfig(external_clients=[ORDERFLOW_CLIENT_ID])))
    engine.add_venue(Venue("BINANCE"), oms_type=OmsType.NETTING, account_type=AccountType.CASH,
                     starting_balances=[Money(1_000_000, USDT), Money(10, BTC)])
    engine.add_instrument(instrument)
    engine.add_data(ticks)
    actor = OrderFlowActor(OrderFlowActorConfig(symbols=("BTCUSDT",)))
    watch = BarWatch()
    engine.add_actor(actor)
    engine.add_actor(watch)
    try:
        engine.run()
    finally:
        engine.dispose()

    store = Store(tmp_path / "store", "spot", "BTCUSDT")
    stored = {bar.start: bar for bar in bars_from_table(ds.dataset(store.bars_dir("1m")).to_table())}
    assert len(watch.bars) >= len(stored) - 1 > 5  # the last minute has no later trade to close it in the backtest
    for data in watch.bars:
        bar = stored[data.start]
        # Equal as numbers: the ticks carry the instrument's precision (87648.00), the archive Binance's (87648.00000000).
        got = {name: Decimal(value) if isinstance(value, str) else value
               for name, value in ((name, getattr(data, name)) for name in _FIELDS)}
        assert got == {name: getattr(bar, name) for name in _FIELDS}, data.start
