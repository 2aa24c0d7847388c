"""Head scores against known answers: hand-set previous-token and induction heads, pure copying
OV circuits, a hook-built n-gram head, and invariants (caches are never mutated)."""

import pytest
import torch

from probes.capture import hooks_left
from probes.head_weights import (
    composition_baseline,
    composition_scores,
    copying_scores,
    k_composition_scores,
    ov_copying_score,
)
from probes.heads import (
    HeadScoreError,
    duplicate_token_mask,
    duplicate_token_scores,
    head_scores_figure,
    icl_score,
    induction_scores,
    ngram_mask,
    ngram_scores,
    prefix_matching_scores,
    previous_token_scores,
    repeated_random_tokens,
)
from tests.helpers import tiny_bridge

V, N_CTX, SCALE = 200, 48, 300.0
TOK, POS, PREV = 0, V, V + N_CTX  # offsets of the three residual subspaces
D_MODEL, N_HEADS = 2 * V + N_CTX, 2
D_HEAD = D_MODEL // N_HEADS
BOS = V - 1


@pytest.fixture(scope="module")
def induction_model():
    return build_hand_set_model()


def build_hand_set_model():
    """2-layer attention-only bridge: L0H0 previous-token head, L1H0 induction head.

    Residual = [one-hot token | one-hot position | one-hot previous token]. L0H0's query at
    position p matches the key at p-1 (positions); its OV copies the token into the
    previous-token slot. L1H0's query (current token) matches keys whose previous-token slot
    holds the same token; its OV copies the attended token to the logits. Other heads are zero
    (uniform attention).
    """
    from experiments.models.zoo import build_model

    model = build_model("bridge-native", dict(
        d_model=D_MODEL, n_layers=2, n_heads=N_HEADS, d_head=D_HEAD, n_ctx=N_CTX, d_vocab=V,
        attn_only=True, act_fn="gelu", normalization_type=None,
        positional_embedding_type="standard", seed=0))
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    sd["embed.weight"][torch.arange(V), TOK + torch.arange(V)] = 1.0
    sd["pos_embed.weight"][torch.arange(N_CTX), POS + torch.arange(N_CTX)] = 1.0
    sd["unembed.weight"][torch.arange(V), TOK + torch.arange(V)] = 1.0
    c = SCALE

    def put(layer, h, name, W):  # W in TL convention: [d_model, d_head] (q/k/v) or [d_head, d_model] (o)
        rows = slice(h * D_HEAD, (h + 1) * D_HEAD)
        if name == "o":
            sd[f"blocks.{layer}.attn.o.weight"][:, rows] = W.T
        else:
            sd[f"blocks.{layer}.attn.{name}.weight"][rows] = W.T

    t, p = torch.arange(V), torch.arange(N_CTX)
    assert D_HEAD >= V and D_HEAD >= N_CTX
    # L0H0: previous-token head. score(i, j) = c [j = i - 1]; value = token; output -> PREV slot
    Wq, Wk, Wv, Wo = (*(torch.zeros(D_MODEL, D_HEAD) for _ in range(3)), torch.zeros(D_HEAD, D_MODEL))
    Wq[POS + p[1:], p[1:] - 1] = c
    Wk[POS + p, p] = 1.0
    Wv[TOK + t, t] = 1.0
    Wo[t, PREV + t] = 1.0
    for name, W in zip("qkvo", (Wq, Wk, Wv, Wo)):
        put(0, 0, name, W)
    # L1H0: induction head. score(i, j) = c [prev_token(j) = token(i)]; value = token -> logits
    Wq, Wk, Wv, Wo = (*(torch.zeros(D_MODEL, D_HEAD) for _ in range(3)), torch.zeros(D_HEAD, D_MODEL))
    Wq[TOK + t, t] = c
    Wk[PREV + t, t] = 1.0
    Wv[TOK + t, t] = 1.0
    Wo[t, TOK + t] = 1.0
    for name, W in zip("qkvo", (Wq, Wk, Wv, Wo)):
        put(1, 0, name, W)
    model.load_state_dict(sd, strict=False)
    model.eval()
    # the state-dict layout is what TransformerLens reads back as W_Q/W_K/W_V/W_O
    assert torch.equal(model.W_Q[1, 0], Wq) and torch.equal(model.W_O[1, 0], Wo)
    return model


