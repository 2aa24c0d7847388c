"""notebooks/01-04 and 06 run top to bottom offline (nbclient), are committed without outputs, show plotly
figures, and print the numbers their conclusions are made of.

Each notebook carries its own asserts where a known answer exists (the top induction head is in
layer 1, the hand-built GD layer matches one GD step, full-batch GD is order invariant, ...), so a
wrong result fails execution. Every notebook (05 included) is a jupytext pair: ``NN_name.ipynb``
and the percent script ``NN_name.py`` (``notebooks/jupytext.toml``); the pair tests check that both
files hold the same cells, so an edit to one side that was not synced (``jupytext --sync``) fails.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jupytext
import pytest
from jupytext.config import load_jupytext_config

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
                                     "Knocking out the", "induction heads vs random heads: significant (effect +",
                                     "Random draws without the previous-token head", "ICL score", "(n=64, paired")),
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


ALL_NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))


def cells(path: Path) -> list[tuple[str, str]]:
    """(cell type, source) of every cell, as jupytext reads the file (.ipynb or percent .py)."""
    return [(c.cell_type, c.source) for c in jupytext.read(path).cells]


def pair_problems(ipynb: Path, script: Path) -> list[str]:
    """How the two files of a pair differ: missing file, cell count, first differing cell."""
    if not script.exists():
        return [f"{script.name} is missing; run: jupytext --set-formats ipynb,py:percent {ipynb}"]
    a, b = cells(ipynb), cells(script)
    code_a = [src for kind, src in a if kind == "code"]
    code_b = [src for kind, src in b if kind == "code"]
    problems = []
    if code_a != code_b:
        i = next((i for i, (x, y) in enumerate(zip(code_a, code_b)) if x != y), min(len(code_a), len(code_b)))
        problems.append(f"code cell {i} differs ({len(code_a)} code cells in {ipynb.name}, {len(code_b)} in "
                        f"{script.name}); run: jupytext --sync {ipynb}")
    if a != b:
        problems.append(f"the cells differ (markdown or order); run: jupytext --sync {ipynb}")
    return problems


def test_every_notebook_is_tested():
    assert set(ALL_NOTEBOOKS) == set(NOTEBOOKS) | {"05_icl_vectors.ipynb"}  # 05: test_notebook_vectors.py


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_committed_without_outputs(name):
    path = NB_DIR / name
    assert committed_clean(path) == []
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_notebooks_are_paired_as_percent_scripts():
    assert load_jupytext_config(str(NB_DIR / ALL_NOTEBOOKS[0])).formats == ["ipynb,py:percent"]
    scripts = sorted(p.name for p in NB_DIR.glob("*.py"))
    assert scripts == [n.replace(".ipynb", ".py") for n in ALL_NOTEBOOKS], "a script without its notebook"
    for name in scripts:
        assert (NB_DIR / name).read_text().count("\n# %%") >= 5, f"{name} is not a percent script"


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_notebook_and_script_hold_the_same_cells(name):
    ipynb = NB_DIR / name
    assert sum(kind == "code" for kind, _ in cells(ipynb)) >= 5
    assert pair_problems(ipynb, ipynb.with_suffix(".py")) == []


def test_pair_check_sees_an_unsynced_edit(tmp_path):
    """The pair check is not vacuous: an edit to one code cell of the script is reported."""
    src = NB_DIR / "01_induction_heads.ipynb"
    ipynb, script = tmp_path / src.name, tmp_path / "01_induction_heads.py"
    ipynb.write_text(src.read_text())
    text = src.with_suffix(".py").read_text()
    script.write_text(text.replace("N_RANDOM = 20", "N_RANDOM = 21", 1))
    assert script.read_text() != text
    problems = pair_problems(ipynb, script)
    assert problems and problems[0].startswith("code cell ")
    script.unlink()
    assert "missing" in pair_problems(ipynb, script)[0]


def test_induction_notebook_uses_the_statistics_layer_and_points_on():
    nb = cells(NB_DIR / "01_induction_heads.ipynb")
    code = "\n".join(src for kind, src in nb if kind == "code")
    for call in ("scan_stats(scan)", "stats.summarize(", "stats.compare(", "stats.estimate(", "stats.paired("):
        assert call in code, f"notebook 01 should use {call}"
    assert "±" not in code and ".std()" not in code, "intervals over prompts, not a spread over draws"
    kind, last = nb[-1]
    assert kind == "markdown"
    for pointer in ("iclwb app --results results/demo", "**Head scan**", "02_ngram_heads.ipynb"):
        assert pointer in last, f"the last cell should point to {pointer}"


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
