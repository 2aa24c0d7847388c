"""``iclwb demo``: the standard study on the built-in models (the README's main job).

The study is an ordinary sweep (``DEMO_CONFIG``, also in ``configs/demo.toml``) run into a results
store (default ``results/demo``), followed by an HTML report (``report.html``: plotly figures with
plotly.js inlined, so it opens offline), a one-screen summary of the findings (printed, and saved
as ``summary.txt``; ``findings.json`` holds each quoted number with the store filter it came from):

- head scan of ``induction-2l``, ``icll-dfa`` and ``smollm2-135m``;
- the summarize-merge-retrieve circuit with its ablations on ``icl-classify`` (synthetic
  classification) and on ``smollm2-135m`` (sentiment);
- ICL versus gradient descent on ``linreg-lsa-1l`` and ``icl-classify``.

Because it is a sweep, a second run reuses every stored unit and only rebuilds the report;
``--fresh`` recomputes (it removes only this study's units and report, never other files).
``--quick`` is a smaller study on the zoo models only (for tests).
A part whose model checkpoint or analysis module is missing is skipped with a printed note.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from experiments.runs import ResultsStore, modelinfo, run_sweep
from experiments.runs.analyses import get_analysis
from experiments.runs.config import loads_config, validate_config
from experiments.runs.report import build_report

DEMO_CONFIG = """\
# The standard study of `iclwb demo` (`iclwb sweep run configs/demo.toml` runs the same sweep).
name = "demo"
store = "results/demo"
seeds = [0]

# 1. Which heads implement ICL? (no task or k: the scan builds its own prompts)
[[grid]]
models = ["induction-2l", "icll-dfa", "smollm2-135m"]
analyses = ["head_scan"]

# 2. The summarize -> merge -> retrieve circuit, with knockouts beside random controls
[[grid]]
models = ["icl-classify"]
tasks = ["classify"]
k = [4]
seeds = [0, 1, 2]
analyses = ["circuit"]
[grid.params.circuit]
n_prompts = 64

[[grid]]
models = ["smollm2-135m"]
tasks = ["language:sentiment"]
k = [4]
seeds = [0, 1]
analyses = ["circuit"]
[grid.params.circuit]
n_prompts = 64

# 3. Does ICL behave like gradient descent on the same demonstrations?
[[grid]]
models = ["linreg-lsa-1l"]
tasks = ["linreg"]
k = [1, 2, 4, 8, 16]
analyses = ["icl_vs_gd"]
[grid.params.icl_vs_gd]
n_tasks = 256

[[grid]]
models = ["icl-classify"]
tasks = ["classify"]
k = [1, 2, 4, 8]
analyses = ["icl_vs_gd"]
[grid.params.icl_vs_gd]
n_prompts = 16

# 4. When do the heads form? (every checkpoint of the shipped series)
[[grid]]
models = ["induction-2l", "icl-classify"]
analyses = ["dynamics"]
[grid.params.dynamics]
n_prompts = 32
"""

QUICK_CONFIG = """\
# `iclwb demo --quick`: the zoo models only, few prompts (for tests).
name = "demo-quick"
store = "results/demo-quick"
seeds = [0]

[[grid]]
models = ["induction-2l", "icll-dfa"]
analyses = ["head_scan"]
[grid.params.head_scan]
save_attention = false

[[grid]]
models = ["icl-classify"]
tasks = ["classify"]
k = [4]
analyses = ["circuit"]
[grid.params.circuit]
n_prompts = 16

[[grid]]
models = ["linreg-lsa-1l"]
tasks = ["linreg"]
k = [2, 8]
analyses = ["icl_vs_gd"]
[grid.params.icl_vs_gd]
n_tasks = 64
order_perms = 2

[[grid]]
models = ["icl-classify"]
tasks = ["classify"]
k = [2]
analyses = ["icl_vs_gd"]
[grid.params.icl_vs_gd]
n_prompts = 4
epochs = 2
order_perms = 2

[[grid]]
models = ["induction-2l"]
analyses = ["dynamics"]
[grid.params.dynamics]
n_prompts = 8
"""


def demo_config(quick: bool = False, validate: bool = True, log=print):
    """The demo's sweep config, without the parts whose model or analysis is missing (each noted)."""

    cfg = loads_config(QUICK_CONFIG if quick else DEMO_CONFIG, name="demo", validate=False)
    notes: list[str] = []
    grids = []
    for g in cfg.grids:
        models = []
        for m in g.models:
            try:
                modelinfo.check_model_name(m)
                models.append(m)
            except ValueError as err:
                notes.append(f"skipping {', '.join(g.analyses)} on {m}: {err}")
        analyses = []
        for a in g.analyses:
            why = get_analysis(a).unavailable()
            if why:
                notes.append(f"skipping analysis {a} ({why})")
            else:
                analyses.append(a)
        if models and analyses:
            grids.append(replace(g, models=models, analyses=analyses,
                                 params={a: p for a, p in g.params.items() if a in analyses}))
    cfg.grids = grids
    for n in notes:
        log(f"note: {n}")
    if validate and grids:
        validate_config(cfg)
    return cfg, notes


REPORT_FILES = ("report.html", "summary.txt", "findings.json")


def remove_study(store, cfg, units) -> int:
    """What ``--fresh`` removes: this study's units (tables, artefacts, error records), its sweep
    record and its report files; nothing else in the folder (other sweeps' units, a user's notes).
    A unit shared with another sweep (same key) is removed too and recomputed identically."""
    n = store.remove_units(u.key for u in units)
    for ext in ("toml", "json"):
        (store.root / "sweeps" / f"{cfg.config_hash}.{ext}").unlink(missing_ok=True)
    for name in REPORT_FILES:
        (store.root / name).unlink(missing_ok=True)
    return n


def run_demo(quick: bool = False, out_dir: str = "results/demo", fresh: bool = False,
             workers: int | None = None, progress: bool = True) -> int:

    t0 = time.perf_counter()
    out = Path(out_dir)
    cfg, notes = demo_config(quick)
    if not cfg.grids:
        print("iclwb: error: nothing to run: no demo model or analysis is available "
              "(train the zoo with `iclwb zoo train NAME`)", file=sys.stderr)
        return 1
    units = cfg.units()
    if fresh and (out / "store.json").exists():
        n = remove_study(ResultsStore(out, create=False), cfg, units)
        print(f"--fresh: removed this study's {n} stored unit(s) and its report from {out} "
              f"(other files and other sweeps' units are kept)", flush=True)
    store = ResultsStore(out)
    todo = len(store.missing(units))
    if workers is None:
        workers = 1 if quick else min(2, os.cpu_count() or 1)
    print(f"ICL Workbench demo{' (quick)' if quick else ''}: {len(units)} units, {todo} to compute, "
          f"{len(units) - todo} stored -> {out}", flush=True)
    report = run_sweep(cfg, store, workers=workers, progress=progress)
    rep = build_report(store, title=f"ICL Workbench {'quick ' if quick else ''}demo: findings",
                       notes=notes + [f"{len(report.failed)} unit(s) failed: see {out}/errors/"] * bool(report.failed))
    html = rep.write(out / "report.html")
    print()
    print(rep.summary())
    print()
    print(report.summary())
    print(f"report: {html}  ({len(rep.figures)} figures; open it in a browser, works offline)")
    print(f"explore: iclwb app --results {out}")
    print(f"query:   iclwb sweep results --store {out} --analysis head_scan   (or SQL on the view of one run "
          f"per cell: --sql \"SELECT ... FROM current\")")
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return 0 if report.ok else 1
