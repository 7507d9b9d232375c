"""The shell's clock: the running event loop's time, so the same shell runs in real and in virtual time.

Under asyncio's own loop ``loop.time()`` is ``time.monotonic()``; under the simulation's loop
(:mod:`.simtest.vloop`) it is virtual. Deadlines in the shell are read from here, never from
``time.monotonic()`` directly. Without a running loop (a synchronous caller) it is monotonic time.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["loop_time"]


def loop_time() -> float:
    """Seconds on the running loop's clock (``time.monotonic()`` when no loop runs in this thread)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()
