"""The gradient-descent baseline for language-model ICL: fine-tune a *copy* of the model on a
prompt's k demonstrations, then ask it the query zero-shot (Dai et al. 2023; Shen et al. 2023).

Prompt surgery (no token-string search; only the role positions of a ``PromptBatch``):

- the *header* is everything before demonstration 0's input x_0 (BOS, an instruction, the
  template's "Word:" prefix); with no demonstrations it is everything before x_q;
- the zero-shot prompt of a row is ``header + x_q + forerunner tokens`` (the query without any
  demonstration);
- training example i is ``header + x_i + forerunner tokens + y_i``, with the loss only on the
  label: the logit at the forerunner s_i predicting y_i;
- demonstration chunk i runs from x_i's start to x_{i+1}'s start (label and separator included);
  permuting the chunks gives the same prompt with the demonstrations reordered. This assumes the
  template is the same for every demonstration, as every task generator here makes it.

Parameter subsets (``GDConfig.subset``): ``"all"``; ``"attn_kv"`` (the key and value projections
of every attention layer, Dai's ``optim_group=attn_kv``); ``"one_layer_wv"`` (the value
projection of one layer, default the middle one, Shen's sub-model GD); or ``"re:<regex>"`` over
``named_parameters`` names. The original model is deep-copied once; its weights never change.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from probes.errors import WorkbenchError
from probes.hooked import HookedModel
from probes.prompt import PromptBatch, PromptBuilder
from probes.readout import readout_logits


class GDConfigError(WorkbenchError):
    """A fine-tuning setting that cannot work; the message names the fix."""


@dataclass(frozen=True)
class GDConfig:
    """How the GD baseline fine-tunes: which parameters, optimiser, lr, epochs, batching."""

    subset: str = "attn_kv"
    lr: float = 1e-2
    epochs: int = 5
    optimizer: Literal["sgd", "adam"] = "sgd"
    batching: Literal["full", "online"] = "full"  # full-batch GD, or one example at a time in order
    layer: int | None = None  # for "one_layer_wv" (default: n_layers // 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- prompt surgery
def _row(batch: PromptBatch, b: int) -> dict[str, Any]:
    L = int(batch.lengths[b])
    k = int(batch.demo_mask[b].sum())
    return {"toks": batch.tokens[b, :L].tolist(), "k": k, "L": L}


def header_end(batch: PromptBatch, b: int) -> int:
    """Position where the prompt's first demonstration (or, with none, the query) begins."""
    if bool(batch.demo_mask[b, 0]) if batch.n_demos else False:
        return int(batch.demo_text[b, 0, 0])
    return int(batch.query_text[b, 0])


def _build(pb: PromptBuilder, batch: PromptBatch, b: int) -> PromptBatch:
    cands = None
    if batch.candidates is not None:
        cands = [int(c) for c in batch.candidates[b].tolist() if c >= 0]
    return pb.build(
        target=int(batch.target[b]) if batch.target is not None else -1,
        candidates=cands,
        query_class=int(batch.query_class[b]) if batch.query_class is not None else -1,
        pad_id=batch.pad_id, meta=dict(batch.meta),
    )


