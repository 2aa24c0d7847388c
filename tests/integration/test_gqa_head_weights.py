"""Weight-based head scores on Gemma 3 (grouped-query attention with one key/value head, norms
around every head, a scaled embedding): the folded circuit weights are what the model's own
modules compute, and copying / composition run on the pretrained GQA models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from experiments.models.loading import load_model
from probes.head_weights import (
    circuit_weights,
    composition_scores,
    copying_scores,
    effective_embedding,
    k_composition_scores,
    max_composition_into,
)
from tests.integration.test_gemma import N_HEADS, N_LAYERS, write_tiny_gemma3


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """The tiny Gemma 3 with random norm gains (Hugging Face initialises them all to 1)."""
    bridge = load_model(str(write_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3-weights"), seed=1)))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        n = 0
        for name, p in bridge.named_parameters():
            if "norm" in name:  # Gemma's RMSNorm multiplies by 1 + weight
                p.copy_(torch.empty(p.shape).uniform_(-1.8, 1.0, generator=g))
                n += 1
    assert n == 4 * N_LAYERS + 2 * N_LAYERS + 1  # 4 per block, q_norm and k_norm, the final norm
    return bridge.eval()


def _parallel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def test_folded_weights_are_what_gemmas_modules_compute(gemma):
    """For a residual vector x, head h's value path ln1 -> v_proj (its key/value head) -> o_proj (its
    slot) -> post-attention norm points along x W_V W_O of the folded weights, its query through
    q_norm along x W_Q, its key through k_norm along x W_K, and the logits along x W_U (each up to the
    norms' positive scalar). Without folding the directions differ."""
    cw, raw = circuit_weights(gemma), circuit_weights(gemma, fold_norms=False)
    assert cw.info["folded"] == ["k_norm", "ln1", "ln1_post", "ln_final", "q_norm"] and cw.info["n_kv_heads"] == 1
    assert not cw.info["centred_writes"]  # RMSNorm: nothing removes the mean
    dh = cw.W_V.shape[-1]
    x = torch.randn(3, gemma.cfg.d_model, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for layer, block in enumerate(gemma.blocks):
            attn = block.attn
            y = block.ln1(x[None])[0]
            v, q, k = attn.v(y), attn.q(y).reshape(3, N_HEADS, dh), attn.k(y).reshape(3, 1, dh)
            q, k = attn.q_norm(q), attn.k_norm(k)
            for h in range(N_HEADS):
                z = torch.zeros(3, N_HEADS * dh)
                z[:, h * dh:(h + 1) * dh] = v  # the one key/value head's value, in query head h's slot
                out = block.ln1_post(attn.o(z)[None])[0]
                for i in range(3):
                    assert _parallel(out[i], x[i] @ cw.W_V[layer, h] @ cw.W_O[layer, h]) > 1 - 1e-5
                    assert _parallel(q[i, h], x[i] @ cw.W_Q[layer, h]) > 1 - 1e-5
                    assert _parallel(k[i, 0], x[i] @ cw.W_K[layer, h]) > 1 - 1e-5
                assert _parallel(out[0], x[0] @ raw.W_V[layer, h] @ raw.W_O[layer, h]) < 0.99
        logits = gemma.unembed(gemma.ln_final(x[None]))[0]
    assert all(_parallel(logits[i], x[i] @ cw.W_U) > 1 - 1e-5 for i in range(3))


def test_effective_embedding_is_block_0_without_its_attention(gemma):
    """Gemma scales W_E by sqrt(d_model) and puts MLP0's output through ln2_post: the effective
    embedding is block 0's output with the attention's contribution zeroed."""
    toks = torch.randint(0, gemma.cfg.d_vocab, (1, 12), generator=torch.Generator().manual_seed(2))
    got: dict[str, torch.Tensor] = {}

    def save(t, hook):
        got["resid"] = t.detach()

    with torch.no_grad():
        gemma.run_with_hooks(toks, fwd_hooks=[("blocks.0.ln1_post.hook_out", lambda t, hook: torch.zeros_like(t)),
                                              ("blocks.0.hook_out", save)])
    eff = effective_embedding(gemma)
    assert eff.shape == tuple(gemma.W_E.shape)
    torch.testing.assert_close(eff[toks[0]], got["resid"][0], atol=1e-4, rtol=1e-4)
    block = gemma.blocks[0]
    with torch.no_grad():  # the unscaled W_E would give another vector
        unscaled = gemma.W_E[toks[0]] + block.ln2_post(block.mlp(block.ln2(gemma.W_E[toks[0]][None])))[0]
    assert (unscaled - got["resid"][0]).abs().max() > 0.1


def test_copying_and_composition_run_on_tiny_gemma(gemma):
    for eff in (False, True):
        s = copying_scores(gemma, effective=eff)
        assert s.scores.shape == (N_LAYERS, N_HEADS) and torch.isfinite(s.scores).all()
        assert s.scores.abs().max() <= 1 + 1e-5 and s.info["n_kv_heads"] == 1
    for kind in "qkv":
        comp = composition_scores(gemma, kind=kind, n_random=20)
        assert comp.shape == (N_LAYERS, N_HEADS, N_LAYERS, N_HEADS)
        later = torch.arange(N_LAYERS)[:, None] < torch.arange(N_LAYERS)[None, :]
        assert torch.isfinite(comp.permute(0, 2, 1, 3)[later]).all() and torch.isnan(comp.permute(0, 2, 1, 3)[~later]).all()


# ---------------------------------------------------------------------- the pretrained GQA models
@pytest.mark.slow
@pytest.mark.parametrize("name, shape, n_kv", [("smollm2-135m", (30, 9), 3), ("gemma3-270m", (18, 4), 1)])
def test_weight_scores_on_the_pretrained_gqa_models(name, shape, n_kv):
    model = load_model(name)
    assert tuple(model.W_K.shape[:2]) == (shape[0], n_kv)  # the stored key/value heads
    for eff in (False, True):
        s = copying_scores(model, effective=eff)
        assert s.scores.shape == shape and torch.isfinite(s.scores).all() and s.scores.abs().max() <= 1 + 1e-5
        assert s.info["n_kv_heads"] == n_kv and "ln1" in s.info["folded"]
    kc = max_composition_into(k_composition_scores(model, n_random=50))
    assert kc.scores.shape == shape and torch.isnan(kc.scores[0]).all() and torch.isfinite(kc.scores[1:]).all()
    l, h, _ = kc.top(1)[0]
    src = kc.info["source"][l][h]
    assert src[0] < l and not math.isnan(kc.scores[l, h])
