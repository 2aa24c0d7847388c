"""The shipped icll-dfa checkpoint: reloads, matches its card, beats the in-context 3-gram model."""

import pytest
import torch

from experiments.models.loading import load_model
from experiments.models.zoo import icll_dfa
from experiments.tasks import dfa, icll


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
    assert all(d.canonical_hash() in dfa.heldout_hashes() for d in seqs.dfas)
    m = icll.evaluate(icll.model_probs(model, seqs), seqs)
    uni = icll.evaluate(icll.ngram_probs(seqs, 1), seqs)
    assert m["accuracy"] > uni["accuracy"] + 0.05
    assert m["l1"] < uni["l1"]


def test_card_metrics_reproduce(model):
    again = icll_dfa.evaluate(model, baselines=False)
    card = model.zoo_card["metrics"]
    assert again["heldout_accuracy"] == pytest.approx(card["heldout_accuracy"], abs=2e-3)
    assert again["heldout_l1"] == pytest.approx(card["heldout_l1"], abs=2e-3)


def test_card_beats_the_3gram_model_in_accuracy_and_l1_on_the_same_sequences(model):
    metrics = model.zoo_card["metrics"]
    table = metrics["table"]
    assert table["model"]["accuracy"] > table["3-gram"]["accuracy"]
    assert table["model"]["l1"] < table["3-gram"]["l1"]
    vs = metrics["vs_3gram_per_sequence"]
    assert vs["accuracy"]["n_sequences"] == vs["l1"]["n_sequences"] == icll_dfa.N_EVAL
    assert vs["accuracy"]["ci"][0] > 0 and vs["l1"]["ci"][1] < 0  # intervals exclude no difference


def test_card_keeps_the_training_cost_the_intervals_and_the_heldout_curve(model):
    card = model.zoo_card
    assert card["train_seconds"] > 0 and card["train_cpu_seconds"] > 0 and card["torch_threads"] == 1
    assert card["config"]["n_layers"] == icll_dfa.CONFIG["n_layers"] and card["steps"] > 0
    metrics = card["metrics"]
    for name in ("model", "1-gram", "2-gram", "3-gram"):
        for key in ("accuracy", "l1"):
            e = metrics["per_sequence"][name][key]
            assert e["ci"][0] <= e["value"] <= e["ci"][1] and e["n"] == icll_dfa.N_EVAL
    curve = metrics["heldout_curve"]
    steps = [r["step"] for r in curve]
    assert steps == sorted(steps) and steps[-1] == card["steps"] and len(steps) >= 5
    assert curve[-1]["accuracy"] == metrics["heldout_accuracy"]
    assert curve[0]["accuracy"] < curve[-1]["accuracy"]  # it learned during training


def test_per_sequence_metrics_agree_with_the_pooled_ones_on_a_known_case():
    seqs = icll.sample_sequences(4, seed=5, split="heldout")
    u = seqs.legal.float() / seqs.legal.float().sum(-1, keepdim=True).clamp(min=1)  # the DFA itself
    per = icll_dfa.per_sequence(u, seqs)
    assert torch.allclose(per["accuracy"], torch.ones(4)) and torch.allclose(per["l1"], torch.zeros(4), atol=1e-6)
    flat = torch.zeros_like(u)
    flat[..., 0] = 1.0  # always 'a': accuracy = share of positions where 'a' is legal, per sequence
    per = icll_dfa.per_sequence(flat, seqs)
    for b in range(4):
        m = seqs.eval_mask[b]
        assert float(per["accuracy"][b]) == pytest.approx(float(seqs.legal[b, :, 0][m].float().mean()))
