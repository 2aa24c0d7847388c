"""The rows behind the findings page (``experiments.runs.findings``): one table per question, each
row a number with its interval, test, q-value and verdict, computed from a store's current rows.

1. ``induction_rows``: the top 5 induction heads of the head scan against their null;
2. ``circuit_rows``: ``ablation_summary`` per task (knockout vs control, ICL vs zero-shot), and
   ``icl_gain``: whether the ICL gain each knockout is meant to explain is significant;
3. ``ivg_rows``: ICL vs GD per k (GD - ICL accuracy, agreement metrics);
4. ``vector_rows``: task / function vectors against a random vector of the same norm.

Where a unit stored only an accuracy and its n (no per-prompt outcomes), the 0/1 outcomes are
rebuilt from them (Wilson intervals are exact that way) and comparisons are unpaired (conservative;
stated in the table).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from circuits.icl_circuit import ablation_summary
from experiments.studies.icl_vs_gd import icl_vs_gd_stats
from experiments.studies.vectors_study import vectors_stats
from probes import stats

MODELS = ("smollm2-135m", "gemma3-270m")
"""The page's model order (others follow alphabetically)."""


def _binary(acc: float, n: int) -> np.ndarray:
    k = int(round(acc * n))
    return np.array([1.0] * k + [0.0] * (n - k))


def models_in(df: pd.DataFrame) -> list[str]:
    """The models of ``df`` in the page's order (``MODELS`` first)."""
    found = list(df["model"].unique()) if len(df) else []
    return [m for m in MODELS if m in found] + sorted(m for m in found if m not in MODELS)


