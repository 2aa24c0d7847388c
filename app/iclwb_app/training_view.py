"""The training-dynamics page: zoo models with a checkpoint series and per-step heatmaps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from experiments.models import zoo
from experiments.models.zoo import series
from experiments.studies.dynamics import head_curve


def dynamics_models() -> list[str]:
    """Zoo models that have a checkpoint series (``iclwb zoo train NAME --checkpoints N``)."""

    return [n for n in zoo.names() if series.has_series(n)]


def dynamics_head_matrix(df: pd.DataFrame, step: int, metric: str) -> np.ndarray:
    """The [layer, head] grid of one head score at one checkpoint of a dynamics table."""
    t = df[(df["step"] == step) & (df["metric"] == metric) & (df["layer"] >= 0)]
    if t.empty:
        raise KeyError(f"no {metric!r} head scores at step {step}")
    grid = np.full((int(t["layer"].max()) + 1, int(t["head"].max()) + 1), np.nan)
    grid[t["layer"].astype(int), t["head"].astype(int)] = t["value"].astype(float)
    return grid


def dynamics_head_metrics(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df[df["layer"] >= 0]["metric"]))


def _window(fig: go.Figure, window: tuple[int, int] | None, label: str = "phase change") -> None:
    if window is not None:
        fig.add_vrect(x0=window[0], x1=window[1], fillcolor="orange", opacity=0.2, line_width=0,
                      annotation_text=label, annotation_position="top left")


def dynamics_curves_figure(df: pd.DataFrame, metrics: Sequence[str], window: tuple[int, int] | None = None,
                           step: int | None = None, title: str = "Best head per score") -> go.Figure:
    """Per score, the best head's value against step (log axis) with its interval where known;
    the phase-change window shaded and the selected step marked."""

    fig = go.Figure()
    for metric in metrics:
        try:
            c = head_curve(df, metric)
        except KeyError:
            continue
        err = None
        if c["ci_high"].notna().any():
            err = dict(type="data", symmetric=False, array=(c["ci_high"] - c["value"]).fillna(0),
                       arrayminus=(c["value"] - c["ci_low"]).fillna(0))
        fig.add_trace(go.Scatter(x=c["step"], y=c["value"], name=metric, mode="lines+markers", error_y=err,
                                 text=[f"L{l}H{h}" for l, h in zip(c["layer"], c["head"])],
                                 hovertemplate="step %{x}: %{y:.3f} (%{text})<extra>" + metric + "</extra>"))
    _window(fig, window)
    if step is not None:
        fig.add_vline(x=step, line_dash="dot", line_color="gray")
    fig.update_layout(title=title, xaxis_type="log", xaxis_title="training step", yaxis_title="score",
                      height=360, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def dynamics_scalar_figure(df: pd.DataFrame, metrics: Sequence[str], window: tuple[int, int] | None = None,
                           title: str = "", yaxis_title: str = "") -> go.Figure:
    """Model-level metrics (no layer/head; one line per metric and k) against step, with intervals."""
    fig = go.Figure()
    sub = df[(df["layer"] < 0) & (df["position"] < 0) & df["metric"].isin(list(metrics))]
    for (metric, k), t in sub.groupby(["metric", "k"], sort=False):
        t = t.sort_values("step")
        err = None
        if t["ci_high"].notna().any():
            err = dict(type="data", symmetric=False, array=(t["ci_high"] - t["value"]).fillna(0),
                       arrayminus=(t["value"] - t["ci_low"]).fillna(0))
        name = metric if k < 0 else f"{metric} k={k}"
        fig.add_trace(go.Scatter(x=t["step"], y=t["value"], name=name, mode="lines+markers", error_y=err))
    _window(fig, window)
    fig.update_layout(title=title, xaxis_type="log", xaxis_title="training step", yaxis_title=yaxis_title,
                      height=340, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def training_loss_figure(curve: pd.DataFrame, window: tuple[int, int] | None = None,
                         smooth: int = 25) -> go.Figure:
    """Per-update training loss (thin) and its moving average, phase-change window shaded."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=curve["step"], y=curve["loss"], name="per update", mode="lines",
                             line=dict(width=1), opacity=0.35))
    sm = curve["loss"].rolling(smooth, center=True, min_periods=1).mean()
    fig.add_trace(go.Scatter(x=curve["step"], y=sm, name=f"moving average ({smooth})", mode="lines"))
    _window(fig, window)
    fig.update_layout(title="Training loss", xaxis_type="log", xaxis_title="training step",
                      yaxis_title="loss (nats)", height=320, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def loss_by_position_figure(df: pd.DataFrame, steps: Sequence[int]) -> go.Figure:
    """Per-token loss on repeated random sequences at the given checkpoints."""
    fig = go.Figure()
    for s in steps:
        t = df[(df["metric"] == "loss_by_position") & (df["step"] == s)].sort_values("position")
        fig.add_trace(go.Scatter(x=t["position"], y=t["value"], name=f"step {s}", mode="lines"))
    fig.update_layout(title="Loss by token index (repeated random sequences)", xaxis_title="token index",
                      yaxis_title="loss (nats)", height=320, margin=dict(l=10, r=10, t=40, b=10))
    return fig
