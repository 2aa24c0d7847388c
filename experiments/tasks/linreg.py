"""In-context linear regression (Garg et al. 2022; von Oswald et al. 2023).

One *task* is a weight vector ``w ~ N(0, I_d)``; its prompt holds ``k`` demonstrations
``(x_j, y_j = w . x_j)`` and a query ``x_q`` whose answer ``y_q = w . x_q`` must be inferred from
the context alone. Inputs are ``x ~ N(0, I_d)`` (Garg) or ``x ~ U(-0.5, 0.5)^d`` (von Oswald's
``input_range = 1``).

A batch of tasks is a ``LinRegBatch`` (real vectors, not tokens). ``tokenize`` turns it into the
model input ``[b, k+1, d+1]``: tokens ``e_j = (x_j, y_j)`` followed by the query token ``(x_q, 0)``.

Baselines (all map a ``LinRegBatch`` to predictions ``[b]`` of ``y_q``, and are differentiable in
``xq`` so their sensitivities ``d y / d x_q`` come from autograd):

- ``least_squares``: minimum-norm least squares (exact at ``k >= d`` without noise);
- ``ridge``: ``(X^T X + lam I)^-1 X^T y``;
- ``gd``: ``steps`` steps of full-batch gradient descent from ``w = 0`` on
  ``L(w) = 1/(2k) sum_j (w . x_j - y_j)^2`` with learning rate ``lr``; one step is
  ``w_1 = lr * mean_j(y_j x_j)`` (von Oswald's construction);
- ``sgd``: one example at a time, in the demonstrations' order (order sensitive);
- ``knn``: mean ``y`` of the ``n_neighbors`` nearest demonstrations (Garg's 3-NN);
- ``averaging``: ``w = mean_j(y_j x_j)`` (Garg's averaging; one GD step with lr 1).

``best_gd_lr`` picks the learning rate that minimises held-out loss over a grid, per ``(k, steps)``.
Errors are reported as Garg's squared error divided by ``d``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from probes.errors import WorkbenchError

XDist = Literal["normal", "uniform"]


class LinRegError(WorkbenchError):
    """Bad input to the linear-regression task; the message names the fix."""


@dataclass
class LinRegBatch:
    """``b`` regression tasks with ``k`` demonstrations each in ``d`` dimensions."""

    xs: Float[Tensor, "b k d"]
    ys: Float[Tensor, "b k"]
    xq: Float[Tensor, "b d"]
    yq: Float[Tensor, " b"]
    w: Float[Tensor, "b d"]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        b, k, d = self.xs.shape
        for name, shape in (("ys", (b, k)), ("xq", (b, d)), ("yq", (b,)), ("w", (b, d))):
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise LinRegError(f"LinRegBatch.{name} must have shape {shape} to match xs "
                                  f"{tuple(self.xs.shape)}, got {got}")

    @property
    def batch_size(self) -> int:
        return int(self.xs.shape[0])

    @property
    def k(self) -> int:
        return int(self.xs.shape[1])

    @property
    def d(self) -> int:
        return int(self.xs.shape[2])

    def __len__(self) -> int:
        return self.batch_size

    def first(self, k: int) -> "LinRegBatch":
        """The same tasks with only the first ``k`` demonstrations."""
        if not 0 <= k <= self.k:
            raise LinRegError(f"first(k): k must be in 0..{self.k}, got {k}")
        return replace(self, xs=self.xs[:, :k], ys=self.ys[:, :k], meta={**self.meta, "k": k})

    def permute(self, perm: Sequence[int] | Tensor) -> "LinRegBatch":
        """Reorder the demonstrations (same permutation for every task)."""
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(self.k)):
            raise LinRegError(f"permute needs a permutation of 0..{self.k - 1}, got {perm.tolist()}")
        return replace(self, xs=self.xs[:, perm], ys=self.ys[:, perm])

    def select(self, rows: Sequence[int] | slice | Tensor) -> "LinRegBatch":
        if isinstance(rows, slice):
            rows = list(range(self.batch_size))[rows]
        rows = torch.as_tensor(rows, dtype=torch.long)
        return replace(self, xs=self.xs[rows], ys=self.ys[rows], xq=self.xq[rows],
                       yq=self.yq[rows], w=self.w[rows])

    def with_xq(self, xq: Float[Tensor, "b d"]) -> "LinRegBatch":
        """The same prompts with another query (e.g. one that requires grad)."""
        return replace(self, xq=xq, yq=einops.einsum(self.w, xq, "b d, b d -> b"))

    def tokens(self) -> Float[Tensor, "b k1 d1"]:
        return tokenize(self)


def sample_x(shape: tuple[int, ...], g: torch.Generator, x_dist: XDist = "normal") -> Tensor:
    if x_dist == "normal":
        return torch.randn(*shape, generator=g)
    if x_dist == "uniform":
        return torch.rand(*shape, generator=g) - 0.5
    raise LinRegError(f"unknown x_dist {x_dist!r}; use 'normal' (Garg) or 'uniform' (von Oswald)")


def make_tasks(n_tasks: int, k: int, d: int, seed: int = 0, x_dist: XDist = "normal",
               noise_std: float = 0.0) -> LinRegBatch:
    """``n_tasks`` tasks with ``w ~ N(0, I_d)``, ``k`` demonstrations and one query each.

    Deterministic in ``seed``. ``noise_std`` adds Gaussian noise to the demonstration labels only.
    """
    if n_tasks < 1 or k < 0 or d < 1:
        raise LinRegError(f"need n_tasks >= 1, k >= 0, d >= 1; got {n_tasks}, {k}, {d}")
    g = torch.Generator().manual_seed(int(seed))
    w = torch.randn(n_tasks, d, generator=g)
    xs = sample_x((n_tasks, k, d), g, x_dist)
    xq = sample_x((n_tasks, d), g, x_dist)
    ys = einops.einsum(xs, w, "b k d, b d -> b k")
    if noise_std:
        ys = ys + noise_std * torch.randn(ys.shape, generator=g)
    yq = einops.einsum(xq, w, "b d, b d -> b")
    return LinRegBatch(xs=xs, ys=ys, xq=xq, yq=yq, w=w,
                       meta={"task": "linreg", "k": k, "d": d, "seed": seed, "x_dist": x_dist,
                             "noise_std": noise_std})


def make_prompts(k: int, n_prompts: int, seed: int, d: int = 5, x_dist: XDist = "normal",
                 noise_std: float = 0.0) -> LinRegBatch:
    """The task registry's calling form (a ``LinRegBatch``, not a token PromptBatch)."""
    return make_tasks(n_prompts, k, d, seed=seed, x_dist=x_dist, noise_std=noise_std)


