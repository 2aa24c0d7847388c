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
import math
import textwrap
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from circuits import plots
from circuits.icl_circuit import ablation_summary
from circuits.plots import ablation_bars as circuit_bars
from experiments.runs.executors import stored_states
from experiments.runs.store import ResultsStore
from experiments.studies import dynamics
from experiments.studies.icl_vs_gd import icl_vs_gd_stats
from experiments.studies.scan import head_scan_stats
from experiments.studies.vectors_study import vectors_stats


@dataclass
class Finding:
    """One finding: a sentence stating its verdict with the interval, and the number it quotes:
    ``agg`` of ``value`` over the rows matching ``filters`` (per-prompt rows where the unit stored
    them; after averaging over seeds within each (layer, head) when ``per_head``). ``agg="stats"``
    marks a number that only a statistics function re-derives (e.g. at a dev-chosen layer)."""

    text: str
    value: float
    filters: dict[str, Any]
    agg: str = "mean"  # mean | max | stats
    per_head: bool = False
    section: str = ""
    verdict: str = ""
    """probes.stats.verdict of the finding's comparison ("" for an interval without a test)."""

    def recompute(self, df: pd.DataFrame) -> float:
        if self.agg == "stats":
            return float("nan")
        rows = _select(df, self.filters)
        if not self.per_head:
            rows = _per_prompt_mean(rows)
        elif "prompt" in rows.columns:
            rows = rows[rows["prompt"] < 0]
        return _aggregate(rows, self.agg, self.per_head)


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
    """Findings grouped by question, each question's main figures and tables, an appendix of the
    raw per-unit figures, notes and provenance."""

    title: str
    figures: dict[str, go.Figure] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    appendix: dict[str, go.Figure] = field(default_factory=dict)
    extra_html: list[str] = field(default_factory=list)
    """Further sections (e.g. training dynamics) as ready HTML, placed before the appendix."""

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

    def _figure_html(self, i: int, name: str, fig: go.Figure) -> list[str]:
        return [f"<div class='fig' id='fig-{i}' data-name='{html.escape(name)}'>",
                fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{i}"), "</div>"]

    def _section_html(self, section: str, start: int) -> tuple[list[str], int]:
        parts = [f"<h2>{html.escape(QUESTIONS.get(section, section))}</h2>"]
        para = verdict_paragraph(self.findings, section)
        if para:
            parts.append(f"<p class='verdict'>{html.escape(para)}</p>")
        items = [f for f in self.findings if f.section == section]
        if items:
            parts.append("<ul>" + "".join(f"<li>{html.escape(f.text)}</li>" for f in items) + "</ul>")
        i = start
        key = {"head scan": "head scan/", "circuit": "circuit/", "ICL vs GD": "icl_vs_gd/",
               "ICL vectors": "ICL vectors/", "training dynamics": "dynamics/"}.get(section, section)
        for name, fig in self.figures.items():
            if name.startswith(key):
                parts += self._figure_html(i, name, fig)
                i += 1
        tkey = {"head scan": "head scan", "circuit": "circuit", "ICL vs GD": "ICL vs GD",
                "ICL vectors": "ICL vectors"}.get(section, section)
        for name, t in self.tables.items():
            if name.startswith(tkey):
                parts.append(f"<h3>{html.escape(name)} (n, 95% CI, paired tests, BH q)</h3>")
                parts.append(_table_html(t, TABLE_COLUMNS))
        return parts, i

    def write(self, path: str | Path) -> Path:

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "pre{background:#f6f6f6;padding:1em;overflow-x:auto}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}.fig{margin:1.5em 0}.verdict{font-size:1.05em}</style>",
            f"<script type='text/javascript'>{get_plotlyjs()}</script>",
            "</head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
            f"<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}. Every number comes with its n and 95% "
            "confidence interval over prompts (seeds pooled); comparisons are paired on the same prompts, "
            "with Benjamini-Hochberg q-values within each analysis run. Verdicts: significant (q &lt; 0.05), "
            "no effect detected (the interval lies within the minimum detectable effect), or inconclusive.</p>",
            "<h2>Summary</h2>",
            f"<pre id='summary'>{html.escape(self.summary())}</pre>",
        ]
        i = 0
        sections = list(dict.fromkeys([*QUESTIONS, *(f.section for f in self.findings)]))
        for section in sections:
            if any(f.section == section for f in self.findings):
                more, i = self._section_html(section, i)
                parts += more
        for extra in self.extra_html:
            parts.append(extra)
        if self.appendix:
            parts.append("<h2>Appendix: per-unit figures</h2>")
            for name, fig in self.appendix.items():
                parts += self._figure_html(i, name, fig)
                i += 1
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


