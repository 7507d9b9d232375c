"""A bot that can be killed at any moment (deploy, crash, kill -9) and still records every trade exactly once.

Run it with a checkpoint file and a CSV to append to:

    ORDERFLOW_SEQUENCING__CHECKPOINT_PATH=state/checkpoint.json python examples/restart_safe_bot.py trades.csv

The stream's checkpoint makes a restart backfill whatever happened while the bot was down;
trades a previous run may already have handled arrive again with ``source == "replay"``, and
the sink below drops the ones it already wrote. Every other setting comes from settings.toml
and ``ORDERFLOW_`` environment variables (the tests point it at the local simulator that way).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from orderflow_plugin import OrderFlow, Trade
from orderflow_plugin.config import load_settings
from orderflow_plugin.plugins import plugins_from_settings


class ExactlyOnceCsv:
    """Appends ``symbol,id,price,qty,side,source`` per trade; a replayed id it already has is skipped."""

    def __init__(self, path: Path) -> None:
        self.last: dict[str, int] = {}
        if path.exists():  # what an earlier run wrote last, per symbol
            for line in path.read_text().splitlines():
                symbol, trade_id = line.split(",", 2)[:2]
                self.last[symbol] = int(trade_id)
        # One unbuffered append per trade: a line is either in the file or was never handled.
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def on_trade(self, trade: Trade) -> None:
        if trade.source == "replay" and trade.id <= self.last.get(trade.symbol, -1):
            return  # handled by a run that was killed before its checkpoint caught up
        os.write(self.fd, f"{trade.symbol},{trade.id},{trade.price},{trade.qty},{trade.side},{trade.source}\n".encode())
        self.last[trade.symbol] = trade.id


async def main(csv_path: str) -> None:
    settings = load_settings()
    if not settings.sequencing.checkpoint_path:
        sys.exit("set sequencing.checkpoint_path (e.g. ORDERFLOW_SEQUENCING__CHECKPOINT_PATH=checkpoint.json)")
    plugins = plugins_from_settings(settings)
    plugins.register(ExactlyOnceCsv(Path(csv_path)), name="csv")
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # a clean stop writes a final checkpoint: no replay next time
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with OrderFlow.from_settings(settings, plugins=plugins):
        print("streaming", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "trades.csv"))
