"""Known-answer tests for circuits.vectors: task, function and in-context vectors."""

import pytest
import torch

from circuits import vectors
from experiments.studies.vectors_study import toy_prompts
from probes.readout import readout_logits
from tests.helpers import tiny_bridge


@pytest.fixture(scope="module")
def model():
    return tiny_bridge(attn_only=False, seed=3)


@pytest.fixture(scope="module")
def batch():
    return toy_prompts(k=3, n_prompts=6, seed=1)


def _logits(model, batch, hooks=()):
    with torch.no_grad():
        return readout_logits(model, batch, hooks)


def test_zero_vector_added_changes_nothing(model, batch):
    base = _logits(model, batch)
    for layer in range(model.cfg.n_layers):
        hooks = vectors.readout_hooks(batch, layer, torch.zeros(model.cfg.d_model), mode="add")
        assert torch.equal(_logits(model, batch, hooks), base)


def test_vector_injected_back_into_its_own_prompt_reproduces_output(model, batch):
    base = _logits(model, batch)
    for site in ("resid_pre", "resid_post"):
        for layer in range(model.cfg.n_layers):
            own = vectors.readout_residuals(model, batch, [layer], site=site)[0]  # [batch, d]
            hooks = vectors.readout_hooks(batch, layer, own, site=site, mode="replace")
            assert torch.equal(_logits(model, batch, hooks), base)


def test_replacement_changes_output_and_only_at_readout(model, batch):
    base = _logits(model, batch)
    one = batch.select([0]).trim()
    hooks = vectors.readout_hooks(one, 0, torch.ones(model.cfg.d_model) * 5, mode="replace")
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        full = model(one.tokens)
    plain = model(one.tokens).detach()
    r = int(one.readout[0])
    assert torch.equal(full[0, :r], plain[0, :r])  # earlier positions untouched (causal)
    assert not torch.allclose(full[0, r], base[0])


def test_hooks_removed_even_on_exception(model, batch):
    hooks = vectors.readout_hooks(batch, 0, torch.ones(model.cfg.d_model + 1), mode="add")
    with pytest.raises(vectors.VectorError, match="d_model"):
        with vectors.injected(model, hooks):
            model(batch.tokens)
    assert torch.equal(_logits(model, batch), _logits(model, batch))
    assert all(len(hp._forward_hooks) == 0 for _, hp in model.hook_dict.items())


def test_bad_layer_and_site_are_clear_errors(model, batch):
    with pytest.raises(vectors.VectorError, match="out of range"):
        vectors.readout_residuals(model, batch, [model.cfg.n_layers])
    with pytest.raises(vectors.VectorError, match="unknown site"):
        vectors.hook_name(0, "resid_middle")
    with pytest.raises(vectors.VectorError, match="attention-only"):
        vectors.icv_hooks(tiny_bridge(), torch.zeros(2, 32), 0.1, site="mlp_out")


def test_task_vector_is_mean_of_readout_residuals(model, batch):
    res = vectors.readout_residuals(model, batch)
    rows = [vectors.readout_residuals(model, b)[:, 0] for b in batch.to_list()]
    assert torch.allclose(res, torch.stack(rows, 1), atol=1e-5)  # batched == looped (right padding)
    assert torch.allclose(vectors.task_vector(model, batch), res.mean(1))


def test_random_like_keeps_norm():
    v = torch.randn(3, 16)
    r = vectors.random_like(v, seed=1)
    assert torch.allclose(r.norm(dim=-1), v.norm(dim=-1), atol=1e-5)
    assert (torch.nn.functional.cosine_similarity(r, v, dim=-1).abs() < 0.99).all()


def test_strip_demos_keeps_prefix_and_query(batch):
    zs = batch.zero_shot()
    assert zs.n_demos == 0
    for b in range(batch.batch_size):
        qs, _ = batch.query_text[b].tolist()
        ro = int(batch.readout[b])
        want = [1] + batch.tokens[b, qs : ro + 1].tolist()
        assert zs.tokens[b, : zs.lengths[b]].tolist() == want
    assert torch.equal(zs.target, batch.target)


def test_shuffle_labels_permutes_within_row(batch):
    sh = batch.shuffle_labels(seed=0)
    assert torch.equal(sh.label, batch.label)
    for b in range(batch.batch_size):
        assert sorted(sh.label_tokens[b].tolist()) == sorted(batch.label_tokens[b].tolist())
    other = ~batch.role_mask("label")
    assert torch.equal(sh.tokens[other], batch.tokens[other])


def test_head_aie_batched_equals_looped(model, batch):
    mean_z = vectors.mean_head_outputs(model, batch)
    aie = vectors.head_aie(model, batch, mean_z, chunk=12)  # 2 heads per forward
    base = vectors.target_prob(_logits(model, batch), batch)
    for l, h in [(0, 0), (1, 3), (1, 1)]:
        def hook(z, hook, h=h, l=l):
            z = z.clone()
            z[torch.arange(z.shape[0]), batch.readout, h] = mean_z[l, h]
            return z
        p = vectors.target_prob(_logits(model, batch, [(f"blocks.{l}.attn.hook_z", hook)]), batch)
        assert torch.isclose(aie[l, h], (p - base).mean(), atol=1e-6)


