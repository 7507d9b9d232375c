"""Restarts lose nothing: the last delivered aggregate id per symbol, kept in a small JSON file.

The file is rewritten atomically (a temporary file, fsync, rename, fsync of the folder) at most
every ``interval`` seconds and at stop, on a worker thread. Each symbol also carries a *lease*:
the highest id this process may deliver before a newer checkpoint is on disk. The stream never
delivers past the lease on disk, so after a crash (``kill -9``, power loss) the ids a previous run may already have
delivered are exactly ``last_id + 1 .. lease``: the next run delivers those again marked
``source="replay"`` (an exactly-once sink drops the ones it has) and everything after them as
usual. A new checkpoint is on disk at least every interval while trades flow, so a crash repeats
about one interval's worth of trades at most; the lease (one interval at the recent rate, plus an
eighth of it for the write to land) bounds what is tagged, so a crash tags about twice what it
really repeats on average, never less (issue #26, item 9; bench/kills.py measures it).

::

    {"format": "orderflow-checkpoint", "version": 1, "market": "spot",
     "written_at": "2026-11-27T10:00:00.123Z", "interval_s": 1.0,
     "symbols": {"BTCUSDT": {"last_id": 3401234567, "lease": 3401234590}}}
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from .errors import OrderFlowError

__all__ = ["Checkpoint", "CheckpointError", "Pending", "Resume"]

FORMAT = "orderflow-checkpoint"
VERSION = 1
_LEASE_FLOOR = 4  # ids a lease covers at least
_BURST_STEP = 32  # ids a burst's next span covers beyond the ids it delivered: a quiet symbol's burst needs few writes
_HEADROOM = 8  # a lease runs 1/_HEADROOM of its span past it: time for the write started at its end to land
_AFTER_BURST = 0.25  # of an interval: when the next write is due after one sized in a burst
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

    The stream calls :meth:`delivered` per trade and compares each id with :meth:`check_at`.
    Past it (the end of the span, never past the lease in force) it persists a new checkpoint in the
    background (:meth:`prepare`, :meth:`persist` on a worker thread, :meth:`commit`), so the
    fsync never blocks the loop; only past the lease itself, when the background write did
    not keep up, does it write synchronously (:meth:`write`) before delivering. The file is
    locked (``flock``) while the stream runs: two processes never share one checkpoint.
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
        self._check_at: dict[str, int] = {}  # past this id the stream must act: min(the new span's end, lease in force)
        self._triggers: dict[int, dict[str, int]] = {}  # prepare number -> the check_at it sets once committed
        self._pending: dict[int, dict[str, int]] = {}  # prepare number -> its leases, until it is committed
        self._counted: dict[str, int] = {}  # last id at the previous prepare, to size the next lease
        self._span: dict[str, int] = {}  # ids the previous lease was sized for (to tell a burst)
        self._inherited: dict[str, int] = {}  # the lease a previous run left: it may have delivered up to it
        self._prepared_at = clock()
        self.due = self._prepared_at + interval
        self.changed = False  # a trade was delivered since the last prepare
        self._unbounded = False  # after a failed write every symbol may go on until the next try
        self._prepared = 0  # the number of the latest prepare
        self._persisted = 0  # ... of the newest checkpoint on disk
        self._committed = 0  # ... of the newest one whose leases are in force
        self._disk = threading.Lock()  # one write at a time, whichever thread it runs on
        self._lock_file: IO[bytes] | None = None
        self.written_at: datetime | None = None  # when the file read at load was written (None: not said)
        self.written_interval = interval  # ... and the interval of the stream that wrote it

    def load(self, symbols: tuple[str, ...]) -> dict[str, Resume]:
        """Lock and read the file (missing = a first start): where each of ``symbols`` resumes."""
        self._lock()
        try:
            return self._read(symbols)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the file for another process (also done when this object is collected)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "ab")  # held open (and locked) for the stream's lifetime
        except OSError as exc:
            raise CheckpointError(f"checkpoint {self.path} cannot be opened: {exc}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise CheckpointError(f"checkpoint {self.path} is in use by another stream (locked through "
                                  f"{lock_path.name}); give each process its own checkpoint_path") from exc
        self._lock_file = handle
        weakref.finalize(self, handle.close)  # a stream built but never stopped still lets go of the file
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # a write a kill -9 interrupted
            stale.unlink(missing_ok=True)

    def _read(self, symbols: tuple[str, ...]) -> dict[str, Resume]:
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
                                  f"\"{FORMAT}\"); point sequencing.checkpoint_path at a file of its own")
        if data.get("version") != VERSION:
            raise CheckpointError(f"checkpoint {self.path} has version {data.get('version')!r}; this "
                                  f"orderflow_plugin reads version {VERSION}")
        if data.get("market") != self.market:
            raise CheckpointError(f"checkpoint {self.path} is for market {data.get('market')!r}, this stream is "
                                  f"{self.market!r}; use one checkpoint file per market")
        self.written_at = _moment(data.get("written_at"))
        if isinstance(data.get("interval_s"), (int, float)) and data["interval_s"] > 0:
            self.written_interval = float(data["interval_s"])
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
            self._span[symbol] = max(_LEASE_FLOOR, lease - last)
            self._check_at[symbol] = last  # the first delivery starts a fresh write
        return resume

    def hole_since(self, *, older_than: float = 86_400.0, now: datetime | None = None) -> datetime | None:
        """Where the hole since the checkpoint read at load starts in time, when it is older than ``older_than``
        seconds (a restart after days: the archive has those days); None when younger, or not said."""
        if self.written_at is None:
            return None
        # The last delivered trade came before the write; the write came at most an interval after it.
        start = self.written_at - timedelta(seconds=self.written_interval + 60)
        now = now or datetime.now(UTC)
        return start if (now - start).total_seconds() > older_than else None

    def lease(self, symbol: str) -> int:
        """The highest id of ``symbol`` that may be delivered before a newer checkpoint is on disk."""
        return self._lease.get(symbol, _NO_LIMIT if self._unbounded else -1)

    def check_at(self, symbol: str) -> int:
        """Past this id of ``symbol`` the stream starts a new checkpoint, or waits for one past the lease."""
        return self._check_at.get(symbol, _NO_LIMIT if self._unbounded else -1)

    def forget(self, symbol: str) -> None:
        """Drop ``symbol``'s entry (it belonged to another feed): it starts afresh at its next delivery."""
        for table in (self._last, self._lease, self._check_at, self._counted, self._inherited, self._span):
            table.pop(symbol, None)

    def delivered(self, symbol: str, trade_id: int) -> None:
        """``trade_id`` of ``symbol`` was delivered."""
        self._last[symbol] = trade_id
        self.changed = True

    def prepare(self, *, upcoming: dict[str, int] | None = None, final: bool = False) -> Pending:
        """The next checkpoint: every symbol's last id and a fresh lease (none when ``final``).

        A lease covers the *span*, one interval's worth of ids at the rate seen since the last prepare
        (at least a floor; see :meth:`_sized`), plus an eighth of it: the next write starts at the
        span's end, so the loop rarely waits for one.
        The lease in force drops to the new one at once when that is lower (the file on disk, old or
        new, covers it), and a burst's write is followed by another a quarter interval later, so a
        burst's long lease (a backfill after a restart) is not carried on: what a crash tags stays
        about one interval's worth. ``upcoming`` names ids about to be delivered that the new leases
        must cover.
        """
        now = self.clock()
        elapsed = max(now - self._prepared_at, 1e-3)
        for symbol, trade_id in (upcoming or {}).items():
            if symbol not in self._last:  # its first trade: resume from it (last_id is the id before it)
                self._last[symbol] = self._counted[symbol] = trade_id - 1
        symbols: dict[str, Any] = dict(self._others)
        leases: dict[str, int] = {}
        triggers: dict[str, int] = {}
        bursts = False
        for symbol, last in self._last.items():
            inherited = self._inherited.get(symbol, -1)
            if final:  # nothing more will be delivered: no lease, but what a crashed run may have sent stays
                lease = max(last, inherited)
                span = 0
            else:
                span, burst = self._sized(symbol, last, elapsed)
                bursts |= burst
                lease = last + span + math.ceil(span / _HEADROOM)
                if upcoming and symbol in upcoming:
                    lease = max(lease, upcoming[symbol])
                # A previous run may have delivered up to its lease: a crash before this run passes it must
                # still tag all of it (the leases in between are this run's own, and only ever cover less).
                lease = max(lease, inherited)
            if inherited <= last:
                self._inherited.pop(symbol, None)
            symbols[symbol] = {"last_id": last, "lease": lease}
            leases[symbol] = lease
            self._counted[symbol] = last
            triggers[symbol] = min(last + span, lease)
            if symbol in self._lease and not self._unbounded:  # the file may hold this lease or the one in force
                self._lease[symbol] = min(self._lease[symbol], lease)
            # Until this is on disk only the lease in force holds: never act later than it.
            self._check_at[symbol] = min(triggers[symbol], self._lease.get(symbol, -1))
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        document = {"format": FORMAT, "version": VERSION, "market": self.market, "written_at": stamp,
                    "interval_s": self.interval, "symbols": symbols}
        self.changed = False
        self._prepared_at = now
        # After a burst (a backfill) its long lease is cut back soon, or a crash would tag all of it.
        self.due = now + self.interval * (_AFTER_BURST if bursts else 1.0)
        self._prepared += 1
        self._triggers[self._prepared] = triggers
        self._pending[self._prepared] = leases
        return Pending(json.dumps(document, indent=1, sort_keys=True) + "\n", leases, self._prepared)

    def _sized(self, symbol: str, last: int, elapsed: float) -> tuple[int, bool]:
        """The next span of ``symbol`` and whether it was sized in a burst.

        One interval's worth of ids at the rate since the last prepare, but never a guess far past what
        was delivered: at most twice the ids delivered since, and in a burst (the span ran out in under
        half an interval: a backfill, which may end any moment) those ids and a step more. A long
        burst's spans still grow, by what each lease let through before the next write was on disk.
        """
        delivered = last - self._counted.get(symbol, last)
        burst = delivered >= self._span.get(symbol, _LEASE_FLOOR) and elapsed < self.interval / 2
        span = max(_LEASE_FLOOR, min(math.ceil(delivered * self.interval / elapsed),
                                     delivered + _BURST_STEP if burst else 2 * delivered))
        self._span[symbol] = span
        return span, burst

    def persist(self, pending: Pending) -> None:
        """Put ``pending`` on disk atomically, unless a newer one is there (blocking: any thread)."""
        with self._disk:
            if pending.number > self._persisted:
                _atomic_write(self.path, pending.text)
                self._persisted = pending.number

    def commit(self, pending: Pending) -> None:
        """``pending`` is on disk: its leases may be used (an older one than those in force changes nothing)."""
        triggers = self._triggers.pop(pending.number, {})
        self._pending.pop(pending.number, None)
        if pending.number <= self._committed:
            return
        self.writes += 1
        self._committed = pending.number
        for number in [n for n in self._pending if n < pending.number]:  # never on disk now: older than it
            del self._pending[number]
            self._triggers.pop(number, None)
        self._unbounded = False
        for symbol, lease in pending.leases.items():
            # A newer prepare still in flight may land on disk any moment: the lower of the two holds.
            self._lease[symbol] = min([lease, *(p[symbol] for p in self._pending.values() if symbol in p)])
        if pending.number == self._prepared:  # a newer prepare in flight keeps its own, lower check points
            self._check_at.update(triggers)

    def is_stale(self, pending: Pending) -> bool:
        """A newer checkpoint is already in force: what happens to ``pending`` no longer matters."""
        return pending.number <= self._committed

    def write(self, *, upcoming: dict[str, int] | None = None, final: bool = False) -> None:
        """Prepare, persist and commit now, on this thread."""
        pending = self.prepare(upcoming=upcoming, final=final)
        self.persist(pending)
        self.commit(pending)

    def failed(self) -> None:
        """A write failed: deliver on without limits, and try again after one interval."""
        self._unbounded = True
        for symbol in self._lease:
            self._lease[symbol] = self._check_at[symbol] = _NO_LIMIT
        self.due = self.clock() + self.interval


def _moment(text: Any) -> datetime | None:
    """``written_at`` as an aware UTC datetime; None when missing or not a time (it only ever informs)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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

