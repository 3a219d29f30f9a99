"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, and is stored clean.

The kernel is this interpreter (a "python3" kernel spec written to a temporary
Jupyter path at session start), so the notebooks see exactly the packages the
tests do, whatever other kernels the machine has registered. Notebooks run
with notebooks/ as their working directory and find the repo from there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT
from NNDF.registry import FAMILIES

NOTEBOOKS = ROOT / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
EXPECTED = {"playground", "GPT2", "T5", "BART", "BLIP", "encoders"}
CELL_TIMEOUT_S = 300
# A notebook executed only when the family it shows is registered (written ahead of its family).
NEEDS_FAMILY = {"BLIP": "BLIP"}


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory) -> str:
    prefix = tmp_path_factory.mktemp("jupyter")
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "python3"],
                   check=True, capture_output=True)
    patch = pytest.MonkeyPatch()
    # JUPYTER_PATH comes first in the kernel spec search, so our spec wins over any installed "python3".
    earlier = os.environ.get("JUPYTER_PATH")
    patch.setenv("JUPYTER_PATH", os.pathsep.join([str(prefix / "share" / "jupyter"), *([earlier] if earlier else [])]))
    yield "python3"
    patch.undo()


def test_all_notebooks_present():
    assert EXPECTED <= {p.stem for p in PATHS}, f"missing notebooks: {sorted(EXPECTED - {p.stem for p in PATHS})}"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_is_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have stored outputs; clear them before saving"
    unexplained = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (i == 0 or nb.cells[i - 1].cell_type != "markdown")]
    assert not unexplained, f"{path.name}: code cells {unexplained} have no markdown heading saying why"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path: Path, kernel_name: str):
    family = NEEDS_FAMILY.get(path.stem)
    if family is not None and family not in FAMILIES:
        pytest.skip(f"{path.name} not executed: family {family!r} is not in NNDF.registry.FAMILIES yet")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    client.execute()   # a failing cell raises CellExecutionError with the cell and its traceback
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
