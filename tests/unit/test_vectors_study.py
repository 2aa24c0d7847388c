"""experiments.studies.vectors_study: tidy tables whose numbers equal direct library computations."""

import math

import pandas as pd
import pytest

from circuits import vectors
from experiments.studies import vectors_figures as vf
from experiments.studies import vectors_study as vs
from probes.readout import model_accuracy
from tests.helpers import tiny_bridge


@pytest.fixture(scope="module")
def model():
    return tiny_bridge(attn_only=False, seed=7)


@pytest.fixture(scope="module")
def study(model):
    # 40 eval prompts: more than one accuracy chunk (32), so per-chunk read-out hooks are exercised
    return vs.run_study(model, "tiny", "toy", k=3, n_prompts=40, n_dev=8, seed=0, lambdas=(0.0, 0.3),
                        n_heads=3)


def test_tables_have_provenance_and_every_condition(study):
    acc = study["accuracy"]
    for col in ("model", "task", "k", "seed", "method", "condition", "accuracy", "n_prompts"):
        assert col in acc.columns
    assert set(acc.condition) == set(vs.CONDITIONS)
    s = study["summary"]
    assert list(s.method) == ["task_vector", "function_vector", "icv"]
    assert (s.n_prompts == 40).all()
    assert set(study["anchors"].flow) == {"S_wp", "S_pq", "S_ww"}


def test_numbers_equal_direct_computation(model, study):
    sets = vs.prompt_sets(model, "toy", 3, 40, 0, n_dev=8)
    zs = sets.eval.zero_shot()
    acc = study["accuracy"]
    ev = acc[acc.split == "eval"]
    zero = ev[(ev.method == "task_vector") & (ev.condition == "zero-shot")].accuracy.iloc[0]
    assert zero == pytest.approx(model_accuracy(model, zs, batch_size=64))
    icl = ev[(ev.method == "task_vector") & (ev.condition == "ICL")].accuracy.iloc[0]
    assert icl == pytest.approx(model_accuracy(model, sets.eval, batch_size=64))
    tv = vectors.task_vector(model, sets.extract)
    want = model_accuracy(model, zs, vectors.readout_hooks(zs, 1, tv[1], mode="replace"), batch_size=64)
    got = ev[(ev.method == "task_vector") & (ev.condition == "with vector") & (ev.layer == 1)].accuracy.iloc[0]
    assert got == pytest.approx(want)
    # ICV with lambda 0 is the zero-shot prompt
    lam0 = ev[(ev.method == "icv") & (ev.condition == "with vector") & (ev.lam == 0)].accuracy.iloc[0]
    assert lam0 == pytest.approx(zero)


def test_summary_picks_dev_best(study):
    acc, s = study["accuracy"], study["summary"]
    dev = acc[(acc.split == "dev") & (acc.method == "task_vector") & (acc.condition == "with vector")]
    row = s[s.method == "task_vector"].iloc[0]
    assert dev[dev.layer == row.layer].accuracy.iloc[0] == dev.accuracy.max()
    assert not math.isnan(row["with random vector"])


def test_bad_input_is_a_clear_error(model):
    with pytest.raises(vs.StudyError, match="unknown task"):
        vs.make_task_prompts(model, "poetry", 2, 4, 0)
    with pytest.raises(vs.StudyError, match="k >= 1"):
        vs.prompt_sets(model, "toy", 0, 4, 0)
    with pytest.raises(vs.StudyError, match="tokenizer"):
        vs.make_task_prompts(model, "sentiment", 2, 4, 0)
    with pytest.raises(vs.StudyError, match="unknown methods"):
        vs.run_study(model, "tiny", "toy", methods=("magic",))


def test_figures_are_plotly(study):
    import plotly.graph_objects as go

    assert isinstance(vf.summary_figure(study["summary"]), go.Figure)
    est = vs.vectors_stats(study["per_prompt"]).estimates
    fig = vf.summary_figure(study["summary"], est)
    assert "95% CI" in fig.layout.title.text
    bar = next(t for t in fig.data if t.name == "with vector")
    e = est[est.condition == "with vector"]
    assert list(bar.y) == pytest.approx(list(e["value"]))  # error bars are the Wilson CIs
    assert list(bar.y + bar.error_y.array) == pytest.approx(list(e["ci_high"]))
    assert list(bar.y - bar.error_y.arrayminus) == pytest.approx(list(e["ci_low"]))
    for m in ("task_vector", "function_vector", "icv"):
        fig = vf.sweep_figure(study["accuracy"], m)
        assert len(fig.data) == 2
    assert isinstance(vf.flows_figure(study["anchors"]), go.Figure)
    assert vf.aie_figure(study["aie"]).data[0].z.shape == (2, 4)


