"""Known-answer tests for circuits.anchors: label-word saliency and flows."""

import pytest
import torch

from circuits import anchors
from experiments.studies.vectors_study import toy_prompts
from tests.helpers import tiny_bridge


def test_flows_of_hand_made_saliency_equal_hand_computation():
    # I[i, j] = 10 i + j below the diagonal; garbage on/above it and past the read-out row 5.
    n = 7
    I = torch.full((n, n), 999.0)
    for i in range(n):
        for j in range(i):
            I[i, j] = 10 * i + j
    I[6, :] = 1e6
    f = anchors.flows(I, [2, 4], readout=5)
    # S_wp: rows 2 and 4, columns before them: (20+21 + 40+41+42+43) / (2+4)
    assert f["S_wp"].item() == pytest.approx(207 / 6)
    # S_pq: I[5,2] + I[5,4] over C = 2
    assert f["S_pq"].item() == pytest.approx(53.0)
    # total strictly-lower mass over rows 1..5 = 10+41+93+166+260 = 570; rest = 570-207-106 = 257
    # over 5*6/2 - 6 - 2 = 7 pairs
    assert f["S_ww"].item() == pytest.approx(257 / 7)


def test_flows_broadcast_over_layers_and_validate():
    I = torch.rand(3, 6, 6)
    f = anchors.flows(I, torch.tensor([1, 3]), 5)
    for l in range(3):
        g = anchors.flows(I[l], [1, 3], 5)
        for k in anchors.FLOWS:
            assert torch.isclose(f[k][l], g[k])
    with pytest.raises(anchors.PromptError, match="before the read-out"):
        anchors.flows(I[0], [5], 5)
    with pytest.raises(anchors.PromptError, match="at least one"):
        anchors.flows(I[0], [], 5)


@pytest.fixture(scope="module")
def model():
    return tiny_bridge(attn_only=False, seed=5)


@pytest.fixture(scope="module")
def batch():
    return toy_prompts(k=3, n_prompts=4, seed=2)


def test_saliency_batched_equals_looped_and_diagonal_is_zero(model, batch):
    sal = anchors.attention_saliency(model, batch)
    assert sal.shape[:2] == (model.cfg.n_layers, batch.batch_size)
    assert (sal.diagonal(dim1=-2, dim2=-1) == 0).all()
    for b, row in enumerate(batch.to_list()):
        one = anchors.attention_saliency(model, row)
        T = row.seq_len
        assert torch.allclose(sal[:, b, :T, :T], one[:, 0], atol=1e-6, rtol=1e-4)
    assert all(len(hp._forward_hooks) == 0 for _, hp in model.hook_dict.items())


def test_last_layer_saliency_only_in_readout_row(model, batch):
    """In the last layer only the read-out row's attention reaches the read-out logits."""
    sal = anchors.attention_saliency(model, batch)[-1]
    for b in range(batch.batch_size):
        q = int(batch.readout[b])
        rows = torch.ones(sal.shape[1], dtype=torch.bool)
        rows[q] = False
        assert sal[b, rows].abs().max() == 0
        assert sal[b, q].sum() > 0
    f = anchors.batch_flows(anchors.attention_saliency(model, batch), batch)
    assert (f[-1, :, 0] == 0).all()  # S_wp = 0 in the last layer


def test_saliency_entry_equals_finite_difference(model, batch):
    """I(q, k) = |d loss / d eps| when entry (q, k) of every head's pattern is scaled by 1 + eps."""
    one = batch.select([0]).trim()
    layer, q, k = 0, int(one.readout[0]), 3
    sal = anchors.attention_saliency(model, one)[layer, 0, q, k]

    def loss_at(eps: float) -> float:
        def hook(p, hook):
            p = p.clone()
            p[:, :, q, k] = p[:, :, q, k] * (1 + eps)
            return p
        with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", hook)]):
            logits = model(one.tokens)
        return float(torch.nn.functional.cross_entropy(logits[0, q][None].double(), one.target))

    eps = 1e-2
    fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert abs(fd) == pytest.approx(float(sal), rel=2e-2, abs=1e-6)


def test_saliency_needs_targets(model, batch):
    from dataclasses import replace

    bad = replace(batch, target=torch.full_like(batch.target, -1))
    with pytest.raises(anchors.PromptError, match="target"):
        anchors.attention_saliency(model, bad)
