"""``linreg-lsa-1l`` and ``linreg-gpt``: models that do in-context linear regression on vectors.

Both read the ``[b, k+1, d+1]`` input of ``experiments.tasks.linreg.tokenize`` (demonstration
tokens ``(x_j, y_j)`` and the query ``(x_q, 0)``) and return the prediction of ``y_q``. They are
``HookedRootModule``s with TransformerLens hook names, so ``run_with_cache``, ``hooks(...)`` and the
capture/intervention code work on them unchanged:

``hook_embed``/``hook_pos_embed`` (GPT only), ``blocks.{l}.hook_resid_pre``,
``blocks.{l}.attn.hook_q/hook_k/hook_v [b,pos,h,dh]``, ``blocks.{l}.attn.hook_attn_scores
[b,h,q,k]``, ``blocks.{l}.attn.hook_pattern [b,h,q,k]``, ``blocks.{l}.attn.hook_z [b,pos,h,dh]``,
``blocks.{l}.hook_attn_out``, ``blocks.{l}.hook_mlp_out`` (GPT), ``blocks.{l}.hook_resid_post``,
``ln_final.hook_normalized`` (GPT).

- ``LinearSelfAttention`` (von Oswald et al. 2023): attention-only, no softmax, no LayerNorm.
  Every position attends to the ``N = k`` demonstration tokens with weights
  ``pattern[q, j] = (q_q . k_j) / N`` (``hook_pattern``: rows do **not** sum to 1; that is what
  "linear" means). The prediction is minus the last coordinate of the query's residual stream.
  ``gd_lsa(d, eta)`` builds the hand construction whose output is exactly one GD step from
  ``w = 0`` with learning rate ``eta`` (W_K = W_Q project onto x, W_V maps e to (0, -y),
  W_O = eta on the y slot; the 1/N sits in the attention).
- ``LinRegGPT`` (Garg et al. 2022): a pre-LayerNorm softmax transformer with MLPs, a linear
  read-in and read-out. Internally the sequence is interleaved as Garg does:
  ``x_1, y_1, x_2, y_2, ..., x_k, y_k, x_q`` (x tokens are ``(x, 0)``, y tokens ``(0, y)``), causal
  attention, and a prediction is read at every x position; hook positions are these ``2k+1``
  interleaved positions (x_j at ``2j``, y_j at ``2j+1``, the query at ``2k``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import einops
import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from experiments.models.zoo import TrainResult, ZooSpec
from experiments.tasks.linreg import (
    LinRegBatch,
    LinRegError,
    XDist,
    error_vs_k,
    make_tasks,
    tokenize,
)


@dataclass
class LinRegConfig:
    """Shape of a linear-regression model (saved in the card's ``config``)."""

    d: int = 5  # input dimension of x
    n_layers: int = 1
    n_heads: int = 1
    d_model: int = 6  # LSA: must be d + 1 (it works in token space)
    d_head: int = 6
    d_mlp: int = 0
    max_k: int = 10  # most demonstrations a prompt may hold
    kind: str = "lsa"  # "lsa" | "gpt"
    seed: int = 0

    @property
    def n_ctx(self) -> int:
        return 2 * self.max_k + 1 if self.kind == "gpt" else self.max_k + 1


_M = TypeVar("_M", bound="LinRegModel")


class LinRegModel(HookedRootModule):
    """Common interface: ``model(tokens) -> y_hat [b]``, ``model.predict(batch)``."""

    cfg: LinRegConfig

    @classmethod
    def from_config(cls: type[_M], config: dict[str, Any]) -> _M:
        return cls(LinRegConfig(**config))

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def check_input(self, tokens: Tensor) -> None:
        if tokens.ndim != 3 or tokens.shape[-1] != self.cfg.d + 1:
            raise LinRegError(
                f"{type(self).__name__} expects tokens [batch, k+1, {self.cfg.d + 1}] "
                f"(experiments.tasks.linreg.tokenize of a d={self.cfg.d} LinRegBatch), got "
                f"{tuple(tokens.shape)}")
        if tokens.shape[1] - 1 > self.cfg.max_k:
            raise LinRegError(f"{tokens.shape[1] - 1} demonstrations exceed this model's max_k="
                              f"{self.cfg.max_k}; use at most {self.cfg.max_k}")

    def predict(self, batch: LinRegBatch) -> Float[Tensor, " b"]:
        """Prediction of ``y_q`` for every task (differentiable in ``batch.xq``)."""
        return self(tokenize(batch))


# ---------------------------------------------------------------------- linear self-attention
class LSAAttention(nn.Module):
    def __init__(self, cfg: LinRegConfig) -> None:
        super().__init__()
        H, dm, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.randn(H, dm, dh) * 0.02)
        self.W_K = nn.Parameter(torch.randn(H, dm, dh) * 0.02)
        self.W_V = nn.Parameter(torch.randn(H, dm, dh) * 0.02)
        self.W_O = nn.Parameter(torch.randn(H, dh, dm) * 0.02)
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern, self.hook_z = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: Float[Tensor, "b p dm"]) -> Float[Tensor, "b p dm"]:
        n_demo = x.shape[1] - 1
        q = self.hook_q(einops.einsum(x, self.W_Q, "b p m, h m e -> b p h e"))
        k = self.hook_k(einops.einsum(x, self.W_K, "b p m, h m e -> b p h e"))
        v = self.hook_v(einops.einsum(x, self.W_V, "b p m, h m e -> b p h e"))
        scores = self.hook_attn_scores(einops.einsum(q, k, "b q h e, b k h e -> b h q k"))
        keep = (torch.arange(x.shape[1]) < n_demo).to(x.dtype)  # keys: demonstrations only
        pattern = self.hook_pattern(scores * keep / max(n_demo, 1))
        z = self.hook_z(einops.einsum(pattern, v, "b h q k, b k h e -> b q h e"))
        return einops.einsum(z, self.W_O, "b q h e, h e m -> b q m")


