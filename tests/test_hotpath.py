"""Which hot path runs: compiled only when every compiled module matches its source and ORDERFLOW_PURE is unset."""

from __future__ import annotations

import hashlib
import importlib.machinery
from pathlib import Path

import pytest

from orderflow_plugin import hotpath
from orderflow_plugin.hotpath import COMPILED, MANIFEST, _choose

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def built_folder(folder: Path) -> Path:
    """A package folder as a build leaves it: each source, its extension file and the manifest of digests."""
    lines = []
    for module in COMPILED:
        source = f"# {module}\n".encode()
        (folder / f"{module}.py").write_bytes(source)
        (folder / f"{module}{SUFFIX}").write_bytes(b"")
        lines.append(f"{module} {hashlib.sha256(source).hexdigest()}\n")
    (folder / MANIFEST).write_text("".join(lines))
    return folder


def test_a_matching_build_runs_compiled(tmp_path: Path) -> None:
    """Every module built from the source beside it: compiled."""
    assert _choose(built_folder(tmp_path)) == (True, f"compiled (Cython: {', '.join(COMPILED)})")


def test_a_source_edited_after_the_build_runs_pure(tmp_path: Path) -> None:
    """engine.py changed since it was compiled: the pure path, saying which module and how to rebuild."""
    folder = built_folder(tmp_path)
    (folder / "engine.py").write_text("# engine, edited\n")
    compiled, why = _choose(folder)
    assert not compiled and "the compiled engine does not match engine.py" in why and "make" in why


@pytest.mark.parametrize("damage", ["no-manifest", "one-extension-missing"])
def test_an_incomplete_build_runs_pure(tmp_path: Path, damage: str) -> None:
    """No manifest, or one module not compiled: the pure path, never a mix."""
    folder = built_folder(tmp_path)
    (folder / (MANIFEST if damage == "no-manifest" else f"sequencer{SUFFIX}")).unlink()
    assert _choose(folder)[0] is False


def test_nothing_compiled_says_so(tmp_path: Path) -> None:
    """A plain checkout: pure, because nothing was compiled."""
    folder = built_folder(tmp_path)
    for module in COMPILED:
        (folder / f"{module}{SUFFIX}").unlink()
    assert _choose(folder) == (False, "pure Python (no compiled extension: installed without a C compiler, "
                                      "or a plain checkout)")


def test_orderflow_pure_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ORDERFLOW_PURE=1 runs the source even over a good build."""
    monkeypatch.setenv("ORDERFLOW_PURE", "1")
    assert _choose(built_folder(tmp_path)) == (False, "pure Python (ORDERFLOW_PURE is set)")


def test_the_build_hook_compiles_the_modules_hotpath_expects() -> None:
    """hatch_build.py compiles exactly hotpath.COMPILED (it cannot import the package it builds)."""
    text = (Path(hotpath.__file__).resolve().parents[1] / "hatch_build.py").read_text()
    assert f"MODULES = {COMPILED!r}" in text.replace('", "', "', '").replace('("', "('").replace('")', "')")
