"""Head scan: every head score from ``probes.heads`` that applies to one model, as one table set.

``head_scan(model)`` returns ``{score name: HeadScores}``:

- ``previous_token``, ``induction``, ``duplicate_token``: on repeated random tokens;
- ``prefix_matching``: Olsson's 25 tokens x 4 repeats (shrunk to fit n_ctx);
- ``copying``: OV eigenvalue copying score (when the model has tied-size W_E/W_U);
- ``copying_effective``: the same with W_E + MLP0(W_E), for models with MLPs;
- ``k_composition``: per later head, the strongest K-composition from an earlier head (minus
  the random baseline), with the source head in ``info["source"]``;

  the weight-based three (``probes.head_weights``) are per query head on grouped-query models
  (query head h reads key/value head h // (n_heads / n_kv_heads)), with the norms around each head
  folded into its weights (``circuit_weights``);
- ``ngram_2``, ``ngram_3``, ``ngram_4``: n-gram head scores, when ICLL-like token prompts are
  given (``ngram_tokens``), a sampler is given (``token_sampler(n, seed) -> tokens``), or the
  model is a zoo model trained on ICLL (its card's task), whose prompts come from
  ``experiments.tasks.icll``.

A model that reads vectors rather than tokens (no token vocabulary) cannot be scanned: ``head_scan``
raises ``HeadScoreError``. ``seg_len`` and ``n_prompts`` are checked against the model before any
work; the token scores (previous-token, induction, duplicate-token) must succeed, while the others
may not apply to a model (a prefix-matching prompt longer than the context, no ``W_E`` for copying):
those are left out and named in ``scan_errors(scan)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from experiments.tasks import icll
from probes import stats
from probes.head_weights import (
    copying_scores,
    k_composition_scores,
    max_composition_into,
)
from probes.heads import (
    HeadScoreError,
    HeadScores,
    duplicate_token_scores,
    induction_scores,
    ngram_scores,
    prefix_matching_scores,
    previous_token_scores,
    repeated_random_tokens,
)
from probes.hooked import HookedModel
from probes.stats import StatsTables

NGRAM_NS = (2, 3, 4)
REQUIRED = ("previous_token", "induction", "duplicate_token")
"""Scores every token model has; a failure of one of them fails the scan."""


def head_scan(
    model: HookedModel,
    seed: int = 0,
    seg_len: int | None = None,
    ngram_tokens: torch.Tensor | Sequence[Sequence[int]] | None = None,
    ngram_lengths: torch.Tensor | None = None,
    token_sampler: Callable[[int, int], Any] | None = None,
    n_prompts: int = 32,
    weights: bool = True,
    nulls: bool = True,
) -> dict[str, HeadScores]:
    """Score every head of ``model``; returns {score name: HeadScores}.

    ``weights=False`` skips the weight-based scores (copying, composition). ``nulls`` (default)
    also scores previous-token, induction, duplicate-token and prefix-matching on their nulls
    (``probes.heads.NULLS``; ``hs.null``); ``scan_stats`` tests every head against them.
    """
    check_scan_params(model, seg_len=seg_len, n_prompts=n_prompts)
    n_ctx = int(model.cfg.n_ctx)
    seg = seg_len or max(4, min(20, (n_ctx - 1) // 2))
    vocab = int(model.cfg.d_vocab)
    out: dict[str, HeadScores] = {}
    errors: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], HeadScores]) -> None:
        try:
            out[name] = fn()
        except Exception as err:  # a score that does not apply to this model
            if name in REQUIRED:
                raise HeadScoreError(f"the {name} score failed on this model: {err}") from err
            errors[name] = f"{type(err).__name__}: {err}"

    attempt("previous_token", lambda: previous_token_scores(
        model, repeated_random_tokens(16, seg, vocab, seed=seed + 1), with_null=nulls, seed=seed + 1))
    attempt("induction", lambda: induction_scores(model, seg_len=seg, batch=16, seed=seed, with_null=nulls))
    attempt("duplicate_token", lambda: duplicate_token_scores(model, seg_len=seg, seed=seed + 2, with_null=nulls))
    attempt("prefix_matching", lambda: prefix_matching_scores(model, seed=seed + 3, with_null=nulls))
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
            attempt(f"ngram_{n}", functools.partial(ngram_scores, model, tokens, n, lengths=lengths))
    if errors:
        for hs in out.values():
            hs.info.setdefault("scan_errors", errors)
    return out


def max_seg_len(n_ctx: int) -> int:
    """The longest segment whose repeat (2 x seg_len tokens) fits a context of ``n_ctx``."""
    return n_ctx // 2


def check_scan_params(model: HookedModel, seg_len: int | None = None, n_prompts: int = 32) -> None:
    """HeadScoreError, before any work, when ``model`` cannot be scanned with these parameters."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "d_vocab"):
        raise HeadScoreError(
            "this model reads real vectors, not tokens: head scores need token prompts; scan a "
            "token model (e.g. induction-2l, icll-dfa, icl-classify, smollm2-135m)")
    if seg_len is not None:
        top = max_seg_len(int(cfg.n_ctx))
        if isinstance(seg_len, bool) or not isinstance(seg_len, int) or not 1 <= seg_len <= top:
            raise HeadScoreError(
                f"seg_len={seg_len!r} does not fit this model: the scan repeats a segment twice in a "
                f"context of {int(cfg.n_ctx)} tokens; use 1 <= seg_len <= {top} (or leave it unset)")
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise HeadScoreError(f"n_prompts={n_prompts!r}: the scan needs at least one prompt; use n_prompts >= 1")


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


