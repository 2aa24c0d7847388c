"""Training dynamics: every measurement of a zoo model across its checkpoint series.

``dynamics_table(name)`` loads each checkpoint of ``experiments.models.zoo.series`` and returns one tidy
table (columns ``DYN_COLUMNS``: one measurement per row, keyed by ``step``):

- ``train_loss``: the probe loss logged when the checkpoint was written (a fixed batch of the
  training distribution; ``n`` = its sequences, no interval: the batch is fixed);
- ``loss_by_position``: the per-token loss on repeated random sequences (a random segment of half
  the context, then its repeat), at each predicted token index ``position``; mean over prompts
  with a bootstrap interval (``probes.stats.estimate``);
- ``icl_score``: Olsson et al.'s in-context learning score on those sequences (loss at 0.9 T minus
  loss at 0.1 T; negative = later tokens are easier), per prompt, with an interval;
- every head score of ``experiments.studies.scan.head_scan`` (``previous_token``, ``induction``,
  ``duplicate_token``, ``prefix_matching``, ``copying``, ``copying_effective``,
  ``k_composition``, ``ngram_2..4`` for ICLL models) per ``layer``/``head``, exactly as the scan
  computes them (same seed); previous-token and induction scores also get an interval over their
  prompts;
- ``accuracy``: in-context accuracy of the model's own task at each ``k`` (``TASK_OF``), with the
  Wilson interval over prompts.

``phase_change(steps, values)`` finds where a curve rises fastest (in log step);
``phase_summary(table, index)`` reports the induction / ICL phase change with the previous-token
head's formation and the training-loss bump as numbers, and for ICLL models (``ngram_emergence``)
when each n-gram head score rises. The CLI entry is ``iclwb dynamics NAME``;
the sweep analysis ``dynamics`` (``experiments.runs.analyses``) wraps ``dynamics_table``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from experiments.models import zoo
from experiments.models.zoo import series
from experiments.studies.scan import head_scan
from experiments.tasks import task_batch
from experiments.tasks.icll import letter_probs
from probes import stats
from probes.heads import attention_patterns, icl_score, repeated_random_tokens
from probes.hooked import HookedModel
from probes.readout import predictions, readout_logits

DYN_COLUMNS = ["step", "metric", "layer", "head", "k", "position", "n", "value", "ci_low", "ci_high"]

TASK_OF: dict[str, str] = {"induction-2l": "induction", "icl-classify": "classify",
                           "icll-dfa": "icll"}
"""Zoo model -> the token task its in-context accuracy is measured on."""
DEFAULT_KS = (0, 1, 2, 4, 8)
INTERVAL_SCORES = ("previous_token", "induction")
"""Head scores that also get a per-prompt interval (the phase-change curves)."""


def _row(step: int, metric: str, value: float, n: int = 0, ci: tuple[float, float] = (math.nan, math.nan),
         layer: int = -1, head: int = -1, k: int = -1, position: int = -1,
         ci_low: float | None = None, ci_high: float | None = None) -> dict[str, Any]:
    if ci_low is not None and ci_high is not None:
        ci = (ci_low, ci_high)
    return {"step": step, "metric": metric, "layer": layer, "head": head, "k": k,
            "position": position, "n": n, "value": float(value), "ci_low": float(ci[0]),
            "ci_high": float(ci[1])}


def _est(values: Any, seed: int = 0, binary: bool = False) -> tuple[float, int, tuple[float, float]]:
    """Mean, n and 95% interval over prompts: Wilson for 0/1 outcomes, else BCa bootstrap (a
    constant continuous sample has the degenerate interval [mean, mean])."""
    a = np.asarray(values, dtype=float)
    if not binary and (a.size < 2 or np.allclose(a, a[0])):
        return float(a.mean()), int(a.size), (float(a.mean()), float(a.mean()))
    e = stats.estimate(a, seed=seed, binary=binary)
    return e.value, e.n, (e.ci_low, e.ci_high)


# -------------------------------------------------------------------------------- per checkpoint
def repeated_sequences(model: HookedModel, n_prompts: int = 32, seed: int = 0) -> torch.Tensor:
    """Random segments of half the context, each followed by its repeat (the ICL-score prompts)."""
    seg = max(4, int(model.cfg.n_ctx) // 2)
    return repeated_random_tokens(n_prompts, seg, int(model.cfg.d_vocab), seed=seed + 11)


def loss_rows(model: HookedModel, step: int, n_prompts: int = 32, seed: int = 0) -> list[dict]:
    """``loss_by_position`` and ``icl_score`` rows on repeated random sequences."""
    toks = repeated_sequences(model, n_prompts, seed)
    with torch.no_grad():
        per_tok = model(toks, return_type="loss", loss_per_token=True).float()  # [B, T-1]
    rows = []
    for p in range(per_tok.shape[1]):
        v, n, ci = _est(per_tok[:, p].numpy(), seed)
        rows.append(_row(step, "loss_by_position", v, n, ci, position=p + 1))
    score = icl_score(model, toks)
    v, n, ci = _est(score.per_prompt.numpy(), seed)
    rows.append(_row(step, "icl_score", v, n, ci))
    return rows


def head_rows(model: HookedModel, step: int, seed: int = 0) -> list[dict]:
    """Every head score of ``experiments.studies.scan.head_scan`` (same seed), one row per head."""

    with torch.no_grad():
        scan = head_scan(model, seed=seed)
    rows = []
    for name, hs in scan.items():
        per_prompt = _per_prompt_scores(model, hs) if name in INTERVAL_SCORES else None
        n = int(hs.tokens.shape[0]) if hs.tokens is not None else 0
        for layer, row in enumerate(hs.scores.tolist()):
            for head, v in enumerate(row):
                ci = (math.nan, math.nan)
                if per_prompt is not None:
                    _, n, ci = _est(per_prompt[:, layer, head].numpy(), seed)
                rows.append(_row(step, name, v, n, ci, layer=layer, head=head))
    return rows


def _per_prompt_scores(model: HookedModel, hs: Any) -> torch.Tensor | None:
    """[prompt, layer, head] attention mass of the scan's own prompts (previous-token, induction)."""
    toks = hs.tokens
    B, T = toks.shape
    mask = torch.zeros(B, T, T, dtype=torch.bool)
    if hs.name == "previous_token":
        i = torch.arange(1, T)
        mask[:, i, i - 1] = True
    elif hs.name == "induction":
        L = int(hs.info.get("seg_len", 0))
        if not L or 2 * L != T:
            return None
        q = torch.arange(L, 2 * L)
        mask[:, q, q - L + 1] = True
    else:
        return None
    with torch.no_grad():
        pat = attention_patterns(model, toks).double()  # [L, B, H, q, k]
    mass = torch.einsum("lbhqk,bqk->blh", pat, mask.double())
    return (mass / mask.any(-1).sum(-1).double()[:, None, None]).float()