@pytest.mark.slow
def test_hand_set_previous_token_and_induction_heads(induction_model):
    m = induction_model
    toks = repeated_random_tokens(16, 20, V - 1, seed=3, bos=BOS)
    prev = previous_token_scores(m, toks).scores
    ind = induction_scores(m, seg_len=20, batch=16, seed=4, vocab=V - 1, bos=BOS).scores
    assert prev[0, 0] > 0.9 and ind[1, 0] > 0.9
    others_prev = prev.clone()
    others_prev[0, 0] = 0
    others_ind = ind.clone()
    others_ind[1, 0] = 0
    assert others_prev.max() < 0.2 and others_ind.max() < 0.2
    # the induction head is the n = 2 n-gram head: it attends uniformly inside S_i
    assert ngram_scores(m, toks, 2).scores[1, 0] > 0.99
    # prefix matching finds the same head; K-composition links L0H0 -> L1H0 most strongly
    pm = prefix_matching_scores(m, bos=BOS, low=0, high=V - 1).scores
    assert pm[1, 0] > 0.9 and pm[0].max() < 0.2
    kc = k_composition_scores(m, n_random=10)
    assert kc[0, 0, 1, 0] == torch.nan_to_num(kc, nan=-1).max()
    assert torch.isnan(kc[1]).all() and torch.isnan(kc[:, :, 0]).all()
    assert hooks_left(m) == 0


def test_scores_do_not_mutate_a_given_cache():
    m = tiny_bridge()
    toks = repeated_random_tokens(4, 10, 50, seed=0)
    _, cache = m.run_with_cache(toks)
    before = {k: v.clone() for k, v in cache.items()}
    from_cache = previous_token_scores(m, toks, cache=cache)
    hooked = previous_token_scores(m, toks)
    dup = duplicate_token_scores(m, toks, cache=cache)
    ng = ngram_scores(m, toks, 2, cache=cache)
    assert all(torch.equal(before[k], cache[k]) for k in before)
    assert torch.allclose(from_cache.scores, hooked.scores, atol=1e-6)
    assert torch.equal(from_cache.tokens, toks) and dup.tokens is not None and ng.info["n"] == 2


