"""The HTML report of a results store: plotly figures, the findings in words, and provenance.

``build_report(store)`` reads every stored unit and returns a ``Report``: the figures (plain
``go.Figure`` objects, also usable in notebooks and the app), the *findings* (each a sentence plus
the number it quotes and the store filter that number was computed from, so a test can recompute
it), and a one-screen text summary. ``Report.write(path)`` writes one self-contained HTML file
with plotly.js inlined once (works offline), plus ``summary.txt`` and ``findings.json`` beside it.

Every number in the summary is an aggregate (mean over seeds, max over heads, ...) of the rows the
finding's ``filters`` select; ``Finding.recompute(frame)`` does that computation again.

The page itself (``Finding``, ``Report``, figure and formatting helpers) is
``experiments.runs.report_page``; this module builds its sections, one per analysis.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from circuits import plots
from circuits.icl_circuit import ablation_summary
from circuits.plots import ablation_bars as circuit_bars
from experiments.runs.effects import effect_rows
from experiments.runs.executors import stored_states
from experiments.runs.figures import forest, paper_style, score_range
from experiments.runs.report_page import (
    CI_CAPTION,
    Finding,
    Report,
    aggregate,
    by_layer_lines,
    ci_text,
    cmp_text,
    est_vs_k,
    head_heatmap,
    per_prompt_mean,
    select_rows,
)
from experiments.runs.store import ResultsStore
from experiments.studies import dynamics
from experiments.studies.icl_vs_gd import icl_vs_gd_stats
from experiments.studies.scan import head_scan_stats
from experiments.studies.vectors_study import vectors_stats

# --------------------------------------------------------------------------------- sections
SUMMARY_SCORES = ("previous_token", "induction", "ngram_2", "ngram_3", "ngram_4")


def _head_scan_section(df: pd.DataFrame, rep: Report) -> None:
    """Per model: the top head of each score with its interval and test; the induction and
    previous-token heatmaps (the other scores folded), one colour scale per score over every model,
    the heads above their null ringed; the top-5 table per score."""
    aggs = df[df["prompt"] < 0] if "prompt" in df.columns else df
    ranges = {m: score_range(g.groupby(["model", "layer", "head"])["value"].mean(), m) for m, g in aggs.groupby("metric")}
    for model in sorted(df["model"].unique()):
        d = df[df["model"] == model]
        agg = d[d["prompt"] < 0] if "prompt" in d.columns else d
        stats_ok = "p_value" in d.columns and d["p_value"].notna().any()
        cmp = head_scan_stats(d).comparisons if stats_ok else pd.DataFrame()
        for metric in sorted(agg["metric"].unique()):
            dm = agg[agg["metric"] == metric]
            up = cmp[(cmp["metric"] == metric) & cmp["above_null"].astype(bool)] if len(cmp) else cmp
            marked = sorted({(int(r["layer"]), int(r["head"])) for r in up.to_dict("records")})
            if metric == "induction":  # and the top heads that the per-prompt test finds above their null
                marked = sorted(set(marked) | _significant_heads(rep.effects, model))
            main = metric in ("induction", "previous_token")
            where = rep.figures if main else rep.appendix
            where[f"head scan/{model}/{metric}"] = head_heatmap(
                dm, model, metric, *ranges[metric], marked=marked)
        untested: list[tuple[str, str]] = []  # n-gram scores have no null: one finding for all of them
        for metric in [m for m in SUMMARY_SCORES if m in set(agg["metric"])]:
            dm = agg[agg["metric"] == metric]
            per_head = dm.groupby(["layer", "head"])["value"].mean()
            (l, h), best = per_head.idxmax(), float(per_head.max())
            n_seeds = dm["seed"].nunique()
            est = dm[(dm["layer"] == l) & (dm["head"] == h)]
            ci = ""
            if "ci_low" in est.columns and est["ci_low"].notna().any():
                e = est.iloc[0]
                ci = f" {ci_text(e)} (n={int(e['n'])} prompts{', seed ' + str(int(e['seed'])) if n_seeds > 1 else ''})"
            test = ""
            c = cmp[(cmp["metric"] == metric)] if len(cmp) else cmp
            if len(c):
                sig = c[c["above_null"].astype(bool)].drop_duplicates(["layer", "head"])
                top = c[(c["layer"] == l) & (c["head"] == h)].iloc[0]
                test = (f"; {len(sig)} of {int(per_head.size)} heads above their null at q<0.05;"
                        f" top head vs null: {cmp_text(top)}")
            elif metric.startswith("ngram"):
                untested.append((metric, f"{metric} L{l}H{h} = {best:.3f}{ci}"))
                continue
            rep.add(Finding(
                text=f"{model}: top {metric} head L{l}H{h} = {best:.3f}{ci}"
                     f"{f' (mean of {n_seeds} seeds)' if n_seeds > 1 else ''}{test}",
                value=best, filters={"analysis": "head_scan", "model": model, "metric": metric},
                agg="max", per_head=True, section="head scan",
                verdict=str(top["verdict"]) if len(c) else ""))
        if untested:
            first = agg[agg["metric"] == untested[0][0]].groupby(["layer", "head"])["value"].mean().max()
            rep.add(Finding(f"{model}: top n-gram heads {'; '.join(t for _, t in untested)}; no null for n-gram "
                            "scores: intervals only", float(first),
                            {"analysis": "head_scan", "model": model, "metric": untested[0][0]}, agg="max",
                            per_head=True, section="head scan"))
        if len(cmp):
            show = cmp[cmp["metric"].isin(SUMMARY_SCORES)].sort_values("value", ascending=False)
            rep.tables[f"head scan/{model}"] = show.groupby("metric", sort=False).head(5)


def _significant_heads(rows: pd.DataFrame, model: str) -> set[tuple[int, int]]:
    """(layer, head) of the head-scan effect rows of ``model`` significantly above their null."""
    if rows.empty:
        return set()
    r = rows[(rows["question"] == "head scan") & (rows["model"] == model) & (rows["verdict"] == "significant")
             & (rows["effect"] > 0)]
    return {(int(m[1]), int(m[2])) for m in (re.fullmatch(r"L(\d+)H(\d+)", str(d)) for d in r["detail"]) if m}


def _circuit_section(df: pd.DataFrame, rep: Report) -> None:

    for (model, task, k), d in df.groupby(["model", "task", "k"]):
        tag = f"{model} / {task} / k={k}"
        base = {"analysis": "circuit", "model": model, "task": task, "k": int(k)}
        abl = d[d["step"] == "ablation"]
        if not abl.empty and "prompt" in abl.columns and (abl["prompt"] >= 0).any():
            s = ablation_summary(abl)
            win = s["window"].iloc[0]
            fig = circuit_bars(abl, title=f"{tag}: accuracy under knockouts (layers {win}) and their random controls")
            fig.update_layout(title_subtitle_text=CI_CAPTION)
            rep.appendix[f"circuit/{tag}/accuracy"] = fig
            rep.tables[f"circuit/{tag}"] = s
            un = s[s["ablation"] == "unablated"].iloc[0]
            zs = s[s["ablation"] == "zero_shot"].iloc[0]
            icl_ok = bool(un["verdict"] == "significant" and un["effect"] > 0)
            rep.add(Finding(
                f"{tag}: accuracy {un['acc_mean']:.3f} {ci_text(un)} with demonstrations vs "
                f"{zs['acc_mean']:.3f} {ci_text(zs)} zero-shot: ICL gain {cmp_text(un)}",
                float(un["acc_mean"]), {**base, "metric": "acc:unablated"}, section="circuit",
                verdict=str(un["verdict"])))
            for _, r in s[~s["ablation"].isin(["unablated", "zero_shot"])].iterrows():
                rep.add(Finding(
                    f"{tag}: knockout {r['ablation']} (layers {r['window']}): accuracy {r['acc_mean']:.3f} vs "
                    f"{r['random_mean']:.3f} for its random control: "
                    f"{cmp_text(r, icl_ok=icl_ok)}",
                    float(r["acc_mean"]), {**base, "metric": f"acc:{r['ablation']}", "window": r["window"]},
                    section="circuit", verdict=str(r["verdict"])))
        elif not abl.empty:
            rep.notes.append(f"{tag}: circuit units without per-prompt rows (older code): no intervals; "
                             "rerun the sweep to recompute them")
        _circuit_appendix(d, tag, rep)


def _circuit_appendix(d: pd.DataFrame, tag: str, rep: Report) -> None:

    for step in ("summarize", "merge"):
        if (d["step"] == step).any():
            rep.appendix[f"circuit/{tag}/{step}"] = plots.layer_curves(d, step, title=f"{tag}: {step} by layer; "
                                                                                   f"{CI_CAPTION}")
    retr = d[(d["step"] == "retrieve") & (d["metric"] == "C") & (d["head"] >= 0)]
    if not retr.empty:
        rep.appendix[f"circuit/{tag}/retrieve"] = head_heatmap(retr, tag, "correctness C (retrieve)")


def _ivg_section(df: pd.DataFrame, rep: Report) -> None:

    for (model, task), d in df.groupby(["model", "task"]):
        tag = f"{model} / {task}"
        if not ("prompt" in d.columns and (d["prompt"] >= 0).any()):
            rep.notes.append(f"{tag}: ICL-vs-GD units without per-prompt rows (older code): rerun the sweep")
            continue
        st = icl_vs_gd_stats(d)
        est, cmp = st.estimates, st.comparisons
        kmax = int(d["k"].max())
        linreg = "err_model" in set(est["metric"])
        metrics = (["err_model"] + sorted(m for m in set(est["metric"]) if m.startswith("err_")
                                          and m not in ("err_model", "err_ref"))) if linreg \
            else [m for m in ("acc_zs", "acc_icl", "acc_gd") if m in set(est["metric"])]
        fig = est_vs_k(est, metrics, f"{tag}: {'squared error / d' if linreg else 'accuracy'} vs k; {CI_CAPTION}",
                        "error" if linreg else "accuracy")
        if linreg:
            top = float(est[est["metric"] == "err_model"]["ci_high"].max())
            if top == top and top > 0:
                fig.update_yaxes(range=[0, 1.3 * top])
        rep.figures[f"icl_vs_gd/{tag}/{'errors' if linreg else 'accuracy'}"] = fig
        rep.tables[f"ICL vs GD/{tag}"] = cmp
        at_k = cmp[(cmp["k"] == kmax) & (cmp.get("layer", -1) == -1)] if len(cmp) else cmp
        wanted = ([("err_model", "err_gd1"), ("err_model", "err_least_squares"), ("sens_cos", "ls_sens_cos")]
                  if linreg else [("acc_icl", "acc_zs"), ("acc_icl", "acc_gd"), ("tv_icl_gd", "tv_icl_zs")])
        for cond, ctrl in wanted:
            r = at_k[(at_k["condition"] == cond) & (at_k["control"] == ctrl)] if len(at_k) else at_k
            if not len(r):
                continue
            r = r.iloc[0]
            rows = select_rows(d, {"metric": cond, "k": kmax})
            rep.add(Finding(
                f"{tag}, k={kmax}: {cond} {float(r['value']):.3f} vs {ctrl} {float(r['control_value']):.3f}: "
                f"{cmp_text(r)}", float(per_prompt_mean(rows)["value"].mean()),
                {"analysis": "icl_vs_gd", "model": model, "task": task, "metric": cond, "k": kmax},
                section="ICL vs GD", verdict=str(r["verdict"])))
        if "simaou" in set(d["metric"]):
            sim = d[d["metric"].isin(["simaou", "simaou_random"])]
            if "layer" in sim.columns and sim["layer"].notna().any():
                rep.appendix[f"icl_vs_gd/{tag}/simaou"] = by_layer_lines(
                    sim, ["simaou", "simaou_random"], f"{tag}: SimAOU by layer (all k)", "cosine")


def _vectors_section(df: pd.DataFrame, rep: Report) -> None:

    per = df[df["prompt"] >= 0] if "prompt" in df.columns else df.iloc[0:0]
    needed = {"condition", "method", "split"}
    if per.empty or not needed <= set(per.columns):
        return
    if "lam" not in per.columns:  # no method searched a scale (the column was all empty and dropped)
        per = per.assign(lam=float("nan"))
    st = vectors_stats(per)
    rep.tables["ICL vectors"] = st.comparisons
    for _, r in st.comparisons.iterrows():
        if (r["condition"], r["control"]) not in (("with vector", "with random vector"), ("with vector", "zero-shot")):
            continue
        rep.add(Finding(
            f"{r['model']} / {r['task']} / {r['method']}: accuracy with vector {float(r['value']):.3f} vs "
            f"{r['control']} {float(r['control_value']):.3f}: {cmp_text(r)}", float(r["value"]),
            {"analysis": "vectors", "model": r["model"], "task": r["task"], "method": r["method"]},
            agg="none", section="ICL vectors", verdict=str(r["verdict"])))
    e = st.estimates
    fig = go.Figure()
    for cond, part in e.groupby("condition", sort=False):
        x = [f"{a} / {b}" for a, b in zip(part["task"], part["method"])]
        fig.add_bar(name=cond, x=x, y=part["value"].tolist(),
                    error_y=dict(type="data", symmetric=False, array=(part["ci_high"] - part["value"]).tolist(),
                                 arrayminus=(part["value"] - part["ci_low"]).tolist()))
    fig.update_layout(barmode="group", title=f"ICL vectors: held-out accuracy by condition; {CI_CAPTION}",
                      yaxis_title="accuracy", yaxis_range=[0, 1.05], height=400)
    rep.figures["ICL vectors/accuracy"] = fig


def _stale_notes(store: Any, df: pd.DataFrame) -> list[str]:
    """A note when some reported units are stale (computed by other code or another checkpoint)."""


    if df.empty or "unit_key" not in df.columns:
        return []
    states = stored_states(store)
    keys = df["unit_key"].unique()
    stale = Counter(states[k][1] for k in keys if states.get(k, ("",))[0] == "stale")
    if not stale:
        return []
    return [f"{sum(stale.values())} of {len(keys)} units in this report are stale ("
            + "; ".join(f"{r} ({n})" for r, n in stale.most_common())
            + "): their numbers come from other code or another checkpoint; rerun the sweep to recompute them"]


def _dynamics_section(df: pd.DataFrame, rep: Report) -> None:
    """Training dynamics (analysis ``dynamics``): per model, the best head's previous-token and
    induction scores and the ICL score against training step with the phase-change window shaded,
    and the window's numbers (``experiments.studies.dynamics.phase_summary``) as findings."""

    df = df.assign(step=pd.to_numeric(df["step"], errors="coerce"))  # a store shares "step" with circuit's names
    df = df[df["step"].notna()].assign(step=lambda t: t["step"].astype(int))
    for model in sorted(df["model"].unique()):
        d = df[df["model"] == model].copy()
        table = d.drop(columns=["k"], errors="ignore").rename(columns={"shots": "k"})
        for col in ("layer", "head", "k", "position"):
            table[col] = pd.to_numeric(table[col], errors="coerce").fillna(-1).astype(int)
        table["step"] = table["step"].astype(int)
        if table["step"].nunique() < 2 or not (table["metric"] == "induction").any():
            continue
        summary = dynamics.phase_summary(table)
        p = summary["induction"]
        fig = go.Figure()
        for metric in ("previous_token", "induction"):
            c = dynamics.head_curve(table, metric)
            fig.add_trace(go.Scatter(x=c["step"], y=c["value"], name=f"best {metric} head",
                                     mode="lines+markers"))
        icl = table[table["metric"] == "icl_score"].sort_values("step")
        fig.add_trace(go.Scatter(x=icl["step"], y=icl["value"], name="ICL score (nats)", yaxis="y2",
                                 mode="lines+markers", line=dict(dash="dot")))
        fig.add_vrect(x0=p["start"], x1=p["end"], fillcolor="orange", opacity=0.2, line_width=0)
        fig.update_layout(title=f"{model}: head scores and ICL score over training (phase change shaded)",
                          xaxis_type="log", xaxis_title="training step", yaxis_title="score",
                          yaxis2=dict(overlaying="y", side="right", title="ICL score"),
                          height=380, margin=dict(l=10, r=10, t=40, b=10))
        rep.figures[f"dynamics/{model}/phase_change"] = fig
        base = {"analysis": "dynamics", "model": model, "metric": "induction"}
        best = dynamics.head_curve(table, "induction").set_index("step")
        for when, step in (("before", p["start"]), ("after", p["end"])):
            v = aggregate(select_rows(d, {**base, "step": step}), "max", True)
            r = best.loc[step]
            ci = f" {ci_text(r)}, n={int(r['n'])} prompts" if r["ci_low"] == r["ci_low"] else ""
            rep.add(Finding(f"{model}: best induction head {when} the phase change (step {step}): "
                            f"{v:.3f}{ci}", v, {**base, "step": step}, agg="max", per_head=True,
                            section="training dynamics"))
        if "previous_token" in summary:
            q = summary["previous_token"]
            v = aggregate(select_rows(d, {**base, "metric": "previous_token", "step": q["end"], "layer": 0}),
                           "max", True)
            rep.add(Finding(f"{model}: the layer-0 previous-token head rises fastest between steps "
                            f"{q['start']} and {q['end']} (score {v:.3f} at {q['end']}), "
                            f"{'before or with' if q['before_or_with'] else 'after'} the induction head "
                            f"(steps {p['start']}-{p['end']})", v,
                            {**base, "metric": "previous_token", "step": q["end"], "layer": 0},
                            agg="max", per_head=True, section="training dynamics"))


