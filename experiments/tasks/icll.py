"""Task 2: in-context language learning (ICLL) on random DFAs (Akyürek, Wang, Kim, Andreas 2024).

Each prompt shows strings of one random regular language; the model must infer the language from
the prompt and predict legal next symbols.

DFA (``random_dfa``), as in research/icl-methods.md section B1:

- 4-12 states (counted after trimming to the states reachable from the start state 0; DFAs
  outside the range are resampled), all accepting;
- an alphabet of 4-18 letters drawn from the 18 letters a..r;
- each state gets 1-3 outgoing edges with distinct symbols and distinct targets, no self loops;
- strings are sampled by walking from state 0, choosing uniformly among the outgoing edges (every
  reachable state has at least one, so walks never get stuck).

Identity and splits: ``DFA.canonical_hash()`` hashes the *minimised* DFA with states renumbered in
breadth-first order (equal hashes = same language and same string distribution). The held-out set
is ``heldout_dfas()``: ``N_HELDOUT`` DFAs drawn from ``HELDOUT_SEED``; the training sampler
rejects every DFA whose hash is held out, so train and held-out DFAs are disjoint by language.

Vocabulary (``VOCAB_SIZE`` = 21): letters a..r = 0..17, ``SEP`` '|' = 18, ``PAD`` '.' = 19,
``BOS`` = 20. A sequence is ``[BOS] w_1 | w_2 | ... | w_n`` right-padded with '.'.

Length: the paper's prompts hold 10-19 strings of length 1-49 (up to ~950 tokens), too long for a
small model trained on 2 CPU cores (attention cost grows with the square of the length). Here
sequences are capped at ``MAX_LEN`` = 128 tokens and strings are 1-24 letters (``STRING_LEN``,
half the paper's): 10-19 strings are drawn and appended while they fit whole, so a sequence holds
about 9 strings (~115 tokens). Pass ``max_len``/``string_len`` for the paper's lengths.

Metrics (section B2), on next-symbol probabilities over the 18 letters, so models and baselines
are scored alike: a prediction is made at every position t >= 1 whose next token is a letter
(predictions of '|' and padding are skipped, as in the paper; BOS has no context):

- ``dfa_accuracy``: the argmax letter is a legal continuation of the current string;
- ``dfa_l1``: sum_c |p(c) - u(c)| with u uniform over the legal next letters, plus the mass p
  puts outside the letters (the full-vocabulary L1 when u is zero there); 2 x TVD.

Baseline (section B3, ``ngram_probs``): the in-context n-gram model of ``berlino/seq_icl``
``ngram.py``: strings of the prompt so far (the current partial string included) are padded on the
left with n-1 boundary symbols; P(c|h) = count(hc)/count(h); letters unseen after h share the
left-over mass (count(h) also counts occurrences not yet followed by a letter: string ends and
the current position) in proportion to the (n-1)-gram probabilities (Katz-style back-off, no
discounting, no add-one); only letters already seen in the prompt get mass.

Token-task roles (``make_prompts``): demonstration i = string w_i: ``label[i]`` = its last symbol,
``forerunner[i]`` = the token before it (the previous letter, or the '|' / BOS before a 1-letter
string), ``demo_text[i]`` = the letters before the forerunner. The query is string k+1 cut at a
random point: ``readout`` = the token before the cut (a letter, or the '|' before the string),
``target`` = the letter the walk chose next, ``query_text`` = the query's letters before the
read-out. ``candidates`` = the DFA's alphabet; ``meta["legal_next"]`` = Bool [batch, 18] of the
legal next letters at each read-out (use ``readout_dfa_accuracy``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from experiments.tasks.base import TaskError, check_n_prompts
from experiments.tasks.dfa import (
    DFA,
    LETTERS,
    N_LETTERS,
    OUT_EDGES,
    dfas_for_split,
)
from probes.hooked import HookedModel
from probes.prompt import PromptBatch, PromptBuilder

SEP = 18
PAD = 19
BOS = 20
VOCAB_SIZE = 21
MAX_LEN = 128
N_STRINGS = (10, 19)
STRING_LEN = (1, 24)


def token_names() -> list[str]:
    return list(LETTERS) + ["|", ".", "<bos>"]


def decode(tokens: Tensor | list[int]) -> str:
    """Tokens as a string: letters, '|', '.' for padding and '^' for BOS."""
    names = list(LETTERS) + ["|", ".", "^"]
    return "".join(names[int(t)] for t in tokens)


# ---------------------------------------------------------------------------------- sequences
@dataclass
class ICLLSequences:
    """Full ICLL sequences with the DFA's ground truth at every position.

    ``legal[b, t]`` are the legal letters after tokens[b, :t+1] (the continuation of the current
    string); ``eval_mask[b, t]`` is True where a prediction is scored (t >= 1, next token a letter).
    """

    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    legal: Bool[Tensor, "batch pos letter"]
    eval_mask: Bool[Tensor, "batch pos"]
    dfas: list[DFA] = field(default_factory=list)

    @property
    def targets(self) -> Int[Tensor, "batch pos"]:
        """Next token at each position (PAD after the end)."""
        return torch.cat([self.tokens[:, 1:], torch.full_like(self.tokens[:, :1], PAD)], dim=1)


def sample_sequences(
    n: int,
    seed: int,
    split: str = "train",
    max_len: int = MAX_LEN,
    n_strings: tuple[int, int] = N_STRINGS,
    string_len: tuple[int, int] = STRING_LEN,
    dfas: list[DFA] | None = None,
) -> ICLLSequences:
    """``n`` sequences ``[BOS] w_1 | ... | w_m`` (whole strings, at most ``max_len`` tokens).

    Per row: draw m ~ U{n_strings} and m string lengths ~ U{string_len}; walk each string from the
    start state choosing uniformly among the outgoing edges; append strings while they fit whole
    (a first string longer than ``max_len - 1`` is cut). The walks and the ground truth run
    batched over all rows and strings (tensor ops per letter position), the DFAs are drawn by
    ``dfas_for_split`` from ``random.Random(seed)``.
    """
    rng = random.Random(seed)
    dfas = list(dfas) if dfas is not None else dfas_for_split(split, n, rng)
    g = torch.Generator().manual_seed(rng.randrange(2**62))
    B, M, L = len(dfas), n_strings[1], string_len[1]
    nxt, syms, n_out = _dfa_tables(dfas)
    want = torch.randint(n_strings[0], n_strings[1] + 1, (B,), generator=g)
    lens = torch.randint(string_len[0], string_len[1] + 1, (B, M), generator=g)
    # uniform walks of L letters for every (row, string): letters and the state after each
    rows = torch.arange(B)[:, None].expand(B, M)
    state = torch.zeros(B, M, dtype=torch.long)
    letters = torch.empty(B, M, L, dtype=torch.long)
    after = torch.empty(B, M, L, dtype=torch.long)
    u = torch.rand(B, M, L, generator=g)
    for p in range(L):
        pick = (u[..., p] * n_out[rows, state]).long()
        letters[..., p] = syms[rows, state, pick]
        state = nxt[rows, state, letters[..., p]]
        after[..., p] = state
    # layout: string i starts after the tokens so far (+1 for its '|'); keep whole strings that fit
    lens[:, 0] = lens[:, 0].clamp(max=max_len - 1)
    step = lens + (torch.arange(M) > 0).long()
    end = 1 + step.cumsum(1)  # tokens in the row after string i
    keep = (torch.arange(M)[None] < want[:, None]) & (end <= max_len)
    keep[:, 0] = True
    lengths = (end * keep).amax(1)
    T = int(lengths.max())
    start = end - lens  # position of string i's first letter
    tokens = torch.full((B, T), PAD, dtype=torch.long)
    state_at = torch.zeros(B, T, dtype=torch.long)  # state after each token (start at BOS and '|')
    at = torch.arange(L)[None, None] < lens[..., None]
    b_idx, i_idx, p_idx = (at & keep[..., None]).nonzero(as_tuple=True)
    pos = start[b_idx, i_idx] + p_idx
    tokens[b_idx, pos] = letters[b_idx, i_idx, p_idx]
    state_at[b_idx, pos] = after[b_idx, i_idx, p_idx]
    sb, si = (keep & (torch.arange(M)[None] > 0)).nonzero(as_tuple=True)
    tokens[sb, start[sb, si] - 1] = SEP
    tokens[:, 0] = BOS
    inside = torch.arange(T)[None] < lengths[:, None]
    legal = (nxt[torch.arange(B)[:, None], state_at] >= 0) & inside[..., None]
    nxt_tok = torch.cat([tokens[:, 1:], torch.full((B, 1), PAD)], 1)
    eval_mask = (torch.arange(T)[None] >= 1) & (nxt_tok < N_LETTERS)
    return ICLLSequences(tokens, lengths, legal, eval_mask, dfas)


def _dfa_tables(dfas: list[DFA]) -> tuple[Tensor, Tensor, Tensor]:
    """Batched transition tables: ``next[b, s, c]`` (-1: no edge), the sorted out-letters
    ``syms[b, s, j]`` and their count ``n_out[b, s]``."""
    S, E = max(d.n_states for d in dfas), OUT_EDGES[1]
    nxt = [[[-1] * N_LETTERS for _ in range(S)] for _ in dfas]
    syms = [[[0] * E for _ in range(S)] for _ in dfas]
    n_out = [[1] * S for _ in dfas]
    for b, d in enumerate(dfas):
        for s, tr in enumerate(d.transitions):
            if len(tr) > E:
                raise TaskError(f"a DFA state has {len(tr)} out-edges, more than OUT_EDGES={E}")
            for j, c in enumerate(sorted(tr)):
                syms[b][s][j] = c
                nxt[b][s][c] = tr[c]
            n_out[b][s] = max(len(tr), 1)
    return torch.tensor(nxt), torch.tensor(syms), torch.tensor(n_out)


def sample_sequences_loop(
    n: int,
    seed: int,
    split: str = "train",
    max_len: int = MAX_LEN,
    n_strings: tuple[int, int] = N_STRINGS,
    string_len: tuple[int, int] = STRING_LEN,
    dfas: list[DFA] | None = None,
) -> ICLLSequences:
    """The plain-Python definition of ``sample_sequences`` (one DFA walk at a time): the same
    distribution from a different random stream. Kept as the specification the batched sampler is
    tested against (tests/unit/test_tasks_icll.py) and as the speed baseline (bench/icll_sampler.py)."""
    rng = random.Random(seed)
    dfas = dfas if dfas is not None else dfas_for_split(split, n, rng)
    rows = []
    for dfa in dfas:
        want = rng.randint(*n_strings)
        toks = [BOS]
        for i in range(want):
            w = dfa.sample(rng.randint(*string_len), rng)
            extra = len(w) + (1 if i else 0)
            if len(toks) + extra > max_len:
                if i == 0:
                    w = w[: max_len - 1]
                else:
                    break
            toks += ([SEP] if i else []) + w
        rows.append(toks)
    return _sequences_from_rows(rows, dfas, max(len(r) for r in rows))


def _sequences_from_rows(rows: list[list[int]], dfas: list[DFA], T: int) -> ICLLSequences:
    B = len(rows)
    tokens = torch.full((B, T), PAD, dtype=torch.long)
    legal = [[[False] * N_LETTERS for _ in range(T)] for _ in range(B)]
    eval_mask = [[False] * T for _ in range(B)]
    for b, (row, dfa) in enumerate(zip(rows, dfas)):
        tokens[b, : len(row)] = torch.tensor(row)
        state: int | None = dfa.start
        for t, tok in enumerate(row):
            if tok in (BOS, SEP):
                state = dfa.start
            elif state is not None:
                state = dfa.transitions[state].get(tok)
            if state is not None:
                for c in dfa.transitions[state]:
                    legal[b][t][c] = True
            eval_mask[b][t] = t >= 1 and t + 1 < len(row) and row[t + 1] < N_LETTERS
    lengths = torch.tensor([len(r) for r in rows])
    return ICLLSequences(tokens, lengths, torch.tensor(legal), torch.tensor(eval_mask), list(dfas))


def letter_probs(logits: Float[Tensor, "... vocab"]) -> Float[Tensor, "... letter"]:
    """Softmax over the whole vocabulary, restricted to the letters (may sum to < 1)."""
    return logits.float().softmax(-1)[..., :N_LETTERS]


# ----------------------------------------------------------------------------------- metrics
def dfa_accuracy(probs: Float[Tensor, "batch pos letter"], legal: Bool[Tensor, "batch pos letter"],
                 mask: Bool[Tensor, "batch pos"]) -> float:
    """Share of scored positions whose argmax letter is a legal continuation."""
    _check_shapes(probs, legal, mask)
    hit = legal.gather(-1, probs.argmax(-1, keepdim=True)).squeeze(-1)
    return float(hit[mask].float().mean())


def dfa_l1(probs: Float[Tensor, "batch pos letter"], legal: Bool[Tensor, "batch pos letter"],
           mask: Bool[Tensor, "batch pos"]) -> float:
    """Mean L1 distance to the DFA's uniform legal-next distribution (mass off the letters counts)."""
    _check_shapes(probs, legal, mask)
    u = legal.float() / legal.float().sum(-1, keepdim=True).clamp(min=1)
    off = (1 - probs.sum(-1)).clamp(min=0)
    d = (probs - u).abs().sum(-1) + off
    return float(d[mask].mean())


