"""How long a thread waited for a CPU while it was ready to run: time the machine gave to other processes.

A hook timed on the wall clock is charged for every millisecond the kernel ran something else in its
place: on a loaded machine a 20 us hook that is preempted once looks 12 ms slow, and its plugin is
told to move slow work off the loop (issue #25). Linux counts that wait for each thread (``run_delay``,
the second field of ``/proc/self/task/<tid>/schedstat``); the dispatcher takes it out of a slow call's
wall time before it blames the hook. Time a hook spends blocked (a synchronous HTTP call, a full pipe,
a sleep) is no run-queue wait and still counts. Where the file is missing (not Linux) the wait reads
as 0: hooks are timed on the wall clock alone, as before.
"""

from __future__ import annotations

import os
import threading

__all__ = ["run_wait"]

_TASKS = "/proc/self/task"
_files: dict[int, int] = {}  # native thread id -> open descriptor of its schedstat (a pread is a few us)
_lock = threading.Lock()
_available = os.path.exists(f"{_TASKS}/{threading.get_native_id()}/schedstat")


def run_wait() -> float:
    """Seconds the calling thread has spent runnable but not running since it started (0.0 where unknown).

    One small read: meant for checks a few hundred times a second at most, never once per trade.
    """
    if not _available:
        return 0.0
    tid = threading.get_native_id()
    with _lock:
        for _ in range(2):  # a cached descriptor of an ended thread whose id was reused fails once: reopen
            fd = _files.get(tid)
            try:
                if fd is None:
                    _close_ended()
                    fd = _files[tid] = os.open(f"{_TASKS}/{tid}/schedstat", os.O_RDONLY)
                return int(os.pread(fd, 100, 0).split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                if _files.pop(tid, None) is not None:
                    os.close(fd)  # type: ignore[arg-type]
    return 0.0


def _close_ended() -> None:
    """Close the descriptors of threads that ended (called with the lock held, when a new thread asks)."""
    alive = {thread.native_id for thread in threading.enumerate()}
    for tid in [tid for tid in _files if tid not in alive]:
        os.close(_files.pop(tid))


def _forget_parent() -> None:
    """In a forked child the descriptors name the parent's threads: close them."""
    global _lock
    _lock = threading.Lock()
    for fd in _files.values():
        os.close(fd)
    _files.clear()


os.register_at_fork(after_in_child=_forget_parent)
