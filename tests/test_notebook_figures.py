"""Notebook 05 run in a real Jupyter kernel (tiny mode): every cell that draws shows a picture.

nbval runs the notebooks as tests but does not look at what a figure cell displayed, so a
figure that silently came out empty passed there. This one executes 05 with nbclient, as
JupyterLab would, and requires an ``image/png`` output from each cell that plots (pyplot
calls, ``display(... plot(...))``, ``adkit.viz`` helpers): 05's training plot once switched
the kernel's backend to Agg and left every later figure empty (test_plot_backend.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_stage1_expert.ipynb"
PLOTTING = re.compile(r"plt\.(show|subplots|figure|imshow)\(|display\([^)]*plot\(|\bviz\.\w+\(")


def test_every_plotting_cell_of_05_shows_an_image(monkeypatch):
    monkeypatch.setenv("ADKIT_TINY", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    plotting = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and PLOTTING.search(c.source)]
    assert len(plotting) >= 3, plotting  # the val probe's map, the training curves, the map after training
    empty = [(i, nb.cells[i].source.splitlines()[0][:60]) for i in plotting
             if not any("image/png" in out.get("data", {}) for out in nb.cells[i].get("outputs", []))]
    assert empty == [], f"plotting cells without a picture: {empty}"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