def _check_shapes(probs: Tensor, legal: Tensor, mask: Tensor) -> None:
    if probs.shape != legal.shape or probs.shape[:-1] != mask.shape or probs.shape[-1] != N_LETTERS:
        raise TaskError(
            f"metric shapes disagree: probs {tuple(probs.shape)}, legal {tuple(legal.shape)}, "
            f"mask {tuple(mask.shape)}; probs must be [batch, pos, {N_LETTERS}] next-letter "
            f"probabilities (use letter_probs(logits))"
        )
    if not (legal.any(-1) | ~mask).all():
        raise TaskError("a scored position has no legal next letter; check the DFA ground truth")


def readout_dfa_accuracy(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> float:
    """Share of rows whose argmax letter at the read-out is legal (``make_prompts`` batches)."""
    legal = batch.meta.get("legal_next")
    if legal is None or legal.shape[0] != batch.batch_size:
        raise TaskError("batch.meta['legal_next'] is missing or has the wrong rows; build the batch "
                        "with experiments.tasks.icll.make_prompts (and don't select() rows)")
    pred = letter_probs(logits).argmax(-1)
    return float(legal[torch.arange(batch.batch_size), pred].float().mean())


def model_probs(model: HookedModel, seqs: ICLLSequences, batch_size: int = 32) -> Float[Tensor, "batch pos letter"]:
    """A model's next-letter probabilities at every position of ``seqs``."""
    out = []
    with torch.no_grad():
        for s in range(0, seqs.tokens.shape[0], batch_size):
            out.append(letter_probs(model(seqs.tokens[s : s + batch_size])))
    return torch.cat(out)


def evaluate(probs: Float[Tensor, "batch pos letter"], seqs: ICLLSequences) -> dict[str, float]:
    return {"accuracy": dfa_accuracy(probs, seqs.legal, seqs.eval_mask),
            "l1": dfa_l1(probs, seqs.legal, seqs.eval_mask)}


# ------------------------------------------------------------------------------ n-gram model
BOUNDARY = -1


def ngram_probs_row(tokens: list[int] | Tensor, n: int) -> Float[Tensor, "pos letter"]:
    """In-context n-gram (with back-off) next-letter probabilities after each token of one row.

    Row t is the prediction after tokens[: t+1]; BOS and '|' start a new string, padding ends the
    row (later rows are zero). Rows before any letter has been seen are zero.
    """
    if n < 1:
        raise TaskError(f"n-gram order must be >= 1, got {n}")
    toks = [int(t) for t in tokens]
    out = torch.zeros(len(toks), N_LETTERS)
    counts: list[Counter] = [Counter() for _ in range(n + 1)]  # counts[m][m-gram tuple]
    cur: list[int] = []
    for t, tok in enumerate(toks):
        if tok == PAD:
            break
        if tok in (BOS, SEP):
            cur = [BOUNDARY] * (n - 1)
            for m in range(1, n):  # the padding's own m-grams, counted once per string
                for i in range(len(cur) - m + 1):
                    counts[m][tuple(cur[i : i + m])] += 1
        else:
            cur.append(tok)
            for m in range(1, n + 1):
                if len(cur) >= m:
                    counts[m][tuple(cur[-m:])] += 1
        vocab = sorted(c for c in range(N_LETTERS) if counts[1][(c,)] > 0)
        if vocab:
            out[t] = _backoff(cur, n, counts, vocab)
    return out


def _backoff(cur: list[int], n: int, counts: list[Counter], vocab: list[int]) -> Tensor:
    p = torch.zeros(N_LETTERS)
    uni = torch.tensor([counts[1][(c,)] for c in vocab], dtype=torch.float)
    p[vocab] = uni / uni.sum()
    for m in range(2, n + 1):
        h = tuple(cur[-(m - 1):])
        ch = counts[m - 1][h]
        seen = {c: counts[m][h + (c,)] for c in vocab if counts[m][h + (c,)] > 0}
        q = torch.zeros(N_LETTERS)
        for c, cnt in seen.items():
            q[c] = cnt / ch
        unseen = [c for c in vocab if c not in seen]
        beta = 1.0 - float(q.sum())
        if unseen:
            lower = p[unseen]
            q[unseen] = beta * lower / lower.sum() if lower.sum() > 0 else beta / len(unseen)
        p = q
    return p


def ngram_probs(seqs: ICLLSequences | Tensor, n: int) -> Float[Tensor, "batch pos letter"]:
    """``ngram_probs_row`` for every row of a sequences batch (or a token tensor)."""
    tokens = seqs.tokens if isinstance(seqs, ICLLSequences) else seqs
    return torch.stack([ngram_probs_row(row, n) for row in tokens])


# ---------------------------------------------------------------------------- token prompts
def make_prompts(
    k: int,
    n_prompts: int,
    seed: int,
    split: str = "heldout",
    max_len: int = MAX_LEN,
    string_len: tuple[int, int] = STRING_LEN,
) -> PromptBatch:
    """``k`` complete strings of one DFA, then a cut query string (roles in the module doc).

    String lengths are drawn from ``string_len`` capped so that k+1 strings fit ``max_len``.
    """
    if k < 0:
        raise TaskError(f"k must be >= 0, got {k}")
    check_n_prompts(n_prompts, max_len, "icll")
    cap = min(string_len[1], (max_len - 1) // (k + 1) - 1)
    if cap < max(string_len[0], 1):
        raise TaskError(f"{k + 1} strings cannot fit in max_len={max_len}; lower k or raise max_len")
    rng = random.Random(seed)
    dfas = dfas_for_split(split, n_prompts, rng)
    rows, legal = [], torch.zeros(n_prompts, N_LETTERS, dtype=torch.bool)
    for b, dfa in enumerate(dfas):
        pb = PromptBuilder().add([BOS])
        for _ in range(k):
            w = dfa.sample(rng.randint(string_len[0], cap), rng)
            if len(w) >= 2:
                pb.demo(w[:-2], w[-2], w[-1])
            else:  # a 1-letter string: its forerunner is the BOS/'|' already in the prompt
                pb.demo([], (), w[0])
            pb.add([SEP])
        w = dfa.sample(max(rng.randint(string_len[0], cap), 1), rng)
        cut = rng.randrange(len(w))  # predict w[cut] from w[:cut]
        if cut == 0:  # cut before its first letter: read out at the '|' (or BOS) just added
            pb.query([], ())
        else:
            pb.query(w[: cut - 1], w[cut - 1])
        state = dfa.run(w[:cut])
        assert state is not None  # w is a walk of the DFA, so its prefix runs
        legal[b, dfa.legal(state)] = True
        rows.append(pb.build(target=w[cut], candidates=list(dfa.alphabet), pad_id=PAD))
    batch = PromptBatch.concat(rows)
    batch.meta = {"task": "icll", "k": k, "split": split, "seed": seed, "max_len": max_len,
                  "legal_next": legal, "dfa_hashes": [d.canonical_hash() for d in dfas]}
    return batch
