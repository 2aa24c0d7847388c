"""Plotly figures of the circuit table (``circuits.icl_circuit``) and of patching results.

Every function takes the tidy table (or a [layer, head] tensor) and returns a ``go.Figure``; the
app and the notebooks show the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import torch

from circuits.icl_circuit import ablation_summary
from probes import stats


def layer_curves(table: pd.DataFrame, step: str, metrics: Sequence[str] | None = None,
                 title: str = "") -> go.Figure:
    """Per-layer metrics of one step (rows with head == -1), pooled over seeds. Error bars: 95%
    intervals over prompts where per-prompt values exist (none for per-layer maxima)."""
    sub = table[(table.step == step) & (table.layer >= 0) & (table["head"] == -1)]
    if metrics is not None:
        sub = sub[sub.metric.isin(metrics)]
    fig = go.Figure()
    for (model, task, metric), part in sub.groupby(["model", "task", "metric"], sort=False):
        per_prompt = part[part["prompt"] >= 0]
        if len(per_prompt):
            agg = stats.summarize(per_prompt, ["layer"])
            err = _ci_bars(agg["value"], agg["ci_low"], agg["ci_high"])
        else:
            agg = part.groupby("layer")["value"].mean().reset_index()
            err = None
        name = f"{metric}" if sub[["model", "task"]].drop_duplicates().shape[0] == 1 else f"{model}/{task}: {metric}"
        fig.add_trace(go.Scatter(x=agg["layer"], y=agg["value"], mode="lines+markers", name=name, error_y=err))
    fig.update_layout(title=title or f"{step} by layer (error bars: 95% CI over prompts)", xaxis_title="layer",
                      yaxis_title="value", xaxis=dict(dtick=1))
    return fig


def head_heatmap(table: pd.DataFrame, metric: str, step: str | None = None, title: str = "") -> go.Figure:
    """A per-head metric (e.g. retrieve 'M', 'C', merge 'A[y_i->s_i]:correct') as a layer x head map."""
    sub = table[(table.metric == metric) & (table["head"] >= 0) & (table.layer >= 0)]
    if step is not None:
        sub = sub[sub.step == step]
    if sub.empty:
        raise ValueError(f"no per-head rows for metric {metric!r}; per-head metrics: "
                         f"{sorted(table[table['head'] >= 0].metric.unique())}")
    mat = sub.groupby(["layer", "head"])["value"].mean().unstack("head")
    return matrix_figure(torch.tensor(mat.to_numpy()), title or f"{metric} (mean over seeds)",
                         rows=list(mat.index), cols=list(mat.columns))


def matrix_figure(values: torch.Tensor, title: str = "", rows: Sequence[int] | None = None,
                  cols: Sequence[int] | None = None, zmid: float | None = 0.0) -> go.Figure:
    """A [layer, head] tensor (e.g. activation or attribution patching) as a heatmap."""
    v = values.detach().cpu().float()
    fig = go.Figure(go.Heatmap(z=v.tolist(), x=list(cols if cols is not None else range(v.shape[1])),
                               y=list(rows if rows is not None else range(v.shape[0])),
                               colorscale="RdBu" if zmid is not None else "Viridis", zmid=zmid,
                               hovertemplate="L%{y} H%{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", yaxis=dict(autorange="reversed"))
    return fig


def _ci_bars(value: pd.Series, low: pd.Series, high: pd.Series) -> dict:
    """Plotly asymmetric error bars from an interval."""
    return dict(type="data", symmetric=False, array=(high - value).fillna(0.0).tolist(),
                arrayminus=(value - low).fillna(0.0).tolist())


def ablation_bars(table: pd.DataFrame, title: str = "") -> go.Figure:
    """Each knockout's accuracy beside its random control, with the unablated and zero-shot
    accuracies as dashed lines. Error bars: 95% intervals over prompts (seeds pooled)."""
    s = ablation_summary(table)
    fig = go.Figure()
    for (model, task), part in s.groupby(["model", "task"], sort=False):
        knock = part[~part.ablation.isin(["unablated", "zero_shot"])]
        tag = f"{model}/{task} " if s[["model", "task"]].drop_duplicates().shape[0] > 1 else ""
        fig.add_trace(go.Bar(x=knock.ablation, y=knock.acc_mean, name=f"{tag}knockout",
                             error_y=_ci_bars(knock.acc_mean, knock.ci_low, knock.ci_high)))
        if "random_mean" in knock:
            fig.add_trace(go.Bar(x=knock.ablation, y=knock.random_mean, name=f"{tag}random control",
                                 error_y=_ci_bars(knock.random_mean, knock.random_ci_low, knock.random_ci_high)))
        for ref, dash in (("unablated", "dash"), ("zero_shot", "dot")):
            r = part[part.ablation == ref]
            if len(r):
                fig.add_hline(y=float(r.acc_mean.iloc[0]), line_dash=dash, annotation_text=f"{tag}{ref}")
    win = s.window.iloc[0] if len(s) else ""
    fig.update_layout(barmode="group", title=title or f"knockouts on layers {win} vs random controls "
                                                          "(error bars: 95% CI over prompts)",
                      yaxis_title="accuracy", yaxis=dict(range=[0, 1.05]))
    return fig
