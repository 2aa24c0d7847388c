"""ICL versus gradient descent: does ICL change a model's behaviour the way GD on the same
demonstrations does?

Two halves, one tidy output format (a pandas DataFrame, one row per model/task/k/seed/metric,
with provenance columns):

**Linear regression** (von Oswald et al. 2023; Garg et al. 2022). For a model that reads
``LinRegBatch`` prompts (``linreg-lsa-1l``, ``linreg-gpt``, the hand-built ``gd_lsa`` layer or any
callable ``LinRegBatch -> y_hat``), ``compare_linreg`` measures per k:

- ``preds_diff`` = mean |y_model - y_GD| (von Oswald's "preds diff");
- ``sens_cos`` / ``sens_l2``: mean cosine / L2 distance between ``d y / d x_q`` of the model and
  of GD, both by autograd ("model cos" / "model diff");
- squared error / d of the model and every baseline (least squares, ridge, GD, kNN, averaging).

GD is ``gd_steps`` full-batch steps from ``w = 0`` with the lr that minimises held-out loss
(``experiments.tasks.linreg.best_gd_lr``). ``linreg_order_sensitivity`` measures the spread of
predictions over permutations of the demonstrations for the model, full-batch GD (order
invariant) and one-example-at-a-time SGD.

**Language models** (Dai et al. 2023; Shen et al. 2023). ``compare_icl_gd`` fine-tunes a copy of
the model on the k demonstrations of each prompt (``experiments.gd.finetune_on_demos``), then
compares zero-shot, ICL and GD read-out distributions: accuracy, top-k overlap, KL both ways,
total variation, Rec2FTP, SimAOU per layer (with its random baseline) and order sensitivity.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from experiments.tasks import linreg as lr_task
from experiments.tasks.linreg import LinRegBatch

LinRegPredictor = Callable[[LinRegBatch], Float[Tensor, " b"]]


class ICLvsGDError(ValueError):
    """Bad input to an ICL-versus-GD comparison; the message names the fix."""


# ====================================================================== linear regression
def _as_predictor(model: Any) -> LinRegPredictor:
    if hasattr(model, "predict"):
        return model.predict
    if callable(model):
        return model
    raise ICLvsGDError("pass a linear-regression model (with .predict(LinRegBatch)) or a callable "
                       "LinRegBatch -> predictions [b]")


def _model_name(model: Any) -> str:
    card = getattr(model, "zoo_card", None)
    if card:
        return str(card.get("name"))
    return str(getattr(model, "name", None) or type(model).__name__)


def sensitivity(predict: LinRegPredictor, batch: LinRegBatch) -> Float[Tensor, "b d"]:
    """``d y_hat / d x_q`` per task, by autograd (rows must not interact, as in every model here)."""
    xq = batch.xq.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = predict(batch.with_xq(xq))
        (grad,) = torch.autograd.grad(y.sum(), xq, allow_unused=True)
    return torch.zeros_like(xq) if grad is None else grad.detach()


def compare_predictors(model_fn: LinRegPredictor, ref_fn: LinRegPredictor,
                       batch: LinRegBatch) -> dict[str, float]:
    """von Oswald's agreement metrics between two predictors on the same prompts."""
    with torch.no_grad():
        y_m, y_r = model_fn(batch), ref_fn(batch)
    s_m, s_r = sensitivity(model_fn, batch), sensitivity(ref_fn, batch)
    cos = torch.nn.functional.cosine_similarity(s_m, s_r, dim=-1, eps=1e-12)
    return {
        "preds_diff": float((y_m - y_r).abs().mean()),
        "sens_cos": float(cos.mean()),
        "sens_l2": float((s_m - s_r).norm(dim=-1).mean()),
        "err_model": float(lr_task.squared_error(y_m, batch).mean()),
        "err_ref": float(lr_task.squared_error(y_r, batch).mean()),
    }


