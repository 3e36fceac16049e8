"""The packages' import graph: no circles; imports go one way (learners -> agentflow_env -> tools).

The graph is read from the source with ``ast`` (nothing is imported, so an import that only runs
inside a function counts as much as one at the top of a file). Every ``import`` and
``from ... import`` statement counts, at module level and inside functions, methods and
``try`` blocks, and so does ``importlib.import_module("a.literal.name")``; imports under
``if TYPE_CHECKING:`` do not (Python never runs them).

Nodes are modules, and a package's ``__init__`` is a node of its own, named by the package:

- ``import a.b.c`` is an edge to ``a.b.c`` (the longest prefix that is one of our modules);
- ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``;
- relative imports are resolved against the importing module's package.

So ``from tools.search.base import X`` inside ``tools/search/local.py`` is an edge to
``tools.search.base`` only, while ``from tools.search import X`` there is an edge to the package's
``__init__``, a circle if that ``__init__`` imports ``local``.

Why not grimp / import-linter: grimp builds a similar graph but offers no whole-graph cycle
listing (its ``find_shortest_cycle`` proposal was closed unmerged), and import-linter has layer
contracts but no "no circles anywhere" contract; both would be a new dependency for what is ~60
lines of ``ast`` here. The cycle search uses networkx (already installed with torch).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tools", "agentflow_env", "learners", "benchmarks")
"""Bottom to top: a package may import the ones before it, never the ones after it."""

# --------------------------------------------------------------------------- the graph


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the packages under ``root`` by dotted name (an ``__init__`` by its
    package's)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Import statements and ``import_module`` calls under ``node``, ``TYPE_CHECKING`` excepted."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:  # the ``else:`` of ``if TYPE_CHECKING`` does run
                yield from _import_nodes_in(other)
            continue
        yield from _import_nodes_in(child)


def _import_nodes_in(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    elif isinstance(node, ast.Call) and _is_import_module(node):
        yield node
    yield from _import_nodes(node)


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return (
        name == "import_module"
        and bool(call.args)
        and isinstance(call.args[0], ast.Constant)
        and isinstance(call.args[0].value, str)
        and not call.args[0].value.startswith(".")
    )


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _named(module: str, node: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that one import statement (or call) of ``module`` names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.Call):
        names = [node.args[0].value]  # type: ignore[attr-defined]
    else:
        assert isinstance(node, ast.ImportFrom)
        base = node.module or ""
        if node.level:
            is_package = modules[module].name == "__init__.py"
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in node.names
        ]
    found = {_known_prefix(name, modules) for name in names}
    return {target for target in found if target is not None and target != module}


def _loaded(module: str, named: str, modules: dict[str, Path]) -> set[str]:
    """``named`` and the packages Python runs first to import it (``a`` and ``a.b`` for
    ``a.b.c``), less the importer's own packages: those ran before the importer did."""
    own = {".".join(module.split(".")[:end]) for end in range(1, module.count(".") + 1)}
    parts = named.split(".")
    parents = {".".join(parts[:end]) for end in range(1, len(parts))}
    return {named} | {p for p in parents if p in modules and p not in own and p != module}


def build_graph(
    modules: dict[str, Path], skip: frozenset[tuple[str, str]] = frozenset()
) -> nx.DiGraph:
    """Module -> module edges; each edge's ``via`` says which import lines make it.

    ``skip`` leaves out the imports of ``(importer, module it names)`` pairs.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _import_nodes(tree):
            line: int = node.lineno  # type: ignore[attr-defined]
            for named in _named(module, node, modules):
                if (module, named) in skip:
                    continue
                for target in _loaded(module, named, modules):
                    how = f"line {line}" + ("" if target == named else f", via {named}")
                    via = graph.get_edge_data(module, target, {}).get("via", ())
                    if how not in via:
                        graph.add_edge(module, target, via=(*via, how))
    return graph


@cache
def import_graph() -> nx.DiGraph:
    """The graph of this repository's packages."""
    return build_graph(module_files(ROOT))


def circles(graph: nx.DiGraph) -> list[list[str]]:
    """One circle through every strongly connected group of modules, as ``[a, b, ..., a]``
    starting from its first module in sorted order."""
    found = []
    for group in nx.strongly_connected_components(graph):
        if len(group) > 1:
            cycle = [edge[0] for edge in nx.find_cycle(graph.subgraph(group))]
            start = cycle.index(min(cycle))
            cycle = cycle[start:] + cycle[:start]
            found.append([*cycle, cycle[0]])
    return sorted(found)


def _edge(graph: nx.DiGraph, a: str, b: str) -> str:
    return f"{a} ({'; '.join(graph.edges[a, b]['via'])})"


def _describe(graph: nx.DiGraph, cycles: list[list[str]]) -> str:
    groups = [g for g in nx.strongly_connected_components(graph) if len(g) > 1]
    lines = []
    for c in cycles:
        chain = [*(_edge(graph, a, b) for a, b in zip(c, c[1:], strict=False)), c[-1]]
        group = next((g for g in groups if c[0] in g), set(c))
        lines.append(" -> ".join(chain) + f"\n    (one circle of the group {sorted(group)})")
    return "import circles:\n" + "\n".join(lines)


def against_layering(graph: nx.DiGraph) -> list[str]:
    """Every import of a package later in :data:`PACKAGES` than the importer's own."""

    def layer(module: str) -> int:
        return PACKAGES.index(module.split(".")[0])

    return sorted(
        f"{a} imports {b} ({'; '.join(graph.edges[a, b]['via'])})"
        for a, b in graph.edges
        if layer(b) > layer(a)
    )


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("package", ["tools", "agentflow_env"])
def test_no_circles(package: str) -> None:
    graph = import_graph()
    own = graph.subgraph(m for m in graph if m.split(".")[0] == package)
    found = circles(own)
    assert not found, _describe(graph, found)


