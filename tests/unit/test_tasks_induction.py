"""Task 1 (repeated random tokens): role positions, the Olsson layout, determinism, errors."""

import pytest
import torch

from experiments.tasks import TaskError, induction


@pytest.mark.parametrize("k", [0, 1, 2, 5])
@pytest.mark.parametrize("bos", [None, 0])
def test_roles_point_at_the_intended_tokens(k, bos):
    L = 12
    b = induction.make_prompts(k, 4, seed=1, seg_len=L, bos=bos, vocab=100)
    off = 0 if bos is None else 1
    assert b.tokens.shape == (4, off + (k + 1) * L - 1)
    assert b.n_demos == k
    for r in range(4):
        toks = b.tokens[r]
        seg = toks[off : off + L - 1].tolist() + [int(b.target[r])]
        assert len(set(seg)) == L  # distinct tokens: the successor of each token is unique
        for i in range(k):
            s, e = b.demo_text[r, i].tolist()
            assert (s, e) == (off + i * L, off + i * L + L - 2)
            assert toks[s:e].tolist() == seg[: L - 2]
            assert int(toks[b.forerunner[r, i]]) == seg[L - 2]
            assert int(toks[b.label[r, i]]) == seg[L - 1] == int(b.target[r])
        qs, qe = b.query_text[r].tolist()
        assert toks[qs:qe].tolist() == seg[: L - 2]
        assert int(b.readout[r]) == b.tokens.shape[1] - 1 == qe
        assert int(toks[b.readout[r]]) == seg[L - 2]
        if bos is not None:
            assert int(toks[0]) == bos and bos not in seg


def test_full_sequence_is_the_segment_repeated():
    b = induction.make_prompts(2, 3, seed=0, seg_len=7)
    full = induction.full_sequences(b)
    assert full.shape == (3, 21)
    for r in range(3):
        assert torch.equal(full[r, :7], full[r, 7:14]) and torch.equal(full[r, :7], full[r, 14:])


def test_olsson_variant_is_bos_plus_25_tokens_times_4():
    b = induction.make_prompts(-1, 2, seed=0, variant="olsson")
    assert b.n_demos == 3 and b.meta["seg_len"] == 25
    full = induction.full_sequences(b)
    assert full.shape == (2, 101)
    assert (full[:, 0] == 0).all() and (full[:, 1:] != 0).all()
    body = full[:, 1:].reshape(2, 4, 25)
    assert (body == body[:, :1]).all()


def test_same_seed_same_prompts_and_different_seed_differs():
    a = induction.make_prompts(2, 3, seed=5)
    b = induction.make_prompts(2, 3, seed=5)
    c = induction.make_prompts(2, 3, seed=6)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)


def test_bad_options_raise_clear_errors():
    with pytest.raises(TaskError, match="seg_len"):
        induction.make_prompts(1, 1, 0, seg_len=1)
    with pytest.raises(TaskError, match="distinct=False"):
        induction.make_prompts(1, 1, 0, seg_len=30, vocab=20)
    with pytest.raises(TaskError, match="variant"):
        induction.make_prompts(1, 1, 0, variant="nope")
    with pytest.raises(TaskError, match="BOS"):
        induction.make_prompts(1, 1, 0, bos=5, low=0)
