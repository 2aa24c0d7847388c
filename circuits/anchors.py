"""Label words as anchors (Wang et al. 2023): attention saliency and the three information flows.

Saliency of layer l on one prompt: ``I_l = |sum_h A_h * dL/dA_h|`` (elementwise product of the
attention pattern and the gradient of the loss w.r.t. it, summed over heads, absolute value), with
the diagonal zeroed. ``A`` is read (and differentiated) at ``blocks.{l}.attn.hook_pattern``; ``L``
is the cross-entropy of the correct token (``batch.target``) at the read-out position s_q.

Flows, with p_k the label-word positions (``batch.label``), q the read-out position and only
positions 0..q counted (the right padding is ignored):

- ``S_wp = sum_k sum_{j<p_k} I(p_k, j) / sum_k p_k``      text -> label words
- ``S_pq = sum_k I(q, p_k) / C``                          label words -> read-out (C label words)
- ``S_ww = (sum_{j<i<=q} I(i, j) - both numerators) / (q(q+1)/2 - sum_k p_k - C)``   the rest

Wang et al. find S_wp dominating in shallow layers and S_pq in deep layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from probes.hooked import HookedModel
from probes.prompt import PromptBatch, PromptError
from probes.readout import check_fits

FLOWS: tuple[str, ...] = ("S_wp", "S_pq", "S_ww")


def attention_saliency(model: HookedModel, batch: PromptBatch,
                       layers: Sequence[int] | None = None) -> Float[Tensor, "layer batch q k"]:
    """``|sum_h A * dL/dA|`` per layer and prompt, diagonal zeroed (see the module docstring).

    The loss is summed over rows; each row's loss depends only on its own row, so each row's
    saliency equals that of a run on that prompt alone."""
    check_fits(model, batch)
    if batch.target is None or (batch.target < 0).any():
        raise PromptError("saliency needs batch.target (the correct read-out token) on every row")
    batch = batch.trim()
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    store: dict[int, Tensor] = {}

    def make(layer: int) -> Callable[..., Tensor]:
        def hook(pattern: Tensor, hook: Any) -> Tensor:
            store[layer] = pattern
            return pattern
        return hook

    hooks = [(f"blocks.{l}.attn.hook_pattern", make(l)) for l in layers]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(batch.tokens)
        rows = torch.arange(batch.batch_size)
        assert batch.target is not None  # checked on entry
        loss = torch.nn.functional.cross_entropy(
            logits[rows, batch.readout].float(), batch.target, reduction="sum")
        # gradients w.r.t. the patterns only: no weight gradients are computed or stored
        grads = torch.autograd.grad(loss, [store[l] for l in layers], allow_unused=True)
    out = []
    T = batch.seq_len
    eye = torch.eye(T, dtype=torch.bool)
    for l, G in zip(layers, grads):
        A = store[l].detach()
        G = torch.zeros_like(A) if G is None else G
        sal = (A * G).sum(1).abs().float()  # [batch, q, k]
        out.append(sal.masked_fill(eye, 0.0))
    return torch.stack(out)


def flows(saliency: Float[Tensor, "... q k"], label_pos: Int[Tensor, " C"] | Sequence[int],
          readout: int) -> dict[str, Tensor]:
    """S_wp, S_pq, S_ww of one prompt's saliency matrix (any leading axes, e.g. layer).

    ``label_pos`` are the label-word positions p_k, ``readout`` the position q. Pure function."""
    p = torch.as_tensor(label_pos, dtype=torch.long).flatten()
    q = int(readout)
    if len(p) == 0:
        raise PromptError("label-word flows need at least one demonstration label")
    if (p >= q).any() or (p < 1).any():
        raise PromptError(f"label positions {p.tolist()} must lie in 1..{q - 1} (before the read-out)")
    I = saliency[..., : q + 1, : q + 1].float()
    n = q + 1
    lower = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)
    I = I * lower  # strictly lower triangle: j < i <= q
    C = len(p)
    wp = I[..., p, :].sum((-1, -2))
    pq = I[..., q, p].sum(-1)
    total = I.sum((-1, -2))
    n_wp = float(p.sum())
    n_ww = q * (q + 1) / 2 - n_wp - C
    return {
        "S_wp": wp / n_wp,
        "S_pq": pq / C,
        "S_ww": (total - wp - pq) / n_ww if n_ww > 0 else torch.zeros_like(total),
    }


def batch_flows(saliency: Float[Tensor, "layer batch q k"], batch: PromptBatch) -> Float[Tensor, "layer batch 3"]:
    """Flows (S_wp, S_pq, S_ww in that order) for every layer and prompt of ``batch``."""
    out = []
    for b in range(batch.batch_size):
        f = flows(saliency[:, b], batch.label[b][batch.demo_mask[b]], int(batch.readout[b]))
        out.append(torch.stack([f[name] for name in FLOWS], -1))
    return torch.stack(out, 1)


def anchor_flows(model: HookedModel, batch: PromptBatch) -> Float[Tensor, "layer batch 3"]:
    """Saliency then flows, for every layer and prompt."""
    return batch_flows(attention_saliency(model, batch), batch.trim())
