"""Compile the hot modules with Cython when the wheel is built (hatchling's custom build hook).

Each module in ``orderflow_plugin.hotpath.COMPILED`` is compiled from its unchanged ``.py`` source
into an extension module of the same name (typed by the ``.pxd`` beside it, where there is one), and
``_compiled.txt`` records the SHA-256 of each source (``.py`` then ``.pxd``) so a stale extension never
runs (``hotpath.py``). An editable install (``make``) puts them in the
checkout; a wheel carries them. No compiler, no Cython, or ``ORDERFLOW_PURE=1`` at build time: a
pure-Python wheel, with one line on stderr saying why. ``python hatch_build.py`` compiles in place.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "orderflow_plugin"
MODULES = ("fixed", "ranking", "metrics", "openbar", "engine", "decode", "sequencer", "flowsignals")  # hotpath.COMPILED
MANIFEST = "_compiled.txt"


def source_digest(module: str, folder: Path = PACKAGE) -> str:
    """SHA-256 of a hot module's ``.py`` and then its ``.pxd``, if any (hotpath.py computes the same)."""
    digest = hashlib.sha256((folder / f"{module}.py").read_bytes())
    pxd = folder / f"{module}.pxd"
    if pxd.exists():
        digest.update(pxd.read_bytes())
    return digest.hexdigest()


def compile_modules(build: Path) -> list[Path]:
    """Compile the hot modules into ``build``; return the extension files and the manifest."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    extensions = [Extension(f"orderflow_plugin.{m}", [str(PACKAGE / f"{m}.py")], extra_compile_args=["-O2"])
                  for m in MODULES]
    modules = cythonize(extensions, build_dir=str(build / "c"), quiet=True, include_path=[str(ROOT)],
                        # Types come from the .pxd files only: an annotation such as `index: int` would make
                        # Cython demand an exact int where the pure path takes any integer.
                        compiler_directives={"language_level": 3, "binding": True, "annotation_typing": False})
    command = build_ext(Distribution({"name": "orderflow-plugin", "ext_modules": modules}))
    command.build_lib = str(build / "lib")
    command.build_temp = str(build / "temp")
    command.ensure_finalized()
    command.run()
    outputs = [Path(path) for path in command.get_outputs()]
    manifest = build / "lib" / "orderflow_plugin" / MANIFEST
    manifest.write_text("".join(f"{m} {source_digest(m)}\n" for m in MODULES), encoding="utf-8")
    return [*outputs, manifest]


def in_place() -> list[Path]:
    """Compile into the checkout itself (what an editable install and ``make`` use)."""
    with tempfile.TemporaryDirectory() as build:
        placed = []
        for built in compile_modules(Path(build)):
            target = PACKAGE / built.name
            target.unlink(missing_ok=True)  # a running process may have the old one mapped: never overwrite it
            target.write_bytes(built.read_bytes())
            placed.append(target)
        return placed


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # python hatch_build.py in an environment without hatchling
    BuildHookInterface = object  # type: ignore[assignment,misc]


class CompileHotPath(BuildHookInterface):  # type: ignore[misc,valid-type]
    """Compile the hot modules into the wheel (or, for an editable install, next to their source)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("ORDERFLOW_PURE", "") not in ("", "0"):
            print("orderflow-plugin: ORDERFLOW_PURE is set: building the pure-Python wheel", file=sys.stderr)
            return
        try:
            if version == "editable":
                in_place()
            else:
                self._build = tempfile.TemporaryDirectory()  # removed in finalize, once the wheel holds the files
                for built in compile_modules(Path(self._build.name)):
                    build_data["force_include"][str(built)] = f"orderflow_plugin/{built.name}"
        except Exception as exc:  # no compiler, no Cython, a compile error: the pure path still works
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"orderflow-plugin: not compiled ({type(exc).__name__}: {first}); the pure-Python path will run",
                  file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        build = getattr(self, "_build", None)
        if build is not None:
            build.cleanup()


if __name__ == "__main__":
    for path in in_place():
        print(path.relative_to(ROOT))