def _icll_tokens(model: HookedModel, n: int, seed: int) -> tuple[Any, torch.Tensor | None]:
    """ICLL held-out sequences when the model is a zoo model trained on the ICLL task."""
    card = getattr(model, "zoo_card", None) or {}
    task = str((card.get("task") or {}).get("name", "")) + " " + str(card.get("name", ""))
    if "icll" not in task.lower() and "dfa" not in task.lower():
        return None, None

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


# ---------------------------------------------------------------------- statistics
STATS_COLUMNS = ["n", "value", "ci_low", "ci_high", "sd", "null", "null_n", "null_value", "null_sd",
                 "effect", "effect_ci_low", "effect_ci_high", "p_value", "q_value", "mde", "p_discordant",
                 "test", "verdict", "above_null"]
"""Columns ``scan_stats`` adds to each (score, layer, head) row."""


def scan_stats(scan: dict[str, HeadScores], level: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """Every head's score with its interval over prompts and its test against the score's null.

    One row per (``metric`` = score name, ``layer``, ``head``) with ``STATS_COLUMNS``: ``n`` prompts,
    ``value`` (mean over prompts of each prompt's score), ``ci_low``/``ci_high`` (BCa bootstrap
    over prompts), ``sd`` (over prompts); ``null`` (what the null is, ``probes.heads.NULLS``),
    ``null_n``, ``null_value``, ``null_sd``; ``effect`` = value - null_value with its interval,
    ``p_value`` (a paired permutation test for previous-token, whose null is read on the same
    prompts; else a permutation test of two independent samples), ``q_value`` (Benjamini-Hochberg
    over every head and score of this scan: one model's family), ``verdict``
    (``probes.stats.verdict``) and ``above_null`` (significant and above the null: the head *is*
    one of that kind). Scores without prompts (copying, composition) keep only ``value``; scores
    without a null (n-gram scores) get the interval only.
    """

    rows = []
    for name, hs in scan.items():
        per, null = hs.per_prompt, hs.null
        L, H = hs.scores.shape
        for layer in range(L):
            for head in range(H):
                row: dict[str, Any] = {"metric": name, "layer": layer, "head": head,
                                       "value": float(hs.scores[layer, head])}
                if per is not None:
                    x = per[:, layer, head].double().numpy()
                    x = x[np.isfinite(x)]
                    est = stats.estimate(x, level, binary=False)
                    row.update(est.as_dict(), sd=float(x.std(ddof=1)) if len(x) > 1 else 0.0)
                if per is not None and null is not None and null.per_prompt is not None:
                    y = null.per_prompt[:, layer, head].double().numpy()
                    if null.info.get("paired"):
                        ok = np.isfinite(y) & np.isfinite(per[:, layer, head].double().numpy())
                        c = stats.paired(per[:, layer, head].double().numpy()[ok], y[ok], level)
                    else:
                        c = stats.unpaired(x, y[np.isfinite(y)], level)
                    y = y[np.isfinite(y)]
                    row.update({k: v for k, v in c.as_dict().items() if k not in ("n", "value")},
                               null=null.info.get("null", ""), null_n=len(y), null_value=c.control_value,
                               null_sd=float(y.std(ddof=1)) if len(y) > 1 else 0.0)
                    row.pop("control_value", None)
                rows.append(row)
    df = pd.DataFrame(rows)
    for col in STATS_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df[["null", "test"]] = df[["null", "test"]].fillna("")
    return add_head_q(df, alpha)


def add_head_q(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """``q_value`` (BH over all rows with a p-value: one family), ``verdict`` and ``above_null``."""

    df = df.copy()
    for col in ("mde", "p_discordant", "effect_ci_low", "effect_ci_high"):  # a query drops all-NaN columns
        if col not in df.columns:
            df[col] = np.nan
    tested = df["p_value"].notna()
    df["q_value"] = stats.bh(df["p_value"].to_numpy(dtype=float))
    df["verdict"] = [stats.verdict(lo, hi, q, m, alpha) if t else "" for lo, hi, q, m, t in
                     zip(df["effect_ci_low"], df["effect_ci_high"], df["q_value"], df["mde"], tested)]
    df["above_null"] = (df["verdict"] == "significant") & (df["effect"] > 0)
    df["direction"] = stats.direction(df)  # a head significantly *below* its null is not an induction head
    return df


def head_scan_stats(table: pd.DataFrame, alpha: float = 0.05) -> "StatsTables":
    """Statistics of stored head scans (``head_scan`` sweep rows, or ``scan_stats`` output).

    The per-head statistics are computed when a unit runs (``scan_stats``: one unit holds all of
    a seed's prompts, and 270+ heads x prompts x scores would make big tables), so this only
    re-forms them: ``estimates`` (``model, seed, metric, layer, head`` + ``EST_COLUMNS``, the
    scores with prompts) and ``comparisons`` (``model, seed, metric, layer, head, condition,
    control`` + ``CMP_COLUMNS`` + ``null``, ``above_null``; condition = the score, control = its
    null), with q-values recomputed by BH over each (model, seed): one scan's family. Seeds are
    separate scans, not pooled (each has its own rows; compare their verdicts)."""

    if "p_value" not in table.columns:
        raise stats.StatsError("this head-scan table has no statistics (it predates the statistics layer): "
                               "recompute it (`iclwb sweep run` recomputes stale units) or use scan_stats(scan)")
    t = table.copy()
    if "prompt" in t.columns:
        t = t[t["prompt"] < 0]
    for col, val in (("model", ""), ("seed", 0)):
        if col not in t.columns:
            t[col] = val
    return _scan_tables(t, alpha)


def pooled_head_scan_stats(store: Any, model: str | None = None, level: float = 0.95,
                           alpha: float = 0.05) -> "StatsTables":
    """``head_scan_stats`` with every seed's prompts pooled into one sample per model: read from
    the per-prompt tensors the ``head_scan`` units store (``per_prompt/<score>``,
    ``null_per_prompt/<score>``), then ``scan_stats`` on the concatenation (resampling unit
    (seed, prompt); previous-token stays paired prompt by prompt). ``seed`` is the seeds joined
    by commas; one BH family per model."""


    frame = store.frame(analysis="head_scan", **({"model": model} if model else {}))
    if frame.empty:
        raise ValueError(f"the store has no head_scan units{' for ' + model if model else ''}; run a sweep first")
    if "p_value" not in frame.columns:
        return head_scan_stats(frame, alpha)  # raises the recompute message
    parts = []
    for name, rows in frame.groupby("model", sort=False):
        units = rows.drop_duplicates("unit_key").sort_values("seed")
        tensors = [store.tensors(key) for key in units["unit_key"]]
        scan: dict[str, HeadScores] = {}
        for score, g in rows[rows["n"].notna()].groupby("metric", sort=False):
            if not all(f"per_prompt/{score}" in t for t in tensors):
                continue
            per = torch.cat([t[f"per_prompt/{score}"] for t in tensors])
            info: dict[str, Any] = {"per_prompt": per}
            if all(f"null_per_prompt/{score}" in t for t in tensors) and (g["null"] != "").any():
                null = torch.cat([t[f"null_per_prompt/{score}"] for t in tensors])
                info["null"] = HeadScores(score, null.nanmean(0), None, {
                    "per_prompt": null, "null": str(g["null"].iloc[0]),
                    "paired": bool((g["test"] == "paired permutation").any())})
            scan[str(score)] = HeadScores(str(score), per.nanmean(0), None, info)
        seeds = ",".join(str(int(x)) for x in units["seed"])
        parts.append(scan_stats(scan, level, alpha).assign(model=name, seed=seeds))
    return _scan_tables(pd.concat(parts, ignore_index=True), alpha)


def _scan_tables(t: pd.DataFrame, alpha: float) -> "StatsTables":

    key = ["model", "seed", "metric", "layer", "head"]
    est = t[t["n"].notna()][[*key, *stats.EST_COLUMNS]].reset_index(drop=True)
    parts = []
    for _, fam in t[t["p_value"].notna()].groupby(["model", "seed"], sort=False):
        parts.append(add_head_q(fam, alpha))
    cmp = pd.concat(parts, ignore_index=True) if parts else t.iloc[:0]
    cmp = cmp.assign(condition=cmp["metric"], control=cmp["metric"] + ":null", control_value=cmp["null_value"])
    cmp = cmp[[*key, "condition", "control", *stats.CMP_COLUMNS, "null", "above_null"]].reset_index(drop=True)
    return stats.StatsTables(est, cmp)
