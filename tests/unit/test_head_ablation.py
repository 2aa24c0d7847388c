"""Known answers for circuits.head_ablation (Yin & Steinhardt's FV-vs-induction ablations): the
selection with exclusion, the layer-matched control, and mean ablation at the read-out."""

from __future__ import annotations

import pytest
import torch

from circuits import head_ablation as HA
from circuits.vectors import mean_head_outputs
from experiments.tasks import task_batch
from tests.helpers import tiny_bridge


def test_select_heads_takes_the_top_p_after_excluding_the_other_scores_top():
    primary = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.8, 0.7, 0.0, 0.3], [0.6, 0.4, 0.05, 0.15]])
    other = torch.zeros(3, 4)
    other[0, 0] = 1.0  # the strongest head by the other score is also primary's top
    sel, ex = HA.select_heads(primary, other, p=0.25, exclude=1 / 12)
    assert ex == [(0, 0)] and sel == [(1, 0), (1, 1), (2, 0)]  # 3 of 12 heads, (0, 0) excluded
    assert HA.select_heads(primary, None, p=0.25)[0] == [(0, 0), (1, 0), (1, 1)]
    assert HA.select_heads(primary, other, p=0.01, exclude=0)[0] == [(0, 0)]  # at least one head
    assert HA.select_heads(primary, other, p=0.0)[0] == []
    with pytest.raises(HA.HeadAblationError, match="fraction of all heads"):
        HA.select_heads(primary, other, p=5)
    with pytest.raises(HA.HeadAblationError, match="same model"):
        HA.select_heads(primary, torch.zeros(2, 4))


def test_matched_random_has_the_selections_layer_counts_and_avoids_it():
    sel = [(0, 1), (0, 2), (3, 0)]
    avoid = [(0, 3)]
    for seed in range(20):
        ctl = HA.matched_random(sel, n_heads=8, seed=seed, avoid=avoid)
        assert sorted(layer for layer, _ in ctl) == [0, 0, 3]
        assert not set(ctl) & (set(sel) | set(avoid)) and len(set(ctl)) == 3
    draws = {tuple(HA.matched_random(sel, 8, seed=s, avoid=avoid)) for s in range(20)}
    assert len(draws) > 5 and HA.matched_random(sel, 8, 3, avoid) == HA.matched_random(sel, 8, 3, avoid)
    with pytest.raises(HA.HeadAblationError, match="layer-matched control is impossible"):
        HA.matched_random([(0, 0), (0, 1)], n_heads=3, avoid=[(0, 2)])
    # nearest=True: a full layer's deficit comes from the nearest layers that have heads left
    near = HA.matched_random([(1, 0), (1, 1), (1, 2)], n_heads=3, n_layers=4, nearest=True)
    assert len(near) == 3 and all(layer in (0, 2) for layer, _ in near)


@pytest.fixture(scope="module")
def tiny():
    model = tiny_bridge(n_layers=2, n_heads=4, d_vocab=50, seed=1)
    batch = task_batch("kv-recall", 3, 6, 0, vocab=50)
    return model, batch


def test_mean_ablation_of_nothing_or_of_a_typical_value_changes_nothing(tiny):
    model, batch = tiny
    mean_z = mean_head_outputs(model, batch)
    clean = HA.mean_ablated_logits(model, batch, [[]], mean_z)[0]
    from probes.readout import readout_logits

    with torch.no_grad():
        ref = readout_logits(model, batch.trim())
    torch.testing.assert_close(clean, ref, atol=1e-5, rtol=1e-4)
    # one prompt repeated: the mean over the prompts is that prompt's own output
    one = batch.select([0, 0, 0])
    z1 = mean_head_outputs(model, one)
    every = [(layer, h) for layer in range(2) for h in range(4)]
    torch.testing.assert_close(HA.mean_ablated_logits(model, one, [every], z1)[0],
                               HA.mean_ablated_logits(model, one, [[]], z1)[0], atol=1e-5, rtol=1e-4)


def test_batched_sets_equal_one_forward_per_set(tiny):
    model, batch = tiny
    mean_z = mean_head_outputs(model, batch)
    sets = [[(0, 1)], [(1, 2), (1, 3)], [], [(0, 0), (1, 0)]]
    together = HA.mean_ablated_logits(model, batch, sets, mean_z, chunk=10_000)
    apart = torch.cat([HA.mean_ablated_logits(model, batch, [s], mean_z) for s in sets])
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[0], together[2])  # ablating a head does change the read-out
    with pytest.raises(HA.HeadAblationError, match="outside the model"):
        HA.mean_ablated_logits(model, batch, [[(5, 0)]], mean_z)


def test_ablating_the_induction_heads_breaks_induction_and_a_matched_control_does_not():
    """induction-2l copies with its layer-1 induction heads (scores 0.84-0.92) after the
    layer-0 previous-token head L0H2: mean-ablating L0H2 at the read-out leaves the copy (its
    output at the read-out is not what the induction heads read), ablating every layer-1 head
    destroys it."""
    from experiments.models.loading import load_model

    model = load_model("induction-2l")
    batch = task_batch("induction", 1, 64, 0)
    mean_z = mean_head_outputs(model, batch)
    heads = model.cfg.n_heads
    sets = [[], [(1, h) for h in range(heads)], [(0, 2)]]
    acc = HA.correct(HA.mean_ablated_logits(model, batch, sets, mean_z), batch).mean(1)
    assert acc[0] > 0.8 and acc[1] < 0.2 and acc[2] > 0.8, acc
