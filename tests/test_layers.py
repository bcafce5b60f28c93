"""The package layering of DESIGN.md, read from the source with `ast`: no upward import, no cycle
between packages, and no torch on the simulator side."""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "speedsim"

LAYERS = {
    "__init__": 0, "errors": 0, "paths": 0, "yamlio": 0, "sharing": 0, "fileio": 0, "signals": 0, "defaults": 0,
    "userpath": 0, "limits": 0, "dtypes": 0,
    "procs": 0,
    "hardware": 1, "data": 1,
    "workload": 2, "model": 2,
    "engine": 3, "decode": 3, "pipeline": 3,
    "trace": 4, "run": 4,
    "simulate": 5, "serve": 5,
    "validation": 6, "sweep": 6, "train": 6, "design": 6,
    "report": 7, "console": 7, "cli": 7, "__main__": 7,
}
TORCH_FREE = ("simulate", "engine", "workload", "hardware", "sweep", "pipeline", "trace", "serve", "run")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@functools.cache
def imports(path: Path, top_level_only: bool) -> frozenset[str]:
    """Modules `path` imports (speedsim's own and third-party roots)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return frozenset(found)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def own(name: str) -> str | None:
    """The speedsim module an import name refers to (a submodule or the package that defines it)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def test_every_package_has_a_layer():
    """A new package must be placed in DESIGN.md's layers (and here)."""
    assert {package_of(m) for m in MODULES} <= set(LAYERS), {package_of(m) for m in MODULES} - set(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    """A package imports only from its own layer or below (function-level imports included)."""
    mine = LAYERS[package_of(module)]
    for name in imports(MODULES[module], top_level_only=False):
        target = own(name) if name.startswith("speedsim") else None
        if target is not None:
            assert LAYERS[package_of(target)] <= mine, f"{module} imports {target} from a higher layer"


def test_no_cycle_between_packages():
    """The package graph (every import, function-level included) is acyclic."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for name in imports(path, top_level_only=False):
            target = own(name) if name.startswith("speedsim") else None
            if target is not None and package_of(target) != package_of(module):
                graph[package_of(module)].add(package_of(target))
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for pkg in list(graph):
        if pkg not in state:
            visit(pkg, [])


def _closure(start: str) -> set[str]:
    """Every module (and third-party root) loaded by importing `start` at module level."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES]
        if mod not in MODULES:
            continue
        for name in imports(MODULES[mod], top_level_only=True):
            target = own(name) if name.startswith("speedsim") else None
            todo.append(target if target is not None else name.split(".")[0])
    return seen


@pytest.mark.parametrize("package", TORCH_FREE)
def test_simulator_side_never_imports_torch(package):
    """torch is not reachable through module-level imports from the simulator's packages."""
    starts = [m for m in MODULES if package_of(m) == package]
    assert starts, package if package != "serve" else pytest.skip("no serve package yet")
    for start in starts:
        assert "torch" not in _closure(start), f"{start} reaches torch"
