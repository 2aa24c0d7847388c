"""Shared test set-up: no hub access, deterministic torch, small thread pool."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_grad_enabled(True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def tiny_bridge(n_layers: int = 2, n_heads: int = 4, d_model: int = 32, d_vocab: int = 50,
                n_ctx: int = 64, attn_only: bool = True, seed: int = 0):
    """A small random-init TransformerBridge (offline, fast)."""
    from experiments.zoo import build_model

    return build_model("bridge-native", dict(
        d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_head=d_model // n_heads,
        n_ctx=n_ctx, d_vocab=d_vocab, attn_only=attn_only, act_fn="gelu",
        normalization_type="LN", seed=seed, **({} if attn_only else {"d_mlp": 4 * d_model}),
    ))


@pytest.fixture
def bridge():
    return tiny_bridge()
