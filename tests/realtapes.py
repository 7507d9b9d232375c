"""The real tapes both differential tests run (engine: test_fixed_differential.py; footprint signals:
test_flowsignals_differential.py): the bundled ones, and the shared recordings where they are present."""

from __future__ import annotations

import gzip
import json
import os
from decimal import Decimal
from pathlib import Path

from orderflow_plugin import Trade, bundled_tape
from orderflow_plugin.decode import Decoder
from orderflow_plugin.tape import load_tape

from .conftest import ROOT

__all__ = ["PACKAGED", "SHARED", "real_tapes", "recorded_trades"]

PACKAGED = ROOT / "orderflow_plugin" / "data"
# The shared recordings: next to the repository (or two levels up from a worktree), or where ORDERFLOW_REAL_DATA says.
SHARED = Path(os.environ.get("ORDERFLOW_REAL_DATA") or next(
    (p / "shared" / "data" / "real" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared" / "data" / "real").is_dir()),
    ROOT.parent / "shared" / "data" / "real"))
# Not the ccxt and volume-spike files: their prices are JSON floats, not the exchange's text.
SHARED_FRAMES = ("cryptofeed_binance_aggTrade_ws_frames.tsv", "polysim_spot_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl",
                 "polysim_perp_aggTrade_BTCUSDT_2026-07-18_ws_frames.jsonl",
                 "rest_spot_BTCUSDT_aggTrades_2021-10-22_10rows.json", "rest_usdm_CLUSDT_aggTrades_2026-05-01_1000.json")
SHARED_CSV = "spot_BTCUSDT-aggTrades-2026-01-01_first5000.csv"


def recorded_trades(path: Path) -> list[Trade]:
    """Every aggTrade of one recording, decoded by the real decoder (frames) or read from REST rows."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    if path.suffix == ".json":  # REST aggTrades rows: the exchange's own decimal strings
        return [Trade("X", r["a"], Decimal(r["p"]), Decimal(r["q"]), r["f"], r["l"], r["T"],
                      "sell" if r["m"] else "buy") for r in json.loads(text)]
    decoder = Decoder("usdm" if "perp" in path.name or "usdm" in path.name else "spot")
    frames = (line[line.index("{"):] for line in text.splitlines() if '"aggTrade"' in line)
    return [t for t in map(decoder.decode, frames) if type(t) is Trade]


def real_tapes() -> list[tuple[str, list[Trade]]]:
    """(name, trades) of the bundled tapes, and of the shared recordings that carry aggTrades as exact decimal
    strings when they are present."""
    tapes = [("bundled-csv", list(bundled_tape().trades()))]
    tapes += [(path.name.split("_aggTrade")[0], recorded_trades(path)) for path in sorted(PACKAGED.glob("*.jsonl.gz"))]
    if SHARED.is_dir():
        tapes += [("shared-" + name.split(".")[0], recorded_trades(SHARED / name)) for name in SHARED_FRAMES]
        tapes.append(("shared-csv", list(load_tape(SHARED / SHARED_CSV).trades())))
    return tapes
