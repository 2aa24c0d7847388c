"""The report's page: ``Finding`` (a sentence and the number it quotes, recomputable from the
store's rows), ``Report`` (findings, figures and tables, written as one self-contained HTML file),
and the figure and number-formatting helpers the report's sections share
(``experiments.runs.report`` builds the sections)."""

from __future__ import annotations

import html
import json
import math
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from probes import verdicts


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
        rows = select_rows(df, self.filters)
        if not self.per_head:
            rows = per_prompt_mean(rows)
        elif "prompt" in rows.columns:
            rows = rows[rows["prompt"] < 0]
        return aggregate(rows, self.agg, self.per_head)


def select_rows(df: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    m = pd.Series(True, index=df.index)
    for col, val in filters.items():
        if col not in df.columns:
            return df.iloc[0:0]
        m &= df[col].isin(val) if isinstance(val, list) else (df[col] == val)
    return df[m]


def aggregate(rows: pd.DataFrame, agg: str, per_head: bool) -> float:
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

    undefined: list[str] = field(default_factory=list)
    """Findings whose number is undefined (e.g. a ratio over no cases): named in one note."""

    def add(self, finding: Finding) -> None:
        """Keep a finding (one whose number is undefined, e.g. a ratio over no cases, is noted)."""
        if finding.value != finding.value:  # NaN
            self.undefined.append(finding.text.rsplit(":", 1)[0])
            return
        self.findings.append(finding)

    def all_notes(self) -> list[str]:
        """The notes, with the undefined findings named in one."""
        extra = ([f"undefined (no cases to measure): {'; '.join(self.undefined)}"] if self.undefined else [])
        return self.notes + extra

    def summary(self, width: int = 100) -> str:
        lines = [self.title, "=" * min(width, len(self.title))]
        section = None
        for f in self.findings:
            if f.section != section:
                section = f.section
                lines.append(f"[{section}]")
            lines.append(textwrap.fill(f.text, width, initial_indent="  - ", subsequent_indent="      "))
        for n in self.all_notes():
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
                parts.append(table_html(t, TABLE_COLUMNS))
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
            f"<p id='sign-convention'><b>Sign convention.</b> {html.escape(verdicts.SIGN_CONVENTION)}</p>",
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


def fmt(v: float) -> str:
    """Three decimals, or three significant digits for small numbers (errors near zero)."""
    return f"{v:.3f}" if abs(v) >= 0.01 or v == 0 else f"{v:.3e}"


QUESTIONS = {
    "head scan": "Which heads implement ICL?",
    "circuit": "Does the summarize -> merge -> retrieve circuit hold?",
    "ICL vs GD": "Does ICL look like gradient descent?",
    "ICL vectors": "Do ICL vectors carry the task?",
    "training dynamics": "When do the ICL heads form during training?",
}
CI_CAPTION = "Error bars: 95% confidence intervals over prompts (seeds pooled)."


def ci_text(r: Any, lo: str = "ci_low", hi: str = "ci_high") -> str:
    return f"[{fmt(float(r[lo]))}, {fmt(float(r[hi]))}]"


def cmp_text(r: Any, baseline: str | None = None, icl_ok: bool = True) -> str:
    """The verdict of one comparison row in words (direction against ``baseline``, or "higher" /
    "lower" when the sentence has just named it), with its
    effect (condition minus baseline), interval, q and n; the sentence an interval that seems to
    disagree with its verdict needs; "no ICL to explain" when ``icl_ok`` is False."""
    eff = f"{float(r['effect']):+.3f} {ci_text(r, 'effect_ci_low', 'effect_ci_high')}"
    mde = float(r.get("mde", math.nan)) if hasattr(r, "get") else math.nan
    power = ""  # an inconclusive paired 0/1 comparison: what this n could have detected
    if r["verdict"] == "inconclusive" and math.isfinite(mde):
        power = f", MDE at this n = {mde:.3f}"
    note = verdicts.agreement_note(r)
    text = (f"{verdicts.verdict_words(r, baseline)}: {eff}, q={float(r['q_value']):.2g}, "
            f"n={int(r['n'])}{power}{' (' + note + ')' if note else ''}")
    return text if icl_ok else text + "; no ICL to explain (ICL's gain over zero-shot is not significant here)"


def table_html(df: pd.DataFrame, cols: list[str]) -> str:
    cols = [c for c in cols if c in df.columns]
    return df[cols].to_html(index=False, float_format=lambda v: f"{v:.4g}", escape=True, na_rep="")


def per_prompt_mean(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows a finding's number is the mean of: per-prompt rows where the unit stored them."""
    if "prompt" in rows.columns and (rows["prompt"] >= 0).any():
        return rows[rows["prompt"] >= 0]
    return rows



def est_vs_k(est: pd.DataFrame, metrics: list[str], title: str, ytitle: str) -> go.Figure:
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