def test_aie_zero_when_mean_equals_each_prompt(model, batch):
    same = batch.select([0, 0, 0])
    mean_z = vectors.mean_head_outputs(model, same)
    assert vectors.head_aie(model, same, mean_z).abs().max() < 1e-6
    assert vectors.head_aie_attribution(model, same, mean_z).abs().max() < 1e-6


def test_attribution_ranks_like_exact_on_small_perturbation(model, batch):
    """Mean z close to the prompt's own z: the first-order estimate ~ exact AIE."""
    one = batch.select([0]).trim()
    z = vectors.readout_head_z(model, one)[:, 0]
    mean_z = z + 1e-3 * torch.randn_like(z)
    exact = vectors.head_aie(model, one, mean_z)
    approx = vectors.head_aie_attribution(model, one, mean_z)
    assert torch.allclose(exact, approx, atol=1e-6, rtol=1e-2)


def test_function_vector_of_all_heads_is_attention_output(model, batch):
    one = batch.select([0]).trim()
    z = vectors.readout_head_z(model, one)[:, 0]  # [layer, head, d_head]
    heads = [(0, h) for h in range(model.cfg.n_heads)]
    fv = vectors.function_vector(model, z, heads)
    attn = vectors.capture(model, one.tokens, ["blocks.0.hook_attn_out"])["blocks.0.hook_attn_out"]
    assert torch.allclose(fv + model.b_O[0].detach(), attn[0, int(one.readout[0])], atol=1e-5)


def test_icv_update_known_answers():
    x = torch.randn(4, 7, 16)
    v = torch.randn(16)
    assert torch.equal(vectors.icv_update(x, v, 0.0), x)
    y = vectors.icv_update(x, v, 0.3)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # keeps norms
    def cos(a):
        return torch.nn.functional.cosine_similarity(a, v.expand_as(a), dim=-1)
    assert (cos(y) > cos(x)).all()  # turns every x towards v
    par = 2.5 * v  # x parallel to v: direction and norm already right -> unchanged
    assert torch.allclose(vectors.icv_update(par, v, 0.7), par, atol=1e-5)
    # hand value: x = e0, v = e1, lam = 1: cos(x, -v) = 0 -> norm(e0 + e1) * 1
    e = torch.eye(2)
    assert torch.allclose(vectors.icv_update(e[0], e[1], 1.0), torch.tensor([1.0, 1.0]) / 2 ** 0.5)
    # x = e0, v = -e0 + e1 (cos(x,-v) = 1/sqrt2): y = e0 + 0.5 (1 + 1/sqrt2) (-e0 + e1)/sqrt2
    v2 = torch.tensor([-1.0, 1.0])
    c = 0.5 * (1 + 2 ** -0.5) / 2 ** 0.5
    want = torch.tensor([1 - c, c])
    assert torch.allclose(vectors.icv_update(e[0], v2, 0.5), want / want.norm(), atol=1e-6)


def test_icv_lambda_zero_changes_nothing(model, batch):
    hx, hy = vectors.demo_pair_states(model, batch)
    icv = vectors.in_context_vector(hx, hy)
    zs = batch.zero_shot()
    base = _logits(model, zs)
    for site in ("mlp_out", "resid_post"):
        assert torch.equal(_logits(model, zs, vectors.icv_hooks(model, icv, 0.0, site=site)), base)
        assert not torch.allclose(_logits(model, zs, vectors.icv_hooks(model, icv, 0.5, site=site)), base)


def test_demo_pair_states_equal_standalone_runs(model, batch):
    hx, hy = vectors.demo_pair_states(model, batch)
    assert hx.shape == (batch.batch_size * 3, model.cfg.n_layers, model.cfg.d_model)
    # demonstration 1 of row 2, by hand: [BOS] x s y, states at s (x side) and y
    s, _ = batch.demo_text[2, 1].tolist()
    y = int(batch.label[2, 1])
    toks = torch.cat([batch.tokens[2, :1], batch.tokens[2, s : y + 1]])[None]
    acts = vectors.capture(model, toks, [f"blocks.{l}.hook_resid_post" for l in range(2)])
    want_y = torch.stack([acts[f"blocks.{l}.hook_resid_post"][0, -1] for l in range(2)])
    want_x = torch.stack([acts[f"blocks.{l}.hook_resid_post"][0, -2] for l in range(2)])
    assert torch.allclose(hy[2 * 3 + 1], want_y, atol=1e-5)
    assert torch.allclose(hx[2 * 3 + 1], want_x, atol=1e-5)


def test_in_context_vector_recovers_principal_direction():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 8, generator=g)
    u = u / u.norm()
    coef = torch.linspace(1, 5, 40)[:, None, None]
    hx = torch.randn(40, 2, 8, generator=g)
    hy = hx + coef * u + 1e-3 * torch.randn(40, 2, 8, generator=g)
    icv = vectors.in_context_vector(hx, hy)
    assert icv.shape == (2, 8)
    assert torch.dot(icv.flatten(), u.flatten()) > 0.999  # the direction, with the mean's sign
    assert torch.isclose(icv.norm(), torch.tensor(1.0), atol=1e-5)
