"""Task 2 (ICLL on random DFAs): DFA constraints, acceptance, splits, n-gram baseline, metrics, roles."""

import random

import pytest
import torch

from experiments.tasks import TaskError, icll
from experiments.tasks import dfa as dfa_mod
from experiments.tasks.dfa import DFA, N_LETTERS
from experiments.tasks.icll import BOS, PAD, SEP


def _tok(text: str) -> list[int]:
    """'^' BOS, '|' SEP, letters a..r."""
    return [BOS if ch == "^" else SEP if ch == "|" else icll.LETTERS.index(ch) for ch in text]


def test_random_dfas_satisfy_the_constraints():
    rng = random.Random(0)
    for _ in range(300):
        d = dfa_mod.random_dfa(rng)
        assert 4 <= d.n_states <= 12 and d.start == 0
        assert 4 <= len(d.alphabet) <= 18 and set(d.alphabet) <= set(range(N_LETTERS))
        reach, stack = {0}, [0]
        for s, tr in enumerate(d.transitions):
            assert 1 <= len(tr) <= 3
            assert set(tr) <= set(d.alphabet)  # distinct symbols (dict keys) from the alphabet
            assert len(set(tr.values())) == len(tr)  # distinct targets
            assert s not in tr.values()  # no self loops
            assert all(0 <= t < d.n_states for t in tr.values())
        while stack:  # trimmed: every state reachable from the start
            for t in d.transitions[stack.pop()].values():
                if t not in reach:
                    reach.add(t)
                    stack.append(t)
        assert reach == set(range(d.n_states))


def test_sampled_strings_are_accepted_and_illegal_ones_rejected():
    rng = random.Random(1)
    for _ in range(50):
        d = dfa_mod.random_dfa(rng)
        for length in (1, 5, 30):
            w = d.sample(length, rng)
            assert len(w) == length and d.accepts(w)
        s = d.run(w)
        illegal = [c for c in range(N_LETTERS) if c not in d.transitions[s]]
        assert not d.accepts(w + illegal[:1])


def test_sequences_hold_accepted_strings_and_true_legal_sets():
    seqs = icll.sample_sequences(16, seed=3, split="heldout")
    assert seqs.tokens.shape[1] <= icll.MAX_LEN
    for b, d in enumerate(seqs.dfas):
        row = seqs.tokens[b, : seqs.lengths[b]].tolist()
        assert row[0] == BOS and PAD not in row
        strings = icll.decode(row[1:]).split("|")
        assert 1 <= len(strings) <= icll.N_STRINGS[1]
        for w in strings:
            ids = [icll.LETTERS.index(c) for c in w]
            assert 1 <= len(ids) <= icll.STRING_LEN[1] and d.accepts(ids)
        for t in range(len(row)):
            if seqs.eval_mask[b, t]:
                assert t >= 1 and row[t + 1] < N_LETTERS
                assert seqs.legal[b, t, row[t + 1]]  # the walk only takes legal edges
        # legal[t] is exactly the state's out-letters after the current string prefix
        t = len(row) - 1
        prefix = icll.decode(row[1:]).split("|")[-1]
        state = d.run([icll.LETTERS.index(c) for c in prefix])
        assert seqs.legal[b, t].nonzero().flatten().tolist() == d.legal(state)


def test_canonical_hash_is_invariant_to_renumbering_and_redundant_states():
    d = DFA(4, (0, 1, 2), ({0: 1, 1: 2}, {2: 3}, {2: 3}, {0: 1}))  # states 1 and 2 are equivalent
    renumbered = DFA(4, (0, 1, 2), ({0: 2, 1: 1}, {2: 3}, {2: 3}, {0: 2}))
    merged = DFA(3, (0, 1, 2), ({0: 1, 1: 1}, {2: 2}, {0: 1}))
    other = DFA(3, (0, 1, 2), ({0: 1, 1: 1}, {2: 2}, {1: 1}))
    assert d.minimized().n_states == 3
    assert d.canonical_hash() == renumbered.canonical_hash() == merged.canonical_hash()
    assert d.canonical_hash() != other.canonical_hash()


def test_train_and_heldout_dfas_are_disjoint_and_fixed():
    held = dfa_mod.heldout_dfas()
    hashes = dfa_mod.heldout_hashes()
    assert len(held) == dfa_mod.N_HELDOUT == len(hashes)  # held-out languages are distinct
    again = dfa_mod.heldout_dfas.__wrapped__(dfa_mod.N_HELDOUT, dfa_mod.HELDOUT_SEED)
    assert [d.canonical_hash() for d in again] == [d.canonical_hash() for d in held]
    rng = random.Random(9)
    train = [dfa_mod.train_dfa(rng) for _ in range(300)]
    assert not {d.canonical_hash() for d in train} & hashes
    # the rejection really happens: a plain random stream from the held-out seed hits held-out DFAs
    plain = random.Random(dfa_mod.HELDOUT_SEED)
    assert dfa_mod.random_dfa(plain).canonical_hash() in hashes