def demo_examples(batch: PromptBatch, b: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Row ``b``'s k training examples, right-padded: ``tokens [k, T]``, ``lengths [k]``, the
    loss position (the forerunner) ``[k]`` and the label token ``[k]``."""
    r = _row(batch, b)
    toks, k = r["toks"], r["k"]
    if k == 0:
        raise GDConfigError("a prompt with no demonstrations has nothing to fine-tune on")
    head = toks[: header_end(batch, b)]
    seqs, pos, labels = [], [], []
    for i in range(k):
        ts = int(batch.demo_text[b, i, 0])
        lab = int(batch.label[b, i])
        seq = head + toks[ts: lab + 1]
        seqs.append(seq)
        pos.append(len(seq) - 2)
        labels.append(toks[lab])
    T = max(len(s) for s in seqs)
    out = torch.full((k, T), batch.pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out, torch.tensor([len(s) for s in seqs]), torch.tensor(pos), torch.tensor(labels)


# ---------------------------------------------------------------------- parameter subsets
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|blocks|h)\.(\d+)\.")
_K_RE = re.compile(r"(?:^|\.)(?:k|k_proj|key|W_K)(?:\.|$)")
_V_RE = re.compile(r"(?:^|\.)(?:v|v_proj|value|W_V)(?:\.|$)")
_FUSED_RE = re.compile(r"(?:^|\.)(?:c_attn|qkv|query_key_value|Wqkv)(?:\.|$)")


def _n_layers(model: HookedModel) -> int:
    cfg = getattr(model, "cfg", None)
    if cfg is not None and getattr(cfg, "n_layers", None):
        return int(cfg.n_layers)
    layers = {int(m.group(1)) for n, _ in model.named_parameters() if (m := _LAYER_RE.search(n))}
    return max(layers) + 1 if layers else 0


def select_parameters(model: HookedModel, subset: str, layer: int | None = None) -> list[str]:
    """Names of the parameters a subset trains (a clear error if it matches none)."""
    names = [n for n, _ in model.named_parameters()]
    if subset == "all":
        chosen = names
    elif subset == "attn_kv":
        chosen = [n for n in names if _K_RE.search(n) or _V_RE.search(n)]
    elif subset == "one_layer_wv":
        layer = _n_layers(model) // 2 if layer is None else layer
        chosen = [n for n in names if _V_RE.search(n) and (m := _LAYER_RE.search(n))
                  and int(m.group(1)) == layer]
    elif subset.startswith("re:"):
        pat = re.compile(subset[3:])
        chosen = [n for n in names if pat.search(n)]
    else:
        raise GDConfigError(f"unknown parameter subset {subset!r}; use 'all', 'attn_kv', "
                            f"'one_layer_wv' or 're:<regex over parameter names>'")
    if not chosen:
        fused = any(_FUSED_RE.search(n) for n in names)
        raise GDConfigError(
            f"parameter subset {subset!r} matches no parameter of {type(model).__name__}"
            + (" (its attention uses a fused QKV projection: use subset='all' or 're:c_attn')"
               if fused else "") + f"; parameter names look like {names[:3]}")
    return chosen


# ---------------------------------------------------------------------- fine-tuning
class FineTuner:
    """Owns one deep copy of ``model``; ``tune(batch, b)`` resets the trained subset to the
    original values, fine-tunes on row ``b``'s demonstrations and returns the tuned copy."""

    def __init__(self, model: HookedModel, config: GDConfig = GDConfig()) -> None:
        if config.epochs < 0 or config.lr < 0:
            raise GDConfigError("epochs and lr must be >= 0")
        self.config = config
        self.copy = copy.deepcopy(model)
        self.copy.eval()
        self.names = select_parameters(self.copy, config.subset, config.layer)
        params = dict(self.copy.named_parameters())
        for p in self.copy.parameters():
            p.requires_grad_(False)
        self.params = [params[n] for n in self.names]
        for p in self.params:
            p.requires_grad_(True)
        self.snapshot = [p.detach().clone() for p in self.params]
        self.last_losses: list[float] = []

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.params)

    def reset(self) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, self.snapshot):
                p.copy_(s)

    def _loss(self, toks: Tensor, pos: Tensor, labels: Tensor) -> Tensor:
        logits = self.copy(toks)
        at = logits[torch.arange(len(pos)), pos]
        return F.cross_entropy(at, labels)

    def _batches(self, toks: Tensor, lengths: Tensor, pos: Tensor, labels: Tensor,
                 order: Sequence[int]) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if self.config.batching == "full":
            yield toks, pos, labels
        elif self.config.batching == "online":
            for i in order:
                yield toks[i: i + 1, : int(lengths[i])], pos[i: i + 1], labels[i: i + 1]
        else:
            raise GDConfigError(f"batching must be 'full' or 'online', got {self.config.batching!r}")

    def tune(self, batch: PromptBatch, b: int, order: Sequence[int] | None = None) -> HookedModel:
        """Fine-tune (from the original weights) on row ``b``'s demonstrations, in ``order``."""
        self.reset()
        toks, lengths, pos, labels = demo_examples(batch, b)
        order = list(range(len(labels))) if order is None else list(order)
        cfg = self.config
        opt: torch.optim.Optimizer
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(self.params, lr=cfg.lr)
        elif cfg.optimizer == "adam":
            opt = torch.optim.Adam(self.params, lr=cfg.lr)
        else:
            raise GDConfigError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
        self.last_losses = []
        with torch.enable_grad():
            for _ in range(cfg.epochs):
                for t, p, y in self._batches(toks, lengths, pos, labels, order):
                    loss = self._loss(t, p, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    self.last_losses.append(float(loss.detach()))
        return self.copy


def state_hash(model: HookedModel) -> str:
    """SHA-1 of every parameter and buffer (to check that an analysis left a model unchanged)."""

    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def label_loss(model: HookedModel, batch: PromptBatch, b: int) -> Float[Tensor, ""]:
    """Mean label-token cross-entropy of ``model`` on row ``b``'s demonstrations (zero-shot form)."""
    toks, _, pos, labels = demo_examples(batch, b)
    with torch.no_grad():
        logits = model(toks)
    return F.cross_entropy(logits[torch.arange(len(pos)), pos], labels)


def query_loss(model: HookedModel, zs_row: PromptBatch) -> float:
    """Cross-entropy of the correct answer at a (one-row) zero-shot prompt's read-out."""

    with torch.no_grad():
        logits = readout_logits(model, zs_row.trim())
    if zs_row.target is None:
        raise GDConfigError("the prompt has no target (correct answer) to score")
    return float(F.cross_entropy(logits.float(), zs_row.target))


def best_finetune_lr(model: HookedModel, batch: PromptBatch, grid: Sequence[float],
                     config: GDConfig = GDConfig()) -> tuple[float, dict[float, float]]:
    """The lr on ``grid`` whose fine-tuned copies have the lowest mean query cross-entropy on
    ``batch`` (use held-out prompts: a different seed from the comparison's)."""

    zs = batch.zero_shot()
    losses: dict[float, float] = {}
    for lr in grid:
        tuner = FineTuner(model, replace(config, lr=lr))
        vals = [query_loss(tuner.tune(batch, b), zs.select([b])) for b in range(batch.batch_size)]
        losses[lr] = float(sum(vals) / len(vals))
        del tuner
    best = min(losses, key=lambda lr: (losses[lr], lr))
    return best, losses