def build_report(store: Any, title: str = "ICL Workbench report", notes: list[str] | None = None,
                 runs: str = "current") -> Report:
    """Figures, findings and provenance of ``store`` (a ResultsStore or folder): the current unit
    of each cell (``experiments.runs.cells``), or every run with ``runs="all"``."""

    store = store if isinstance(store, ResultsStore) else ResultsStore(store, create=False)
    df = store.frame(runs=runs)
    rep = Report(title=title, notes=list(notes or []))
    if store.skipped:
        rep.notes.append(store.skipped_line() or "")
    superseded = df.attrs.get("iclwb.superseded") or {}
    if superseded and runs == "current":
        rep.notes.append(f"{len(superseded)} superseded unit(s) left out (another run of the same cell is "
                         f"current: the running code's, with the most prompts, the latest); "
                         f"`iclwb sweep results --all-runs` shows them, `iclwb sweep prune` moves them aside")
    rep.notes.extend(_stale_notes(store, df))
    if df.empty:
        rep.notes.append("the store has no results yet")
        return rep
    rep.effects = effect_rows(df)
    sections = {"head_scan": _head_scan_section, "circuit": _circuit_section, "icl_vs_gd": _ivg_section,
                "vectors": _vectors_section, "dynamics": _dynamics_section}
    for analysis, fn in sections.items():
        d = df[df["analysis"] == analysis].dropna(axis=1, how="all")
        if not d.empty:
            fn(d, rep)
    prov_cols = ["analysis", "model", "model_hash", "task", "k", "seed", "git_commit", "config_hash", "wall_time_s", "cpu_time_s"]
    prov = df.drop_duplicates("unit_key")[[c for c in prov_cols if c in df.columns]].copy()
    prov["model_hash"] = prov["model_hash"].str[:12]
    for c in ("wall_time_s", "cpu_time_s"):
        if c in prov.columns:
            prov[c] = prov[c].round(2)
    rep.provenance = prov.sort_values(["analysis", "model", "task", "k", "seed"]).reset_index(drop=True)
    rep.figures = {**forests(rep.effects), **rep.figures}
    for fig in rep.all_figures().values():
        paper_style(fig)
    return rep


