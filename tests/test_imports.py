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


# The declared layers, top to bottom: a module imports only from its own layer or the ones below.
# The plugins (hydra_plugins/) sit above them all; src/ never imports them.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry points", ("src.train", "src.cli", "src.evaluate", "src.mlflow_model", "src.sweeps", "src.batch")),
    ("search", ("src.sweep",)),
    ("comparison", ("src.compare", "src.repeats")),
    ("tracking", ("src.tracking",)),
    ("loop", ("src.loop",)),
    ("estimation", ("src.estimation",)),
    ("methods and data", ("src.data", "src.models", "src.optim", "src.schedules")),
    ("configuration", ("src.config",)),
    ("foundations", ("src.errors", "src.signals", "src.jobs", "src")),
)
DESIGN_PAGE = ROOT / "docs" / "design.md"
DIAGRAM_START, DIAGRAM_END = (
    "<!-- packages: start (generated by tests/test_imports.py) -->",
    "<!-- packages: end -->",
)


def package_of(module: str) -> str:
    """The declared package a module belongs to (the longest prefix in LAYERS; a plugin's package),
    or the module itself."""
    if module.startswith("hydra_plugins."):
        return ".".join(module.split(".")[:2])
    declared = [p for _, packages in LAYERS for p in packages]
    found = [p for p in declared if module == p or module.startswith(f"{p}.")]
    return max(found, key=len) if found else module


def layer_of(module: str) -> int:
    if module.startswith("hydra_plugins"):
        return -1
    package = package_of(module)
    return next(i for i, (_, packages) in enumerate(LAYERS) if package in packages)


def test_every_module_has_a_declared_layer() -> None:
    undeclared = [m for m in import_graph() if m.startswith("src.") and package_of(m) == m and m != "src"]
    assert [m for m in undeclared if not any(m in p for _, p in LAYERS)] == []


def test_imports_point_down_the_declared_layers() -> None:
    upward = sorted(
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in import_graph().items()
        if module.startswith("src")
        for target in targets
        if target.startswith("src") and layer_of(target) < layer_of(module)
    )
    assert upward == []


def test_the_layer_check_catches_an_upward_import() -> None:
    """The check itself: the data layer importing the tracker is reported."""
    assert layer_of("src.data.files") > layer_of("src.tracking.tracker")
    assert layer_of("hydra_plugins.descentlab_sweeper._impl") < layer_of("src.sweep.trial")


def package_diagram() -> str:
    """A Mermaid graph of the packages and the imports between them, drawn from the code."""
    edges = sorted(
        {
            (package_of(m), package_of(t))
            for m, targets in import_graph().items()
            for t in targets
            if package_of(m) != package_of(t) and package_of(t) != "src"
        }
    )
    node = lambda name: name.replace(".", "_")  # noqa: E731 - Mermaid ids cannot hold dots
    plugins = sorted({p for p, _ in edges if p.startswith("hydra_plugins")})
    lines = ["```mermaid", "flowchart TD"]
    for title, packages in (("plugins", tuple(plugins)), *LAYERS):
        shown = [p for p in packages if p != "src"]
        lines.append(f'  subgraph {node(title.replace(" ", "_"))}["{title}"]')
        lines += [f'    {node(p)}["{p}"]' for p in shown]
        lines.append("  end")
    lines += [f"  {node(a)} --> {node(b)}" for a, b in edges]
    lines.append("```")
    return "\n".join(lines)


def write_diagram() -> None:
    text = DESIGN_PAGE.read_text()
    before, _, rest = text.partition(DIAGRAM_START)
    _, _, after = rest.partition(DIAGRAM_END)
    DESIGN_PAGE.write_text(f"{before}{DIAGRAM_START}\n{package_diagram()}\n{DIAGRAM_END}{after}")


def test_the_design_page_draws_the_packages_as_the_code_has_them() -> None:
    """docs/design.md's diagram is this module's output: `python -m tests.test_imports` rewrites it."""
    text = DESIGN_PAGE.read_text()
    assert DIAGRAM_START in text and DIAGRAM_END in text
    shown = text.split(DIAGRAM_START)[1].split(DIAGRAM_END)[0].strip()
    assert shown == package_diagram(), "docs/design.md is out of date: run python -m tests.test_imports"


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60  # a module one can read through; a function on a screen


def test_modules_and_functions_fit_on_a_screen() -> None:
    too_long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            where = path.relative_to(ROOT)
            if len(text.splitlines()) > MAX_MODULE_LINES:
                too_long.append(f"{where}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        too_long.append(f"{where}:{node.lineno} {node.name}(): {lines} lines")
    assert too_long == []


if __name__ == "__main__":
    write_diagram()
