"""The ``fv_heads`` analysis: do function-vector heads or induction heads matter for ICL?
(Yin & Steinhardt, ICML 2025; issue 25, part 1).

On one model, per head: the induction score (``probes.heads.induction_scores``) and the FV score
(Todd et al.'s AIE, mean over the ``score_tasks``; ``fv_score="exact"`` runs every head,
``"attribution"`` its first-order estimate, one backward pass). Then, on the unit's own task
(held out: it may not be a score task), for each p in ``percents``: the top p% of heads by one
score, after excluding the top ``exclude``% of the other, mean-ablated at the read-out
(``circuits.head_ablation``), beside a layer-matched random control of the same size (where a
layer has too few other heads, the rest come from the nearest layers).

Rows (tidy): ``metric="correct"`` per prompt and condition (``unablated``, ``fv:P``,
``fv:P:random``, ``induction:P``, ``induction:P:random``; column ``score``, ``percent``,
``heads``), and per head ``metric`` ``fv_score`` / ``induction_score`` (``layer``, ``head``,
``prompt`` -1; per score task ``fv_score:task`` with ``score_task``). ``fv_heads_stats`` pairs
them: each ablation against its control and against the unablated model, and FV against
induction ablation at the same p (McNemar, one BH family per unit).

Not yet here (issue 25): TransformerLens's ``detect_head`` beside the induction score, the token
loss difference on natural text, the emergence across checkpoints, the app page and notebook 07.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from circuits import head_ablation as HA
from circuits import vectors
from experiments.runs.inputs import get_model, make_task_batch, split_task, token_task_only, with_precision
from experiments.runs.registry import AnalysisResult, AnalysisSpec, register
from probes import stats
from probes.heads import induction_scores

SCORES = ("fv", "induction")
AIE_CHUNK = 64
"""Rows per forward of the exact AIE (``head_aie`` computes full logits: 64 rows of Gemma 3's
262k-token vocabulary at ~35 positions are ~2.3 GB)."""


def fv_scores(model: Any, model_name: str, tasks: list[str], k: int, seed: int, n_prompts: int,
              how: str = "exact") -> tuple[Any, dict[str, Any]]:
    """The FV score of every head: the mean over ``tasks`` of its AIE on label-shuffled prompts
    (``circuits.vectors.head_aie``, with the task-mean output at the read-out of clean prompts),
    and each task's own table."""
    per_task = {}
    for t in tasks:
        batch = make_task_batch(model_name, t, k, seed + 100, n_prompts)
        mean_z = vectors.mean_head_outputs(model, batch)
        shuffled = batch.shuffle_labels(seed=seed)
        per_task[t] = (vectors.head_aie(model, shuffled, mean_z, chunk=AIE_CHUNK) if how == "exact"
                       else vectors.head_aie_attribution(model, shuffled, mean_z))
    return torch.stack(list(per_task.values())).mean(0), per_task


