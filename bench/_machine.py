"""What a benchmark ran on: printed with every result."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def describe() -> str:
    """One line: CPU, cores, Python and the versions that matter."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for name in ("orderflow-plugin", "websockets", "msgspec"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return f"{cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, {', '.join(versions)}"
