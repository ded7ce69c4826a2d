"""Every dependency points one way: no import cycle among the modules of src/ and hydra_plugins/,
counting imports inside functions (lazy ones). Imports under `if TYPE_CHECKING:` are left out: they
name types for mypy and never run."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("src", "hydra_plugins")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def strip_type_checking(tree: ast.Module) -> ast.Module:
    """The module without its `if TYPE_CHECKING:` blocks."""

    class Strip(ast.NodeTransformer):
        def visit_If(self, node: ast.If) -> ast.AST | None:
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            return None if name == "TYPE_CHECKING" else self.generic_visit(node)

    return Strip().visit(tree)


def imported(tree: ast.Module, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules a module imports anywhere in its body (functions included)."""
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(strip_type_checking(tree)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ._impl import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod; `from pkg import name`, pkg itself
            # (a submodule's own package is always loaded first: that edge is no dependency)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` imports a.b.c, or its package
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    known = {module_name(p) for p in files}
    return {
        module_name(p): imported(ast.parse(p.read_text()), module_name(p), p.name == "__init__.py", known)
        for p in files
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_detector_finds_a_lazy_cycle() -> None:
    """The check itself: a function-level import back to the importer is a cycle."""
    a = ast.parse("import pkg.b\n")
    b = ast.parse("def f():\n    from pkg import a\n")
    known = {"pkg", "pkg.a", "pkg.b"}
    graph = {
        "pkg.a": imported(a, "pkg.a", False, known),
        "pkg.b": imported(b, "pkg.b", False, known),
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    typing_only = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\n")
    assert imported(typing_only, "pkg.a", False, known) == set()
    relative = ast.parse("from ._impl import x\n")
    assert imported(relative, "pkg.a", False, known | {"pkg._impl"}) == {"pkg._impl"}


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "src.train" in graph and "hydra_plugins.descentlab_sweeper._impl" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_app_does_not_import_the_plugins() -> None:
    """The plugins may use small public pieces of src/; src/ meets them only through Hydra."""
    graph = import_graph()
    offending = {
        m: sorted(t for t in targets if t.startswith("hydra_plugins")) for m, targets in graph.items()
    }
    assert {m: t for m, t in offending.items() if m.startswith("src") and t} == {}
