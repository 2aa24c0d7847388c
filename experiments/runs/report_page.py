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

from experiments.runs import effects, tables
from experiments.runs.figures import head_heatmap, paper_style
from probes import verdicts

__all__ = ["CI_CAPTION", "QUESTIONS", "Finding", "Report", "aggregate", "by_layer_lines", "ci_text", "cmp_text",
           "est_vs_k", "head_heatmap", "paper_style", "per_prompt_mean", "select_rows"]


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
            rows = rows[rows["prompt"].fillna(-1) < 0]  # aggregate rows (an analysis without prompts has none)
        return aggregate(rows, self.agg, self.per_head)


def select_rows(df: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    m = pd.Series(True, index=df.index)
    for col, val in filters.items():
        if col not in df.columns:
            return df.iloc[0:0]
        c = df[col]
        if isinstance(val, (int, float)) and not isinstance(val, bool) and not pd.api.types.is_numeric_dtype(c):
            c = pd.to_numeric(c, errors="coerce")  # e.g. dynamics' steps, stored as text beside circuit's step names
        m &= c.isin(val) if isinstance(val, list) else (c == val)
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


SECTION_KEYS = {"head scan": ("head scan/", "head_scan/"), "circuit": ("circuit/",),
                "ICL vs GD": ("ICL vs GD/", "icl_vs_gd/"), "ICL vectors": ("ICL vectors/", "vectors/"),
                "training dynamics": ("training dynamics/", "dynamics/")}
"""The figure and table names (prefixes) of each question's section."""

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;line-height:1.4}"
         ".scroll{overflow-x:auto;margin:0.5em 0}table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 7px;vertical-align:top;text-align:left}th{background:#f3f3f3}"
         ".fig{margin:1.2em 0}nav li{margin:0.1em 0}details{margin:0.8em 0}summary{cursor:pointer;color:#124}"
         ".sig{background:#e3f4e1}.none{background:#eef0f3}.inc{background:#fff6dc}.claim small{color:#555}"
         "pre{background:#f6f6f6;padding:1em;overflow-x:auto}")
RESIZE = ("<script>document.querySelectorAll('details').forEach(d=>d.addEventListener('toggle',()=>"
          "d.querySelectorAll('.plotly-graph-div').forEach(p=>Plotly.Plots.resize(p))));</script>")


def section_of(name: str) -> str:
    """The question a figure or table name belongs to ("" for none)."""
    return next((s for s, keys in SECTION_KEYS.items() if any(name.startswith(k) for k in keys)), "")


def _anchor(section: str) -> str:
    return "q-" + "".join(c if c.isalnum() else "-" for c in section.lower())


def verdict_class(cell: str) -> str:
    """The CSS class of a verdict-table cell: significant, no effect, or inconclusive."""
    return "sig" if cell.startswith("significantly") else ("none" if cell.startswith(("no effect", "both at"))
                                                            else ("inc" if cell != "not run" else ""))


