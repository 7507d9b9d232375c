"""Recorder: append every trade as one JSON line to a file, rotating by size.

Settings (``[default.hooks.recorder]``): ``enabled`` (default false), ``path``
(default ``trades.jsonl``), ``max_bytes`` (rotate past this size), ``backups`` (rotated
files kept: ``trades.jsonl.1`` is the newest). Lines have the stable trade shape of
``Trade.as_json()`` (decimals as exact strings). Writes are buffered and flushed on every
disconnect and at shutdown, so a reconnect never leaves trades only in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import msgspec

__all__ = ["Recorder", "RotatingFile"]

log = logging.getLogger("orderflow_hooks.recorder")


class RotatingFile:
    """The open file and its rotation."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file: IO[bytes] = self.path.open("ab")

    def write(self, trade: Any) -> None:
        self.file.write(msgspec.json.encode(trade.as_json()) + b"\n")
        self.written += 1
        if self.file.tell() >= self.max_bytes:
            self.rotate()

    def rotate(self) -> None:
        self.file.close()
        if self.backups == 0:
            self.path.unlink()
        else:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.file = self.path.open("ab")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class Recorder:
    """The ``recorder`` plugin."""

    def __init__(self) -> None:
        self.file: RotatingFile | None = None  # None: disabled, or not started

    def on_startup(self, settings: Any) -> None:
        table = settings.hooks.recorder
        if table.enabled:
            self.file = RotatingFile(table.path, table.max_bytes, table.backups)
            log.info("recording trades to %s", self.file.path)

    def on_trade(self, trade: Any) -> None:
        if self.file is not None:
            self.file.write(trade)

    def on_disconnected(self, url: str) -> None:
        if self.file is not None:
            self.file.flush()

    def on_shutdown(self, summary: Mapping[str, Any]) -> None:
        if self.file is not None:
            self.file.close()
            log.info("recorded %d trades to %s", self.file.written, self.file.path)
            self.file = None
