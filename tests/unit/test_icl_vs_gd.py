"""ICL versus GD: known answers for the metrics, the GD baseline and the hand-built GD layer."""

import math

import pandas as pd
import pytest
import torch

from experiments.models.zoo.linreg import gd_lsa, random_lsa
from experiments.studies import icl_vs_gd as ivg
from experiments.studies import linreg_gd
from experiments.studies import tidy as tidy_mod
from experiments.studies.gd import (
    FineTuner,
    GDConfig,
    GDConfigError,
    demo_examples,
    select_parameters,
    state_hash,
)
from experiments.tasks import linreg as lr
from probes.prompt import PromptBatch, PromptBuilder
from tests.helpers import tiny_bridge

BOS, COLON, SEP = 1, 2, 3


def toy_prompts(k: int, seed: int, n: int = 6) -> PromptBatch:
    """BOS [x : y SEP]*k x_q : with a random item->label mapping per prompt (labels 40, 41)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        items = (torch.randperm(20, generator=g)[:4] + 10).tolist()
        labels = [40 + int(torch.randint(0, 2, (1,), generator=g)) for _ in items]
        pb = PromptBuilder().add([BOS])
        for _ in range(k):
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
    df = linreg_gd.compare_linreg(model, ks=[1, 3, 6, 12], n_tasks=128, gd_lr=eta)
    assert (df["preds_diff"] < 1e-5).all()
    assert (df["sens_cos"] > 1 - 1e-5).all()
    assert (df["sens_l2"] < 1e-5).all()
    # with the grid-searched lr, agreement in direction stays perfect (cos 1)
    df2 = linreg_gd.compare_linreg(model, ks=[6], n_tasks=128)
    assert df2["sens_cos"].iloc[0] > 1 - 1e-5


def test_random_layer_is_not_gd():
    df = linreg_gd.compare_linreg(random_lsa(6, seed=3), ks=[3, 6], n_tasks=128)
    assert (df["preds_diff"] > 0.1).all()
    assert (df["sens_cos"] < 0.9).all()


def test_full_batch_gd_is_order_invariant_sgd_is_not():
    tasks = lr.make_tasks(64, 8, 5, seed=2)
    assert linreg_gd.order_spread(lambda b: lr.gd(b, 0.5, 3), tasks, n_perms=6) < 1e-6
    assert linreg_gd.order_spread(lambda b: lr.sgd(b, 0.3), tasks, n_perms=6) > 1e-2
    df = linreg_gd.linreg_order_sensitivity(gd_lsa(5, 0.5), ks=[6], n_tasks=32, n_perms=4)
    by = dict(zip(df["method"], df["order_std"]))
    assert by["model"] < 1e-5 and by["gd1"] < 1e-6 and by["sgd"] > 1e-2


def test_sensitivity_of_gd_is_its_weight():
    tasks = lr.make_tasks(16, 7, 4, seed=5)
    s = linreg_gd.sensitivity(lambda b: lr.gd(b, 0.4, 2), tasks)
    assert torch.allclose(s, lr.gd_w(tasks, 0.4, 2), atol=1e-6)


def test_tidy_has_provenance():
    df = linreg_gd.compare_linreg(gd_lsa(4, 0.5), ks=[2], n_tasks=32, gd_lr=0.5, name="hand")
    long = tidy_mod.tidy(df, ["model", "task", "k", "seed"], tidy_mod.provenance({"a": 1}))
    assert {"model", "task", "k", "seed", "metric", "value", "config_hash"} <= set(long.columns)
    assert set(long["model"]) == {"hand"}


# ---------------------------------------------------------------------- language-model GD
def test_prompt_surgery_roles():
    batch = toy_prompts(3, seed=1, n=2)
    zs = batch.zero_shot()
    assert zs.n_demos == 0 and zs.tokens[0, 0] == BOS
    assert zs.tokens[0, int(zs.readout[0])] == COLON
    assert torch.equal(zs.target, batch.target)
    toks, lengths, pos, labels = demo_examples(batch, 0)
    assert torch.equal(labels, batch.label_tokens[0])
    assert (toks[torch.arange(3), pos] == COLON).all() and (toks[:, 0] == BOS).all()
    # reversing twice restores the prompt; one reversal moves the labels with their inputs
    rev = batch.select([0]).permute_demos([[2, 1, 0]])
    assert torch.equal(rev.label_tokens[0], batch.label_tokens[0].flip(0))
    back = rev.permute_demos([[2, 1, 0]])
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
    zs = batch.zero_shot()
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
    agg = df[df["prompt"] < 0]
    assert len(agg[(agg["metric"] == "simaou") & (agg["k"] == 2)]) == model.cfg.n_layers
    acc = df[df["metric"].str.startswith("acc_")]["value"]
    assert ((acc >= 0) & (acc <= 1)).all()
    summary = ivg.summarize_lm(df)
    assert set(summary["k"]) == {1, 2}
    # per-prompt rows: same metric names, their mean is the aggregate row
    per = df[df["prompt"] >= 0]
    for m in ("acc_icl", "kl_icl_gd", "tv_icl_gd", "topk_overlap", "order_std_icl"):
        for k in (1, 2):
            rows = per[(per.metric == m) & (per.k == k)]
            if m == "order_std_icl" and k == 1:
                assert rows.empty  # one demonstration has one order
                continue
            assert len(rows) == (2 if m.startswith("order") else 4)
            assert rows["value"].mean() == pytest.approx(float(agg[(agg.metric == m) & (agg.k == k)]["value"].iloc[0]), abs=1e-6)
    sim = per[(per.metric == "simaou") & (per.k == 2) & (per.layer == 0)]["value"].mean()
    assert sim == pytest.approx(float(agg[(agg.metric == "simaou") & (agg.k == 2) & (agg.layer == 0)]["value"].iloc[0]), abs=1e-5)
    st = ivg.icl_vs_gd_stats(df)
    cmp = st.comparisons
    assert {("acc_icl", "acc_zs"), ("acc_icl", "acc_gd"), ("simaou", "simaou_random"),
            ("order_std_icl", "order_std_gd"), ("tv_icl_gd", "tv_icl_zs")} <= set(zip(cmp.condition, cmp.control))
    assert (cmp[cmp.condition == "acc_icl"]["test"] == "mcnemar").all()
    assert cmp["q_value"].notna().all() and (cmp["q_value"] >= cmp["p_value"] - 1e-12).all()
    assert (st.estimates[st.estimates.metric == "acc_icl"]["n"] == 4).all()


def _sim_lm_table(n: int, effect: float, seed: int = 0) -> pd.DataFrame:
    """A simulated per-prompt ICL-vs-GD table over two seeds: ICL fixes a share ``effect`` of
    zero-shot's errors' prompts more than GD; TV(ICL, GD) is smaller than TV(ICL, ZS) by 0.1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for s in (0, 1):
        zs = (rng.random(n) < 0.3).astype(float)
        gd = np.maximum(zs, rng.random(n) < 0.2).astype(float)
        icl = np.where(rng.random(n) < effect, 1.0, gd)
        tv_zs = rng.uniform(0.3, 0.7, n)
        tv_gd = tv_zs - 0.1 + rng.normal(0, 0.05, n)
        for m, vals in (("acc_zs", zs), ("acc_gd", gd), ("acc_icl", icl), ("tv_icl_zs", tv_zs), ("tv_icl_gd", tv_gd)):
            rows += [{"model": "sim", "task": "t", "k": 4, "seed": s, "metric": m, "layer": -1, "prompt": i,
                      "value": float(v)} for i, v in enumerate(vals)]
            rows.append({"model": "sim", "task": "t", "k": 4, "seed": s, "metric": m, "layer": -1, "prompt": -1,
                         "value": float(vals.mean())})
    return pd.DataFrame(rows)


