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

from experiments.runs import modelinfo
from experiments.runs.config import load_config
from experiments.runs.executors import expected_provenance, run_sweep
from experiments.runs.findings import write_findings
from experiments.runs.power import preflight
from experiments.runs.store import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
FULL_CONFIG = ROOT / "configs" / "full.toml"

COST: dict[tuple[str, str], tuple[float, float]] = {
    # (analysis, model) -> (fixed seconds per unit, seconds per unit of work): the full study's own
    # units on the project's 2-core machine (2 workers of 1 thread), 2026-12-06, store results/full:
    # circuit (all steps) 110-230 s per task at 128 prompts, k = 4, on both models (the ablation
    # step alone costs about as much: the three measuring steps are cheap); icl_vs_gd 31-107 s per
    # k on smollm2 and 60-224 s on gemma (32 prompts, 2 x 4 lr-search fine-tunes, order perms);
    # vectors 187 s (smollm2) and 401 s (gemma) per task at 7 layers and one FV scale.
    # Work units: circuit = prompts; icl_vs_gd = fine-tunes; vectors = prompts over the three
    # sets times the injection sweep (layers x (1 + FV scales), 7 x 2 = 1); head_scan = fixed only.
    ("circuit", "smollm2-135m"): (10.0, 1.0),
    ("circuit", "gemma3-270m"): (20.0, 1.2),
    ("icl_vs_gd", "smollm2-135m"): (10.0, 1.0),
    ("icl_vs_gd", "gemma3-270m"): (20.0, 2.0),
    ("vectors", "smollm2-135m"): (30.0, 0.55),
    ("vectors", "gemma3-270m"): (40.0, 1.25),
    ("head_scan", "smollm2-135m"): (40.0, 0.0),
    ("head_scan", "gemma3-270m"): (200.0, 0.0),
}
"""Unknown (analysis, model) pairs fall back to the largest known cost of that analysis."""
LOAD_SECONDS = {"smollm2-135m": 30.0, "gemma3-270m": 40.0}


@dataclass
class Estimate:
    units: int
    pending: int
    seconds: float
    per_analysis: dict[str, float]
    workers: int = 1

    def text(self) -> str:
        parts = ", ".join(f"{a} {s / 60:.0f} min" for a, s in sorted(self.per_analysis.items()))
        on = f"{self.workers} workers" if self.workers > 1 else "1 worker"
        return (f"{self.pending} of {self.units} units to compute; expected run time "
                f"{_hms(self.seconds)} on this machine with {on} ({parts or 'nothing to do'} of "
                "one worker's time)")


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
        work = n * length * (0.85 if list(steps) == ["ablation"] else 1.0)
    elif unit.analysis == "icl_vs_gd":
        tunes = n + int(p.get("lr_search_prompts", 0)) * len(p.get("lr_grid") or [])
        if unit.k >= 2 and int(p.get("order_perms", 0)) >= 2:
            tunes += 2 * int(p["order_perms"]) * min(4, n)
        work = tunes * length
    elif unit.analysis == "vectors":
        layers = len(p.get("layers") or []) or modelinfo.n_layers(unit.model) or 12
        injections = layers * (1 + len(p.get("fv_scales") or [1.0])) / 14  # 7 layers, 1 scale = 1
        work = (2 * n + (int(p.get("n_dev") or 0) or n)) * injections  # extract + eval, and dev
    else:
        work = 0.0
    return fixed + per * work


def _to_compute(units: Sequence[Any], store: Any) -> list[Any]:
    """The units a run would compute: missing, stale (stored by other code or weights) or damaged."""
    if store is None:
        return list(units)
    states = store.classify(list(units), expected_provenance(list(units)))
    return [u for u in units if states[u.key][0] != "done"]


def estimate(units: Sequence[Any], store: Any = None, workers: int = 1) -> Estimate:
    """Expected wall time of the units ``store`` lacks (all of them without a store), with
    ``workers`` processes sharing them (``per_analysis`` stays the one-worker sum)."""
    pending = _to_compute(units, store)
    per: dict[str, float] = {}
    for u in pending:
        per[u.analysis] = per.get(u.analysis, 0.0) + unit_seconds(u)
    share = max(1, min(workers, len(pending)))
    total = sum(per.values()) / share + sum(LOAD_SECONDS.get(m, 30.0) for m in {u.model for u in pending})
    return Estimate(len(units), len(pending), total, per, share)


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
    est = estimate(units, rs, workers)
    print(f"study {cfg.name!r} ({config}) -> {root}", file=out)
    print(est.text(), file=out, flush=True)
    for line in preflight(units, rs.frame() if rs.finished_keys() else None):
        print(f"power: {line}", file=out, flush=True)
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

