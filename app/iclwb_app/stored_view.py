"""Stored units as the pages' live results: the head scan, the ICL vectors and the training
dynamics of a results store, turned back into the tables the live studies return, with the
verdicts the findings page computes (``experiments.runs.findings``), so both show the same numbers.

Each function takes the rows of one cell (the current unit only: ``ResultsDB`` reads the store's
``current`` view), as ``ResultsDB.frame`` returns them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.runs import findings
from experiments.runs.store import PROVENANCE_COLUMNS

STORED = "Stored sweep"
LIVE = "Live run"
SOURCES = [LIVE, STORED]
"""The source picker of the head scan, ICL vectors and training dynamics pages."""


def _ints(df: pd.DataFrame, cols: tuple[str, ...], fill: int = -1) -> pd.DataFrame:
    df = df.copy()
    for c in cols:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").fillna(fill).astype(int)
    return df


# ------------------------------------------------------------------------------------ head scan
def scan_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """A stored head-scan unit's per-head scores as ``scan_view``'s tidy table: score, layer,
    head, value: each head's aggregate row (``prompt`` -1 or absent), except that a head with
    per-prompt rows (``induction:prompt``: the top heads, the verdicts' input) gets their mean,
    the number the findings page quotes. (The aggregate is measured on the scan's own prompt set:
    smollm2 L18H6 0.862 there vs 0.854 over the 32 verdict prompts; a head shows one number
    everywhere.)"""
    if rows.empty:
        return pd.DataFrame(columns=["score", "layer", "head", "value"])
    d = _ints(rows[rows["layer"].notna() & rows["head"].notna()], ("layer", "head"))
    d = d[(d["layer"] >= 0) & (d["head"] >= 0)]
    metric = d["metric"].astype(str)
    per_prompt = d[metric.str.endswith(":prompt") & ~metric.str.contains("_null")]
    means = (per_prompt.assign(metric=per_prompt["metric"].str.removesuffix(":prompt"))
             .groupby(["metric", "layer", "head"], as_index=False)["value"].mean())
    if "prompt" in d.columns:
        d = d[pd.to_numeric(d["prompt"], errors="coerce").fillna(-1) < 0]
    d = d[~d["metric"].astype(str).str.contains(":")][["metric", "layer", "head", "value"]]
    keys = ["metric", "layer", "head"]
    d = d.merge(means.rename(columns={"value": "per_prompt"}), on=keys, how="left")
    d["value"] = d["per_prompt"].fillna(d["value"])
    return d.rename(columns={"metric": "score"})[["score", "layer", "head", "value"]].reset_index(drop=True)


def scan_verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    """The top induction heads against their null, as the findings page computes them
    (``findings.induction_rows``), with the columns the head-scan page shows."""
    ind = findings.induction_rows(rows)
    if ind.empty or "p_value" not in ind.columns or ind["p_value"].isna().all():
        return pd.DataFrame()
    heads = ind["head"].astype(str).str.extract(r"L(\d+)H(\d+)").astype(int)
    return ind.assign(metric="induction", layer=heads[0], head=heads[1]).rename(columns={"null": "null_value"})


# ------------------------------------------------------------------------------------ vectors
def vectors_out(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A stored vectors unit as ``vectors_study.run_study``'s output: ``accuracy`` (every method x
    condition x layer/lambda x split), ``summary`` (one row per method, a column per condition),
    ``per_prompt`` (0/1 outcomes) and ``aie`` where stored."""
    out: dict[str, pd.DataFrame] = {}
    drop = [c for c in PROVENANCE_COLUMNS if c not in ("model", "task", "k", "seed")] + ["metric"]

    def part(metric: str) -> pd.DataFrame:
        d = rows[rows["metric"] == metric]
        return d.drop(columns=[c for c in drop if c in d.columns]).dropna(axis=1, how="all").reset_index(drop=True)

    acc = part("accuracy")
    if len(acc):
        out["accuracy"] = acc.rename(columns={"value": "accuracy"})
    summ = part("summary")
    if len(summ):
        order = list(dict.fromkeys(summ["method"]))
        wide = summ.pivot_table(index="method", columns="condition", values="value", aggfunc="first")
        wide.columns.name = None
        meta = [c for c in ("layer", "lam", "n_prompts") if c in summ.columns]
        chosen = summ.sort_values("condition", key=lambda c: c != "with vector", kind="stable")
        info = chosen.groupby("method", sort=False)[meta].first() if meta else pd.DataFrame(index=wide.index)
        out["summary"] = info.join(wide).loc[order].reset_index()
    pp = part("correct")
    if len(pp):
        out["per_prompt"] = pp
    aie = part("aie")
    if len(aie):
        out["aie"] = _ints(aie.rename(columns={"value": "aie"}), ("layer", "head"))
    return out


def vector_findings(all_vectors: pd.DataFrame, model: str, task: str) -> pd.DataFrame:
    """The findings page's vector rows (``findings.vector_rows``, BH over every stored cell, as the
    page does) for one model and task: accuracies, recovery, vector vs random vector, verdict."""
    rows = findings.vector_rows(all_vectors)
    if rows.empty:
        return rows
    return rows[(rows["model"] == model) & (rows["task"] == task)].reset_index(drop=True)


# ------------------------------------------------------------------------------------ dynamics
def dynamics_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """A stored dynamics unit as ``dynamics.dynamics_table``'s table (the analysis stores its
    ``k`` as ``shots``: the unit's own k is 0)."""
    d = rows.drop(columns=[c for c in PROVENANCE_COLUMNS if c in rows.columns and c != "model"])
    d = d.dropna(axis=1, how="all")
    if "shots" in d.columns:
        d = d.rename(columns={"shots": "k"})
    d = _ints(d, ("step",), fill=0)
    d = _ints(d, ("layer", "head", "position", "k"))
    for c in ("ci_low", "ci_high", "n"):
        if c not in d.columns:
            d[c] = np.nan
    return d.sort_values(["step"], kind="stable").reset_index(drop=True)


def cell_label(r: Any) -> str:
    """``model · task · k=K · seed S`` for a picker of stored cells."""
    task = f" · {r['task']}" if r.get("task") else ""
    return f"{r['model']}{task} · k={int(r['k'])} · seed {int(r['seed'])}"
