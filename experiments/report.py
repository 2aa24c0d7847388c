"""The HTML report of a results store: plotly figures, the findings in words, and provenance.

``build_report(store)`` reads every stored unit and returns a ``Report``: the figures (plain
``go.Figure`` objects, also usable in notebooks and the app), the *findings* (each a sentence plus
the number it quotes and the store filter that number was computed from, so a test can recompute
it), and a one-screen text summary. ``Report.write(path)`` writes one self-contained HTML file
with plotly.js inlined once (works offline), plus ``summary.txt`` and ``findings.json`` beside it.

Every number in the summary is an aggregate (mean over seeds, max over heads, ...) of the rows the
finding's ``filters`` select; ``Finding.recompute(frame)`` does that computation again.
"""

from __future__ import annotations

import html
import json
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go


@dataclass
class Finding:
    """One quoted number: ``agg`` of ``value`` over the rows matching ``filters`` (after averaging
    over seeds within each (layer, head) when ``per_head``)."""

    text: str
    value: float
    filters: dict[str, Any]
    agg: str = "mean"  # mean | max | argmax
    per_head: bool = False
    section: str = ""

    def recompute(self, df: pd.DataFrame) -> float:
        return _aggregate(_select(df, self.filters), self.agg, self.per_head)


def _select(df: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    m = pd.Series(True, index=df.index)
    for col, val in filters.items():
        if col not in df.columns:
            return df.iloc[0:0]
        m &= df[col].isin(val) if isinstance(val, list) else (df[col] == val)
    return df[m]


def _aggregate(rows: pd.DataFrame, agg: str, per_head: bool) -> float:
    if rows.empty:
        return float("nan")
    vals = rows.groupby(["layer", "head"])["value"].mean() if per_head else rows["value"]
    if agg == "mean":
        return float(vals.mean())
    if agg == "max":
        return float(vals.max())
    raise ValueError(f"unknown aggregate {agg!r}")


@dataclass
class Report:
    title: str
    figures: dict[str, go.Figure] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: pd.DataFrame | None = None

    def add(self, finding: Finding) -> None:
        """Keep a finding (one whose number is undefined, e.g. a ratio over no cases, is noted)."""
        if finding.value != finding.value:  # NaN
            self.notes.append(f"undefined: {finding.text.rsplit(':', 1)[0]} (no cases to measure)")
            return
        self.findings.append(finding)

    def summary(self, width: int = 100) -> str:
        lines = [self.title, "=" * min(width, len(self.title))]
        section = None
        for f in self.findings:
            if f.section != section:
                section = f.section
                lines.append(f"[{section}]")
            lines.append(textwrap.fill(f.text, width, initial_indent="  - ", subsequent_indent="      "))
        for n in self.notes:
            lines.append(textwrap.fill(n, width, initial_indent="  note: ", subsequent_indent="      "))
        return "\n".join(lines)

    def write(self, path: str | Path) -> Path:
        from plotly.offline import get_plotlyjs

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "pre{background:#f6f6f6;padding:1em;overflow-x:auto}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}.fig{margin:1.5em 0}</style>",
            f"<script type='text/javascript'>{get_plotlyjs()}</script>",
            "</head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
            f"<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>",
            "<h2>Findings</h2>",
            f"<pre id='summary'>{html.escape(self.summary())}</pre>",
            "<h2>Figures</h2>",
        ]
        for i, (name, fig) in enumerate(self.figures.items()):
            parts.append(f"<div class='fig' id='fig-{i}' data-name='{html.escape(name)}'>")
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{i}"))
            parts.append("</div>")
        if self.provenance is not None and not self.provenance.empty:
            parts.append("<h2>Provenance</h2>")
            parts.append(self.provenance.to_html(index=False, escape=True))
        parts.append("</body></html>")
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text("\n".join(parts))
        tmp.replace(path)
        (path.parent / "summary.txt").write_text(self.summary() + "\n")
        (path.parent / "findings.json").write_text(json.dumps(
            [asdict(f) for f in self.findings], indent=1, default=str) + "\n")
        return path


