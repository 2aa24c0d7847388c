"""``iclwb study full``: the replicated study on both pretrained models, then ``docs/findings.md``.

The study is the sweep config ``configs/full.toml`` (head scan; the circuit on four suite tasks;
ICL vs gradient descent for k = 1, 2, 4, 8; task / function vectors on six abstractive tasks; on
smollm2-135m and gemma3-270m). ``run_full``

1. prints the expected run time of the units the store still lacks (``estimate``: a cost model
   per analysis and model, ``COST``, measured by a pilot on the project's 2-core machine), then
2. runs them with ``experiments.runs.run_sweep`` (resumable after any interruption: finished
   units are stored one by one and skipped by the next run), and
3. writes the findings page from the store (``experiments.runs.findings.write_findings``).

``--analyses`` / ``--models`` / ``--tasks`` restrict a run to some analyses or models (the rest stay missing
until a later run), so a long study can be run in priority order.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.runs.config import load_config
from experiments.runs.executors import run_sweep
from experiments.runs.findings import write_findings
from experiments.runs.store import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
FULL_CONFIG = ROOT / "configs" / "full.toml"

COST: dict[tuple[str, str], tuple[float, float]] = {
    # (analysis, model) -> (fixed seconds per unit, seconds per unit of work), measured by pilots on
    # the project's shared 2-core machine (niced, other jobs running), 2026-12-02:
    # circuit (all steps): 65 s for 16 prompts at k = 4 on smollm2, 177 s on gemma; ablation step
    # alone 36 s on smollm2. icl_vs_gd: 126 s for 4 prompts at k = 1 with a 2 x 2 lr search on
    # smollm2 (~15 s per fine-tune). Work units: circuit = prompts; icl_vs_gd = fine-tunes;
    # vectors = prompts over the three sets; head_scan = fixed only.
    ("circuit", "smollm2-135m"): (10.0, 4.0),
    ("circuit", "gemma3-270m"): (20.0, 11.0),
    ("icl_vs_gd", "smollm2-135m"): (10.0, 15.0),
    ("icl_vs_gd", "gemma3-270m"): (20.0, 30.0),
    ("vectors", "smollm2-135m"): (30.0, 1.0),
    ("vectors", "gemma3-270m"): (40.0, 2.0),
    ("head_scan", "smollm2-135m"): (60.0, 0.0),
    ("head_scan", "gemma3-270m"): (120.0, 0.0),
}
"""Unknown (analysis, model) pairs fall back to the largest known cost of that analysis."""
LOAD_SECONDS = {"smollm2-135m": 30.0, "gemma3-270m": 40.0}


@dataclass
class Estimate:
    units: int
    pending: int
    seconds: float
    per_analysis: dict[str, float]

    def text(self) -> str:
        parts = ", ".join(f"{a} {s / 60:.0f} min" for a, s in sorted(self.per_analysis.items()))
        return (f"{self.pending} of {self.units} units to compute; expected run time "
                f"{_hms(self.seconds)} on this machine ({parts or 'nothing to do'})")


def _hms(s: float) -> str:
    h, rem = divmod(int(round(s)), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def unit_seconds(unit: Any) -> float:
    """The cost model's seconds for one sweep unit (``COST``; longer prompts cost more with k)."""
    p = unit.params
    key = (unit.analysis, unit.model)
    if key in COST:
        fixed, per = COST[key]
    else:
        known = [v for (a, _), v in COST.items() if a == unit.analysis]
        fixed, per = max(known) if known else (60.0, 10.0)
    n = int(p.get("n_prompts") or 0)
    length = (max(unit.k, 0) + 3) / 7  # prompt length relative to k = 4
    if unit.analysis == "circuit":
        steps = p.get("steps") or ["summarize", "merge", "retrieve", "ablation"]
        work = n * length * (0.55 if list(steps) == ["ablation"] else 1.0)
    elif unit.analysis == "icl_vs_gd":
        tunes = n + int(p.get("lr_search_prompts", 0)) * len(p.get("lr_grid") or [])
        if unit.k >= 2 and int(p.get("order_perms", 0)) >= 2:
            tunes += 2 * int(p["order_perms"]) * min(4, n)
        work = tunes * length
    elif unit.analysis == "vectors":
        work = 2 * n + (int(p.get("n_dev") or 0) or n)  # extract + eval, and dev
    else:
        work = 0.0
    return fixed + per * work


def estimate(units: Sequence[Any], store: Any = None) -> Estimate:
    """Expected wall time of the units ``store`` lacks (all of them without a store)."""
    pending = list(store.missing(units)) if store is not None else list(units)
    per: dict[str, float] = {}
    for u in pending:
        per[u.analysis] = per.get(u.analysis, 0.0) + unit_seconds(u)
    total = sum(per.values()) + sum(LOAD_SECONDS.get(m, 30.0) for m in {u.model for u in pending})
    return Estimate(len(units), len(pending), total, per)


def run_full(config: str | Path = FULL_CONFIG, store: str | Path | None = None, workers: int = 1,
             analyses: Sequence[str] = (), findings: str | Path | None = ROOT / "docs" / "findings.md",
             dry_run: bool = False, progress: bool = True, out: Any = None,
             models: Sequence[str] = (), tasks: Sequence[str] = (), ks: Sequence[int] = ()) -> int:
    """Estimate, run and publish the study (see the module doc). Returns an exit status."""

    out = out or sys.stdout
    cfg = load_config(config)
    units = cfg.units()
    if analyses:
        unknown = sorted(set(analyses) - {u.analysis for u in units})
        if unknown:
            raise ValueError(f"--analyses {unknown[0]!r} is not in {config}; it has "
                             f"{', '.join(sorted({u.analysis for u in units}))}")
        units = [u for u in units if u.analysis in set(analyses)]
    if models:
        unknown = sorted(set(models) - {u.model for u in units})
        if unknown:
            raise ValueError(f"--models {unknown[0]!r} has no units in {config}")
        units = [u for u in units if u.model in set(models)]
    if tasks:
        units = [u for u in units if u.task in set(tasks) or not u.task]
    if ks:
        units = [u for u in units if u.k in set(ks) or not u.k]
    root = Path(store or cfg.store or ROOT / "results" / cfg.name)
    rs = ResultsStore(root)
    est = estimate(units, rs)
    print(f"study {cfg.name!r} ({config}) -> {root}", file=out)
    print(est.text(), file=out, flush=True)
    if dry_run:
        return 0
    t0 = time.perf_counter()
    report = run_sweep(cfg, rs, workers=workers, progress=progress, units=units)
    print(report.summary(), file=out)
    print(f"took {_hms(time.perf_counter() - t0)} (expected {_hms(est.seconds)})", file=out)
    if findings:

        path = write_findings(root, findings, config=str(config))
        print(f"findings -> {path}", file=out)
    return 0 if report.ok else 1


__all__ = ["COST", "FULL_CONFIG", "Estimate", "estimate", "run_full", "unit_seconds"]