def test_icl_vs_gd_stats_known_effect_and_invariants():
    df = _sim_lm_table(150, 0.5)
    st = ivg.icl_vs_gd_stats(df)
    cmp = st.comparisons.set_index(["condition", "control"])
    tv = cmp.loc[("tv_icl_gd", "tv_icl_zs")]
    assert tv["n"] == 300  # two seeds pool into the prompt sample
    assert tv["effect_ci_low"] < -0.1 < tv["effect_ci_high"]
    assert tv["verdict"] == "significant" and tv["test"] == "paired permutation"
    icl_gd = cmp.loc[("acc_icl", "acc_gd")]
    assert icl_gd["verdict"] == "significant" and icl_gd["effect"] > 0.2
    acc = st.estimates.set_index("metric").loc["acc_zs"]
    assert acc["ci_low"] < 0.3 < acc["ci_high"]
    # a condition compared with itself: effect 0, p = 1
    same = df[df.metric == "acc_gd"].assign(metric="acc_icl")
    same = pd.concat([df[df.metric == "acc_gd"], same], ignore_index=True)
    row = ivg.icl_vs_gd_stats(same).comparisons.iloc[0]
    assert (row["condition"], row["control"]) == ("acc_icl", "acc_gd")
    assert row["effect"] == 0 and row["p_value"] == 1.0 and row["verdict"] != "significant"
    with pytest.raises(ValueError, match="per-prompt"):
        ivg.icl_vs_gd_stats(df.drop(columns="prompt"))


