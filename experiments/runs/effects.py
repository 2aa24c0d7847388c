"""Every tested claim of a store as one row per (claim, model): its effect (condition minus
baseline, ``probes.verdicts.SIGN_CONVENTION``), interval, q, n, MDE and verdict. The verdict table
that opens the report and the findings page, and the forest plots of each question, are drawn from
these rows, so the two pages and the figures agree.

- head scan: the top induction heads' score minus its null (``finding_rows.induction_rows``);
- circuit: ICL minus zero-shot, and each knockout minus its random control (``ablation_summary``);
- ICL vs GD: fine-tuned (GD) minus ICL accuracy per k (``finding_rows.ivg_rows``); for linear
  regression each reference learner's error minus the model's (``icl_vs_gd_stats``);
- ICL vectors: accuracy with the vector minus with a random vector of the same norm.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from experiments.runs.finding_rows import (
    circuit_rows,
    icl_explained,
    icl_gain,
    induction_rows,
    ivg_rows,
    models_in,
    vector_rows,
)
from experiments.runs.tables import interval, p_text
from experiments.studies.icl_vs_gd import icl_vs_gd_stats
from probes import verdicts

COLUMNS = ["question", "claim", "label", "sentence", "model", "detail", "effect", "ci_low", "ci_high", "p_value",
           "q_value", "n", "mde", "verdict", "words", "note", "headline", "unit"]
"""``question``: the report section; ``claim``: the row label shared by the models (``label``: its
short form on a forest plot); ``sentence``: the claim in one sentence; ``detail``: what differs
per model (the head, the knockout's layers); ``words``: the verdict in words
(``verdicts.verdict_words``); ``note``: the sentence an interval that seems to disagree with its
verdict needs, and "no ICL to explain"; ``headline``: shown in the verdict table (the forest
plots show every row); ``unit``: what the effect is measured in (one forest plot per unit)."""

KNOCKOUTS = {
    "xi_to_si": "s_i ← x_i (summarize a demonstration)",
    "xq_to_sq": "s_q ← x_q (summarize the query)",
    "si_to_yi": "y_i ← s_i (merge into the label)",
    "yi_to_sq": "s_q ← y_i (retrieve the labels)",
    "si_to_sj": "s_j ← s_i (separators read earlier separators)",
}
"""The attention edges each circuit knockout blocks (``circuits.icl_circuit.ABLATIONS``)."""


HEADLINE_REFERENCES = ("gd1", "least squares")
"""The linear-regression reference learners the verdict table shows (every one is in the forest plot)."""


def _row(r: Any, icl_ok: bool = True, **kw: Any) -> dict[str, Any]:
    r = dict(r)
    out = {c: r.get(c, math.nan) for c in ("effect", "p_value", "q_value", "n", "mde", "verdict")}
    out.update(ci_low=r.get("effect_ci_low", math.nan), ci_high=r.get("effect_ci_high", math.nan), **kw)
    out["words"] = verdicts.verdict_words(r, None)
    notes = [verdicts.agreement_note(r)]
    if not icl_ok:
        notes.append(verdicts.NO_ICL)
    out["note"] = "; ".join(n for n in notes if n)
    return out


def effect_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The tested claims of ``df`` (a store's current rows), one row per (claim, model), in the
    page's model order; ``COLUMNS``."""
    rows: list[dict[str, Any]] = []
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    ind = induction_rows(df)
    for r in (ind.to_dict("records") if len(ind) and "effect" in ind else []):
        if not np.isfinite(float(r.get("effect", math.nan))):
            continue
        first = r["head"] == ind[ind["model"] == r["model"]]["head"].iloc[0]
        rows.append(_row(r, question="head scan", model=r["model"], detail=r["head"], unit="induction score",
                         label=f"{r['model']} {r['head']}",
                         claim="top induction head: score minus its null" if first else f"induction head {r['head']}",
                         sentence="The top induction head attends to the token after the current token's earlier "
                                  "copy more than on sequences whose second half is fresh (its null).",
                         headline=first))
    circ = circuit_rows(df)
    if len(circ) and "verdict" in circ:
        gain = icl_gain(circ)
        multi_k = circ.groupby("task")["k"].nunique().max() > 1
        for r in circ[circ["ablation"] != "zero_shot"].to_dict("records"):
            task = f"{r['task']}, k={r['k']}" if multi_k else r["task"]
            if r["ablation"] == "unablated":
                rows.append(_row(r, question="circuit", model=r["model"], detail=f"k={r['k']}", unit="ICL gain", label=task,
                                 claim=f"{task}: ICL minus zero-shot accuracy", headline=True,
                                 sentence=f"Demonstrations raise accuracy on {r['task']} over zero-shot."))
                continue
            edge = KNOCKOUTS.get(r["ablation"], r["ablation"])
            rows.append(_row(r, question="circuit", model=r["model"], detail=f"layers {r.get('window', '')}",
                             unit="knockout", label=f"{task}: {r['ablation']}",
                             claim=f"{task}: knockout {r['ablation']} minus random control",
                             sentence=f"Blocking {edge} costs more accuracy than blocking as many random edges.",
                             headline=True,
                             icl_ok=icl_explained(gain, r["model"], r["task"])))
    rows += _ivg(df)
    vec = vector_rows(df)
    for r in (vec.to_dict("records") if len(vec) and "effect" in vec else []):
        if not np.isfinite(float(r.get("effect", math.nan))):
            continue
        layer = r.get("layer", math.nan)
        rows.append(_row(r, question="ICL vectors", model=r["model"], unit="vector",
                         label=f"{r['task']}: {str(r['method']).replace('_', ' ')}",
                         detail=f"layer {int(layer)}" if np.isfinite(layer) else "",
                         claim=f"{r['task']}: {str(r['method']).replace('_', ' ')} minus a random vector",
                         sentence=f"Adding the {str(r['method']).replace('_', ' ')} to a zero-shot prompt raises "
                                  f"accuracy on {r['task']} more than a random vector of the same norm.",
                         headline=True, icl_ok=bool(r.get("icl_ok", True))))
    out = pd.DataFrame(rows, columns=COLUMNS)
    order = {m: i for i, m in enumerate(models_in(out))}
    return out.assign(_m=out["model"].map(order)).sort_values(["_m"], kind="stable").drop(columns="_m") \
        .reset_index(drop=True) if len(out) else out


def _ivg(df: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    ivg = ivg_rows(df)
    ivg = ivg.sort_values(["task", "k"], kind="stable") if len(ivg) else ivg
    for r in (ivg.to_dict("records") if len(ivg) and "effect" in ivg else []):
        if not np.isfinite(float(r.get("effect", math.nan))):
            continue
        rows.append(_row(r, question="ICL vs GD", model=r["model"], detail=f"k={r['k']}", unit="accuracy",
                         label=f"{r['task']}, k={r['k']}",
                         claim=f"{r['task']}, k={r['k']}: GD minus ICL accuracy", headline=True,
                         sentence=f"A model fine-tuned on the {r['k']} demonstrations (GD) is as accurate on "
                                  f"{r['task']} as ICL with them.", icl_ok=bool(r.get("icl_ok", True))))
    lin = df[(df["analysis"] == "icl_vs_gd") & (df["metric"] == "err_model")]
    for (model, task), _ in lin.groupby(["model", "task"], sort=False):
        d = df[(df["analysis"] == "icl_vs_gd") & (df["model"] == model) & (df["task"] == task)]
        if not ("prompt" in d.columns and (d["prompt"] >= 0).any()):
            continue
        cmp = icl_vs_gd_stats(d.drop(columns=["analysis"]).dropna(axis=1, how="all")).comparisons
        cmp = cmp[(cmp["condition"] == "err_model") & cmp["control"].str.startswith("err_")
                  & (cmp.get("layer", -1) == -1)]
        for r in cmp.sort_values(["control", "k"]).to_dict("records"):
            ref = r["control"].removeprefix("err_").replace("_", " ")
            # reported as the reference minus ICL (the sign convention's "GD minus ICL")
            r.update(effect=-r["effect"], effect_ci_low=-r["effect_ci_high"], effect_ci_high=-r["effect_ci_low"],
                     value=r["control_value"], control_value=r["value"])
            rows.append(_row(r, question="ICL vs GD", model=model, detail=f"k={r['k']}", unit="squared error",
                             label=f"{task} {ref}, k={r['k']}",
                             claim=f"{task}, k={r['k']}: {ref} error minus ICL error",
                             headline=ref in HEADLINE_REFERENCES,
                             sentence=f"The {ref} learner's squared error on the query equals the model's."))
    return rows


def cell(r: Any) -> str:
    """One verdict-table cell: the verdict in words, then the effect and its interval, q and n,
    and the per-model detail (e.g. "significantly lower: -0.234 [-0.317, -0.126], q < 0.001,
    n=128; layers 0-5")."""
    r = dict(r)
    text = f"{r['words']}: {interval(r['effect'], r['ci_low'], r['ci_high'])}"
    if np.isfinite(float(r.get("q_value", math.nan))):
        text += f", q {'< 0.001' if float(r['q_value']) < 0.001 else '= ' + p_text(r['q_value'])}"
    if np.isfinite(float(r.get("n", math.nan))):
        text += f", n={int(r['n'])}"
    text += f"; {r['detail']}" if r.get("detail") else ""
    return text + (f" ({r['note']})" if r.get("note") else "")


def verdict_table(rows: pd.DataFrame, wide: bool | None = None) -> pd.DataFrame:
    """The verdict table: one row per headline claim, a column with the claim in one sentence,
    and one column per model holding ``cell`` ("not run" where the model lacks the claim). Where
    the models share few claims (``wide=None``: under 1.5 models per claim) one row per (claim,
    model) instead, with ``model`` and ``result`` columns."""
    head = rows[rows["headline"].astype(bool)] if len(rows) else rows
    if head.empty:
        return pd.DataFrame(columns=["question", "claim", "sentence"])
    models = list(dict.fromkeys(head["model"]))
    if wide is None:
        wide = len(models) > 1 and head.groupby("claim", sort=False)["model"].nunique().mean() >= 1.5
    out = []
    for claim, g in head.groupby("claim", sort=False):
        base = {"question": g["question"].iloc[0], "claim": claim, "sentence": g["sentence"].iloc[0]}
        if wide:
            by = {r["model"]: cell(r) for r in g.to_dict("records")}
            out.append({**base, **{m: by.get(m, "not run") for m in models}})
        else:
            out += [{**base, "model": r["model"], "result": cell(r)} for r in g.to_dict("records")]
    order = {q: i for i, q in enumerate(("head scan", "circuit", "ICL vs GD", "ICL vectors"))}
    t = pd.DataFrame(out)
    return t.assign(_q=t["question"].map(order).fillna(9)).sort_values("_q", kind="stable").drop(columns="_q") \
        .reset_index(drop=True)
