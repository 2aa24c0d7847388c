"""The ICL-vs-GD page: linear-regression and language-model comparisons and their figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from experiments.studies import linreg_gd
from experiments.studies.gd import GDConfig
from experiments.studies.icl_vs_gd import compare_icl_gd
from iclwb_app.model_info import AppInputError
from iclwb_app.prompting import task_batch
from iclwb_app.results_view import ci_error
from probes import stats
from probes.hooked import HookedModel


def linreg_comparison(model: Any, name: str, ks: Sequence[int], n_tasks: int = 128, seed: int = 0,
                      gd_steps: int = 1, gd_lr: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``experiments.studies.icl_vs_gd``'s linear-regression comparison and order sensitivity, per k
    (GD's learning rate grid-searched per k unless ``gd_lr`` is given)."""

    if not ks or min(ks) < 1:
        raise AppInputError("pick at least one k >= 1 (GD needs demonstrations)")
    d = getattr(getattr(model, "cfg", None), "d", None)
    comp = linreg_gd.compare_linreg(model, ks, d=d, n_tasks=n_tasks, seed=seed, gd_steps=gd_steps,
                                    gd_lr=gd_lr, name=name)
    order = linreg_gd.linreg_order_sensitivity(model, ks, d=d, n_tasks=min(n_tasks, 64), seed=seed,
                                               gd_steps=gd_steps, name=name)
    return comp, order


def icl_gd_run(model: HookedModel, name: str, task: str, k: int, seed: int = 0,
               n_prompts: int = 8, epochs: int = 5, lr: float = 1e-2, subset: str = "attn_kv") -> pd.DataFrame:
    """``experiments.studies.icl_vs_gd.compare_icl_gd`` for one k and seed on ``n_prompts`` prompts of
    ``task``: the tidy table (metric, value, layer, ...) with provenance."""

    if k < 1:
        raise AppInputError("GD needs demonstrations: use k >= 1")
    gd = GDConfig(subset=subset, lr=lr, epochs=epochs)
    return compare_icl_gd(model, lambda k_, s_: task_batch(model, task, k_, n_prompts, s_), ks=[k],
                          seeds=[seed], gd=gd, n_prompts=n_prompts, model_name=name, task_name=task)


UNBOUNDED = ("kl_icl_gd", "kl_gd_icl")
"""Metrics not on a 0-1 scale (KL divergences, nats): drawn on their own axis."""


def metrics_by_k_figure(df: pd.DataFrame, metrics: Sequence[str], title: str,
                        yaxis_title: str = "", level: float = stats.LEVEL,
                        secondary: Sequence[str] = UNBOUNDED, secondary_title: str = "KL (nats)") -> go.Figure:
    """Tidy rows (k, metric, value; ``layer`` < 0 where present): each metric's mean against k with
    its ``level`` CI as error bars (``probes.stats.summarize_rows``: over prompts, seeds pooled,
    where per-prompt rows exist; else over seeds). Metrics in ``secondary`` (KL: not 0-1) go on a
    right-hand axis of their own, dashed, when others share the figure."""
    sub = df[df["metric"].isin(list(metrics))]
    if "layer" in sub.columns:
        sub = sub[pd.to_numeric(sub["layer"], errors="coerce").fillna(-1) < 0]
    fig = go.Figure()
    present = [m for m in metrics if (sub["metric"] == m).any()]
    split = any(m in secondary for m in present) and any(m not in secondary for m in present)
    for metric in present:
        part = sub[sub["metric"] == metric]
        agg = stats.summarize_rows(part, ["k"], level).sort_values("k")
        right = split and metric in secondary
        fig.add_trace(go.Scatter(x=agg["k"], y=agg["value"], name=metric, mode="lines+markers",
                                 error_y=ci_error(agg), customdata=agg["n"], yaxis="y2" if right else "y",
                                 line=dict(dash="dash") if right else None,
                                 hovertemplate="k=%{x}: %{y:.3f} (n %{customdata})<extra>" + metric + "</extra>"))
    fig.update_layout(title=f"{title} (error bars: {level:.0%} CI)", xaxis_title="k (demonstrations)",
                      yaxis_title=yaxis_title, height=340, margin=dict(l=10, r=10, t=40, b=10))
    if split:
        fig.update_layout(yaxis2=dict(title=secondary_title, overlaying="y", side="right", rangemode="tozero",
                                      showgrid=False), legend=dict(x=1.08))
    return fig


def order_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """The order-sensitivity rows worth drawing: only k >= 2 (with one demonstration there is one
    ordering, so its spread is no measurement and drew a bare whisker). Returns the rows and the
    ks left out."""
    if "metric" in df.columns and "method" not in df.columns:
        df = df[df["metric"].astype(str).str.startswith("order_std_")]
    ks = pd.to_numeric(df["k"], errors="coerce")
    return df[ks >= 2], sorted({int(k) for k in ks[ks < 2].dropna()})


def order_figure(df: pd.DataFrame) -> go.Figure | None:
    """``icl_vs_gd.fig_order_sensitivity`` of ``order_rows`` (None when no k has two orderings),
    without an interval where a bar stands on one value (n = 1: the linear-regression study stores
    one spread per method and k; a spread of exactly 0 was read as a 0/1 outcome and drew a Wilson
    whisker up to 0.79 over an empty bar)."""
    import numpy as np  # noqa: PLC0415

    from experiments.studies.icl_vs_gd import fig_order_sensitivity  # noqa: PLC0415

    rows, dropped = order_rows(df)
    if rows.empty:
        return None
    fig = fig_order_sensitivity(rows)
    for trace in fig.data:
        n = np.asarray(trace.customdata if trace.customdata is not None else [], dtype=float)
        err = trace.error_y
        if len(n) and err is not None and err.array is not None:
            one = n < 2
            err.array = np.where(one, 0.0, np.asarray(err.array, dtype=float))
            err.arrayminus = np.where(one, 0.0, np.asarray(err.arrayminus, dtype=float))
    if dropped:
        fig.add_annotation(text=f"k={', '.join(map(str, dropped))}: one ordering only, no spread to show",
                           xref="paper", yref="paper", x=0, y=1.08, showarrow=False, font=dict(size=11))
    return fig