TABLE_COLUMNS = ["model", "task", "k", "metric", "layer", "head", "ablation", "window", "method", "condition",
                 "control", "n", "value", "acc_mean", "ci_low", "ci_high", "control_value", "random_mean",
                 "effect", "effect_ci_low", "effect_ci_high", "p_value", "q_value", "mde", "verdict"]
"""Columns the report's tables show, where a table has them."""


# --------------------------------------------------------------------------------- figures
def head_heatmap(df: pd.DataFrame, model: str, metric: str, zmin: float | None = 0.0,
                 zmax: float | None = None) -> go.Figure:
    """Layer x head heatmap of one head score (mean over seeds). One score's maps share one colour
    scale anchored at ``zmin`` (0) and ``zmax`` (1 for attention mass), so colours compare across
    models."""
    t = df.groupby(["layer", "head"])["value"].mean().unstack("head").sort_index()
    fig = go.Figure(go.Heatmap(z=t.values, x=[f"H{h}" for h in t.columns], y=[f"L{l}" for l in t.index],
                               colorscale="Viridis", colorbar={"title": metric}, zmin=zmin, zmax=zmax,
                               hovertemplate="%{y}%{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"{model}: {metric} score by head", xaxis_title="head", yaxis_title="layer",
                      height=max(260, 22 * len(t.index) + 120), margin=dict(l=60, r=20, t=50, b=40))
    fig.update_yaxes(autorange="reversed")
    return fig


def by_layer_lines(df: pd.DataFrame, metrics: list[str], title: str, ytitle: str) -> go.Figure:
    fig = go.Figure()
    for m in metrics:
        t = df[df["metric"] == m].groupby("layer")["value"].mean().sort_index()
        if not t.empty:
            fig.add_scatter(x=t.index.tolist(), y=t.values.tolist(), mode="lines+markers", name=m)
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=ytitle, height=360)
    return fig


def _fmt(v: float) -> str:
    """Three decimals, or three significant digits for small numbers (errors near zero)."""
    return f"{v:.3f}" if abs(v) >= 0.01 or v == 0 else f"{v:.3e}"


# --------------------------------------------------------------------------------- sections
SUMMARY_SCORES = ("previous_token", "induction", "ngram_2", "ngram_3", "ngram_4")
QUESTIONS = {
    "head scan": "Which heads implement ICL?",
    "circuit": "Does the summarize -> merge -> retrieve circuit hold?",
    "ICL vs GD": "Does ICL look like gradient descent?",
    "ICL vectors": "Do ICL vectors carry the task?",
    "training dynamics": "When do the ICL heads form during training?",
}
CI_CAPTION = "Error bars: 95% confidence intervals over prompts (seeds pooled)."


def _ci(r: Any, lo: str = "ci_low", hi: str = "ci_high") -> str:
    return f"[{_fmt(float(r[lo]))}, {_fmt(float(r[hi]))}]"


def _cmp_text(r: Any) -> str:
    """The verdict of one comparison row with its effect, interval, q and n."""
    eff = f"{float(r['effect']):+.3f} {_ci(r, 'effect_ci_low', 'effect_ci_high')}"
    mde = float(r.get("mde", math.nan)) if hasattr(r, "get") else math.nan
    power = ""  # an inconclusive paired 0/1 comparison: what this n could have detected
    if r["verdict"] == "inconclusive" and math.isfinite(mde):
        power = f", MDE at this n = {mde:.3f}"
    return f"{r['verdict']} (effect {eff}, q={float(r['q_value']):.2g}, n={int(r['n'])}{power})"


def _table_html(df: pd.DataFrame, cols: list[str]) -> str:
    cols = [c for c in cols if c in df.columns]
    return df[cols].to_html(index=False, float_format=lambda v: f"{v:.4g}", escape=True, na_rep="")


