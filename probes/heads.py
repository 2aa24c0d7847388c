"""Head scores: layer x head tables that say which heads implement ICL.

Every attention-based score is one instance of a general rule (``attention_mass_scores``): build a
boolean mask ``D[b, i, j]`` of the keys a head of that kind should attend to from query ``i``,
run the model, and average the attention mass ``sum_j A[i, j] D[i, j]`` over the queries whose
mask is non-empty. The masks (research/icl-methods.md):

- previous token (A3): ``D[i, i-1]``;
- duplicate token (A7): ``{j < i : x_j = x_i}``;
- n-gram head (B4): ``S_i = {j < i : x_{j-1-k} = x_{i-k}, k = 0..n-2}``, the positions whose
  preceding n-1 tokens equal the current last n-1 tokens; n = 2 is the induction / prefix-matching
  set ``{j : x_{j-1} = x_i}``;
- Olsson prefix matching (A2): the n = 2 set on 25 random tokens repeated 4 times after BOS;
- induction on repeated random tokens (A1): the stripe ``t -> t - L + 1`` (``induction_scores``).

Weight-based scores (the OV copying score, A4b, and Q/K/V composition, A6) are in
``probes.head_weights``. The model-level in-context learning score (A5) is ``icl_score``.

Patterns are read inside hooks (reduced to the per-head mass at once, nothing else kept), or from
a cache the caller passes, which is only read, never written (TransformerLens's ``detect_head``
edits its input pattern in place; nothing here does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from probes.errors import WorkbenchError
from probes.hooked import HookedModel


class HeadScoreError(WorkbenchError):
    """A head-score request that cannot be computed; the message names the fix."""


@dataclass
class HeadScores:
    """A [n_layers, n_heads] score table and the prompts it was computed on."""

    name: str
    scores: Float[Tensor, "layer head"]
    tokens: Int[Tensor, "batch pos"] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def top(self, n: int = 5) -> list[tuple[int, int, float]]:
        """The ``n`` highest-scoring heads as (layer, head, score), best first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise HeadScoreError(f"top needs a number of heads >= 1, got {n!r}")
        flat = torch.nan_to_num(self.scores.flatten(), nan=-math.inf)
        idx = flat.argsort(descending=True)[:n]
        H = self.scores.shape[1]
        return [(int(i) // H, int(i) % H, float(self.scores.flatten()[i])) for i in idx]

    def by_layer(self, reduce: str = "max") -> Float[Tensor, " layer"]:
        """Per-layer summary (``"max"`` or ``"mean"`` over heads)."""
        s = torch.nan_to_num(self.scores, nan=-math.inf if reduce == "max" else 0.0)
        return s.max(dim=1).values if reduce == "max" else s.mean(dim=1)

    def above(self, threshold: float) -> list[tuple[int, int]]:
        """(layer, head) of every head scoring above ``threshold``."""
        return [(int(l), int(h)) for l, h in (self.scores > threshold).nonzero().tolist()]

    def figure(self, **kw: Any):
        return head_scores_figure(self, **kw)

    @property
    def per_prompt(self) -> Float[Tensor, "batch layer head"] | None:
        """Each prompt's score (its own queries' mean mass; NaN for a prompt with no valid query),
        for intervals over prompts; None for weight-based scores."""
        return self.info.get("per_prompt")

    @property
    def null(self) -> "HeadScores | None":
        """The same score on inputs where the mechanism cannot apply (``null_scores``), if computed."""
        return self.info.get("null")


# ---------------------------------------------------------------------- token helpers
def as_token_batch(tokens: Tensor | Sequence[Sequence[int]], pad_id: int = 0,
                   lengths: Tensor | None = None) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Tokens as a right-padded [batch, pos] tensor plus lengths (lists are padded)."""
    if isinstance(tokens, Tensor):
        if tokens.dim() == 1:
            tokens = tokens[None]
        if tokens.dim() != 2:
            raise HeadScoreError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
        lens = torch.full((tokens.shape[0],), tokens.shape[1]) if lengths is None else lengths.long()
        return tokens.long(), lens
    rows = [list(map(int, r)) for r in tokens]
    if not rows or min(len(r) for r in rows) < 1:
        raise HeadScoreError("token prompts must be non-empty lists of token ids")
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for b, r in enumerate(rows):
        out[b, : len(r)] = torch.tensor(r)
    return out, torch.tensor([len(r) for r in rows])


def repeated_random_tokens(batch: int, seg_len: int, vocab: int, seed: int = 0,
                           bos: int | None = None, low: int = 0) -> Int[Tensor, "batch pos"]:
    """[BOS?] r r with r a random segment of ``seg_len`` tokens drawn from [low, vocab)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(low, vocab, (batch, seg_len), generator=g)
    toks = torch.cat([r, r], dim=1)
    if bos is not None:
        toks = torch.cat([torch.full((batch, 1), bos), toks], dim=1)
    return toks


# ---------------------------------------------------------------------- masks (pure)
def previous_token_mask(tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch q k"]:
    B, T = tokens.shape
    return torch.eye(T, dtype=torch.bool).roll(-1, dims=1).tril(-1).expand(B, T, T).clone()


def duplicate_token_mask(tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch q k"]:
    """D[i, j] = 1 where j < i and x_j = x_i."""
    T = tokens.shape[1]
    eq = tokens[:, :, None] == tokens[:, None, :]
    return eq & torch.ones(T, T, dtype=torch.bool).tril(-1)


def ngram_mask(tokens: Int[Tensor, "batch pos"], n: int) -> Bool[Tensor, "batch q k"]:
    """D[i, j] = 1 for j in S_i = {j < i : x_{j-1-k} = x_{i-k} for k = 0..n-2} (B4).

    The keys whose preceding n-1 tokens equal the n-1 tokens ending at the query; n = 2 gives the
    induction / prefix-matching set {j < i : x_{j-1} = x_i}.
    """
    if n < 2:
        raise HeadScoreError(f"n-gram heads need n >= 2 (n = 2 is the induction head), got {n}")
    B, T = tokens.shape
    eq = tokens[:, :, None] == tokens[:, None, :]  # eq[b, a, c] = x_a == x_c
    mask = torch.ones(B, T, T, dtype=torch.bool).tril(-1)
    for k in range(n - 1):
        # need eq[i-k, j-1-k]: shift rows down by k and columns right by k+1
        shifted = torch.zeros_like(eq)
        shifted[:, k:, k + 1:] = eq[:, : T - k, : T - k - 1]
        mask &= shifted
    return mask


# ---------------------------------------------------------------------- the general score
def attention_patterns(model: HookedModel, tokens: Tensor,
                       cache: Mapping[str, Tensor] | None = None) -> Float[Tensor, "layer batch head q k"]:
    """All layers' attention patterns on ``tokens`` (a copy; only hook_pattern is kept).

    With ``cache`` (an ActivationCache or dict holding ``blocks.{l}.attn.hook_pattern``) the
    patterns are read from it (stacked into a new tensor; the cache is not modified).
    """
    n_layers = model.cfg.n_layers
    if cache is not None:
        return torch.stack([cache[f"blocks.{l}.attn.hook_pattern"] for l in range(n_layers)])
    out: list[Tensor | None] = [None] * n_layers

    def make_hook(layer: int):
        def hook(pattern: Tensor, hook: Any) -> None:
            out[layer] = pattern.detach().clone()
        return hook

    hooks = [(f"blocks.{l}.attn.hook_pattern", make_hook(l)) for l in range(n_layers)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(tokens)
    return torch.stack(out)  # type: ignore[arg-type]


def attention_mass_scores(
    model: HookedModel,
    tokens: Tensor | Sequence[Sequence[int]],
    mask_fn: Callable[[Tensor], Tensor] | Tensor,
    name: str,
    lengths: Tensor | None = None,
    batch_size: int = 32,
    cache: Mapping[str, Tensor] | None = None,
    info: dict[str, Any] | None = None,
    pad_id: int = 0,
) -> HeadScores:
    """Mean attention mass on ``mask`` over the real queries whose mask row is non-empty.

    ``mask_fn(tokens) -> Bool[batch, q, k]`` (or the mask itself). Padding (positions at or past
    ``lengths``) is neither a query nor a key. The score of head (l, h) is
    ``sum_{b,i valid} sum_j A[l,b,h,i,j] D[b,i,j] / #valid queries``: 1 for a head that always
    attends inside the set, about |S_i|/i for a uniform head.
    """
    toks, lens = as_token_batch(tokens, pad_id=pad_id, lengths=lengths)
    B, T = toks.shape
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and T > n_ctx:
        raise HeadScoreError(f"prompts have {T} tokens but the model's context is {n_ctx}; "
                             f"use shorter prompts")
    full_mask = mask_fn(toks) if callable(mask_fn) else mask_fn
    if full_mask.shape != (B, T, T):
        raise HeadScoreError(f"mask must be [batch, q, k] = {(B, T, T)}, got {tuple(full_mask.shape)}")
    real = torch.arange(T)[None, :] < lens[:, None]
    full_mask = full_mask & real[:, None, :] & real[:, :, None]
    rows = full_mask.any(-1)  # [B, T] queries that have a target set
    n_rows = int(rows.sum())
    if n_rows == 0:
        raise HeadScoreError(f"{name}: no query position has a non-empty target set on these "
                             f"prompts; use longer prompts or more repetition")
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    per = torch.zeros(B, L, H, dtype=torch.float64)  # per prompt: summed mass over its valid queries
    if cache is not None:
        for l in range(L):
            pat = cache[f"blocks.{l}.attn.hook_pattern"]
            per[:, l] = _mass(pat, full_mask, rows)
    else:
        for start in range(0, B, batch_size):
            sl = slice(start, start + batch_size)
            sub_T = int(lens[sl].max())
            m, r = full_mask[sl, :sub_T, :sub_T], rows[sl, :sub_T]

            def make_hook(layer: int, m=m, r=r, sl=sl):
                def hook(pattern: Tensor, hook: Any) -> None:
                    per[sl, layer] = _mass(pattern.detach(), m, r)
                return hook

            hooks = [(f"blocks.{l}.attn.hook_pattern", make_hook(l)) for l in range(L)]
            with torch.no_grad(), model.hooks(fwd_hooks=hooks):
                model(toks[sl, :sub_T])
    n_per = rows.sum(-1).double()  # valid queries per prompt
    per_prompt = (per / n_per.clamp(min=1)[:, None, None]).float()
    per_prompt[n_per == 0] = float("nan")
    meta = {"n_queries": n_rows, "per_prompt": per_prompt, **(info or {})}
    return HeadScores(name, (per.sum(0) / n_rows).float(), toks, meta)


def _mass(pattern: Float[Tensor, "b h q k"], mask: Bool[Tensor, "b q k"],
          rows: Bool[Tensor, "b q"]) -> Float[Tensor, "b h"]:
    """Per prompt, the sum over valid rows of the attention mass inside the mask (no in-place ops)."""
    mass = torch.einsum("bhqk,bqk->bhq", pattern.double(), mask.double())
    return (mass * rows[:, None, :].double()).sum(dim=2)


# ---------------------------------------------------------------------- attention scores
def previous_token_scores(model: HookedModel, tokens: Tensor,
                          cache: Mapping[str, Tensor] | None = None, with_null: bool = False,
                          seed: int = 0) -> HeadScores:
    """Mean attention A[i, i-1] over positions i >= 1 (A3). ``with_null``: also each prompt's
    attention to a random earlier non-adjacent key (``null_scores``, ``hs.null``)."""
    hs = attention_mass_scores(model, tokens, previous_token_mask, "previous_token", cache=cache)
    if with_null:
        _attach_null(model, hs, None, seed)
    return hs


def duplicate_token_scores(model: HookedModel, tokens: Tensor | None = None, seg_len: int = 20,
                           batch: int = 16, seed: int = 0,
                           cache: Mapping[str, Tensor] | None = None, with_null: bool = False) -> HeadScores:
    """Attention mass on earlier copies of the current token (default: repeated random tokens).
    ``with_null``: also the same (query, key) positions on no-repeat sequences (``hs.null``)."""
    if tokens is None:
        seg_len = min(seg_len, int(model.cfg.n_ctx) // 2)
        tokens = repeated_random_tokens(batch, seg_len, int(model.cfg.d_vocab), seed=seed)
    hs = attention_mass_scores(model, tokens, duplicate_token_mask, "duplicate_token", cache=cache)
    if with_null and hs.tokens is not None:
        _attach_null(model, hs, duplicate_token_mask(hs.tokens), seed)
    return hs


def induction_scores(model: HookedModel, seg_len: int = 20, batch: int = 16, seed: int = 0,
                     vocab: int | None = None, bos: int | None = None, with_null: bool = False) -> HeadScores:
    """Attention from position t in the repeat to t - L + 1 (the token after t's earlier copy, A1).

    ``with_null``: also the same stripe on no-repeat sequences (``null_scores``, ``hs.null``)."""
    vocab = vocab or model.cfg.d_vocab
    tokens = repeated_random_tokens(batch, seg_len, vocab, seed=seed, bos=bos)
    off = 1 if bos is not None else 0
    T = tokens.shape[1]
    mask = torch.zeros(batch, T, T, dtype=torch.bool)
    q = torch.arange(seg_len, 2 * seg_len) + off
    mask[:, q, q - seg_len + 1] = True
    hs = attention_mass_scores(model, tokens, mask, "induction",
                               info={"seg_len": seg_len, "bos": bos, "high": int(vocab)})
    if with_null:
        _attach_null(model, hs, mask, seed)
    return hs


def ngram_scores(model: HookedModel, tokens: Tensor | Sequence[Sequence[int]], n: int,
                 lengths: Tensor | None = None, cache: Mapping[str, Tensor] | None = None,
                 batch_size: int = 32, pad_id: int = 0) -> HeadScores:
    """n-gram head score (B4): mean attention mass on S_i over queries with non-empty S_i.

    ``tokens`` are any prompts (e.g. ICLL sequences), as a right-padded tensor with ``lengths`` or
    as a list of token lists. A head that attends uniformly (or in any way) inside S_i scores 1.
    """
    return attention_mass_scores(model, tokens, lambda t: ngram_mask(t, n), f"ngram_{n}",
                                 lengths=lengths, cache=cache, batch_size=batch_size,
                                 info={"n": n}, pad_id=pad_id)


def ngram_head_scores(model: HookedModel, tokens: Tensor | Sequence[Sequence[int]],
                      ns: Sequence[int] = (2, 3, 4), lengths: Tensor | None = None,
                      batch_size: int = 32) -> dict[int, HeadScores]:
    """``ngram_scores`` for every n in ``ns``."""
    return {n: ngram_scores(model, tokens, n, lengths=lengths, batch_size=batch_size) for n in ns}


def prefix_matching_scores(model: HookedModel, n_tokens: int = 25, repeats: int = 4,
                           batch: int = 10, seed: int = 0, bos: int | None = None,
                           low: int | None = None, high: int | None = None, with_null: bool = False) -> HeadScores:
    """Olsson's prefix-matching score (A2): [BOS] r r r r with r = 25 distinct random tokens.
    ``with_null``: also the same (query, key) positions on no-repeat sequences (``hs.null``).

    Score = attention mass on the positions following an earlier copy of the current token (the
    n = 2 set), averaged over the queries in repeats 2..4. Tokens are drawn without replacement
    from [low, high) (default: the middle 80% of the vocabulary, avoiding the most and least
    common ids of BPE vocabularies). When 1 + n_tokens * repeats exceeds n_ctx, or the range
    holds fewer than n_tokens ids, n_tokens shrinks to fit (recorded in ``info``).
    """
    V, n_ctx = int(model.cfg.d_vocab), int(model.cfg.n_ctx)
    if bos is None:
        tok = getattr(model, "tokenizer", None)
        bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    room = n_ctx - (1 if bos is not None else 0)
    n_tokens = min(n_tokens, room // repeats)
    lo = low if low is not None else (V // 10 if V >= 1000 else 0)
    hi = high if high is not None else (V - V // 10 if V >= 1000 else V)
    n_tokens = min(n_tokens, hi - lo)
    if n_tokens < 2:
        raise HeadScoreError(f"cannot draw {n_tokens} distinct tokens from [{lo}, {hi}) within "
                             f"n_ctx={n_ctx}; pass low/high or fewer repeats")
    g = torch.Generator().manual_seed(seed)
    segs = torch.stack([lo + torch.randperm(hi - lo, generator=g)[:n_tokens] for _ in range(batch)])
    tokens = segs.repeat(1, repeats)
    if bos is not None:
        tokens = torch.cat([torch.full((batch, 1), int(bos)), tokens], dim=1)
    hs = attention_mass_scores(model, tokens, lambda t: ngram_mask(t, 2), "prefix_matching",
                               info={"n_tokens": n_tokens, "repeats": repeats, "bos": bos, "low": lo, "high": hi})
    if with_null:
        _attach_null(model, hs, ngram_mask(tokens, 2), seed)
    return hs


# ---------------------------------------------------------------------- nulls
NULLS: dict[str, str] = {
    "induction": "no-repeat random tokens (same query/key positions)",
    "duplicate_token": "no-repeat random tokens (same query/key positions)",
    "prefix_matching": "no-repeat random tokens (same query/key positions)",
    "previous_token": "a random key other than the previous token (j in 0..i, j != i-1), same prompts",
}
"""For each attention score with a null: what the null sequence / key set is. Repetition-based
scores (induction, duplicate-token, prefix-matching) are re-read at the very same (query, key)
positions on random sequences of the same length with no repeated token, where no earlier copy
exists, so the mechanism cannot apply: what is left is the head's positional or uniform share.
Previous-token attention is positional (it applies to any sequence, so no input switches it off),
so its null is the same head's attention, on the same prompts and queries, to one random key the
query can see other than the previous token (``random_other_key_mask``): a head that does not
prefer the previous token scores alike on both in expectation (a paired comparison); a uniform
head scores exactly alike."""


def no_repeat_tokens(batch: int, seq_len: int, vocab: int, seed: int = 0, low: int = 0,
                     high: int | None = None, bos: int | None = None) -> Int[Tensor, "batch pos"]:
    """Random sequences of ``seq_len`` distinct tokens from [low, high) (after BOS, if given)."""
    high = vocab if high is None else high
    n = seq_len - (1 if bos is not None else 0)
    if high - low < n:
        raise HeadScoreError(f"a sequence of {n} distinct tokens needs at least {n} token ids, but [{low}, "
                             f"{high}) has {high - low}; use shorter sequences (seg_len)")
    g = torch.Generator().manual_seed(seed)
    toks = torch.stack([low + torch.randperm(high - low, generator=g)[:n] for _ in range(batch)])
    if bos is not None:
        toks = torch.cat([torch.full((batch, 1), int(bos)), toks], dim=1)
    return toks


def random_other_key_mask(tokens: Int[Tensor, "batch pos"], seed: int = 0) -> Bool[Tensor, "batch q k"]:
    """D[i, j] = 1 for one key j drawn uniformly from {0..i} minus {i-1} per (prompt, query i >= 1):
    any key the query can see except the previous token (itself included), on the same queries as
    the previous-token score. The previous-token score's null (``NULLS``)."""
    B, T = tokens.shape
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(T)
    u = (torch.rand(B, T, generator=g) * i).long().clamp(max=(i - 1).clamp(min=0))  # uniform on 0..i-1
    j = torch.where(u == i - 1, i.expand(B, T), u)  # i-1 (the previous token) -> i (the query itself)
    mask = torch.zeros(B, T, T, dtype=torch.bool)
    b_idx, q_idx = torch.nonzero((i >= 1).expand(B, T), as_tuple=True)
    mask[b_idx, q_idx, j[b_idx, q_idx]] = True
    return mask


def null_scores(model: HookedModel, hs: HeadScores, mask: Bool[Tensor, "batch q k"] | None = None,
                seed: int = 0) -> HeadScores:
    """``hs``'s null (``NULLS``), with per-prompt values; also stored as ``hs.info["null"]``.

    For the repetition-based scores pass ``mask``, the [batch, q, k] mask ``hs`` was scored with
    (the keys where an earlier copy made the mechanism apply); it is re-read on no-repeat random
    sequences of ``hs.tokens``' shape (a BOS column, if ``hs.info["bos"]``, is kept). For
    ``previous_token`` the mask is ``random_other_key_mask`` on ``hs.tokens``."""
    if hs.name not in NULLS or hs.tokens is None:
        raise HeadScoreError(f"no null is defined for {hs.name!r}; nulls exist for {sorted(NULLS)}")
    if hs.name == "previous_token":
        null = attention_mass_scores(model, hs.tokens, random_other_key_mask(hs.tokens, seed), hs.name)
        null.info.update(paired=True)
    else:
        if mask is None:
            raise HeadScoreError(f"the {hs.name} null needs the mask the score was computed with")
        B, T = hs.tokens.shape
        bos = hs.info.get("bos")
        V = int(model.cfg.d_vocab)
        lo = int(hs.info.get("low", 0))
        hi = int(hs.info.get("high", V))
        toks = no_repeat_tokens(B, T, V, seed=seed + 7, low=lo, high=hi, bos=bos)
        null = attention_mass_scores(model, toks, mask, hs.name)
        null.info.update(paired=False)
    null.info.update(null=NULLS[hs.name])
    hs.info["null"] = null
    return null


def _attach_null(model: HookedModel, hs: HeadScores, mask: Tensor | None, seed: int) -> None:
    """``null_scores``, or the reason it cannot be built in ``hs.info["null_error"]`` (e.g. a
    vocabulary too small for a sequence without repeats): the score itself stands either way."""
    try:
        null_scores(model, hs, mask, seed=seed)
    except HeadScoreError as err:
        hs.info["null_error"] = str(err)


# ---------------------------------------------------------------------- model-level ICL score
@dataclass
class ICLScore:
    """loss(late token) - loss(early token), averaged over prompts (A5); negative = uses context."""

    value: float
    early: int
    late: int
    loss_early: float
    loss_late: float
    per_prompt: Float[Tensor, " batch"] = field(repr=False)
    tokens: Int[Tensor, "batch pos"] = field(repr=False)


def icl_score(model: HookedModel, tokens: Tensor, early: int | None = None,
              late: int | None = None) -> ICLScore:
    """Olsson's in-context learning score on equal-length prompts ``tokens``.

    Loss at token t is the loss of predicting token t from tokens < t. Defaults: positions 50
    and 500 when the prompts are longer than 500 tokens, else the scaled positions round(0.1 T)
    and round(0.9 T) (research/icl-methods.md A5).
    """
    if tokens.dim() != 2 or tokens.shape[1] < 3:
        raise HeadScoreError("icl_score needs [batch, pos] prompts of at least 3 tokens")
    T = tokens.shape[1]
    if early is None or late is None:
        e, l_ = (50, 500) if T > 500 else (max(1, round(0.1 * T)), min(T - 1, round(0.9 * T)))
        early, late = early if early is not None else e, late if late is not None else l_
    if not 1 <= early < late <= T - 1:
        raise HeadScoreError(f"need 1 <= early < late <= {T - 1}, got early={early}, late={late}")
    with torch.no_grad():
        per_tok = model(tokens, return_type="loss", loss_per_token=True)  # [B, T-1]
    le, ll = per_tok[:, early - 1].float(), per_tok[:, late - 1].float()
    diff = ll - le
    return ICLScore(float(diff.mean()), early, late, float(le.mean()), float(ll.mean()), diff, tokens)


# ---------------------------------------------------------------------- figures
def head_scores_figure(hs: HeadScores, title: str | None = None, zmin: float | None = None,
                       zmax: float | None = None, colorscale: str = "RdBu"):
    """Layer x head heatmap of a HeadScores (layer 0 at the top)."""

    s = hs.scores.detach().float().cpu()
    L, H = s.shape
    lo = float(torch.nan_to_num(s, nan=0).min()) if zmin is None else zmin
    hi = float(torch.nan_to_num(s, nan=0).max()) if zmax is None else zmax
    bound = max(abs(lo), abs(hi), 1e-9)
    fig = go.Figure(go.Heatmap(
        z=s.numpy(), x=[f"H{h}" for h in range(H)], y=[f"L{l}" for l in range(L)],
        colorscale=colorscale, zmid=0 if lo < 0 < hi else None,
        zmin=-bound if lo < 0 < hi else lo, zmax=bound if lo < 0 < hi else hi,
        hovertemplate="%{y}%{x}: %{z:.3f}<extra></extra>", colorbar_title=hs.name,
    ))
    fig.update_layout(title=title or f"{hs.name} score", xaxis_title="head", yaxis_title="layer",
                      yaxis_autorange="reversed")
    return fig
