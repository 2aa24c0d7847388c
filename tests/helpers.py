"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import torch

from experiments.models.zoo import build_model


def tiny_bridge(n_layers: int = 2, n_heads: int = 4, d_model: int = 32, d_vocab: int = 50,
                n_ctx: int = 64, attn_only: bool = True, seed: int = 0) -> torch.nn.Module:
    """A small random-init TransformerBridge (offline, fast)."""
    return build_model("bridge-native", dict(
        d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_head=d_model // n_heads,
        n_ctx=n_ctx, d_vocab=d_vocab, attn_only=attn_only, act_fn="gelu",
        normalization_type="LN", seed=seed, **({} if attn_only else {"d_mlp": 4 * d_model}),
    ))
