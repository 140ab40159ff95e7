"""No import circle among svqbench's modules, counting the imports inside functions (which hide a loop
until the function runs), and every module imports in a fresh interpreter in dependency order.

An edge is an import statement that names a svqbench module (`from svqbench.x import name` is an edge to
svqbench.x.name when that is a module, else to svqbench.x). A module's implicit import of its parent
packages is not an edge: Python finishes a package's __init__ before any of its modules, so only an
explicit import back from the package would close a loop, and that one is counted. Imports under
`if TYPE_CHECKING:` never run and are not counted; `importlib.import_module(name)` with a computed name
(the dataset and model registries) is out of reach of a static graph.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under `root` (root/package/**/*.py) by dotted name."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first import}, module-level and function-level alike."""
    modules = module_names(root, package)

    def known(name: str) -> str | None:  # the longest module prefix of a dotted name
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [known(a.name) for a in node.names if a.name.split(".")[0] == package]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] != package:
                    continue
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else known(base) for a in node.names]
            else:
                continue
            if _under_type_checking(node, parents):
                continue
            for target in targets:
                if target and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None when the graph is acyclic (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    return "import circle:\n" + "\n".join(
        f"  {a} -> {b}   ({modules[a].relative_to(REPO) if modules[a].is_relative_to(REPO) else modules[a]}"
        f":{graph[a][b]})" for a, b in zip(cycle, cycle[1:]))


def dependency_order(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every module after the modules it imports (the graph is acyclic)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        done.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in done:
                visit(nxt)
        order.append(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return order


def test_svqbench_has_no_import_circle():
    graph = import_graph(REPO, "svqbench")
    assert len(graph) > 50 and graph["svqbench.export"]  # the walk found the package and its imports
    cycle = find_cycle(graph)
    assert cycle is None, describe(cycle, graph, module_names(REPO, "svqbench"))


def test_the_loops_named_in_issue_21_stay_broken():
    graph = import_graph(REPO, "svqbench")
    assert "svqbench.export" not in graph["svqbench.runs"]        # export reads through runs
    assert "svqbench.plots" not in graph["svqbench.tracking"]     # the tracker receives the figure
    assert "svqbench.experiment" not in graph["svqbench.runs"] and "svqbench.experiment" not in graph["svqbench.export"]
    assert "svqbench.data.prepared" not in graph["svqbench.data"]  # the registry is above the reader


def test_every_module_imports_in_a_fresh_interpreter_in_dependency_order():
    # svqbench.__main__ is `python -m svqbench`: importing it runs the CLI
    order = [m for m in dependency_order(import_graph(REPO, "svqbench")) if m != "svqbench.__main__"]
    code = textwrap.dedent("""
        import importlib, sys, traceback
        names = sys.stdin.read().split()
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:
                print(f"importing {name} failed:"); traceback.print_exc(); sys.exit(1)
        print("imported", len(names))
    """)
    done = subprocess.run([sys.executable, "-c", code], input="\n".join(order), cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split()[-1] == str(len(order))


def test_a_circle_through_a_function_level_import_is_found_and_named(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("import os\n\n\ndef f():\n    from .. import c\n    return c\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n\n\n"
                              "def g():\n    from pkg.a import b\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.c": 5} and graph["pkg.c"] == {"pkg.a": 7}  # TYPE_CHECKING not counted
    cycle = find_cycle(graph)
    assert cycle == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    text = describe(cycle, graph, module_names(tmp_path, "pkg"))
    assert "pkg.sub.b -> pkg.c" in text and "b.py:5" in text
    (pkg / "c.py").write_text("def g():\n    import pkg.sub\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
    assert dependency_order(import_graph(tmp_path, "pkg")).index("pkg.c") < \
        dependency_order(import_graph(tmp_path, "pkg")).index("pkg.sub.b")
