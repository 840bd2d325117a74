"""The import graph of distill/, workbench/ and apps/: no layer imports one above it, and no import circle.

Read from the source with `ast` (nothing is imported), function-local imports included: a circle closed
by a lazy import is still a circle (efficiency <-> export was one).
"""

from __future__ import annotations

import ast
from collections import deque
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "workbench", "apps")

# (importer layer, layers it must not import): the engine, the analysis on top, the apps on top of both;
# within the analysis, eval < viz < explore and notebook.
RULES = (
    ("distill", ("workbench", "apps")),
    ("workbench", ("apps",)),
    ("workbench.eval", ("workbench.viz", "workbench.explore", "workbench.notebook")),
    ("workbench.viz", ("workbench.explore", "workbench.notebook")),
)


class Import(NamedTuple):
    """One import statement's project module: who imports it, where, and whether at module level."""

    source: str
    target: str
    line: int
    top_level: bool  # runs when `source` is imported: not in a function, not under `if TYPE_CHECKING`


def within(module: str, layer: str) -> bool:
    """Whether `module` is `layer` or inside it (`workbench.evaluation` is not inside `workbench.eval`)."""
    return module == layer or module.startswith(layer + ".")


def module_name(path: Path, root: Path = ROOT) -> str:
    """`distill/data/scenes.py` -> `distill.data.scenes`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the three packages, by name."""
    return {module_name(p, root): p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))}


def imports_of(source: str, text: str, is_package: bool, known: set[str]) -> list[Import]:
    """The project modules `text` (module `source`) imports, at any nesting level.

    `from a.b import c` targets the module `a.b.c` when there is one, else `a.b`. Importing `a.b.c` also
    runs `a` and `a.b`, but those implicit package imports are not edges (they cannot make a circle that
    Python fails on: a package's `__init__` is already running when its submodules load).
    """
    found = []

    def add(target: str, node: ast.stmt, top_level: bool) -> None:
        if target.split(".")[0] in PACKAGES:
            found.append(Import(source, target, node.lineno, top_level))

    def visit(node: ast.AST, top_level: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, top_level)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = source.split(".")[: len(source.split(".")) - node.level + is_package]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base, node, top_level)
        type_checking = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, top_level and not type_checking and not function)

    visit(ast.parse(text), True)
    return found


def upward_imports(imports: list[Import]) -> list[str]:
    """One message per import that breaks a rule of `RULES`."""
    return [
        f"{i.source}:{i.line} imports {i.target} ({layer} must not import {banned})"
        for i in imports
        for layer, bans in RULES
        if within(i.source, layer)
        for banned in bans
        if within(i.target, banned)
    ]


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import path from `start` back to itself, as [start, ..., start]; None if there is none."""
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for following in sorted(graph.get(node, ())):
            if following == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if following not in parents:
                parents[following] = node
                queue.append(following)
    return None


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest circle through each module that is on one, each set of modules reported once."""
    cycles, seen = [], set()
    for node in sorted(graph):
        cycle = shortest_cycle(graph, node)
        if cycle and frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            cycles.append(cycle)
    return cycles


def project_imports() -> list[Import]:
    """Every project import of every module of distill/, workbench/ and apps/."""
    modules = project_modules()
    return [
        i
        for name, path in modules.items()
        for i in imports_of(name, path.read_text(), path.name == "__init__.py", set(modules))
    ]


def test_no_upward_import():
    problems = upward_imports(project_imports())
    assert not problems, "imports against the layering (see RULES):\n" + "\n".join(problems)


def describe_cycle(cycle: list[str], imports: list[Import]) -> str:
    """`a -> b ~> a`: `~>` where every import of that hop is function-local or for type checking only."""
    eager = {(i.source, i.target) for i in imports if i.top_level}
    hops = [f" {'->' if hop in eager else '~>'} {hop[1]}" for hop in pairwise(cycle)]
    return cycle[0] + "".join(hops)


def test_no_import_circle():
    imports = project_imports()
    graph: dict[str, set[str]] = {}
    for i in imports:
        graph.setdefault(i.source, set()).add(i.target)
    cycles = [describe_cycle(c, imports) for c in import_cycles(graph)]
    assert not cycles, "import circles (~>: a lazy import):\n" + "\n".join(cycles)


def test_walker_sees_every_kind_of_import():
    known = {"distill.data", "distill.data.views", "workbench.eval.report", "apps.cli"}
    text = """
import os
import distill.data.views
from . import views
from ..data.views import build_views
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from apps.cli import main
class Holder:
    from workbench.eval.report import Figure
def later():
    import workbench.viz.panels
"""
    found = imports_of("distill.data.scenes", text, False, known)
    assert [(i.target, i.top_level) for i in found] == [
        ("distill.data.views", True),
        ("distill.data.views", True),
        ("distill.data.views", True),  # a name from a module: that module
        ("apps.cli", False),
        ("workbench.eval.report", True),
        ("workbench.viz.panels", False),
    ]
    assert [i.target for i in imports_of("distill.data", "from . import views", True, known)] == [
        "distill.data.views"
    ]
    # the real tree: function-local imports are found (the CLI loads the workbench lazily)
    assert any(i.source == "apps.cli" and not i.top_level for i in project_imports())


def test_checkers_catch_a_broken_graph():
    imports = [
        Import("distill.trainer", "workbench.eval.scoreboard", 3, False),
        Import("workbench.eval.report", "workbench.viz.panels", 4, True),
        Import("workbench.evaluation", "workbench.viz.panels", 5, True),  # not inside workbench.eval
        Import("workbench.viz.panels", "workbench.eval.report", 6, True),
        Import("apps.cli", "workbench.notebook", 7, True),
    ]
    assert upward_imports(imports) == [
        "distill.trainer:3 imports workbench.eval.scoreboard (distill must not import workbench)",
        "workbench.eval.report:4 imports workbench.viz.panels (workbench.eval must not import workbench.viz)",
    ]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a", "e"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}}) == []
    lazy = [Import("a", "b", 1, True), Import("b", "a", 2, False)]
    assert describe_cycle(["a", "b", "a"], lazy) == "a -> b ~> a"
