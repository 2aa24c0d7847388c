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

The rows themselves are ``experiments.runs.finding_rows``'s (re-exported here); this module
renders the page.
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

from experiments.runs.cells import CELL, select
from experiments.runs.effects import effect_rows, verdict_table
from experiments.runs.figures import write_figures
from experiments.runs.finding_rows import (
    MODELS,
    circuit_rows,
    icl_explained,
    icl_gain,
    induction_rows,
    ivg_rows,
    models_in,
    vector_rows,
)
from experiments.runs.report import build_report
from experiments.runs.report_page import section_of
from experiments.runs.store import ResultsStore
from experiments.runs.tables import p_text, to_markdown
from probes import verdicts


def _fmt(x: float, nd: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    text = f"{x:.{nd}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def _ci(lo: float, hi: float, nd: int = 3) -> str:
    return f"[{_fmt(lo, nd)}, {_fmt(hi, nd)}]"


def _says(r: Any, baseline: str, icl_ok: bool = True) -> str:
    """A row's verdict in words: direction against ``baseline``, the sentence an interval that
    seems to disagree with it needs, and "no ICL to explain" when the cell's ICL gain is not
    significant."""
    r = dict(r)
    if not r.get("verdict"):
        return ""
    text = verdicts.verdict_words(r, baseline)
    note = verdicts.agreement_note(r)
    if note:
        text += f" ({note})"
    if not icl_ok:
        text += f"; {verdicts.NO_ICL}"
    return text


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


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


def render(store_dir: str | Path, config: str = "configs/full.toml",
           figures: dict[str, list[tuple[str, str]]] | None = None) -> str:
    """The findings page of the results store ``store_dir`` (Markdown): the verdict table first,
    then one section per question (its table, and the figures ``figures`` names per question:
    (title, relative path) pairs), provenance last. ``config`` is named as the study's config."""
    store = ResultsStore(store_dir)
    df = store.frame()  # the current unit of each cell only
    superseded = df.attrs.get("iclwb.superseded") or {}
    figs = figures or {}
    md = ["# Findings: the replicated full study", "",
          f"Generated from the results store `{store_dir}` by `iclwb study findings --store {store_dir} "
          f"--out docs/findings.md` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
          "(do not edit by hand: rerun the command). The study itself: "
          f"`iclwb study full --config {config} --store {store_dir}` (prints its expected run time, "
          "resumes after interruption). Provenance is at the end.", "",
          f"**Sign convention.** {verdicts.SIGN_CONVENTION}", ""]
    ind, circ, ivg, vec = induction_rows(df), circuit_rows(df), ivg_rows(df), vector_rows(df)
    table = verdict_table(effect_rows(df))
    md += ["## Verdicts", "",
           "One row per claim, one column per model: the verdict (*significant*, with its direction; *no effect "
           "detected (MDE = m)*; or *inconclusive*), the effect with its 95% interval, q and n.", "",
           to_markdown(table.drop(columns=["question"])) if len(table)
           else "(the store holds none of the study's findings yet)", ""]
    md += ["Intervals are 95%: Wilson for accuracies; for paired 0/1 comparisons the interval that "
           "inverts McNemar's exact test (`probes.stats.mcnemar_ci`: it excludes 0 exactly when p < 0.05); "
           "BCa bootstrap otherwise. q-values are Benjamini-Hochberg within each family; verdicts from "
           "`probes.stats.verdict`: *significant* (q < 0.05, with its direction against the named "
           "baseline), *no effect detected (MDE = m)* when the whole interval lies within the minimum "
           "detectable effect, else *inconclusive*. Where an interval and its verdict seem to disagree "
           "(an interval that excludes 0 before the BH correction), the row says why. A knockout, vector "
           "or GD row on a cell whose ICL gain over zero-shot is not significant says *no ICL to explain*.", ""]
    for section, part in (("head scan", _induction_md(ind)), ("circuit", _circuit_md(circ)),
                          ("ICL vs GD", _ivg_md(ivg)), ("ICL vectors", _vector_md(vec))):
        md += part + _figure_md(figs.get(section, []))
    if figs.get("training dynamics"):
        md += ["## 5. Training dynamics", ""] + _figure_md(figs["training dynamics"])
    md += ["## Provenance", ""] + (_provenance(store, df, superseded) or ["- (empty store)"]) + [""]
    return "\n".join(md) + "\n"


def _figure_md(figs: list[tuple[str, str]]) -> list[str]:
    return [line for title, path in figs for line in (f"![{title}]({path})", "")]


def _q(r: Any) -> str:
    """A row's q-value as the pages print it ("< 0.001" below 0.001)."""
    q = dict(r).get("q_value", math.nan)
    return "n/a" if q is None or not np.isfinite(q) else p_text(q)


def _induction_md(ind: pd.DataFrame) -> list[str]:
    """Section 1: the top induction heads against their null."""
    md = ["## 1. Induction heads", ""]
    if len(ind):
        md += ["Effect = the head's score minus its null (the same sequences with a fresh second half).", "",
               _table(["model", "head", "score [CI]", "null", "score - null [CI]", "q", "n", "verdict"],
                      [[r["model"], r["head"], f"{_fmt(r['value'])} {_ci(r['ci_low'], r['ci_high'])}",
                        _fmt(r["null"]), f"{_fmt(r['effect'])} {_ci(r['effect_ci_low'], r['effect_ci_high'])}",
                        _q(r), int(r["n"]), _says(r, "its null")]
                       for r in ind.to_dict("records")]), ""]
    else:
        md += ["(no head scan in the store)", ""]
    return md


def _circuit_md(circ: pd.DataFrame) -> list[str]:
    """Section 2: accuracy under each knockout beside its random control."""
    md = ["## 2. Circuit knockouts vs matched random controls (k = 4)", ""]
    if len(circ):
        gain = icl_gain(circ)
        zs = {(r["model"], r["task"]): r["acc_mean"] for r in circ[circ["ablation"] == "zero_shot"].to_dict("records")}
        rows = []
        for r in _ordered(circ[circ["ablation"] != "zero_shot"], ["task"]).to_dict("records"):
            icl = r["ablation"] == "unablated"
            base = "zero-shot" if icl else "its random control"
            ok = True if icl else icl_explained(gain, r["model"], r["task"])
            ctrl = (_fmt(zs.get((r["model"], r["task"]), math.nan)) if icl else
                    f"{_fmt(r.get('random_mean', math.nan))} "
                    f"{_ci(r.get('random_ci_low', math.nan), r.get('random_ci_high', math.nan))}")
            rows.append([r["model"], r["task"], "none (ICL)" if icl else r["ablation"], r.get("window", ""),
                         f"{_fmt(r['acc_mean'])} {_ci(r['ci_low'], r['ci_high'])}", base, ctrl,
                         f"{_fmt(r.get('effect', math.nan))} "
                         f"{_ci(r.get('effect_ci_low', math.nan), r.get('effect_ci_high', math.nan))}",
                         _q(r), _fmt(r.get("mde", math.nan)), int(r["n"]),
                         _says(r, base, ok)])
        md += ["Accuracy under each knockout beside its baseline on the same prompts: the random control "
               "for a knockout (effect = knockout - control), zero-shot for the unablated model (effect = "
               "ICL - zero-shot, the gain every knockout is meant to explain).", "",
               _table(["model", "task", "knockout", "layers", "accuracy [CI]", "baseline", "baseline accuracy",
                       "effect [CI]", "q", "MDE", "n", "verdict"], rows), ""]
    else:
        md += ["(no circuit units with per-prompt outcomes in the store)", ""]
    return md


def _ordered(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows in the page's model order (``MODELS`` first), then by ``by``; rows that tie keep their
    order (a circuit's knockouts stay in the circuit's order)."""
    rank = {m: i for i, m in enumerate(models_in(df))}
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
                 _q(r), _says(r, "ICL", bool(r.get("icl_ok", True))), r.get("test", ""),
                 _fmt(r["topk_overlap"]),
                 _fmt(r["kl_icl_gd"]), _fmt(r["rec2ftp"]), _fmt(r["gd_lr"], 4)]
                for r in _ordered(ivg, ["task", "k"]).to_dict("records")]
        md += ["GD = a copy of the model fine-tuned on the prompt's own demonstrations (lr searched on "
               "held-out prompts). Effect = GD - ICL accuracy (negative: GD reaches less than ICL), tested on "
               "the same prompts (McNemar) where per-prompt rows are stored; the test column says which. "
               "Agreement between the two is the top-10 overlap of their next-token distributions (1 = the "
               "same ten tokens), KL(ICL||GD) (0 = identical) and Rec2FTP.", "",
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
                 _q(r), r.get("test", ""),
                 _says(r, "a random vector", bool(r.get("icl_ok", True)))]
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


def write_findings(store_dir: str | Path, out: str | Path, config: str = "configs/full.toml",
                   figures: bool = True) -> Path:
    """Render the findings page of ``store_dir`` and write it to ``out`` (returns the path); with
    ``figures``, the report's figures (``build_report(...).figures``: forest plots, heatmaps) go
    beside it as SVG files in ``<out stem>-figures/``, linked from their questions' sections."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    links: dict[str, list[tuple[str, str]]] = {}
    if figures:
        folder = path.parent / f"{path.stem}-figures"
        figs = build_report(store_dir).figures
        if folder.exists():
            for old in folder.glob("*.svg"):
                old.unlink()
        written = write_figures(figs, folder, ["svg"])
        for (name, fig), file in zip(figs.items(), written):
            title = str(fig.layout.title.text or name).replace("<br>", " ")
            links.setdefault(section_of(name), []).append((title, f"{folder.name}/{file.name}"))
    text = render(store_dir, config=str(config), figures=links)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


__all__ = ["MODELS", "circuit_rows", "icl_gain", "induction_rows", "ivg_rows", "render", "vector_rows",
           "write_findings"]


def _effect_ci(r: Any) -> str:
    """``effect [low, high]`` of a comparison row."""
    return f"{_fmt(r.get('effect', math.nan))} {_ci(r.get('effect_ci_low', math.nan), r.get('effect_ci_high', math.nan))}"