def test_ngram_baseline_matches_hand_computed_probabilities():
    toks = _tok("^abc|bd|ab")  # predictions after the final "ab" are row 9
    p1, p2, p3 = (icll.ngram_probs_row(toks, n) for n in (1, 2, 3))
    a, b, c, d = range(4)
    exp1 = torch.zeros(N_LETTERS)
    exp1[[a, b, c, d]] = torch.tensor([2, 3, 1, 1]) / 7
    torch.testing.assert_close(p1[9], exp1)
    # bigram after 'b': count(b)=3, seen bc, bd (1/3 each); the left-over 1/3 goes to {a, b} by
    # unigram counts 2:3
    exp2 = torch.zeros(N_LETTERS)
    exp2[[a, b, c, d]] = torch.tensor([2 / 15, 3 / 15, 1 / 3, 1 / 3])
    torch.testing.assert_close(p2[9], exp2)
    # trigram after "ab": count(ab)=2, seen abc (1/2); the other 1/2 goes to {a, b, d} by p2
    exp3 = torch.zeros(N_LETTERS)
    exp3[[a, b, c, d]] = torch.tensor([0.1, 0.15, 0.5, 0.25])
    torch.testing.assert_close(p3[9], exp3)
    # after a separator the history is the boundary: count(_)=3, "_a" once, "_b" once
    exp_sep = torch.zeros(N_LETTERS)
    exp_sep[[a, b, c, d]] = torch.tensor([1 / 3, 1 / 3, 1 / 6, 1 / 6])
    torch.testing.assert_close(p2[7], exp_sep)
    assert (p1[0] == 0).all()  # nothing seen after BOS
    for p in (p1, p2, p3):
        torch.testing.assert_close(p[1:].sum(-1), torch.ones(len(toks) - 1))


def test_metrics_on_known_distributions():
    legal = torch.zeros(1, 3, N_LETTERS, dtype=torch.bool)
    legal[0, 0, [0, 1]] = True
    legal[0, 1, [2]] = True
    legal[0, 2, [3, 4]] = True
    mask = torch.tensor([[True, True, False]])
    probs = torch.zeros(1, 3, N_LETTERS)
    probs[0, 0, 0] = 1.0              # legal point mass: L1 = 0.5 + 0.5
    probs[0, 1, 5] = 0.6              # illegal argmax; 0.4 of the mass off the letters
    probs[0, 2, 9] = 1.0              # masked out
    assert icll.dfa_accuracy(probs, legal, mask) == 0.5
    assert icll.dfa_l1(probs, legal, mask) == pytest.approx((1.0 + (0.6 + 1.0 + 0.4)) / 2)
    with pytest.raises(TaskError, match="letter"):
        icll.dfa_l1(probs[..., :5], legal, mask)


def test_the_dfa_itself_scores_perfectly_and_ngrams_improve_with_order():
    seqs = icll.sample_sequences(12, seed=5, split="heldout")
    exact = seqs.legal.float() / seqs.legal.float().sum(-1, keepdim=True).clamp(min=1)
    m = icll.evaluate(exact, seqs)
    assert m["accuracy"] == 1.0 and m["l1"] == pytest.approx(0.0, abs=1e-6)
    acc = [icll.evaluate(icll.ngram_probs(seqs, n), seqs)["accuracy"] for n in (1, 2, 3)]
    assert acc[0] < acc[1] < acc[2]


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_prompt_roles_point_at_the_intended_tokens(k):
    b = icll.make_prompts(k, 20, seed=k)
    assert b.n_demos == k and b.tokens.shape[1] <= icll.MAX_LEN
    legal = b.meta["legal_next"]
    for r in range(b.batch_size):
        toks = b.tokens[r]
        assert int(toks[0]) == BOS
        for i in range(k):
            lab = int(b.label[r, i])
            assert int(toks[lab]) < N_LETTERS and int(toks[lab + 1]) == SEP  # last letter
            assert int(b.forerunner[r, i]) == lab - 1
            s, e = b.demo_text[r, i].tolist()
            assert e == lab - 1 and all(int(t) < N_LETTERS for t in toks[s:e])
        qs, qe = b.query_text[r].tolist()
        ro = int(b.readout[r])
        assert ro == int(b.lengths[r]) - 1
        tgt = int(b.target[r])
        assert tgt in b.candidates[r].tolist() and legal[r, tgt]
        if qe == qs and int(toks[ro]) in (SEP, BOS):
            prefix = []
        else:
            assert qe == ro and int(toks[ro]) < N_LETTERS
            prefix = toks[qs : ro + 1].tolist()
        assert all(t < N_LETTERS for t in prefix)
    assert b.meta["dfa_hashes"][0] in dfa_mod.heldout_hashes()


