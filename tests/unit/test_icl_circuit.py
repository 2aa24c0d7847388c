"""The summarize-merge-retrieve circuit on the hand-built label-copy model (known answers)."""

import pytest
import torch

from circuits import icl_circuit as C
from circuits import toy
from circuits.sweeps import layer_window


@pytest.fixture(scope="module")
def table():
    model = toy.label_copy_model()
    batches = {s: toy.label_copy_batch(16, 3, seed=s) for s in (0, 1)}
    return C.circuit_table(model, batches, model_name="label-copy-toy", task="label-copy")


def _val(t, step, metric, **kw):
    sel = t[(t.step == step) & (t.metric == metric)]
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    return sel.value


def test_table_is_tidy_with_provenance(table):
    assert list(table.columns) == C.COLUMNS
    assert set(table.step) == {"summarize", "merge", "retrieve", "ablation"}
    assert (table.model == "label-copy-toy").all() and (table.k == 3).all() and (table.n_prompts == 16).all()
    assert set(table.seed) == {0, 1} and (table.window == "0-0").all()


def test_ablations_known_answers(table):
    s = C.ablation_summary(table).set_index("ablation")
    assert s.loc["unablated", "acc_mean"] == 1.0
    assert s.loc["zero_shot", "acc_mean"] == 0.5  # no labels in context: chance
    assert s.loc["yi_to_sq", "acc_mean"] == 0.5  # the only label path: chance
    for unused in ("xi_to_si", "si_to_yi", "si_to_sj"):
        assert s.loc[unused, "acc_mean"] == 1.0, unused
    assert s.loc["yi_to_sq", "random_mean"] > s.loc["yi_to_sq", "acc_mean"]
    assert (s.n_seeds == 2).all()


def test_retrieve_finds_the_copy_head(table):
    M = _val(table, "retrieve", "M", layer=0, head=0)
    C_ = _val(table, "retrieve", "C", layer=0, head=0)
    assert torch.allclose(torch.tensor(M.values).float(), torch.ones(2), atol=1e-4)  # all of s_q's attention on labels
    assert torch.allclose(torch.tensor(C_.values).float(), torch.full((2,), 1 / 3), atol=1e-4)  # (2 right - 1 wrong)/3
    assert (_val(table, "retrieve", "best_head_accuracy", layer=0, head=0) == 1.0).all()
    assert (_val(table, "retrieve", "M", layer=0, head=1) < 0.5).all()


def test_summarize_and_merge(table):
    assert (_val(table, "summarize", "centroid_acc:s_q") == 1.0).all()  # s_q holds the copied label
    # no head of this model lets y_i read its forerunner above 5/n_tokens
    assert (_val(table, "merge", "n_heads:correct") == 0).all()
    head1 = _val(table, "merge", "A[y_i->s_i]:correct", head=1)
    assert ((head1 > 0) & (head1 < 0.5)).all()


def test_centroid_accuracy_known_answer():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = torch.randn(40, 5, generator=g) * 0.1 + y[:, None].float() * 3
    assert C.centroid_accuracy(x, y) == 1.0
    assert C.centroid_accuracy(torch.zeros(40, 5), y) <= 0.5


def test_wrong_and_zero_shot_batches():
    batch = toy.label_copy_batch(6, 3)
    wrong = C.wrong_label_batch(batch)
    changed = wrong.tokens != batch.tokens
    assert torch.equal(changed, batch.role_mask("label"))
    zs = batch.zero_shot()
    assert zs.n_demos == 0 and torch.equal(zs.target, batch.target)
    assert torch.equal(zs.tokens[torch.arange(6), zs.readout], torch.full((6,), toy.COLON))


def test_errors_and_window():
    batch = toy.label_copy_batch(4, 1)
    from dataclasses import replace

    with pytest.raises(C.CircuitError, match="target"):
        C.run_circuit(toy.label_copy_model(), replace(batch, target=None))
    open_vocab = C.run_circuit(toy.label_copy_model(), replace(toy.label_copy_batch(8, 3), candidates=None))
    assert "best_head_accuracy" not in set(open_vocab.metric)  # no label set: no label distribution
    assert float(open_vocab[open_vocab.metric == "acc:unablated"].value.iloc[0]) == 1.0
    assert layer_window(1) == [0]
    t = C.run_circuit(toy.label_copy_model(), batch, layers=[0], steps=("ablation",))
    assert set(t.step) == {"ablation"}


