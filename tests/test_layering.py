"""Layering: arrows point down only, and no two modules import each other.

Layers, bottom up: `engines` (the runtime on the box), `kiosk_build` (folder
`build/`: export, quantisation, engine builds), then `devtools`,
`provisioning` and `appliance` (CLI, daemon).  Every import counts, also one
inside a function or behind `TYPE_CHECKING`, and `importlib.import_module`
with a literal name: a hidden import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Source folder -> import name of its top-level package.
PACKAGES = {
    "engines": "engines",
    "build": "kiosk_build",
    "devtools": "devtools",
    "provisioning": "provisioning",
    "appliance": "appliance",
}
#: Top-level import names a layer must not import.
FORBIDDEN = {
    "engines": {"kiosk_build", "build", "devtools", "appliance", "provisioning", "kiosk_ui"},
    "kiosk_build": {"appliance"},
}


def module_name(path: Path) -> str:
    """Import name of a source file (`build/x.py` -> `kiosk_build.x`)."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the layered packages, by import name."""
    found = {}
    for folder in PACKAGES:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


def imported_names(
    source: str, module: str, is_package: bool
) -> Iterator[tuple[str, int, str | None]]:
    """(absolute name, line, fallback) of everything `source` imports, anywhere in it.

    `from X import y` yields `X.y` with fallback `X`: `y` is a module or a name in `X`.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                if alias.name == "*":
                    yield base, node.lineno, None
                else:
                    yield f"{base}.{alias.name}", node.lineno, base
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno, None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {project module it imports: line}.

    `from X import y` is an edge to module `X.y` where there is one, else to `X`
    (a parent package is imported along with any submodule: not an edge of its own).
    """
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        found = imported_names(path.read_text(), name, path.name == "__init__.py")
        for imported, line, fallback in found:
            target = imported if imported in modules or fallback is None else fallback
            if target in modules and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return found


def layer_violations(modules: dict[str, Path]) -> list[str]:
    """`file:line: module imports name` for every import a lower layer must not make."""
    problems = []
    for name, path in modules.items():
        banned = FORBIDDEN.get(name.split(".")[0], set())
        found = imported_names(path.read_text(), name, path.name == "__init__.py")
        for target, line, _ in found:
            if target.split(".")[0] in banned:
                where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                problems.append(f"{where}:{line}: {name} imports {target}")
    return sorted(set(problems))


# ----------------------------------------------------------------------------- the rules
@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    found = project_modules()
    assert "engines.backends.onnxruntime_backend" in found and "kiosk_build.export_onnx" in found
    return found


def test_lower_layers_never_import_higher_ones(modules: dict[str, Path]) -> None:
    assert layer_violations(modules) == []


def test_no_import_cycles(modules: dict[str, Path]) -> None:
    graph = import_graph(modules)
    described = [
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:] + c[:1], strict=True))
        if all(b in graph[a] for a, b in zip(c, c[1:] + c[:1], strict=True))
        else ", ".join(c)
        for c in cycles(graph)
    ]
    assert described == []


# ----------------------------------------------------------------------------- the checker
def test_checker_sees_imports_inside_functions_and_relative_ones() -> None:
    source = (
        "import os\n"
        "from . import sibling\n"
        "def f():\n"
        "    from kiosk_build.export_onnx import graph_io\n"
        "    import importlib\n"
        "    return importlib.import_module('devtools.benchmark')\n"
    )
    names = {n for n, _, _ in imported_names(source, "engines.backends.x", is_package=False)}
    assert {"os", "engines.backends.sibling", "kiosk_build.export_onnx.graph_io"} <= names
    assert "devtools.benchmark" in names


def test_checker_finds_cycles_and_only_cycles() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 4}, "c": {"a": 9}, "d": {"a": 2}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_checker_flags_the_old_hidden_imports(tmp_path: Path) -> None:
    """What this test was written against: the runtime reaching into the exporter from
    inside a function, and the exporter importing the runtime back."""
    runtime, exporter = tmp_path / "runtime.py", tmp_path / "exporter.py"
    runtime.write_text("def load():\n    from kiosk_build.exporter import export_voice\n")
    exporter.write_text("from engines.runtime import open_session\n")
    modules = {"engines.runtime": runtime, "kiosk_build.exporter": exporter}
    assert layer_violations(modules) == [
        f"{runtime}:2: engines.runtime imports kiosk_build.exporter.export_voice"
    ]
    assert cycles(import_graph(modules)) == [["engines.runtime", "kiosk_build.exporter"]]