def tokenize(batch: LinRegBatch) -> Float[Tensor, "b k1 d1"]:
    """Model input: ``e_j = (x_j, y_j)`` for each demonstration, then the query ``(x_q, 0)``."""
    demos = torch.cat([batch.xs, batch.ys[..., None]], dim=-1)
    query = torch.cat([batch.xq, torch.zeros_like(batch.yq)[:, None]], dim=-1)
    return torch.cat([demos, query[:, None]], dim=1)


def detokenize(tokens: Float[Tensor, "b k1 d1"], w: Tensor | None = None) -> LinRegBatch:
    """Inverse of ``tokenize`` (``yq`` and ``w`` are unknown unless ``w`` is given)."""
    xs, ys = tokens[:, :-1, :-1], tokens[:, :-1, -1]
    xq = tokens[:, -1, :-1]
    if w is None:
        w = torch.full_like(xq, float("nan"))
    return LinRegBatch(xs=xs, ys=ys, xq=xq, yq=einops.einsum(w, xq, "b d, b d -> b"), w=w)


# ---------------------------------------------------------------------- weight estimators
def _predict(w_hat: Float[Tensor, "b d"], batch: LinRegBatch) -> Float[Tensor, " b"]:
    return einops.einsum(w_hat, batch.xq, "b d, b d -> b")


def least_squares_w(batch: LinRegBatch) -> Float[Tensor, "b d"]:
    """Minimum-norm least-squares weights (``pinv(X) y``); zero at ``k = 0``."""
    if batch.k == 0:
        return torch.zeros(batch.batch_size, batch.d)
    return einops.einsum(torch.linalg.pinv(batch.xs), batch.ys, "b d k, b k -> b d")


def ridge_w(batch: LinRegBatch, lam: float = 0.1) -> Float[Tensor, "b d"]:
    gram = einops.einsum(batch.xs, batch.xs, "b k d, b k e -> b d e")
    rhs = einops.einsum(batch.xs, batch.ys, "b k d, b k -> b d")
    eye = torch.eye(batch.d).expand_as(gram)
    return torch.linalg.solve(gram + lam * eye, rhs)


def gd_w(batch: LinRegBatch, lr: float, steps: int = 1,
         w0: Float[Tensor, "b d"] | None = None) -> Float[Tensor, "b d"]:
    """``steps`` full-batch GD steps on ``1/(2k) sum (w.x_j - y_j)^2`` from ``w0`` (default 0)."""
    w = torch.zeros(batch.batch_size, batch.d) if w0 is None else w0
    if batch.k == 0:
        return w
    for _ in range(steps):
        resid = einops.einsum(batch.xs, w, "b k d, b d -> b k") - batch.ys
        grad = einops.einsum(batch.xs, resid, "b k d, b k -> b d") / batch.k
        w = w - lr * grad
    return w


def sgd_w(batch: LinRegBatch, lr: float, epochs: int = 1) -> Float[Tensor, "b d"]:
    """One example at a time, in order, on ``1/2 (w.x_j - y_j)^2`` (order sensitive)."""
    w = torch.zeros(batch.batch_size, batch.d)
    for _ in range(epochs):
        for j in range(batch.k):
            x = batch.xs[:, j]
            resid = einops.einsum(x, w, "b d, b d -> b") - batch.ys[:, j]
            w = w - lr * resid[:, None] * x
    return w


def averaging_w(batch: LinRegBatch) -> Float[Tensor, "b d"]:
    if batch.k == 0:
        return torch.zeros(batch.batch_size, batch.d)
    return einops.reduce(batch.xs * batch.ys[..., None], "b k d -> b d", "mean")


