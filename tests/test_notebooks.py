"""Every notebook runs top to bottom at the tiny scale (nbclient, the venv's kernel); committed notebooks
carry no outputs."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runs folder shared by the notebooks, so the tiny run trained by one is reused by the next."""
    return tmp_path_factory.mktemp("notebook_runs")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs_at_tiny_scale(path: Path, tiny_runs: Path, monkeypatch: pytest.MonkeyPatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("EUPE_SCALE", "tiny")
    monkeypatch.setenv("EUPE_RUNS", str(tiny_runs))
    notebook = nbformat.read(path, as_version=4)
    # the kernel runs from notebooks/ with this interpreter (jupyter_client swaps `python` for sys.executable)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 2, "the notebook should draw its figures"
    if path.stem != "01_experts_and_data":  # the others train (or reuse) the tiny run under EUPE_RUNS
        assert (tiny_runs / "tiny" / "proxy" / "checkpoint" / "model.safetensors").is_file()
