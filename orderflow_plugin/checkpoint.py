"""Restarts lose nothing: the last delivered aggregate id per symbol, kept in a small JSON file.

The file is rewritten atomically (a temporary file, fsync, rename, fsync of the folder) at most
every ``interval`` seconds and at stop, on a worker thread. Each symbol also carries a *lease*:
the highest id this process may deliver before a newer checkpoint is on disk. The stream never
delivers past the lease on disk, so after a crash (``kill -9``, power loss) the ids a previous run may already have
delivered are exactly ``last_id + 1 .. lease``: the next run delivers those again marked
``source="replay"`` (an exactly-once sink drops the ones it has) and everything after them as
usual. A new checkpoint is on disk at least every interval while trades flow, so a crash repeats
about one interval's worth of trades at most; the lease (two intervals at the recent rate)
bounds what is tagged.

::

    {"format": "orderflow-checkpoint", "version": 1, "market": "spot",
     "written_at": "2026-11-27T10:00:00.123Z", "interval_s": 1.0,
     "symbols": {"BTCUSDT": {"last_id": 3401234567, "lease": 3401234590}}}
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import OrderFlowError

__all__ = ["Checkpoint", "CheckpointError", "Pending", "Resume"]

FORMAT = "orderflow-checkpoint"
VERSION = 1
_LEASE_FLOOR = 32  # ids a lease covers at least, so a quiet symbol does not write per trade
_NO_LIMIT = 2**63


class CheckpointError(OrderFlowError, ValueError):
    """The checkpoint file cannot be read or written; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Resume:
    """Where a symbol starts after a restart: deliver from ``last_id + 1``; up to ``lease`` is a replay."""

    last_id: int
    lease: int


@dataclass(frozen=True)
class Pending:
    """A checkpoint prepared on the loop, to be persisted (on any thread), then committed on the loop."""

    text: str
    leases: dict[str, int]
    number: int  # prepares are numbered: an older one never replaces a newer one on disk