# ------------------------------------------------------------------------------- 1. induction heads
def induction_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Per model: the top 5 induction heads, score vs null with interval, q (BH over the 5), verdict."""
    out = []
    if df.empty:
        return pd.DataFrame()
    scan = df[df["analysis"] == "head_scan"]
    for model in models_in(scan):
        d = scan[scan["model"] == model]
        per = d[d["metric"] == "induction:prompt"]
        null = d[d["metric"] == "induction_null:prompt"]
        if per.empty:
            top = d[d["metric"] == "induction"].sort_values("value", ascending=False).head(5)
            for _, r in top.iterrows():
                out.append(dict(model=model, head=f"L{int(r['layer'])}H{int(r['head'])}", value=r["value"],
                                ci_low=math.nan, ci_high=math.nan, null=math.nan, effect=math.nan,
                                effect_ci_low=math.nan, effect_ci_high=math.nan, p_value=math.nan, n=0))
            continue
        rows = []
        for (l, h), g in per.groupby(["layer", "head"], sort=False):
            x = g.sort_values("prompt")["value"].to_numpy()
            y = null[(null["layer"] == l) & (null["head"] == h)].sort_values("prompt")["value"].to_numpy()
            est = stats.estimate(x)
            c = stats.unpaired(x, y)
            rows.append(dict(model=model, head=f"L{int(l)}H{int(h)}", value=est.value, ci_low=est.ci_low,
                             ci_high=est.ci_high, null=c.control_value, effect=c.effect,
                             effect_ci_low=c.effect_ci_low, effect_ci_high=c.effect_ci_high,
                             p_value=c.p_value, n=est.n))
        fam = pd.DataFrame(rows).sort_values("value", ascending=False)
        out += stats.add_q_and_verdicts(fam).to_dict("records")
    res = pd.DataFrame(out)
    if len(res) and "verdict" not in res:
        res["verdict"] = "no per-prompt scores stored"
    return res


# ------------------------------------------------------------------------------- 2. circuit
def circuit_rows(df: pd.DataFrame) -> pd.DataFrame:

    if df.empty:
        return pd.DataFrame()
    circ = df[(df["analysis"] == "circuit")]
    if circ.empty or "prompt" not in circ:
        return pd.DataFrame()
    cols = [c for c in circ.columns if c not in ("analysis",)]
    return ablation_summary(circ[cols])


# ------------------------------------------------------------------------------- 3. ICL vs GD
IVG_AGREEMENT = ("topk_overlap", "kl_icl_gd", "tv_icl_gd", "rec2ftp")


def ivg_rows(df: pd.DataFrame) -> pd.DataFrame:
    ivg = df[(df["analysis"] == "icl_vs_gd")]
    if ivg.empty:
        return pd.DataFrame()
    out = []
    for (model, task, k), d in ivg.groupby(["model", "task", "k"], sort=False):
        val = {m: d[(d.metric == m) & (d.get("layer", -1) == -1)] for m in
               ("acc_zs", "acc_icl", "acc_gd", *IVG_AGREEMENT)}
        n = int(d["n_prompts"].dropna().iloc[0]) if "n_prompts" in d and d["n_prompts"].notna().any() else 0

        def mean(m: str) -> float:
            v = val[m]
            v = v[v["prompt"] < 0] if "prompt" in v and (v["prompt"] < 0).any() else v
            return float(v["value"].mean()) if len(v) else math.nan
        r: dict[str, Any] = dict(model=model, task=task, k=int(k), n=n)
        for m in ("acc_zs", "acc_icl", "acc_gd"):
            a = mean(m)
            r[m] = a
            if n and np.isfinite(a):
                e = stats.estimate(_binary(a, n))
                r[f"{m}_ci"] = (e.ci_low, e.ci_high)
        for m in IVG_AGREEMENT:
            r[m] = mean(m)
        paired_done = False
        if "prompt" in d and (d["prompt"] >= 0).any():  # per-prompt rows: paired (McNemar)

            try:
                st = icl_vs_gd_stats(d.drop(columns=["analysis"]))
                est = st.estimates.set_index("metric")
                for m in ("acc_zs", "acc_icl", "acc_gd"):
                    if m in est.index:
                        e = est.loc[m] if est.loc[m].ndim == 1 else est.loc[m].iloc[0]
                        r[m], r[f"{m}_ci"] = float(e.value), (float(e.ci_low), float(e.ci_high))
                c = st.comparisons
                g = c[(c.condition == "acc_icl") & (c.control == "acc_zs")]
                if len(g):
                    r["icl_ok"] = bool(g.iloc[0].verdict == "significant" and g.iloc[0].effect > 0)
                c = c[(c.condition == "acc_icl") & (c.control == "acc_gd")]
                if len(c):
                    c = c.iloc[0]  # reported as GD - ICL
                    r.update(gd_minus_icl=-c.effect, gd_minus_icl_ci=(-c.effect_ci_high, -c.effect_ci_low),
                             p_value=c.p_value, mde=c.get("mde", math.nan), test="McNemar (paired)")
                    paired_done = True
            except stats.StatsError:
                pass
        if not paired_done and n and all(np.isfinite(r.get(m, math.nan)) for m in ("acc_icl", "acc_gd")):
            if np.isfinite(r.get("acc_zs", math.nan)):
                g = stats.unpaired(_binary(r["acc_icl"], n), _binary(r["acc_zs"], n))
                r["icl_ok"] = bool(g.p_value < stats.ALPHA and g.effect > 0)
            c = stats.unpaired(_binary(r["acc_gd"], n), _binary(r["acc_icl"], n))
            r.update(gd_minus_icl=c.effect, gd_minus_icl_ci=(c.effect_ci_low, c.effect_ci_high),
                     p_value=c.p_value, test="unpaired (no per-prompt rows stored)")
        lr = d["gd_lr"].dropna() if "gd_lr" in d else pd.Series(dtype=float)
        r["gd_lr"] = float(lr.iloc[0]) if len(lr) else math.nan
        out.append(r)
    res = pd.DataFrame(out)
    if len(res) and "p_value" in res:
        cis = [ci if isinstance(ci, tuple) else (math.nan, math.nan) for ci in res["gd_minus_icl_ci"]]
        res["effect_ci_low"], res["effect_ci_high"] = [c[0] for c in cis], [c[1] for c in cis]
        res["effect"], res["value"], res["control_value"] = res["gd_minus_icl"], res["acc_gd"], res["acc_icl"]
        res = stats.add_q_and_verdicts(res)
    if len(res):
        res["icl_ok"] = res["icl_ok"].fillna(True).astype(bool) if "icl_ok" in res else True
    return res


# ------------------------------------------------------------------------------- 4. vectors
def vector_rows(df: pd.DataFrame) -> pd.DataFrame:
    vec = df[(df["analysis"] == "vectors") & (df["metric"] == "summary")]
    per_prompt = df[(df["analysis"] == "vectors") & (df["metric"] == "correct")]
    if vec.empty or not {"method", "condition"} <= set(vec.columns):
        return pd.DataFrame()
    out = []
    for (model, task, method), d in vec.groupby(["model", "task", "method"], sort=False):
        acc = {c: float(d[d.condition == c]["value"].iloc[0]) for c in d["condition"].unique()}
        n = int(d["n_prompts"].iloc[0])
        r: dict[str, Any] = dict(model=model, task=task, method=method, n=n,
                                 layer=float(d["layer"].iloc[0]) if "layer" in d else math.nan,
                                 lam=float(d["lam"].iloc[0]) if "lam" in d else math.nan, **acc)
        for cond in ("zero-shot", "ICL", "with vector", "with random vector"):
            if cond in acc:
                e = stats.estimate(_binary(acc[cond], n))
                r[f"{cond} ci"] = (e.ci_low, e.ci_high)
        if {"with vector", "with random vector", "zero-shot", "ICL"} <= set(acc):
            gap = acc["ICL"] - acc["zero-shot"]
            r["recovery"] = (acc["with vector"] - acc["zero-shot"]) / gap if gap > 0 else math.nan
            c, r["icl_ok"] = _paired_vector(per_prompt, model, task, method)
            if c is None:
                g = stats.unpaired(_binary(acc["ICL"], n), _binary(acc["zero-shot"], n))
                r["icl_ok"] = bool(g.p_value < stats.ALPHA and g.effect > 0)
                c = stats.unpaired(_binary(acc["with vector"], n), _binary(acc["with random vector"], n))
                r["test"] = "unpaired (no per-prompt rows stored)"
            else:
                r["test"] = "McNemar (paired)"
            r.update(effect=c.effect, effect_ci_low=c.effect_ci_low, effect_ci_high=c.effect_ci_high,
                     p_value=c.p_value, value=acc["with vector"], control_value=acc["with random vector"])
        out.append(r)
    res = pd.DataFrame(out)
    if len(res) and "p_value" in res:
        res = stats.add_q_and_verdicts(res)
    if len(res):
        res["icl_ok"] = res["icl_ok"].fillna(True).astype(bool) if "icl_ok" in res else True
    return res


def _paired_vector(per_prompt: pd.DataFrame, model: str, task: str, method: str) -> tuple[Any, bool]:
    """The vector vs random-vector comparison of ``vectors_study.vectors_stats`` (paired on the
    eval prompts), or None when the unit stored no per-prompt outcomes; and whether ICL's gain
    over zero-shot on those prompts is significant (True when unknown)."""
    d = per_prompt[(per_prompt.model == model) & (per_prompt.task == task) & (per_prompt.method == method)]
    if d.empty:
        return None, True

    c = vectors_stats(d.drop(columns=["analysis", "metric"])).comparisons
    g = c[(c.condition == "ICL") & (c.control == "zero-shot")]
    ok = bool(g.iloc[0].verdict == "significant" and g.iloc[0].effect > 0) if len(g) else True
    c = c[(c.condition == "with vector") & (c.control == "with random vector")]
    return (None if c.empty else c.iloc[0]), ok


def icl_gain(circ: pd.DataFrame) -> pd.DataFrame:
    """The circuit table's ICL-gain rows (``unablated``: ICL minus zero-shot, on the same
    prompts), with ``icl_ok``: whether the gain is significant and positive."""
    un = circ[circ["ablation"] == "unablated"].copy()
    un["icl_ok"] = (un["verdict"] == "significant") & (un["effect"] > 0)
    return un


def icl_explained(gain: pd.DataFrame, model: str, task: str) -> bool:
    """Whether the ICL gain of (model, task) is significant (True when not measured)."""
    g = gain[(gain["model"] == model) & (gain["task"] == task)]
    return bool(g["icl_ok"].iloc[0]) if len(g) else True
