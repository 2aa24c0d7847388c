"""The shipped icl-classify checkpoint: ICL far above chance at k=4, chance at k=0, robust to flips."""

import pytest

from experiments.models.loading import load_model
from experiments.tasks import classify
from probes.readout import model_accuracy


@pytest.fixture(scope="module")
def model():
    return load_model("icl-classify")


def _acc(model, k, variant="standard", n_way=2, n=200, seed=11):
    return model_accuracy(model, classify.make_prompts(k, n, seed, n_way=n_way, variant=variant))


def test_card_shape(model):
    card = model.zoo_card
    assert card["arch"] == "bridge-native" and card["config"]["attn_only"] is False
    assert model.cfg.d_vocab == classify.VOCAB_SIZE
    table = card["metrics"]["table"]
    assert set(table["2-way standard"]) == {"k=0", "k=1", "k=2", "k=4", "k=8"}


def test_icl_far_above_chance_with_demonstrations_and_at_chance_without(model):
    assert _acc(model, 4) > 0.85
    assert abs(_acc(model, 0) - 0.5) < 0.12
    assert abs(_acc(model, 0, variant="no_demos", seed=12) - 0.5) < 0.12


def test_accuracy_rises_with_k_and_survives_flipped_labels(model):
    assert _acc(model, 2) > _acc(model, 0) + 0.3
    a0, a8 = _acc(model, 0, n_way=4), _acc(model, 8, n_way=4)
    assert abs(a0 - 0.25) < 0.1 and a8 > 0.55  # 4-way: chance is 0.25
    assert _acc(model, 8, variant="flipped") > 0.85


def test_card_number_reproduces(model):
    card = model.zoo_card["metrics"]
    n, seed = card["n_eval_prompts"], card["eval_seed"]
    batch = classify.make_prompts(8, n, seed + 8, n_way=2)
    assert model_accuracy(model, batch) == pytest.approx(card["acc_2way_k8"], abs=1e-3)
