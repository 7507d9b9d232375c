"""The package's shape, read from its source: no import cycle, tests on public surfaces, every module documented."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "orderflow_plugin"
TESTS = ROOT / "tests"

def module_name(path: Path) -> str:
    """``orderflow_plugin/redisbus/source.py`` -> ``orderflow_plugin.redisbus.source`` (a package: its name)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports anywhere: at the top, under TYPE_CHECKING, in a function.

    ``from .x import y`` is an import of ``x.y`` when that is a module, else of ``x``. Importing a submodule
    is not counted as importing its parents' ``__init__`` (Python runs them, but they name no one back here).
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports."""
    modules = package_modules()
    return {name: imported(path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    """A cycle as its arrows: ``a -> b`` for every import inside it."""
    members = set(component)
    arrows = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return f"{len(component)} modules: " + "; ".join(arrows)


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    """No import cycle in orderflow_plugin/, TYPE_CHECKING-only and function-level imports included."""
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(c, graph) for c in found)


def test_the_cycle_finder_finds_cycles() -> None:
    """The finder reports a two-module cycle and a longer one, and no cycle in a chain."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c", "a"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_import_reader_sees_hidden_imports() -> None:
    """TYPE_CHECKING-only, function-level and relative imports are all read as arrows."""
    source = PACKAGE / "stream.py"
    modules = package_modules()
    assert {"orderflow_plugin.config", "orderflow_plugin.history.warmup"} <= imported(source, modules)


# Reaches into private names that tests still make, each with why; an entry is added only with a reason no public
# surface can serve (test_allowed_private_reaches_are_still_made fails on an entry no test makes any more).
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {
    ("tests/test_hotpath.py", "orderflow_plugin.hotpath._choose"):
        "the compiled/pure choice for a given build folder; hotpath.py is being reworked (issue #28)",
    ("tests/test_simtest.py", "pipeline.Pipeline._hole_opened"):
        "a planted bug is undone: the plant replaces this method of the real pipeline (issue #26 item 1)",
    ("tests/test_tape_plain.py", "orderflow_plugin.tape._read_plain_csv"):
        "the plain CSV reader against the csv module's on the same bytes: load_tape hides which one read a file",
    ("tests/test_tape_plain.py", "orderflow_plugin.tape._read_csv"):
        "the csv module's reader, the reference the plain one is compared with (issue #28, tape read)",
    ("tests/test_tape_plain.py", "orderflow_plugin.tape._CHUNK"):
        "a read of 37 bytes, so lines are cut across reads (a real read is 4 MB: no test file is that big)",
}


def private_reaches(path: Path) -> Iterator[str]:
    """Each reach of ``path`` into a private name: ``x._name`` (not on self or cls), ``import _name`` from the
    package, ``setattr(x, "_name", ...)`` and the like, and a dotted ``"orderflow_plugin.x._name"`` string."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                yield ast.unparse(node)
        elif isinstance(node, ast.ImportFrom) and any(_private(part) for part in (node.module or "").split(".")):
            yield node.module or ""  # a library's private module
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orderflow_plugin"):
            yield from (f"{node.module}.{alias.name}" for alias in node.names if _private(alias.name))
        elif isinstance(node, ast.Call) and _called(node) in ("setattr", "getattr", "delattr", "hasattr"):
            yield from (f"{_called(node)}({arg.value!r})" for arg in node.args[1:2]
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _private(arg.value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("orderflow_plugin."):
            if any(_private(part) for part in node.value.split(".")):
                yield node.value


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _called(call: ast.Call) -> str:
    function = call.func
    return function.attr if isinstance(function, ast.Attribute) else function.id if isinstance(function, ast.Name) \
        else ""


def all_private_reaches() -> set[tuple[str, str]]:
    """(test file, what it reaches) over every test file."""
    return {(str(path.relative_to(ROOT)), reach) for path in sorted(TESTS.rglob("*.py"))
            if path.name != "test_structure.py" for reach in private_reaches(path)}


def test_tests_reach_no_private_state() -> None:
    """Tests use public surfaces: a new reach into a private name fails here, naming the file and the reach."""
    new = sorted(all_private_reaches() - ALLOWED_PRIVATE.keys())
    assert not new, "tests reaching into private names (test through the public API, or the simulation):\n" + \
        "\n".join(f"{path}: {reach}" for path, reach in new)


def test_allowed_private_reaches_are_still_made() -> None:
    """Every allowed private reach is still made somewhere: one that is gone must leave ALLOWED_PRIVATE."""
    gone = sorted(ALLOWED_PRIVATE.keys() - all_private_reaches())
    assert not gone, f"no longer made, drop them from ALLOWED_PRIVATE: {gone}"


def test_the_private_reach_finder_sees_each_kind(tmp_path: Path) -> None:
    """Attribute, import, setattr and dotted-string reaches are found; self._x and dunders are not."""
    sample = tmp_path / "test_sample.py"
    sample.write_text("from orderflow_plugin.hotpath import _choose, hot_path\nfrom blinker._utilities import make_id\n"
                      "def test(monkeypatch, flow):\n"
                      "    flow._spawn(1)\n    self._mine = flow.__class__\n"
                      "    monkeypatch.setattr(flow, '_check', 1)\n"
                      "    monkeypatch.setattr('orderflow_plugin.doctor._install', 1)\n")
    assert sorted(private_reaches(sample)) == ["blinker._utilities", "flow._spawn", "orderflow_plugin.doctor._install",
                                               "orderflow_plugin.hotpath._choose", "setattr('_check')"]


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def documented_modules() -> set[str]:
    """The modules named in the first column of docs/architecture.md's module tables, as paths in the package."""
    rows = (line for line in ARCHITECTURE.read_text().splitlines() if line.startswith("| `"))
    return {row.split("`")[1] for row in rows if row.split("`")[1].endswith(".py")}


def test_architecture_names_every_module() -> None:
    """docs/architecture.md has a row for every module of the package, and none for a module that is gone."""
    modules = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")}
    documented = documented_modules()
    assert not modules - documented, f"add to docs/architecture.md's module tables: {sorted(modules - documented)}"
    assert not documented - modules, f"gone, drop from docs/architecture.md: {sorted(documented - modules)}"
