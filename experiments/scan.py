"""Head scan: every head score from ``probes.heads`` that applies to one model, as one table set.

``head_scan(model)`` returns ``{score name: HeadScores}``:

- ``previous_token``, ``induction``, ``duplicate_token``: on repeated random tokens;
- ``prefix_matching``: Olsson's 25 tokens x 4 repeats (shrunk to fit n_ctx);
- ``copying``: OV eigenvalue copying score (when the model has tied-size W_E/W_U);
- ``copying_effective``: the same with W_E + MLP0(W_E), for models with MLPs;
- ``k_composition``: per later head, the strongest K-composition from an earlier head (minus
  the random baseline), with the source head in ``info["source"]``;
- ``ngram_2``, ``ngram_3``, ``ngram_4``: n-gram head scores, when ICLL-like token prompts are
  given (``ngram_tokens``), a sampler is given (``token_sampler(n, seed) -> tokens``), or the
  model is a zoo model trained on ICLL (its card's task), whose prompts come from
  ``experiments.tasks.icll``.

Models that read vectors rather than tokens (no ``W_E``/``hook_pattern``) get only the scores
that apply; a score that fails on a model is left out and named in ``scan_errors(scan)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from probes.heads import (
    HeadScores,
    copying_scores,
    duplicate_token_scores,
    induction_scores,
    k_composition_scores,
    max_composition_into,
    ngram_scores,
    prefix_matching_scores,
    previous_token_scores,
    repeated_random_tokens,
)

NGRAM_NS = (2, 3, 4)


def head_scan(
    model: torch.nn.Module,
    seed: int = 0,
    seg_len: int | None = None,
    ngram_tokens: torch.Tensor | Sequence[Sequence[int]] | None = None,
    ngram_lengths: torch.Tensor | None = None,
    token_sampler: Callable[[int, int], Any] | None = None,
    n_prompts: int = 32,
    weights: bool = True,
) -> dict[str, HeadScores]:
    """Score every head of ``model``; returns {score name: HeadScores}.

    ``weights=False`` skips the weight-based scores (copying, composition).
    """
    n_ctx = int(model.cfg.n_ctx)
    seg = seg_len or max(4, min(20, (n_ctx - 1) // 2))
    vocab = int(model.cfg.d_vocab)
    out: dict[str, HeadScores] = {}
    errors: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], HeadScores]) -> None:
        try:
            out[name] = fn()
        except Exception as err:  # a score that does not apply to this model
            errors[name] = f"{type(err).__name__}: {err}"

    attempt("previous_token", lambda: previous_token_scores(
        model, repeated_random_tokens(16, seg, vocab, seed=seed + 1)))
    attempt("induction", lambda: induction_scores(model, seg_len=seg, batch=16, seed=seed))
    attempt("duplicate_token", lambda: duplicate_token_scores(model, seg_len=seg, seed=seed + 2))
    attempt("prefix_matching", lambda: prefix_matching_scores(model, seed=seed + 3))
    if weights:
        attempt("copying", lambda: copying_scores(model))
        if not getattr(model.cfg, "attn_only", True):
            attempt("copying_effective", lambda: copying_scores(model, effective=True))
        if int(model.cfg.n_layers) > 1:
            attempt("k_composition", lambda: max_composition_into(k_composition_scores(model, seed=seed)))

    tokens, lengths = ngram_tokens, ngram_lengths
    if tokens is None and token_sampler is not None:
        tokens, lengths = _unpack(token_sampler(n_prompts, seed))
    if tokens is None:
        tokens, lengths = _icll_tokens(model, n_prompts, seed)
    if tokens is not None:
        for n in NGRAM_NS:
            attempt(f"ngram_{n}", lambda n=n: ngram_scores(model, tokens, n, lengths=lengths))
    if errors:
        for hs in out.values():
            hs.info.setdefault("scan_errors", errors)
    return out


def scan_errors(scan: dict[str, HeadScores]) -> dict[str, str]:
    """Scores that were skipped because they do not apply to the model, with the reason."""
    for hs in scan.values():
        return dict(hs.info.get("scan_errors", {}))
    return {}


def _unpack(sample: Any) -> tuple[Any, torch.Tensor | None]:
    if isinstance(sample, tuple):
        return sample[0], sample[1]
    if hasattr(sample, "tokens") and hasattr(sample, "lengths"):
        return sample.tokens, sample.lengths
    return sample, None


def _icll_tokens(model: torch.nn.Module, n: int, seed: int) -> tuple[Any, torch.Tensor | None]:
    """ICLL held-out sequences when the model is a zoo model trained on the ICLL task."""
    card = getattr(model, "zoo_card", None) or {}
    task = str((card.get("task") or {}).get("name", "")) + " " + str(card.get("name", ""))
    if "icll" not in task.lower() and "dfa" not in task.lower():
        return None, None
    from experiments.tasks import icll

    seqs = icll.sample_sequences(n, seed=seed + 100, split="heldout",
                                 max_len=min(icll.MAX_LEN, int(model.cfg.n_ctx)))
    return seqs.tokens, seqs.lengths


def format_scan(scan: dict[str, HeadScores], top: int = 5) -> str:
    lines = []
    for name, hs in scan.items():
        lines.append(f"{name} scores (layer x head):")
        for layer, row in enumerate(hs.scores.tolist()):
            lines.append(f"  L{layer}: " + " ".join(
                "   nan" if math.isnan(v) else f"{v:6.3f}" for v in row))
        best = ", ".join(f"L{l}H{h}={s:.3f}" for l, h, s in hs.top(top) if not math.isnan(s))
        lines.append(f"  top: {best}")
    errors = scan_errors(scan)
    for name, why in errors.items():
        lines.append(f"{name}: skipped ({why})")
    return "\n".join(lines)