# --------------------------------------------------------------------------------- figures
def head_heatmap(df: pd.DataFrame, model: str, metric: str) -> go.Figure:
    """Layer x head heatmap of one head score (mean over seeds)."""
    t = df.groupby(["layer", "head"])["value"].mean().unstack("head").sort_index()
    fig = go.Figure(go.Heatmap(z=t.values, x=[f"H{h}" for h in t.columns], y=[f"L{l}" for l in t.index],
                               colorscale="Viridis", colorbar={"title": metric},
                               hovertemplate="%{y}%{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"{model}: {metric} score by head", xaxis_title="head", yaxis_title="layer",
                      height=max(260, 22 * len(t.index) + 120), margin=dict(l=60, r=20, t=50, b=40))
    fig.update_yaxes(autorange="reversed")
    return fig


def ablation_bars(df: pd.DataFrame, title: str) -> go.Figure:
    """Accuracy under each knockout beside its random control (mean and std over seeds)."""
    rows = df[df["metric"].str.startswith("acc:")]
    stats = rows.groupby("metric")["value"].agg(["mean", "std"]).fillna(0.0)
    names = [m[4:] for m in stats.index if not m.endswith(":random")]
    order = [n for n in ("unablated", "zero_shot") if n in names] + sorted(
        n for n in names if n not in ("unablated", "zero_shot"))
    knocked = [stats.loc[f"acc:{n}"] for n in order]
    ctrl = [stats.loc[f"acc:{n}:random"] if f"acc:{n}:random" in stats.index else None for n in order]
    fig = go.Figure()
    fig.add_bar(name="knockout", x=order, y=[s["mean"] for s in knocked],
                error_y=dict(type="data", array=[s["std"] for s in knocked]))
    fig.add_bar(name="random control", x=order, y=[None if c is None else c["mean"] for c in ctrl],
                error_y=dict(type="data", array=[0 if c is None else c["std"] for c in ctrl]))
    fig.update_layout(title=title, barmode="group", yaxis_title="accuracy", yaxis_range=[0, 1.05],
                      height=380)
    return fig


def by_layer_lines(df: pd.DataFrame, metrics: list[str], title: str, ytitle: str) -> go.Figure:
    fig = go.Figure()
    for m in metrics:
        t = df[df["metric"] == m].groupby("layer")["value"].mean().sort_index()
        if not t.empty:
            fig.add_scatter(x=t.index.tolist(), y=t.values.tolist(), mode="lines+markers", name=m)
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=ytitle, height=360)
    return fig


def vs_k_lines(df: pd.DataFrame, metrics: list[str], title: str, ytitle: str, log_y: bool = False) -> go.Figure:
    fig = go.Figure()
    for m in metrics:
        t = df[df["metric"] == m].groupby("k")["value"].mean().sort_index()
        if not t.empty:
            fig.add_scatter(x=t.index.tolist(), y=t.values.tolist(), mode="lines+markers", name=m)
    fig.update_layout(title=title, xaxis_title="k (demonstrations)", yaxis_title=ytitle, height=380)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _fmt(v: float) -> str:
    """Three decimals, or three significant digits for small numbers (errors near zero)."""
    return f"{v:.3f}" if abs(v) >= 0.01 or v == 0 else f"{v:.3e}"


# --------------------------------------------------------------------------------- sections
SUMMARY_SCORES = ("previous_token", "induction", "ngram_2", "ngram_3", "ngram_4")


def _head_scan_section(df: pd.DataFrame, rep: Report) -> None:
    for model in sorted(df["model"].unique()):
        d = df[df["model"] == model]
        for metric in sorted(d["metric"].unique()):
            dm = d[d["metric"] == metric]
            rep.figures[f"head_scan/{model}/{metric}"] = head_heatmap(dm, model, metric)
            if metric not in SUMMARY_SCORES:
                continue  # every score gets a figure; the summary quotes the ICL-relevant ones
            per_head = dm.groupby(["layer", "head"])["value"].mean()
            (l, h), best = per_head.idxmax(), float(per_head.max())
            n_seeds = dm["seed"].nunique()
            rep.add(Finding(
                text=f"{model}: top {metric} head L{l}H{h} = {best:.3f}"
                     f"{f' (mean of {n_seeds} seeds)' if n_seeds > 1 else ''}",
                value=best, filters={"analysis": "head_scan", "model": model, "metric": metric},
                agg="max", per_head=True, section="head scan"))