class Checkpoint:
    """The checkpoint of one stream: read once at start, then kept up to date by the stream.

    The stream calls :meth:`delivered` per trade and compares each id with :meth:`trigger` and
    :meth:`lease`. Past the trigger (half the lease) it persists a new checkpoint in the
    background (:meth:`prepare`, :func:`persist` on a worker thread, :meth:`commit`), so the
    fsync never blocks the loop; only past the lease itself, when the background write did
    not keep up, does it write synchronously (:meth:`write`) before delivering.
    """

    def __init__(self, path: str | Path, *, market: str, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError(f"checkpoint interval must be > 0 s, got {interval!r}")
        self.path = Path(path)
        self.market = market
        self.interval = interval
        self.clock = clock
        self.writes = 0
        self.sync_writes = 0  # writes the loop had to wait for (the lease ran out first)
        self._others: dict[str, Any] = {}  # symbols in the file that this stream does not serve: kept
        self._last: dict[str, int] = {}  # the last delivered id per symbol
        self._lease: dict[str, int] = {}  # the highest id we may deliver before a newer write is on disk
        self._trigger: dict[str, int] = {}  # past this id a background write starts
        self._counted: dict[str, int] = {}  # last id at the previous prepare, to size the next lease
        self._inherited: dict[str, int] = {}  # the lease a previous run left: it may have delivered up to it
        self._prepared_at = clock()
        self.due = self._prepared_at + interval
        self.changed = False  # a trade was delivered since the last prepare
        self._unbounded = False  # after a failed write every symbol may go on until the next try
        self._prepared = 0  # the number of the latest prepare
        self._persisted = 0  # ... of the newest checkpoint on disk
        self._committed = 0  # ... of the newest one whose leases are in force
        self._disk = threading.Lock()  # one write at a time, whichever thread it runs on

    def load(self, symbols: tuple[str, ...]) -> dict[str, Resume]:
        """Read the file (missing = a first start): where each of ``symbols`` resumes."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"checkpoint {self.path} cannot be read: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"checkpoint {self.path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                                  "fix it, or delete it to start from the live stream") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {self.path} is not an orderflow checkpoint (no \"format\": "
                                  f"\"{FORMAT}\"); point sequence.checkpoint_path at a file of its own")
        if data.get("version") != VERSION:
            raise CheckpointError(f"checkpoint {self.path} has version {data.get('version')!r}; this "
                                  f"orderflow_plugin reads version {VERSION}")
        if data.get("market") != self.market:
            raise CheckpointError(f"checkpoint {self.path} is for market {data.get('market')!r}, this stream is "
                                  f"{self.market!r}; use one checkpoint file per market")
        entries = data.get("symbols")
        if not isinstance(entries, dict):
            raise CheckpointError(f"checkpoint {self.path}: \"symbols\" must be an object")
        resume: dict[str, Resume] = {}
        for symbol, entry in entries.items():
            if symbol not in symbols:
                self._others[symbol] = entry
                continue
            last, lease = (entry.get("last_id"), entry.get("lease")) if isinstance(entry, dict) else (None, None)
            if not (_whole(last) and _whole(lease) and lease >= last):
                raise CheckpointError(f"checkpoint {self.path}: {symbol} needs whole numbers last_id <= lease, "
                                      f"got {entry!r}")
            resume[symbol] = Resume(last, lease)
            self._last[symbol] = self._counted[symbol] = last
            # The lease on disk stays in force: the ids up to it may be delivered (as replays) without a
            # write, and every new lease covers it, so a second crash still tags what the first run sent.
            self._lease[symbol] = self._inherited[symbol] = lease
            self._trigger[symbol] = last  # the first delivery starts a fresh write
        return resume

    def lease(self, symbol: str) -> int:
        """The highest id of ``symbol`` that may be delivered before a newer checkpoint is on disk."""
        return self._lease.get(symbol, _NO_LIMIT if self._unbounded else -1)

    def trigger(self, symbol: str) -> int:
        """Past this id of ``symbol`` a new checkpoint should be started in the background."""
        return self._trigger.get(symbol, _NO_LIMIT if self._unbounded else -1)

    def delivered(self, symbol: str, trade_id: int) -> None:
        """``trade_id`` of ``symbol`` was delivered."""
        self._last[symbol] = trade_id
        self.changed = True

    def prepare(self, *, upcoming: dict[str, int] | None = None, final: bool = False) -> Pending:
        """The next checkpoint: every symbol's last id and a fresh lease (none when ``final``).

        A lease covers two intervals at the rate seen since the last prepare (at least a floor),
        and the background write starts at its half, so the loop rarely waits for a write.
        ``upcoming`` names ids about to be delivered that the new leases must cover.
        """
        now = self.clock()
        elapsed = max(now - self._prepared_at, 1e-3)
        for symbol, trade_id in (upcoming or {}).items():
            if symbol not in self._last:  # its first trade: resume from it (last_id is the id before it)
                self._last[symbol] = self._counted[symbol] = trade_id - 1
        symbols: dict[str, Any] = dict(self._others)
        leases: dict[str, int] = {}
        for symbol, last in self._last.items():
            if final:  # nothing more will be delivered: no lease, but what a crashed run may have sent stays
                lease = max(last, self._inherited.get(symbol, -1))
            else:
                rate = (last - self._counted.get(symbol, last)) / elapsed
                lease = last + max(_LEASE_FLOOR, math.ceil(rate * 2 * self.interval))
                if upcoming and symbol in upcoming:
                    lease = max(lease, upcoming[symbol])
                current = self._lease.get(symbol, -1)
                if current != _NO_LIMIT:  # never below what may already be delivered under the lease on disk
                    lease = max(lease, current)
            symbols[symbol] = {"last_id": last, "lease": lease}
            leases[symbol] = lease
            self._counted[symbol] = last
            self._trigger[symbol] = last + (lease - last) // 2
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        document = {"format": FORMAT, "version": VERSION, "market": self.market, "written_at": stamp,
                    "interval_s": self.interval, "symbols": symbols}
        self.changed = False
        self._prepared_at = now
        self.due = now + self.interval
        self._prepared += 1
        return Pending(json.dumps(document, indent=1, sort_keys=True) + "\n", leases, self._prepared)

    def persist(self, pending: Pending) -> None:
        """Put ``pending`` on disk atomically, unless a newer one is there (blocking: any thread)."""
        with self._disk:
            if pending.number > self._persisted:
                _atomic_write(self.path, pending.text)
                self._persisted = pending.number

    def commit(self, pending: Pending) -> None:
        """``pending`` is on disk: its leases may be used (an older one than those in force changes nothing)."""
        if pending.number <= self._committed:
            return
        self.writes += 1
        self._committed = pending.number
        self._unbounded = False
        self._lease.update(pending.leases)

    def write(self, *, upcoming: dict[str, int] | None = None, final: bool = False) -> None:
        """Prepare, persist and commit now, on this thread."""
        pending = self.prepare(upcoming=upcoming, final=final)
        self.persist(pending)
        self.commit(pending)

    def failed(self) -> None:
        """A write failed: deliver on without limits, and try again after one interval."""
        self._unbounded = True
        for symbol in self._lease:
            self._lease[symbol] = self._trigger[symbol] = _NO_LIMIT
        self.due = self.clock() + self.interval


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= -1


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves either the old file or the new one."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power loss
        finally:
            os.close(directory)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be written: {exc}") from exc