def test_plots_return_figures(table):
    from circuits import plots

    fig = plots.ablation_bars(table)
    assert len(fig.data) == 2 and list(fig.data[0].x) == list(C.ABLATIONS)
    assert len(plots.layer_curves(table, "summarize").data) >= 2
    hm = plots.head_heatmap(table, "M", step="retrieve")
    assert abs(hm.data[0].z[0][0] - 1.0) < 1e-4  # head 0 puts all s_q attention on labels
    with pytest.raises(ValueError, match="per-head metrics"):
        plots.head_heatmap(table, "nope")


def test_per_prompt_rows_average_to_the_aggregate(table):
    per = table[table.prompt >= 0].groupby(["seed", "step", "layer", "head", "metric"]).value.mean()
    agg = table[table.prompt < 0].set_index(["seed", "step", "layer", "head", "metric"]).value
    common = per.index.intersection(agg.index)
    assert len(common) > 20
    assert (per.loc[common] - agg.loc[common]).abs().max() < 1e-6
    assert (table[(table.prompt >= 0)].groupby(["seed", "metric"]).size() <= 16).all()


def test_circuit_stats_known_answers(table):
    s = C.ablation_summary(table).set_index("ablation")
    assert (s.n == 32).all()  # 2 seeds x 16 prompts pooled
    # knocking out an edge this model does not use changes nothing: effect 0, p = 1
    for unused in ("xi_to_si", "si_to_yi", "si_to_sj"):
        assert s.loc[unused, "effect"] == 0 and s.loc[unused, "p_value"] == 1.0, unused
        assert s.loc[unused, "verdict"].startswith("no effect detected"), unused
    y = s.loc["yi_to_sq"]
    assert y.effect < 0 and y.effect_ci_high < 0 and y.verdict == "significant"
    assert s.loc["zero_shot", "effect"] == pytest.approx(-0.5) and s.loc["unablated", "ci_low"] > 0.85
    cmp = C.circuit_stats(table).comparisons
    abl = cmp[cmp.family == "ablation"]
    assert len(abl) == 6 and abl.q_value.notna().all()  # 5 knockouts + unablated vs zero-shot: one family


def test_stratified_folds_and_centroid_chance_level():
    y = torch.tensor([0] * 7 + [1] * 4 + [2] * 9)
    fold = C.stratified_folds(y, 2, seed=3)
    for c in range(3):
        n0 = int(((y == c) & (fold == 0)).sum())
        assert abs(2 * n0 - int((y == c).sum())) <= 1
    # no signal: held-out accuracy sits at chance (1/16 here), not below it
    y16 = torch.arange(128) % 16
    accs = [C.centroid_accuracy(torch.randn(128, 32, generator=torch.Generator().manual_seed(s)), y16, seed=s)
            for s in range(60)]
    assert abs(sum(accs) / len(accs) - 1 / 16) < 0.015


@pytest.mark.slow
def test_icl_classify_circuit_separates_real_knockout_from_control():
    """Issue 13's known answer: at k = 4 on 128 prompts, cutting s_q <- y_i is a real effect
    against its random control; s_j <- s_i is not."""
    from experiments import load_model
    from experiments.runs.inputs import make_task_batch

    model = load_model("icl-classify")
    tab = C.circuit_table(model, {0: make_task_batch("icl-classify", "classify", 4, 0, 128)},
                          model_name="icl-classify", task="classify", steps=("ablation",))
    s = C.ablation_summary(tab).set_index("ablation")
    assert s.loc["yi_to_sq", "n"] == 128
    assert s.loc["yi_to_sq", "q_value"] < 0.01 and s.loc["yi_to_sq", "effect_ci_high"] < 0
    assert s.loc["si_to_sj", "q_value"] > 0.05


def test_circuit_report_step_effects_carry_cis(table):
    """scripts/circuit_report.py: every headline has n and an interval; the s_q centroid accuracy
    (1.0 on all 2 x 16 prompts) has n = 32 and Wilson CI [0.8928, 1]."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "circuit_report.py"
    spec = importlib.util.spec_from_file_location("circuit_report", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    eff = mod.step_effects(table)
    assert eff[["n", "value", "ci_low", "ci_high"]].notna().all().all()
    assert (eff.ci_low <= eff.value + 1e-12).all() and (eff.value <= eff.ci_high + 1e-12).all()
    sq = eff[eff.measure.str.startswith("centroid_acc:s_q")].iloc[0]
    assert (sq.n, sq.value, sq.unit) == (32, 1.0, "prompts")
    assert sq.ci_low == pytest.approx(0.8928, abs=1e-4) and sq.ci_high == pytest.approx(1.0)
    counts = eff[eff.measure.str.startswith("heads above")]
    assert (counts.unit == "seeds").all() and (counts.n == 2).all() and (counts.value == 0).all()