def test_linreg_task_rows_and_stats_on_the_gd_layer():
    """The hand-built GD layer with GD's own lr is GD: per task, sensitivity cosine 1 and the
    same error as one GD step (effect 0, p = 1); least squares beats it at k = 2d."""
    d, k = 4, 8
    model = gd_lsa(d, lr.best_gd_lr(k, d, 1, "normal"))
    rows = linreg_gd.linreg_task_rows(model, k, d=d, n_tasks=64, seed=0, n_perms=3, n_order_tasks=16)
    assert set(rows.prompt) == set(range(64))
    wide = linreg_gd.compare_linreg(model, [k], d=d, n_tasks=64, seed=0).iloc[0]
    for m in ("err_model", "err_least_squares", "sens_cos", "preds_diff"):
        assert rows[rows.metric == m]["value"].mean() == pytest.approx(wide[m], rel=1e-5, abs=1e-6)
    st = ivg.icl_vs_gd_stats(rows.assign(model="gd_lsa", task="linreg", k=k))
    cmp = st.comparisons.set_index(["condition", "control"])
    gd1 = cmp.loc[("err_model", "err_gd1")]
    assert abs(gd1["effect"]) < 1e-5 and gd1["p_value"] > 0.5 and gd1["verdict"] != "significant"
    ls = cmp.loc[("err_model", "err_least_squares")]
    assert ls["effect"] > 0 and ls["verdict"] == "significant"
    assert ("order_std_model", "order_std_sgd") in cmp.index
    cos = st.estimates.set_index("metric").loc["sens_cos"]
    assert cos["value"] == pytest.approx(1.0, abs=1e-5) and cos["n"] == 64


def test_figures_build():
    import plotly.graph_objects as go

    df = linreg_gd.compare_linreg(gd_lsa(4, 0.5), ks=[2, 4], n_tasks=32, gd_lr=0.5, name="hand")
    fig = linreg_gd.fig_error_vs_k(df)
    assert isinstance(fig, go.Figure)
    names = {t.name for t in fig.data}
    assert {"model", "least_squares", "gd1"} <= names
    assert len(linreg_gd.fig_sensitivity(df).data) == 2
    od = linreg_gd.linreg_order_sensitivity(gd_lsa(4, 0.5), ks=[4], n_tasks=8, n_perms=2)
    assert {t.name for t in ivg.fig_order_sensitivity(od).data} == {"model", "gd1", "sgd"}
    lm = pd.DataFrame({"k": [1, 1], "metric": ["simaou", "simaou_random"], "value": [0.3, 0.0],
                       "layer": [0, 0]})
    assert len(ivg.fig_simaou(lm).data) == 2
    # per-prompt rows give the CI: two prompts 0.2 and 0.4, whose bootstrap means span [0.2, 0.4]
    per = pd.DataFrame({"k": 1, "metric": "simaou", "value": [0.2, 0.4], "layer": 0, "prompt": [0, 1]})
    tr = ivg.fig_simaou(pd.concat([lm.assign(prompt=-1), per], ignore_index=True)).data[0]
    assert list(tr.y) == pytest.approx([0.3]) and list(tr.customdata) == [2]
    assert (tr.error_y.array[0], tr.error_y.arrayminus[0]) == pytest.approx((0.1, 0.1))