def _per_prompt_mean(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows a finding's number is the mean of: per-prompt rows where the unit stored them."""
    if "prompt" in rows.columns and (rows["prompt"] >= 0).any():
        return rows[rows["prompt"] >= 0]
    return rows


def _head_scan_section(df: pd.DataFrame, rep: Report) -> None:

    for model in sorted(df["model"].unique()):
        d = df[df["model"] == model]
        agg = d[d["prompt"] < 0] if "prompt" in d.columns else d
        for metric in sorted(agg["metric"].unique()):
            zmax = 1.0 if metric not in ("copying", "k_composition", "icl_score") else None
            rep.appendix[f"head_scan/{model}/{metric}"] = head_heatmap(agg[agg["metric"] == metric], model, metric,
                                                                       zmin=0.0, zmax=zmax)
        stats_ok = "p_value" in d.columns and d["p_value"].notna().any()
        cmp = head_scan_stats(d).comparisons if stats_ok else pd.DataFrame()
        for metric in [m for m in SUMMARY_SCORES if m in set(agg["metric"])]:
            dm = agg[agg["metric"] == metric]
            per_head = dm.groupby(["layer", "head"])["value"].mean()
            (l, h), best = per_head.idxmax(), float(per_head.max())
            n_seeds = dm["seed"].nunique()
            est = dm[(dm["layer"] == l) & (dm["head"] == h)]
            ci = ""
            if "ci_low" in est.columns and est["ci_low"].notna().any():
                e = est.iloc[0]
                ci = f" {_ci(e)} (n={int(e['n'])} prompts{', seed ' + str(int(e['seed'])) if n_seeds > 1 else ''})"
            test = ""
            c = cmp[(cmp["metric"] == metric)] if len(cmp) else cmp
            if len(c):
                sig = c[c["above_null"].astype(bool)].drop_duplicates(["layer", "head"])
                top = c[(c["layer"] == l) & (c["head"] == h)].iloc[0]
                test = (f"; {len(sig)} of {int(per_head.size)} heads above their null at q<0.05;"
                        f" top head vs null: {_cmp_text(top)}")
            elif metric.startswith("ngram"):
                test = "; no null for n-gram scores: interval only"
            rep.add(Finding(
                text=f"{model}: top {metric} head L{l}H{h} = {best:.3f}{ci}"
                     f"{f' (mean of {n_seeds} seeds)' if n_seeds > 1 else ''}{test}",
                value=best, filters={"analysis": "head_scan", "model": model, "metric": metric},
                agg="max", per_head=True, section="head scan",
                verdict=str(top["verdict"]) if len(c) else ""))
        for metric in [m for m in ("induction", "previous_token") if m in set(agg["metric"])]:
            rep.figures.setdefault(f"head scan/{model}/{metric}", head_heatmap(
                agg[agg["metric"] == metric], model, metric, zmin=0.0, zmax=1.0))
        if len(cmp):
            show = cmp[cmp["metric"].isin(SUMMARY_SCORES)].sort_values("value", ascending=False)
            rep.tables[f"head scan/{model}"] = show.groupby("metric", sort=False).head(5)


def _circuit_section(df: pd.DataFrame, rep: Report) -> None:

    for (model, task, k), d in df.groupby(["model", "task", "k"]):
        tag = f"{model} / {task} / k={k}"
        base = {"analysis": "circuit", "model": model, "task": task, "k": int(k)}
        abl = d[d["step"] == "ablation"]
        if not abl.empty and "prompt" in abl.columns and (abl["prompt"] >= 0).any():
            s = ablation_summary(abl)
            win = s["window"].iloc[0]
            fig = circuit_bars(abl, title=f"{tag}: accuracy under knockouts (layers {win}) vs random "
                                          f"control; {CI_CAPTION}")
            rep.figures[f"circuit/{tag}/ablations"] = fig
            rep.tables[f"circuit/{tag}"] = s
            un = s[s["ablation"] == "unablated"].iloc[0]
            zs = s[s["ablation"] == "zero_shot"].iloc[0]
            rep.add(Finding(
                f"{tag}: accuracy {un['acc_mean']:.3f} {_ci(un)} with demonstrations vs "
                f"{zs['acc_mean']:.3f} {_ci(zs)} zero-shot: ICL gain {_cmp_text(un)}",
                float(un["acc_mean"]), {**base, "metric": "acc:unablated"}, section="circuit",
                verdict=str(un["verdict"])))
            for _, r in s[~s["ablation"].isin(["unablated", "zero_shot"])].iterrows():
                rep.add(Finding(
                    f"{tag}: knockout {r['ablation']} (layers {r['window']}): accuracy {r['acc_mean']:.3f} vs "
                    f"{r['random_mean']:.3f} for its random control: {_cmp_text(r)}",
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
        fig = _est_vs_k(est, metrics, f"{tag}: {'squared error / d' if linreg else 'accuracy'} vs k; {CI_CAPTION}",
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
            rows = _select(d, {"metric": cond, "k": kmax})
            rep.add(Finding(
                f"{tag}, k={kmax}: {cond} {float(r['value']):.3f} vs {ctrl} {float(r['control_value']):.3f}: "
                f"{_cmp_text(r)}", float(_per_prompt_mean(rows)["value"].mean()),
                {"analysis": "icl_vs_gd", "model": model, "task": task, "metric": cond, "k": kmax},
                section="ICL vs GD", verdict=str(r["verdict"])))
        if "simaou" in set(d["metric"]):
            sim = d[d["metric"].isin(["simaou", "simaou_random"])]
            if "layer" in sim.columns and sim["layer"].notna().any():
                rep.appendix[f"icl_vs_gd/{tag}/simaou"] = by_layer_lines(
                    sim, ["simaou", "simaou_random"], f"{tag}: SimAOU by layer (all k)", "cosine")


def _est_vs_k(est: pd.DataFrame, metrics: list[str], title: str, ytitle: str) -> go.Figure:
    fig = go.Figure()
    for m in metrics:
        t = est[(est["metric"] == m) & (est.get("layer", -1) == -1)].sort_values("k")
        if t.empty:
            continue
        fig.add_scatter(x=t["k"].tolist(), y=t["value"].tolist(), mode="lines+markers", name=m,
                        error_y=dict(type="data", symmetric=False, array=(t["ci_high"] - t["value"]).tolist(),
                                     arrayminus=(t["value"] - t["ci_low"]).tolist()))
    fig.update_layout(title=title, xaxis_title="k (demonstrations)", yaxis_title=ytitle, height=380)
    return fig


def _vectors_section(df: pd.DataFrame, rep: Report) -> None:

    per = df[df["prompt"] >= 0] if "prompt" in df.columns else df.iloc[0:0]
    needed = {"condition", "method", "split"}
    if per.empty or not needed <= set(per.columns):
        return
    st = vectors_stats(per)
    rep.tables["ICL vectors"] = st.comparisons
    for _, r in st.comparisons.iterrows():
        if (r["condition"], r["control"]) not in (("with vector", "with random vector"), ("with vector", "zero-shot")):
            continue
        rep.add(Finding(
            f"{r['model']} / {r['task']} / {r['method']}: accuracy with vector {float(r['value']):.3f} vs "
            f"{r['control']} {float(r['control_value']):.3f}: {_cmp_text(r)}", float(r["value"]),
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


def verdict_paragraph(findings: list[Finding], section: str) -> str:
    """A results paragraph for one question, generated from its findings' verdicts."""
    fs = [f for f in findings if f.section == section]
    if not fs:
        return ""
    counts: dict[str, int] = {}
    for f in fs:
        key = "no effect detected" if f.verdict.startswith("no effect") else (f.verdict or "interval only")
        counts[key] = counts.get(key, 0) + 1
    tally = ", ".join(f"{n} {k}" for k, n in counts.items())
    sig = [f.text for f in fs if f.verdict == "significant"]
    lead = f"{len(fs)} findings ({tally}; significant means q < 0.05 after Benjamini-Hochberg within each run)."
    if sig:
        lead += " Significant: " + " ".join(s.rstrip(".") + "." for s in sig[:4])
    return lead


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
            v = _aggregate(_select(d, {**base, "step": step}), "max", True)
            r = best.loc[step]
            ci = f" {_ci(r)}, n={int(r['n'])} prompts" if r["ci_low"] == r["ci_low"] else ""
            rep.add(Finding(f"{model}: best induction head {when} the phase change (step {step}): "
                            f"{v:.3f}{ci}", v, {**base, "step": step}, agg="max", per_head=True,
                            section="training dynamics"))
        if "previous_token" in summary:
            q = summary["previous_token"]
            v = _aggregate(_select(d, {**base, "metric": "previous_token", "step": q["end"], "layer": 0}),
                           "max", True)
            rep.add(Finding(f"{model}: the layer-0 previous-token head rises fastest between steps "
                            f"{q['start']} and {q['end']} (score {v:.3f} at {q['end']}), "
                            f"{'before or with' if q['before_or_with'] else 'after'} the induction head "
                            f"(steps {p['start']}-{p['end']})", v,
                            {**base, "metric": "previous_token", "step": q["end"], "layer": 0},
                            agg="max", per_head=True, section="training dynamics"))


def build_report(store: Any, title: str = "ICL Workbench report", notes: list[str] | None = None) -> Report:
    """Figures, findings and provenance of everything in ``store`` (a ResultsStore or folder)."""

    store = store if isinstance(store, ResultsStore) else ResultsStore(store, create=False)
    df = store.frame()
    rep = Report(title=title, notes=list(notes or []))
    if store.skipped:
        rep.notes.append(store.skipped_line() or "")
    rep.notes.extend(_stale_notes(store, df))
    if df.empty:
        rep.notes.append("the store has no results yet")
        return rep
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
    return rep
