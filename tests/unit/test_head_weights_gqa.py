"""Weight-based head scores on grouped-query attention (GQA): hand-set copying and composition
heads whose known answers hold only if query head h reads key/value head h // (n_heads / n_kv_heads);
a GQA model scores exactly as the same model with its key/value heads repeated (multi-head); the
norms around a head are folded into its weights."""

import math

import pytest
import torch

from experiments.models.zoo import build_model
from probes.head_weights import (
    circuit_weights,
    composition_baseline,
    composition_scores,
    copying_scores,
    k_composition_scores,
    kv_head_of,
    max_composition_into,
    norm_matrix,
    per_query_head,
)
from probes.heads import HeadScoreError

D, H, KV, DH, V = 32, 4, 2, 4, 50
S0, S1, T, U, NOWHERE = (slice(4 * i, 4 * i + 4) for i in range(5))  # 4-dim residual subspaces


def gqa_model(n_layers=2, n_kv=KV, norm=None, attn_only=True, seed=0):
    return build_model("bridge-native", dict(
        d_model=D, n_layers=n_layers, n_heads=H, d_head=DH, n_ctx=16, d_vocab=V, attn_only=attn_only,
        act_fn="gelu", normalization_type=norm, seed=seed, n_key_value_heads=n_kv,
        **({} if attn_only else {"d_mlp": 2 * D})))


def eye_on(sub):
    """[D, DH]: reads (or, transposed, writes) the residual subspace ``sub`` as the head's DH dims."""
    W = torch.zeros(D, DH)
    W[sub] = torch.eye(DH)
    return W


def set_weights(model, layer, q=None, k=None, v=None, o=None, zero=True):
    """Hand-set weights in TransformerLens layout: q[h], o[h] per query head; k[kv], v[kv] per
    key/value head (TL's W_Q [d, dh], W_O [dh, d])."""
    sd = dict(model.state_dict())
    for name, per_head in (("q", q), ("k", k), ("v", v), ("o", o)):
        key = f"blocks.{layer}.attn.{name}.weight"
        if zero:
            sd[key] = torch.zeros_like(sd[key])
        for i, W in (per_head or {}).items():
            if name == "o":  # o.weight [d, H * dh]
                sd[key][:, i * DH:(i + 1) * DH] = W.T
            else:  # [n * dh, d]
                sd[key][i * DH:(i + 1) * DH] = W.T
    model.load_state_dict(sd)


def orthonormal_embedding(model):
    """W_U = W_E^T = [I; 0] (token i < d_model embedded as e_i): W_U W_E = I exactly, so the OV
    circuit alone decides the score."""
    sd = dict(model.state_dict())
    W_E = torch.zeros(V, D)
    W_E[torch.arange(D), torch.arange(D)] = 1.0
    sd["embed.weight"], sd["unembed.weight"] = W_E.clone(), W_E.clone()
    sd["unembed.bias"] = torch.zeros_like(sd["unembed.bias"])
    model.load_state_dict(sd)


def repeated_as_mha(gqa):
    """The same model as multi-head attention: each key/value head copied to its query heads."""
    c = gqa.cfg
    mha = build_model("bridge-native", dict(
        d_model=c.d_model, n_layers=c.n_layers, n_heads=c.n_heads, d_head=c.d_head, n_ctx=c.n_ctx,
        d_vocab=c.d_vocab, attn_only=c.attn_only, act_fn=c.act_fn, normalization_type=c.normalization_type,
        seed=123, **({} if c.attn_only else {"d_mlp": c.d_mlp})))
    sd = {k: v.clone() for k, v in gqa.state_dict().items()}
    idx = kv_head_of(c.n_heads, c.n_key_value_heads)
    for key in list(sd):
        if key.split(".")[-2] in ("k", "v") and ".attn." in key:
            w = sd[key]
            sd[key] = w.reshape(c.n_key_value_heads, c.d_head, *w.shape[1:])[idx].reshape(c.n_heads * c.d_head,
                                                                                        *w.shape[1:])
    mha.load_state_dict(sd, strict=True)
    return mha


