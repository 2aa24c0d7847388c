"""Head scores read off the weights alone: the OV circuit's copying score (Olsson et al. 2022)
and K/Q/V composition between heads of different layers (Elhage et al. 2021), with the
random-matrix baseline that composition is measured against.

Both are computed on ``circuit_weights(model)``: one W_Q, W_K, W_V, W_O per *query* head, and W_U.

- Grouped-query attention (smollm2-135m: 9 query heads on 3 key/value heads; gemma3-270m: 4 on 1).
  The model stores one W_K/W_V per key/value head; query head h reads key/value head
  h // (n_heads / n_kv_heads) (``kv_head_of``; what TransformerLens's forward and its
  ``repeat_interleave`` do), so head h's OV circuit is W_V[kv(h)] W_O[h] and its QK circuit
  W_Q[h] W_K[kv(h)]^T. Scores of a GQA model equal those of the same model with its key/value heads
  repeated into a multi-head one.
- Norms (``fold_norms``, default on). A head reads the residual stream through its block's ``ln1``
  and, on Gemma 2/3, writes through the post-attention norm ``ln1_post`` (RMS of the attention
  output, times a gain); Gemma 3 also RMS-normalises each head's queries and keys (``q_norm``,
  ``k_norm``); the logits read through ``ln_final``. Each norm is y = J x / s(x) (+ bias) with
  a scalar s(x) > 0, and J = diag(gain) for RMSNorm (1 + weight on Gemma), diag(gain) C for
  LayerNorm (C removes the mean). Every score here is invariant to positive scalars, so J is
  exactly what the weights mean: it is folded in (W_V -> J_ln1^T W_V, W_O -> W_O J_post^T, W_U ->
  J_final^T W_U, W_Q -> J_ln1^T W_Q J_q^T, ...), as TransformerLens's ``fold_ln`` does for
  LayerNorm. J is measured by running the norm module itself (``norm_matrix``), so it follows
  whichever weight convention the module has. Where every residual reader centres (LayerNorm),
  the heads' writes are centred too (``center_writing_weights``). ``fold_norms=False`` scores the
  raw weights. The per-position scale s(x) (the one non-linearity) and rotary position embeddings
  (the QK circuit is the one at relative position 0) are left out, as in the papers.
- Embeddings. The copying score uses the token embedding as the model's embedding module makes
  it (Gemma multiplies W_E by sqrt(d_model): a scalar, which does not change the score, but does
  change ``effective_embedding``, which adds MLP0's output, through ``ln2_post`` where the block
  has one, to the scaled embedding).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from probes.heads import HeadScoreError, HeadScores
from probes.hooked import HookedModel


# ---------------------------------------------------------------------- per-query-head weights
def kv_head_of(n_heads: int, n_kv_heads: int) -> Int[Tensor, " n_heads"]:
    """The key/value head each query head reads: h // (n_heads / n_kv_heads)."""
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise HeadScoreError(f"{n_heads} query heads cannot share {n_kv_heads} key/value heads evenly "
                             f"(grouped-query attention needs n_heads to be a multiple of n_kv_heads)")
    return torch.arange(n_heads) // (n_heads // n_kv_heads)


def per_query_head(W: Float[Tensor, "layer kv *rest"], n_heads: int) -> Float[Tensor, "layer n_heads *rest"]:
    """A stacked key/value weight [L, n_kv_heads, ...] as one slice per query head [L, n_heads, ...]
    (a no-op where there are already n_heads)."""
    if W.shape[1] == n_heads:
        return W
    return W[:, kv_head_of(n_heads, W.shape[1])]


def norm_matrix(norm: Any, d: int, dtype: torch.dtype = torch.float32) -> Float[Tensor, "d d"] | None:
    """J^T of the norm module ``norm`` (y = J x / s(x) + b, s(x) > 0 a scalar), up to a positive
    scalar: row i is (norm(c e_i) - norm(-c e_i)) / 2c with c = sqrt(d) (every c e_i has the same
    RMS and, centred, the same norm, so s is the same for all i; b cancels). diag(gain) for RMSNorm,
    C diag(gain) for LayerNorm. None where there is no norm module, or it is a positive multiple of the identity."""
    if norm is None or isinstance(norm, torch.nn.Identity):
        return None
    c = math.sqrt(d)
    with torch.no_grad():
        try:  # in float32 where the module takes it (a bfloat16 norm upcasts anyway)
            x = torch.eye(d)[None] * c
            J_T = (norm(x) - norm(-x))[0].float() / (2 * c)
        except RuntimeError:  # a module that insists on its own dtype
            x = x.to(dtype)
            J_T = (norm(x) - norm(-x))[0].float() / (2 * c)
    if J_T.shape != (d, d):
        raise HeadScoreError(f"the norm {type(norm).__name__} maps {d} dimensions to {tuple(J_T.shape)}")
    scale = J_T.diagonal().mean()
    identity = scale > 0 and torch.allclose(J_T / scale, torch.eye(d), rtol=0, atol=1e-5)
    return None if identity else J_T  # a positive multiple of the identity changes no score


