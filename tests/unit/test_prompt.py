"""PromptBatch: role positions, padding, validation."""

import pytest
import torch

from probes.prompt import PromptBatch, PromptBuilder, PromptError, single_token_id
from probes.readout import accuracy, model_accuracy, predictions, readout_logits
from tests.helpers import tiny_bridge

BOS, SEP, COLON = 1, 3, 2


def make_row(k: int, query=(8, 9), labels=(10, 11, 12, 13), target=10) -> PromptBatch:
    pb = PromptBuilder().add([BOS])
    for i in range(k):
        pb.demo([20 + i] * (i + 1), COLON, labels[i % len(labels)], cls=i % 2)
        pb.add([SEP])
    pb.query(list(query), COLON)
    return pb.build(target=target, candidates=[10, 11], query_class=0)


def test_builder_records_every_role_position():
    row = make_row(3)
    toks = row.tokens[0].tolist()
    # demonstration i's text is i+1 copies of token 20+i, then ':' then its label
    for i in range(3):
        s, e = row.demo_text[0, i].tolist()
        assert toks[s:e] == [20 + i] * (i + 1)
        assert toks[row.forerunner[0, i]] == COLON
        assert row.forerunner[0, i] == e and row.label[0, i] == e + 1
    s, e = row.query_text[0].tolist()
    assert toks[s:e] == [8, 9]
    assert row.readout[0] == len(toks) - 1 and toks[-1] == COLON
    assert row.label_tokens[0].tolist() == [10, 11, 12]


def test_concat_right_pads_and_marks_missing_demos():
    batch = PromptBatch.concat([make_row(0), make_row(2), make_row(4)])
    assert batch.tokens.shape[0] == 3 and batch.n_demos == 4
    assert batch.demo_mask.tolist() == [[False] * 4, [True, True, False, False], [True] * 4]
    for b in range(3):
        L = int(batch.lengths[b])
        assert (batch.tokens[b, L:] == batch.pad_id).all()
        assert batch.readout[b] == L - 1
    assert batch.role_mask("pad").sum() == (batch.lengths.max() - batch.lengths).sum()
    # every position has exactly one of the exclusive roles, or is an untagged separator/BOS
    roles = ["demo_text", "forerunner", "label", "query_text", "readout", "pad"]
    stacked = torch.stack([batch.role_mask(r) for r in roles]).sum(0)
    assert stacked.max() == 1


def test_padded_batch_equals_unpadded_rows_at_real_positions():
    model = tiny_bridge()
    batch = PromptBatch.concat([make_row(k) for k in (0, 1, 3, 5)])
    with torch.no_grad():
        full = model(batch.tokens)
        for b, row in enumerate(batch.to_list()):
            alone = model(row.tokens)
            L = int(batch.lengths[b])
            torch.testing.assert_close(full[b, :L], alone[0], atol=1e-5, rtol=1e-5)
        batched = readout_logits(model, batch)
        looped = torch.cat([readout_logits(model, r) for r in batch.to_list()])
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)


def test_accuracy_uses_candidates_and_target():
    batch = PromptBatch.concat([make_row(1, target=10), make_row(1, target=11)])
    logits = torch.zeros(2, 50)
    logits[:, 11] = 1.0  # both rows prefer label 11
    logits[:, 30] = 5.0  # a non-candidate token is ignored
    assert predictions(logits, batch).tolist() == [11, 11]
    assert accuracy(logits, batch) == 0.5
    assert 0.0 <= model_accuracy(tiny_bridge(), batch) <= 1.0


def test_select_and_positions():
    batch = PromptBatch.concat([make_row(1), make_row(3)])
    sub = batch.select([1])
    assert sub.tokens.shape[0] == 1 and sub.n_demos == 3
    idx, valid = batch.positions("label")
    assert valid.tolist() == [[True, False, False], [True, True, True]]
    assert (batch.tokens.gather(1, idx)[valid] == batch.label_tokens[valid]).all()
    qidx, qvalid = batch.positions("query_text")
    assert (batch.tokens.gather(1, qidx)[qvalid] == torch.tensor([8, 9, 8, 9])).all()


def _raw(**over):
    kw = dict(
        tokens=torch.tensor([[1, 5, 2, 10, 8, 2]]), lengths=torch.tensor([6]),
        demo_text=torch.tensor([[[1, 2]]]), forerunner=torch.tensor([[2]]),
        label=torch.tensor([[3]]), query_text=torch.tensor([[4, 5]]), readout=torch.tensor([5]),
    )
    kw.update(over)
    return PromptBatch(**kw)


def test_valid_raw_batch_passes():
    assert _raw().n_demos == 1


@pytest.mark.parametrize("over, message", [
    (dict(label=torch.tensor([[2]])), "roles overlap at position 2"),
    (dict(label=torch.tensor([[9]])), "falls outside the prompt"),
    (dict(readout=torch.tensor([4]), query_text=torch.tensor([[3, 4]]), label=torch.tensor([[3]])),
     "overlap"),
    (dict(readout=torch.tensor([4]), query_text=torch.tensor([[4, 4]])), "readout must be the last real token"),
    (dict(demo_text=torch.tensor([[[2, 1]]])), "ends before it starts"),
])
def test_bad_layouts_name_the_problem(over, message):
    with pytest.raises(PromptError, match=message):
        _raw(**over)