class LSABlock(nn.Module):
    def __init__(self, cfg: LinRegConfig) -> None:
        super().__init__()
        self.attn = LSAAttention(cfg)
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)
        return self.hook_resid_post(x + self.hook_attn_out(self.attn(x)))


class LinearSelfAttention(LinRegModel):
    """von Oswald's linear self-attention transformer (no softmax, no LayerNorm, no MLP)."""

    def __init__(self, cfg: LinRegConfig) -> None:
        super().__init__()
        if cfg.d_model != cfg.d + 1:
            raise LinRegError(f"LinearSelfAttention works in token space: d_model must be d+1="
                              f"{cfg.d + 1}, got {cfg.d_model}")
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.blocks = nn.ModuleList([LSABlock(cfg) for _ in range(cfg.n_layers)])
        self.setup()

    def forward(self, tokens: Float[Tensor, "b k1 d1"]) -> Float[Tensor, " b"]:
        self.check_input(tokens)
        x = tokens
        for block in self.blocks:
            x = block(x)
        return -x[:, -1, -1]


def gd_lsa(d: int, eta: float, max_k: int = 64) -> LinearSelfAttention:
    """One LSA layer whose prediction is exactly one GD step from ``w = 0`` with lr ``eta``.

    W_Q = W_K = projection onto the x coordinates; W_V maps ``(x, y)`` to ``(0, -y)``;
    W_O = ``eta`` on the y slot. The query's y slot becomes ``-(eta/N) sum_j y_j x_j . x_q`` and the
    read-out (minus that slot) is ``w_1 . x_q`` with ``w_1 = eta * mean_j(y_j x_j)``.
    """
    cfg = LinRegConfig(d=d, n_layers=1, n_heads=1, d_model=d + 1, d_head=d + 1, max_k=max_k)
    model = LinearSelfAttention(cfg)
    proj_x = torch.diag(torch.cat([torch.ones(d), torch.zeros(1)]))
    w_v = torch.zeros(d + 1, d + 1)
    w_v[d, d] = -1.0
    w_o = torch.zeros(d + 1, d + 1)
    w_o[d, d] = eta
    attn: Any = model.blocks[0].attn
    with torch.no_grad():
        attn.W_Q.copy_(proj_x[None])
        attn.W_K.copy_(proj_x[None])
        attn.W_V.copy_(w_v[None])
        attn.W_O.copy_(w_o[None])
    model.eval()
    return model


