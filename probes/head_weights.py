"""Head scores read off the weights alone: the OV circuit's copying score (Olsson et al. 2022)
and K/Q/V composition between heads of different layers (Elhage et al. 2021), with the
random-matrix baseline that composition is measured against."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from probes.heads import HeadScoreError, HeadScores
from probes.hooked import HookedModel


# ---------------------------------------------------------------------- weight-based scores
def ov_copying_score(W_E: Float[Tensor, "vocab d"], W_V: Float[Tensor, "d dh"],
                     W_O: Float[Tensor, "dh d"], W_U: Float[Tensor, "d vocab"]) -> float:
    """sum(Re eig) / sum(|eig|) of the full OV circuit W_E W_V W_O W_U (A4b).

    The non-zero eigenvalues of (W_E W_V)(W_O W_U) are those of the small d_head x d_head matrix
    W_O (W_U W_E) W_V, computed in float32. 1 = pure copying, -1 = pure anti-copying.
    """
    P = W_U.float() @ W_E.float()
    return float(_copy_from_small(W_O.float() @ P @ W_V.float()))


def _copy_from_small(M: Float[Tensor, "dh dh"]) -> Tensor:
    eig = torch.linalg.eigvals(M.float())
    denom = eig.abs().sum()
    return eig.real.sum() / denom if denom > 0 else torch.tensor(0.0)


def effective_embedding(model: HookedModel) -> Float[Tensor, "vocab d"]:
    """W_E + MLP0(LN2(W_E)): the token embedding as layer-0 MLP leaves it (for GPT-2-like models)."""
    if getattr(model.cfg, "attn_only", False):
        raise HeadScoreError("effective_embedding needs block 0's MLP, but the model is "
                             "attention-only; use the raw W_E (effective_embedding=False)")
    block = model.blocks[0]
    with torch.no_grad():
        x = model.W_E.detach()[None]
        ln = getattr(block, "ln2", None)
        h = ln(x) if ln is not None else x
        return (x + block.mlp(h))[0]


def copying_scores(model: HookedModel, effective: bool = False) -> HeadScores:
    """OV copying score of every head (A4b); ``effective`` uses W_E + MLP0(W_E)."""
    W_E = effective_embedding(model) if effective else model.W_E.detach()
    W_U = model.W_U.detach()
    if W_U.shape[1] != W_E.shape[0]:
        raise HeadScoreError(f"the OV circuit needs d_vocab_out == d_vocab ({W_U.shape[1]} != "
                             f"{W_E.shape[0]}); the copying score is undefined for this model")
    P = W_U.float() @ W_E.float()  # [d, d]
    W_V, W_O = model.W_V.detach().float(), model.W_O.detach().float()
    L, H = W_V.shape[:2]
    small = W_O @ P @ W_V  # [L, H, dh, dh]
    scores = torch.stack([torch.stack([_copy_from_small(small[l, h]) for h in range(H)])
                          for l in range(L)])
    return HeadScores("copying_effective" if effective else "copying", scores, None,
                      {"effective_embedding": effective})


def _factors(model: HookedModel, kind: str) -> tuple[Tensor, Tensor]:
    """Left/right factors [L, H, d, r], [L, H, r, d] of W_OV (= W_V W_O) or W_QK (= W_Q W_K^T)."""
    if kind == "ov":
        return model.W_V.detach().float(), model.W_O.detach().float()
    W_K = model.W_K.detach().float()
    if W_K.shape[1] != model.W_Q.shape[1]:
        raise HeadScoreError("composition scores need one key head per query head (no GQA)")
    return model.W_Q.detach().float(), W_K.transpose(-1, -2)


def _frob_product(AL: Tensor, AR: Tensor, BL: Tensor, BR: Tensor) -> Tensor:
    """||AL AR BL BR||_F for broadcastable stacks, through r x r Gram matrices:
    ||P M R||^2 = tr((P^T P) M (R R^T) M^T) with M = AR BL."""
    M = AR @ BL
    GA = AL.transpose(-1, -2) @ AL
    GB = BR @ BR.transpose(-1, -2)
    return ((GA @ M @ GB) * M).sum(dim=(-1, -2)).clamp(min=0).sqrt()


def _frob(L_: Tensor, R: Tensor) -> Tensor:
    return ((L_.transpose(-1, -2) @ L_) * (R @ R.transpose(-1, -2))).sum(dim=(-1, -2)).clamp(min=0).sqrt()


@functools.lru_cache(maxsize=32)
def composition_baseline(d_model: int, d_head: int, n: int = 300, seed: int = 0) -> float:
    """Mean composition score of random rank-d_head matrix pairs (kaiming-uniform factors, A6)."""
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d_head)  # kaiming_uniform_(a=sqrt(5)) on a [d_model, d_head] tensor
    total, chunk = 0.0, 25
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        f = (torch.rand(4, k, d_model, d_head, generator=g) * 2 - 1) * bound
        AL, AR, BL, BR = f[0], f[1].transpose(-1, -2), f[2], f[3].transpose(-1, -2)
        total += float((_frob_product(AL, AR, BL, BR) / (_frob(AL, AR) * _frob(BL, BR))).sum())
    return total / n


def composition_scores(model: HookedModel, kind: str = "k", subtract_baseline: bool = True,
                       n_random: int = 300, seed: int = 0) -> Float[Tensor, "l1 h1 l2 h2"]:
    """Composition of earlier head (l1, h1) into later head (l2, h2) (A6); NaN where l1 >= l2.

    comp(A, B) = ||A B||_F / (||A||_F ||B||_F) with A = W_OV[l1, h1] and B = W_QK[l2, h2]^T
    (``kind="k"``), W_QK[l2, h2] (``"q"``) or W_OV[l2, h2] (``"v"``), minus the mean over
    ``n_random`` random low-rank pairs when ``subtract_baseline``.
    """
    if kind not in ("q", "k", "v"):
        raise HeadScoreError(f"kind must be 'q', 'k' or 'v', got {kind!r}")
    AL, AR = _factors(model, "ov")  # [L, H, d, dh], [L, H, dh, d]
    if kind == "v":
        BL, BR = AL, AR
    else:
        QL, QR = _factors(model, "qk")  # W_QK = QL QR
        BL, BR = (QL, QR) if kind == "q" else (QR.transpose(-1, -2), QL.transpose(-1, -2))
    L, H = AL.shape[:2]
    num = _frob_product(AL[:, :, None, None], AR[:, :, None, None], BL[None, None], BR[None, None])
    comp = num / (_frob(AL, AR)[:, :, None, None] * _frob(BL, BR)[None, None])
    if subtract_baseline:
        comp = comp - composition_baseline(AL.shape[2], AL.shape[3], n_random, seed)
    later = torch.arange(L)[:, None] < torch.arange(L)[None, :]  # [l1, l2]
    return torch.where(later[:, None, :, None].expand(L, H, L, H), comp, torch.nan)


def k_composition_scores(model: HookedModel, **kw: Any) -> Float[Tensor, "l1 h1 l2 h2"]:
    """K-composition (``composition_scores(kind="k")``): how much head (l2, h2)'s keys read
    head (l1, h1)'s output; the previous-token -> induction link."""
    return composition_scores(model, kind="k", **kw)


def max_composition_into(comp: Float[Tensor, "l1 h1 l2 h2"], name: str = "k_composition") -> HeadScores:
    """For every later head, the strongest composition from any earlier head (NaN in layer 0)."""
    L, H = comp.shape[:2]
    flat = torch.nan_to_num(comp.reshape(L * H, L, H), nan=-math.inf).max(dim=0).values
    scores = torch.where(torch.isinf(flat), torch.nan, flat)
    arg = torch.nan_to_num(comp.reshape(L * H, L, H), nan=-math.inf).argmax(dim=0)
    return HeadScores(name, scores, None, {"source": [[(int(a) // H, int(a) % H) for a in row]
                                                      for row in arg]})
