"""In-context linear regression task: data, tokenization and baselines against known answers."""

import pytest
import torch

from experiments.tasks import linreg as lr


def test_batch_shapes_and_labels():
    b = lr.make_tasks(8, 6, 4, seed=0)
    assert b.xs.shape == (8, 6, 4) and b.ys.shape == (8, 6) and b.xq.shape == (8, 4)
    assert torch.allclose(b.ys, torch.einsum("bkd,bd->bk", b.xs, b.w))
    assert torch.allclose(b.yq, (b.xq * b.w).sum(-1))
    again = lr.make_tasks(8, 6, 4, seed=0)
    assert torch.equal(b.xs, again.xs) and torch.equal(b.w, again.w)
    u = lr.make_tasks(512, 3, 4, seed=1, x_dist="uniform")
    assert u.xs.min() >= -0.5 and u.xs.max() <= 0.5
    with pytest.raises(lr.LinRegError, match="x_dist"):
        lr.make_tasks(2, 2, 2, x_dist="cauchy")  # type: ignore[arg-type]
    with pytest.raises(lr.LinRegError, match="shape"):
        lr.LinRegBatch(xs=b.xs, ys=b.ys[:, :2], xq=b.xq, yq=b.yq, w=b.w)


def test_tokenize_layout_and_roundtrip():
    b = lr.make_tasks(3, 5, 4, seed=2)
    t = lr.tokenize(b)
    assert t.shape == (3, 6, 5)
    assert torch.equal(t[:, :5, :4], b.xs) and torch.equal(t[:, :5, 4], b.ys)
    assert torch.equal(t[:, 5, :4], b.xq) and (t[:, 5, 4] == 0).all()
    back = lr.detokenize(t, w=b.w)
    assert torch.equal(back.xs, b.xs) and torch.allclose(back.yq, b.yq)


@pytest.mark.parametrize("k", [4, 6, 10])
def test_least_squares_exact_at_k_ge_d(k):
    b = lr.make_tasks(32, k, 4, seed=k)
    assert torch.allclose(lr.least_squares_w(b), b.w, atol=1e-4)
    assert lr.squared_error(lr.least_squares(b), b).max() < 1e-8


def test_least_squares_underdetermined_is_min_norm_interpolant():
    b = lr.make_tasks(16, 2, 5, seed=3)
    w = lr.least_squares_w(b)
    assert torch.allclose(torch.einsum("bkd,bd->bk", b.xs, w), b.ys, atol=1e-5)
    assert (w.norm(dim=-1) <= b.w.norm(dim=-1) + 1e-5).all()


def test_gd_one_step_is_scaled_averaging_and_ridge_limits():
    b = lr.make_tasks(16, 7, 3, seed=4)
    assert torch.allclose(lr.gd_w(b, 0.3, 1), 0.3 * lr.averaging_w(b), atol=1e-6)
    assert torch.allclose(lr.ridge_w(b, 1e-8), lr.least_squares_w(b), atol=1e-3)
    assert torch.allclose(lr.ridge_w(b, 1e6), torch.zeros(16, 3), atol=1e-3)


def test_gd_1d_analytic_learning_rate_matches_closed_form():
    """1-D: h = mean x^2; GD from 0 gives w_K = w* (1 - (1 - lr h)^K); lr = 1/h solves in one step."""
    b = lr.make_tasks(10, 6, 1, seed=5, noise_std=0.3)
    x, y = b.xs[..., 0], b.ys
    h = (x**2).mean(1)
    w_star = (x * y).mean(1) / h
    for i in range(10):
        one = lr.gd_w(b.select([i]), float(1 / h[i]), 1)
        assert one.item() == pytest.approx(w_star[i].item(), rel=1e-5, abs=1e-6)
        three = lr.gd_w(b.select([i]), float(0.5 / h[i]), 3)
        assert three.item() == pytest.approx((w_star[i] * (1 - 0.5**3)).item(), rel=1e-5, abs=1e-6)


def test_knn_and_sgd_by_hand():
    xs = torch.tensor([[[0.0], [1.0], [5.0], [6.0]]])
    ys = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    b = lr.LinRegBatch(xs=xs, ys=ys, xq=torch.tensor([[0.4]]), yq=torch.tensor([0.0]),
                       w=torch.zeros(1, 1))
    assert lr.knn(b, 2).item() == pytest.approx(1.5)
    assert lr.knn(b, 10).item() == pytest.approx(2.5)  # all demonstrations when fewer than n
    # SGD on 1/2 (w x - y)^2 with lr 0.1 from w=0, in order
    w = 0.0
    for xv, yv in zip([0.0, 1.0, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0]):
        w -= 0.1 * (w * xv - yv) * xv
    assert lr.sgd_w(b, 0.1).item() == pytest.approx(w, rel=1e-6)


def test_best_lr_search_and_error_curve():
    lr1 = lr.best_gd_lr(10, 5, 1, n_tasks=2048)
    # theory for Gaussian x: optimal one-step lr = k / (k + d + 1) = 0.625
    assert abs(lr1 - 10 / 16) < 0.15
    rows = lr.error_vs_k({}, 4, [1, 4, 8], n_tasks=256)
    err = {(r["k"], r["predictor"]): r["error"] for r in rows}
    assert err[(8, "least_squares")] < 1e-8
    assert err[(8, "gd5")] < err[(8, "gd1")] < err[(1, "gd1")]
    assert err[(8, "averaging")] > err[(8, "gd1")]


def test_registry_form():
    b = lr.make_prompts(3, 4, seed=7, d=2)
    assert (b.k, b.batch_size, b.d) == (3, 4, 2)
    assert torch.equal(b.xs, lr.make_tasks(4, 3, 2, seed=7).xs)