def random_lsa(d: int, max_k: int = 64, seed: int = 0, scale: float = 0.5) -> LinearSelfAttention:
    """A random LSA layer (the control that must *not* look like GD)."""
    model = LinearSelfAttention(LinRegConfig(d=d, d_model=d + 1, d_head=d + 1, max_k=max_k, seed=seed))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


# ---------------------------------------------------------------------- Garg-style GPT
class GPTAttention(nn.Module):
    def __init__(self, cfg: LinRegConfig) -> None:
        super().__init__()
        H, dm, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        std = 1 / math.sqrt(dm)
        self.W_Q = nn.Parameter(torch.randn(H, dm, dh) * std)
        self.W_K = nn.Parameter(torch.randn(H, dm, dh) * std)
        self.W_V = nn.Parameter(torch.randn(H, dm, dh) * std)
        self.W_O = nn.Parameter(torch.randn(H, dh, dm) * std / math.sqrt(2 * cfg.n_layers))
        self.b_O = nn.Parameter(torch.zeros(dm))
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern, self.hook_z = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: Float[Tensor, "b p dm"]) -> Float[Tensor, "b p dm"]:
        P, dh = x.shape[1], self.W_Q.shape[-1]
        q = self.hook_q(einops.einsum(x, self.W_Q, "b p m, h m e -> b p h e"))
        k = self.hook_k(einops.einsum(x, self.W_K, "b p m, h m e -> b p h e"))
        v = self.hook_v(einops.einsum(x, self.W_V, "b p m, h m e -> b p h e"))
        scores = einops.einsum(q, k, "b q h e, b k h e -> b h q k") / math.sqrt(dh)
        causal = torch.ones(P, P, dtype=torch.bool).tril()
        scores = self.hook_attn_scores(scores.masked_fill(~causal, float("-inf")))
        pattern = self.hook_pattern(scores.softmax(-1))
        z = self.hook_z(einops.einsum(pattern, v, "b h q k, b k h e -> b q h e"))
        return einops.einsum(z, self.W_O, "b q h e, h e m -> b q m") + self.b_O


class LayerNormHooked(nn.Module):
    def __init__(self, dm: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(dm))
        self.b = nn.Parameter(torch.zeros(dm))
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = x - x.mean(-1, keepdim=True)
        x = self.hook_normalized(x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())
        return x * self.w + self.b


class GPTBlock(nn.Module):
    def __init__(self, cfg: LinRegConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = LayerNormHooked(cfg.d_model), LayerNormHooked(cfg.d_model)
        self.attn = GPTAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_mlp), nn.GELU(),
                                 nn.Linear(cfg.d_mlp, cfg.d_model))
        self.hook_resid_pre, self.hook_attn_out = HookPoint(), HookPoint()
        self.hook_resid_mid, self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


