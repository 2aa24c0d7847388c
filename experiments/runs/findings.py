"""``docs/findings.md`` from a results store: the replication table of the full study.

    iclwb study findings --store results/full --out docs/findings.md

Every number comes from the stored units; every interval, test, q-value and verdict from
``probes.stats`` (and ``circuits.icl_circuit.ablation_summary`` for the circuit). Findings, each
with both models side by side:

1. **Induction heads exist, and where**: the top heads of the head scan; per-prompt induction
   scores of the top 5 heads against a null (the same sequences with a fresh second half),
   ``stats.unpaired``, BH over the 5 heads of a model.
2. **Circuit knockouts vs their random controls**: ``ablation_summary`` per task (McNemar on the
   same prompts, BH per run, MDE, verdict), and ICL vs zero-shot.
3. **ICL vs GD agreement**: per k, the accuracies (zero-shot, ICL, fine-tuned) and agreement
   metrics (top-10 overlap, KL, Rec2FTP).
4. **Task / function vector recovery of ICL accuracy**: eval accuracy with the vector against
   zero-shot and against a random vector of the same norm, at the layer chosen on dev prompts.

Where a unit stored only an accuracy and its n (no per-prompt outcomes), the 0/1 outcomes are
rebuilt from them (Wilson intervals are exact that way) and comparisons are unpaired (conservative;
stated in the table).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from circuits.icl_circuit import ablation_summary
from experiments.runs.cells import CELL, select
from experiments.runs.store import ResultsStore
from experiments.studies.icl_vs_gd import icl_vs_gd_stats
from experiments.studies.vectors_study import vectors_stats
from probes import stats

MODELS = ("smollm2-135m", "gemma3-270m")


def _fmt(x: float, nd: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    text = f"{x:.{nd}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def _ci(lo: float, hi: float, nd: int = 3) -> str:
    return f"[{_fmt(lo, nd)}, {_fmt(hi, nd)}]"


def _binary(acc: float, n: int) -> np.ndarray:
    k = int(round(acc * n))
    return np.array([1.0] * k + [0.0] * (n - k))


def _models(df: pd.DataFrame) -> list[str]:
    found = list(df["model"].unique()) if len(df) else []
    return [m for m in MODELS if m in found] + sorted(m for m in found if m not in MODELS)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------------------- 1. induction heads
def induction_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Per model: the top 5 induction heads, score vs null with interval, q (BH over the 5), verdict."""
    out = []
    if df.empty:
        return pd.DataFrame()
    scan = df[df["analysis"] == "head_scan"]
    for model in _models(scan):
        d = scan[scan["model"] == model]
        per = d[d["metric"] == "induction:prompt"]
        null = d[d["metric"] == "induction_null:prompt"]
        if per.empty:
            top = d[d["metric"] == "induction"].sort_values("value", ascending=False).head(5)
            for _, r in top.iterrows():
                out.append(dict(model=model, head=f"L{int(r.layer)}H{int(r.head)}", value=r.value,
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
                c = c[(c.condition == "acc_icl") & (c.control == "acc_gd")]
                if len(c):
                    c = c.iloc[0]  # reported as GD - ICL
                    r.update(gd_minus_icl=-c.effect, gd_minus_icl_ci=(-c.effect_ci_high, -c.effect_ci_low),
                             p_value=c.p_value, mde=c.get("mde", math.nan), test="McNemar (paired)")
                    paired_done = True
            except stats.StatsError:
                pass
        if not paired_done and n and all(np.isfinite(r.get(m, math.nan)) for m in ("acc_icl", "acc_gd")):
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
        res = stats.add_q_and_verdicts(res)
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
            c = _paired_vector(per_prompt, model, task, method)
            if c is None:
                c = stats.unpaired(_binary(acc["with vector"], n), _binary(acc["with random vector"], n))
                r["test"] = "unpaired (no per-prompt rows stored)"
            else:
                r["test"] = "McNemar (paired)"
            r.update(effect=c.effect, effect_ci_low=c.effect_ci_low, effect_ci_high=c.effect_ci_high,
                     p_value=c.p_value)
        out.append(r)
    res = pd.DataFrame(out)
    if len(res) and "p_value" in res:
        res = stats.add_q_and_verdicts(res)
    return res


def _paired_vector(per_prompt: pd.DataFrame, model: str, task: str, method: str) -> Any:
    """The vector vs random-vector comparison of ``vectors_study.vectors_stats`` (paired on the
    eval prompts), or None when the unit stored no per-prompt outcomes."""
    d = per_prompt[(per_prompt.model == model) & (per_prompt.task == task) & (per_prompt.method == method)]
    if d.empty:
        return None

    c = vectors_stats(d.drop(columns=["analysis", "metric"])).comparisons
    c = c[(c.condition == "with vector") & (c.control == "with random vector")]
    return None if c.empty else c.iloc[0]


# ------------------------------------------------------------------------------- the page
def largest_runs(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Deprecated (use ``ResultsStore.frame()``, which keeps only current units): the rows of the
    current unit of each cell of ``df`` by ``experiments.runs.cells.select`` (most prompts, then the
    latest), without the running-code check that needs the store. Returns the rows kept and the
    keys of the units left out."""
    if df.empty or not {"unit_key", "params", *CELL} <= set(df.columns):
        return df, []
    units = df.drop_duplicates("unit_key")
    sel = select([{"key": r.unit_key, "state": "done", "computed_at": getattr(r, "computed_at", ""),
                   "unit": {"analysis": r.analysis, "model": r.model, "task": r.task, "k": r.k,
                            "seed": r.seed, "params": r.params}} for r in units.itertuples()])
    return df[df["unit_key"].isin(set(sel.current))], sorted(sel.superseded)


def _provenance(store: Any, df: pd.DataFrame, superseded: dict[str, str] | Sequence[str] = ()) -> list[str]:
    lines = []
    sweeps = store.sweeps()
    for s in sweeps:
        lines.append(f"- sweep `{s.get('name')}` (config hash `{s.get('config_hash')}`), "
                     f"{len(s.get('units', []))} units, recorded {s.get('recorded_at')}")
    if len(df):
        per_unit = df.drop_duplicates("unit_key") if "unit_key" in df else df
        for col, label in (("git_commit", "git commits"), ("model_hash", "model hashes"),
                           ("precision", "precision")):
            if col in per_unit:
                vals = sorted({str(v) for v in per_unit[col].dropna().unique()})
                lines.append(f"- {label}: " + ", ".join(f"`{v[:16]}`" for v in vals))
        if "model_hash" in per_unit:
            for m, g in per_unit.groupby("model"):
                lines.append(f"  - {m}: `{str(g['model_hash'].iloc[0])[:16]}`")
        if "computed_at" in per_unit:
            lines.append(f"- computed {per_unit['computed_at'].min()} .. {per_unit['computed_at'].max()}; "
                         f"{len(per_unit)} units; wall time {per_unit['wall_time_s'].sum() / 3600:.2f} h "
                         f"(sum over units)")
        if "versions" in per_unit and per_unit["versions"].notna().any():
            try:
                v = json.loads(per_unit["versions"].dropna().iloc[0])
                lines.append("- versions: " + ", ".join(f"{k} {v[k]}" for k in sorted(v)))
            except (ValueError, TypeError):
                pass
    if superseded:
        lines.append(f"- {len(superseded)} stored units left out: another run of the same cell (analysis, "
                     "model, task, k, seed, prompt format) is current (the running code's, then the one "
                     "with the most prompts, then the latest; `experiments.runs.cells`). "
                     "`iclwb sweep results --all-runs` shows them:")
        why = superseded if isinstance(superseded, dict) else {k: "" for k in superseded}
        for key in sorted(why):
            lines.append(f"  - `{key[:12]}`" + (f": {why[key]}" if why[key] else ""))
    stale = df.attrs.get("iclwb.stale") or {}
    if stale:
        lines.append(f"- {len(stale)} cells are shown from stale units (no unit of the running code): "
                     + ", ".join(f"`{k[:12]}` ({v})" for k, v in sorted(stale.items())))
    return lines


def render(store_dir: str | Path, config: str = "configs/full.toml") -> str:
    """The findings page of the results store ``store_dir`` (Markdown); ``config`` is named in its
    header as the study's config."""
    store = ResultsStore(store_dir)
    df = store.frame()  # the current unit of each cell only
    superseded = df.attrs.get("iclwb.superseded") or {}
    models = _models(df)
    md = ["# Findings: the replicated full study", "",
          f"Generated from the results store `{store_dir}` by `iclwb study findings --store {store_dir} "
          f"--out docs/findings.md` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
          "(do not edit by hand: rerun the command). The study itself: "
          f"`iclwb study full --config {config} --store {store_dir}` (prints its expected run time, "
          "resumes after interruption).", "",
          "Intervals are 95% (Wilson for accuracies, BCa bootstrap otherwise); q-values are "
          "Benjamini-Hochberg within each family; verdicts from `probes.stats.verdict`: "
          "*significant* (q < 0.05), *no effect detected (MDE = m)* when the whole interval lies "
          "within the minimum detectable effect, else *inconclusive*.", ""]
    md += ["## Provenance", ""] + (_provenance(store, df, superseded) or ["- (empty store)"]) + [""]

    # summary table (both models side by side)
    ind, circ, ivg, vec = induction_rows(df), circuit_rows(df), ivg_rows(df), vector_rows(df)
    md += ["## Replication table", "", _summary_table(models, ind, circ, ivg, vec), ""]
    md += _induction_md(ind) + _circuit_md(circ) + _ivg_md(ivg) + _vector_md(vec)
    return "\n".join(md) + "\n"


def _induction_md(ind: pd.DataFrame) -> list[str]:
    """Section 1: the top induction heads against their null."""
    md = ["## 1. Induction heads", ""]
    if len(ind):
        md += [_table(["model", "head", "score [CI]", "null", "effect [CI]", "q", "n", "verdict"],
                      [[r["model"], r["head"], f"{_fmt(r['value'])} {_ci(r['ci_low'], r['ci_high'])}",
                        _fmt(r["null"]), f"{_fmt(r['effect'])} {_ci(r['effect_ci_low'], r['effect_ci_high'])}",
                        _fmt(r.get("q_value", math.nan), 3), int(r["n"]), r.get("verdict", "")]
                       for r in ind.to_dict("records")]), ""]
    else:
        md += ["(no head scan in the store)", ""]
    return md


def _circuit_md(circ: pd.DataFrame) -> list[str]:
    """Section 2: accuracy under each knockout beside its random control."""
    md = ["## 2. Circuit knockouts vs matched random controls (k = 4)", ""]
    if len(circ):
        rows = []
        for r in _ordered(circ, ["task"]).to_dict("records"):
            rows.append([r["model"], r["task"], r["ablation"], r.get("window", ""),
                         f"{_fmt(r['acc_mean'])} {_ci(r['ci_low'], r['ci_high'])}",
                         f"{_fmt(r.get('random_mean', math.nan))} "
                         f"{_ci(r.get('random_ci_low', math.nan), r.get('random_ci_high', math.nan))}",
                         f"{_fmt(r.get('effect', math.nan))} "
                         f"{_ci(r.get('effect_ci_low', math.nan), r.get('effect_ci_high', math.nan))}",
                         _fmt(r.get("q_value", math.nan)), _fmt(r.get("mde", math.nan)), int(r["n"]),
                         r.get("verdict", "")])
        md += ["Accuracy under each knockout beside its random control (same prompts); for "
               "`zero_shot` the comparison is zero-shot minus ICL (unablated).", "",
               _table(["model", "task", "knockout", "layers", "accuracy [CI]", "control [CI]",
                       "effect [CI]", "q", "MDE", "n", "verdict"], rows), ""]
    else:
        md += ["(no circuit units with per-prompt outcomes in the store)", ""]
    return md


def _ordered(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows in the page's model order (``MODELS`` first), then by ``by``; rows that tie keep their
    order (a circuit's knockouts stay in the circuit's order)."""
    rank = {m: i for i, m in enumerate(_models(df))}
    return df.assign(_rank=df["model"].map(rank)).sort_values(["_rank", *by], kind="stable").drop(columns="_rank")


def _ivg_md(ivg: pd.DataFrame) -> list[str]:
    """Section 3: ICL against gradient descent."""
    md = ["## 3. ICL vs gradient descent", ""]
    if len(ivg):
        rows = [[r["model"], r["task"], r["k"], r["n"],
                 f"{_fmt(r['acc_zs'])} {_ci(*r.get('acc_zs_ci', (math.nan, math.nan)))}",
                 f"{_fmt(r['acc_icl'])} {_ci(*r.get('acc_icl_ci', (math.nan, math.nan)))}",
                 f"{_fmt(r['acc_gd'])} {_ci(*r.get('acc_gd_ci', (math.nan, math.nan)))}",
                 f"{_fmt(r.get('gd_minus_icl', math.nan))} {_ci(*r.get('gd_minus_icl_ci', (math.nan, math.nan)))}",
                 _fmt(r.get("q_value", math.nan)), r.get("verdict", ""), r.get("test", ""),
                 _fmt(r["topk_overlap"]),
                 _fmt(r["kl_icl_gd"]), _fmt(r["rec2ftp"]), _fmt(r["gd_lr"], 4)]
                for r in _ordered(ivg, ["task", "k"]).to_dict("records")]
        md += ["GD = a copy of the model fine-tuned on the prompt's own demonstrations (lr searched on "
               "held-out prompts). GD - ICL accuracy is tested on the same prompts (McNemar) where "
               "per-prompt rows are stored; the test column says which test was used.", "",
               _table(["model", "task", "k", "n", "zero-shot [CI]", "ICL [CI]", "GD [CI]",
                       "GD - ICL [CI]", "q", "verdict", "test", "top-10 overlap", "KL(ICL||GD)", "Rec2FTP", "lr"],
                      rows), ""]
    else:
        md += ["(no ICL-vs-GD units in the store)", ""]
    return md


def _layer_lam(r: dict) -> str:
    """The chosen layer, and the chosen scale (function vectors) or lambda (ICV) where searched."""
    lam = r.get("lam", math.nan)
    return _fmt(r["layer"], 0) + (f" (x{lam:g})" if isinstance(lam, float) and math.isfinite(lam) else "")


def _vector_md(vec: pd.DataFrame) -> list[str]:
    """Section 4: task and function vectors."""
    md = ["## 4. Task and function vectors", ""]
    if len(vec):
        rows = [[r["model"], r["task"], r["method"], _layer_lam(r), r["n"],
                 f"{_fmt(r.get('zero-shot', math.nan))}", f"{_fmt(r.get('ICL', math.nan))}",
                 f"{_fmt(r.get('with vector', math.nan))} {_ci(*r.get('with vector ci', (math.nan, math.nan)))}",
                 f"{_fmt(r.get('with random vector', math.nan))}", _fmt(r.get("recovery", math.nan), 2),
                 f"{_effect_ci(r)}",
                 _fmt(r.get("q_value", math.nan)), r.get("test", ""), r.get("verdict", "")]
                for r in _ordered(vec, ["task", "method"]).to_dict("records")]
        md += ["Eval accuracy at the layer (and, where searched, the function vector's scale) chosen on "
               "dev prompts; the random vector has the same norm. Recovery = (with vector - zero-shot) / "
               "(ICL - zero-shot). Effect = with vector - with random vector, on the same eval prompts "
               "(McNemar) where per-prompt rows are stored; the test column says which test was used.", "",
               _table(["model", "task", "method", "layer (scale)", "n", "zero-shot", "ICL", "with vector [CI]",
                       "random vector", "recovery", "effect vs random [CI]", "q", "test", "verdict"], rows), ""]
    else:
        md += ["(no vector units in the store)", ""]
    return md


def _summary_table(models: list[str], ind: pd.DataFrame, circ: pd.DataFrame, ivg: pd.DataFrame,
                   vec: pd.DataFrame) -> str:
    """One row per finding, one column per model: the headline numbers and the verdicts."""
    rows = []

    def cell(fn, m: str) -> str:
        try:
            return fn(m)
        except (KeyError, IndexError, ValueError):
            return "not run"
    if len(ind):
        def ind_cell(m: str) -> str:
            d = ind[ind.model == m]
            if d.empty:
                return "not run"
            top = d.iloc[0]
            sig = d[d.get("verdict", "") == "significant"] if "verdict" in d else d.iloc[0:0]
            return (f"top {top['head']} {_fmt(top['value'])} {_ci(top['ci_low'], top['ci_high'])} vs null "
                    f"{_fmt(top['null'])}; {len(sig)}/{len(d)} top heads significant")
        rows.append(["induction heads exist (top head; heads above null)"] + [cell(ind_cell, m) for m in models])
    if len(circ):
        for (task, abl), _ in circ.groupby(["task", "ablation"], sort=False):
            if abl == "unablated":  # the same comparison as zero_shot, sign flipped
                continue

            def circ_cell(m: str, task=task, abl=abl) -> str:
                r = circ[(circ.model == m) & (circ.task == task) & (circ.ablation == abl)].iloc[0]
                return (f"{_effect_ci(r)}, "
                        f"q={_fmt(r.get('q_value', math.nan))}: {r.get('verdict', '')}")
            what = "ICL vs zero-shot" if abl == "zero_shot" else f"knockout {abl} vs control"
            rows.append([f"circuit {task}: {what}"] + [cell(circ_cell, m) for m in models])
    if len(ivg):
        for k in sorted(ivg["k"].unique()):
            def ivg_cell(m: str, k=k) -> str:
                r = ivg[(ivg.model == m) & (ivg.k == k)].iloc[0]
                return (f"ICL {_fmt(r['acc_icl'])} vs GD {_fmt(r['acc_gd'])} (diff {_fmt(r.get('gd_minus_icl', math.nan))} "
                        f"{_ci(*r.get('gd_minus_icl_ci', (math.nan, math.nan)))}, q={_fmt(r.get('q_value', math.nan))}): "
                        f"{r.get('verdict', '')}; top-10 overlap {_fmt(r['topk_overlap'])}")
            rows.append([f"ICL vs GD agreement, k={k}"] + [cell(ivg_cell, m) for m in models])
    if len(vec):
        for (task, method), _ in vec.groupby(["task", "method"], sort=False):
            def vec_cell(m: str, task=task, method=method) -> str:
                r = vec[(vec.model == m) & (vec.task == task) & (vec.method == method)].iloc[0]
                return (f"recovers {_fmt(r.get('recovery', math.nan), 2)} of ICL's gain; vs random "
                        f"{_effect_ci(r)}: "
                        f"{r.get('verdict', '')}")
            rows.append([f"{method.replace('_', ' ')} {task}"] + [cell(vec_cell, m) for m in models])
    if not rows:
        return "(the store holds none of the study's findings yet)"
    return _table(["finding"] + models, rows)


def write_findings(store_dir: str | Path, out: str | Path, config: str = "configs/full.toml") -> Path:
    """Render the findings page of ``store_dir`` and write it to ``out`` (returns the path)."""
    text = render(store_dir, config=str(config))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


__all__ = ["circuit_rows", "induction_rows", "ivg_rows", "render", "vector_rows", "write_findings"]


def _effect_ci(r: Any) -> str:
    """``effect [low, high]`` of a comparison row."""
    return f"{_fmt(r.get('effect', math.nan))} {_ci(r.get('effect_ci_low', math.nan), r.get('effect_ci_high', math.nan))}"
