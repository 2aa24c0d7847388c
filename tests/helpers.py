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


def check_resume_skips_blocks(model: torch.nn.Module, tokens: torch.Tensor, start: int) -> None:
    """Resuming at block ``start`` computes only blocks >= start and gives the full forward's
    read-out logits; afterwards every block runs again and the model is unchanged.

    TransformerBridge's own ``start_at_layer`` still runs the blocks below (and discards them), so
    the count of attention calls is what tells skipping from resuming in name only.
    """
    from circuits import sweeps

    calls: list[int] = []
    handles = [block.attn.register_forward_hook(lambda mod, a, out, i=i: calls.append(i))
               for i, block in enumerate(model.blocks)]
    readout = torch.full((tokens.shape[0],), tokens.shape[1] - 1)
    try:
        with torch.no_grad():
            full = sweeps.readout_forward(model, tokens, readout)
            assert calls == list(range(len(model.blocks)))
            resid = sweeps.capture_sites(model, tokens, {f"blocks.{start}.hook_resid_pre"})
            assert sweeps.can_resume(model)
            calls.clear()
            resumed = sweeps.readout_forward(model, tokens, readout, resid=resid[f"blocks.{start}.hook_resid_pre"],
                                             start_at_layer=start)
            assert calls == list(range(start, len(model.blocks)))
            torch.testing.assert_close(resumed, full, atol=1e-5, rtol=1e-4)
            calls.clear()
            again = sweeps.readout_forward(model, tokens, readout)
            assert calls == list(range(len(model.blocks)))
            torch.testing.assert_close(again, full, atol=0, rtol=0)
    finally:
        for h in handles:
            h.remove()
    assert not any("forward" in vars(getattr(b, "original_component", None) or b) for b in model.blocks)