class LinRegGPT(LinRegModel):
    """Garg et al.'s in-context regression transformer, small: read-in, blocks, read-out."""

    def __init__(self, cfg: LinRegConfig) -> None:
        super().__init__()
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.read_in = nn.Linear(cfg.d + 1, cfg.d_model)
        self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * 0.02)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.blocks = nn.ModuleList([GPTBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = LayerNormHooked(cfg.d_model)
        self.read_out = nn.Linear(cfg.d_model, 1)
        self.setup()

    @staticmethod
    def interleave(tokens: Float[Tensor, "b k1 d1"]) -> Float[Tensor, "b p d1"]:
        """``(x_j, y_j)`` tokens -> ``x_1, y_1, ..., x_k, y_k, x_q`` (x: (x,0); y: (0,y))."""
        xs = torch.cat([tokens[..., :-1], torch.zeros_like(tokens[..., -1:])], -1)
        ys = torch.cat([torch.zeros_like(tokens[..., :-1]), tokens[..., -1:]], -1)
        pairs = einops.rearrange(torch.stack([xs, ys], 2), "b k two e -> b (k two) e")
        return pairs[:, :-1]  # drop the query's (0, 0) y token

    def predict_all(self, tokens: Float[Tensor, "b k1 d1"]) -> Float[Tensor, "b k1"]:
        """Entry ``j``: the prediction of ``y_j`` from the first ``j`` demonstrations (last: query)."""
        self.check_input(tokens)
        seq = self.interleave(tokens)
        x = self.hook_embed(self.read_in(seq)) + self.hook_pos_embed(self.W_pos[: seq.shape[1]])
        for block in self.blocks:
            x = block(x)
        out = self.read_out(self.ln_final(x))[..., 0]
        return out[:, 0::2]

    def forward(self, tokens: Float[Tensor, "b k1 d1"]) -> Float[Tensor, " b"]:
        return self.predict_all(tokens)[:, -1]


# ---------------------------------------------------------------------- training
LSA_CONFIG: dict[str, Any] = dict(d=10, n_layers=1, n_heads=1, d_model=11, d_head=11, d_mlp=0, max_k=20, kind="lsa")
GPT_CONFIG: dict[str, Any] = dict(d=5, n_layers=3, n_heads=4, d_model=64, d_head=16, d_mlp=128, max_k=10, kind="gpt")
EVAL_KS_LSA = (1, 2, 5, 10, 15, 20)
EVAL_KS_GPT = (0, 1, 2, 3, 4, 5, 6, 8, 10)


def train_lsa(seed: int = 0, steps: int | None = None, progress: bool = True,
              x_dist: XDist = "normal", batch: int = 2048, lr: float = 1e-3) -> TrainResult:
    """von Oswald's recipe: Adam lr 1e-3, batch 2048, MSE at the query; k ~ U{1..max_k}."""

    steps = steps or 3000
    config = {**LSA_CONFIG, "seed": seed}
    model = LinearSelfAttention.from_config(config)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    loss_val = float("nan")
    t0 = time.perf_counter()
    for _ in tqdm(range(steps), disable=not progress, desc="linreg-lsa-1l"):
        k = int(torch.randint(1, config["max_k"] + 1, (1,), generator=g))
        tasks = make_tasks(batch, k, config["d"], seed=int(torch.randint(0, 2**31, (1,), generator=g)),
                           x_dist=x_dist)
        loss = F.mse_loss(model(tokenize(tasks)), tasks.yq) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_val = float(loss.detach())
    model.eval()
    train_s = time.perf_counter() - t0
    metrics = evaluate(model, EVAL_KS_LSA, x_dist=x_dist)
    metrics["final_train_loss"] = round(loss_val, 5)
    metrics["train_loop_seconds"] = round(train_s, 1)
    return TrainResult(
        model=model, arch="module:experiments.models.zoo.linreg:LinearSelfAttention", config=config,
        task={"name": "linreg", "d": config["d"], "k": [1, config["max_k"]], "x_dist": x_dist,
              "w": "N(0, I)", "batch": batch, "optimizer": "Adam", "lr": lr,
              "loss": "1/2 MSE of y_q"},
        steps=steps, metrics=metrics,
        notes=("One linear self-attention layer (von Oswald et al. 2023). Compare with one GD step: "
               "experiments.studies.linreg_gd.compare_linreg (preds diff, sensitivity cosine vs GD)."),
    )


def train_gpt(seed: int = 0, steps: int | None = None, progress: bool = True,
              x_dist: XDist = "normal", batch: int = 64, lr: float = 1e-3,
              curriculum: float = 0.0) -> TrainResult:
    """Garg's recipe scaled down: MSE at every x position of 2d+1-point prompts, Adam + warmup/cosine.

    ``curriculum`` > 0: the task dimension grows from 1 to d over that fraction of the steps
    (coordinates beyond it are zero in x and w), as in Garg et al.'s curriculum."""

    steps = steps or 6000
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    config = {**GPT_CONFIG, "seed": seed}
    model = LinRegGPT.from_config(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    g = torch.Generator().manual_seed(seed)
    d, K = config["d"], config["max_k"]
    loss_val = float("nan")
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    for step in tqdm(range(steps), disable=not progress, desc="linreg-gpt"):
        tasks = make_tasks(batch, K, d, seed=int(torch.randint(0, 2**31, (1,), generator=g)),
                           x_dist=x_dist)
        d_eff = d
        if curriculum:  # Garg: start in a low-dimensional subspace, add a dimension at a time
            d_eff = min(d, 1 + int(d * step / (curriculum * steps)))
            tasks = _restrict_dims(tasks, d_eff)
        targets = torch.cat([tasks.ys, tasks.yq[:, None]], 1)
        loss = F.mse_loss(model.predict_all(tokenize(tasks)), targets) / d_eff
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_val = float(loss.detach())
        if step % 500 == 0 or step == steps - 1:
            curve.append((step, round(loss_val, 4)))
            if progress:
                print(f"step {step} loss {loss_val:.4f} t={time.perf_counter() - t0:.0f}s", flush=True)
    model.eval()
    train_s = time.perf_counter() - t0
    metrics = evaluate(model, EVAL_KS_GPT, x_dist=x_dist)
    metrics["final_train_loss"] = round(loss_val, 5)
    metrics["train_loop_seconds"] = round(train_s, 1)
    metrics["loss_curve"] = curve
    return TrainResult(
        model=model, arch="module:experiments.models.zoo.linreg:LinRegGPT", config=config,
        task={"name": "linreg", "d": d, "k": [0, K], "x_dist": x_dist, "w": "N(0, I)",
              "batch": batch, "optimizer": "AdamW", "lr": lr, "schedule": "5% warmup + cosine",
              "curriculum": curriculum,
              "loss": "MSE/d at every x position (Garg)"},
        steps=steps, metrics=metrics,
        notes=("Small Garg-style softmax transformer. ICL is real if error falls with k toward "
               "least squares (0 at k >= d) and below averaging / 3-NN: see metrics.error_vs_k."),
    )


def _restrict_dims(tasks: LinRegBatch, d_eff: int) -> LinRegBatch:
    """The same tasks living in the first ``d_eff`` coordinates (the rest zeroed)."""
    keep = (torch.arange(tasks.d) < d_eff).float()
    xs, xq, w = tasks.xs * keep, tasks.xq * keep, tasks.w * keep
    return LinRegBatch(xs=xs, ys=einops.einsum(xs, w, "b k d, b d -> b k"), xq=xq,
                       yq=einops.einsum(xq, w, "b d, b d -> b"), w=w, meta=tasks.meta)


def evaluate(model: LinRegModel, ks: tuple[int, ...], x_dist: XDist = "normal",
             n_tasks: int = 1024, seed: int = 1) -> dict[str, Any]:
    """Card metrics: squared error / d vs k beside the baselines (agreement with GD is a study:
    ``experiments.studies.linreg_gd.compare_linreg``)."""

    d = model.cfg.d
    ks = tuple(k for k in ks if k <= model.cfg.max_k and (k > 0 or model.cfg.kind == "gpt"))
    rows = error_vs_k({"model": model.predict}, d, ks, n_tasks=n_tasks, seed=seed,
                      x_dist=x_dist)
    table: dict[str, dict[str, float]] = {}
    for r in rows:
        table.setdefault(r["predictor"], {})[str(r["k"])] = round(r["error"], 5)
    out: dict[str, Any] = {"error_vs_k": table, "eval_tasks_per_k": n_tasks}
    return out


SPECS = {
    "linreg-lsa-1l": ZooSpec(
        name="linreg-lsa-1l",
        description="One linear self-attention layer (von Oswald 2023) trained on in-context "
                    "linear regression, d=10, k=1..20, x ~ N(0, I).",
        train=train_lsa,
    ),
    "linreg-gpt": ZooSpec(
        name="linreg-gpt",
        description="Small Garg-style softmax transformer (3 layers, d_model 64, MLPs) trained on "
                    "in-context linear regression, d=5, k=0..10, x ~ N(0, I).",
        train=train_gpt,
    ),
}