@dataclass
class CircuitWeights:
    """One weight per query head, norms folded in (``circuit_weights``): W_Q, W_K, W_V [L, H, d, dh],
    W_O [L, H, dh, d], W_U [d, vocab_out]; ``info`` says what was folded."""

    W_Q: Float[Tensor, "layer head d dh"]
    W_K: Float[Tensor, "layer head d dh"]
    W_V: Float[Tensor, "layer head d dh"]
    W_O: Float[Tensor, "layer head dh d"]
    W_U: Float[Tensor, "d vocab"]
    info: dict[str, Any] = field(default_factory=dict)


def circuit_weights(model: HookedModel, fold_norms: bool = True) -> CircuitWeights:
    """The weights the circuit scores read, in float32: key/value weights mapped to query heads
    (``kv_head_of``) and, with ``fold_norms``, the norms around each head folded in (module
    docstring)."""
    W_Q, W_O = model.W_Q.detach().float(), model.W_O.detach().float()
    L, H, d, _ = W_Q.shape
    W_K_raw, W_V_raw = model.W_K.detach().float(), model.W_V.detach().float()
    n_kv = int(W_K_raw.shape[1])
    if W_V_raw.shape[1] != n_kv:
        raise HeadScoreError(f"W_K has {n_kv} heads but W_V {W_V_raw.shape[1]}")
    W_K, W_V = per_query_head(W_K_raw, H), per_query_head(W_V_raw, H)
    W_U = model.W_U.detach().float()
    info: dict[str, Any] = {"fold_norms": fold_norms, "n_kv_heads": n_kv, "folded": [], "centred_writes": False}
    if not fold_norms:
        return CircuitWeights(W_Q, W_K, W_V, W_O, W_U, info)
    dtype = model.W_Q.dtype
    folded: set[str] = set()

    def fold(name: str, module: Any, dim: int) -> Tensor | None:
        J_T = norm_matrix(module, dim, dtype)
        if J_T is not None:
            folded.add(name)
        return J_T

    reads_centred = []
    qs, ks, vs, os = [], [], [], []
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        ln1 = fold("ln1", getattr(block, "ln1", None), d)
        post = fold("ln1_post", getattr(block, "ln1_post", None), d)
        qn = fold("q_norm", getattr(attn, "q_norm", None), W_Q.shape[-1])
        kn = fold("k_norm", getattr(attn, "k_norm", None), W_K.shape[-1])
        q, k, v, o = W_Q[layer], W_K[layer], W_V[layer], W_O[layer]
        if ln1 is not None:
            q, k, v = ln1 @ q, ln1 @ k, ln1 @ v
        qs.append(q if qn is None else q @ qn)
        ks.append(k if kn is None else k @ kn)
        vs.append(v)
        os.append(o if post is None else o @ post)
        reads_centred.append(ln1 is not None and _annihilates_mean(ln1))
    ln_f = fold("ln_final", getattr(model, "ln_final", None), d)
    if ln_f is not None:
        W_U = ln_f @ W_U
    Wo = torch.stack(os)
    # every reader of the residual stream removes its mean: so do the writes (center_writing_weights)
    if all(reads_centred) and ln_f is not None and _annihilates_mean(ln_f):
        Wo = Wo - Wo.mean(dim=-1, keepdim=True)
        info["centred_writes"] = True
    info["folded"] = sorted(folded)
    return CircuitWeights(torch.stack(qs), torch.stack(ks), torch.stack(vs), Wo, W_U, info)


def _annihilates_mean(J_T: Tensor) -> bool:
    """Whether the norm maps the all-ones direction to zero (a LayerNorm's centring)."""
    return bool(J_T.sum(dim=0).abs().max() <= 1e-4 * J_T.abs().max())


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


def _embedding_chunks(model: HookedModel, effective: bool, chunk: int = 8192) -> Iterator[Tensor]:
    """The token embedding in chunks of rows (float32): W_E, or with ``effective`` the embedding
    module's output (Gemma's scaled one) plus block 0's MLP of it."""
    if effective and getattr(model.cfg, "attn_only", False):
        raise HeadScoreError("effective_embedding needs block 0's MLP, but the model is "
                             "attention-only; use the raw W_E (effective_embedding=False)")
    if not effective:
        W_E = model.W_E.detach()
        for start in range(0, W_E.shape[0], chunk):
            yield W_E[start:start + chunk].float()
        return
    block = model.blocks[0]
    ln2, post = getattr(block, "ln2", None), getattr(block, "ln2_post", None)
    vocab = int(model.W_E.shape[0])
    with torch.no_grad():
        for start in range(0, vocab, chunk):
            x = model.embed(torch.arange(start, min(vocab, start + chunk))[None])
            out = block.mlp(ln2(x) if ln2 is not None else x)
            if post is not None:
                out = post(out)
            yield (x + out)[0].float()


