"""ICL versus GD: known answers for the metrics, the GD baseline and the hand-built GD layer."""

import math

import pandas as pd
import pytest
import torch

from experiments import icl_vs_gd as ivg
from experiments.gd import (FineTuner, GDConfig, GDConfigError, demo_examples, permute_demos,
                            select_parameters, state_hash, zero_shot_batch)
from experiments.tasks import linreg as lr
from experiments.zoo.linreg import gd_lsa, random_lsa
from probes.prompt import PromptBatch, PromptBuilder
from tests.conftest import tiny_bridge

BOS, COLON, SEP = 1, 2, 3


def toy_prompts(k: int, seed: int, n: int = 6) -> PromptBatch:
    """BOS [x : y SEP]*k x_q : with a random item->label mapping per prompt (labels 40, 41)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        items = (torch.randperm(20, generator=g)[:4] + 10).tolist()
        labels = [40 + int(torch.randint(0, 2, (1,), generator=g)) for _ in items]
        pb = PromptBuilder().add([BOS])
        for i in range(k):
            j = int(torch.randint(0, 4, (1,), generator=g))
            pb.demo([items[j], items[j] + 20], COLON, labels[j], cls=j)
            pb.add([SEP])
        q = int(torch.randint(0, 4, (1,), generator=g))
        pb.query([items[q], items[q] + 20], COLON)
        rows.append(pb.build(target=labels[q], candidates=[40, 41], query_class=q,
                             meta={"task": "toy"}))
    return PromptBatch.concat(rows)


# ---------------------------------------------------------------------- distribution metrics
def test_kl_tv_overlap_identities():
    logits = torch.randn(5, 30)
    lp = logits.log_softmax(-1)
    assert torch.allclose(ivg.kl_divergence(lp, lp), torch.zeros(5), atol=1e-7)
    assert torch.allclose(ivg.total_variation(lp.exp(), lp.exp()), torch.zeros(5))
    assert torch.equal(ivg.topk_overlap(lp.exp(), lp.exp(), 10), torch.ones(5))
    other = torch.randn(5, 30).log_softmax(-1)
    assert (ivg.kl_divergence(lp, other) > 0).all()
    # KL of two Bernoullis, by hand
    p = torch.tensor([[0.5, 0.5]]).log()
    q = torch.tensor([[0.9, 0.1]]).log()
    expect = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert ivg.kl_divergence(p, q).item() == pytest.approx(expect, rel=1e-6)
    assert ivg.total_variation(p.exp(), q.exp()).item() == pytest.approx(0.4, abs=1e-6)
    disjoint = ivg.topk_overlap(torch.tensor([[0.4, 0.4, 0.1, 0.1]]), torch.tensor([[0.1, 0.1, 0.4, 0.4]]), 2)
    assert disjoint.item() == 0.0


def test_rec2ftp_hand_made():
    zs = torch.tensor([0, 0, 0, 0, 1, 1], dtype=torch.bool)
    gd = torch.tensor([1, 1, 1, 0, 1, 0], dtype=torch.bool)   # fixes rows 0, 1, 2
    icl = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)  # of those, fixes 0 and 2
    assert ivg.rec2ftp(zs, icl, gd) == pytest.approx(2 / 3)
    assert math.isnan(ivg.rec2ftp(zs, icl, torch.zeros(6, dtype=torch.bool)))
    assert ivg.rec2ftp(zs, gd, gd) == 1.0


def test_simaou_identical_updates_is_one():
    zs, icl = torch.randn(4, 3, 16), torch.randn(4, 3, 16)
    sim, rnd = ivg.simaou(zs, icl, icl.clone())
    assert torch.allclose(sim, torch.ones(3), atol=1e-6)
    assert (rnd.abs() < 0.9).all()
    scaled, _ = ivg.simaou(zs, icl, 3.0 * icl)  # outputs are L2-normalised first
    assert torch.allclose(scaled, torch.ones(3), atol=1e-6)
    # by hand in 2-D: zs = e1, icl = e2 -> update (-1, 1); gd = -e2 -> (-1, -1): cos 0;
    # gd = -5 e1 -> (-2, 0): cos 1/sqrt(2)
    z, i = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    assert ivg.simaou(z, i, torch.tensor([[[0.0, -1.0]]]))[0].item() == pytest.approx(0.0, abs=1e-7)
    assert ivg.simaou(z, i, torch.tensor([[[-5.0, 0.0]]]))[0].item() == pytest.approx(2 ** -0.5, abs=1e-6)


# ---------------------------------------------------------------------- linear regression
@pytest.mark.slow
def test_hand_built_gd_layer_matches_gd():
    eta = 0.7
    model = gd_lsa(6, eta)
    df = ivg.compare_linreg(model, ks=[1, 3, 6, 12], n_tasks=128, gd_lr=eta)
    assert (df["preds_diff"] < 1e-5).all()
    assert (df["sens_cos"] > 1 - 1e-5).all()
    assert (df["sens_l2"] < 1e-5).all()
    # with the grid-searched lr, agreement in direction stays perfect (cos 1)
    df2 = ivg.compare_linreg(model, ks=[6], n_tasks=128)
    assert df2["sens_cos"].iloc[0] > 1 - 1e-5


def test_random_layer_is_not_gd():
    df = ivg.compare_linreg(random_lsa(6, seed=3), ks=[3, 6], n_tasks=128)
    assert (df["preds_diff"] > 0.1).all()
    assert (df["sens_cos"] < 0.9).all()


def test_full_batch_gd_is_order_invariant_sgd_is_not():
    tasks = lr.make_tasks(64, 8, 5, seed=2)
    assert ivg.order_spread(lambda b: lr.gd(b, 0.5, 3), tasks, n_perms=6) < 1e-6
    assert ivg.order_spread(lambda b: lr.sgd(b, 0.3), tasks, n_perms=6) > 1e-2
    df = ivg.linreg_order_sensitivity(gd_lsa(5, 0.5), ks=[6], n_tasks=32, n_perms=4)
    by = dict(zip(df["method"], df["order_std"]))
    assert by["model"] < 1e-5 and by["gd1"] < 1e-6 and by["sgd"] > 1e-2


def test_sensitivity_of_gd_is_its_weight():
    tasks = lr.make_tasks(16, 7, 4, seed=5)
    s = ivg.sensitivity(lambda b: lr.gd(b, 0.4, 2), tasks)
    assert torch.allclose(s, lr.gd_w(tasks, 0.4, 2), atol=1e-6)


def test_tidy_has_provenance():
    df = ivg.compare_linreg(gd_lsa(4, 0.5), ks=[2], n_tasks=32, gd_lr=0.5, name="hand")
    long = ivg.tidy(df, ["model", "task", "k", "seed"], ivg.provenance({"a": 1}))
    assert {"model", "task", "k", "seed", "metric", "value", "config_hash"} <= set(long.columns)
    assert set(long["model"]) == {"hand"}


# ---------------------------------------------------------------------- language-model GD
def test_prompt_surgery_roles():
    batch = toy_prompts(3, seed=1, n=2)
    zs = zero_shot_batch(batch)
    assert zs.n_demos == 0 and zs.tokens[0, 0] == BOS
    assert zs.tokens[0, int(zs.readout[0])] == COLON
    assert torch.equal(zs.target, batch.target)
    toks, lengths, pos, labels = demo_examples(batch, 0)
    assert torch.equal(labels, batch.label_tokens[0])
    assert (toks[torch.arange(3), pos] == COLON).all() and (toks[:, 0] == BOS).all()
    # reversing twice restores the prompt; one reversal moves the labels with their inputs
    rev = permute_demos(batch, 0, [2, 1, 0])
    assert torch.equal(rev.label_tokens[0], batch.label_tokens[0].flip(0))
    back = permute_demos(rev, 0, [2, 1, 0])
    assert torch.equal(back.tokens[0], batch.tokens[0, : int(batch.lengths[0])])


@pytest.mark.slow  # pays the first TransformerBridge boot
def test_parameter_subsets():
    model = tiny_bridge()
    kv = select_parameters(model, "attn_kv")
    assert kv and all((".k." in n or ".v." in n) for n in kv)
    wv = select_parameters(model, "one_layer_wv", layer=1)
    assert wv and all("layers.1." in n and ".v." in n for n in wv)
    assert len(select_parameters(model, "all")) == len(list(model.parameters()))
    with pytest.raises(GDConfigError, match="unknown parameter subset"):
        select_parameters(model, "mlp_only")


def test_finetune_lowers_label_loss_and_keeps_original():
    model = tiny_bridge()
    before = state_hash(model)
    batch = toy_prompts(4, seed=0, n=2)
    ft = FineTuner(model, GDConfig(subset="all", lr=0.05, epochs=8, optimizer="adam"))
    ft.tune(batch, 0)
    assert ft.last_losses[-1] < ft.last_losses[0]
    assert state_hash(model) == before
    # the tuned copy really changed, and resetting restores the original values
    assert state_hash(ft.copy) != before
    ft.reset()
    assert state_hash(ft.copy) == before


def test_full_batch_finetune_order_invariant():
    model = tiny_bridge()
    batch = toy_prompts(4, seed=3, n=1)
    zs = zero_shot_batch(batch)
    from probes.readout import readout_logits

    outs = {}
    for mode in ("full", "online"):
        ft = FineTuner(model, GDConfig(subset="attn_kv", lr=0.5, epochs=3, batching=mode))
        res = []
        for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
            with torch.no_grad():
                res.append(readout_logits(ft.tune(batch, 0, order=order), zs).softmax(-1))
        outs[mode] = (res[0] - res[1]).abs().max().item()
    assert outs["full"] < 1e-6
    assert outs["online"] > 1e-6


@pytest.mark.slow
def test_compare_icl_gd_tidy_and_weights_unchanged():
    model = tiny_bridge()
    before = state_hash(model)
    df = ivg.compare_icl_gd(model, lambda k, s: toy_prompts(k, s, n=4), ks=[1, 2], seeds=[0],
                            gd=GDConfig(subset="attn_kv", lr=0.1, epochs=2), n_perms=3,
                            n_order_prompts=2, model_name="tiny", task_name="toy")
    assert state_hash(model) == before
    assert {"model", "task", "k", "seed", "metric", "value", "layer", "config_hash",
            "gd_subset"} <= set(df.columns)
    metrics = set(df["metric"])
    for m in ("acc_zs", "acc_icl", "acc_gd", "topk_overlap", "kl_icl_gd", "kl_gd_icl", "tv_icl_gd",
              "rec2ftp", "simaou", "simaou_random", "order_std_icl", "order_std_gd", "order_std_sgd"):
        assert m in metrics, m
    od = df[(df["metric"] == "order_std_gd")]["value"]
    assert (od < 1e-6).all()
    assert len(df[(df["metric"] == "simaou") & (df["k"] == 2)]) == model.cfg.n_layers
    acc = df[df["metric"].str.startswith("acc_")]["value"]
    assert ((acc >= 0) & (acc <= 1)).all()
    summary = ivg.summarize_lm(df)
    assert set(summary["k"]) == {1, 2}


def test_figures_build():
    import plotly.graph_objects as go

    df = ivg.compare_linreg(gd_lsa(4, 0.5), ks=[2, 4], n_tasks=32, gd_lr=0.5, name="hand")
    fig = ivg.fig_error_vs_k(df)
    assert isinstance(fig, go.Figure)
    names = {t.name for t in fig.data}
    assert {"model", "least_squares", "gd1"} <= names
    assert len(ivg.fig_sensitivity(df).data) == 2
    od = ivg.linreg_order_sensitivity(gd_lsa(4, 0.5), ks=[4], n_tasks=8, n_perms=2)
    assert {t.name for t in ivg.fig_order_sensitivity(od).data} == {"model", "gd1", "sgd"}
    lm = pd.DataFrame({"k": [1, 1], "metric": ["simaou", "simaou_random"], "value": [0.3, 0.0],
                       "layer": [0, 0]})
    assert len(ivg.fig_simaou(lm).data) == 2
