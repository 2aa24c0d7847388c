"""Intervention engine: known answers on a hand-built model, invariants, batched == looped."""

import math

import pytest
import torch

from circuits import interventions as I
from circuits import sweeps as S
from circuits import toy
from circuits.patching import accuracy_metric, logit_diff, target_logprob
from probes.prompt import PromptBatch, PromptBuilder
from probes.readout import model_accuracy, readout_logits
from tests.helpers import check_resume_skips_blocks, tiny_bridge


def _random_batch(n=6, k=3, seed=0, vocab=50):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(n):
        pb = PromptBuilder().add([1])
        for i in range(k):
            n_words = int(torch.randint(1, 4, (1,), generator=g))
            pb.demo(torch.randint(10, vocab, (n_words,), generator=g).tolist(), 2, 3 + i % 2, cls=i % 2)
            pb.add([5])
        pb.query(torch.randint(10, vocab, (3,), generator=g).tolist(), 2)
        rows.append(pb.build(target=3 + b % 2, candidates=[3, 4], query_class=b % 2))
    return PromptBatch.concat(rows)


def _hooks_left(model):
    return sum(len(hp._forward_hooks) + len(hp._backward_hooks) for hp in model.hook_dict.values())


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    m = tiny_bridge(attn_only=False)
    m.eval()
    return m


# ---------------------------------------------------------------------- known answers
def test_knocking_out_the_only_label_path_drops_to_chance():
    model, batch = toy.label_copy_model(), toy.label_copy_batch(16, 3)
    assert model_accuracy(model, batch) == 1.0
    iv = I.knockout("readout", "label", layers=[0])
    with I.intervene(model, iv, batch):
        acc = float(accuracy_metric(readout_logits(model, batch), batch))
    assert acc == 0.5  # chance: the label logits tie, targets are balanced
    assert _hooks_left(model) == 0


def test_knocking_out_an_unused_path_changes_nothing():
    model, batch = toy.label_copy_model(), toy.label_copy_batch(16, 3)
    clean = readout_logits(model, batch)
    for iv in (I.knockout("label", "forerunner", [0], pairing="same_demo"),
               I.knockout("forerunner", "demo_text", [0], pairing="same_demo"),
               I.knockout("readout", "label", [0], heads=[1])):  # head 1 carries nothing
        with I.intervene(model, iv, batch):
            assert torch.equal(readout_logits(model, batch), clean), iv.name


def test_zero_ablating_a_zero_head_changes_nothing():
    model, batch = toy.label_copy_model(), toy.label_copy_batch(8, 3)
    clean = readout_logits(model, batch)
    with I.intervene(model, I.ablate(0, 1, "zero"), batch):
        assert torch.equal(readout_logits(model, batch), clean)
    with I.intervene(model, I.ablate(0, 0, "zero"), batch):  # the copying head does matter
        assert not torch.allclose(readout_logits(model, batch), clean)


def test_random_control_blocks_same_count_per_row():
    batch = _random_batch()
    for name, pairing in (("label", "all"), ("forerunner", "demo_le")):
        m = I.pair_mask(batch, "readout" if name == "label" else "forerunner", name, pairing)
        r = I.random_pair_mask(batch, m, seed=3)
        assert torch.equal(m.sum(-1), r.sum(-1))
        assert not (r & ~I.allowed_mask(batch)).any()
    assert not torch.equal(m, r)


def test_knockout_equals_minus_inf_scores(lm):
    """Renormalising the pattern == softmax of the scores with blocked entries at -inf."""
    batch = _random_batch().trim()
    iv = I.knockout("readout", "label", layers=[1], heads=[0, 2])
    store = {}

    def grab(name):
        def fn(x, hook):
            store[name] = x.detach().clone()
        return fn

    names = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_pattern"]
    with I.intervene(lm, iv, batch), lm.hooks(fwd_hooks=[(n, grab(n)) for n in names]):
        lm(batch.tokens)
    q, k = store[names[0]], store[names[1]]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(lm.cfg.d_head)
    T = batch.seq_len
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    blocked = I.pair_mask(batch, "readout", "label")[:, None] & torch.tensor([1, 0, 1, 0], dtype=torch.bool)[None, :, None, None]
    expected = scores.masked_fill(blocked, float("-inf")).softmax(-1)
    torch.testing.assert_close(store[names[2]], expected, atol=1e-5, rtol=1e-4)
    readout_rows = store[names[2]][torch.arange(batch.batch_size), :, batch.readout]
    torch.testing.assert_close(readout_rows.sum(-1), torch.ones_like(readout_rows.sum(-1)))


# ---------------------------------------------------------------------- batched == looped
def test_batched_sweep_equals_looped(lm):
    batch = _random_batch()
    ivs = (I.all_heads(2, 4, mode="zero") + I.all_heads(2, 4, mode="mean", roles=("readout", "label"))
           + I.all_heads(1, 2, mode="resample")
           + [I.knockout("readout", "label", [0]), I.random_control(I.knockout("readout", "label", [0, 1]), 3),
              I.knockout("label", "forerunner", [1], pairing="same_demo"),
              I.knockout("forerunner", "forerunner", [0, 1], pairing="demo_le"),
              I.knockout("demo", "demo", [1], heads=[2]), I.ablate([1], None, "zero", site="attn_out"),
              I.ablate(1, None, "mean", site="resid_pre")])
    with torch.no_grad():
        looped = S.sweep_looped(lm, batch, ivs, target_logprob)
        for kw in (dict(max_rows=20), dict(share_prefix=False), dict()):
            batched = S.sweep(lm, batch, ivs, target_logprob, **kw)
            torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)
    assert looped.std() > 0  # the interventions do different things
    assert _hooks_left(lm) == 0