def test_per_prompt_outcomes_match_the_accuracy_rows(study):
    per, acc = study["per_prompt"], study["accuracy"]
    assert (acc["prompt"] == -1).all() and "correct" not in acc.columns
    keys = ["method", "condition", "layer", "lam", "split"]
    means = per.groupby(keys, dropna=False)["value"].agg(["mean", "count"]).reset_index()
    both = acc.merge(means, on=keys, how="left")
    assert len(both) == len(acc) and (both["count"] == both["n_prompts"]).all()
    assert (both["mean"] - both["accuracy"]).abs().max() < 1e-9
    st = vs.vectors_stats(per)
    cmp = st.comparisons
    assert set(cmp.method) == {"task_vector", "function_vector", "icv"}
    for _, g in cmp.groupby("method"):
        assert sorted(zip(g.condition, g.control)) == sorted(vs.VECTOR_PAIRS)
    assert (cmp.n == 40).all() and (cmp.test == "mcnemar").all() and cmp.mde.notna().any()
    # the reported "with vector" accuracy is the summary's (same dev choice)
    s = study["summary"].set_index("method")
    est = st.estimates[st.estimates.condition == "with vector"].set_index("method")
    for m in s.index:
        assert est.loc[m, "value"] == pytest.approx(s.loc[m, "with vector"])
        assert est.loc[m, "ci_low"] <= est.loc[m, "value"] <= est.loc[m, "ci_high"]


def test_hand_made_vector_has_its_known_effect(model):
    """A vector that, written into the last layer's read-out residual, makes the model answer
    label 3 on every prompt: its accuracy is exactly the share of prompts whose answer is 3, and
    its effect against zero-shot is that share minus zero-shot's accuracy, on the same prompts."""
    import pandas as pd

    sets = vs.prompt_sets(model, "toy", 3, 60, 1, n_dev=8)
    info = vs.StudyInfo("tiny", "toy", 3, 1)
    W_U = model.W_U.detach()
    push = sum(W_U[:, 3] - W_U[:, c] for c in (4, 5))
    vec = 50.0 * push / push.norm()
    last = model.cfg.n_layers - 1
    rows = vs.baselines(model, sets, info, "hand") + vs._sweep_readout(model, sets, info, "hand", {last: vec},
                                                                        "replace", 0)
    per = vs.per_prompt_table(pd.DataFrame(rows))
    ev = per[(per.split == "eval") & (per.condition == "with vector")].sort_values("prompt")
    want = (sets.eval.target == 3).float()
    assert ev["value"].tolist() == want.tolist()
    st = vs.vectors_stats(per)
    row = st.comparisons.set_index(["condition", "control"]).loc[("with vector", "zero-shot")]
    zs = per[(per.split == "eval") & (per.condition == "zero-shot")]["value"].mean()
    assert row["value"] == pytest.approx(float(want.mean()))
    assert row["effect"] == pytest.approx(float(want.mean()) - zs)
    assert row["n"] == 60 and row["chosen"] == f"seed 1: layer={last}"


def test_anchor_flows_per_prompt_and_stats(model, study):
    f = study["anchors"]
    agg, per = f[f.prompt < 0], f[f.prompt >= 0]
    mean = per.groupby(["layer", "flow"])["value"].mean()
    assert (agg.set_index(["layer", "flow"])["value"] - mean).abs().max() < 1e-6
    st = vs.anchors_stats(f)
    cmp = st.comparisons
    assert len(cmp) == model.cfg.n_layers * len(vs.ANCHOR_PAIRS)
    assert (cmp.test == "paired permutation").all() and cmp.q_value.between(0, 1).all()
    # a flow against itself: effect 0, p = 1
    same = per[per.flow == "S_ww"]
    twin = pd.concat([same, same.assign(flow="S_wp")], ignore_index=True)
    r = vs.anchors_stats(twin).comparisons.iloc[0]
    assert r["effect"] == 0 and r["p_value"] == 1.0 and r["verdict"] != "significant"
    assert len(vf.flows_figure(f).data) == 3 and len(vf.flows_figure(f).data[0].x) == model.cfg.n_layers


def test_function_vector_scales_are_searched_on_dev_with_a_scaled_random_control(model):
    """Scale 1 reproduces the unscaled study; each scale's vector and random control have that
    multiple of the norm; the summary reports the dev-best (layer, scale); bad scales are refused."""
    info = vs.StudyInfo("tiny", "toy", 3, 0)
    kw = dict(n_heads=3, layers=[0, 1], n_aie_prompts=8)
    plain, _ = vs.function_vector_study(model, vs.prompt_sets(model, "toy", 3, 12, 0, n_dev=8), info, **kw)
    scaled, _ = vs.function_vector_study(model, vs.prompt_sets(model, "toy", 3, 12, 0, n_dev=8), info,
                                         scales=(1.0, 2.5), **kw)
    injected = scaled[scaled.condition.isin(["with vector", "with random vector"])]
    assert set(injected.lam) == {1.0, 2.5} and plain.lam.isna().all()
    one = injected[injected.lam == 1.0].drop(columns="lam").reset_index(drop=True)
    ref = plain[plain.condition.isin(["with vector", "with random vector"])].drop(columns="lam")
    pd.testing.assert_frame_equal(one, ref.reset_index(drop=True))
    norms = injected.groupby(["lam", "layer"]).vector_norm.first()
    assert norms.loc[2.5].to_numpy() == pytest.approx(2.5 * norms.loc[1.0].to_numpy())
    acc = scaled.drop(columns="correct").assign(prompt=-1)
    row = vs.summary_table(acc).iloc[0]
    dev = acc[(acc.split == "dev") & (acc.condition == "with vector")]
    assert dev[(dev.layer == row.layer) & (dev.lam == row.lam)].accuracy.iloc[0] == dev.accuracy.max()
    with pytest.raises(vs.StudyError, match="positive"):
        vs.function_vector_study(model, vs.prompt_sets(model, "toy", 3, 4, 0), info, scales=(0.0,), **kw)
