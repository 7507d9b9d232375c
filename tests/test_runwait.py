"""run_wait(): the time a thread waited for a CPU, which the dispatcher takes out of a slow hook's time (issue #25)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orderflow_plugin.runwait import run_wait

pytestmark = pytest.mark.skipif(not Path("/proc/thread-self/schedstat").exists(), reason="Linux's schedstat only")

_HOG = "import os, sys; os.sched_setaffinity(0, {%d}); print('spinning', flush=True)\nwhile True: pass"


def test_run_wait_counts_a_cpu_held_by_another_process_not_a_sleep() -> None:
    """Spinning on a CPU a busy process shares, about half the wall time is run-queue wait; asleep, hardly any."""
    affinity = os.sched_getaffinity(0)
    cpu = min(affinity)
    hog = subprocess.Popen([sys.executable, "-c", _HOG % cpu], stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout is not None and hog.stdout.readline() == "spinning\n"
        os.sched_setaffinity(0, {cpu})  # this thread only: the hog and it now take turns on one CPU
        waited, start = run_wait(), time.perf_counter()
        while time.perf_counter() - start < 0.3:
            pass
        spinning = run_wait() - waited
        os.sched_setaffinity(0, affinity)
        waited = run_wait()
        time.sleep(0.2)  # blocked, not runnable: not the machine's time
        asleep = run_wait() - waited
    finally:
        os.sched_setaffinity(0, affinity)
        hog.kill()
        hog.communicate()
    assert spinning > 0.05, spinning
    assert asleep < 0.1, asleep
