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


def circuit_rows(outcomes: dict[str, "list[float] | object"], window: str = "0-1") -> "object":
    """A circuit unit's table (ablation step) from per-prompt 0/1 outcomes per condition
    (``unablated``, ``zero_shot``, each knockout and ``<knockout>:random``)."""
    import numpy as np
    import pandas as pd

    rows = []
    for name, v in outcomes.items():
        v = np.asarray(v, dtype=float)
        base = {"step": "ablation", "layer": -1, "head": -1, "metric": f"acc:{name}", "sd": float("nan"),
                "window": window, "n_prompts": len(v)}
        rows.append({**base, "value": float(v.mean()), "prompt": -1})
        rows += [{**base, "value": float(x), "prompt": i} for i, x in enumerate(v)]
    return pd.DataFrame(rows)


def store_with_superseded(root) -> "tuple[object, str, str]":
    """A results store holding two runs of one circuit cell (model "m", task "classify", k 4,
    seed 0): a 128-prompt run (unablated accuracy 0.75, knockout ``yi_to_sq`` 0.25 against a
    control at 0.75) computed first, and a 32-prompt pilot (unablated 0.5, no knockout effect)
    computed later, both by the running code. Returns (store, key of the 128-prompt unit, key of
    the 32-prompt unit): every reader must show the 128-prompt numbers."""
    import numpy as np

    from experiments.runs.analyses import get_analysis
    from experiments.runs.config import Unit
    from experiments.runs.store import ResultsStore

    store = ResultsStore(root)
    prov = {**get_analysis("circuit").fingerprint(), "model_hash": "unknown", "wall_time_s": 1.0}

    def ok(n: int, m: int) -> "np.ndarray":
        return np.r_[np.ones(m), np.zeros(n - m)]

    big = Unit("m", "classify", 4, 0, "circuit", '{"n_prompts":128}')
    store.write_unit(big, circuit_rows({"unablated": ok(128, 96), "zero_shot": ok(128, 10),
                                        "yi_to_sq": ok(128, 32), "yi_to_sq:random": ok(128, 96)}),
                     {**prov, "computed_at": "2026-01-01T00:00:00Z"})
    small = Unit("m", "classify", 4, 0, "circuit", '{"n_prompts":32}')
    store.write_unit(small, circuit_rows({"unablated": ok(32, 16), "zero_shot": ok(32, 3),
                                          "yi_to_sq": ok(32, 16), "yi_to_sq:random": ok(32, 16)}),
                     {**prov, "computed_at": "2026-02-01T00:00:00Z"})
    return store, big.key, small.key
