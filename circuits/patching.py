"""Activation patching (batched, exact) and attribution patching (first-order, one backward).

Both return a [n_layers, n_heads] table of the change in a scalar metric when head (l, h)'s output
``hook_z`` at the chosen positions is replaced by its value in a source run (or by zero / the mean):

- ``activation_patching``: metric(patched target run) - metric(target run), one intervention per
  head, evaluated by ``circuits.sweeps.sweep`` (batched along the batch axis).
- ``attribution_patching``: the first-order estimate sum_{b,pos,d} (z_src - z_tgt) * d metric / d z_tgt
  from one forward on the source, one forward and one backward on the target, for all heads at once.
  It equals activation patching exactly when the metric is linear in the patched activation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.interventions import InterventionError, ablate, compile_edits, patch, role_positions, source_values
from circuits.sweeps import Metric, readout_forward, sweep
from probes.prompt import PromptBatch
from probes.readout import candidate_logits, predictions


# ---------------------------------------------------------------------- metrics
def target_logprob(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> Tensor:
    """Mean log-probability of the correct label among the candidates (the paper's label softmax)."""
    if batch.target is None:
        raise InterventionError("this metric needs batch.target (the correct read-out token)")
    cl = candidate_logits(logits, batch).log_softmax(-1)
    assert batch.candidates is not None  # candidate_logits raised otherwise
    idx = torch.eq(batch.candidates, batch.target[:, None]).float().argmax(-1)
    return cl.gather(1, idx[:, None]).mean()


def logit_diff(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> Tensor:
    """Mean over prompts of (target logit - mean logit of the other candidates); linear in the logits."""
    if batch.target is None or batch.candidates is None:
        raise InterventionError("logit_diff needs batch.target and batch.candidates")
    cl = candidate_logits(logits, batch)
    is_t = batch.candidates == batch.target[:, None]
    other = (batch.candidates >= 0) & ~is_t
    t = (cl * is_t).sum(-1)
    o = torch.where(other, cl, torch.zeros_like(cl)).sum(-1) / other.sum(-1).clamp(min=1)
    return (t - o).mean()


def correct_metric(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> Float[Tensor, " batch"]:
    """1.0 for each prompt whose prediction is the target, else 0.0 (the per-prompt outcome that
    paired tests and intervals resample; ``accuracy_metric`` is its mean)."""
    if batch.target is None:
        raise InterventionError("this metric needs batch.target (the correct read-out token)")
    return torch.eq(predictions(logits, batch), batch.target).float()


def accuracy_metric(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> Tensor:
    """Share of prompts whose prediction is the target: arg-max over the candidates when the batch
    has them, else over the whole vocabulary (not differentiable)."""
    return correct_metric(logits, batch).mean()


# ---------------------------------------------------------------------- activation patching
def head_interventions(model: Any, source: str = "patch", roles: Sequence[str] = ()) -> list:
    """One z-intervention per head (layer-major): patch from the source run, or zero/mean ablate."""
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    if source == "patch":
        return [patch("z", l, h, roles) for l in range(L) for h in range(H)]
    return [ablate(l, h, source, roles) for l in range(L) for h in range(H)]


def activation_patching(model: Any, target: PromptBatch, metric: Metric,
                        source: PromptBatch | None = None, mode: str = "patch",
                        roles: Sequence[str] = (), max_rows: int = 512) -> Float[Tensor, "layer head"]:
    """Change in ``metric`` when each head's z (at ``roles``; all positions if empty) is patched.

    ``mode="patch"`` copies from ``source``; ``"zero"`` / ``"mean"`` ablate instead.
    """
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    ivs = head_interventions(model, mode, roles)
    with torch.no_grad():
        base = metric(readout_forward(model, target.trim().tokens, target.readout), target)
        vals = sweep(model, target, ivs, metric, source=source, max_rows=max_rows)
    return (vals - base).reshape(L, H)


def attribution_patching(model: Any, target: PromptBatch, metric: Metric,
                         source: PromptBatch | None = None, mode: str = "patch",
                         roles: Sequence[str] = ()) -> Float[Tensor, "layer head"]:
    """First-order estimate of ``activation_patching`` for every head from one backward pass."""
    target = target.trim()
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    # values to patch in: reuse the intervention engine's source values (one forward on the source)
    probe = [patch("z", l, None, roles) if mode == "patch" else ablate(l, None, mode, roles) for l in range(L)]
    edits = [e for iv in probe for e in compile_edits(model, iv, target)]
    src_vals = source_values(model, edits, target, source=source)
    kind = "patch" if mode == "patch" else mode
    acts: dict[str, Tensor] = {}

    def make(name: str) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            x.retain_grad()
            acts[name] = x
            return x
        return hook

    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, make(n)) for n in names]):
        logits = model(target.tokens)
        m = metric(logits[torch.arange(target.batch_size), target.readout], target)
        m.backward()
    pos = role_positions(target, roles).to(torch.float32)[:, :, None, None]
    out = torch.zeros(L, H)
    for l, n in enumerate(names):
        z = acts[n].detach()
        grad = acts[n].grad
        if grad is None:
            grad = torch.zeros_like(z)
        src = torch.zeros_like(z) if kind == "zero" else src_vals[(n, kind)].to(z.dtype).expand_as(z)
        out[l] = ((src - z) * grad * pos).sum((0, 1, 3)).detach()
    model.zero_grad(set_to_none=True)
    return out
