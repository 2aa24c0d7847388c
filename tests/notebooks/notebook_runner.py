"""Execute a notebook top to bottom with nbclient, as the test suite does (shared helper).

    nb, seconds = run_notebook(path, timeout=900)

The kernel is ``python3``; jupyter_client starts a kernel spec whose argv begins with ``python``
with ``sys.executable``, so the kernel runs in the same virtual environment as pytest
(``kernel_python`` checks it). ``HF_HUB_OFFLINE=1`` is set for the kernel. The working directory
is the repository root. Nothing is written back to the notebook file.

Run as a script to time notebooks (wall time, and the kernel's own CPU time, which on a shared
machine is the better estimate of the time on idle cores):

    python tests/notebooks/notebook_runner.py notebooks/01_induction_heads.ipynb ...
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
PLOTLY_MIME = "application/vnd.plotly.v1+json"

_CPU_CELL = ("import json as _j, resource as _r; _u = _r.getrusage(_r.RUSAGE_SELF); "
             "print('__cpu__', _j.dumps([_u.ru_utime, _u.ru_stime]))")


def run_notebook(path: str | os.PathLike, timeout: int = 900, cpu_time: bool = False,
                 env: dict[str, str] | None = None) -> tuple[nbformat.NotebookNode, float]:
    """Execute ``path`` in a fresh python3 kernel; returns (executed notebook, wall seconds).

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell (its traceback
    names the cell). With ``cpu_time`` a last cell records the kernel's CPU seconds in
    ``nb.metadata["cpu_seconds"]``.
    """
    nb = nbformat.read(str(path), as_version=4)
    if cpu_time:
        nb.cells.append(nbformat.v4.new_code_cell(_CPU_CELL))
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", *(env or {}))}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.update(env or {})
    try:
        t0 = time.perf_counter()
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT)}})
        client.execute()
        elapsed = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if cpu_time:
        for out in nb.cells[-1].get("outputs", []):
            text = out.get("text", "")
            if "__cpu__" in text:
                nb.metadata["cpu_seconds"] = sum(json.loads(text.split("__cpu__", 1)[1]))
        nb.cells.pop()
    return nb, elapsed


def outputs(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def errors(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    return [o for o in outputs(nb) if o.get("output_type") == "error"]


def plotly_figures(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    return [o for o in outputs(nb) if PLOTLY_MIME in o.get("data", {})]


def stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in outputs(nb) if o.get("output_type") == "stream")


def committed_clean(path: str | os.PathLike) -> list[str]:
    """Problems with a committed notebook: code cells with outputs or an execution count."""
    nb = json.loads(Path(path).read_text())
    bad = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            bad.append(f"cell {i} has outputs or an execution_count; strip them before committing")
    return bad


def kernel_python() -> str:
    """The interpreter the python3 kernel runs (should be this virtual environment's)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys; print(sys.executable)")]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    return nb.cells[0].outputs[0]["text"].strip()


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        nb, secs = run_notebook(arg, timeout=3600, cpu_time=True)
        print(f"{Path(arg).name}: wall {secs:.1f} s, kernel cpu {nb.metadata.get('cpu_seconds', float('nan')):.1f} s")
        print(stdout(nb))
