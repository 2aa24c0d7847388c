"""The fv_heads analysis on a tiny model: its rows hold what the ablation functions give, the
selection honours the exclusion and the layer-matched control, and its statistics pair them."""

from __future__ import annotations

import pytest
import torch

from circuits import head_ablation as HA
from experiments.runs.analyses import fv_heads as FH
from experiments.runs.analyses import get_analysis
from experiments.tasks import task_batch
from tests.helpers import tiny_bridge


@pytest.fixture(scope="module")
def run():
    model = tiny_bridge(n_layers=4, n_heads=8, d_model=32, d_vocab=50, seed=3)
    mp = pytest.MonkeyPatch()
    mp.setattr(FH, "get_model", lambda name, precision: model)
    mp.setattr(FH, "make_task_batch",
               lambda m, t, k, seed, n: task_batch("kv-recall", k, n, seed + (7 if t == "b" else 0), vocab=50))
    params = {**get_analysis("fv_heads").params, "score_tasks": ["a", "b"], "n_prompts": 24, "n_aie_prompts": 8,
              "percents": [5, 10], "exclude": 3.125}
    table = FH._fv_heads("tiny", "eval", 3, 0, params).table
    yield model, params, table
    mp.undo()


def test_rows_hold_the_ablation_functions_outcomes(run):
    model, params, table = run
    corr = table[table["metric"] == "correct"]
    assert set(corr["condition"]) == {"unablated", "fv:5", "fv:5:random", "induction:5", "induction:5:random",
                                      "fv:10", "fv:10:random", "induction:10", "induction:10:random"}
    assert (corr.groupby("condition").size() == 24).all()
    batch = task_batch("kv-recall", 3, 24, 0, vocab=50)
    from probes.readout import model_accuracy

    assert corr[corr["condition"] == "unablated"]["value"].mean() == pytest.approx(model_accuracy(model, batch))
    # the fv:25 set recomputed by hand gives the stored outcomes
    heads = [tuple(int(x) for x in h[1:].split("H")) for h in corr[corr["condition"] == "fv:10"]["heads"].iloc[0].split(";")]
    from circuits.vectors import mean_head_outputs

    again = HA.correct(HA.mean_ablated_logits(model, batch, [heads], mean_head_outputs(model, batch)), batch)[0]
    assert corr[corr["condition"] == "fv:10"].sort_values("prompt")["value"].tolist() == again.tolist()


def test_selection_excludes_the_other_scores_top_and_the_control_matches_layers(run):
    _, _, table = run
    score = {m: table[table["metric"] == f"{m}_score"].pivot(index="layer", columns="head", values="value")
             for m in ("fv", "induction")}
    corr = table[table["metric"] == "correct"].drop_duplicates("condition").set_index("condition")["heads"]

    def parse(s):
        return [tuple(int(x) for x in h[1:].split("H")) for h in s.split(";") if h]
    for name, other in (("fv", "induction"), ("induction", "fv")):
        for p in (5, 10):
            sel, ctl = parse(corr[f"{name}:{p}"]), parse(corr[f"{name}:{p}:random"])
            assert len(sel) == round(32 * p / 100)
            top_other = HA.ranked_heads(torch.tensor(score[other].to_numpy()))[0]  # 3.125% of 32 heads: 1
            assert top_other not in sel and top_other not in ctl and not set(sel) & set(ctl)
            assert sorted(layer for layer, _ in sel) == sorted(layer for layer, _ in ctl)
    per_task = table[table["metric"] == "fv_score:task"].groupby(["layer", "head"])["value"].mean()
    fv = table[table["metric"] == "fv_score"].set_index(["layer", "head"])["value"]
    assert (per_task - fv).abs().max() < 1e-6  # the FV score is the mean over the score tasks


def test_stats_pair_each_ablation_with_its_control_the_unablated_model_and_the_other_score(run):
    _, _, table = run
    cmp = FH.fv_heads_stats(table.assign(model="tiny", task="eval", k=3)).comparisons
    pairs = set(zip(cmp["condition"], cmp["control"]))
    assert {("fv:5", "fv:5:random"), ("fv:5", "unablated"), ("fv:5", "induction:5"),
            ("induction:10", "induction:10:random")} <= pairs
    assert (cmp["n"] == 24).all() and (cmp["test"] == "mcnemar").all() and cmp["q_value"].notna().all()


def test_bad_parameters_are_refused_before_any_work():
    spec = get_analysis("fv_heads")
    base = spec.resolve_params({"score_tasks": ["fv:antonym"]})
    assert spec.check_params("m", "fv:capitalize", 4, base) is None
    assert "score_tasks is empty" in spec.check_params("m", "fv:antonym", 4, {**base, "score_tasks": []})
    assert "also a score task" in spec.check_params("m", "fv:antonym", 4, base)
    assert "percentages" in spec.check_params("m", "fv:capitalize", 4, {**base, "percents": [0]})
    assert "fv_score" in spec.check_params("m", "fv:capitalize", 4, {**base, "fv_score": "magic"})