def accuracy_rows(model: HookedModel, step: int, task: str, ks: Sequence[int] = DEFAULT_KS,
                  n_prompts: int = 64, seed: int = 0, options: dict | None = None) -> list[dict]:
    """In-context accuracy of ``task`` at each k (Wilson interval over prompts)."""

    rows = []
    for k in ks:
        try:
            batch = task_batch(task, k, n_prompts, seed + 1000 + k, **(options or {}))
        except ValueError:
            continue  # k does not fit this task's context
        if int(batch.lengths.max()) > int(model.cfg.n_ctx):
            continue
        with torch.no_grad():
            logits = readout_logits(model, batch.trim())
        correct = _correct(logits, batch, task, predictions)
        v, n, ci = _est(correct, seed, binary=True)
        rows.append(_row(step, "accuracy", v, n, ci, k=k))
    return rows


def _correct(logits: torch.Tensor, batch: Any, task: str, predictions: Callable) -> np.ndarray:
    if task == "icll":

        pred = letter_probs(logits).argmax(-1)
        legal = batch.meta["legal_next"]
        return legal[torch.arange(batch.batch_size), pred].float().numpy()
    return (predictions(logits, batch) == batch.target).float().numpy()


def checkpoint_rows(model: HookedModel, entry: dict, task: str | None, ks: Sequence[int] = DEFAULT_KS,
                    n_prompts: int = 64, seed: int = 0, task_options: dict | None = None) -> list[dict]:
    """All rows of one checkpoint (``entry``: its index entry with ``step`` and ``loss``)."""
    step = int(entry["step"])
    rows = [_row(step, "train_loss", entry["loss"]),
            _row(step, "train_loss_batch", entry.get("train_loss", math.nan), 1)]
    rows += loss_rows(model, step, min(n_prompts, 32), seed)
    rows += head_rows(model, step, seed)
    if task:
        rows += accuracy_rows(model, step, task, ks, n_prompts, seed, task_options)
    return rows


