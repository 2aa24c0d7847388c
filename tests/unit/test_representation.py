"""Representation probes: known answers on synthetic data, chance on shuffled labels, kernel
alignment invariances, and hidden states equal to the full cache."""

import pytest
import torch

from probes.prompt import PromptBatch, PromptBuilder
from probes.representation import (
    CentroidProbe,
    LogisticProbe,
    ProbeError,
    kernel_alignment_by_layer,
    knn_alignment,
    layer_probe,
    probe_by_layer,
    probe_figure,
    role_labels,
    role_states,
)
from tests.helpers import tiny_bridge


def blobs(n_per=60, n_cls=4, d=16, sep=6.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_cls, d, generator=g) * sep
    y = torch.arange(n_cls).repeat_interleave(n_per)
    X = means[y] + torch.randn(len(y), d, generator=g)
    return X, y


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["centroid", "logistic"])
def test_separable_reaches_100_and_shuffled_stays_near_chance(kind):
    Xtr, ytr = blobs(seed=0)
    g = torch.Generator().manual_seed(1)
    Xte, yte = blobs(seed=0)
    Xte = Xte + 0.1 * torch.randn(Xte.shape, generator=g)  # same classes, new noise
    layers_tr = torch.stack([torch.randn_like(Xtr), Xtr])  # layer 0: noise, layer 1: separable
    layers_te = torch.stack([torch.randn_like(Xte), Xte])
    acc = probe_by_layer(layers_tr, ytr, layers_te, yte, kind)
    assert acc[1] == 1.0
    assert acc[0] < 0.5  # pure noise: no signal
    shuffled = ytr[torch.randperm(len(ytr), generator=g)]
    X_test_new, y_test_new = blobs(seed=0)
    acc_shuf = probe_by_layer(Xtr[None], shuffled, X_test_new[None], y_test_new, kind)
    assert abs(float(acc_shuf[0]) - 0.25) < 0.15  # 4 classes: chance 0.25


def test_logistic_is_deterministic_and_linear():
    X, y = blobs(n_per=20, n_cls=3, d=5)
    a = LogisticProbe().fit(X, y)
    b = LogisticProbe().fit(X, y)
    assert torch.equal(a.W, b.W)
    # XOR is not linearly separable: a linear probe cannot exceed 3/4 on the 4 corners
    Xx = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]]).repeat(10, 1)
    yx = torch.tensor([0, 1, 1, 0]).repeat(10)
    assert (LogisticProbe().fit(Xx, yx).predict(Xx) == yx).float().mean() <= 0.75


def test_centroid_matches_nearest_mean():
    X = torch.tensor([[0.0, 0], [0, 2], [10, 0], [10, 2]])
    y = torch.tensor([3, 3, 7, 7])
    p = CentroidProbe().fit(X, y)
    assert torch.equal(p.centroids, torch.tensor([[0.0, 1], [10, 1]]))
    assert p.predict(torch.tensor([[4.9, 0], [5.1, 0]])).tolist() == [3, 7]
    with pytest.raises(ProbeError, match="two classes"):
        CentroidProbe().fit(X, torch.zeros(4, dtype=torch.long))


def test_knn_alignment_invariances():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(80, 10, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert knn_alignment(A, A, k=8) == 1.0
    assert knn_alignment(A, 3.0 * A @ Q, k=8) == pytest.approx(1.0)  # cosine: rotation + scale
    B = torch.randn(80, 10, generator=g)
    ka = knn_alignment(A, B, k=8)
    assert ka < 0.3  # independent: about k / (n - 1) = 0.1
    per_layer = kernel_alignment_by_layer(torch.stack([A, B]), A, k=8)
    assert per_layer[0] == 1.0 and per_layer[1] == pytest.approx(ka)
    with pytest.raises(ProbeError, match="k must"):
        knn_alignment(A, A, k=80)


def labelled_batch(n, seed, vocab=50):
    """Prompts whose query class is its first query token's parity class (0..1)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        pb = PromptBuilder().add([1])
        for _ in range(2):
            t = torch.randint(5, vocab, (3,), generator=g).tolist()
            pb.demo(t, 2, 40 + t[0] % 2, cls=t[0] % 2)
        q = torch.randint(5, vocab, (3,), generator=g).tolist()
        pb.query(q, 2)
        rows.append(pb.build(query_class=q[-1] % 2))
    return PromptBatch.concat(rows)


@pytest.mark.slow
def test_role_states_equal_cache_and_layer_probe():
    m = tiny_bridge()
    b = labelled_batch(12, 0)
    rs = role_states(m, b, "label")
    assert rs.states.shape == (3, 24, 32) and rs.rows.tolist() == [i // 2 for i in range(24)]
    with torch.no_grad():
        _, cache = m.run_with_cache(b.tokens)
    want = cache["blocks.1.hook_resid_post"][rs.rows, rs.positions]
    assert torch.equal(rs.states[2], want)
    assert torch.equal(rs.states[0], cache["blocks.0.hook_resid_pre"][rs.rows, rs.positions])
    assert torch.equal(role_labels(b, rs), b.demo_class[rs.rows, rs.slot])
    # the class is the label token's parity and labels are two distinct tokens: the embedding
    # (layer 0) at the label position separates the classes linearly
    res = layer_probe(m, labelled_batch(30, 1), labelled_batch(30, 2), role="label", kind="logistic")
    assert res.accuracy.shape == (3,) and float(res.accuracy[0]) == 1.0
    assert 0.5 <= res.chance < 1 and res.n_train == 60 and res.n_test == 60
    fig = probe_figure({"logistic": res.accuracy}, chance=res.chance)
    assert len(fig.data) == 1
