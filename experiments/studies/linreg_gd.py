"""ICL versus gradient descent on in-context linear regression (von Oswald et al. 2023; Garg et
al. 2022).

For a model that reads
``LinRegBatch`` prompts (``linreg-lsa-1l``, ``linreg-gpt``, the hand-built ``gd_lsa`` layer or any
callable ``LinRegBatch -> y_hat``), ``compare_linreg`` measures per k:

- ``preds_diff`` = mean |y_model - y_GD| (von Oswald's "preds diff");
- ``sens_cos`` / ``sens_l2``: mean cosine / L2 distance between ``d y / d x_q`` of the model and
  of GD, both by autograd ("model cos" / "model diff");
- squared error / d of the model and every baseline (least squares, ridge, GD, kNN, averaging);
- ``gd_lr_fit`` / ``preds_diff_fit`` (one GD step only): the lr whose GD step best fits the
  model's predictions (least squares through the origin) and the remaining difference; a model
  that runs GD with its own fixed lr has ``preds_diff_fit`` ~ 0 even where ``preds_diff`` is not;
- ``ls_preds_diff`` / ``ls_sens_cos``: the same agreement with least squares (the alternative
  hypothesis for deep models).

GD is ``gd_steps`` full-batch steps from ``w = 0`` with the lr that minimises held-out loss
(``experiments.tasks.linreg.best_gd_lr``). ``linreg_order_sensitivity`` measures the spread of
predictions over permutations of the demonstrations for the model, full-batch GD (order
invariant) and one-example-at-a-time SGD.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from experiments.studies.tidy import model_name
from experiments.tasks import linreg as lr_task
from experiments.tasks.linreg import LinRegBatch
from probes.errors import WorkbenchError

LinRegPredictor = Callable[[LinRegBatch], Float[Tensor, " b"]]


class LinRegGDError(WorkbenchError):
    """A model or setting the linear-regression comparison cannot use."""


def _as_predictor(model: Any) -> LinRegPredictor:
    if hasattr(model, "predict"):
        return model.predict
    if callable(model):
        return model
    raise LinRegGDError("pass a linear-regression model (with .predict(LinRegBatch)) or a callable "
                       "LinRegBatch -> predictions [b]")


def sensitivity(predict: LinRegPredictor, batch: LinRegBatch) -> Float[Tensor, "b d"]:
    """``d y_hat / d x_q`` per task, by autograd (rows must not interact, as in every model here)."""
    xq = batch.xq.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = predict(batch.with_xq(xq))
        (grad,) = torch.autograd.grad(y.sum(), xq, allow_unused=True)
    return torch.zeros_like(xq) if grad is None else grad.detach()


def agreement_per_task(model_fn: LinRegPredictor, ref_fn: LinRegPredictor,
                       batch: LinRegBatch) -> dict[str, Float[Tensor, " b"]]:
    """von Oswald's agreement metrics between two predictors, one value per task (prompt)."""
    with torch.no_grad():
        y_m, y_r = model_fn(batch), ref_fn(batch)
    s_m, s_r = sensitivity(model_fn, batch), sensitivity(ref_fn, batch)
    return {
        "preds_diff": (y_m - y_r).abs(),
        "sens_cos": torch.nn.functional.cosine_similarity(s_m, s_r, dim=-1, eps=1e-12),
        "sens_l2": (s_m - s_r).norm(dim=-1),
        "err_model": lr_task.squared_error(y_m, batch),
        "err_ref": lr_task.squared_error(y_r, batch),
    }


def compare_predictors(model_fn: LinRegPredictor, ref_fn: LinRegPredictor,
                       batch: LinRegBatch) -> dict[str, float]:
    """von Oswald's agreement metrics between two predictors on the same prompts (task means)."""
    return {key: float(v.float().mean()) for key, v in agreement_per_task(model_fn, ref_fn, batch).items()}


