"""Every notebook runs top to bottom at toy scale (nbclient, the venv's kernel), the training ones also from
scratch at tiny scale; committed notebooks carry no outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
NAMES = [path.stem for path in NOTEBOOKS]


def test_the_five_notebooks_are_there():
    assert NAMES == ["01_experts_and_data", "02_proxy", "03_student", "04_scoreboard", "05_your_own_images"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_is_stripped_and_has_a_scale_cell(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), "outputs not stripped"
    assert 'SCALE = os.environ.get("EUPE_SCALE", "toy")' in code[0].source
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    assert notebook.metadata.kernelspec.name == "python3"


def execute(path: Path) -> list:
    """Run a notebook top to bottom in this interpreter's kernel (from notebooks/); return its outputs.

    Raises CellExecutionError, naming the cell, on any error.
    """
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    # jupyter_client swaps the kernelspec's `python` for sys.executable, so the kernel is the venv's
    client = NotebookClient(
        notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= 2, "the notebook draws figures"
    return outputs


def printed(outputs: list) -> str:
    """Everything the notebook printed or displayed as text or Markdown."""
    parts = [o.get("text", "") for o in outputs if o.output_type == "stream"]
    parts += [o.data.get("text/markdown", "") for o in outputs if "data" in o]
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs_at_toy_scale(path: Path, monkeypatch: pytest.MonkeyPatch):
    """The notebooks as a newcomer runs them: toy scale, the repository's runs/ folder.

    After `make demo` they reuse `runs/toy` and `runs/toy/eval` (about 4 minutes for all five on a
    2-core CPU); without them, 02 to 04 train and score the toy run first, as `make demo` would.
    """
    monkeypatch.delenv("EUPE_RUNS", raising=False)
    monkeypatch.setenv("EUPE_SCALE", "toy")
    text = printed(execute(path))
    assert "scale toy: toy.yaml" in text
    if path.stem == "04_scoreboard":
        for role in ("proxy (stage 1)", "EUPE student (stages 1-2-3)", "direct student (baseline)", "expert"):
            assert role in text, f"the scoreboard lacks a {role} row"


TRAINING = [path for path in NOTEBOOKS if path.stem in ("02_proxy", "03_student")]


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAINING, ids=[path.stem for path in TRAINING])
def test_notebook_trains_its_stages_at_tiny_scale(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """In an empty runs folder the training notebooks train their stages (with live loss curves)."""
    monkeypatch.setenv("EUPE_SCALE", "tiny")
    monkeypatch.setenv("EUPE_RUNS", str(tmp_path))
    text = printed(execute(path))
    assert re.search(r"^proxy\s+0/6 steps: to train$", text, re.MULTILINE), (
        "the proxy should train from scratch"
    )
    assert (tmp_path / "tiny" / "proxy" / "checkpoint" / "model.safetensors").is_file()
    if path.stem == "03_student":
        for stage in ("student", "multires", "direct"):
            assert (tmp_path / "tiny" / stage / "checkpoint" / "model.safetensors").is_file()