def verdict_html(table: pd.DataFrame) -> str:
    """The verdict table as HTML: the claim and its sentence in the first column, one column per
    model, each cell shaded by its verdict."""
    models = [c for c in table.columns if c not in ("question", "claim", "sentence")]
    head = "<tr><th>claim</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in models) + "</tr>"
    body = []
    for r in table.to_dict("records"):
        cells = "".join(f"<td class='{'' if m == 'model' else verdict_class(str(r[m]))}'>{html.escape(str(r[m]))}</td>"
                        for m in models)
        body.append(f"<tr><td class='claim'><b>{html.escape(r['claim'])}</b><br><small>{html.escape(r['sentence'])}"
                    f"</small></td>{cells}</tr>")
    return (f"<div class='scroll'><table id='verdict-table' class='verdicts'><thead>{head}</thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


@dataclass
class Report:
    """The verdict table's rows (``effects``), findings grouped by question, each question's figures
    (``figures``: forest plots and heatmaps, shown; ``appendix``: the per-run figures, folded),
    tables, notes and provenance."""

    title: str
    figures: dict[str, go.Figure] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    """The raw comparison tables (``iclwb sweep results --stats`` prints and exports them)."""
    appendix: dict[str, go.Figure] = field(default_factory=dict)
    effects: pd.DataFrame = field(default_factory=pd.DataFrame)
    """``experiments.runs.effects.effect_rows`` of the store: the verdict table and forest plots."""

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
        lines = [self.title]
        section = None
        for f in self.findings:
            if f.section != section:
                section = f.section
                lines.append(f"[{section}]")
            lines.append(textwrap.fill(f.text, width, initial_indent="  - ", subsequent_indent="      "))
        for n in self.all_notes():
            lines.append(textwrap.fill(n, width, initial_indent="  note: ", subsequent_indent="      "))
        return "\n".join(lines)

    def all_figures(self) -> dict[str, go.Figure]:
        """Every figure of the report (shown and folded), by name."""
        return {**self.figures, **self.appendix}

    def verdict_table(self) -> pd.DataFrame:
        """One row per headline claim, one column per model (``effects.verdict_table``)."""
        return effects.verdict_table(self.effects) if len(self.effects) else pd.DataFrame()

    def display_tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the report as a reader sees it (strings, three significant figures): the
        verdict table first, then one table per question (its runs' comparison tables stacked)."""
        out: dict[str, pd.DataFrame] = {}
        vt = self.verdict_table()
        if len(vt):
            out["verdicts"] = vt.drop(columns=["question"])
        for section in SECTION_KEYS:
            parts = [t.assign(**{c: t.get(c, "") for c in ("model", "task")})
                     for name, t in self.tables.items() if section_of(name) == section and len(t)]
            if parts:
                t = pd.concat(parts, ignore_index=True)
                if "layer" in t.columns and section == "ICL vs GD":
                    t = t[t["layer"].fillna(-1) == -1]
                out[section] = tables.display_table(t, TABLE_COLUMNS)
        return out

    def _figure_html(self, i: int, name: str, fig: go.Figure) -> list[str]:
        return [f"<div class='fig' id='fig-{i}' data-name='{html.escape(name)}'>",
                fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{i}",
                            config={"displaylogo": False}), "</div>"]

    def _section_html(self, section: str, start: int, shown: dict[str, pd.DataFrame]) -> tuple[list[str], int]:
        parts = [f"<h2 id='{_anchor(section)}'>{html.escape(QUESTIONS.get(section, section))}</h2>"]
        i = start
        for name, fig in self.figures.items():
            if section_of(name) == section:
                parts += self._figure_html(i, name, fig)
                i += 1
        untested = [f for f in self.findings if f.section == section and not f.verdict]
        if untested and section not in ("head scan",):
            parts.append("<ul>" + "".join(f"<li>{html.escape(f.text)}</li>" for f in untested) + "</ul>")
        if section in shown:
            t = shown[section]
            parts.append(f"<details><summary>Table: {len(t)} comparisons (n, 95% CI, paired tests, BH q)"
                         f"</summary>{tables.to_html(t)}</details>")
        more = [(n, f) for n, f in self.appendix.items() if section_of(n) == section]
        if more:
            parts.append(f"<details><summary>{len(more)} more figures (per run)</summary>")
            for name, fig in more:
                parts += self._figure_html(i, name, fig)
                i += 1
            parts.append("</details>")
        return parts, i

    def sections(self) -> list[str]:
        """The questions this report has something for, in the page's order."""
        names = [*self.figures, *self.appendix, *self.tables]
        return [s for s in SECTION_KEYS if any(section_of(n) == s for n in names)
                or any(f.section == s for f in self.findings)]

    def write(self, path: str | Path) -> Path:
        """The page: verdict table, then per question its forest plots, heatmaps, folded tables and
        per-run figures, then notes, the findings as text and provenance; plotly.js inlined once."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shown = self.display_tables()
        sections = self.sections()
        toc = [("verdicts", "Verdicts")] * ("verdicts" in shown) + [(_anchor(s), QUESTIONS.get(s, s)) for s in sections]
        toc += [("notes", "Notes")] * bool(self.all_notes()) + [("summary", "The findings as text"),
                                                              ("provenance", "Provenance")]
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>", f"<style>{STYLE}</style>",
            f"<script type='text/javascript'>{get_plotlyjs()}</script>",
            "</head><body>", f"<h1>{html.escape(self.title)}</h1>",
            f"<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}. Every effect has its 95% confidence interval "
            "over prompts (seeds pooled), from tests paired on the same prompts with Benjamini-Hochberg q-values "
            "within each run. Verdicts: <i>significant</i> (q &lt; 0.05), <i>no effect detected (MDE)</i> (the "
            "interval lies within the minimum detectable effect), or <i>inconclusive</i>.</p>",
            f"<p id='sign-convention'><b>Sign convention.</b> {html.escape(verdicts.SIGN_CONVENTION)}</p>",
            "<nav><b>Contents</b><ol>" + "".join(f"<li><a href='#{a}'>{html.escape(t)}</a></li>" for a, t in toc)
            + "</ol></nav>",
        ]
        if "verdicts" in shown:
            parts += ["<h2 id='verdicts'>Verdicts</h2>", verdict_html(self.verdict_table())]
        i = 0
        for section in sections:
            more, i = self._section_html(section, i, shown)
            parts += more
        if self.all_notes():
            parts.append("<h2 id='notes'>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>"
                                                                   for n in self.all_notes()) + "</ul>")
        parts.append("<h2 id='summary'>The findings as text</h2><details><summary>summary.txt (what "
                     f"<code>iclwb demo</code> prints)</summary><pre id='summary-text'>{html.escape(self.summary())}"
                     "</pre></details>")
        parts.append("<h2 id='provenance'>Provenance</h2>")
        if self.provenance is not None and not self.provenance.empty:
            parts.append(tables.to_html(tables.display_table(self.provenance)))
        parts += [RESIZE, "</body></html>"]
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text("\n".join(parts))
        tmp.replace(path)
        (path.parent / "summary.txt").write_text(self.summary() + "\n")
        (path.parent / "findings.json").write_text(json.dumps(
            [asdict(f) for f in self.findings], indent=1, default=str) + "\n")
        return path


TABLE_COLUMNS = ["model", "task", "k", "metric", "layer", "head", "ablation", "window", "method", "condition",
                 "control", "n", "value", "acc_mean", "random_mean", "control_value", "effect", "p_value", "q_value",
                 "mde", "verdict"]
"""Columns the report's tables show, where a table has them."""


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
    return text if icl_ok else f"{text}; {verdicts.NO_ICL}"


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
