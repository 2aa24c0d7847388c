"""Role-filtered capture: identical to the full cache's entries, batched == one batch, disk round
trip, hooks always removed, clear errors."""

import pytest
import torch

from probes.capture import (
    Capture,
    CaptureError,
    CaptureKey,
    attention_figure,
    capture,
    hooks_left,
)
from probes.prompt import PromptBatch, PromptBuilder, PromptError
from tests.helpers import tiny_bridge


def make_batch(n=5, seed=0, vocab=50):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(n):
        pb = PromptBuilder().add([1])
        for _ in range(3 + b % 2):
            text = torch.randint(5, vocab, (2 + b % 3,), generator=g).tolist()
            pb.demo(text, 2, int(torch.randint(40, 44, (1,), generator=g)))
            pb.add([3])
        pb.query([7, 8], 2)
        rows.append(pb.build())
    return PromptBatch.concat(rows)


@pytest.fixture(scope="module")
def model():
    return tiny_bridge(attn_only=False)


@pytest.fixture(scope="module")
def batch():
    return make_batch()


@pytest.fixture(scope="module")
def cache(model, batch):
    with torch.no_grad():
        _, c = model.run_with_cache(batch.tokens)
    return c


def rows_of(full, idx):  # full [b, pos, ...] -> [b, n, ...]
    return full.gather(1, idx.reshape(*idx.shape, *([1] * (full.dim() - 2))).expand(*idx.shape, *full.shape[2:]))


def test_values_equal_full_cache(model, batch, cache):
    cap = capture(model, batch, ["attention patterns", "residual stream", "head outputs"],
                  roles=["readout", "label", "demo_text"], batch_size=2)
    assert set(cap.sites) == {"attn.hook_pattern", "hook_resid_post", "attn.hook_z"}
    assert len(cap.data) == 3 * (2 * 4 + 2 + 2 * 4)
    for key, val in cap.data.items():
        idx, valid = cap.positions[key.role], cap.valid[key.role]
        full = cache[f"blocks.{key.layer}.{key.site}"]
        if key.site == "attn.hook_pattern":
            ref = rows_of(full[:, key.head], idx)
        elif key.site == "attn.hook_z":
            ref = rows_of(full[:, :, key.head], idx)
        else:
            ref = rows_of(full, idx)
        assert val.shape == ref.shape
        assert torch.equal(val[valid], ref[valid]), key
    # attention rows are distributions over keys; readout rows sum to 1
    pat = cap.get("attention patterns", 1, 3, "readout")
    assert torch.allclose(pat.sum(-1), torch.ones(5, 1), atol=1e-5)


def test_batched_equals_one_batch_and_no_stop(model, batch):
    a = capture(model, batch, "attention patterns", roles="forerunner", batch_size=2)
    b = capture(model, batch, "attention patterns", roles="forerunner", batch_size=100,
                stop_early=False)
    assert a.data.keys() == b.data.keys()
    assert all(torch.allclose(a.data[k], b.data[k], atol=1e-6) for k in a.data)


def test_key_role_and_head_results(model, batch, cache):
    cap = capture(model, batch, ["attention patterns", "head results"], roles="readout",
                  key_role="label", heads=[1, 2], layers=[1])
    assert cap.layers == [1] and {k.head for k in cap.data} == {1, 2}
    lab, lab_valid = cap.positions["key:label"], cap.valid["key:label"]
    full = cache["blocks.1.attn.hook_pattern"][:, 2]  # [b, q, k]
    want = full[torch.arange(5), batch.readout][:, None, :].gather(2, lab[:, None, :])
    got = cap.get("attention patterns", 1, 2)
    assert torch.equal(got[lab_valid[:, None, :]], want[lab_valid[:, None, :]])
    z = cache["blocks.1.attn.hook_z"][torch.arange(5), batch.readout, 1]  # [b, d_head]
    res = cap.get("head results", 1, 1)[:, 0]
    assert torch.allclose(res, z @ model.W_O[1, 1], atol=1e-6)


def test_save_load_roundtrip(tmp_path, model, batch):
    cap = capture(model, batch, ["attention patterns", "blocks.0.hook_resid_pre", "hook_embed"],
                  roles=["readout", "label"])
    assert CaptureKey("hook_embed", None, None, "label") in cap.data
    cap.save(tmp_path / "cap")
    assert (tmp_path / "cap" / "index.json").exists()
    back = Capture.load(tmp_path / "cap")
    assert back.data.keys() == cap.data.keys()
    assert all(torch.equal(back.data[k], cap.data[k]) for k in cap.data)
    assert all(torch.equal(back.positions[r], cap.positions[r]) for r in cap.positions)
    assert torch.equal(back.tokens, batch.tokens) and back.key_role is None
    assert back.stack("attention patterns", "readout", head=0).shape == (2, 5, 1, batch.seq_len)
    assert back.heads("attention patterns", 1, "label").shape[0] == 4
    with pytest.raises(CaptureError, match="index.json"):
        Capture.load(tmp_path)


def test_hooks_removed_when_forward_raises(batch):
    m = tiny_bridge()
    bad = PromptBatch.concat([batch.select([0])])
    bad.tokens[0, 1] = 10_000  # out of vocabulary: the embedding raises inside the forward
    with pytest.raises(IndexError):
        capture(m, bad, "attention patterns", roles="readout")
    assert hooks_left(m) == 0
    capture(m, batch, "attention patterns", roles="readout")  # early stop also leaves none
    assert hooks_left(m) == 0
    # the model still runs normally and gives what a fresh forward gives
    with torch.no_grad():
        out1 = m(batch.tokens)
        out2 = m(batch.tokens)
    assert torch.equal(out1, out2)


def test_clear_errors(model, batch):
    with pytest.raises(CaptureError, match="unknown capture site"):
        capture(model, batch, "attention paterns")
    with pytest.raises(PromptError, match="unknown role"):
        capture(model, batch, "attention patterns", roles="answer")
    with pytest.raises(CaptureError, match="out of range"):
        capture(model, batch, "attention patterns", layers=[7])
    with pytest.raises(CaptureError, match="use_attn_result"):
        capture(model, batch, "attn.hook_result")  # needs cfg.use_attn_result


def test_all_role_and_attention_figure(model, batch):
    cap = capture(model, batch.select([0]).trim(), "attention patterns", roles="all", layers=[0])
    pat = cap.get("attention patterns", 0, 0)[0]  # [T, T]
    assert torch.allclose(pat.sum(-1), torch.ones(pat.shape[0]), atol=1e-5)
    assert torch.equal(pat.triu(1), torch.zeros_like(pat))  # causal
    labels = [str(t) for t in batch.tokens[0, : pat.shape[0]].tolist()]
    fig = attention_figure(pat, labels, labels)
    assert fig.data[0].z.shape == tuple(pat.shape)
