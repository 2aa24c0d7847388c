"""The ``icl_vs_gd`` analysis: ICL against gradient descent on the same demonstrations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from experiments.runs.inputs import (
    call_accepted,
    get_model,
    is_token_model,
    make_task_batch,
    n_prompts_problem,
    split_task,
    token_task_only,
    with_precision,
)
from experiments.runs.registry import AnalysisResult, AnalysisSpec, register
from experiments.studies import icl_vs_gd as ivg
from experiments.studies import linreg_gd
from experiments.studies.gd import GDConfig, best_finetune_lr
from experiments.studies.tidy import tidy


def _icl_vs_gd(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
    model = get_model(model_name, params["precision"])
    if not is_token_model(model_name):
        wide = linreg_gd.compare_linreg(model, ks=[k], n_tasks=params["n_tasks"], seed=seed,
                                  gd_steps=params["gd_steps"], name=model_name)
        id_cols = [c for c in ("model", "task", "k", "d", "seed", "n_tasks", "gd_steps") if c in wide.columns]
        long = tidy(wide, id_cols)
        parts = [long]
        if params["order_perms"]:
            order = linreg_gd.linreg_order_sensitivity(model, ks=[k], n_tasks=min(params["n_tasks"], 128),
                                                 n_perms=params["order_perms"], seed=seed,
                                                 gd_steps=params["gd_steps"], name=model_name)
            order = order.rename(columns={"order_std": "value"})
            order["metric"] = "order_std_" + order["method"].astype(str)
            parts.append(order)
        df = pd.concat(parts, ignore_index=True).assign(prompt=-1)
        per_task = linreg_gd.linreg_task_rows(model, k, n_tasks=params["n_tasks"], seed=seed, gd_steps=params["gd_steps"],
                                        n_perms=params["order_perms"], n_order_tasks=128)
        df = pd.concat([df, per_task.assign(n_tasks=params["n_tasks"])], ignore_index=True)
    else:
        batch = make_task_batch(model_name, task, k, seed, params["n_prompts"])
        gd = GDConfig(subset=params["subset"], lr=params["lr"], epochs=params["epochs"],
                      optimizer=params["optimizer"])
        search: dict[float, float] = {}
        if params["lr_grid"]:  # searched on held-out prompts (another seed), never the compared ones
            held = make_task_batch(model_name, task, k, seed + 10_000, params["lr_search_prompts"])
            best, search = best_finetune_lr(model, held, [float(x) for x in params["lr_grid"]], gd)
            gd = replace(gd, lr=best)
        df = call_accepted(ivg.compare_icl_gd, model=model, prompts=batch, ks=[k], seeds=[seed], gd=gd,
                           n_prompts=params["n_prompts"], n_perms=params["order_perms"],
                           n_order_prompts=params["order_prompts"], model_name=model_name, task_name=task)
        if search:
            extra = [{"metric": "lr_search_query_ce", "value": ce, "layer": -1, "lr_candidate": lr}
                     for lr, ce in search.items()]
            df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True)
    df = df.drop(columns=[c for c in ("model", "task", "k", "seed") if c in df.columns])
    return with_precision(AnalysisResult(df.reset_index(drop=True)), params["precision"])


def _ivg_applies(model: str, task: str) -> str | None:
    if not is_token_model(model):
        return None if split_task(task)[0] == "linreg" else f"model {model!r} is a linear-regression model: use task 'linreg'"
    return token_task_only(model, task)


GD_SUBSETS = ("all", "attn_kv", "one_layer_wv")


def _check_icl_vs_gd(model: str, task: str, k: int, params: dict[str, Any]) -> str | None:
    if k < 1:
        return f"k={k}: gradient descent on the demonstrations needs at least one; use k >= 1"
    sub = params["subset"]
    if sub not in GD_SUBSETS and not sub.startswith("re:"):
        return f"subset={sub!r}: use one of {', '.join(GD_SUBSETS)} or 're:REGEX' over parameter names"
    for key, low in (("n_tasks", 1), ("gd_steps", 1), ("epochs", 1), ("order_perms", 0)):
        if params[key] < low:
            return f"{key}={params[key]}: use {key} >= {low}"
    if not params["lr"] > 0:
        return f"lr={params['lr']}: the learning rate must be > 0"
    return n_prompts_problem(params["n_prompts"], k)


register(AnalysisSpec(
    name="icl_vs_gd", fn=_icl_vs_gd,
    params={"n_prompts": 16, "n_tasks": 256, "gd_steps": 1, "subset": "attn_kv", "lr": 1e-2,
            "epochs": 5, "order_perms": 4, "order_prompts": 4, "optimizer": "sgd", "lr_grid": [],
            "lr_search_prompts": 4, "precision": "float32"},
    uses_task=True, uses_k=True,
    description="ICL against gradient descent on the same demonstrations (experiments.studies.icl_vs_gd); "
                "per-prompt (per-task) rows for experiments.studies.icl_vs_gd.icl_vs_gd_stats",
    requires=("experiments.studies.icl_vs_gd", "experiments.studies.gd"),
    code=("experiments.runs.analyses.icl_vs_gd", "experiments.runs.inputs"),
    applies=_ivg_applies,
    version=2,
    check_params=_check_icl_vs_gd,
))
