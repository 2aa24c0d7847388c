"""The shipped icll-dfa checkpoint: reloads, matches its card, beats the in-context 1-gram model."""

import pytest

from experiments.models.loading import load_model
from experiments.models.zoo import icll_dfa
from experiments.tasks import icll


@pytest.fixture(scope="module")
def model():
    return load_model("icll-dfa")


def test_card_describes_the_model_and_its_baselines(model):
    card = model.zoo_card
    assert card["arch"] == "bridge-native" and card["task"]["name"] == "icll"
    assert model.cfg.d_vocab == icll.VOCAB_SIZE and model.cfg.n_ctx == icll.MAX_LEN
    table = card["metrics"]["table"]
    assert set(table) == {"model", "1-gram", "2-gram", "3-gram"}
    assert table["model"]["accuracy"] > table["1-gram"]["accuracy"]
    assert card["train_seconds"] > 0 and card["steps"] > 0


def test_beats_the_unigram_baseline_on_fresh_heldout_dfas(model):
    seqs = icll.sample_sequences(16, seed=2024, split="heldout")
    assert all(d.canonical_hash() in icll.heldout_hashes() for d in seqs.dfas)
    m = icll.evaluate(icll.model_probs(model, seqs), seqs)
    uni = icll.evaluate(icll.ngram_probs(seqs, 1), seqs)
    assert m["accuracy"] > uni["accuracy"] + 0.05
    assert m["l1"] < uni["l1"]


def test_card_metrics_reproduce(model):
    again = icll_dfa.evaluate(model, baselines=False)
    card = model.zoo_card["metrics"]
    assert again["heldout_accuracy"] == pytest.approx(card["heldout_accuracy"], abs=2e-3)
    assert again["heldout_l1"] == pytest.approx(card["heldout_l1"], abs=2e-3)
