"""Reading a model's prediction at each prompt's read-out position, and scoring it.

These are the shared scoring functions of every layer: an ablation, a patch, a steering vector or a
fine-tuned copy is judged by the same ``readout_logits`` and ``accuracy``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from probes.hooked import HookedModel
from probes.prompt import PromptBatch, PromptError

FwdHook = tuple[str | Callable[[str], bool], Callable[..., Any]]


def check_fits(model: HookedModel, batch: PromptBatch, what: str = "the read-out") -> None:
    """Raise PromptError if the batch is empty, a prompt is longer than the model's context, or a
    token lies outside its vocabulary."""
    batch.require_rows(what)
    cfg = getattr(model, "cfg", None)
    n_ctx = getattr(cfg, "n_ctx", None)
    if n_ctx is not None:
        batch.validate(n_ctx=int(n_ctx))
    d_vocab = getattr(cfg, "d_vocab", None)
    if d_vocab is not None and int(d_vocab) > 0:
        batch.check_vocab(int(d_vocab))


def forward_logits(model: HookedModel, batch: PromptBatch,
                   fwd_hooks: Sequence[FwdHook] = ()) -> Float[Tensor, "batch pos vocab"]:
    """Full logits of a forward pass (hooks applied and always removed)."""
    check_fits(model, batch)
    if fwd_hooks:
        with model.hooks(fwd_hooks=list(fwd_hooks)):
            return model(batch.tokens)
    return model(batch.tokens)


def readout_logits(model: HookedModel, batch: PromptBatch,
                   fwd_hooks: Sequence[FwdHook] = ()) -> Float[Tensor, "batch vocab"]:
    """Logits at each row's read-out position s_q."""
    logits = forward_logits(model, batch, fwd_hooks)
    return logits[torch.arange(batch.batch_size), batch.readout]


def candidate_logits(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> Float[Tensor, "batch n_cand"]:
    """Logits restricted to each row's candidate tokens (-inf at padded candidate slots)."""
    if batch.candidates is None:
        raise PromptError("this batch has no candidates (label set); use full-vocabulary accuracy")
    cand = batch.candidates
    out = logits.gather(1, cand.clamp(min=0))
    return out.masked_fill(cand < 0, float("-inf"))


def predictions(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> Tensor:
    """Predicted token per row: argmax over the candidates if the batch has them, else the vocab."""
    if batch.candidates is not None:
        idx = candidate_logits(logits, batch).argmax(-1)
        return batch.candidates.gather(1, idx[:, None]).squeeze(1)
    return logits.argmax(-1)


def accuracy(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> float:
    """Share of rows whose prediction equals ``batch.target``."""
    if batch.target is None or (batch.target < 0).any():
        raise PromptError("accuracy needs batch.target (the correct read-out token) on every row")
    return float((predictions(logits, batch) == batch.target).float().mean())


def label_distribution(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> Float[Tensor, "batch n_cand"]:
    """Softmax over the candidate labels only (the paper's prediction rule)."""
    return candidate_logits(logits, batch).softmax(-1)


def model_accuracy(model: HookedModel, batch: PromptBatch, fwd_hooks: Sequence[FwdHook] = (),
                   batch_size: int = 64) -> float:
    """Accuracy of ``model`` on ``batch`` (in chunks), with optional hooks."""
    check_fits(model, batch, "model_accuracy")
    correct = 0.0
    with torch.no_grad():
        for part in batch.batches(batch_size):
            correct += accuracy(readout_logits(model, part.trim(), fwd_hooks), part) * len(part)
    return correct / len(batch)
