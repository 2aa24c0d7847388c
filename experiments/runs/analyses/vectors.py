"""The ``vectors`` analysis: task / function / in-context vectors against zero-shot, ICL and a
random vector."""

from __future__ import annotations

from typing import Any

import pandas as pd

from experiments.runs.inputs import get_model, split_task, token_task_only, with_precision
from experiments.runs.registry import AnalysisResult, AnalysisSpec, register
from experiments.studies import vectors_study as vs


def _vectors(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
    """Task / function / in-context vectors (``experiments.studies.vectors_study.run_study``): the long
    accuracy table (metric ``accuracy``: every method x condition x layer/lambda x split), the
    summary at the layer/lambda chosen on dev (metric ``summary``, one row per method and
    condition, on the eval prompts) and the function-vector head AIE (metric ``aie``)."""

    model = get_model(model_name, params["precision"])
    kwargs: dict[str, Any] = {"methods": tuple(params["methods"]), "n_heads": params["n_heads"],
                              "n_aie_prompts": params["n_aie_prompts"]}
    if params["layers"]:
        kwargs["layers"] = list(params["layers"])
    if params["n_dev"]:
        kwargs["n_dev"] = params["n_dev"]
    if params["n_exact"]:
        kwargs["n_exact"] = params["n_exact"]
    if list(params["fv_scales"]) != [1.0]:
        kwargs["fv_scales"] = [float(x) for x in params["fv_scales"]]
    out = vs.run_study(model, model_name, task, k=k, n_prompts=params["n_prompts"], seed=seed, **kwargs)
    drop = ("model", "task", "k", "seed")
    parts = []
    if "accuracy" in out:
        acc = out["accuracy"].rename(columns={"accuracy": "value"})
        acc["metric"] = "accuracy"
        parts.append(acc)
    if "summary" in out:
        summ = out["summary"]
        for cond in vs.CONDITIONS:
            if cond in summ.columns:
                part = summ[["method", "layer", "lam", "n_prompts", cond]].rename(columns={cond: "value"})
                part["condition"], part["metric"], part["split"] = cond, "summary", "eval"
                parts.append(part)
    if "per_prompt" in out:  # 0/1 outcome per prompt: vectors_study.vectors_stats pairs them
        pp = out["per_prompt"].copy()
        pp["metric"] = "correct"
        parts.append(pp)
    if "aie" in out:
        aie = out["aie"].rename(columns={"aie": "value"})
        aie["metric"] = "aie"
        parts.append(aie)
    df = pd.concat(parts, ignore_index=True)
    df = df.drop(columns=[c for c in drop if c in df.columns])
    for col in ("layer", "lam"):
        if col in df.columns:
            df[col] = df[col].astype(float)
    return with_precision(AnalysisResult(df.reset_index(drop=True)), params["precision"])


def _check_vectors(model: str, task: str, k: int, params: dict[str, Any]) -> str | None:
    scales = params["fv_scales"]
    if not scales or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in scales):
        return f"fv_scales={scales!r}: give the function vector's scales as positive numbers, e.g. [1, 2, 4]"
    return None


register(AnalysisSpec(
    name="vectors", fn=_vectors, check_params=_check_vectors,
    params={"n_prompts": 32, "n_dev": 0, "methods": ["task_vector", "function_vector"],
            "n_heads": 10, "n_aie_prompts": 16, "n_exact": 0, "layers": [], "fv_scales": [1.0],
            "precision": "float32"},
    uses_task=True, uses_k=True,
    description="task / function / in-context vectors against zero-shot, ICL and a random vector "
                "(experiments.studies.vectors_study)",
    requires=("experiments.studies.vectors_study",),
    code=("experiments.runs.analyses.vectors", "experiments.runs.inputs", "circuits.vectors"),
    applies=lambda m, t: token_task_only(m, t) or (
        None if split_task(t)[0] in ("classify", "language", "fv", "file")
        else "the vectors study runs on classify and text tasks (language:, fv:, file:)"),
))
