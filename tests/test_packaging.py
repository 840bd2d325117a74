"""What `pip install .` gives: the engine's imports are core dependencies, the shipped configs resolve from
any folder, and `eupe --help` loads none of the extras."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from distill.config import CONFIG_DIR, config_path, load_config

ROOT = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ("gradio", "streamlit", "pandas", "altair", "onnx", "onnxruntime", "onnxscript", "umap")


def normalised(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def third_party_imports(folder: Path) -> set[str]:
    """Top-level names of every absolute import in `folder`'s modules that is neither stdlib nor ours."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "distill", "workbench", "apps"}


def test_core_dependencies_cover_the_engine():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {normalised(re.match(r"[\w.-]+", d).group()) for d in project["dependencies"]}
    providers = packages_distributions()
    missing = {
        name: providers.get(name)
        for name in third_party_imports(ROOT / "distill")
        if not core & {normalised(d) for d in providers.get(name, [])}
    }
    assert not missing, f"distill/ imports these, but no core dependency provides them: {missing}"


def test_shipped_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    shipped = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == shipped and "toy.yaml" in shipped
    monkeypatch.chdir(tmp_path)
    for name in ("toy", "toy.yaml", "configs/toy.yaml"):
        assert config_path(name) == CONFIG_DIR / "toy.yaml"
    assert load_config("tiny").stages
    packaged = r"nope \(packaged configs: paper, paper_shaped, small, tiny, toy\)"
    with pytest.raises(FileNotFoundError, match=packaged):
        load_config("nope")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "toy.yaml").write_text("stages: {}\n")
    assert config_path("configs/toy.yaml") == Path("configs/toy.yaml")  # a file where it is named wins


def test_cli_parser_loads_no_extra():
    code = "import sys; from apps.cli import build_parser; build_parser(); print(*sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert not set(EXTRA_MODULES) & set(loaded.stdout.split())
