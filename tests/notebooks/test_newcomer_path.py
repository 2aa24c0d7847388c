"""The README's newcomer path says what the code does: the task count, the zoo table, the table of
sweep analyses and their parameters, the tour's screenshots and its notebook command."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from experiments import tasks
from experiments.models import zoo
from experiments.runs.analyses import analysis_names, get_analysis

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def table_rows(first_header: str) -> dict[str, str]:
    """The rows of the Markdown table whose header starts with ``| first_header |``, by first cell."""
    lines = README.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        first = ln.split("|")[1].strip().strip("`")
        rows[first] = ln
    return rows


def test_the_task_count_is_the_catalogs():
    m = re.search(r"`experiments\.tasks\.catalog\(\)` lists every task name \((\d+)", README)
    assert m, "the README should state how many tasks catalog() lists"
    assert int(m.group(1)) == len(tasks.catalog())


def test_the_zoo_table_lists_every_zoo_model():
    rows = table_rows("zoo model")
    assert set(rows) == set(zoo.ZOO_MODULES)


def test_the_analyses_table_lists_every_analysis_and_parameter():
    rows = table_rows("analysis")
    # the built-in analyses (other test files register their own plugin analyses in the same process)
    builtin = {n for n in analysis_names() if get_analysis(n).fn.__module__.startswith("experiments.runs.analyses")}
    assert set(rows) == builtin
    for name, row in rows.items():
        missing = [p for p in get_analysis(name).params if p != "precision" and f"`{p}`" not in row]
        assert not missing, f"the README's row for {name} lacks the parameters {missing}"
    assert "`precision`" in README[README.index("**What a sweep can run**"):README.index("| analysis |")]


def test_the_tour_comes_first_with_its_screenshots():
    assert README.index("## Five-minute tour") < README.index("## Set-up")
    tour = README[README.index("## Five-minute tour"):README.index("## Set-up")]
    for step in ("make demo", "results/demo/report.html", "iclwb app --results results/demo", "**Head scan**",
                 "notebooks/01_induction_heads", "docs/findings.md"):
        assert step in tour, f"the tour lacks {step}"
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", tour)
    assert len(images) >= 2
    for img in images:
        path = ROOT / img
        assert path.suffix == ".png" and path.exists(), f"{img} is missing"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 300_000


def test_the_notebook_command_exists_in_this_environment():
    m = re.search(r"\.venv/bin/jupyter execute (notebooks/\S+\.ipynb)", README)
    assert m, "the README should give the command that executes a notebook"
    assert (ROOT / m.group(1)).exists()
    bin_dir = Path(sys.executable).parent  # `jupyter execute` runs the jupyter-execute script (nbclient)
    assert (bin_dir / "jupyter").exists() and (bin_dir / "jupyter-execute").exists()
