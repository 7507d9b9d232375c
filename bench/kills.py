"""Kills: kill -9 a checkpointed stream at random moments, restart it on the same checkpoint, and count.

The simulator runs in its own process on 127.0.0.1 (``--rate`` trades/s, the bundled real tape looped).
Each run of the stream is a child process (this script with ``--child``) with a checkpoint file and a
recorder plugin that appends ``id,source`` per delivered trade to one file, one unbuffered write per
trade, so a line is in the file exactly when its trade was delivered. The parent starts the child,
waits for its "streaming" line, SIGKILLs it at a random moment (``--min``..``--max`` s later), and
starts the next one at once, ``--kills`` times; a last run then catches up for ``--settle`` seconds
and stops cleanly (SIGTERM).

It reports, over all runs:

- lost: ids between the first and the last delivered that were never delivered (target 0);
- real repeats: deliveries of an id an earlier delivery already had (a killed run delivered it
  after its last checkpoint);
- untagged repeats: real repeats not tagged ``source="replay"`` (target 0: an exactly-once sink
  would write them twice);
- replay tags: deliveries tagged ``source="replay"``, and their ratio to the real repeats (issue #26,
  item 9: at most 3 after 20 kills at 2,000 trades/s).

Run: .venv/bin/python bench/kills.py [--kills 20] [--rate 2000] [--interval 1.0] [--seed 1]
Exit code 1 when an id is lost or a repeat is untagged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SYMBOL = "BTCUSDT"


class Recorder:
    """Appends ``id,source`` per delivered trade, one unbuffered write each (a kill -9 loses no line)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def on_trade(self, trade: object) -> None:
        os.write(self.fd, f"{trade.id},{trade.source}\n".encode())  # type: ignore[attr-defined]


async def child(url: str, checkpoint: str, out: str, interval: float) -> None:
    """One run of the stream: checkpointed, recording every delivery, until SIGTERM (or SIGKILL)."""
    from orderflow_plugin import Flow, OrderFlow, Reporting, Sequencing

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    flow = OrderFlow([SYMBOL], ws_url=url, rest_url=url.replace("ws://", "http://"), plugins=[Recorder(out)],
                     sequencing=Sequencing(checkpoint_path=checkpoint, checkpoint_interval=interval),
                     flow=Flow(enabled=False), reporting=Reporting(loop_block_threshold=0))
    async with flow:
        print("streaming", flush=True)
        await stop.wait()
    checkpoint = flow._checkpointer.checkpoint  # type: ignore[union-attr]  # a bench may look inside
    print(f"last run: {checkpoint.writes} checkpoint writes, {checkpoint.sync_writes} waited for", flush=True)


@dataclass
class Count:
    """What the deliveries of all runs add up to."""

    deliveries: int
    unique: int
    lost: int
    repeats: int
    untagged: int
    tags: int

    @property
    def ratio(self) -> float:
        """Replay tags per real repeat."""
        return self.tags / self.repeats if self.repeats else float("inf") if self.tags else 0.0


def count(lines: list[str]) -> Count:
    """Count ``id,source`` lines in delivery order (the runs one after another)."""
    seen: set[int] = set()
    repeats = untagged = tags = 0
    for line in lines:
        text, source = line.split(",")
        trade_id = int(text)
        tagged = source == "replay"
        tags += tagged
        if trade_id in seen:
            repeats += 1
            untagged += not tagged
        seen.add(trade_id)
    lost = max(seen) - min(seen) + 1 - len(seen) if seen else 0
    return Count(len(lines), len(seen), lost, repeats, untagged, tags)


def _after_kill(out: str, checkpoint: str) -> str:
    """What a kill left: the checkpoint on disk against the highest id delivered so far."""
    import json

    ids = [int(line.split(",")[0]) for line in Path(out).read_text().splitlines()]
    stored = json.loads(Path(checkpoint).read_text())["symbols"][SYMBOL] if os.path.exists(checkpoint) else None
    if not ids or stored is None:
        return f"delivered {len(ids)}, checkpoint {stored}"
    last, lease, delivered = stored["last_id"], stored["lease"], max(ids)
    return (f"last_id {last}, lease {lease}: delivered up to {delivered}, repeats to come {delivered - last}, "
            f"tags to come {lease - last}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2000.0, help="trades per second the simulator plays")
    parser.add_argument("--interval", type=float, default=1.0, help="sequencing.checkpoint_interval, seconds")
    parser.add_argument("--min", type=float, default=0.1, help="earliest kill, seconds after 'streaming'")
    parser.add_argument("--max", type=float, default=4.0, help="latest kill, seconds after 'streaming'")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds the last run streams before its stop")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="per kill: the checkpoint left, what was delivered")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.url, args.checkpoint, args.out, args.interval))
        return 0

    from _machine import describe
    from _sim import simulator

    rng = random.Random(args.seed)
    print(describe())
    with tempfile.TemporaryDirectory(prefix="orderflow-kills-") as folder, \
            simulator("--rate", str(args.rate), "--loop") as sim:
        out, checkpoint = os.path.join(folder, "deliveries.csv"), os.path.join(folder, "checkpoint.json")
        command = [sys.executable, __file__, "--child", "--url", sim.url, "--checkpoint", checkpoint,
                   "--out", out, "--interval", str(args.interval)]
        started = time.perf_counter()
        for run in range(args.kills + 1):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            assert process.stdout is not None
            if process.stdout.readline() != "streaming\n":
                process.kill()
                sys.exit(f"run {run + 1}: the stream did not start")
            if run < args.kills:
                time.sleep(rng.uniform(args.min, args.max))
                process.send_signal(signal.SIGKILL)
                if args.verbose:
                    process.wait(timeout=30)
                    print(f"kill {run + 1}: {_after_kill(out, checkpoint)}")
            else:
                time.sleep(args.settle)
                process.send_signal(signal.SIGTERM)
                print(process.stdout.read().strip())
            process.wait(timeout=30)
        elapsed = time.perf_counter() - started
        lines = Path(out).read_text().splitlines()
    result = count(lines)
    sources = Counter(line.split(",")[1] for line in lines)
    print(f"{args.kills} kills at {args.rate:,.0f} trades/s, checkpoint every {args.interval} s, kill "
          f"{args.min}..{args.max} s after start (seed {args.seed}), {elapsed:.1f} s")
    print(f"deliveries {result.deliveries:,} ({', '.join(f'{k} {v:,}' for k, v in sorted(sources.items()))}); "
          f"ids {result.unique:,}")
    print(f"lost {result.lost}; real repeats {result.repeats:,} (untagged {result.untagged}); "
          f"replay tags {result.tags:,}; tags per repeat {result.ratio:.2f} (target <= 3)")
    return 1 if result.lost or result.untagged else 0


if __name__ == "__main__":
    sys.exit(main())
