"""The notebooks execute end to end (small demo mosaic), so they never rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_prior_bank_and_tuning.ipynb"])
def test_notebook_executes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("RSPRUNE_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("RSPRUNE_DEMO_SIZE", "1024")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if name.startswith("01"):
        assert (tmp_path / "quickstart.gpkg").exists() and (tmp_path / "map.html").stat().st_size > 10_000
        assert any("image/png" in o.get("data", {}) for o in outputs)
    else:
        assert (tmp_path / "tuning-0.05.gpkg").exists()