# ---------------------------------------------------------------------- predictors of y_q
def least_squares(batch: LinRegBatch) -> Float[Tensor, " b"]:
    return _predict(least_squares_w(batch), batch)


def ridge(batch: LinRegBatch, lam: float = 0.1) -> Float[Tensor, " b"]:
    return _predict(ridge_w(batch, lam), batch)


def gd(batch: LinRegBatch, lr: float, steps: int = 1) -> Float[Tensor, " b"]:
    return _predict(gd_w(batch, lr, steps), batch)


def sgd(batch: LinRegBatch, lr: float, epochs: int = 1) -> Float[Tensor, " b"]:
    return _predict(sgd_w(batch, lr, epochs), batch)


def averaging(batch: LinRegBatch) -> Float[Tensor, " b"]:
    return _predict(averaging_w(batch), batch)


def knn(batch: LinRegBatch, n_neighbors: int = 3) -> Float[Tensor, " b"]:
    """Mean label of the ``n_neighbors`` demonstrations nearest to ``x_q`` (all if fewer)."""
    if batch.k == 0:
        return torch.zeros(batch.batch_size) + 0 * batch.xq.sum(-1)
    dist = (batch.xs - batch.xq[:, None]).norm(dim=-1)
    n = min(n_neighbors, batch.k)
    idx = dist.topk(n, dim=1, largest=False).indices
    return batch.ys.gather(1, idx).mean(1) + 0 * batch.xq.sum(-1)


def zero(batch: LinRegBatch) -> Float[Tensor, " b"]:
    return 0 * batch.xq.sum(-1)


def squared_error(pred: Float[Tensor, " b"], batch: LinRegBatch) -> Float[Tensor, " b"]:
    """Garg's metric: squared error divided by d."""
    return (pred - batch.yq) ** 2 / batch.d


# ---------------------------------------------------------------------- learning-rate search
DEFAULT_LR_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 41))  # 0.05 .. 2.0


def best_gd_lr(k: int, d: int, steps: int = 1, x_dist: XDist = "normal",
               grid: Sequence[float] | None = None, n_tasks: int = 4096, seed: int = 10_000,
               sgd_mode: bool = False) -> float:
    """The lr on ``grid`` that minimises mean squared query error on held-out tasks.

    For the uniform input distribution the grid is scaled by 12 (its inverse input variance).
    ``sgd_mode`` searches the per-example lr of one epoch of ``sgd`` instead.
    """
    if k == 0:
        return 0.0
    scale = 12.0 if x_dist == "uniform" else 1.0
    grid = [g * scale for g in (grid or DEFAULT_LR_GRID)]
    tasks = make_tasks(n_tasks, k, d, seed=seed, x_dist=x_dist)
    losses = []
    for lr in grid:
        pred = sgd(tasks, lr) if sgd_mode else gd(tasks, lr, steps)
        losses.append(float(squared_error(pred, tasks).mean()))
    return float(grid[min(range(len(grid)), key=losses.__getitem__)])


Predictor = Callable[[LinRegBatch], Float[Tensor, " b"]]


def baselines(k: int, d: int, x_dist: XDist = "normal", gd_steps: Sequence[int] = (1, 5),
              ridge_lam: float = 0.1, n_neighbors: int = 3) -> dict[str, Predictor]:
    """Named baseline predictors for prompts with ``k`` demonstrations (GD lrs grid-searched)."""
    out: dict[str, Predictor] = {
        "least_squares": least_squares,
        "ridge": lambda b: ridge(b, ridge_lam),
        f"knn{n_neighbors}": lambda b: knn(b, n_neighbors),
        "averaging": averaging,
    }
    for s in gd_steps:
        lr = best_gd_lr(k, d, s, x_dist)
        out[f"gd{s}"] = (lambda lr_, s_: (lambda b: gd(b, lr_, s_)))(lr, s)
    return out


def error_vs_k(predictors: dict[str, Callable[[LinRegBatch], Tensor]], d: int, ks: Sequence[int],
               n_tasks: int = 1024, seed: int = 1, x_dist: XDist = "normal",
               include_baselines: bool = True, gd_steps: Sequence[int] = (1, 5)) -> list[dict[str, Any]]:
    """Rows ``{k, predictor, error, sem}``: mean squared error / d on fresh tasks per ``k``.

    With ``include_baselines`` every ``baselines(k, d)`` predictor (GD lr searched per ``k``) is
    scored on the same tasks beside ``predictors``.
    """
    rows = []
    for k in ks:
        tasks = make_tasks(n_tasks, k, d, seed=seed + 7919 * k, x_dist=x_dist)
        fns = dict(predictors)
        if include_baselines:
            fns.update(baselines(k, d, x_dist, gd_steps))
        for name, fn in fns.items():
            with torch.no_grad():
                err = squared_error(fn(tasks), tasks)
            rows.append({"k": k, "predictor": name, "error": float(err.mean()),
                         "sem": float(err.std() / max(len(err), 1) ** 0.5)})
    return rows
