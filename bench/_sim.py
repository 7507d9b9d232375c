"""The simulator in a process of its own, for the benchmarks."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Running:
    """A running simulator: its WebSocket base URL, port and process id."""

    url: str
    port: int
    pid: int


@contextmanager
def simulator(*options: str) -> Iterator[Running]:
    """Run ``orderflow sim --port 0 *options`` on 127.0.0.1 until the block ends."""
    server = subprocess.Popen([sys.executable, "-m", "orderflow_plugin", "sim", "--port", "0", *options],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if match is None:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        port = int(match.group(1))
        yield Running(f"ws://127.0.0.1:{port}", port, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)
