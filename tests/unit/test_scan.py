"""Head scan: finds the shipped induction-2l's mechanism; runs the scores that apply."""

import math

import pytest
import torch

from experiments.studies.scan import format_scan, head_scan, scan_errors
from probes.capture import hooks_left
from tests.helpers import tiny_bridge


@pytest.mark.slow
def test_scan_finds_induction_2l_mechanism():
    from experiments.models.loading import load_model

    m = load_model("induction-2l")
    scan = head_scan(m)
    assert {"previous_token", "induction", "prefix_matching", "duplicate_token", "copying",
            "k_composition"} <= set(scan)
    prev, ind = scan["previous_token"], scan["induction"]
    assert prev.top(1)[0][:2] == (0, 2)  # L0H2 is the previous-token head
    assert prev.scores[0, 2] > 0.5 and prev.scores[1].max() < 0.2
    assert (ind.scores[1] > 0.5).all() and ind.scores[0].max() < 0.1  # induction heads in L1
    assert (scan["prefix_matching"].scores[1] > 0.5).all()
    # the L1 heads' keys read the previous-token head most (K-composition source)
    assert all(src == (0, 2) for src in scan["k_composition"].info["source"][1])
    assert math.isnan(float(scan["k_composition"].scores[0, 0]))
    text = format_scan(scan)
    assert "L0H2" in text and "induction scores" in text
    assert hooks_left(m) == 0


def test_scan_with_ngram_tokens_and_sampler():
    m = tiny_bridge(attn_only=False, d_vocab=8)
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(0, 4, (4, 30), generator=g)
    scan = head_scan(m, ngram_tokens=toks, weights=True)
    assert {"ngram_2", "ngram_3", "ngram_4", "copying_effective"} <= set(scan)
    assert scan["ngram_3"].info["n"] == 3 and torch.equal(scan["ngram_3"].tokens, toks)
    calls = []

    def sampler(n, seed):
        calls.append((n, seed))
        return toks[:n], torch.tensor([30, 25, 20, 30])[:n]

    s2 = head_scan(m, token_sampler=sampler, n_prompts=4, weights=False)
    assert calls == [(4, 0)] and "copying" not in s2 and "ngram_2" in s2
    assert not torch.allclose(s2["ngram_2"].scores, scan["ngram_2"].scores)  # lengths honoured
    assert scan_errors(scan) == {}


def test_scan_samples_icll_prompts_for_icll_zoo_models():
    """A model whose zoo card names the ICLL task gets n-gram scores on held-out ICLL sequences."""
    from experiments.tasks import icll

    m = tiny_bridge(d_vocab=icll.VOCAB_SIZE, n_ctx=icll.MAX_LEN)
    m.zoo_card = {"name": "icll-dfa", "task": {"name": "icll-dfa"}}
    scan = head_scan(m, n_prompts=4, weights=False)
    assert {"ngram_2", "ngram_3", "ngram_4"} <= set(scan)
    toks = scan["ngram_2"].tokens
    assert toks.shape[0] == 4 and int(toks[0, 0]) == icll.BOS
    plain = head_scan(tiny_bridge(), weights=False)
    assert not any(k.startswith("ngram") for k in plain)
