"""icl-transience: the shipped recipe is unchanged, and the class-count / Zipf variants are what
they say (known answers)."""

import math

import pytest
import torch

from experiments.models.zoo import series
from experiments.models.zoo import transience as T


def test_shipped_series_reproduces_its_logged_losses():
    index = series.read_index("icl-transience")
    for c in (index["checkpoints"][3], index["checkpoints"][-1]):
        model = series.load_series_model("icl-transience", c["step"])
        assert T.probe_loss(model) == pytest.approx(c["loss"], abs=1e-5)


def test_zipf_classes_follow_the_law_and_others_avoid_the_query():
    g = torch.Generator().manual_seed(0)
    n = 16
    c = T._classes((200_000,), g, n, 1.0)
    assert int(c.min()) >= 0 and int(c.max()) < n
    harmonic = sum(1 / (i + 1) for i in range(n))
    freq = torch.bincount(c, minlength=n).double() / c.numel()
    assert float(freq[0]) == pytest.approx(1 / harmonic, abs=0.005)
    assert float(freq[3]) == pytest.approx(1 / (4 * harmonic), abs=0.005)
    q = T._classes((5000,), g, n, 1.0)
    other = T._other(q[:, None], (5000, 8), g, n, 1.0)
    assert not (other == q[:, None]).any()
    uniform = T._classes((100_000,), g, n, 0.0)
    assert float((torch.bincount(uniform, minlength=n).double() / 1e5).max()) < 1 / n + 0.01


def test_variant_batches_use_only_their_classes():
    toks, targets = T.training_batch(256, torch.Generator().manual_seed(1), n_train=300, zipf=1.0)
    cls = toks[:, 1::4]
    assert int(cls.min()) >= T.CLASS0 and int(cls.max()) < T.CLASS0 + 300
    assert torch.equal(targets, T.fixed_label(cls - T.CLASS0))  # fixed labels at every ':'
    held, cands, target = T.icl_heldout_batch(64, 3, n_train=300)
    q = held[:, -2]
    assert int(q.min()) >= T.CLASS0 + 300 and int(q.max()) < T.CLASS0 + 300 + T.N_HELDOUT
    assert ((cands == target[:, None]).sum(1) == 1).all()


def test_a_variant_series_reloads_to_its_logged_losses(tmp_path):
    card = T.train_variant(tmp_path, n_train=256, zipf=1.0, steps=20, checkpoints=3)
    assert card["config"]["d_vocab"] == T.CLASS0 + 256 + T.N_HELDOUT
    assert card["task"]["n_train_classes"] == 256 and card["task"]["zipf"] == 1.0
    index = series.read_index("icl-transience", tmp_path)
    losses = []
    for c in index["checkpoints"]:
        model = series.load_series_model("icl-transience", c["step"], tmp_path)
        assert T.probe_loss(model) == pytest.approx(c["loss"], abs=1e-5)
        losses.append(c["loss"])
    assert losses[0] == pytest.approx(math.log(card["config"]["d_vocab"]), abs=1.0)  # ~chance over the vocab
    assert losses[-1] < losses[0] - 0.5
    rows = T.dynamics_rows(model, index["checkpoints"][-1]["step"], n=40)
    assert {r["metric"] for r in rows} == {"icl_heldout_accuracy", "iwl_accuracy"}
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] and r["n"] == 40 for r in rows)
