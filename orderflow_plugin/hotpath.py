"""Which hot path runs: the modules compiled by Cython, or their pure-Python source. No I/O but reading files.

``pip install`` compiles the hot modules (``COMPILED``) with Cython when the machine has a compiler
(``hatch_build.py``): each becomes an extension module next to its ``.py`` source, which Python then
imports instead of it. The build writes ``_compiled.txt``, the SHA-256 of each source it compiled (its ``.py``, then the
``.pxd`` that types it, where there is one).
The pure source runs instead when ``ORDERFLOW_PURE=1``, when nothing was compiled, or when a source
no longer matches what was compiled (a checkout edited after ``make``): a stale extension never runs.

Imported first by the package, before any hot module. :func:`hot_path` says which path runs and why;
``orderflow doctor`` and the stream's start log print it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["COMPILED", "MANIFEST", "hot_path", "is_compiled", "loaded"]

COMPILED = ("fixed", "ranking", "metrics", "openbar", "engine", "decode", "sequencer", "flowsignals")  # by dependency
MANIFEST = "_compiled.txt"  # "<module> <sha256 of its .py>" per line, written by the build
_HERE = Path(__file__).resolve().parent


class _PureSource:
    """A meta path finder that imports the hot modules from their ``.py`` source, never the extension."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> Any:
        package, _, module = name.rpartition(".")
        if package != __package__ or module not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(name, _HERE / f"{module}.py")


def _digest(folder: Path, module: str) -> str:
    """SHA-256 of ``module``'s ``.py`` and then its ``.pxd``, if any (as hatch_build.py writes it)."""
    digest = hashlib.sha256((folder / f"{module}.py").read_bytes())
    pxd = folder / f"{module}.pxd"
    if pxd.exists():
        digest.update(pxd.read_bytes())
    return digest.hexdigest()


def _choose(folder: Path = _HERE) -> tuple[bool, str]:
    """(compiled, why) for this process, from ORDERFLOW_PURE, the extension files and the build's manifest."""
    built = [m for m in COMPILED if any((folder / f"{m}{suffix}").exists()
                                        for suffix in importlib.machinery.EXTENSION_SUFFIXES)]
    if os.environ.get("ORDERFLOW_PURE", "") not in ("", "0"):
        return False, "pure Python (ORDERFLOW_PURE is set)"
    if not built:
        return False, "pure Python (no compiled extension: installed without a C compiler, or a plain checkout)"
    try:
        lines = (folder / MANIFEST).read_text(encoding="utf-8").split("\n")
        digests = dict(line.split(" ", 1) for line in lines if line)
    except (OSError, ValueError):
        digests = {}
    for module in COMPILED:
        if module not in built or digests.get(module) != _digest(folder, module):
            return False, (f"pure Python (the compiled {module} does not match {module}.py: rebuild with "
                           "`make .venv/.installed` or `pip install .`)")
    return True, f"compiled (Cython: {', '.join(COMPILED)})"


_COMPILED, _WHY = _choose()
if not _COMPILED and not any(isinstance(finder, _PureSource) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PureSource())


def is_compiled() -> bool:
    """Whether the hot modules run compiled in this process."""
    return _COMPILED


def hot_path() -> str:
    """One line saying which hot path runs, and why when it is the pure one."""
    return _WHY


def loaded() -> list[ModuleType]:
    """The hot modules as imported (each module's ``__file__`` says compiled or source)."""
    return [importlib.import_module(f"{__package__}.{module}") for module in COMPILED]
