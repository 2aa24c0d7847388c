"""The layout rules of a ``PromptBatch`` (``check_layout``), kept apart from the class so that
``probes.prompt`` stays readable: every role position lies inside its prompt, no two roles share
a position, and the read-out is the last real token."""

from __future__ import annotations

from typing import Any

from probes.errors import WorkbenchError


class PromptError(WorkbenchError):
    """A prompt or batch that violates the role layout; the message names the fix."""


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise PromptError(msg)


def check_layout(batch: Any, n_ctx: int | None = None) -> None:
    """PromptError naming the first violation of the layout (``probes.prompt``); with ``n_ctx``,
    also when a prompt is longer than the model's context."""
    B, T = batch.tokens.shape
    K = batch.n_demos
    _expect(batch.lengths.shape == (B,), "lengths must have shape [batch]")
    _expect(batch.demo_text.shape == (B, K, 2), f"demo_text must be [batch, k, 2], got {tuple(batch.demo_text.shape)}")
    _expect(batch.label.shape == (B, K), "label must have shape [batch, k] like forerunner")
    _expect(batch.query_text.shape == (B, 2), "query_text must be [batch, 2] (start, end)")
    _expect(batch.readout.shape == (B,), "readout must have shape [batch]")
    if (batch.lengths > T).any() or (batch.lengths < 1).any():
        raise PromptError("lengths must lie in 1..seq_len")
    if n_ctx is not None and int(batch.lengths.max()) > n_ctx:
        worst = int(batch.lengths.argmax())
        raise PromptError(
            f"prompt {worst} has {int(batch.lengths[worst])} tokens but the model's context "
            f"(n_ctx) is {n_ctx}; use fewer demonstrations or shorter inputs"
        )
    for b in range(B):
        L = int(batch.lengths[b])
        claimed: dict[int, str] = {}

        def claim(p: int, what: str) -> None:
            if not 0 <= p < L:
                raise PromptError(
                    f"prompt {b}: {what} at position {p} falls outside the prompt "
                    f"(length {L})"
                )
            if p in claimed:
                raise PromptError(
                    f"prompt {b}: roles overlap at position {p}: {claimed[p]} and {what}"
                )
            claimed[p] = what

        for i in range(K):
            if batch.forerunner[b, i] < 0:
                if batch.label[b, i] >= 0 or batch.demo_text[b, i, 0] >= 0:
                    raise PromptError(
                        f"prompt {b}: demonstration {i} has a label or text but no forerunner"
                    )
                continue
            s, e = batch.demo_text[b, i].tolist()
            if e < s:
                raise PromptError(f"prompt {b}: demo_text[{i}] span ends before it starts")
            for p in range(s, e):
                claim(p, f"demo_text[{i}]")
            claim(int(batch.forerunner[b, i]), f"forerunner[{i}]")
            claim(int(batch.label[b, i]), f"label[{i}]")
        s, e = batch.query_text[b].tolist()
        for p in range(s, e):
            claim(p, "query_text")
        claim(int(batch.readout[b]), "readout")
        if int(batch.readout[b]) != L - 1:
            raise PromptError(
                f"prompt {b}: readout must be the last real token ({L - 1}), "
                f"got {int(batch.readout[b])}"
            )
