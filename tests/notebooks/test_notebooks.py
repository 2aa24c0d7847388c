"""notebooks/01-04 run top to bottom offline (nbclient), are committed without outputs, show plotly
figures, and print the numbers their conclusions are made of.

Each notebook carries its own asserts where a known answer exists (the top induction head is in
layer 1, the hand-built GD layer matches one GD step, full-batch GD is order invariant, ...), so a
wrong result fails execution. The notebooks are built from scripts/build_notebooks.py; the last
test checks that the committed files are what the script writes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

from tests.notebooks.notebook_runner import (
    committed_clean,
    errors,
    kernel_python,
    plotly_figures,
    run_notebook,
    stdout,
)

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"

# notebook -> (minimum plotly figures, phrases its printed conclusions must contain)
NOTEBOOKS: dict[str, tuple[int, tuple[str, ...]]] = {
    "01_induction_heads.ipynb": (4, ("Previous-token head: L0H", "Induction heads (score >",
                                     "K-compose most strongly with the previous-token head",
                                     "Knocking out the", "ICL score")),
    "02_ngram_heads.ipynb": (4, ("icll-dfa: accuracy", "In-context n-gram models:", "2-gram: best head L",
                                 "knocked out: accuracy", "Spearman correlation")),
    "03_icl_circuit.ipynb": (6, ("s_q probe peaks at layer", "strongest merge at layer",
                                 "best retrieval head", "xi_to_si", "yi_to_sq")),
    "04_icl_vs_gd.ipynb": (6, ("Hand-built GD layer", "Trained LSA", "Small GPT", "Full-batch GD",
                               "TV(ICL, GD)")),
    "06_training_dynamics.ipynb": (6, ("rises fastest between steps", "previous-token head L0H",
                                       "training loss (moving average", "In-context accuracy by k",
                                       "Transience:")),
}
TIMEOUT_S = 1200  # per cell
# One BLAS/OpenMP thread per kernel unless the caller sets it: the zoo models are too small to gain from
# more, and on a shared machine two spinning threads per kernel made the four notebooks 5x slower
# (670 s vs 135 s wall for all four, measured side by side).
KERNEL_ENV = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_without_outputs(name):
    path = NB_DIR / name
    assert path.exists(), f"{path} is missing; run scripts/build_notebooks.py"
    assert committed_clean(path) == []
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_committed_notebooks_match_build_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_notebooks
    finally:
        sys.path.pop(0)
    for key, (name, cells) in build_notebooks.NOTEBOOKS.items():
        built = build_notebooks.build(cells, key)
        committed = nbformat.read(NB_DIR / name, as_version=4)
        assert [c.source for c in committed.cells] == [c.source for c in built.cells], (
            f"{name} differs from scripts/build_notebooks.py; edit the script and rerun it")
    assert {n for n, _ in build_notebooks.NOTEBOOKS.values()} == set(NOTEBOOKS)


@pytest.mark.slow
def test_kernel_runs_this_environment():
    """The python3 kernel starts this interpreter, so notebooks see the installed package."""
    assert Path(kernel_python()).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_executes(name):
    n_figs, phrases = NOTEBOOKS[name]
    nb, seconds = run_notebook(NB_DIR / name, timeout=TIMEOUT_S, env=KERNEL_ENV)
    assert errors(nb) == []
    figs = plotly_figures(nb)
    assert len(figs) >= n_figs, f"{name}: expected at least {n_figs} plotly figures, got {len(figs)}"
    text = stdout(nb)
    missing = [p for p in phrases if p not in text]
    assert not missing, f"{name}: printed conclusions lack {missing}"
    print(f"{name}: {seconds:.1f} s")