def test_prompt_longer_than_context_is_rejected_with_the_fix():
    model = tiny_bridge(n_ctx=8)
    batch = make_row(3)
    with pytest.raises(PromptError, match=r"has \d+ tokens but the model's context \(n_ctx\) is 8; use fewer"):
        readout_logits(model, batch)


def test_label_that_is_not_one_token():
    class Tok:
        vocab = {"pos": 1, "itive": 2, "neg": 3}

        def encode(self, text, add_special_tokens=False):
            return [1, 2] if text == "positive" else [3]

        def decode(self, ids):
            return {1: "pos", 2: "itive", 3: "neg"}[ids[0]]

    assert single_token_id(Tok(), "neg") == 3
    with pytest.raises(PromptError, match=r"'positive' is 2 tokens .*\['pos', 'itive'\].*single tokens"):
        single_token_id(Tok(), "positive")


def test_builder_misuse():
    with pytest.raises(PromptError, match="call query"):
        PromptBuilder().add([1]).build()
    with pytest.raises(PromptError, match="before the query"):
        PromptBuilder().query([1], 2).demo([3], 2, 4)
    with pytest.raises(PromptError, match="unknown role"):
        make_row(1).role_mask("nonsense")


def test_forerunner_reused_from_the_prompt_for_empty_text():
    # a one-token demonstration and a query cut at a boundary read out at the separator itself
    row = PromptBuilder().add([BOS]).demo([], (), 10).add([SEP]).query([], ()).build(target=10)
    assert row.tokens[0].tolist() == [BOS, 10, SEP]
    assert row.forerunner[0].tolist() == [0] and row.label[0].tolist() == [1]
    assert row.demo_text[0, 0].tolist() == [0, 0] and row.query_text[0].tolist() == [2, 2]
    assert row.readout[0] == 2
    with pytest.raises(PromptError, match=r"forerunner=\(\) only with empty text"):
        PromptBuilder().add([BOS]).demo([5], (), 10)
    with pytest.raises(PromptError, match="needs a forerunner token"):
        PromptBuilder().query([], ())


# ---------------------------------------------------------------------- edits
def test_zero_shot_equals_the_prompt_built_without_demonstrations():
    batch = PromptBatch.concat([make_row(3), make_row(1), make_row(0)])
    zs = batch.zero_shot()
    built = PromptBatch.concat([make_row(0)] * 3)
    assert torch.equal(zs.tokens, built.tokens) and torch.equal(zs.query_text, built.query_text)
    assert torch.equal(zs.readout, built.readout) and zs.n_demos == 0
    assert torch.equal(zs.target, batch.target) and torch.equal(zs.candidates, batch.candidates)
    assert zs.meta["k"] == 0


def test_permute_demos_moves_each_demonstration_with_its_label():
    batch = PromptBatch.concat([make_row(3), make_row(2)])
    assert torch.equal(batch.permute_demos([[0, 1, 2], [0, 1]]).tokens, batch.tokens)  # identity
    per = batch.permute_demos([[2, 0, 1], [1, 0]])
    for b, perm in ((0, [2, 0, 1]), (1, [1, 0])):
        for j, i in enumerate(perm):
            s, e = per.demo_text[b, j].tolist()
            s0, e0 = batch.demo_text[b, i].tolist()
            assert per.tokens[b, s:e].tolist() == batch.tokens[b, s0:e0].tolist()
            assert int(per.tokens[b, per.label[b, j]]) == int(batch.tokens[b, batch.label[b, i]])
            assert int(per.demo_class[b, j]) == int(batch.demo_class[b, i])
    assert torch.equal(per.lengths, batch.lengths) and torch.equal(per.readout, batch.readout)
    # a random order per row is reproducible from its seed and undone by its inverse
    r = batch.permute_demos(seed=5)
    assert torch.equal(r.tokens, batch.permute_demos(seed=5).tokens)
    with pytest.raises(PromptError, match="permutation of 0..2"):
        batch.permute_demos([[0, 0, 1], [1, 0]])


def test_shuffle_labels_keeps_each_rows_labels_and_breaks_the_mapping():
    batch = PromptBatch.concat([make_row(4), make_row(4, labels=(13, 12, 11, 10))])
    sh = batch.shuffle_labels(seed=1)
    for b in range(2):
        assert sorted(sh.label_tokens[b].tolist()) == sorted(batch.label_tokens[b].tolist())
    assert not torch.equal(sh.label_tokens, batch.label_tokens)
    other = ~torch.zeros_like(batch.tokens, dtype=torch.bool).scatter_(1, batch.label, True)
    assert torch.equal(sh.tokens[other], batch.tokens[other])  # only label positions change
