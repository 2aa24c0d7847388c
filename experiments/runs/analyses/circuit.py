"""The ``circuit`` analysis: the summarize-merge-retrieve circuit with ablations, on a task at k."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from circuits.icl_circuit import run_circuit
from experiments.runs.inputs import get_model, make_task_batch, n_prompts_problem, token_task_only, with_precision
from experiments.runs.modelinfo import n_layers as model_n_layers
from experiments.runs.registry import AnalysisResult, AnalysisSpec, register


def _circuit(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
    model = get_model(model_name, params["precision"])
    batch = make_task_batch(model_name, task, k, seed, params["n_prompts"])
    kwargs: dict[str, Any] = {"seed": seed, "window": tuple(params["window"])}
    if params["layers"]:
        kwargs["layers"] = list(params["layers"])
    if params["steps"]:
        kwargs["steps"] = tuple(params["steps"])
    df = run_circuit(model, batch, **kwargs)
    df = df.drop(columns=[c for c in ("model", "task", "k", "seed") if c in df.columns])
    return with_precision(AnalysisResult(df.reset_index(drop=True),
                                         head_tables(df, model.cfg.n_layers, model.cfg.n_heads)),
                          params["precision"])


def head_tables(df: pd.DataFrame, n_layers: int, n_heads: int) -> dict[str, Any]:
    """Every per-head metric of a tidy table as a [layer, head] tensor named "step/metric"."""
    out = {}
    per_head = df[(df["layer"] >= 0) & (df["head"] >= 0)]
    if "prompt" in per_head:  # per-prompt rows are not head maps
        per_head = per_head[per_head["prompt"] < 0]
    for (step, metric), t in per_head.groupby(["step", "metric"]):
        if len(t) != n_layers * n_heads:
            continue
        grid = torch.full((n_layers, n_heads), float("nan"))
        li = torch.tensor(t["layer"].astype(int).tolist())
        hi = torch.tensor(t["head"].astype(int).tolist())
        grid[li, hi] = torch.tensor(t["value"].astype(float).tolist(), dtype=torch.float32)
        out[f"{step}/{metric}"] = grid
    return out


CIRCUIT_STEPS = ("summarize", "merge", "retrieve", "ablation")


def _layers_problem(model: str, layers: list[int]) -> str | None:
    L = model_n_layers(model)
    bad = [l for l in layers if l < 0 or (L is not None and l >= L)]
    if bad:
        return f"layers {bad} out of range: model {model!r} has {L} layers (0..{(L or 1) - 1})"
    return None


def _check_circuit(model: str, task: str, k: int, params: dict[str, Any]) -> str | None:
    if k < 1:
        return f"k={k}: the circuit reads demonstrations (labels, forerunners); use k >= 1"
    lo, hi = (list(params["window"]) + [None, None])[:2]
    if len(params["window"]) != 2 or not (0 <= lo < hi <= 1):
        return f"window={params['window']!r}: give [start, end] fractions of the layers with 0 <= start < end <= 1"
    bad = [s for s in params["steps"] if s not in CIRCUIT_STEPS]
    if bad or not all(isinstance(s, str) for s in params["steps"]):
        return f"steps={params['steps']!r}: each step must be one of {', '.join(CIRCUIT_STEPS)}"
    if not all(isinstance(l, int) and not isinstance(l, bool) for l in params["layers"]):
        return f"layers={params['layers']!r}: give layer numbers (integers)"
    return _layers_problem(model, params["layers"]) or n_prompts_problem(params["n_prompts"], k)


register(AnalysisSpec(
    name="circuit", fn=_circuit,
    params={"n_prompts": 32, "window": [0.0, 0.25], "layers": [], "steps": [], "precision": "float32"},
    uses_task=True, uses_k=True,
    description="summarize-merge-retrieve circuit with ablations and random controls (circuits.icl_circuit)",
    requires=("circuits.icl_circuit",),
    code=("experiments.runs.analyses.circuit", "experiments.runs.inputs"),
    applies=lambda m, t: token_task_only(m, t),
    check_params=_check_circuit,
))
