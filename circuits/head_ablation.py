"""Which heads matter for ICL: ablate the top heads by one score, with exclusion, beside a
layer-matched random control (Yin & Steinhardt, ICML 2025, "Which attention heads matter for
in-context learning?").

Their protocol, which this module implements as building blocks:

- **Two scores per head**: the induction score and the function-vector (FV) score (Todd et al.'s
  average indirect effect, ``circuits.vectors.head_aie``), each a [layer, head] table.
- **Top p% with exclusion** (``select_heads``): the top ``p`` of all heads by one score, after
  first removing the top ``exclude`` (2% in the paper) of the *other* score, so that ablating
  "FV heads" does not also ablate the strongest induction heads (and vice versa).
- **Mean ablation at the read-out** (``mean_ablated_logits``): the chosen heads' outputs
  (``hook_z``) at the read-out position are replaced by their mean over the task's prompts
  (``circuits.vectors.mean_head_outputs``), so the head still says "something typical" but
  nothing about this prompt.
- **Layer-matched random control** (``matched_random``): as many heads in each layer as the
  selection has, drawn from that layer's other heads (neither selected nor excluded).

The workbench's own sweep analysis of this protocol (``fv_heads``, with held-out tasks, the
p-curve and the paired statistics) is issue 25's next step; these functions are what it builds on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.sweeps import readout_forward
from probes.errors import WorkbenchError
from probes.hooked import HookedModel
from probes.prompt import PromptBatch
from probes.readout import check_fits, predictions

Head = tuple[int, int]


class HeadAblationError(WorkbenchError):
    """A head selection or ablation that cannot be made (bad fraction, score shapes, heads)."""


def _n_of(fraction: float, total: int, what: str) -> int:
    if not 0 <= fraction <= 1 or math.isnan(fraction):
        raise HeadAblationError(f"{what} must be a fraction of all heads in [0, 1] (e.g. 0.05 for 5%), "
                                f"got {fraction}")
    return int(round(fraction * total))


def ranked_heads(scores: Float[Tensor, "layer head"]) -> list[Head]:
    """Every head with a finite score, highest first (ties: lower layer, then lower head first)."""
    L, H = scores.shape
    flat = scores.flatten().double()
    order = sorted((i for i in range(L * H) if torch.isfinite(flat[i])), key=lambda i: (-float(flat[i]), i))
    return [(i // H, i % H) for i in order]


def select_heads(primary: Float[Tensor, "layer head"], other: Float[Tensor, "layer head"] | None = None,
                 p: float = 0.05, exclude: float = 0.02) -> tuple[list[Head], list[Head]]:
    """The top ``p`` of all heads by ``primary`` after removing the top ``exclude`` of ``other``
    (no exclusion when ``other`` is None or ``exclude`` is 0). Returns (selected, excluded); at
    least one head is selected for any ``p > 0``."""
    if other is not None and other.shape != primary.shape:
        raise HeadAblationError(f"the two scores have shapes {tuple(primary.shape)} and {tuple(other.shape)}: "
                                "give both as [layer, head] tables of the same model")
    total = primary.numel()
    n = _n_of(p, total, "p")
    n = max(1, n) if p > 0 else 0
    n_ex = _n_of(exclude, total, "exclude") if other is not None else 0
    excluded = ranked_heads(other)[:n_ex] if other is not None and n_ex else []
    taken = set(excluded)
    selected = [h for h in ranked_heads(primary) if h not in taken][:n]
    return selected, excluded


def matched_random(selected: Sequence[Head], n_heads: int, seed: int = 0,
                   avoid: Sequence[Head] = (), n_layers: int | None = None, nearest: bool = False) -> list[Head]:
    """As many heads per layer as ``selected`` has there, drawn at random (``seed``) from that
    layer's heads that are neither selected nor in ``avoid``. A layer with too few such heads
    raises, unless ``nearest`` (with ``n_layers``): then its deficit is drawn from the nearest
    layers that have heads left (the closest match there is)."""
    chosen = {tuple(h) for h in selected}
    banned = chosen | {tuple(h) for h in avoid}
    per_layer: dict[int, int] = {}
    for layer, _ in selected:
        per_layer[int(layer)] = per_layer.get(int(layer), 0) + 1
    g = torch.Generator().manual_seed(int(seed))
    out: list[Head] = []

    def draw(layer: int, n: int) -> list[Head]:
        pool = [h for h in range(n_heads) if (layer, h) not in banned and (layer, h) not in taken]
        idx = torch.randperm(len(pool), generator=g)[:n]
        return [(layer, pool[int(i)]) for i in sorted(idx.tolist())]

    taken: set[Head] = set()
    for layer in sorted(per_layer):
        got = draw(layer, per_layer[layer])
        taken |= set(got)
        short = per_layer[layer] - len(got)
        if short and not (nearest and n_layers):
            raise HeadAblationError(
                f"layer {layer} has {len(got)} heads outside the selection and the exclusion, but the "
                f"control needs {per_layer[layer]}: a layer-matched control is impossible at this p; "
                "use a smaller p or a smaller exclusion (or nearest=True)")
        for other in sorted(range(n_layers or 0), key=lambda x: (abs(x - layer), x)):
            if short <= 0:
                break
            if other == layer:
                continue
            extra = draw(other, short)
            taken |= set(extra)
            got += extra
            short -= len(extra)
        if short > 0:
            raise HeadAblationError(f"the model has too few heads outside the selection for a control of "
                                    f"{len(selected)} heads")
        out += got
    return out


def _check_heads(model: HookedModel, heads: Sequence[Head]) -> None:
    L, H = model.cfg.n_layers, model.cfg.n_heads
    bad = [h for h in heads if not (0 <= h[0] < L and 0 <= h[1] < H)]
    if bad:
        raise HeadAblationError(f"heads {bad[:3]} are outside the model ({L} layers x {H} heads)")


def mean_ablated_logits(model: HookedModel, batch: PromptBatch, head_sets: Sequence[Sequence[Head]],
                        mean_z: Float[Tensor, "layer head d_head"], chunk: int = 128) -> Float[Tensor, "set batch vocab"]:
    """Read-out logits of ``batch`` with each set of heads mean-ablated at the read-out position
    (their ``hook_z`` there set to ``mean_z``), one [batch, vocab] slice per set. The sets are
    stacked along the batch axis (``chunk`` rows per forward), so this equals one forward per
    set; an empty set gives the clean logits."""
    check_fits(model, batch)
    for s in head_sets:
        _check_heads(model, s)
    batch = batch.trim()
    B = batch.batch_size
    L = model.cfg.n_layers
    out: list[Tensor] = []
    per = max(1, chunk // max(B, 1))
    with torch.no_grad():
        for start in range(0, len(head_sets), per):
            group = [list(s) for s in head_sets[start:start + per]]
            n = len(group)
            tokens = batch.tokens.repeat(n, 1)
            readout = batch.readout.repeat(n)
            # per layer: (rows, heads) to set, for every set of the group
            edits: dict[int, tuple[list[int], list[int]]] = {}
            for j, heads in enumerate(group):
                for layer, head in heads:
                    r, h = edits.setdefault(int(layer), ([], []))
                    r += range(j * B, (j + 1) * B)
                    h += [int(head)] * B

            def make(layer: int) -> Callable[..., Tensor]:
                rows, hs = (torch.tensor(x, dtype=torch.long) for x in edits[layer])

                def hook(z: Tensor, hook: Any) -> Tensor:
                    z = z.clone()
                    z[rows, readout[rows], hs] = mean_z[layer, hs].to(device=z.device, dtype=z.dtype)
                    return z
                return hook

            hooks = [(f"blocks.{layer}.attn.hook_z", make(layer)) for layer in sorted(edits) if layer < L]
            # the unembedding at the read-out only: full logits of a 262k-token vocabulary (Gemma 3)
            # at every position of 256 rows would take ~10 GB
            logits = readout_forward(model, tokens, readout, fwd_hooks=hooks)
            out.append(logits.reshape(n, B, -1))
    return torch.cat(out) if out else torch.empty(0, B, 0)


def correct(logits: Float[Tensor, "set batch vocab"], batch: PromptBatch) -> Float[Tensor, "set batch"]:
    """Per set and prompt, 1 where the prediction at the read-out (``probes.readout.predictions``:
    over the task's candidate labels where it has them, else the vocabulary) is the target."""
    if batch.target is None or (batch.target < 0).any():
        raise HeadAblationError("accuracy needs batch.target (the correct read-out token) on every row")
    return torch.stack([(predictions(part, batch) == batch.target).float() for part in logits])