def compare_linreg(model: Any, ks: Sequence[int], d: int | None = None, n_tasks: int = 512,
                   seed: int = 0, x_dist: lr_task.XDist = "normal", gd_steps: int = 1,
                   gd_lr: float | None = None, ridge_lam: float = 0.1,
                   name: str | None = None) -> pd.DataFrame:
    """One row per k: the model against ``gd_steps`` steps of GD (lr grid-searched per k unless
    ``gd_lr`` is given), plus the model's and every baseline's squared error / d."""
    predict = _as_predictor(model)
    d = d or getattr(getattr(model, "cfg", None), "d", None)
    if d is None:
        raise ICLvsGDError("compare_linreg needs d= when the model has no cfg.d")
    rows = []
    for k in ks:
        if k < 1:
            raise ICLvsGDError(f"k must be >= 1 (GD needs demonstrations), got {k}")
        tasks = lr_task.make_tasks(n_tasks, k, d, seed=seed + 7919 * k, x_dist=x_dist)
        lr = gd_lr if gd_lr is not None else lr_task.best_gd_lr(k, d, gd_steps, x_dist)
        gd_fn = (lambda lr_: (lambda b: lr_task.gd(b, lr_, gd_steps)))(lr)
        m = compare_predictors(predict, gd_fn, tasks)
        row: dict[str, Any] = {"model": name or _model_name(model), "task": f"linreg-{x_dist}",
                               "k": k, "d": d, "seed": seed, "n_tasks": n_tasks,
                               "gd_steps": gd_steps, "gd_lr": lr, **m}
        with torch.no_grad():
            for bname, fn in lr_task.baselines(k, d, x_dist, gd_steps=sorted({1, gd_steps, 5}),
                                               ridge_lam=ridge_lam).items():
                row[f"err_{bname}"] = float(lr_task.squared_error(fn(tasks), tasks).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def order_spread(predict: LinRegPredictor, batch: LinRegBatch, n_perms: int = 8,
                 seed: int = 0) -> float:
    """Mean over tasks of the std of the prediction across ``n_perms`` demonstration orders."""
    g = torch.Generator().manual_seed(seed)
    preds = []
    with torch.no_grad():
        for i in range(n_perms):
            perm = torch.arange(batch.k) if i == 0 else torch.randperm(batch.k, generator=g)
            preds.append(predict(batch.permute(perm)))
    return float(torch.stack(preds).std(0, unbiased=False).mean())


def linreg_order_sensitivity(model: Any, ks: Sequence[int], d: int | None = None,
                             n_tasks: int = 256, n_perms: int = 8, seed: int = 0,
                             x_dist: lr_task.XDist = "normal", gd_steps: int = 1,
                             name: str | None = None) -> pd.DataFrame:
    """Spread of predictions over demonstration orders: model, full-batch GD, SGD (per k)."""
    predict = _as_predictor(model)
    d = d or model.cfg.d
    rows = []
    for k in ks:
        tasks = lr_task.make_tasks(n_tasks, k, d, seed=seed + 31 * k, x_dist=x_dist)
        lr_gd = lr_task.best_gd_lr(k, d, gd_steps, x_dist)
        lr_sgd = lr_task.best_gd_lr(k, d, 1, x_dist, sgd_mode=True)
        for method, fn in (("model", predict),
                           (f"gd{gd_steps}", lambda b: lr_task.gd(b, lr_gd, gd_steps)),
                           ("sgd", lambda b: lr_task.sgd(b, lr_sgd))):
            rows.append({"model": name or _model_name(model), "task": f"linreg-{x_dist}", "k": k,
                         "method": method, "order_std": order_spread(fn, tasks, n_perms, seed),
                         "n_perms": n_perms, "n_tasks": n_tasks})
    return pd.DataFrame(rows)


def tidy(df: pd.DataFrame, id_cols: Sequence[str], provenance: dict[str, Any] | None = None) -> pd.DataFrame:
    """Wide -> long (``metric``, ``value``) with provenance columns added."""
    value_cols = [c for c in df.columns if c not in id_cols and pd.api.types.is_numeric_dtype(df[c])]
    long = df.melt(id_vars=list(id_cols), value_vars=value_cols, var_name="metric", value_name="value")
    for key, val in (provenance or {}).items():
        long[key] = val
    return long


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """``config_hash`` (of the comparison's settings) and package versions, for every row."""
    from experiments.zoo import package_versions

    blob = json.dumps(config, sort_keys=True, default=str)
    versions = package_versions()
    return {"config_hash": hashlib.sha1(blob.encode()).hexdigest()[:12],
            "torch_version": versions.get("torch", ""),
            "tl_version": versions.get("transformer-lens", "")}