def _circuit_section(df: pd.DataFrame, rep: Report) -> None:
    for (model, task, k), d in df.groupby(["model", "task", "k"]):
        tag = f"{model} / {task} / k={k}"
        base = {"analysis": "circuit", "model": model, "task": task, "k": int(k)}
        n_prompts = int(d["n_prompts"].iloc[0]) if "n_prompts" in d.columns else 0
        n_seeds = d["seed"].nunique()
        abl = d[d["step"] == "ablation"]
        if not abl.empty:
            win = abl["window"].iloc[0] if "window" in abl.columns else "?"
            rep.figures[f"circuit/{tag}/ablations"] = ablation_bars(
                abl, f"{tag}: accuracy under knockouts (layers {win}) vs random control "
                     f"({n_prompts} prompts x {n_seeds} seeds)")
            def q(metric: str) -> float:
                return _aggregate(_select(d, {"metric": metric}), "mean", False)
            un, zs = q("acc:unablated"), q("acc:zero_shot")
            rep.add(Finding(f"{tag}: accuracy {un:.3f} with demonstrations, {zs:.3f} zero-shot",
                                        un, {**base, "metric": "acc:unablated"}, section="circuit"))
            effects = []
            for m in sorted(set(abl["metric"])):
                if m.endswith(":random") or m in ("acc:unablated", "acc:zero_shot"):
                    continue
                effects.append((q(f"{m}:random") - q(m), m))
            if effects:
                drop, m = max(effects)
                acc = q(m)
                what = ("largest knockout effect" if drop > 0 else
                        "no knockout lowers accuracy below its random control; closest")
                rep.add(Finding(
                    f"{tag}: {what}: {m[4:]} (layers {win}): accuracy {acc:.3f} vs "
                    f"{q(m + ':random'):.3f} for its random control",
                    acc, {**base, "metric": m}, section="circuit"))
        summ = d[d["step"] == "summarize"]
        if not summ.empty:
            ms = sorted(summ["metric"].unique())
            rep.figures[f"circuit/{tag}/summarize"] = by_layer_lines(
                summ, ms, f"{tag}: summarize - centroid-probe accuracy by layer", "accuracy")
            for key in [m for m in ("centroid_acc:x_q", "centroid_acc:s_q") if m in ms] or ms[:1]:
                per_layer = summ[summ["metric"] == key].groupby("layer")["value"].mean()
                rep.add(Finding(
                    f"{tag}: summarize - {key} peaks at {float(per_layer.max()):.3f} "
                    f"(layer {int(per_layer.idxmax())})",
                    float(per_layer.max()), {**base, "metric": key}, agg="max", per_head=True,
                    section="circuit"))
        merge = d[(d["step"] == "merge") & d["metric"].str.startswith("copy_magnitude")]
        if not merge.empty:
            rep.figures[f"circuit/{tag}/merge"] = by_layer_lines(
                merge, sorted(merge["metric"].unique()), f"{tag}: semantics merge - copy magnitude A[y_i -> s_i]",
                "max head attention")
        retr = d[(d["step"] == "retrieve") & (d["metric"] == "C")]
        if not retr.empty:
            rep.figures[f"circuit/{tag}/retrieve"] = head_heatmap(retr, tag, "correctness C (retrieve)")
            per_head = retr.groupby(["layer", "head"])["value"].mean()
            (l, h) = per_head.idxmax()
            rep.add(Finding(
                f"{tag}: retrieve - best head L{l}H{h}, correctness C = {float(per_head.max()):.3f}",
                float(per_head.max()), {**base, "metric": "C", "step": "retrieve"}, agg="max",
                per_head=True, section="circuit"))


