"""The package's shape, read from its source with ``ast``: no import cycles, tests on public surfaces only."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "orderflow_plugin"
TESTS = ROOT / "tests"

# Cycles owned by another branch of this round, each to be dropped here when that branch is merged
# (a listed cycle that no longer exists fails test_known_cycles_still_exist, so the list only shrinks).
KNOWN_CYCLES: dict[frozenset[str], str] = {
    frozenset({"orderflow_plugin.delivery", "orderflow_plugin.stream"}):
        "PipelineDriver is typed self: OrderFlow; it becomes a Driver object (issue #26 item 2)",
    frozenset({"orderflow_plugin.connect", "orderflow_plugin.keepalive", "orderflow_plugin.transport"}):
        "transport names (issue #26 item 7)",
    frozenset({"orderflow_plugin.sim.connection", "orderflow_plugin.sim.server"}): "two SimConnection (item 7)",
    frozenset({"orderflow_plugin.simtest.harness", "orderflow_plugin.simtest.invariants",
               "orderflow_plugin.simtest.network", "orderflow_plugin.simtest.recorder",
               "orderflow_plugin.simtest.silence"}): "the simulation's copies, deleted by item 1",
    frozenset({"orderflow_plugin.simtest.shell", "orderflow_plugin.simtest.shellplants"}): "simulation (item 1)",
}


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
    found = [c for c in cycles(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(describe(c, graph) for c in found)


def test_known_cycles_still_exist() -> None:
    """Every cycle excused in KNOWN_CYCLES is still there: one that is gone must leave the list."""
    found = {frozenset(c) for c in cycles(import_graph())}
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"no longer cycles, drop them from KNOWN_CYCLES: {gone}"


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