FORESTS = {
    ("head scan", "induction score"): ("Top induction heads: score minus its null", "induction score - null"),
    ("circuit", "knockout"): ("Circuit knockouts: accuracy minus the random control's",
                              "accuracy difference (knockout - random control)"),
    ("circuit", "ICL gain"): ("ICL gain: accuracy with demonstrations minus zero-shot",
                              "accuracy difference (ICL - zero-shot)"),
    ("ICL vs GD", "accuracy"): ("Fine-tuning on the demonstrations (GD) minus ICL: accuracy",
                                "accuracy difference (GD - ICL)"),
    ("ICL vs GD", "squared error"): ("Reference learners minus the model (ICL): squared error on the query",
                                     "squared error difference (reference - ICL)"),
    ("ICL vectors", "vector"): ("ICL vectors: accuracy with the vector minus with a random vector of the same norm",
                                "accuracy difference (vector - random vector)"),
}
"""Each forest plot's title and x-axis, by (question, unit of the effect)."""


def forests(rows: pd.DataFrame) -> dict[str, go.Figure]:
    """One forest plot per (question, unit) of the effect rows, named ``"<question>/forest: <unit>"``."""
    out = {}
    for (question, unit), g in (rows.groupby(["question", "unit"], sort=False) if len(rows) else []):
        title, xtitle = FORESTS.get((question, unit), (f"{question}: {unit}", unit))
        out[f"{question}/forest: {unit}"] = forest(g, title, xtitle)
    return out
