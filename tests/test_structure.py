"""The package's shape: imports point down the pipeline, with no cycle, function-level imports included.

A cycle hidden in a function-level import still ties two modules together (neither can change or be tested
alone), so the graph here is read from every `import` statement in the source, wherever it stands. Importing
`a.b.c` also runs the `__init__` of `a.b`, so that counts as an import of the package too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import st_bge

PACKAGE_DIR = Path(st_bge.__file__).parent
# What every stage may share, so it imports no st-bge module but the error types.
BOTTOM_LAYER = {"st_bge.errors", "st_bge.storage", "st_bge.bge", "st_bge.markdown", "st_bge.data.text"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """Module -> the st-bge modules it imports (packages whose `__init__` an import runs included)."""
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert not node.level, f"{path}: st-bge imports by absolute name (line {node.lineno})"
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        own = set(ancestors(name))
        edges = set()
        for target in targets & modules.keys():
            edges.update(module for module in [target, *ancestors(target)] if module in modules)
        graph[name] = edges - own - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_reader_sees_function_level_imports_and_cycles(tmp_path):
    """The reader itself: a cycle closed by an import inside a function is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = "def late():\n    from st_bge.onnx_export import export_onnx\n"
    tree = ast.parse(source)
    found = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert found == ["st_bge.onnx_export"]
    # And on the package: publish imports export (publishing ships the ONNX files), inside or outside a function.
    assert "st_bge.onnx_export" in import_graph()["st_bge.publish"]


def test_no_import_cycle_among_st_bge_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(BOTTOM_LAYER))
def test_the_bottom_layer_imports_no_stage(module):
    imported = import_graph()[module] - {"st_bge.errors"}
    assert not imported, f"{module} is shared by every stage and must not import {sorted(imported)}"


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_cli_sits_on_top_of_the_stages_it_runs():
    """The commands import their stages (no name resolved from a string), so the graph draws the CLI above them,
    and no stage imports a command back."""
    graph = import_graph()
    below_cli = reachable(graph, "st_bge.cli")
    stages = {
        "st_bge.training",
        "st_bge.evaluation.evaluate",
        "st_bge.data.preparation",
        "st_bge.data.scoring",
        "st_bge.synthesis.pipeline",
        "st_bge.publish",
        "st_bge.merging",
        "st_bge.onnx_export",
        "st_bge.serving.app",
        "st_bge.serving.check",
    }
    assert stages <= below_cli, f"the CLI does not import {sorted(stages - below_cli)}"
    for module, targets in graph.items():
        if not module.startswith(("st_bge.cli", "st_bge.commands")):
            assert not {t for t in targets if t.startswith(("st_bge.cli", "st_bge.commands"))}, module


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.rglob("__init__.py")), ids=lambda path: str(path.parent.name))
def test_package_inits_are_faces(path):
    """A package's `__init__` names what the package offers; the code lives in named modules (the top-level
    `st_bge/__init__.py` resolves its names on first use, so `import st_bge` stays fast)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    allowed = {"__getattr__", "__dir__"} if path.parent == PACKAGE_DIR else set()
    assert set(defined) <= allowed, f"{path}: {sorted(set(defined) - allowed)} belong in a named module"
