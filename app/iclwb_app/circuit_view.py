"""The summarize -> merge -> retrieve circuit page: one run, its tables and figures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from circuits.icl_circuit import ablation_summary, run_circuit
from iclwb_app.model_info import AppInputError
from iclwb_app.prompting import check_prompt_fits, task_batch
from iclwb_app.results_view import ci_error
from probes import stats
from probes.hooked import HookedModel


def circuit_run(model: HookedModel, model_name: str, task: str, k: int, n_prompts: int,
                seed: int = 0, window: tuple[float, float] = (0.0, 0.25)) -> pd.DataFrame:
    """One seed of the summarize-merge-retrieve circuit (``circuits.icl_circuit.run_circuit``) on
    ``n_prompts`` prompts of ``task``: the tidy table (step, layer, head, metric, value, ...)."""

    if k < 1:
        raise AppInputError("the circuit needs demonstrations: use k >= 1")
    batch = task_batch(model, task, k, n_prompts, seed)
    check_prompt_fits(model, batch)
    df = run_circuit(model, batch, seed=seed, window=window)
    df["model"] = model_name
    df["task"] = task
    return df


def circuit_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The circuit's rows among stored results: analysis ``circuit`` where the column exists (a
    training-dynamics unit also has a ``step`` column), and a ``step`` that is set."""
    if "step" not in df.columns:
        return df.iloc[0:0]
    out = df[df["step"].notna()]
    if "analysis" in out.columns:
        out = out[out["analysis"] == "circuit"]
    out = out.copy()
    for col in ("layer", "head"):
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce").fillna(-1).astype(int)
    return out


def circuit_layer_figure(table: pd.DataFrame, step: str, metrics: Sequence[str] | None = None,
                         title: str = "", level: float = stats.LEVEL) -> go.Figure:
    """Per-layer metrics of one circuit step (rows with head == -1): mean with its ``level`` CI over
    prompts (seeds pooled; over seeds where there are no per-prompt rows) as error bars."""
    sub = table[(table["step"] == step) & (table["layer"] >= 0) & (table["head"] == -1)]
    if metrics is not None:
        sub = sub[sub["metric"].isin(metrics)]
    fig = go.Figure()
    for metric, part in sub.groupby("metric", sort=False):
        agg = stats.summarize_rows(part, ["layer"], level).sort_values("layer")
        fig.add_trace(go.Scatter(x=agg["layer"], y=agg["value"], name=str(metric), mode="lines+markers",
                                 error_y=ci_error(agg), customdata=agg["n"],
                                 hovertemplate="layer %{x}: %{y:.3f} (n %{customdata})"
                                               "<extra>" + str(metric) + "</extra>"))
    fig.update_layout(title=f"{title or step} (error bars: {level:.0%} CI)", xaxis_title="layer", height=340,
                      xaxis=dict(dtick=1), margin=dict(l=10, r=10, t=40, b=10))
    return fig


def circuit_head_matrix(table: pd.DataFrame, metric: str, step: str | None = None) -> np.ndarray:
    """A per-head circuit metric (e.g. retrieve ``M`` or ``C``) as a [layer, head] mean over seeds."""
    sub = table[(table["metric"] == metric) & (table["head"] >= 0) & (table["layer"] >= 0)]
    if step is not None:
        sub = sub[sub["step"] == step]
    if sub.empty:
        raise AppInputError(f"no per-head metric {metric!r} in this circuit table")
    mean = sub.groupby(["layer", "head"])["value"].mean().reset_index()
    out = np.full((int(mean["layer"].max()) + 1, int(mean["head"].max()) + 1), np.nan)
    out[mean["layer"].to_numpy(), mean["head"].to_numpy()] = mean["value"].to_numpy()
    return out


def ablation_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per ablation: accuracy mean/std over seeds beside its random control's
    (``circuits.icl_circuit.ablation_summary``)."""

    abl = table[table["step"] == "ablation"]
    if abl.empty:
        return pd.DataFrame()
    need = {"model": "", "task": "", "window": "", "n_prompts": 0}
    abl = abl.assign(**{c: v for c, v in need.items() if c not in abl.columns})
    return ablation_summary(abl)


def ablation_figure(abl: pd.DataFrame) -> go.Figure:
    """Each ablation's accuracy as a bar beside its random control's (error bars: 95% intervals
    over prompts, seeds pooled); the unablated and zero-shot accuracies as reference lines."""
    fig = go.Figure()
    knock = abl[~abl["ablation"].isin(["unablated", "zero_shot"])]
    for label, mean, lo, hi, colour in (("knockout", "acc_mean", "ci_low", "ci_high", "#d63384"),
                                        ("random control", "random_mean", "random_ci_low", "random_ci_high",
                                         "#adb5bd")):
        if mean not in knock.columns:
            continue
        err = None
        if lo in knock.columns and hi in knock.columns:
            err = dict(type="data", symmetric=False, array=(knock[hi] - knock[mean]).fillna(0.0).tolist(),
                       arrayminus=(knock[mean] - knock[lo]).fillna(0.0).tolist(), visible=True)
        fig.add_trace(go.Bar(x=knock["ablation"], y=knock[mean], name=label, marker_color=colour, error_y=err,
                             hovertemplate="%{x}: %{y:.3f}<extra>" + label + "</extra>"))
    for name, dash in (("unablated", "solid"), ("zero_shot", "dot")):
        row = abl[abl["ablation"] == name]
        if not row.empty:
            fig.add_hline(y=float(row["acc_mean"].iloc[0]), line_dash=dash,
                          annotation_text=f"{name} {float(row['acc_mean'].iloc[0]):.2f}")
    fig.update_layout(barmode="group", title="Ablations vs random controls (error bars: 95% CI over prompts)",
                      yaxis=dict(title="accuracy", range=[0, 1.05]), height=380,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig
