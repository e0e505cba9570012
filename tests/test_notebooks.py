"""The notebooks execute end to end (small demo mosaic, real UC Merced scenes), so they never rot,
and they are committed with their outputs, so a newcomer reads them without running them."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import UCMERCED

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_prior_bank_and_tuning.ipynb", "03_train_on_kept_tiles.ipynb"]


def _outputs(notebook) -> list[dict]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("RSPRUNE_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("RSPRUNE_DEMO_SIZE", "1024")
    monkeypatch.setenv("RSPRUNE_SCENES", str(UCMERCED))
    monkeypatch.setenv("RSPRUNE_RANDOM_DRAWS", "2")
    monkeypatch.setenv("RSPRUNE_FIGURE", str(tmp_path / "figure.png"))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr" and "Warning" in o.get("text", "")]
    if name.startswith("01"):
        assert (tmp_path / "quickstart.gpkg").exists() and (tmp_path / "map.html").stat().st_size > 10_000
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5  # Figures display as returned
    elif name.startswith("02"):
        assert (tmp_path / "tuning-0.05.gpkg").exists()
    else:
        assert (tmp_path / "figure.png").stat().st_size > 5_000
        table = notebook.cells[-3].outputs[0]["data"]["text/plain"]
        assert "RS-Prune kept" in table and "random" in table


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_with_its_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "%pip install" in code[0].source  # the first cell installs the package
    assert all(cell.get("execution_count") for cell in code), "run `make notebooks`"
    outputs = _outputs(notebook)
    assert outputs and not [o for o in outputs if o.get("output_type") == "error"]
    if name.startswith("01"):
        assert any("text/html" in o.get("data", {}) and "folium" in o["data"]["text/plain"] for o in outputs)
