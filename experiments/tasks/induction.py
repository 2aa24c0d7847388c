"""Task 1: repeated random tokens, the probe of induction heads (Olsson et al. 2022).

A prompt is ``[BOS] r r ... r r'`` where ``r`` is a random segment of ``seg_len`` distinct tokens,
repeated ``k + 1`` times; the last copy ``r'`` lacks its final token, which is the target.

Roles (so the same circuit analyses apply as on classification prompts):

- demonstration i = copy i of the segment: ``demo_text[i]`` = its first ``seg_len - 2`` tokens,
  ``forerunner[i]`` = its second-to-last token, ``label[i]`` = its last token;
- query = the last, truncated copy: ``query_text`` = its first ``seg_len - 2`` tokens,
  ``readout`` = its second-to-last token (the same token as every ``forerunner[i]``),
  ``target`` = the segment's last token (the same token as every ``label[i]``).

So an induction head at the read-out attends from s_q to the y_i (the token after the earlier
copies of the current token), exactly the ``y_i -> s_q`` edge of the classification circuit.
``tokens`` followed by ``target`` is the full repeated sequence. ``k = 0`` is the unrepeated
segment (the target is then unpredictable: chance is 1 / (vocab - low)).

Variants:

- ``variant="repeat"`` (default): ``seg_len`` 20, no BOS, tokens from ``[low, vocab)``;
- ``variant="olsson"``: BOS + 25 random tokens x 4 (k = 3 demonstrations + the query copy), the
  prefix-matching setup of Olsson et al. (App. "Head activation evaluators"); tokens from
  ``[1, vocab)`` with BOS = 0 unless given.

``candidates`` is None (accuracy is over the whole vocabulary); ``demo_class``/``query_class``
are -1 (no classes). Defaults match the ``induction-2l`` zoo model (vocab 256, n_ctx 64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from experiments.tasks.base import TaskError, check_n_prompts
from probes.prompt import PromptBatch, PromptBuilder

VOCAB_SIZE = 256
OLSSON_SEG_LEN = 25
OLSSON_COPIES = 4


def make_prompts(
    k: int,
    n_prompts: int,
    seed: int,
    seg_len: int | None = None,
    vocab: int = VOCAB_SIZE,
    low: int | None = None,
    bos: int | None = None,
    variant: str = "repeat",
    distinct: bool = True,
    pad_id: int = 0,
) -> PromptBatch:
    """``n_prompts`` repeated-segment prompts with ``k`` full earlier copies (see module doc).

    ``low``: smallest token id drawn (default 0, or 1 when a BOS is used so BOS is never drawn);
    ``distinct``: segments without repeated tokens (so "the token after the earlier copy" is
    unique). ``variant="olsson"`` sets ``seg_len=25``, ``bos=0`` unless given, and defaults k to 3
    if ``k`` is negative.
    """
    if variant not in ("repeat", "olsson"):
        raise TaskError(f"unknown induction variant {variant!r}; use 'repeat' or 'olsson'")
    if variant == "olsson":
        seg_len = OLSSON_SEG_LEN if seg_len is None else seg_len
        bos = 0 if bos is None else bos
        k = OLSSON_COPIES - 1 if k < 0 else k
    seg_len = 20 if seg_len is None else seg_len
    if k < 0:
        raise TaskError(f"k (number of earlier copies) must be >= 0, got {k}")
    if seg_len < 2:
        raise TaskError(f"seg_len must be >= 2 (a forerunner and a label), got {seg_len}")
    check_n_prompts(n_prompts, (k + 1) * seg_len + 1, "induction")
    low = (1 if bos is not None else 0) if low is None else low
    n_tokens = vocab - low
    if distinct and seg_len > n_tokens:
        raise TaskError(
            f"seg_len {seg_len} exceeds the {n_tokens} drawable tokens; pass distinct=False or a "
            f"smaller seg_len"
        )
    if bos is not None and low <= bos < vocab:
        raise TaskError(f"BOS id {bos} lies inside the drawn range [{low}, {vocab}); raise low")
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_prompts):
        seg = _segment(seg_len, low, vocab, distinct, g)
        pb = PromptBuilder()
        if bos is not None:
            pb.add([bos])
        for _i in range(k):
            pb.demo(seg[: seg_len - 2], seg[seg_len - 2], seg[seg_len - 1])
        pb.query(seg[: seg_len - 2], seg[seg_len - 2])
        rows.append(pb.build(target=seg[seg_len - 1], pad_id=pad_id))
    batch = PromptBatch.concat(rows)
    batch.meta = {"task": "induction", "k": k, "variant": variant, "seg_len": seg_len,
                  "vocab": vocab, "low": low, "bos": bos, "seed": seed}
    return batch


def _segment(seg_len: int, low: int, vocab: int, distinct: bool, g: torch.Generator) -> list[int]:
    if distinct:
        return (torch.randperm(vocab - low, generator=g)[:seg_len] + low).tolist()
    return torch.randint(low, vocab, (seg_len,), generator=g).tolist()


def full_sequences(batch: PromptBatch) -> Tensor:
    """``tokens`` with each row's target appended after its read-out (right-padded)."""
    if batch.target is None:
        raise TaskError("this batch has no targets")
    toks = torch.cat([batch.tokens, torch.full((batch.batch_size, 1), batch.pad_id)], dim=1)
    toks[torch.arange(batch.batch_size), batch.readout + 1] = batch.target
    return toks