@pytest.mark.parametrize("package", ["learners", "benchmarks"])
def test_no_circles_in_the_upper_packages(package: str) -> None:
    graph = import_graph()
    found = circles(graph.subgraph(m for m in graph if m.split(".")[0] == package))
    assert not found, _describe(graph, found)


def test_flow_grpo_is_the_top_floor_of_learners() -> None:
    """Nothing else in ``learners`` imports ``learners.flow_grpo`` (issue 12, item 3)."""
    graph = import_graph()
    inside = "learners.flow_grpo"
    against = sorted(
        f"{a} imports {b} ({'; '.join(graph.edges[a, b]['via'])})"
        for a, b in graph.edges
        if a.startswith("learners.")
        and not (a == inside or a.startswith(inside + "."))
        and (b == inside or b.startswith(inside + "."))
    )
    assert not against, "\n".join(against)


def test_imports_go_one_way() -> None:
    """tools never imports agentflow_env or learners; agentflow_env never imports learners; no
    package imports benchmarks."""
    against = against_layering(import_graph())
    assert not against, "imports against the layering:\n" + "\n".join(against)


def test_the_graph_is_the_repositorys() -> None:
    """The walker sees this tree: module-level imports, and imports inside functions."""
    graph = import_graph()
    assert {"tools.search", "tools.search.base", "agentflow_env.env", "learners"} <= set(graph)
    assert graph.has_edge("tools.search.local", "tools.search.base")  # module level
    assert graph.has_edge("agentflow_env.tool_registry", "tools.search")  # inside a function
    assert not graph.has_edge("tools.search.local", "tools.search")  # not the package __init__


# --------------------------------------------------------------------------- the walker itself


def _graph_of(tmp_path: Path, files: dict[str, str]) -> nx.DiGraph:
    """The graph of a throwaway tree of ``tools`` / ``agentflow_env`` / ... packages."""
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return build_graph(module_files(tmp_path))


def test_walker_finds_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    graph = _graph_of(
        tmp_path,
        {
            "tools/__init__.py": "",
            "tools/a.py": "import os\nfrom tools.b import g\n",
            "tools/b.py": (
                "def g():\n    try:\n        from tools import a\n"
                "    except ImportError:\n        pass\n"
            ),
        },
    )
    assert circles(graph) == [["tools.a", "tools.b", "tools.a"]]
    assert "tools.a (line 2) -> tools.b (line 3) -> tools.a" in _describe(graph, circles(graph))


def test_walker_skips_type_checking_imports_but_not_their_else(tmp_path: Path) -> None:
    files = {
        "tools/__init__.py": "",
        "tools/a.py": "from tools.b import g\n",
        "tools/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from tools.a import f\n",
        "tools/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\nelse:\n"
        "    import tools.d\n",
        "tools/d.py": "import importlib\nmod = importlib.import_module('tools.c')\n",
    }
    graph = _graph_of(tmp_path, files)
    assert not graph.has_edge("tools.b", "tools.a")
    assert circles(graph) == [["tools.c", "tools.d", "tools.c"]]


def test_walker_resolves_relative_imports_and_submodules(tmp_path: Path) -> None:
    graph = _graph_of(
        tmp_path,
        {
            "tools/__init__.py": "from . import a\n",
            "tools/a.py": "from .b import g\nfrom . import c\n",
            "tools/b.py": "",
            "tools/c.py": "",
            "tools/sub/__init__.py": "from .. import b\n",
            "tools/sub/m.py": "from ..sub import x\nfrom .. import VALUE\n",
        },
    )
    assert set(graph.edges) == {
        ("tools", "tools.a"),
        ("tools.a", "tools.b"),
        ("tools.a", "tools.c"),
        ("tools.sub", "tools.b"),
        ("tools.sub.m", "tools.sub"),
        ("tools.sub.m", "tools"),
    }
    assert circles(graph) == []


def test_walker_counts_a_circle_through_a_package_init(tmp_path: Path) -> None:
    files = {
        "tools/__init__.py": "",
        "tools/pkg/__init__.py": "from tools.pkg.a import f\n",
        "tools/pkg/a.py": "from tools.pkg.b import g\n",
        "tools/pkg/b.py": "",
    }
    assert circles(_graph_of(tmp_path / "ok", files)) == []
    files["tools/pkg/a.py"] = "from tools.pkg import g\n"  # its own package's __init__
    assert circles(_graph_of(tmp_path / "bad", files)) == [
        ["tools.pkg", "tools.pkg.a", "tools.pkg"]
    ]


def test_walker_finds_imports_against_the_layering(tmp_path: Path) -> None:
    graph = _graph_of(
        tmp_path,
        {
            "tools/__init__.py": "",
            "tools/t.py": "def f():\n    from agentflow_env.e import x\n",
            "agentflow_env/__init__.py": "",
            "agentflow_env/e.py": "import tools.t\nimport learners\n",
            "learners/__init__.py": "import agentflow_env.e\nimport tools\n",
            "benchmarks/__init__.py": "import learners\n",
        },
    )
    assert against_layering(graph) == [
        "agentflow_env.e imports learners (line 2)",
        "tools.t imports agentflow_env (line 2, via agentflow_env.e)",
        "tools.t imports agentflow_env.e (line 2)",
    ]