def test_kv_head_of_and_per_query_head():
    assert kv_head_of(4, 2).tolist() == [0, 0, 1, 1]
    assert kv_head_of(9, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # smollm2-135m
    assert kv_head_of(4, 1).tolist() == [0, 0, 0, 0]  # gemma3-270m
    assert kv_head_of(4, 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(HeadScoreError, match="multiple"):
        kv_head_of(4, 3)
    W = torch.arange(2 * 3).reshape(1, 2, 3).float()
    assert per_query_head(W, 4)[0, :, 0].tolist() == [0, 0, 3, 3]
    assert per_query_head(W, 2) is W


def test_bridge_reads_kv_head_h_over_group_size():
    """The mapping is the model's own: the GQA forward equals that of its repeated multi-head copy."""
    m = gqa_model(n_layers=2, norm="LN", attn_only=False)
    mha = repeated_as_mha(m)
    assert m.W_K.shape[1] == KV and mha.W_K.shape[1] == H
    toks = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = m(toks), mha(toks)
    assert a.std() > 0.1
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_copying_known_answers_on_a_hand_set_gqa_model():
    """kv head 0 reads S0, kv head 1 reads S1. Query heads 0, 1 share kv head 0: head 0 writes S0 back
    (copy, +1), head 1 writes -S0 (anti-copy, -1); heads 2, 3 share kv head 1: head 2 writes S1 (+1),
    head 3 writes S0, which it does not read (0). A mapping h % n_kv would give head 1 kv head 1: 0."""
    m = gqa_model(n_layers=1)
    orthonormal_embedding(m)
    set_weights(m, 0, v={0: eye_on(S0), 1: eye_on(S1)},
                o={0: eye_on(S0).T, 1: -eye_on(S0).T, 2: eye_on(S1).T, 3: eye_on(S0).T})
    assert m.W_V.shape == (1, KV, D, DH) and torch.equal(m.W_V[0, 1], eye_on(S1))
    s = copying_scores(m)
    torch.testing.assert_close(s.scores[0], torch.tensor([1.0, -1.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    assert s.info["n_kv_heads"] == KV and s.info["folded"] == []
    # the same numbers as the matrices directly: head h's OV circuit is W_V[h // 2] W_O[h]
    for h in range(H):
        M = (m.W_E @ m.W_V[0, h // 2] @ m.W_O[0, h] @ m.W_U).detach()
        eig = torch.linalg.eigvals(M.double())
        want = float(eig.real.sum() / eig.abs().sum()) if eig.abs().sum() > 1e-9 else 0.0
        assert float(s.scores[0, h]) == pytest.approx(want, abs=1e-4)


def composition_model():
    """L0H1 (kv 0 reads S0) writes T; every other layer-0 head writes a subspace nobody reads.
    Layer 1: kv head 1 (query heads 2, 3) has keys reading T, kv head 0 keys reading U; query head 0
    reads T, the others U; kv head 0 (query heads 0, 1) has values reading T, kv head 1 values
    reading U; every layer-1 head writes its own random directions. So L0H1 composes into
    K: L1H2, L1H3; Q: L1H0; V: L1H0, L1H1 -- each with ||A B|| / (||A|| ||B||) = 1 / sqrt(d_head)."""
    m = gqa_model(n_layers=2)
    g = torch.Generator().manual_seed(3)
    set_weights(m, 0, q={h: torch.randn(D, DH, generator=g) for h in range(H)},
                k={i: torch.randn(D, DH, generator=g) for i in range(KV)},
                v={0: eye_on(S0), 1: eye_on(S1)},
                o={0: eye_on(NOWHERE).T, 1: eye_on(T).T, 2: eye_on(NOWHERE).T, 3: eye_on(NOWHERE).T})
    set_weights(m, 1, q={0: eye_on(T), 1: eye_on(U), 2: eye_on(U), 3: eye_on(U)},
                k={0: eye_on(U), 1: eye_on(T)}, v={0: eye_on(T), 1: eye_on(U)},
                o={h: torch.randn(DH, D, generator=g) for h in range(H)})
    return m


@pytest.mark.parametrize("kind, into", [("k", {2, 3}), ("q", {0}), ("v", {0, 1})])
def test_composition_known_answers_on_a_hand_set_gqa_model(kind, into):
    m = composition_model()
    raw = composition_scores(m, kind=kind, subtract_baseline=False)
    assert raw.shape == (2, H, 2, H) and torch.isnan(raw[1]).all() and torch.isnan(raw[:, :, 0]).all()
    for h2 in range(H):
        want = 1 / math.sqrt(DH) if h2 in into else 0.0
        assert float(raw[0, 1, 1, h2]) == pytest.approx(want, abs=1e-5), (kind, h2)
        for h1 in (0, 2, 3):  # they write NOWHERE, which no later head reads
            assert float(raw[0, h1, 1, h2]) == pytest.approx(0.0, abs=1e-5)
    # the baseline is that of random rank-d_head pairs in d_model: what every query head's circuit is
    base = composition_baseline(D, DH)
    assert 0 < base < 1 / math.sqrt(DH)
    sub = composition_scores(m, kind=kind)
    torch.testing.assert_close(sub[0, :, 1], raw[0, :, 1] - base, atol=1e-6, rtol=0)
    best = max_composition_into(sub, name=f"{kind}_composition")
    for h2 in into:
        assert best.info["source"][1][h2] == (0, 1)
        assert float(best.scores[1, h2]) == pytest.approx(1 / math.sqrt(DH) - base, abs=1e-5)


@pytest.mark.parametrize("n_kv, norm", [(2, "LN"), (1, "RMS")])
def test_gqa_scores_equal_those_of_the_repeated_multi_head_model(n_kv, norm):
    m = gqa_model(n_layers=3, n_kv=n_kv, norm=norm, attn_only=False, seed=4)
    with torch.no_grad():  # non-trivial norm gains, so that folding them matters
        g = torch.Generator().manual_seed(5)
        for name, p in m.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.copy_(torch.empty(p.shape).uniform_(-1.5, 2.0, generator=g))
    mha = repeated_as_mha(m)
    for fold in (True, False):
        for eff in (False, True):
            a, b = copying_scores(m, effective=eff, fold_norms=fold), copying_scores(mha, effective=eff, fold_norms=fold)
            assert a.scores.shape == (3, H) and a.scores.std() > 0.01
            torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=0)
        for kind in "qkv":
            a, b = (composition_scores(x, kind=kind, fold_norms=fold, n_random=20) for x in (m, mha))
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0, equal_nan=True)
    assert circuit_weights(m).info["folded"] == ["ln1", "ln_final"]
    # folding changes the scores: the gains are part of the circuit
    assert not torch.allclose(copying_scores(m).scores, copying_scores(m, fold_norms=False).scores, atol=1e-3)


def test_norm_gains_are_folded_into_the_circuit():
    """A copying head through an RMSNorm whose gain is -1 on the subspace it reads anti-copies; a
    second -1 gain on the same subspace in the final norm makes it copy again."""
    m = gqa_model(n_layers=1, norm="RMS")
    orthonormal_embedding(m)
    set_weights(m, 0, v={0: eye_on(S0), 1: eye_on(S1)},
                o={0: eye_on(S0).T, 1: eye_on(S0).T, 2: eye_on(S1).T, 3: eye_on(S1).T})
    assert (copying_scores(m).scores - 1).abs().max() < 1e-5
    with torch.no_grad():
        m.blocks[0].ln1.weight[S0] = -1.0
    flipped = copying_scores(m).scores[0]
    torch.testing.assert_close(flipped, torch.tensor([-1.0, -1.0, 1.0, 1.0]), atol=1e-5, rtol=0)
    assert (copying_scores(m, fold_norms=False).scores - 1).abs().max() < 1e-5  # the raw weights
    with torch.no_grad():
        m.ln_final.weight[S0] = -1.0
    assert (copying_scores(m).scores - 1).abs().max() < 1e-5
    assert copying_scores(m).info["folded"] == ["ln1", "ln_final"]


def test_norm_matrix_of_rms_and_layer_norm():
    g = torch.Generator().manual_seed(0)
    gain = torch.empty(8).uniform_(-2, 2, generator=g)
    rms = gqa_model(norm="RMS").blocks[0].ln1
    ln = gqa_model(norm="LN").blocks[0].ln1
    with torch.no_grad():
        rms.weight[:8] = gain
        ln.weight[:8] = gain
        ln.bias.uniform_(-1, 1, generator=g)
    J = norm_matrix(rms, D)
    assert J is not None
    want = torch.ones(D)
    want[:8] = gain
    torch.testing.assert_close(J / J[9, 9], torch.diag(want), atol=1e-5, rtol=0)  # diag(gain)
    C = torch.eye(D) - 1 / D
    J = norm_matrix(ln, D)
    assert J is not None  # C diag(gain): the bias cancels, the mean is removed
    torch.testing.assert_close(J / J[9, 9] * (1 - 1 / D), C @ torch.diag(want), atol=1e-5, rtol=0)
    assert norm_matrix(gqa_model(norm=None).blocks[0].ln1, D) is None  # no norm: identity
    assert norm_matrix(gqa_model(norm="RMS").blocks[0].ln1, D) is None  # unit gains: a scalar


def test_layer_norm_model_centres_reads_and_writes():
    m = gqa_model(n_layers=2, norm="LN", seed=2)
    cw, raw = circuit_weights(m), circuit_weights(m, fold_norms=False)
    assert cw.info["centred_writes"] and not raw.info["centred_writes"]
    C = torch.eye(D) - 1 / D
    scale = float(norm_matrix(m.blocks[0].ln1, D)[0, 0]) / (1 - 1 / D)  # LN's J^T = C / sqrt(1 - 1/D)
    torch.testing.assert_close(cw.W_V, C @ raw.W_V * scale, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cw.W_O, raw.W_O @ C, atol=1e-5, rtol=1e-4)
    assert cw.W_V.shape == (2, H, D, DH) and torch.equal(raw.W_V[:, 1], raw.W_V[:, 0])  # per query head


def test_k_composition_scores_and_errors_on_gqa():
    m = gqa_model(n_layers=3, norm="LN", seed=6)
    kc = k_composition_scores(m, n_random=20)
    assert kc.shape == (3, H, 3, H) and torch.isfinite(kc[0, :, 1:]).all() and torch.isfinite(kc[1, :, 2]).all()
    assert torch.isnan(kc[2]).all() and torch.isnan(kc[1, :, :2]).all()
    with pytest.raises(HeadScoreError, match="'q', 'k' or 'v'"):
        composition_scores(m, kind="o")
