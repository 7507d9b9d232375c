"""The live view in a real terminal (a pty): what it costs is not charged to the plugins."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR


def run_on_a_terminal(*args: str, env: dict[str, str], rows: int = 45, columns: int = 140) -> tuple[int, str]:
    """Run ``orderflow ARGS`` with stdin, stdout and stderr on one pty of ``columns`` x ``rows``; return all it wrote."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    environ.update({"ORDERFLOW_ENV": "testing", "TERM": "xterm-256color", **env})
    environ.pop("NO_COLOR", None)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "orderflow_plugin", *args], cwd=ROOT, env=environ,
                               stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60 * TIMEOUT_FACTOR
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side of the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        code = process.wait()
    return code, b"".join(chunks).decode(errors="replace")


def test_a_hook_that_logs_under_the_live_view_is_not_charged_for_drawing_it() -> None:
    """With every trade a whale, whale_alert logs once per trade on a terminal: its calls are not reported slow.

    Rich drew each log line above the view at once, redrawing the view inside the hook, so most calls went
    over the 5 ms budget in a terminal (43 of 56 in one run) and none in a pipe.
    """
    code, screen = run_on_a_terminal("demo", "--speed", "5", "--duration", "3",
                                     env={"ORDERFLOW_HOOKS__WHALE_ALERT__MIN_NOTIONAL": "1",
                                          "ORDERFLOW_PLUGINS__ENTRY_POINTS": "true"})
    assert code == 0, screen[-3000:]
    summary = json.loads(re.search(r'\{"event": "summary".*\}', screen).group(0))
    whales = screen.count("whale BTCUSDT")
    assert summary["trades"] >= 30 and whales == summary["trades"], screen[-3000:]  # every log line is shown
    # One in ten leaves room for a loaded machine's pauses; drawing the view cost nearly every call before.
    assert summary["slow_hooks"] <= summary["trades"] // 10, screen[-3000:]
    assert summary["plugin_errors"] == 0
