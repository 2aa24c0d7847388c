"""load_model: every kind of bad spec fails at once with a ModelLoadError that says what to do."""

from __future__ import annotations

import os
import time

import pytest
import torch

from experiments.models.loading import ModelLoadError, builtin_names, load_model


def test_unknown_name_lists_builtins_and_how_to_load_a_directory():
    with pytest.raises(ModelLoadError) as err:
        load_model("no-such-model")
    msg = str(err.value)
    assert "no-such-model" in msg
    for name in ("induction-2l", "smollm2-135m"):
        assert name in msg
    assert set(builtin_names()) >= {"induction-2l", "smollm2-135m"}
    assert "directory" in msg and "config.json" in msg


@pytest.mark.parametrize("spec", ["/nonexistent/checkpoint/dir", "./missing-model-dir"])
def test_missing_directory_is_named(spec):
    with pytest.raises(ModelLoadError) as err:
        load_model(spec)
    assert spec in str(err.value) and "does not exist" in str(err.value)


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path))
    msg = str(err.value)
    assert "config.json" in msg and "save_pretrained" in msg


@pytest.mark.parametrize("name", ["gpt2", "some-org/some-model"])
def test_offline_hub_name_says_hub_unreachable(name):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_model(name)
    msg = str(err.value)
    assert "unreachable" in msg and name in msg
    assert "local" in msg and "load_model(" in msg  # how to point at a local copy
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained trace
    assert time.perf_counter() - t0 < 30  # no network retries under HF_HUB_OFFLINE


def test_zoo_model_matches_its_card():
    from probes.heads import induction_scores

    model = load_model("induction-2l")
    card = model.zoo_card
    cfg = card["config"]
    for key in ("n_layers", "n_heads", "d_model", "d_vocab", "n_ctx"):
        assert getattr(model.cfg, key) == cfg[key], key
    # The card's induction scores were computed by induction_scores(seg_len=20, batch=16, seed=1234)
    # on these very weights: recomputing them must agree.
    scores = induction_scores(model, seg_len=20, batch=16, seed=1234)
    torch.testing.assert_close(scores.scores, torch.tensor(card["metrics"]["induction_scores"]),
                               atol=2e-4, rtol=0)
    top = card["metrics"]["induction_top"]
    assert scores.top(1)[0][:2] == (top["layer"], top["head"])
