"""Linear-regression zoo models: architecture invariants, hooks, and the shipped checkpoints."""

import pytest
import torch

from experiments.models.loading import load_model
from experiments.models.zoo import build_model, read_card
from experiments.models.zoo.linreg import GPT_CONFIG, LSA_CONFIG, LinRegGPT, gd_lsa
from experiments.studies.linreg_gd import compare_linreg
from experiments.tasks import linreg as lr


def test_lsa_hooks_and_linear_pattern():
    model = gd_lsa(4, 0.5)
    tasks = lr.make_tasks(3, 5, 4, seed=0)
    y, cache = model.run_with_cache(tasks.tokens())
    for name in ("blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out",
                 "blocks.0.hook_resid_post"):
        assert name in cache
    pat = cache["blocks.0.attn.hook_pattern"]
    assert pat.shape == (3, 1, 6, 6)
    assert (pat[..., -1] == 0).all()  # nobody attends to the query token
    # linear attention: the pattern is (x_q . x_j) / N for the hand-built layer
    expect = torch.einsum("bd,bkd->bk", tasks.xq, tasks.xs) / 5
    assert torch.allclose(pat[:, 0, -1, :5], expect, atol=1e-6)
    assert torch.allclose(y, -cache["blocks.0.hook_resid_post"][:, -1, -1])
    # zero-ablating the attention output leaves the query's y slot at 0
    with model.hooks(fwd_hooks=[("blocks.0.hook_attn_out", lambda t, hook: torch.zeros_like(t))]):
        assert torch.equal(model(tasks.tokens()), torch.zeros(3))


def test_gpt_is_causal_and_batched_equals_looped():
    model = LinRegGPT.from_config({**GPT_CONFIG, "n_layers": 2, "d_model": 32, "d_head": 8,
                                   "d_mlp": 64})
    tasks = lr.make_tasks(4, 6, GPT_CONFIG["d"], seed=1)
    with torch.no_grad():
        full = model.predict_all(tasks.tokens())
        # the prediction for y_j depends on demos < j only: changing later demos leaves it alone
        changed = tasks.tokens().clone()
        changed[:, 4:] += 1.0
        part = model.predict_all(changed)
        assert torch.allclose(full[:, :4], part[:, :4], atol=1e-6)
        assert not torch.allclose(full[:, 4], part[:, 4])
        # prefix prediction equals the query prediction of the truncated prompt
        assert torch.allclose(full[:, 3], model(tasks.first(3).with_xq(tasks.xs[:, 3]).tokens()), atol=1e-5)
        looped = torch.cat([model(tasks.select([i]).tokens()) for i in range(4)])
        assert torch.allclose(looped, full[:, -1], atol=1e-5)
    _, cache = model.run_with_cache(tasks.tokens())
    pat = cache["blocks.1.attn.hook_pattern"]
    assert torch.allclose(pat.sum(-1), torch.ones_like(pat.sum(-1)), atol=1e-5)
    assert (pat.triu(1) == 0).all()


def test_bad_input_errors():
    model = gd_lsa(4, 0.5, max_k=6)
    with pytest.raises(lr.LinRegError, match="expects tokens"):
        model(torch.zeros(2, 3, 7))
    with pytest.raises(lr.LinRegError, match="max_k"):
        model(lr.make_tasks(2, 9, 4).tokens())


def test_build_model_roundtrip():
    for cfg, arch in ((LSA_CONFIG, "LinearSelfAttention"), (GPT_CONFIG, "LinRegGPT")):
        m = build_model(f"module:experiments.models.zoo.linreg:{arch}", {**cfg, "seed": 0})
        assert type(m).__name__ == arch and m.cfg.d == cfg["d"]


@pytest.mark.slow
def test_lsa_checkpoint_learns_and_looks_like_gd():
    model = load_model("linreg-lsa-1l")
    card = read_card("linreg-lsa-1l")
    assert card["train_seconds"] < 15 * 60
    d = model.cfg.d
    df = compare_linreg(model, ks=[d, 2 * d], n_tasks=256)
    # beats the zero predictor (error 1) clearly and points where one GD step points
    assert (df["err_model"] < 0.8).all()
    assert (df["sens_cos"] > 0.95).all()


@pytest.mark.slow
def test_gpt_checkpoint_does_icl():
    model = load_model("linreg-gpt")
    d = model.cfg.d
    tasks = {k: lr.make_tasks(512, k, d, seed=50 + k) for k in (0, 2 * d)}
    with torch.no_grad():
        err = {k: float(lr.squared_error(model.predict(t), t).mean()) for k, t in tasks.items()}
        avg = float(lr.squared_error(lr.averaging(tasks[2 * d]), tasks[2 * d]).mean())
    assert err[0] > 0.6  # no context: nothing to infer w from
    assert err[2 * d] < 0.5 * err[0]  # the context is used
    assert err[2 * d] < avg  # better than Garg's averaging baseline