def compare_linreg(model: Any, ks: Sequence[int], d: int | None = None, n_tasks: int = 512,
                   seed: int = 0, x_dist: lr_task.XDist = "normal", gd_steps: int = 1,
                   gd_lr: float | None = None, ridge_lam: float = 0.1,
                   name: str | None = None) -> pd.DataFrame:
    """One row per k: the model against ``gd_steps`` steps of GD (lr grid-searched per k unless
    ``gd_lr`` is given), plus the model's and every baseline's squared error / d."""
    predict = _as_predictor(model)
    d = d or getattr(getattr(model, "cfg", None), "d", None)
    if d is None:
        raise LinRegGDError("compare_linreg needs d= when the model has no cfg.d")
    rows = []
    for k in ks:
        if k < 1:
            raise LinRegGDError(f"k must be >= 1 (GD needs demonstrations), got {k}")
        tasks = lr_task.make_tasks(n_tasks, k, d, seed=seed + 7919 * k, x_dist=x_dist)
        lr = gd_lr if gd_lr is not None else lr_task.best_gd_lr(k, d, gd_steps, x_dist)
        gd_fn = (lambda lr_: (lambda b: lr_task.gd(b, lr_, gd_steps)))(lr)
        m = compare_predictors(predict, gd_fn, tasks)
        ls = compare_predictors(predict, lr_task.least_squares, tasks)
        if gd_steps == 1:  # the lr of the one GD step that best explains the model's predictions
            with torch.no_grad():
                a, y_m = lr_task.averaging(tasks), predict(tasks)
            eta_fit = float((a * y_m).sum() / (a * a).sum().clamp(min=1e-12))
            m["gd_lr_fit"] = eta_fit
            m["preds_diff_fit"] = float((y_m - eta_fit * a).abs().mean())
        row: dict[str, Any] = {"model": name or model_name(model), "task": f"linreg-{x_dist}",
                               "k": k, "d": d, "seed": seed, "n_tasks": n_tasks,
                               "gd_steps": gd_steps, "gd_lr": lr, **m,
                               "ls_preds_diff": ls["preds_diff"], "ls_sens_cos": ls["sens_cos"]}
        with torch.no_grad():
            for bname, fn in lr_task.baselines(k, d, x_dist, gd_steps=sorted({1, gd_steps, 5}),
                                               ridge_lam=ridge_lam).items():
                row[f"err_{bname}"] = float(lr_task.squared_error(fn(tasks), tasks).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def linreg_task_rows(model: Any, k: int, d: int | None = None, n_tasks: int = 512, seed: int = 0,
                     x_dist: lr_task.XDist = "normal", gd_steps: int = 1, ridge_lam: float = 0.1,
                     n_perms: int = 0, n_order_tasks: int = 256) -> pd.DataFrame:
    """Per-task rows (``metric, value, prompt``; the "prompt" is the task) on exactly the tasks of
    ``compare_linreg`` (and, with ``n_perms``, of ``linreg_order_sensitivity``) at this k and seed:
    the squared error / d of the model and of every baseline (``err_*``), the agreement with GD
    (``preds_diff``, ``sens_cos``, ``sens_l2``) and with least squares (``ls_preds_diff``,
    ``ls_sens_cos``), and the order spreads (``order_std_model``, ``order_std_gd<steps>``,
    ``order_std_sgd``). ``icl_vs_gd_stats`` compares them."""
    predict = _as_predictor(model)
    d = d or getattr(getattr(model, "cfg", None), "d", None)
    if d is None:
        raise LinRegGDError("linreg_task_rows needs d= when the model has no cfg.d")
    tasks = lr_task.make_tasks(n_tasks, k, d, seed=seed + 7919 * k, x_dist=x_dist)
    lr = lr_task.best_gd_lr(k, d, gd_steps, x_dist)
    per = agreement_per_task(predict, lambda b: lr_task.gd(b, lr, gd_steps), tasks)
    per.pop("err_ref")
    ls = agreement_per_task(predict, lr_task.least_squares, tasks)
    per["ls_preds_diff"], per["ls_sens_cos"] = ls["preds_diff"], ls["sens_cos"]
    with torch.no_grad():
        for bname, fn in lr_task.baselines(k, d, x_dist, gd_steps=sorted({1, gd_steps, 5}),
                                           ridge_lam=ridge_lam).items():
            per[f"err_{bname}"] = lr_task.squared_error(fn(tasks), tasks)
    if n_perms:
        order = linreg_order_sensitivity(model, [k], d, min(n_tasks, n_order_tasks), n_perms, seed, x_dist,
                                         gd_steps, per_task=True)
        for method, spread in order.items():
            per[f"order_std_{method}"] = spread
    rows = [{"metric": m, "value": float(v), "prompt": i}
            for m, vals in per.items() for i, v in enumerate(vals.float().tolist())]
    return pd.DataFrame(rows)


def order_spread(predict: LinRegPredictor, batch: LinRegBatch, n_perms: int = 8,
                 seed: int = 0, per_task: bool = False) -> float | Float[Tensor, " b"]:
    """Mean over tasks of the std of the prediction across ``n_perms`` demonstration orders
    (``per_task``: every task's std)."""
    g = torch.Generator().manual_seed(seed)
    preds = []
    with torch.no_grad():
        for i in range(n_perms):
            perm = torch.arange(batch.k) if i == 0 else torch.randperm(batch.k, generator=g)
            preds.append(predict(batch.permute(perm)))
    spread = torch.stack(preds).std(0, unbiased=False)
    return spread if per_task else float(spread.mean())


def linreg_order_sensitivity(model: Any, ks: Sequence[int], d: int | None = None,
                             n_tasks: int = 256, n_perms: int = 8, seed: int = 0,
                             x_dist: lr_task.XDist = "normal", gd_steps: int = 1,
                             name: str | None = None, per_task: bool = False) -> Any:
    """Spread of predictions over demonstration orders: model, full-batch GD, SGD (per k).

    ``per_task=True`` (one k only) returns ``{method: per-task spread tensor}`` instead."""
    predict = _as_predictor(model)
    d = d or model.cfg.d
    if per_task and len(ks) != 1:
        raise LinRegGDError("per_task=True takes one k")
    rows: list[Any] = []
    for k in ks:
        tasks = lr_task.make_tasks(n_tasks, k, d, seed=seed + 31 * k, x_dist=x_dist)
        lr_gd = lr_task.best_gd_lr(k, d, gd_steps, x_dist)
        lr_sgd = lr_task.best_gd_lr(k, d, 1, x_dist, sgd_mode=True)
        for method, fn in (("model", predict),
                           (f"gd{gd_steps}", lambda b: lr_task.gd(b, lr_gd, gd_steps)),
                           ("sgd", lambda b: lr_task.sgd(b, lr_sgd))):
            if per_task:
                rows.append((method, order_spread(fn, tasks, n_perms, seed, per_task=True)))
                continue
            rows.append({"model": name or model_name(model), "task": f"linreg-{x_dist}", "k": k,
                         "method": method, "order_std": order_spread(fn, tasks, n_perms, seed),
                         "n_perms": n_perms, "n_tasks": n_tasks})
    return dict(rows) if per_task else pd.DataFrame(rows)


def fig_error_vs_k(df: pd.DataFrame, title: str = "Squared error / d vs number of demonstrations"):
    """Error curves from ``compare_linreg`` (columns ``err_*``) or ``error_vs_k`` rows
    (``k, predictor, error``): the model beside every baseline, log-scale y."""

    if "predictor" in df.columns:
        long = df.rename(columns={"error": "value"})
    else:
        cols = [c for c in df.columns if c.startswith("err_") and c != "err_ref"]
        long = df.melt(id_vars=["k"], value_vars=cols, var_name="predictor", value_name="value")
        long["predictor"] = long["predictor"].str.removeprefix("err_")
    fig = go.Figure()
    for name, part in long.groupby("predictor", sort=False):
        part = part.groupby("k", as_index=False)["value"].mean()
        is_model = name == "model"
        fig.add_trace(go.Scatter(x=part["k"], y=part["value"].clip(lower=1e-8), name=str(name),
                                 mode="lines+markers",
                                 line={"width": 4 if is_model else 1.5,
                                       "dash": "solid" if is_model else "dot"}))
    fig.update_layout(title=title, xaxis_title="k (demonstrations)", yaxis_title="squared error / d",
                      yaxis_type="log", template="plotly_white")
    return fig


def fig_sensitivity(dfs: dict[str, pd.DataFrame] | pd.DataFrame,
                    title: str = "Agreement with gradient descent"):
    """Sensitivity cosine (left axis) and prediction difference (right axis) vs k, per model."""

    if isinstance(dfs, pd.DataFrame):
        dfs = {str(m): part for m, part in dfs.groupby("model")}
    fig = go.Figure()
    for name, df in dfs.items():
        fig.add_trace(go.Scatter(x=df["k"], y=df["sens_cos"], name=f"{name}: cos(dy/dx_q)",
                                 mode="lines+markers"))
        fig.add_trace(go.Scatter(x=df["k"], y=df["preds_diff"], name=f"{name}: |y - y_GD|",
                                 mode="lines+markers", yaxis="y2", line={"dash": "dot"}))
    fig.update_layout(title=title, xaxis_title="k (demonstrations)",
                      yaxis={"title": "sensitivity cosine", "range": [-1.05, 1.05]},
                      yaxis2={"title": "mean |y_model - y_GD|", "overlaying": "y", "side": "right"},
                      template="plotly_white")
    return fig