def test_readout_accuracy_and_model_probs_on_a_tiny_model():
    from tests.helpers import tiny_bridge

    model = tiny_bridge(d_vocab=icll.VOCAB_SIZE, n_ctx=icll.MAX_LEN)
    seqs = icll.sample_sequences(3, seed=0, split="heldout")
    probs = icll.model_probs(model, seqs, batch_size=2)
    assert probs.shape == (3, seqs.tokens.shape[1], N_LETTERS)
    assert (probs.sum(-1) < 1).all()  # some mass on '|', '.', BOS
    b = icll.make_prompts(2, 8, seed=0)
    logits = torch.full((8, icll.VOCAB_SIZE), -10.0)
    logits[torch.arange(8), b.target] = 10.0
    assert icll.readout_dfa_accuracy(logits, b) == 1.0


def _layout_stats(seqs):
    """Histograms of the number of strings per row and of string lengths, and the exact letter
    pairs at the start of strings, from a sequences batch."""
    n_str, lens, starts = [], [], []
    for b in range(seqs.tokens.shape[0]):
        strings = icll.decode(seqs.tokens[b, 1 : seqs.lengths[b]]).split("|")
        n_str.append(len(strings))
        lens += [len(w) for w in strings]
        starts += [w[:2] for w in strings if len(w) >= 2]
    return n_str, lens, starts


def test_batched_sampler_draws_the_loop_samplers_distribution():
    """Same DFAs, 1200 rows each way: the layout (strings per row, string lengths) and the walk
    (first two letters of a string) agree with the loop definition by chi-square tests, and the
    walk's letter frequencies match the DFA's exact probabilities."""
    from scipy.stats import chi2_contingency, chisquare

    dfa = next(d for d in dfa_mod.heldout_dfas() if len(d.transitions[0]) >= 2)
    n = 1200
    fast = icll.sample_sequences(n, seed=11, dfas=[dfa] * n)
    slow = icll.sample_sequences_loop(n, seed=12, dfas=[dfa] * n)
    for a, b in zip(_layout_stats(fast), _layout_stats(slow)):
        keys = sorted(set(a) | set(b))
        table = [[a.count(k) for k in keys], [b.count(k) for k in keys]]
        keep = [i for i in range(len(keys)) if table[0][i] + table[1][i] >= 10]
        assert len(keep) >= 2
        p = chi2_contingency([[row[i] for i in keep] for row in table])[1]
        assert p > 1e-3, p
    # exact: P(first two letters = xy) = 1/out(start) * 1/out(state after x)
    starts = _layout_stats(fast)[2]
    probs = {}
    for x, s1 in dfa.transitions[0].items():
        for y in dfa.transitions[s1]:
            probs[icll.LETTERS[x] + icll.LETTERS[y]] = 1 / len(dfa.transitions[0]) / len(dfa.transitions[s1])
    keys = sorted(probs)
    observed = [starts.count(k) for k in keys]
    assert sum(observed) == len(starts)  # only legal pairs occur
    assert chisquare(observed, [probs[k] * len(starts) for k in keys])[1] > 1e-3


def test_batched_sampler_ground_truth_equals_the_loop_definition_on_its_own_rows():
    """legal/eval_mask recomputed by the loop walk of the batched sampler's tokens are identical."""
    seqs = icll.sample_sequences(24, seed=4, split="train", max_len=60)
    assert int(seqs.lengths.max()) <= 60
    for b, d in enumerate(seqs.dfas):
        row = seqs.tokens[b, : seqs.lengths[b]].tolist()
        state = 0
        for t, tok in enumerate(row):
            state = 0 if tok in (BOS, SEP) else d.transitions[state][tok]
            assert seqs.legal[b, t].nonzero().flatten().tolist() == d.legal(state)
            assert bool(seqs.eval_mask[b, t]) == (t >= 1 and t + 1 < len(row) and row[t + 1] < N_LETTERS)
        assert not seqs.legal[b, len(row):].any() and not seqs.eval_mask[b, len(row):].any()
    # a first string longer than the context is cut, as in the loop definition
    cut = icll.sample_sequences(3, seed=0, split="heldout", max_len=10, string_len=(20, 20))
    assert cut.tokens.shape[1] == 10 and (cut.lengths == 10).all() and SEP not in cut.tokens.tolist()[0]