def effective_embedding(model: HookedModel) -> Float[Tensor, "vocab d"]:
    """The token embedding as layer-0 MLP leaves it (for GPT-2-like models): x + MLP0(LN2(x)), with
    x the embedding module's output (W_E, times sqrt(d_model) on Gemma) and MLP0's output through
    ``ln2_post`` where the block has one (Gemma 2/3). Attention 0 is left out, by convention."""
    return torch.cat(list(_embedding_chunks(model, effective=True)))


def copying_scores(model: HookedModel, effective: bool = False, fold_norms: bool = True) -> HeadScores:
    """OV copying score of every (query) head (A4b); ``effective`` uses the effective embedding;
    ``fold_norms`` folds the norms around the heads in (module docstring)."""
    cw = circuit_weights(model, fold_norms)
    vocab = int(model.W_E.shape[0])
    if cw.W_U.shape[1] != vocab:
        raise HeadScoreError(f"the OV circuit needs d_vocab_out == d_vocab ({cw.W_U.shape[1]} != "
                             f"{vocab}); the copying score is undefined for this model")
    P = torch.zeros(cw.W_U.shape[0], model.W_E.shape[1])
    start = 0
    for rows in _embedding_chunks(model, effective):
        P += cw.W_U[:, start:start + rows.shape[0]] @ rows  # W_U W_E, [d, d]
        start += rows.shape[0]
    small = cw.W_O @ P @ cw.W_V  # [L, H, dh, dh]
    L, H = small.shape[:2]
    scores = torch.stack([torch.stack([_copy_from_small(small[l, h]) for h in range(H)])
                          for l in range(L)])
    return HeadScores("copying_effective" if effective else "copying", scores, None,
                      {"effective_embedding": effective, **cw.info})


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
    """Mean composition score of random pairs of rank-d_head d_model x d_model matrices, each a
    product of two kaiming-uniform [d_model, d_head] factors (A6). Every head's W_OV and W_QK has
    this shape and rank at most d_head, grouped-query or not (a shared key/value head still gives
    each query head its own rank-d_head circuit)."""
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
                       n_random: int = 300, seed: int = 0, fold_norms: bool = True) -> Float[Tensor, "l1 h1 l2 h2"]:
    """Composition of earlier head (l1, h1) into later head (l2, h2) (A6); NaN where l1 >= l2.

    comp(A, B) = ||A B||_F / (||A||_F ||B||_F) with A = W_OV[l1, h1] and B = W_QK[l2, h2]^T
    (``kind="k"``), W_QK[l2, h2] (``"q"``) or W_OV[l2, h2] (``"v"``), minus the mean over
    ``n_random`` random pairs of the same shape and rank (``composition_baseline``) when
    ``subtract_baseline``. Heads are query heads, on ``circuit_weights(model, fold_norms)``.
    """
    if kind not in ("q", "k", "v"):
        raise HeadScoreError(f"kind must be 'q', 'k' or 'v', got {kind!r}")
    cw = circuit_weights(model, fold_norms)
    AL, AR = cw.W_V, cw.W_O  # W_OV = AL AR: [L, H, d, dh], [L, H, dh, d]
    if kind == "v":
        BL, BR = AL, AR
    elif kind == "q":  # W_QK = W_Q W_K^T
        BL, BR = cw.W_Q, cw.W_K.transpose(-1, -2)
    else:  # W_QK^T = W_K W_Q^T
        BL, BR = cw.W_K, cw.W_Q.transpose(-1, -2)
    L, H, d, dh = AL.shape
    norm_A, norm_B = _frob(AL, AR), _frob(BL, BR)  # [L, H]
    comp = torch.full((L, H, L, H), torch.nan)
    for l1 in range(L - 1):  # one earlier layer at a time: [H, L - l1 - 1, H, dh, dh] in memory
        num = _frob_product(AL[l1, :, None, None], AR[l1, :, None, None], BL[None, l1 + 1:], BR[None, l1 + 1:])
        comp[l1, :, l1 + 1:] = num / (norm_A[l1][:, None, None] * norm_B[None, l1 + 1:])
    if subtract_baseline:
        comp = comp - composition_baseline(d, min(d, dh), n_random, seed)
    return comp


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
