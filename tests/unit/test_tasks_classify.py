"""Task 3 (few-shot classification, random label mapping): roles, mapping, variants, training layout."""

import random

import pytest
import torch

from experiments.tasks import TaskError
from experiments.tasks import classify as C


def _majority_class(tokens: list[int]) -> int:
    classes = [C.token_class(t) for t in tokens]
    return max(set(classes), key=classes.count)


@pytest.mark.parametrize("k", [0, 1, 2, 4, 8])
@pytest.mark.parametrize("n_way", [2, 4])
def test_roles_point_at_the_intended_tokens(k, n_way):
    b = C.make_prompts(k, 40, seed=k, n_way=n_way, noise=0.0)
    assert b.n_demos == k and b.tokens.shape[1] == 5 + 6 * k
    assert b.candidates.shape == (40, n_way)
    for r in range(40):
        toks = b.tokens[r].tolist()
        cands = b.candidates[r].tolist()
        assert len(set(cands)) == n_way and set(cands) <= set(C.LABEL_TOKENS)
        assert toks[0] == C.BOS
        mapping: dict[int, int] = {}
        for i in range(k):
            s, e = b.demo_text[r, i].tolist()
            assert e - s == C.X_LEN and s == 1 + 6 * i
            cls = int(b.demo_class[r, i])
            assert {C.token_class(t) for t in toks[s:e]} == {cls}  # noise 0: pure class tokens
            assert toks[b.forerunner[r, i]] == C.COLON and int(b.forerunner[r, i]) == e
            y = toks[b.label[r, i]]
            assert int(b.label[r, i]) == e + 1 and y in cands
            assert toks[e + 2] == C.SEP
            assert mapping.setdefault(cls, y) == y  # one label per class within a prompt
        qs, qe = b.query_text[r].tolist()
        assert qe - qs == C.X_LEN and toks[b.readout[r]] == C.COLON and int(b.readout[r]) == qe
        q = int(b.query_class[r])
        assert _majority_class(toks[qs:qe]) == q
        assert int(b.target[r]) in cands
        if q in mapping:  # the answer is the label the context gave the query's class
            assert mapping[q] == int(b.target[r])
        assert len(set(mapping.values())) == len(mapping)  # distinct classes, distinct labels
        if k >= n_way:  # coverage: every class in use is demonstrated
            assert len(mapping) == n_way


def test_mapping_is_random_per_prompt():
    b = C.make_prompts(4, 200, seed=0, n_way=2)
    pairs = {(int(b.query_class[r]), int(b.target[r])) for r in range(200)}
    by_class: dict[int, set] = {}
    for c, y in pairs:
        by_class.setdefault(c, set()).add(y)
    assert max(len(v) for v in by_class.values()) >= 4  # one class, many labels across prompts


def test_noise_replaces_some_item_tokens():
    b = C.make_prompts(8, 50, seed=1, noise=0.3)
    off = 0
    for r in range(50):
        for i in range(8):
            s, e = b.demo_text[r, i].tolist()
            off += sum(C.token_class(t) != int(b.demo_class[r, i]) for t in b.tokens[r, s:e].tolist())
    frac = off / (50 * 8 * C.X_LEN)
    assert 0.15 < frac < 0.4  # 0.3 * 15/16 expected


def test_flipped_and_no_demos_variants_pair_with_standard():
    std = C.make_prompts(4, 30, seed=3, n_way=3)
    flip = C.make_prompts(4, 30, seed=3, n_way=3, variant="flipped")
    none = C.make_prompts(4, 30, seed=3, n_way=3, variant="no_demos")
    assert torch.equal(std.tokens.ne(flip.tokens), flip.role_mask("label"))  # only labels differ
    assert (flip.target != std.target).all()
    assert torch.equal(flip.meta["unflipped_target"], std.target)
    assert torch.equal(std.candidates, flip.candidates) and torch.equal(std.candidates, none.candidates)
    assert none.n_demos == 0 and none.meta["k"] == 0
    assert torch.equal(none.target, std.target)
    qs, qe = std.query_text[0].tolist()
    nqs, nqe = none.query_text[0].tolist()
    assert torch.equal(std.tokens[:, qs:qe], none.tokens[:, nqs:nqe])


def test_training_batch_layout():
    toks, pos, tgt = C.training_batch(16, 8, random.Random(0))
    assert toks.shape == (16, 53) and pos.shape == tgt.shape == (16, 9)
    assert (toks.gather(1, pos) == C.COLON).all()
    assert torch.equal(toks.gather(1, pos[:, :-1] + 1), tgt[:, :-1])
    assert (pos[:, -1] == 52).all()
    assert set(tgt.flatten().tolist()) <= set(C.LABEL_TOKENS)


def test_bad_options_raise():
    with pytest.raises(TaskError, match="variant"):
        C.make_prompts(1, 1, 0, variant="swapped")
    with pytest.raises(TaskError, match="n_way"):
        C.make_prompts(1, 1, 0, n_way=9)
    with pytest.raises(TaskError, match="k must"):
        C.make_prompts(-1, 1, 0)
