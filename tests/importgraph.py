"""The package's import graph read from its source: every import counts (top level, TYPE_CHECKING, in a function)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import orderflow_plugin

PACKAGE = Path(orderflow_plugin.__file__).parent


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


@cache
def imports_of(module: str) -> frozenset[str]:
    """The package's modules that ``module`` imports, anywhere in its source."""
    known = modules()
    path = known[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import connect` names a module; `from .x import y` a name in x
                found.add(f"{name}.{alias.name}" if f"{name}.{alias.name}" in known else name)
    found.discard(module)
    return frozenset(found & set(known))


def path_back(module: str) -> list[str] | None:
    """A chain of imports from ``module`` back to itself, or None when there is none."""
    seen: set[str] = set()
    stack = [(module, [module])]
    while stack:
        current, chain = stack.pop()
        for imported in imports_of(current):
            if imported == module:
                return [*chain, module]
            if imported not in seen:
                seen.add(imported)
                stack.append((imported, [*chain, imported]))
    return None
