"""The zoo mechanism: reproducible training, safetensors round trip, cards, the CLI listing."""

import json

import pytest
import torch

from experiments.cli.main import main as cli_main
from experiments.models import zoo
from experiments.models.loading import load_model


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_is_reproducible_from_the_seed():
    spec = zoo.get_spec("induction-2l")
    r1 = spec.train(seed=3, steps=5, progress=False)
    r2 = spec.train(seed=3, steps=5, progress=False)
    r3 = spec.train(seed=4, steps=5, progress=False)
    assert _weights_equal(r1.model, r2.model)
    assert not _weights_equal(r1.model, r3.model)


def test_checkpoint_round_trip(tmp_path):
    spec = zoo.get_spec("induction-2l")
    result = spec.train(seed=0, steps=3, progress=False)
    zoo.save_checkpoint("induction-2l", result, seed=0, train_seconds=1.0, root=tmp_path)
    files = sorted(p.name for p in (tmp_path / "induction-2l").iterdir())
    assert files == ["card.json", "model.safetensors"]
    card = json.loads((tmp_path / "induction-2l" / "card.json").read_text())
    for field in ("arch", "config", "task", "seed", "steps", "metrics", "versions", "train_seconds"):
        assert field in card
    loaded = zoo.load_zoo_model("induction-2l", root=tmp_path)
    assert _weights_equal(loaded, result.model)
    toks = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(toks), result.model(toks))


def test_shipped_induction_model_matches_its_card():
    model = load_model("induction-2l")
    card = model.zoo_card
    assert card["arch"] == "bridge-native" and card["seed"] == 0
    from probes.heads import induction_scores

    scores = induction_scores(model, seg_len=20, batch=16, seed=1234).scores
    top = card["metrics"]["induction_top"]
    assert scores.argmax() == top["layer"] * model.cfg.n_heads + top["head"]
    assert abs(float(scores.max()) - top["score"]) < 1e-3
    assert top["layer"] == 1 and top["score"] > 0.5
    assert card["metrics"]["prev_token_top"]["layer"] == 0


def test_mismatched_checkpoint_is_refused(tmp_path):
    spec = zoo.get_spec("induction-2l")
    result = spec.train(seed=0, steps=1, progress=False)
    zoo.save_checkpoint("induction-2l", result, seed=0, train_seconds=0.0, root=tmp_path)
    card_path = tmp_path / "induction-2l" / "card.json"
    card = json.loads(card_path.read_text())
    card["config"]["n_layers"] = 3
    card_path.write_text(json.dumps(card))
    with pytest.raises(zoo.CheckpointError, match="does not match its architecture"):
        zoo.load_zoo_model("induction-2l", root=tmp_path)


def test_unknown_zoo_name_lists_the_models():
    with pytest.raises(KeyError, match="built-in models: .*induction-2l"):
        zoo.get_spec("nope")


def test_cli_zoo_list_shows_induction_model(capsys):
    assert cli_main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("induction-2l"))
    assert "seed=0" in line and "loss_repeated_half" in line