# -------------------------------------------------------------------------------- the table
def dynamics_table(name: str, steps: Sequence[int] | None = None, seed: int = 0, n_prompts: int = 64,
                   ks: Sequence[int] = DEFAULT_KS, root: Path | None = None,
                   progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The tidy dynamics table of zoo model ``name`` over its checkpoint series (module doc)."""

    index = series.read_index(name, root)
    entries = [c for c in index["checkpoints"] if steps is None or c["step"] in set(steps)]
    if steps is not None and len(entries) != len(set(steps)):
        have = [c["step"] for c in index["checkpoints"]]
        raise KeyError(f"steps {sorted(set(steps) - {c['step'] for c in entries})} are not checkpoints "
                       f"of {name!r}; its steps: {have}")
    task = TASK_OF.get(name)
    extra = _model_rows(name)
    rows: list[dict] = []
    for entry in entries:
        if progress:
            progress(f"{name}: step {entry['step']}")
        model = series.load_series_model(name, entry["step"], root)
        rows += checkpoint_rows(model, entry, task, ks, n_prompts, seed)
        if extra is not None:
            rows += [_row(**{"layer": -1, "head": -1, "k": -1, "position": -1, **r})
                     for r in extra(model, int(entry["step"]))]
    return pd.DataFrame(rows, columns=DYN_COLUMNS)


def _model_rows(name: str) -> Callable[[HookedModel, int], list[dict]] | None:
    """A zoo module's own per-checkpoint measurements (``dynamics_rows(model, step)``), if any."""


    if name not in zoo.ZOO_MODULES:
        return None
    return getattr(importlib.import_module(zoo.ZOO_MODULES[name]), "dynamics_rows", None)


def training_curve(name: str, root: Path | None = None) -> pd.DataFrame:
    """The loss of every training update's batch (``step``, ``loss``) from the series index."""

    log = series.read_index(name, root)["train_loss_log"]
    return pd.DataFrame({"step": np.arange(1, len(log) + 1), "loss": log})


# -------------------------------------------------------------------------------- phase change
@dataclass(frozen=True)
class PhaseChange:
    """Where a curve over checkpoints rises fastest (per unit of log step).

    ``start``/``end``: the consecutive checkpoints between which the rise per log step is largest;
    ``step``: their geometric midpoint; ``before``/``after``: the curve's values at ``start`` and
    ``end``; ``onset``/``done``: the first checkpoints at which the curve has covered 10% / 90% of
    its total rise (from its first value to its maximum); ``rise``: max minus first value.
    """

    start: int
    end: int
    step: float
    before: float
    after: float
    onset: int
    done: int
    rise: float

    def as_dict(self) -> dict:
        return asdict(self)


def phase_change(steps: Sequence[int], values: Sequence[float]) -> PhaseChange:
    """The phase change of ``values`` over checkpoint ``steps`` (see ``PhaseChange``)."""
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if s.shape != v.shape or s.size < 2:
        raise ValueError(f"need >= 2 checkpoints with one value each, got {s.size} steps and {v.size} values")
    if np.any(np.diff(s) <= 0) or s[0] < 1:
        raise ValueError("checkpoint steps must be increasing and >= 1")
    rate = np.diff(v) / np.diff(np.log(s))
    i = int(np.nanargmax(rate))
    first, top = v[0], float(np.nanmax(v))
    rise = top - first

    def reached(frac: float) -> int:
        hit = np.nonzero(v >= first + frac * rise)[0]
        return int(s[hit[0]]) if hit.size else int(s[-1])

    return PhaseChange(start=int(s[i]), end=int(s[i + 1]), step=float(math.sqrt(s[i] * s[i + 1])),
                       before=float(v[i]), after=float(v[i + 1]), onset=reached(0.1),
                       done=reached(0.9), rise=float(rise))


def loss_bump(curve: Sequence[float], start: int, end: int, smooth: int = 25) -> dict[str, float]:
    """The training loss around a phase change [start, end] (1-based update counts).

    The per-update loss is smoothed by a centred moving average of ``smooth`` updates. Over the
    stretch from ``start // 2`` to ``min(2 * end, len)``: ``bump`` = the largest rise of the smoothed
    loss above its running minimum (0 when it never goes up), ``drop`` = smoothed loss at ``start``
    minus at ``end``, ``plateau`` = the smoothed loss at ``start``.
    """
    y = np.asarray(curve, dtype=float)
    if y.size == 0:
        raise ValueError("empty training-loss curve")
    w = max(1, min(smooth, y.size))
    kernel = np.ones(w) / w
    padded = np.pad(y, (w // 2, w - 1 - w // 2), mode="edge")
    sm = np.convolve(padded, kernel, mode="valid")
    a, b = max(0, start // 2 - 1), min(y.size, 2 * end)
    seg = sm[a:b]
    bump = float(np.max(seg - np.minimum.accumulate(seg))) if seg.size else 0.0

    def at(step: int) -> float:
        return float(sm[min(max(step, 1), y.size) - 1])

    return {"bump": bump, "drop": at(start) - at(end), "plateau": at(start), "smooth": w}


def head_curve(table: pd.DataFrame, metric: str, layer: int | None = None) -> pd.DataFrame:
    """Per step, the best head's score of ``metric`` (in ``layer`` if given), with its interval."""
    t = table[table["metric"] == metric]
    if layer is not None:
        t = t[t["layer"] == layer]
    if t.empty:
        raise KeyError(f"no {metric!r} scores{f' in layer {layer}' if layer is not None else ''} "
                       f"in the dynamics table")
    idx = t.groupby("step")["value"].idxmax()
    return t.loc[idx].sort_values("step").reset_index(drop=True)


def phase_summary(table: pd.DataFrame, train_loss: Sequence[float] | None = None,
                  score: str = "induction") -> dict[str, Any]:
    """The phase change as numbers: the ``score`` (best head, any layer) window, the previous-token
    head's (layer 0) formation, the ICL score's window, and the training-loss bump around it."""
    ind = head_curve(table, score)
    pc = phase_change(ind["step"].tolist(), ind["value"].tolist())
    at = ind.set_index("step")
    out: dict[str, Any] = {
        "score": score,
        score: {**pc.as_dict(),
                "before_ci": [float(at.loc[pc.start, "ci_low"]), float(at.loc[pc.start, "ci_high"])],
                "after_ci": [float(at.loc[pc.end, "ci_low"]), float(at.loc[pc.end, "ci_high"])],
                "n": int(at.loc[pc.end, "n"]),
                "head_after": [int(at.loc[pc.end, "layer"]), int(at.loc[pc.end, "head"])],
                "final": float(ind["value"].iloc[-1])},
    }
    if (table["metric"] == "previous_token").any():
        prev = head_curve(table, "previous_token", layer=0)
        ppc = phase_change(prev["step"].tolist(), prev["value"].tolist())
        pat = prev.set_index("step")
        # "before or with": the previous-token head has covered 10% of its rise by the end of the
        # induction window (checkpoint resolution cannot order two rises inside one interval)
        out["previous_token"] = {**ppc.as_dict(), "head": [0, int(pat.loc[ppc.end, "head"])],
                                 "before_or_with": bool(ppc.onset <= pc.end)}
    icl = table[table["metric"] == "icl_score"].sort_values("step")
    if not icl.empty:  # the ICL score falls (more negative) as ICL forms: detect on -score
        ipc = phase_change(icl["step"].tolist(), (-icl["value"]).tolist())
        it = icl.set_index("step")
        out["icl_score"] = {**ipc.as_dict(), "before": float(it.loc[ipc.start, "value"]),
                            "after": float(it.loc[ipc.end, "value"]),
                            "before_ci": [float(it.loc[ipc.start, "ci_low"]), float(it.loc[ipc.start, "ci_high"])],
                            "after_ci": [float(it.loc[ipc.end, "ci_low"]), float(it.loc[ipc.end, "ci_high"])],
                            "n": int(it.loc[ipc.end, "n"])}
    if train_loss is not None and len(train_loss):
        out["loss"] = loss_bump(train_loss, pc.start, pc.end)
    ngram = ngram_emergence(table)
    if ngram:
        out["ngram"] = ngram
    return out


def ngram_emergence(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """For each n-gram head score in the table (``ngram_2..4``, ICLL models): the best head's curve
    over checkpoints, its phase change (``phase_change``: fastest-rise window, 10% / 90% of the
    rise) and the head that holds the best score at the end of the window and at the last step."""
    out: dict[str, dict[str, Any]] = {}
    for metric in sorted(m for m in table["metric"].unique() if str(m).startswith("ngram_")):
        curve = head_curve(table, metric)
        if len(curve) < 2:
            continue
        pc = phase_change(curve["step"].tolist(), curve["value"].tolist())
        at = curve.set_index("step")
        out[metric] = {**pc.as_dict(), "head_after": [int(at.loc[pc.end, "layer"]), int(at.loc[pc.end, "head"])],
                       "final": float(curve["value"].iloc[-1]),
                       "final_head": [int(curve["layer"].iloc[-1]), int(curve["head"].iloc[-1])],
                       "curve": [[int(s), round(float(v), 4)] for s, v in zip(curve["step"], curve["value"])]}
    return out


def format_phase(summary: dict[str, Any]) -> str:
    """The phase-change summary as a few lines of text."""
    s = summary["score"]
    p = summary[s]
    lines = [f"{s} score (best head) rises fastest between steps {p['start']} and {p['end']}: "
             f"{p['before']:.3f} [{p['before_ci'][0]:.3f}, {p['before_ci'][1]:.3f}] -> "
             f"{p['after']:.3f} [{p['after_ci'][0]:.3f}, {p['after_ci'][1]:.3f}] (n={p['n']} prompts; "
             f"10%-90% of its rise between steps {p['onset']} and {p['done']}; final {p['final']:.3f})"]
    if "previous_token" in summary:
        q = summary["previous_token"]
        lines.append(f"previous-token head L0H{q['head'][1]} rises fastest between steps {q['start']} "
                     f"and {q['end']} ({q['before']:.3f} -> {q['after']:.3f}; 10% of its rise by step "
                     f"{q['onset']}, 90% by {q['done']}): forms "
                     f"{'before or with' if q['before_or_with'] else 'after'} the {s} head")
    if "icl_score" in summary:
        q = summary["icl_score"]
        lines.append(f"ICL score falls fastest between steps {q['start']} and {q['end']}: "
                     f"{q['before']:.3f} [{q['before_ci'][0]:.3f}, {q['before_ci'][1]:.3f}] -> "
                     f"{q['after']:.3f} [{q['after_ci'][0]:.3f}, {q['after_ci'][1]:.3f}] nats (n={q['n']})")
    if "loss" in summary:
        q = summary["loss"]
        lines.append(f"training loss (moving average of {q['smooth']} updates): {q['plateau']:.3f} at "
                     f"step {p['start']}, falls by {q['drop']:.3f} by step {p['end']}; largest rise "
                     f"above its running minimum around the window (the bump): {q['bump']:.3f}")
    for metric, q in summary.get("ngram", {}).items():
        lines.append(f"{metric} (best head) rises fastest between steps {q['start']} and {q['end']} "
                     f"({q['before']:.3f} -> {q['after']:.3f}, L{q['head_after'][0]}H{q['head_after'][1]}); "
                     f"10%-90% of its rise between steps {q['onset']} and {q['done']}; final "
                     f"{q['final']:.3f} (L{q['final_head'][0]}H{q['final_head'][1]})")
    return "\n".join(lines)


def format_overview(table: pd.DataFrame) -> str:
    """One line per checkpoint: probe loss, ICL score, best head per score, accuracy at each k."""
    lines = []
    for step, t in table.groupby("step"):
        parts = [f"step {step:>6}"]
        for metric in ("train_loss", "icl_score"):
            v = t[t["metric"] == metric]["value"]
            if len(v):
                parts.append(f"{metric} {float(v.iloc[0]):.3f}")
        heads = t[t["layer"] >= 0]
        for metric, h in heads.groupby("metric", sort=False):
            best = h.loc[h["value"].idxmax()]
            parts.append(f"{metric} L{int(best['layer'])}H{int(best['head'])}={best['value']:.2f}")
        for metric, a in t[(t["layer"] < 0) & t["metric"].str.endswith("accuracy")].groupby("metric", sort=False):
            parts.append(metric + " " + " ".join(
                (f"k={int(r.k)}:" if r.k >= 0 else "") + f"{r.value:.2f}" for r in a.itertuples()))
        lines.append("  ".join(parts))
    return "\n".join(lines)
