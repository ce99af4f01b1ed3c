"""The layers of DESIGN.md flow one way: pudnet's import graph has no cycle, the kernels import nothing of
pudnet outside ``kernels/``, and the data layer imports nothing of the layers above it, directly or through
other modules.

The graph is read statically with :mod:`ast` from ``python/pudnet/**/*.py``: every ``import`` and
``from … import`` at module level and inside functions or classes, relative imports resolved, except those
under ``if TYPE_CHECKING:`` (they never run). ``from X import name`` is an edge to the module ``X.name``
when there is one, else to ``X``. Importing a submodule also runs its packages' ``__init__``; those implicit
edges are left out (every module would otherwise sit in a cycle with ``pudnet/__init__.py``). The compiled
extension ``pudnet._native`` (``_native.pyi``) is a leaf.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "pudnet"
ABOVE_DATA = ("pudnet.model", "pudnet.targets", "pudnet.train", "pudnet.evaluate", "pudnet.cli")


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name → source file of every module of the package at ``root`` (the compiled extension: its
    ``.pyi`` stub)."""
    names = {}
    for path in [*root.rglob("*.py"), *root.rglob("*.pyi")]:
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        names.setdefault(".".join(parts[:-1] if parts[-1] == "__init__" else parts), path)
    return names


class Imports(ast.NodeVisitor):
    """The dotted names one module imports (``from X import a`` gives ``X.a``), TYPE_CHECKING left out."""

    def __init__(self, package: str):
        self.package, self.names = package, set()

    def visit_If(self, node: ast.If) -> None:
        checking = ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for child in node.orelse if checking else [*node.body, *node.orelse]:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self.package.split(".")[: len(self.package.split(".")) - node.level + 1] if node.level else []
        source = ".".join([*base, *([node.module] if node.module else [])])
        self.names.update(f"{source}.{alias.name}" for alias in node.names)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the modules of the package it imports."""
    modules = module_names(root)
    graph = {}
    for name, path in modules.items():
        if path.suffix != ".py":
            graph[name] = set()
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        visitor = Imports(package)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        graph[name] = {_target(imported, modules) for imported in visitor.names} & modules.keys() - {name}
    return graph


def _target(imported: str, modules: dict[str, Path]) -> str:
    """``X.a`` itself when it is a module, else ``X`` (``a`` is a name defined in ``X``)."""
    return imported if imported in modules else imported.rpartition(".")[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (each module imports the next, the last is the first), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        return e.args[1][::-1]  # graphlib lists each node before the ones that depend on it
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_a_cycle_is_found(tmp_path):
    package = tmp_path / "toy"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub.b import f\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import g\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    graph = import_graph(package)
    assert graph["toy.c"] == set()
    assert find_cycle(graph) in (["toy.a", "toy.sub.b", "toy.a"], ["toy.sub.b", "toy.a", "toy.sub.b"])


def test_the_kernels_import_nothing_of_pudnet_outside_them():
    graph = import_graph()
    for module in (m for m in graph if within(m, "pudnet.kernels")):
        outside = sorted(m for m in graph[module] if not within(m, "pudnet.kernels"))
        assert not outside, f"{module} imports {outside}"


@pytest.mark.parametrize("above", ABOVE_DATA)
def test_the_data_layer_reaches_nothing_above_it(above):
    graph = import_graph()
    for module in (m for m in graph if within(m, "pudnet.data")):
        reached = sorted(m for m in reachable(graph, module) if within(m, above))
        assert not reached, f"{module} reaches {reached}"
