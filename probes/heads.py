"""Head scores: layer x head tables computed from attention patterns on known prompts.

Every score function takes a model and returns a ``HeadScores`` (a [n_layers, n_heads] tensor plus
the tokens it was computed on). Patterns are captured with a hook that copies them, so no cache
handed in by a caller is ever modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass
class HeadScores:
    name: str
    scores: Float[Tensor, "layer head"]
    tokens: Int[Tensor, "batch pos"] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def top(self, n: int = 5) -> list[tuple[int, int, float]]:
        flat = self.scores.flatten()
        idx = flat.argsort(descending=True)[:n]
        H = self.scores.shape[1]
        return [(int(i) // H, int(i) % H, float(flat[i])) for i in idx]


def attention_patterns(model: torch.nn.Module, tokens: Tensor) -> Float[Tensor, "layer batch head q k"]:
    """All layers' attention patterns on ``tokens`` (a copy; only hook_pattern is kept)."""
    n_layers = model.cfg.n_layers
    out: list[Tensor | None] = [None] * n_layers

    def make_hook(layer: int):
        def hook(pattern: Tensor, hook: Any) -> None:
            out[layer] = pattern.detach().clone()
        return hook

    hooks = [(f"blocks.{l}.attn.hook_pattern", make_hook(l)) for l in range(n_layers)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(tokens)
    return torch.stack(out)  # type: ignore[arg-type]


def repeated_random_tokens(batch: int, seg_len: int, vocab: int, seed: int = 0,
                           bos: int | None = None, low: int = 0) -> Int[Tensor, "batch pos"]:
    """[BOS?] r r with r a random segment of ``seg_len`` tokens drawn from [low, vocab)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(low, vocab, (batch, seg_len), generator=g)
    toks = torch.cat([r, r], dim=1)
    if bos is not None:
        toks = torch.cat([torch.full((batch, 1), bos), toks], dim=1)
    return toks


def previous_token_scores(model: torch.nn.Module, tokens: Tensor) -> HeadScores:
    """Mean attention A[i, i-1] over positions i >= 1."""
    pat = attention_patterns(model, tokens)
    diag = pat.diagonal(offset=-1, dim1=-2, dim2=-1)  # [L, B, H, T-1]
    return HeadScores("previous_token", diag.mean(dim=(1, 3)), tokens)


def induction_scores(model: torch.nn.Module, seg_len: int = 20, batch: int = 16, seed: int = 0,
                     vocab: int | None = None, bos: int | None = None) -> HeadScores:
    """Attention from position t in the repeat to t - L + 1 (the token after t's earlier copy)."""
    vocab = vocab or model.cfg.d_vocab
    tokens = repeated_random_tokens(batch, seg_len, vocab, seed=seed, bos=bos)
    pat = attention_patterns(model, tokens)
    off = 1 if bos is not None else 0
    q = torch.arange(seg_len, 2 * seg_len) + off
    k = q - seg_len + 1
    vals = pat[:, :, :, q, k]  # [L, B, H, L_rep]
    return HeadScores("induction", vals.mean(dim=(1, 3)), tokens, {"seg_len": seg_len})
