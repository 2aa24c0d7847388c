"""Statistics for the pages: tables with intervals and one-line verdicts (``probes.stats``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from experiments.studies import icl_vs_gd, linreg_gd
from experiments.studies.icl_vs_gd import icl_vs_gd_stats
from experiments.studies.scan import scan_stats
from experiments.studies.vectors_study import vectors_stats
from probes import stats

STAT_COLUMNS = ["model", "task", "k", "metric", "layer", "head", "method", "ablation", "window", "condition",
                "control", "n", "value", "acc_mean", "ci_low", "ci_high", "control_value", "random_mean", "null_value",
                "effect", "effect_ci_low", "effect_ci_high", "p_value", "q_value", "mde", "verdict"]
"""The columns the app's statistics tables show (where a table has them)."""


def stats_view(table: pd.DataFrame) -> pd.DataFrame:
    """A statistics table (``*_stats`` comparisons, ``ablation_summary``) cut to ``STAT_COLUMNS``."""
    return table[[c for c in STAT_COLUMNS if c in table.columns]].reset_index(drop=True)


FINDINGS_COLUMNS = ["model", "task", "method", "n", "layer", "lam", "zero-shot", "ICL", "with vector",
                    "with random vector", "recovery", "effect", "effect_ci_low", "effect_ci_high", "p_value",
                    "q_value", "mde", "verdict", "test"]


def findings_view(rows: pd.DataFrame) -> pd.DataFrame:
    """``experiments.runs.findings.vector_rows`` cut to the columns the vectors page shows."""
    return rows[[c for c in FINDINGS_COLUMNS if c in rows.columns]].reset_index(drop=True)


def verdict_lines(cmp: pd.DataFrame, label: Callable[[Any], str], only: Callable[[Any], bool] | None = None) -> list[str]:
    """One sentence per comparison row: ``label(row)``, the verdict, the effect with its 95%
    interval, q and n (``probes.stats.describe``)."""

    out = []
    for _, r in cmp.iterrows():
        if only is not None and not only(r):
            continue
        if r.get("verdict", "") == "" or pd.isna(r.get("effect", np.nan)):
            continue
        out.append(stats.describe(r, label(r)))
    return out


def ablation_verdicts(abl: pd.DataFrame) -> list[str]:
    """The circuit's verdicts: ICL gain (unablated vs zero-shot) and each knockout vs its control."""
    def label(r: Any) -> str:
        if r["ablation"] == "unablated":
            return f"with demonstrations ({r['acc_mean']:.3f}) vs zero-shot"
        return (f"knockout {r['ablation']} (layers {r['window']}): {r['acc_mean']:.3f} vs "
                f"{r['random_mean']:.3f} for its random control")
    return verdict_lines(abl, label, only=lambda r: r["ablation"] != "zero_shot")


def head_scan_verdicts(scan: dict[str, Any], top: int = 3) -> pd.DataFrame:
    """Every head's score with its interval and its test against the score's null
    (``experiments.studies.scan.scan_stats``), the ``top`` heads of each score with a null first."""

    st_ = scan_stats(scan)
    tested = st_[st_["p_value"].notna()].sort_values(["metric", "value"], ascending=[True, False])
    return tested.groupby("metric", sort=False).head(top).reset_index(drop=True)


def lm_gd_stats(df: pd.DataFrame) -> Any:
    """``experiments.studies.icl_vs_gd.icl_vs_gd_stats`` of a language-model ICL-vs-GD table."""

    return icl_vs_gd_stats(df)


def linreg_stats(model: Any, name: str, ks: Sequence[int], n_tasks: int = 128, seed: int = 0,
                 gd_steps: int = 1) -> Any:
    """Per-task linear-regression rows on every k (``linreg_task_rows``) and their statistics."""

    d = getattr(getattr(model, "cfg", None), "d", None)
    parts = [linreg_gd.linreg_task_rows(model, k, d=d, n_tasks=n_tasks, seed=seed, gd_steps=gd_steps).assign(k=k)
             for k in ks]
    per = pd.concat(parts, ignore_index=True).assign(model=name, task="linreg")
    return icl_vs_gd.icl_vs_gd_stats(per)


def vectors_verdict_stats(per_prompt: pd.DataFrame) -> Any:
    """``experiments.studies.vectors_study.vectors_stats`` of a study's per-prompt table."""

    return vectors_stats(per_prompt)