def _fv_heads(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
    model = get_model(model_name, params["precision"])
    L, H = model.cfg.n_layers, model.cfg.n_heads
    fv, per_task = fv_scores(model, model_name, list(params["score_tasks"]), k, seed, params["n_aie_prompts"],
                             params["fv_score"])
    ind = induction_scores(model, batch=params["induction_prompts"], seed=seed,
                           bos=getattr(getattr(model, "tokenizer", None), "bos_token_id", None)).scores
    score = {"fv": fv, "induction": ind}
    batch = make_task_batch(model_name, task, k, seed, params["n_prompts"])
    mean_z = vectors.mean_head_outputs(model, batch)
    conds: list[tuple[str, str, float, list]] = [("unablated", "", math.nan, [])]
    exclude = params["exclude"] / 100
    for p in params["percents"]:
        for name in SCORES:
            other = score["induction" if name == "fv" else "fv"]
            sel, ex = HA.select_heads(score[name], other, p / 100, exclude)
            ctl = HA.matched_random(sel, H, seed=params["control_seed"] + int(p * 100), avoid=ex,
                                    n_layers=L, nearest=True)
            conds += [(f"{name}:{p:g}", name, p, sel), (f"{name}:{p:g}:random", name, p, ctl)]
    ok = HA.correct(HA.mean_ablated_logits(model, batch, [c[3] for c in conds], mean_z), batch)
    rows = []
    for (cond, name, p, heads), outcomes in zip(conds, ok):
        label = ";".join(f"L{a}H{b}" for a, b in heads)
        rows += [{"metric": "correct", "condition": cond, "score": name, "percent": p, "heads": label,
                  "prompt": i, "value": float(v)} for i, v in enumerate(outcomes.tolist())]
    for name, table in (("fv_score", fv), ("induction_score", ind)):
        rows += [{"metric": name, "layer": a, "head": b, "prompt": -1, "value": float(table[a, b])}
                 for a in range(L) for b in range(H)]
    for t, table in per_task.items():
        rows += [{"metric": "fv_score:task", "score_task": t, "layer": a, "head": b, "prompt": -1,
                  "value": float(table[a, b])} for a in range(L) for b in range(H)]
    df = pd.DataFrame(rows)
    df["n_prompts"] = params["n_prompts"]
    return with_precision(AnalysisResult(df), params["precision"])


def fv_heads_stats(table: pd.DataFrame) -> stats.StatsTables:
    """Per (model, task, k) of ``table`` (the analysis's rows): accuracy per condition with its
    interval, and the paired comparisons (McNemar on the same prompts, one BH family per run):
    each ablation against its layer-matched control and against the unablated model, and FV
    against induction ablation at the same p."""
    d = stats.with_unit_columns(table[table["metric"] == "correct"])
    by = [c for c in ("model", "task", "k") if c in d.columns]
    est = stats.summarize(d, [*by, "condition"]) if len(d) else pd.DataFrame()
    parts = []
    for key, run in (d.groupby(by, sort=False) if by else [((), d)]):
        conds = set(run["condition"])
        pairs = []
        for p in sorted(run["percent"].dropna().unique()):
            for name in SCORES:
                c = f"{name}:{p:g}"
                pairs += [(c, f"{c}:random"), (c, "unablated")]
            pairs.append((f"fv:{p:g}", f"induction:{p:g}"))
        pairs = [x for x in pairs if set(x) <= conds]
        cmp = stats.compare(run, pairs, condition="condition")
        parts.append(cmp.assign(**dict(zip(by, key if isinstance(key, tuple) else (key,)))))
    return stats.StatsTables(est, pd.concat(parts, ignore_index=True) if parts else pd.DataFrame())


def _check(model: str, task: str, k: int, params: dict[str, Any]) -> str | None:
    score_tasks = list(params["score_tasks"])
    if not score_tasks:
        return ("score_tasks is empty: name the tasks the FV scores are measured on (e.g. [\"fv:antonym\", "
                "\"fv:capitalize\"]); the unit's own task is the held-out one the heads are ablated on")
    if task in score_tasks:
        return (f"the unit's task {task!r} is also a score task: heads must be chosen on other tasks than the one "
                f"they are tested on; remove it from score_tasks")
    bad = [p for p in params["percents"] if not (isinstance(p, (int, float)) and 0 < p <= 50)]
    if bad or not params["percents"]:
        return f"percents={list(params['percents'])!r}: give percentages of all heads in (0, 50], e.g. [1, 2, 5, 10, 20]"
    if not 0 <= params["exclude"] < 50:
        return f"exclude={params['exclude']!r}: the percentage of the other score's top heads to leave out, in [0, 50)"
    if params["fv_score"] not in ("exact", "attribution"):
        return f"fv_score={params['fv_score']!r}: use 'exact' (Todd's AIE on every head) or 'attribution'"
    return None


register(AnalysisSpec(
    name="fv_heads", fn=_fv_heads, check_params=_check,
    params={"n_prompts": 64, "score_tasks": [], "n_aie_prompts": 16, "fv_score": "exact",
            "percents": [1, 2, 5, 10, 20], "exclude": 2.0, "induction_prompts": 16, "control_seed": 0,
            "precision": "float32"},
    uses_task=True, uses_k=True,
    description="FV heads vs induction heads: ablate the top p% by each score, with exclusion, beside "
                "layer-matched random heads, on a held-out task (Yin & Steinhardt 2025)",
    requires=("circuits.head_ablation",),
    code=("experiments.runs.analyses.fv_heads", "experiments.runs.inputs", "circuits.vectors"),
    applies=lambda m, t: token_task_only(m, t) or (
        None if split_task(t)[0] in ("classify", "language", "fv", "file")
        else "the FV-head ablations need a task with demonstrations and labels"),
))
