"""Figures of the task/function-vector study (``experiments.studies.vectors_study``): accuracy per
method with its interval, the layer / lambda sweeps, the information flows and the heads' average
indirect effects."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from circuits import anchors
from experiments.studies.vectors_study import CONDITIONS, StudyError
from probes import stats


def summary_figure(summary: pd.DataFrame, estimates: pd.DataFrame | None = None) -> "go.Figure":
    """Grouped bars: per method, eval accuracy in each condition. With ``estimates`` (from
    ``vectors_stats``: one row per method and condition with ``value, ci_low, ci_high``) the bars
    are those pooled accuracies and the error bars their 95% CIs (Wilson, over prompts)."""


    fig = go.Figure()
    colors = {"zero-shot": "#9e9e9e", "ICL": "#1f77b4", "with vector": "#d62728", "with random vector": "#ff9896"}
    for cond in CONDITIONS:
        if estimates is not None and len(estimates):
            e = estimates[estimates.condition == cond]
            fig.add_bar(name=cond, x=e["method"], y=e["value"], marker_color=colors[cond],
                        error_y=stats.error_bars(e["value"], e["ci_low"], e["ci_high"]), customdata=e["n"],
                        hovertemplate="%{x}<br>" + cond + ": %{y:.3f} (n=%{customdata})<extra></extra>")
        else:
            fig.add_bar(name=cond, x=summary["method"], y=summary[cond], marker_color=colors[cond],
                        hovertemplate="%{x}<br>" + cond + ": %{y:.3f}<extra></extra>")
    title = "Accuracy with and without the vector" + (" (error bars: 95% CI)" if estimates is not None
                                                      and len(estimates) else "")
    fig.update_layout(barmode="group", yaxis_title="accuracy (eval)", yaxis_range=[0, 1.02],
                      title=title, height=360, margin=dict(t=50, b=40))
    return fig


def sweep_figure(acc: pd.DataFrame, method: str) -> "go.Figure":
    """Eval accuracy against the layer (task / function vectors) or lambda (ICV), with the
    zero-shot and ICL accuracy as horizontal lines."""

    g = acc[(acc.method == method) & (acc.split == "eval")]
    if g.empty:
        raise StudyError(f"no rows for method {method!r}")
    key = "lam" if method == "icv" else "layer"
    fig = go.Figure()
    for cond, dash in (("with vector", "solid"), ("with random vector", "dot")):
        s = g[g.condition == cond].sort_values(key)
        fig.add_scatter(x=s[key], y=s.accuracy, mode="lines+markers", name=cond, line=dict(dash=dash))
    for cond, color in (("zero-shot", "#9e9e9e"), ("ICL", "#1f77b4")):
        v = g[g.condition == cond].accuracy
        if len(v):
            fig.add_hline(y=float(v.iloc[0]), line_dash="dash", line_color=color,
                          annotation_text=cond, annotation_position="top left")
    title = {"task_vector": "Task vector (replace resid_post at s_q)",
             "function_vector": "Function vector (add to resid_post at s_q)",
             "icv": "In-context vector (every layer and position)"}.get(method, method)
    fig.update_layout(title=title, xaxis_title="lambda" if key == "lam" else "layer",
                      yaxis_title="accuracy (eval)", yaxis_range=[0, 1.02], height=340, margin=dict(t=50, b=40))
    return fig


def flows_figure(flows_df: pd.DataFrame, level: float = 0.95) -> "go.Figure":
    """S_wp, S_pq, S_ww by layer: the mean over prompts with its ``level`` CI as error bars (BCa
    over the per-prompt rows, seeds pooled; over the per-seed rows where a table has none)."""


    fig = go.Figure()
    for name in anchors.FLOWS:
        part = flows_df[flows_df.flow == name]
        if part.empty:
            continue
        s = stats.summarize_rows(part, ["layer"], level).sort_values("layer")
        fig.add_scatter(x=s.layer, y=s.value, error_y=stats.error_bars(s.value, s.ci_low, s.ci_high),
                        customdata=s["n"], mode="lines+markers", name=name,
                        hovertemplate="layer %{x}: %{y:.4f} (n=%{customdata})<extra>" + name + "</extra>")
    fig.update_layout(title=f"Label words as anchors: information flow by layer (error bars: {level:.0%} CI)",
                      xaxis_title="layer", yaxis_title="mean saliency", height=340, margin=dict(t=50, b=40))
    return fig


def aie_figure(aie_df: pd.DataFrame) -> "go.Figure":
    """Layer x head heatmap of the function-vector AIE (blank where not computed exactly)."""

    m = aie_df.pivot_table(index="layer", columns="head", values="aie", dropna=False)
    fig = go.Figure(go.Heatmap(z=m.values, x=[f"H{h}" for h in m.columns], y=[f"L{l}" for l in m.index],
                               colorscale="RdBu", zmid=0, colorbar_title="AIE",
                               hovertemplate="%{y}%{x}: %{z:.4f}<extra></extra>"))
    fig.update_layout(title="Head AIE on label-shuffled prompts", height=340, margin=dict(t=50, b=40),
                      yaxis=dict(autorange="reversed"))  # L0 on top, as every layer x head heatmap
    return fig
