"""Execute the notebooks in place, so they are committed with their outputs (`make notebooks`).

Each runs in this folder with a fresh kernel; outputs (tables, figures, the folium map) are
written into the .ipynb. `RSPRUNE_FIGURE` makes the training notebook save its comparison
figure for the README.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> None:
    """Execute ``names`` (all notebooks when empty) and write them back with outputs."""
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("*.ipynb"))
    os.environ.setdefault("RSPRUNE_FIGURE", str(HERE.parent / "docs" / "train-kept-vs-random.png"))
    for path in paths:
        start = time.perf_counter()
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(HERE)}}).execute()
        for cell in notebook.cells:  # keep the diff small: no per-run metadata
            cell.metadata.pop("execution", None)
        nbformat.write(notebook, path)
        print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