def _ivg_section(df: pd.DataFrame, rep: Report) -> None:
    for model, d in df.groupby("model"):
        ms = set(d["metric"].unique())
        base = {"analysis": "icl_vs_gd", "model": model}
        if "preds_diff" in ms:  # linear regression
            errs = ["err_model"] + sorted(m for m in ms if m.startswith("err_") and m not in ("err_model", "err_ref"))
            fig = vs_k_lines(d, errs, f"{model}: squared error / d vs k (model and baselines)", "error")
            fig.update_traces(selector=dict(name="err_model"), line=dict(width=4))
            top = float(d[d["metric"] == "err_model"]["value"].max())
            if top == top and top > 0:  # frame the model's curve; far-off baselines leave the plot
                fig.update_yaxes(range=[0, 1.3 * top])
            rep.figures[f"icl_vs_gd/{model}/errors"] = fig
            rep.figures[f"icl_vs_gd/{model}/gd_match"] = vs_k_lines(
                d, [m for m in ("preds_diff", "sens_cos", "sens_l2") if m in ms],
                f"{model}: model vs GD (prediction difference, sensitivity cosine)", "value")
            kmax = int(d["k"].max())
            for m, what in (("err_model", "squared error / d of the model"),
                            ("err_least_squares", "squared error / d of least squares"),
                            ("err_gd1", "squared error / d of one GD step"),
                            ("preds_diff", "mean |y_model - y_GD|"), ("sens_cos", "sensitivity cosine to GD")):
                if m in ms:
                    v = _aggregate(_select(d, {"metric": m, "k": kmax}), "mean", False)
                    rep.add(Finding(f"{model}: {what} at k={kmax}: {_fmt(v)}", v,
                                                {**base, "metric": m, "k": kmax}, section="ICL vs GD"))
        else:
            accs = [m for m in ("acc_zs", "acc_icl", "acc_gd") if m in ms]
            if accs:
                rep.figures[f"icl_vs_gd/{model}/accuracy"] = vs_k_lines(
                    d, accs, f"{model}: accuracy of zero-shot, ICL and GD vs k", "accuracy")
            dist = [m for m in ("kl_icl_gd", "tv_icl_gd", "topk_overlap", "rec2ftp") if m in ms]
            if dist:
                rep.figures[f"icl_vs_gd/{model}/agreement"] = vs_k_lines(
                    d, dist, f"{model}: agreement of ICL and GD output distributions", "value")
            if "simaou" in ms:
                sim = d[d["metric"].isin(["simaou", "simaou_random"])]
                if "layer" in sim.columns and sim["layer"].notna().any():
                    rep.figures[f"icl_vs_gd/{model}/simaou"] = by_layer_lines(
                        sim, ["simaou", "simaou_random"], f"{model}: SimAOU by layer (all k)", "cosine")
            kmax = int(d["k"].max())
            for m, what in (("acc_icl", "ICL accuracy"), ("acc_gd", "GD accuracy"), ("tv_icl_gd", "TV(ICL, GD)"),
                            ("rec2ftp", "Rec2FTP")):
                if m in ms:
                    v = _aggregate(_select(d, {"metric": m, "k": kmax}), "mean", False)
                    rep.add(Finding(f"{model}: {what} at k={kmax}: {v:.3f}", v,
                                                {**base, "metric": m, "k": kmax}, section="ICL vs GD"))


def _stale_notes(store: Any, df: pd.DataFrame) -> list[str]:
    """A note when some reported units are stale (computed by other code or another checkpoint)."""
    from collections import Counter

    from experiments.sweep.executors import stored_states

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


def build_report(store: Any, title: str = "ICL Workbench report", notes: list[str] | None = None) -> Report:
    """Figures, findings and provenance of everything in ``store`` (a ResultsStore or folder)."""
    from experiments.sweep.store import ResultsStore

    store = store if isinstance(store, ResultsStore) else ResultsStore(store, create=False)
    df = store.frame()
    rep = Report(title=title, notes=list(notes or []))
    if store.skipped:
        rep.notes.append(store.skipped_line() or "")
    rep.notes.extend(_stale_notes(store, df))
    if df.empty:
        rep.notes.append("the store has no results yet")
        return rep
    sections = {"head_scan": _head_scan_section, "circuit": _circuit_section, "icl_vs_gd": _ivg_section}
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
    return rep
