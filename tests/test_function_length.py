"""No function outside the tests is over `MAX_LINES` lines (read with `ast`, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "workbench", "apps")
MAX_LINES = 80


def long_functions(root: Path = ROOT, limit: int = MAX_LINES) -> list[str]:
    """`path:line name (N lines)` for each function or method of the packages longer than `limit` lines,
    decorators and docstring included."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    lines = node.end_lineno - first + 1
                    if lines > limit:
                        found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_over_the_limit():
    long = long_functions()
    assert not long, f"functions over {MAX_LINES} lines (split them by concept):\n" + "\n".join(long)


def test_the_walker_measures_functions_and_methods(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(80))
    (tmp_path / "apps").mkdir()
    source = f"def short():\n    pass\n\n\nclass C:\n    def long(self):\n{body}\n"
    (tmp_path / "apps" / "m.py").write_text(source)
    assert long_functions(tmp_path) == ["apps/m.py:6 long (81 lines)"]
    assert long_functions(tmp_path, limit=81) == []
