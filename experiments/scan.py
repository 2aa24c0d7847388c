"""Head scan: every head score from ``probes.heads`` for one model, as one tidy table."""

from __future__ import annotations

import torch

from probes.heads import HeadScores, induction_scores, previous_token_scores, repeated_random_tokens


def head_scan(model: torch.nn.Module, seed: int = 0, seg_len: int | None = None) -> dict[str, HeadScores]:
    """Score every head of ``model``; returns {score name: HeadScores}."""
    n_ctx = model.cfg.n_ctx
    seg = seg_len or max(4, min(20, (n_ctx - 1) // 2))
    vocab = model.cfg.d_vocab
    return {
        "previous_token": previous_token_scores(model, repeated_random_tokens(16, seg, vocab, seed=seed + 1)),
        "induction": induction_scores(model, seg_len=seg, batch=16, seed=seed),
    }


def format_scan(scan: dict[str, HeadScores], top: int = 5) -> str:
    lines = []
    for name, hs in scan.items():
        lines.append(f"{name} scores (layer x head):")
        for layer, row in enumerate(hs.scores.tolist()):
            lines.append(f"  L{layer}: " + " ".join(f"{v:6.3f}" for v in row))
        best = ", ".join(f"L{l}H{h}={s:.3f}" for l, h, s in hs.top(top))
        lines.append(f"  top: {best}")
    return "\n".join(lines)
