"""ICL versus gradient descent: does ICL change a model's behaviour the way GD on the same
demonstrations does?

Two halves, one tidy output format (a pandas DataFrame, one row per model/task/k/seed/metric,
with provenance columns):

**Linear regression** lives in ``experiments.studies.linreg_gd`` (``compare_linreg``).

**Language models** (Dai et al. 2023; Shen et al. 2023). ``compare_icl_gd`` fine-tunes a copy of
the model on the k demonstrations of each prompt (``experiments.studies.gd.finetune_on_demos``), then
compares zero-shot, ICL and GD read-out distributions: accuracy, top-k overlap, KL both ways,
total variation, Rec2FTP, SimAOU per layer (with its random baseline) and order sensitivity.

**Statistics.** Rows carry ``prompt`` (-1 for the aggregates; 0..n-1 per prompt, or per task for
linear regression: ``linreg_task_rows``); ``icl_vs_gd_stats(table)`` gives every metric's interval
over prompts and the paired comparisons (``LM_PAIRS``, the model's error against each baseline,
``LINREG_PAIRS``) with BH q-values over one (model, task) and verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from experiments.studies.gd import FineTuner, GDConfig
from experiments.studies.tidy import model_name as default_model_name
from experiments.studies.tidy import provenance
from probes import stats
from probes.errors import WorkbenchError
from probes.hooked import HookedModel
from probes.prompt import PromptBatch
from probes.readout import predictions, readout_logits
from probes.stats import StatsTables


class ICLvsGDError(WorkbenchError):
    """Bad input to an ICL-versus-GD comparison; the message names the fix."""


# ====================================================================== language models
# ---------------------------------------------------------------------- distribution metrics
def kl_divergence(logp: Float[Tensor, "b v"], logq: Float[Tensor, "b v"]) -> Float[Tensor, " b"]:
    """KL(p || q) per row, from log-probabilities (0 where p = q)."""
    return (logp.exp() * (logp - logq)).sum(-1).clamp(min=0.0)


def total_variation(p: Float[Tensor, "b v"], q: Float[Tensor, "b v"]) -> Float[Tensor, " b"]:
    return 0.5 * (p - q).abs().sum(-1)


def topk_overlap(p: Float[Tensor, "b v"], q: Float[Tensor, "b v"], k: int = 10) -> Float[Tensor, " b"]:
    """|top-k(p) ∩ top-k(q)| / k per row (Shen et al.'s token overlap; 1 for p = q)."""
    k = min(k, p.shape[-1])
    tp, tq = p.topk(k, -1).indices, q.topk(k, -1).indices
    return (tp[:, :, None] == tq[:, None, :]).any(-1).float().mean(-1)


def rec2ftp(zs_correct: Tensor, icl_correct: Tensor, gd_correct: Tensor) -> float:
    """Dai et al.'s Recall-to-fine-tuning-prediction: of the queries zero-shot gets wrong and GD
    gets right, the share ICL also gets right (nan when GD fixes nothing)."""
    zs, icl, gd = (torch.as_tensor(t, dtype=torch.bool) for t in (zs_correct, icl_correct, gd_correct))
    f2t_gd = ~zs & gd
    n = int(f2t_gd.sum())
    return float("nan") if n == 0 else float((f2t_gd & icl).sum()) / n


def simaou(h_zs: Float[Tensor, "b l d"], h_icl: Float[Tensor, "b l d"], h_gd: Float[Tensor, "b l d"],
           seed: int = 0, per_prompt: bool = False) -> tuple[Tensor, Tensor]:
    """Per layer: mean cos(h_ICL - h_ZS, h_GD - h_ZS) on L2-normalised attention outputs, and the
    random baseline mean cos(h_ICL - h_ZS, u) with u ~ U[0, 1]^d (Dai et al. 2023).

    ``per_prompt=True`` returns the [b, l] cosines of every prompt instead of their means."""
    norm = torch.nn.functional.normalize
    zs, icl, gd = norm(h_zs, dim=-1), norm(h_icl, dim=-1), norm(h_gd, dim=-1)
    d_icl, d_gd = icl - zs, gd - zs
    cos = torch.nn.functional.cosine_similarity(d_icl, d_gd, dim=-1, eps=1e-12)
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(d_icl.shape, generator=g)
    rnd = torch.nn.functional.cosine_similarity(d_icl, u, dim=-1, eps=1e-12)
    return (cos, rnd) if per_prompt else (cos.mean(0), rnd.mean(0))


# ---------------------------------------------------------------------- read-out capture
def _readout_and_attn(model: HookedModel, batch: "PromptBatch", layers: int
                      ) -> tuple[Float[Tensor, "b v"], Float[Tensor, "b l d"]]:
    """Read-out logits and every layer's attention output at the read-out position."""

    outs: list[Tensor | None] = [None] * layers
    idx = torch.arange(batch.batch_size)

    def make(l: int):
        def hook(t: Tensor, hook: Any) -> None:
            outs[l] = t[idx, batch.readout].detach().clone()
        return hook

    hooks = [(f"blocks.{l}.hook_attn_out", make(l)) for l in range(layers)]
    with torch.no_grad():
        logits = readout_logits(model, batch.trim(), fwd_hooks=hooks)
    return logits.float(), torch.stack([o for o in outs if o is not None], 1)


def _scores(logits: Tensor, batch: "PromptBatch") -> tuple[Tensor, Tensor]:
    """(log-probs over the vocabulary, correct per row) with probes.readout's prediction rule."""

    if batch.target is None:
        raise ICLvsGDError("prompts need batch.target (the correct label) for accuracy")
    correct = torch.eq(predictions(logits, batch), batch.target)
    return logits.log_softmax(-1), correct


def _order_probs(logp: Tensor, batch: "PromptBatch", ref: Tensor) -> Tensor:
    """Probabilities that order sensitivity tracks: the candidate labels if the batch has them,
    else the reference distribution's top-10 tokens."""
    if batch.candidates is not None:
        cand = batch.candidates[0]
        cand = cand[cand >= 0]
        return logp[:, cand].exp()
    return logp[:, ref].exp()


# ---------------------------------------------------------------------- the comparison
PromptSource = Any  # PromptBatch | Mapping[int, PromptBatch] | Callable[[int, int], PromptBatch]


def _prompts_for(source: PromptSource, k: int, seed: int, n_prompts: int) -> "PromptBatch":

    if isinstance(source, PromptBatch):
        if source.n_demos != k:
            raise ICLvsGDError(f"the PromptBatch has {source.n_demos} demonstrations but k={k} "
                               f"was asked; pass a dict {{k: PromptBatch}} or a make(k, seed) function")
        return source.select(slice(0, n_prompts))
    if isinstance(source, dict):
        if k not in source:
            raise ICLvsGDError(f"no prompts for k={k}; the dict has k in {sorted(source)}")
        return source[k].select(slice(0, n_prompts))
    if callable(source):
        return source(k, seed)
    raise ICLvsGDError("prompts must be a PromptBatch, a dict {k: PromptBatch} or a function "
                       "make(k, seed) -> PromptBatch")


def compare_icl_gd(model: HookedModel, prompts: PromptSource, ks: Sequence[int] = (1, 2, 4, 8),
                   seeds: Sequence[int] = (0,), gd: "GDConfig | None" = None, n_prompts: int = 16,
                   n_perms: int = 4, topk: int = 10, gd_online: bool = True,
                   n_order_prompts: int = 4, model_name: str | None = None, task_name: str | None = None,
                   progress: bool = False, per_prompt: bool = True) -> pd.DataFrame:
    """The whole ICL-versus-GD comparison for a language model, as a tidy DataFrame.

    For every ``k`` and ``seed``: ``prompts`` gives a PromptBatch with k demonstrations (a
    ``make(k, seed)`` function, a ``{k: PromptBatch}`` dict or one PromptBatch); each prompt is
    read (1) zero-shot (demonstrations removed), (2) with ICL, (3) zero-shot by a copy of the
    model fine-tuned on its k demonstrations (``experiments.studies.gd``, config ``gd``). Rows have
    ``model, task, k, seed, metric, value, layer, n_prompts`` plus the GD settings and
    provenance. Metrics: ``acc_zs, acc_icl, acc_gd, topk_overlap, kl_icl_gd, kl_gd_icl, tv_icl_gd``
    (also ``*_zs_*`` references), ``rec2ftp``, ``simaou`` / ``simaou_random`` per layer,
    ``order_std_icl``, ``order_std_gd`` (full batch) and ``order_std_sgd`` (online, if
    ``gd_online``; on the first ``n_order_prompts`` prompts, ``n_perms`` orders each),
    ``gd_final_loss``.

    Column ``prompt``: -1 on the aggregate rows above; with ``per_prompt`` (default) every
    per-prompt metric also gets one row per prompt ``0..n-1`` under the same name (0/1
    correctness for ``acc_*``, the prompt's KL / TV / overlap / order std / SimAOU cosine; for
    ``rec2ftp`` one 0/1 row per prompt that zero-shot gets wrong and GD right: whether ICL also
    gets it right). ``icl_vs_gd_stats`` turns them into intervals and paired tests.
    """

    gd = gd or GDConfig()
    card = getattr(model, "zoo_card", None) or getattr(model, "card", None) or {}
    name = (model_name or (card.get("name") if isinstance(card, dict) else None)
            or getattr(getattr(model, "cfg", None), "model_name", None) or default_model_name(model))
    tuner = FineTuner(model, gd)
    online = FineTuner(model, GDConfig(**{**gd.to_dict(), "batching": "online"})) if gd_online else None
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for k in ks:
            batch = _prompts_for(prompts, k, seed, n_prompts)
            if isinstance(batch, PromptBatch) and batch.target is None:
                raise ICLvsGDError("prompts need batch.target (the correct label) for accuracy")
            base = {"model": name, "task": task_name or str(batch.meta.get("task", "prompts")), "k": k,
                    "seed": seed, "n_prompts": batch.batch_size}
            rows += _compare_one(model, batch, tuner, online, base, topk=topk, n_perms=n_perms,
                                 n_order_prompts=n_order_prompts, progress=progress, per_prompt=per_prompt)
    df = pd.DataFrame(rows)
    settings = {f"gd_{key}": val for key, val in gd.to_dict().items()}
    for key, val in settings.items():
        df[key] = val if val is not None else -1
    df["gd_trainable_params"] = tuner.n_trainable
    for key, val in provenance({"ks": list(ks), "seeds": list(seeds), "n_prompts": n_prompts,
                                "n_perms": n_perms, "topk": topk, **settings, "model": name}).items():
        df[key] = val
    return df


def _compare_one(model: HookedModel, batch: PromptBatch, tuner: Any, online: Any, base: dict[str, Any],
                 topk: int, n_perms: int, n_order_prompts: int, progress: bool,
                 per_prompt: bool) -> list[dict[str, Any]]:
    """The rows of one (k, seed): zero-shot, ICL and GD read-outs of every prompt, compared."""
    n_layers, n, seed = int(model.cfg.n_layers), batch.batch_size, int(base["seed"])
    zs_batch = batch.zero_shot()
    lg_icl, h_icl = _readout_and_attn(model, batch, n_layers)
    lg_zs, h_zs = _readout_and_attn(model, zs_batch, n_layers)
    lg_gd, h_gd, gd_loss = [], [], []
    for b in range(n):
        tuned = tuner.tune(batch, b)
        lg, h = _readout_and_attn(tuned, zs_batch.select([b]), n_layers)
        lg_gd.append(lg)
        h_gd.append(h)
        gd_loss.append(tuner.last_losses[-1] if tuner.last_losses else float("nan"))
        if progress:
            print(f"  k={base['k']} seed={seed} prompt {b + 1}/{n} gd loss {gd_loss[-1]:.3f}", flush=True)
    lp_icl, ok_icl = _scores(lg_icl, batch)
    lp_zs, ok_zs = _scores(lg_zs, zs_batch)
    lp_gd, ok_gd = _scores(torch.cat(lg_gd), zs_batch)
    m_ord = min(n_order_prompts, n)
    order = _order_sensitivity(model, batch.select(slice(0, m_ord)), tuner, online,
                               zs_batch.select(slice(0, m_ord)), n_perms, seed, per_prompt=True)
    per = {"acc_zs": ok_zs.float(), "acc_icl": ok_icl.float(), "acc_gd": ok_gd.float(),
           **_distribution_metrics(lp_icl, lp_zs, lp_gd, topk),
           **{key: torch.tensor(v) for key, v in order.items()}}
    metrics = {m: float(v.float().mean()) for m, v in per.items()}
    metrics.update({key: float(np.mean(v)) for key, v in order.items()})
    metrics.update({"rec2ftp": rec2ftp(ok_zs, ok_icl, ok_gd), "n_gd_fixes": float((~ok_zs & ok_gd).sum()),
                    "gd_final_loss": float(np.nanmean(gd_loss))})
    rows = [{**base, "metric": m, "value": v, "layer": -1, "prompt": -1} for m, v in metrics.items()]
    sim, rnd = simaou(h_zs, h_icl, torch.cat(h_gd), seed=seed, per_prompt=True)
    for l in range(n_layers):
        rows.append({**base, "metric": "simaou", "value": float(sim[:, l].mean()), "layer": l, "prompt": -1})
        rows.append({**base, "metric": "simaou_random", "value": float(rnd[:, l].mean()), "layer": l, "prompt": -1})
    if per_prompt:
        rows += _per_prompt_rows(base, per, ok_zs, ok_icl, ok_gd, sim, rnd)
    return rows


def _distribution_metrics(lp_icl: Tensor, lp_zs: Tensor, lp_gd: Tensor, topk: int) -> dict[str, Tensor]:
    """Per-prompt agreement of the ICL, zero-shot and GD read-out distributions (log-probs in)."""
    p_icl, p_zs, p_gd = lp_icl.exp(), lp_zs.exp(), lp_gd.exp()
    return {"topk_overlap": topk_overlap(p_icl, p_gd, topk), "topk_overlap_icl_zs": topk_overlap(p_icl, p_zs, topk),
            "kl_icl_gd": kl_divergence(lp_icl, lp_gd), "kl_gd_icl": kl_divergence(lp_gd, lp_icl),
            "kl_icl_zs": kl_divergence(lp_icl, lp_zs), "kl_gd_zs": kl_divergence(lp_gd, lp_zs),
            "tv_icl_gd": total_variation(p_icl, p_gd), "tv_icl_zs": total_variation(p_icl, p_zs)}


def _per_prompt_rows(base: dict[str, Any], per: dict[str, Tensor], ok_zs: Tensor, ok_icl: Tensor, ok_gd: Tensor,
                     sim: Tensor, rnd: Tensor) -> list[dict[str, Any]]:
    """One row per prompt for every per-prompt metric (``prompt`` = 0..n-1)."""
    rows = []
    for m, vals in per.items():
        rows += [{**base, "metric": m, "value": float(v), "layer": -1, "prompt": b} for b, v in enumerate(vals.tolist())]
    fixes = (~ok_zs & ok_gd).nonzero().flatten().tolist()  # rec2ftp's denominator
    rows += [{**base, "metric": "rec2ftp", "value": float(ok_icl[b]), "layer": -1, "prompt": b} for b in fixes]
    for l in range(sim.shape[1]):
        for b in range(sim.shape[0]):
            rows.append({**base, "metric": "simaou", "value": float(sim[b, l]), "layer": l, "prompt": b})
            rows.append({**base, "metric": "simaou_random", "value": float(rnd[b, l]), "layer": l, "prompt": b})
    return rows


def _order_sensitivity(model: HookedModel, batch: "PromptBatch", tuner: Any, online: Any,
                       zs_batch: "PromptBatch", n_perms: int, seed: int,
                       per_prompt: bool = False) -> dict[str, Any]:
    """Mean over prompts of the std over demonstration orders of the tracked probabilities
    (``per_prompt``: the list of every prompt's std instead)."""

    k = batch.n_demos
    if k < 2 or n_perms < 2:
        return {}
    g = torch.Generator().manual_seed(seed + 99)
    perms = [list(range(k))] + [torch.randperm(k, generator=g).tolist() for _ in range(n_perms - 1)]
    out: dict[str, list[float]] = {"order_std_icl": [], "order_std_gd": [], "order_std_sgd": []}
    for b in range(batch.batch_size):
        with torch.no_grad():
            icl = readout_logits(model, PromptBatch.concat([batch.select([b]).permute_demos([p]) for p in perms]).trim())
        ref = icl[0].topk(10).indices
        row = batch.select([b])

        def track(lg: Tensor, row: PromptBatch = row, ref: Tensor = ref) -> Tensor:
            return _order_probs(lg.float().log_softmax(-1), row, ref)

        out["order_std_icl"].append(float(track(icl).std(0, unbiased=False).mean()))
        zs_row = zs_batch.select([b]).trim()
        for key, ft in (("order_std_gd", tuner), ("order_std_sgd", online)):
            if ft is None:
                continue
            lgs = []
            for p in perms:
                tuned = ft.tune(batch, b, order=p)
                with torch.no_grad():
                    lgs.append(readout_logits(tuned, zs_row))
            out[key].append(float(track(torch.cat(lgs)).std(0, unbiased=False).mean()))
    if per_prompt:
        return {key: v for key, v in out.items() if v}
    return {key: float(np.mean(v)) for key, v in out.items() if v}


def summarize_lm(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, task, k): the headline metrics, seeds averaged, SimAOU averaged over layers."""
    if "prompt" in df.columns:
        df = df[df["prompt"] < 0]
    flat = df[df["layer"] < 0].pivot_table(index=["model", "task", "k"], columns="metric",
                                           values="value", aggfunc="mean")
    lay = df[df["layer"] >= 0].pivot_table(index=["model", "task", "k"], columns="metric",
                                           values="value", aggfunc="mean")
    return flat.join(lay).reset_index()


# ====================================================================== statistics
LM_PAIRS: tuple[tuple[str, str], ...] = (
    ("acc_icl", "acc_zs"), ("acc_gd", "acc_zs"), ("acc_icl", "acc_gd"),
    ("kl_icl_gd", "kl_icl_zs"), ("tv_icl_gd", "tv_icl_zs"), ("topk_overlap", "topk_overlap_icl_zs"),
    ("simaou", "simaou_random"),
    ("order_std_icl", "order_std_gd"), ("order_std_icl", "order_std_sgd"),
)
"""Language-model comparisons (condition, control), paired on the same prompts: ICL and GD
against zero-shot and each other (accuracy, McNemar); the ICL-GD distance against the ICL-zero-
shot distance (is ICL's output closer to GD's than to zero-shot's?); SimAOU against its random
baseline (per layer); order sensitivity of ICL against GD and online SGD."""

BINARY_METRICS: tuple[str, ...] = ("acc_zs", "acc_icl", "acc_gd", "rec2ftp")
"""Metrics whose per-prompt value is a 0/1 outcome (Wilson intervals); every other is continuous."""

LINREG_PAIRS: tuple[tuple[str, str], ...] = (("sens_cos", "ls_sens_cos"), ("preds_diff", "ls_preds_diff"))
"""Linear-regression comparisons besides the model's error against every baseline's: agreement
with GD against agreement with least squares (per-task sensitivity cosine, prediction
difference); ``icl_vs_gd_stats`` adds the model's order sensitivity against GD's and SGD's."""


def icl_vs_gd_stats(table: pd.DataFrame, level: float = 0.95, alpha: float = 0.05) -> "StatsTables":
    """Intervals and paired tests for an ICL-vs-GD table (``compare_icl_gd`` output, the
    ``icl_vs_gd`` sweep analysis's rows, or ``linreg_task_rows`` for linear regression).

    Reads the per-prompt rows (``prompt >= 0``; for linear regression a "prompt" is a task); the
    resampling unit is (seed, prompt), so seeds pool. Returns ``probes.stats.StatsTables``:

    - ``estimates``: ``model, task, k, metric, layer`` (-1 unless per layer) and ``n, value,
      ci_low, ci_high`` (Wilson for the 0/1 ``BINARY_METRICS``, else BCa);
    - ``comparisons``: ``model, task, k, layer, condition, control`` and ``n, value,
      control_value, effect, effect_ci_low, effect_ci_high, p_value, q_value, mde,
      p_discordant, test, verdict``; effect = condition - control on the same prompts. Pairs:
      ``LM_PAIRS`` for language models; for linear regression ``err_model`` against every
      ``err_<baseline>`` and ``LINREG_PAIRS``. q-values are Benjamini-Hochberg over one
      (model, task): every metric and k of the run.
    """

    per = stats.with_unit_columns(table)
    for col, val in (("model", ""), ("task", ""), ("k", -1), ("layer", -1)):
        if col not in per.columns:
            per = per.assign(**{col: val})
    per = per.assign(layer=per["layer"].fillna(-1).astype(int), binary=per["metric"].isin(BINARY_METRICS))
    est = stats.summarize(per, ["model", "task", "k", "metric", "layer"], level=level, binary="binary")
    parts = []
    for (model, task), run in per.groupby(["model", "task"], sort=False):
        metrics = set(run["metric"])
        if "err_model" in metrics:
            pairs = [("err_model", m) for m in sorted(metrics) if m.startswith("err_") and m not in ("err_model", "err_ref")]
            pairs += [p for p in LINREG_PAIRS if set(p) <= metrics]
            pairs += [("order_std_model", m) for m in sorted(metrics)
                      if m.startswith("order_std_") and m != "order_std_model"]
        else:
            pairs = [p for p in LM_PAIRS if set(p) <= metrics]
        if not pairs:
            continue
        cmp = stats.compare(run, pairs, by=["k", "layer"], condition="metric", level=level, alpha=alpha)
        parts.append(cmp.rename(columns={"metric": "condition"}).assign(model=model, task=task))
    cols = ["model", "task", "k", "layer", "condition", "control", *stats.CMP_COLUMNS]
    cmp = pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
    return stats.StatsTables(est, cmp)


# ====================================================================== figures
def fig_order_sensitivity(df: pd.DataFrame, title: str = "Order sensitivity"):
    """Bar chart of the spread over demonstration orders per k and method.

    Accepts ``linreg_order_sensitivity`` output (``method, order_std``) or ``compare_icl_gd``
    output (metrics ``order_std_*``)."""

    if "method" not in df.columns:
        df = df[df["metric"].str.startswith("order_std_")].copy()
        df["method"] = df["metric"].str.removeprefix("order_std_")
        df = df.rename(columns={"value": "order_std"})

    fig = go.Figure()
    for method, part in df.groupby("method", sort=False):
        part = stats.summarize_rows(part.rename(columns={"order_std": "value"}), ["k"]).sort_values("k")
        fig.add_trace(go.Bar(x=part["k"].astype(str), y=part["value"], name=str(method), customdata=part["n"],
                             error_y=stats.error_bars(part["value"], part["ci_low"], part["ci_high"])))
    fig.update_layout(title=f"{title} (error bars: 95% CI)", xaxis_title="k (demonstrations)",
                      yaxis_title="std of prediction over orders", barmode="group",
                      template="plotly_white")
    return fig


def fig_simaou(df: pd.DataFrame, title: str = "SimAOU per layer"):
    """SimAOU and its random baseline per layer, one line per k (from ``compare_icl_gd``), with
    95% CIs over prompts (seeds pooled; over seeds where the table has no per-prompt rows)."""


    fig = go.Figure()
    for metric, dash in (("simaou", "solid"), ("simaou_random", "dot")):
        part = df[df["metric"] == metric]
        for k, sub in part.groupby("k"):
            sub = stats.summarize_rows(sub, ["layer"]).sort_values("layer")
            fig.add_trace(go.Scatter(x=sub["layer"], y=sub["value"], name=f"{metric} k={k}",
                                     mode="lines+markers", line={"dash": dash}, customdata=sub["n"],
                                     error_y=stats.error_bars(sub["value"], sub["ci_low"], sub["ci_high"])))
    fig.update_layout(title=f"{title} (error bars: 95% CI)", xaxis_title="layer", yaxis_title="cosine",
                      template="plotly_white")
    return fig