def test_uniform_attention_scores_analytic():
    """A zero-QK model attends uniformly: previous-token score = mean_i 1/(i+1)."""
    m = tiny_bridge(n_layers=1)
    sd = {k: (torch.zeros_like(v) if ".q." in k or ".k." in k else v) for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    T = 12
    toks = torch.randint(0, 50, (3, T))
    want = sum(1 / (i + 1) for i in range(1, T)) / (T - 1)
    assert torch.allclose(previous_token_scores(m, toks).scores, torch.full((1, 4), want), atol=1e-5)
    # duplicate score of a uniform head: |{j < i: x_j = x_i}| / (i + 1), averaged over rows with copies
    D = duplicate_token_mask(toks)
    rows = D.any(-1)
    expect = (D.sum(-1) / (torch.arange(T) + 1))[rows].mean()
    assert torch.allclose(duplicate_token_scores(m, toks).scores, expect.float().expand(1, 4), atol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_hook_built_ngram_head_scores_one(n):
    """L1H0's attention is set by a hook to the uniform distribution over S_i (self when empty)."""
    m = tiny_bridge(d_vocab=8, n_ctx=64)
    g = torch.Generator().manual_seed(n)
    toks = torch.randint(0, 4, (6, 40), generator=g)  # small alphabet: S_i is often non-empty
    D = ngram_mask(toks, n).float()
    empty = D.sum(-1, keepdim=True) == 0
    target = torch.where(empty, torch.eye(40).expand(6, 40, 40), D)
    target = target / target.sum(-1, keepdim=True)

    def set_pattern(pattern, hook):
        out = pattern.clone()
        out[:, 0] = target[: pattern.shape[0], : pattern.shape[2], : pattern.shape[3]]
        return out

    with m.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", set_pattern)]):
        scores = {k: ngram_scores(m, toks, k).scores for k in (2, 3, 4)}
    assert abs(float(scores[n][1, 0]) - 1.0) < 1e-5
    for k in (2, 3, 4):
        if k != n:
            assert float(scores[k][1, 0]) < 0.99  # S_i for another n is a different set
    assert scores[n][0].max() < 0.9
    assert hooks_left(m) == 0


def test_ngram_mask_matches_definition():
    toks = torch.tensor([[1, 2, 3, 1, 2, 3, 1, 2, 4, 2]])
    for n in (2, 3, 4):
        D = ngram_mask(toks, n)[0]
        x = toks[0].tolist()
        for i in range(len(x)):
            for j in range(len(x)):
                want = j < i and all(j - 1 - k >= 0 and i - k >= 0 and x[j - 1 - k] == x[i - k]
                                     for k in range(n - 1))
                assert bool(D[i, j]) == want, (n, i, j)
    with pytest.raises(HeadScoreError, match="n >= 2"):
        ngram_mask(toks, 1)


def test_ngram_scores_accept_lists_and_ignore_padding():
    m = tiny_bridge()
    rows = [[1, 2, 1, 2, 1, 2, 3], [4, 5, 4, 5, 4]]
    a = ngram_scores(m, rows, 2)
    padded = torch.tensor([[1, 2, 1, 2, 1, 2, 3], [4, 5, 4, 5, 4, 4, 4]])  # trailing 4s are pad
    b = ngram_scores(m, padded, 2, lengths=torch.tensor([7, 5]))
    assert torch.allclose(a.scores, b.scores, atol=1e-6)
    c = ngram_scores(m, padded, 2)  # without lengths the extra 4s count as queries
    assert not torch.allclose(a.scores, c.scores, atol=1e-6)


def test_copying_score_pure_copy_and_negation():
    g = torch.Generator().manual_seed(0)
    W_E = torch.randn(30, 12, generator=g)
    eye = torch.eye(12)
    assert abs(ov_copying_score(W_E, eye[:, :6], eye[:6], W_E.T) - 1.0) < 1e-5
    assert abs(ov_copying_score(W_E, eye[:, :6], -eye[:6], W_E.T) + 1.0) < 1e-5
    # on a model: W_U = W_E^T, W_V W_O = projection onto the first d_head coordinates (L0H1)
    m = tiny_bridge()
    sd = dict(m.state_dict())
    sd["unembed.weight"] = sd["embed.weight"].clone()
    sd["unembed.bias"] = torch.zeros_like(sd["unembed.bias"])
    dh = 8
    v = torch.zeros_like(sd["blocks.0.attn.v.weight"])
    o = torch.zeros_like(sd["blocks.0.attn.o.weight"])
    v[dh:2 * dh, :dh] = torch.eye(dh)
    o[:dh, dh:2 * dh] = torch.eye(dh)
    sd["blocks.0.attn.v.weight"], sd["blocks.0.attn.o.weight"] = v, o
    sd["blocks.1.attn.v.weight"], sd["blocks.1.attn.o.weight"] = v.clone(), -o
    m.load_state_dict(sd)
    s = copying_scores(m).scores
    assert abs(float(s[0, 1]) - 1) < 1e-4 and abs(float(s[1, 1]) + 1) < 1e-4
    assert s.abs().max() <= 1 + 1e-5
    with pytest.raises(HeadScoreError, match="attention-only"):
        copying_scores(m, effective=True)
    m2 = tiny_bridge(attn_only=False)
    eff = copying_scores(m2, effective=True)
    assert eff.scores.shape == (2, 4) and eff.name == "copying_effective"


def test_composition_known_answers():
    m = tiny_bridge()
    comp = composition_scores(m, subtract_baseline=False, fold_norms=False)
    assert torch.isnan(comp[1]).all() and not torch.isnan(comp[0, :, 1]).any()
    assert (comp[0, :, 1] >= 0).all() and (comp[0, :, 1] <= 1).all()
    # direct check of one pair: ||W_OV W_QK^T||_F / (||W_OV|| ||W_QK||)
    with torch.no_grad():
        OV = m.W_V[0, 1] @ m.W_O[0, 1]
        QK = m.W_Q[1, 2] @ m.W_K[1, 2].T
    want = (OV @ QK.T).norm() / (OV.norm() * QK.norm())
    assert torch.allclose(comp[0, 1, 1, 2], want, atol=1e-5)
    base = composition_baseline(32, 8, n=300, seed=0)
    assert 0 < base < 1
    sub = composition_scores(m, fold_norms=False)
    assert torch.allclose(sub[0, :, 1], comp[0, :, 1] - base, atol=1e-6)
    v = composition_scores(m, kind="v", subtract_baseline=False, fold_norms=False)
    with torch.no_grad():
        OV2 = m.W_V[1, 3] @ m.W_O[1, 3]
    assert torch.allclose(v[0, 1, 1, 3], (OV @ OV2).norm() / (OV.norm() * OV2.norm()), atol=1e-5)
    # folded (the default): the model's LayerNorms (unit gains) remove the mean before every
    # read (and the writes are centred), so the circuits are C W_OV C and C W_QK C, C = I - 11^T/d
    C = torch.eye(32) - 1 / 32
    folded = composition_scores(m, subtract_baseline=False)
    OVc, QKc = C @ OV @ C, C @ QK @ C
    want = (OVc @ QKc.T).norm() / (OVc.norm() * QKc.norm())
    assert torch.allclose(folded[0, 1, 1, 2], want, atol=1e-5) and not torch.allclose(want, comp[0, 1, 1, 2], atol=1e-4)


def test_icl_score_on_induction_data():
    from experiments.models.loading import load_model

    m = load_model("induction-2l")
    toks = repeated_random_tokens(8, 30, 256, seed=5)
    s = icl_score(m, toks)
    assert (s.early, s.late) == (6, 54)
    assert s.value < -2  # the repeat is predictable in context
    assert s.value == pytest.approx(s.loss_late - s.loss_early, abs=1e-5)
    with pytest.raises(HeadScoreError, match="early"):
        icl_score(m, toks, early=40, late=10)


def test_head_scores_figure():
    hs = previous_token_scores(tiny_bridge(), repeated_random_tokens(2, 6, 50))
    fig = head_scores_figure(hs)
    assert fig.data[0].z.shape == (2, 4) and list(fig.data[0].y) == ["L0", "L1"]
    assert hs.top(1)[0][2] == float(hs.scores.max())


@pytest.mark.slow
def test_hand_set_heads_are_significant_against_their_nulls(induction_model):
    """The hand-set previous-token (L0H0) and induction (L1H0) heads come out "significant" and
    above their nulls; the zero-weight (uniform) heads score exactly their nulls (p = 1)."""
    from experiments.studies.scan import head_scan_stats, scan_stats

    m = induction_model
    toks = repeated_random_tokens(16, 20, V - 1, seed=3, bos=BOS)
    prev = previous_token_scores(m, toks, with_null=True)
    ind = induction_scores(m, seg_len=20, batch=16, seed=4, vocab=V - 1, bos=BOS, with_null=True)
    assert prev.per_prompt.shape == (16, 2, N_HEADS) and ind.null.per_prompt.shape == (16, 2, N_HEADS)
    # per-prompt values average to the score (equal query counts per prompt)
    assert torch.allclose(prev.per_prompt.mean(0), prev.scores, atol=1e-5)
    assert all(r.unique().numel() == r.numel() for r in ind.null.tokens[:, 1:])  # no repeats
    assert ind.null.scores[1, 0] < 0.2  # nothing to match: the induction head has nowhere to go
    st = scan_stats({"previous_token": prev, "induction": ind}).set_index(["metric", "layer", "head"])
    for key in (("previous_token", 0, 0), ("induction", 1, 0)):
        r = st.loc[key]
        assert r["verdict"] == "significant" and r["above_null"] and r["q_value"] < 0.01, key
        assert r["n"] == 16 and r["ci_low"] <= r["value"] <= r["ci_high"]
    assert st.loc[("induction", 1, 0), "value"] > 0.9 and st.loc[("previous_token", 0, 0), "test"] == "paired permutation"
    for key in (("previous_token", 0, 1), ("induction", 0, 1), ("induction", 1, 1)):
        r = st.loc[key]  # uniform heads: identical per-prompt values on the score and its null
        assert abs(r["effect"]) < 1e-6 and r["p_value"] == 1.0 and not r["above_null"], key
    tables = head_scan_stats(st.reset_index().assign(model="hand", seed=0))
    assert len(tables.comparisons) == 2 * 2 * N_HEADS
    assert set(tables.comparisons["control"]) == {"previous_token:null", "induction:null"}


def test_null_helpers():
    from probes.heads import no_repeat_tokens, random_other_key_mask

    t = no_repeat_tokens(5, 12, 20, seed=0, bos=19, high=19)
    assert t.shape == (5, 12) and (t[:, 0] == 19).all()
    assert all(r[1:].unique().numel() == 11 for r in t) and (t[:, 1:] < 19).all()
    with pytest.raises(HeadScoreError, match="distinct tokens"):
        no_repeat_tokens(1, 30, 20)
    mask = random_other_key_mask(torch.zeros(200, 10, dtype=torch.long), seed=1)
    b, q, k = torch.nonzero(mask, as_tuple=True)
    assert (mask.sum(-1)[:, 1:] == 1).all() and not mask[:, 0].any()  # one key per query i >= 1
    assert (k <= q).all() and not (k == q - 1).any()  # never the previous token
    assert set(k[q == 4].tolist()) == {0, 1, 2, 4}  # every other visible key is drawn