def test_patch_sweep_from_source_equals_looped(lm):
    ivs = [I.patch("z", l, h, roles=("readout",)) for l in range(2) for h in range(4)]
    with pytest.raises(I.InterventionError, match="same layout"):
        S.sweep(lm, _random_batch(), ivs, logit_diff, source=_random_batch(n=6, k=2, seed=1).trim())
    tgt2 = _random_batch().trim()
    src2 = _same_layout_source(tgt2)
    with torch.no_grad():
        torch.testing.assert_close(S.sweep(lm, tgt2, ivs, logit_diff, source=src2),
                                   S.sweep_looped(lm, tgt2, ivs, logit_diff, source=src2), atol=1e-5, rtol=1e-5)


def _same_layout_source(batch):
    """The same prompts with different text tokens (so positions line up)."""
    from dataclasses import replace

    toks = batch.tokens.clone()
    text = batch.role_mask("demo_text") | batch.role_mask("query_text")
    toks[text] = torch.randint(10, 50, (int(text.sum()),), generator=torch.Generator().manual_seed(9))
    return replace(batch, tokens=toks)


# ---------------------------------------------------------------------- data, errors, hygiene
def test_intervention_roundtrips_through_dict():
    import json

    for iv in (I.knockout("readout", "label", [0, 1], heads=[2], pairing="all", name="yq"),
               I.random_control(I.knockout("forerunner", "demo_text", [0], pairing="same_demo"), 4),
               I.ablate(1, 3, "mean", roles=("readout",)), I.patch("resid_pre", 0)):
        back = I.Intervention.from_dict(json.loads(json.dumps(iv.to_dict())))
        assert back == iv and back.name == iv.name


def test_bad_interventions_raise_clear_errors(lm):
    batch = _random_batch()
    with pytest.raises(I.InterventionError, match="unknown intervention kind"):
        I.Intervention("delete", (0,))
    with pytest.raises(I.InterventionError, match="roles=\\(query_role, key_role\\)"):
        I.Intervention("knockout", (0,), roles=("readout",))
    with pytest.raises(I.InterventionError, match="no head axis"):
        I.ablate(0, 1, site="resid_pre")
    with pytest.raises(I.InterventionError, match="layer 5 out of range"):
        with I.intervene(lm, I.ablate(5, 0), batch):
            pass
    with pytest.raises(I.InterventionError, match="needs source"):
        with I.intervene(lm, I.patch("z", 0, 0), batch):
            pass


def test_hooks_removed_on_exception(lm):
    batch = _random_batch()
    with pytest.raises(RuntimeError, match="boom"):
        with I.intervene(lm, [I.ablate(0, 0), I.knockout("readout", "label", [1])], batch):
            assert _hooks_left(lm) > 0
            raise RuntimeError("boom")
    assert _hooks_left(lm) == 0


def test_layer_window():
    assert S.layer_window(2) == [0]  # floor(0.25*2) = 0 would be empty: widened to layer 0
    assert S.layer_window(8) == [0, 1]
    assert S.layer_window(30) == list(range(7))
    assert S.layer_window(12, 0.5, 0.75) == [6, 7, 8]


def test_resuming_skips_the_blocks_below_on_a_native_bridge():
    model = tiny_bridge(n_layers=4, attn_only=False, seed=1)
    model.eval()
    tokens = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(0))
    for start in (1, 3):
        check_resume_skips_blocks(model, tokens, start)


def test_head_output_sweep_resumes_at_hook_z_and_equals_looped():
    """The hook_z fast path (resume at layer l's head outputs, read-out-only last layer) is taken
    on a 3-layer model with MLPs and gives the looped numbers for every layer, including the middle."""
    model = tiny_bridge(n_layers=3, attn_only=False, seed=3)
    model.eval()
    assert S.can_tail(model)
    tgt = _random_batch(n=5, seed=2).trim()
    src = _same_layout_source(tgt)
    ivs = ([I.patch("z", l, h) for l in range(3) for h in range(4)]
           + [I.ablate(l, None, "mean", roles=("label",)) for l in range(3)]
           + [I.ablate(1, (0, 2), "zero", roles=("readout",)), I.knockout("readout", "label", [2])])
    assert sum(S._z_edit_layer(I.compile_edits(model, iv, tgt)) is not None for iv in ivs) == len(ivs) - 1
    with torch.no_grad():
        looped = S.sweep_looped(model, tgt, ivs, logit_diff, source=src)
        for kw in (dict(), dict(max_rows=7)):
            torch.testing.assert_close(S.sweep(model, tgt, ivs, logit_diff, source=src, **kw), looped,
                                       atol=1e-5, rtol=1e-5)
    assert looped[:12].std() > 0
    assert _hooks_left(model) == 0
