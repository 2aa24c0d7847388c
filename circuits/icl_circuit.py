"""The summarize -> semantics-merge -> retrieve-and-copy ICL circuit (Cho et al. 2024, ICLR 2025).

On any model and any PromptBatch with demonstrations and a candidate label set:

1. Summarize (``step="summarize"``): per layer, accuracy of a centroid classifier (nearest class
   mean, two-fold over the prompts) on the residual stream (``hook_resid_post``) at the query's
   last text token (``metric="centroid_acc:x_q"``) and at its forerunner s_q (``"centroid_acc:s_q"``).
2. Semantics merge (``step="merge"``): A[y_i -> s_i] for every head; per layer, the mean number of
   heads (over prompts and demonstrations) whose weight exceeds 5/n_tokens (``n_heads:correct``) and
   the copy magnitude, the largest head-mean weight (``copy_magnitude:correct``); again with every
   demonstration label replaced by a wrong candidate (``...:wrong``).
3. Retrieve and copy (``step="retrieve"``): per head, induction magnitude M = sum_i A[s_q -> y_i]
   and correctness C = sum_{y_i = target} - sum_{y_i != target} A[s_q -> y_i] (means over prompts);
   the label distribution p(c) ~ sum_{y_i = c} A[s_q -> y_i] of the best head (largest C): its mean
   p(target) and accuracy.
4. Ablations (``step="ablation"``): attention knockouts on a window of layers (all heads), each
   beside its matched random control; accuracy among the candidates, plus unablated and zero-shot.

``circuit_table`` runs all four on one batch per seed and returns one tidy pandas table: columns
step, layer, head, metric, value, prompt, sd, window, model, task, k, seed, n_prompts (layer/head -1
where a row is not per layer/head). Rows with ``prompt = -1`` are means over the unit's prompts;
rows with ``prompt >= 0`` hold one prompt's value (0/1 outcomes of the ablations and of the
centroid probe, per-layer merge counts), which ``circuit_stats`` pools over seeds to give
intervals, paired tests against the matched controls, BH q-values and verdicts (``probes.stats``).
Per-head means (merge A, retrieve M and C) carry their spread over prompts in ``sd`` instead,
which ``circuit_stats`` pools analytically (a full per-prompt table for 270 heads would be large).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from circuits.interventions import Intervention, InterventionError, knockout, random_control
from circuits.patching import correct_metric
from circuits.sweeps import layer_window, readout_forward, sweep
from probes import stats
from probes.prompt import PromptBatch
from probes.representation import CentroidProbe

COLUMNS = ["step", "layer", "head", "metric", "value", "prompt", "sd", "window", "model", "task", "k", "seed",
           "n_prompts"]

# name -> (query role, key role, pairing), Cho et al. Table 1 lines 2-5 and Table 2.
ABLATIONS: dict[str, tuple[str, str, str]] = {
    "xi_to_si": ("forerunner", "demo_text", "same_demo"),  # s_i <- its own x_i
    "xq_to_sq": ("readout", "query", "all"),  # s_q <- x_q and itself
    "si_to_yi": ("label", "forerunner", "same_demo"),  # y_i <- s_i
    "yi_to_sq": ("readout", "label", "all"),  # s_q <- every y_i
    "si_to_sj": ("forerunner", "forerunner", "demo_le"),  # s_j <- s_i, i <= j
}


class CircuitError(InterventionError):
    """A batch or model that the circuit analysis cannot use; the message says what is missing."""


def _check(batch: PromptBatch) -> None:
    if batch.n_demos == 0:
        raise CircuitError("the circuit needs demonstrations: build the batch with k >= 1")
    if batch.target is None or (batch.target < 0).any():
        raise CircuitError("the circuit needs batch.target (the correct read-out token) on every prompt")


# ---------------------------------------------------------------------- capture
def _capture_rows(model: Any, batch: PromptBatch, chunk: int = 16) -> dict[str, Tensor]:
    """Residual streams at x_q's last token and s_q, and the attention rows of y_i and s_q.

    Returns resid_xq / resid_sq [L, B, d], label_rows [L, B, H, K, T], readout_rows [L, B, H, T].
    Only those rows are kept (gathered inside the hooks).
    """
    batch = batch.trim()
    L = int(model.cfg.n_layers)
    out: dict[str, list[Tensor]] = {"resid_xq": [], "resid_sq": [], "label_rows": [], "readout_rows": []}
    for part in batch.batches(chunk):
        part = part.trim()
        B = part.batch_size
        rows = torch.arange(B)
        xq = (part.query_text[:, 1] - 1).clamp(min=0)
        lab = part.label.clamp(min=0)
        store: dict[str, list[Any]] = {k: [None] * L for k in out}

        def resid_hook(l: int) -> Callable[..., None]:
            def fn(x: Tensor, hook: Any) -> None:
                store["resid_xq"][l] = x[rows, xq].detach().float()
                store["resid_sq"][l] = x[rows, part.readout].detach().float()
            return fn

        def pattern_hook(l: int) -> Callable[..., None]:
            def fn(p: Tensor, hook: Any) -> None:
                idx = lab[:, None, :, None].expand(B, p.shape[1], lab.shape[1], p.shape[-1])
                store["label_rows"][l] = p.gather(2, idx).detach().float()
                store["readout_rows"][l] = p[rows, :, part.readout].detach().float()
            return fn

        hooks = [(f"blocks.{l}.hook_resid_post", resid_hook(l)) for l in range(L)]
        hooks += [(f"blocks.{l}.attn.hook_pattern", pattern_hook(l)) for l in range(L)]
        with torch.no_grad():
            readout_forward(model, part.tokens, part.readout, hooks)
        T = batch.seq_len
        for k in out:
            t = torch.stack(store[k])
            if k in ("label_rows", "readout_rows") and t.shape[-1] < T:
                t = torch.nn.functional.pad(t, (0, T - t.shape[-1]))
            out[k].append(t)
    return {k: torch.cat(v, dim=1) for k, v in out.items()}


# ---------------------------------------------------------------------- step 1
def stratified_folds(y: Tensor, folds: int = 2, seed: int = 0) -> Tensor:
    """Fold index of each item, dealt round-robin within each class after a seeded shuffle, so every
    fold holds each class in proportion. (Plain random folds make held-out accuracy of a class-mean
    classifier fall *below* chance when there is no signal: a class that is over-represented in the
    test fold is under-represented, and so noisier, in the training fold.)"""
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(y), dtype=torch.long)
    offset = 0
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        fold[idx] = (torch.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return fold


def centroid_correct(x: Float[Tensor, "n d"], y: Tensor, folds: int = 2, seed: int = 0) -> Tensor:
    """Per-prompt 0/1 outcome of Cho et al.'s centroid classifier (``probes.representation``'s
    nearest class mean), cross-validated over stratified folds: each fold is scored by the class
    means of the others. A class absent from a training fold cannot be predicted there."""

    fold = stratified_folds(y, folds, seed)
    out = torch.zeros(len(y))
    for f in range(folds):
        test, train = fold == f, fold != f
        if not test.any():
            continue
        if torch.unique(y[train]).numel() < 2:
            raise ValueError("a training fold with a single class: no probe to fit")
        out[test] = (CentroidProbe().fit(x[train], y[train]).predict(x[test]) == y[test]).float()
    return out


def centroid_accuracy(x: Float[Tensor, "n d"], y: Tensor, folds: int = 2, seed: int = 0) -> float:
    """Mean of ``centroid_correct``: held-out accuracy of the centroid classifier."""
    return float(centroid_correct(x, y, folds, seed).mean())


def _prompt_rows(base: dict, values: Tensor) -> list[dict]:
    """One aggregate row (prompt -1, the mean) and one row per prompt."""
    v = values.detach().float().cpu()
    rows = [dict(base, value=float(v.mean()), prompt=-1)]
    rows += [dict(base, value=float(x), prompt=i) for i, x in enumerate(v.tolist())]
    return rows


def summarize_rows(cap: Mapping[str, Tensor], batch: PromptBatch, seed: int = 0, n_shuffles: int = 16) -> list[dict]:
    """Centroid-probe accuracy per layer at x_q's last token and s_q, per prompt and on average.

    ``centroid_acc:*`` predicts the query's class (``query_class``, else the target label);
    ``centroid_acc_label:*`` predicts the target label token (differs when the class -> label map
    changes per prompt, as in the zoo classify task). ``*_null:*`` is each prompt's accuracy with
    the labels shuffled across prompts, averaged over ``n_shuffles`` shuffles: the chance level of
    this class mix and fold split (for icl-classify's 16 query classes about 1/16, not the 1/8 of
    its 8 label tokens), measured on the same prompts, so ``circuit_stats`` tests each layer
    against it with a paired test.
    """
    has_class = batch.query_class is not None and bool((batch.query_class >= 0).all())
    wanted = {"centroid_acc": batch.query_class if has_class else batch.target}
    if has_class:
        wanted["centroid_acc_label"] = batch.target
    # a class needs at least two prompts to have a centroid and a test point (not so for
    # open-vocabulary tasks, where every answer is its own class): skip those targets
    targets = {m: y for m, y in wanted.items()
               if y is not None and y.unique().numel() >= 2 and int(y.unique(return_counts=True)[1].max()) >= 2}
    g = torch.Generator().manual_seed(10_000 + seed)
    rows = []
    for metric, y in targets.items():
        shuffles = [y[torch.randperm(len(y), generator=g)] for _ in range(n_shuffles)]
        for name, key in (("x_q", "resid_xq"), ("s_q", "resid_sq")):
            for l in range(cap[key].shape[0]):
                try:
                    ok = centroid_correct(cap[key][l], y, seed=seed)
                    null = torch.stack([centroid_correct(cap[key][l], ys, seed=seed) for ys in shuffles]).mean(0)
                except ValueError:  # a training fold with a single class: no probe to fit
                    continue
                base = dict(step="summarize", layer=l, head=-1)
                rows += _prompt_rows(dict(base, metric=f"{metric}:{name}"), ok)
                rows += _prompt_rows(dict(base, metric=f"{metric}_null:{name}"), null)
    return rows


# ---------------------------------------------------------------------- step 2
def wrong_label_batch(batch: PromptBatch, seed: int = 0) -> PromptBatch:
    """The same prompts with every demonstration label replaced by a different candidate."""
    _check(batch)
    g = torch.Generator().manual_seed(seed)
    toks = batch.tokens.clone()
    for b in range(batch.batch_size):
        if batch.candidates is not None:
            cands = [int(c) for c in batch.candidates[b] if c >= 0]
        else:  # open vocabulary: the other demonstrations' labels of this prompt
            cands = sorted({int(t) for t in batch.label_tokens[b] if t >= 0})
        if len(cands) < 2:
            raise CircuitError("wrong labels need at least two distinct labels (candidates or demo labels) per prompt")
        for i in range(batch.n_demos):
            p = int(batch.label[b, i])
            if p < 0:
                continue
            others = [c for c in cands if c != int(toks[b, p])]
            toks[b, p] = others[int(torch.randint(len(others), (1,), generator=g))]
    return replace(batch, tokens=toks)


def merge_rows(label_rows: Tensor, batch: PromptBatch, tag: str) -> list[dict]:
    """A[y_i -> s_i] per head, and per layer the head count above 5/n_tokens and the copy magnitude."""
    L, B, H, K, T = label_rows.shape
    s = batch.forerunner.clamp(min=0)
    a = label_rows.gather(-1, s[None, :, None, :, None].expand(L, B, H, K, 1)).squeeze(-1)  # [L,B,H,K]
    valid = batch.demo_mask[None, :, None, :].float()
    thresh = (5.0 / batch.lengths.float())[None, :, None, None]
    above = ((a > thresh).float() * valid).sum(2)  # [L, B, K] heads above threshold
    per_prompt_heads = above.sum(2) / valid[0, :, 0].sum(-1).clamp(min=1)  # [L, B]
    per_prompt_a = (a * valid).sum(3) / valid.sum(3).clamp(min=1)  # [L, B, H]: mean over demos
    head_mean, head_sd = per_prompt_a.mean(1), per_prompt_a.std(1)  # [L, H]
    rows = []
    for l in range(L):
        rows += _prompt_rows(dict(step="merge", layer=l, head=-1, metric=f"n_heads:{tag}"), per_prompt_heads[l])
        rows.append(dict(step="merge", layer=l, head=-1, metric=f"copy_magnitude:{tag}",
                         value=float(head_mean[l].max()), prompt=-1))
        for h in range(H):
            rows.append(dict(step="merge", layer=l, head=h, metric=f"A[y_i->s_i]:{tag}",
                             value=float(head_mean[l, h]), sd=float(head_sd[l, h]), prompt=-1))
    return rows


# ---------------------------------------------------------------------- step 3
def retrieve_rows(readout_rows: Tensor, batch: PromptBatch) -> list[dict]:
    """Induction magnitude M, correctness C per head; the best head's label distribution."""
    if batch.target is None:
        raise InterventionError("retrieve_rows needs batch.target (the correct read-out token)")
    L, B, H, T = readout_rows.shape
    lab = batch.label.clamp(min=0)
    a = readout_rows.gather(-1, lab[None, :, None, :].expand(L, B, H, lab.shape[1]))  # [L,B,H,K]
    valid = batch.demo_mask[None, :, None, :]
    a = a * valid
    ytok = batch.label_tokens  # [B, K]
    correct = (ytok == batch.target[:, None])[None, :, None, :]
    M_b = a.sum(-1)  # [L, B, H]
    C_b = (torch.where(correct, a, -a) * valid).sum(-1)
    M, C = M_b.mean(1), C_b.mean(1)  # [L, H]
    M_sd, C_sd = M_b.std(1), C_b.std(1)
    rows = []
    for l in range(L):
        for h in range(H):
            rows.append(dict(step="retrieve", layer=l, head=h, metric="M", value=float(M[l, h]),
                             sd=float(M_sd[l, h]), prompt=-1))
            rows.append(dict(step="retrieve", layer=l, head=h, metric="C", value=float(C[l, h]),
                             sd=float(C_sd[l, h]), prompt=-1))
    if batch.candidates is None:  # open vocabulary: no label distribution over a label set
        return rows
    flat = int(C.flatten().argmax())
    bl, bh = flat // H, flat % H
    cand = batch.candidates  # [B, n_cand]
    # p(c) ~ sum_{y_i = c} A[s_q -> y_i] for the best head
    match = (ytok[:, :, None] == cand[:, None, :]) & batch.demo_mask[:, :, None]  # [B, K, n_cand]
    mass = (a[bl, :, bh, :, None] * match).sum(1)  # [B, n_cand]
    p = mass / mass.sum(-1, keepdim=True).clamp(min=1e-12)
    is_t = cand == batch.target[:, None]
    p_t = (p * is_t).sum(-1)
    pred_ok = is_t.gather(1, p.argmax(-1, keepdim=True)).squeeze(1) & (mass.sum(-1) > 0)
    best = dict(step="retrieve", layer=bl, head=bh)
    rows += _prompt_rows(dict(best, metric="best_head_p_target"), p_t)
    rows += _prompt_rows(dict(best, metric="best_head_accuracy"), pred_ok.float())
    rows.append(dict(step="retrieve", layer=-1, head=-1, metric="chance",
                     value=float((1.0 / (cand >= 0).sum(-1).float()).mean()), prompt=-1))
    return rows


# ---------------------------------------------------------------------- step 4
def ablation_interventions(layers: Sequence[int], seed: int = 0,
                           names: Sequence[str] = tuple(ABLATIONS)) -> list[Intervention]:
    """Each named knockout on ``layers`` (all heads), followed by its random control."""
    out = []
    for name in names:
        q, k, pairing = ABLATIONS[name]
        iv = knockout(q, k, layers, pairing=pairing, name=name)
        out += [iv, random_control(iv, seed=seed)]
    return out


def ablation_rows(model: Any, batch: PromptBatch, layers: Sequence[int], seed: int = 0,
                  zero_shot: PromptBatch | None = None) -> list[dict]:
    """Accuracy per prompt (0/1) and on average: unablated, zero-shot, each knockout and its control."""
    ivs = ablation_interventions(layers, seed)
    with torch.no_grad():
        outcomes = sweep(model, batch, ivs, correct_metric, max_rows=256)  # [n_iv, B]
        base = correct_metric(readout_forward(model, batch.trim().tokens, batch.readout), batch)
        zs = zero_shot if zero_shot is not None else batch.zero_shot()
        zacc = correct_metric(readout_forward(model, zs.trim().tokens, zs.readout), zs)
    row = dict(step="ablation", layer=-1, head=-1)
    rows = _prompt_rows(dict(row, metric="acc:unablated"), base) + _prompt_rows(dict(row, metric="acc:zero_shot"), zacc)
    for iv, acc in zip(ivs, outcomes):
        rows += _prompt_rows(dict(row, metric=f"acc:{iv.name.replace(' (random)', ':random')}"), acc)
    return rows


# ---------------------------------------------------------------------- the whole circuit
def run_circuit(model: Any, batch: PromptBatch, seed: int = 0, window: tuple[float, float] = (0.0, 0.25),
                layers: Sequence[int] | None = None, zero_shot: PromptBatch | None = None,
                steps: Sequence[str] = ("summarize", "merge", "retrieve", "ablation")) -> pd.DataFrame:
    """All steps on one batch; ``layers`` overrides the fractional ``window`` of ablated layers."""
    _check(batch)
    model.eval()
    batch = batch.trim()
    abl_layers = list(layers) if layers is not None else layer_window(int(model.cfg.n_layers), *window)
    win = f"{min(abl_layers)}-{max(abl_layers)}"
    rows: list[dict] = []
    if any(s in steps for s in ("summarize", "merge", "retrieve")):
        cap = _capture_rows(model, batch)
        if "summarize" in steps:
            rows += summarize_rows(cap, batch, seed)
        if "merge" in steps:
            rows += merge_rows(cap["label_rows"], batch, "correct")
            wrong = wrong_label_batch(batch, seed)
            rows += merge_rows(_capture_rows(model, wrong)["label_rows"], wrong, "wrong")
        if "retrieve" in steps:
            rows += retrieve_rows(cap["readout_rows"], batch)
    if "ablation" in steps:
        rows += ablation_rows(model, batch, abl_layers, seed, zero_shot)
    df = pd.DataFrame(rows)
    df["prompt"] = df["prompt"].fillna(-1).astype(int) if "prompt" in df else -1
    df["sd"] = df["sd"].astype(float) if "sd" in df else float("nan")
    df["window"] = win
    df["seed"] = seed
    df["n_prompts"] = batch.batch_size
    df["k"] = batch.n_demos
    df["model"] = batch.meta.get("model", "")
    df["task"] = batch.meta.get("task", "")
    return df


def circuit_table(model: Any, batches: Mapping[int, PromptBatch], model_name: str = "", task: str = "",
                  zero_shot: Mapping[int, PromptBatch] | None = None, **kw: Any) -> pd.DataFrame:
    """``run_circuit`` for each seed's batch, stacked into one tidy table with provenance."""
    parts = []
    for seed, batch in batches.items():
        df = run_circuit(model, batch, seed=seed, zero_shot=None if zero_shot is None else zero_shot.get(seed), **kw)
        df["model"] = model_name or df["model"]
        df["task"] = task or df["task"]
        parts.append(df)
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds of every (step, layer, head, metric) of the per-seed means.

    The seed spread is a secondary figure: ``circuit_stats`` gives the intervals over prompts."""
    agg = table[table["prompt"] < 0] if "prompt" in table else table
    g = agg.groupby(["model", "task", "step", "layer", "head", "metric", "window", "k"], sort=False)["value"]
    out = g.agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["n_prompts"] = table.groupby(["model", "task"])["n_prompts"].transform("first").iloc[0] if len(table) else 0
    return out


UNIT = ["model", "task", "k"]
"""One circuit run: the family over which q-values are computed."""


@dataclass
class CircuitStats:
    """``estimates``: every measured quantity with n, value, ci_low, ci_high (pooled over seeds);
    ``comparisons``: each knockout against its matched random control per window, unablated
    against zero-shot (family ``ablation``), and each layer's centroid probe against its shuffled-
    label null (family ``summarize``), with effect, interval, p, BH q within (family, model, task,
    k), MDE and verdict."""

    estimates: pd.DataFrame
    comparisons: pd.DataFrame


def _per_prompt(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["prompt"] >= 0]


def _estimates(table: pd.DataFrame, level: float) -> pd.DataFrame:
    by = [*UNIT, "window", "step", "layer", "head", "metric"]
    parts = [stats.summarize(_per_prompt(table), by, level=level)]
    heads = table[(table["prompt"] < 0) & table["sd"].notna()]
    rows = []
    for key, g in heads.groupby(by, sort=False):
        est = stats.pooled_estimate(g["value"], g["sd"], g["n_prompts"], level)
        rows.append({**dict(zip(by, key)), **est.as_dict()})
    parts.append(pd.DataFrame(rows, columns=[*by, *stats.EST_COLUMNS]))
    return pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) \
        else pd.DataFrame(columns=[*by, *stats.EST_COLUMNS])


def _ablation_family(run: pd.DataFrame, level: float, alpha: float) -> pd.DataFrame:
    abl = _per_prompt(run[run.step == "ablation"]).assign(condition=lambda d: d.metric.str.removeprefix("acc:"))
    if abl.empty:
        return pd.DataFrame()
    names = [n for n in ABLATIONS if n in set(abl.condition)]
    parts = []
    first = abl.window.iloc[0]
    for win, w in abl.groupby("window", sort=False):
        pairs = [(n, f"{n}:random") for n in names] + ([("unablated", "zero_shot")] if win == first else [])
        parts.append(stats.compare(w, pairs, condition="condition", level=level, alpha=alpha).assign(window=win))
    out = pd.concat(parts, ignore_index=True)
    return stats.add_q_and_verdicts(out, alpha).assign(family="ablation")


def _summarize_family(run: pd.DataFrame, level: float, alpha: float) -> pd.DataFrame:
    summ = _per_prompt(run[run.step == "summarize"])
    if summ.empty:
        return pd.DataFrame()
    summ = summ.assign(condition=summ.metric + "@" + summ.layer.astype(str))
    real = [m for m in summ.metric.unique() if "_null:" not in m]
    pairs = [(f"{m}@{l}", f"{m.replace(':', '_null:', 1)}@{l}")
             for m in real for l in sorted(summ[summ.metric == m].layer.unique())]
    out = stats.compare(summ[summ.window == summ.window.iloc[0]], pairs, condition="condition", level=level,
                        alpha=alpha)
    site = out.condition.str.split("@", expand=True)
    return out.assign(condition=site[0], layer=site[1].astype(int), family="summarize")


def circuit_stats(table: pd.DataFrame, level: float = stats.LEVEL, alpha: float = stats.ALPHA) -> CircuitStats:
    """Intervals, paired tests and verdicts for a ``circuit_table`` (one or more runs and seeds).

    Seeds pool into the prompt sample (resampling unit: (seed, prompt)). Knockout vs its random
    control and unablated vs zero-shot are paired on the same prompts (McNemar); q-values are
    Benjamini-Hochberg over each run's family (5 knockouts x windows + unablated vs zero-shot).
    """
    if "prompt" not in table:
        raise CircuitError("this circuit table has no per-prompt rows (it predates the statistics layer): "
                           "recompute it with circuit_table or `iclwb sweep run`")
    if "sd" not in table:  # a store query drops all-NaN columns
        table = table.assign(sd=float("nan"))
    cmp = []
    for key, run in table.groupby(UNIT, sort=False):
        for fam in (_ablation_family(run, level, alpha), _summarize_family(run, level, alpha)):
            if len(fam):
                cmp.append(fam.assign(**dict(zip(UNIT, key))))
    comparisons = pd.concat(cmp, ignore_index=True) if cmp else pd.DataFrame()
    return CircuitStats(_estimates(table, level), comparisons)


def ablation_summary(table: pd.DataFrame, level: float = stats.LEVEL, alpha: float = stats.ALPHA) -> pd.DataFrame:
    """One row per (run, window, ablation): pooled accuracy with its interval beside the random
    control's, the paired effect (knockout - control; for ``zero_shot``: zero-shot - unablated),
    p, q, MDE and verdict. Also ``acc_mean`` / ``random_mean`` (the pooled accuracies), their
    spread over seeds ``acc_std`` / ``random_std``, ``n_seeds`` and ``n_prompts`` per seed."""
    abl = table[table.step == "ablation"]
    if abl.empty:
        return pd.DataFrame()
    cs = circuit_stats(abl, level, alpha)
    est = cs.estimates.set_index([*UNIT, "window", "metric"])
    cmp = cs.comparisons
    seed_means = abl[abl["prompt"] < 0].groupby([*UNIT, "window", "metric"])["value"].agg(["std", "count"])
    rows = []
    for (model, task, k, win), part in abl.groupby([*UNIT, "window"], sort=False):
        for name in ["unablated", "zero_shot", *ABLATIONS]:
            key = (model, task, k, win, f"acc:{name}")
            if key not in est.index:
                continue
            e = est.loc[key]
            r = dict(model=model, task=task, k=k, ablation=name, window=win, n=int(e.n), acc_mean=e.value,
                     ci_low=e.ci_low, ci_high=e.ci_high, acc_std=seed_means.loc[key, "std"],
                     n_seeds=int(seed_means.loc[key, "count"]), n_prompts=int(part["n_prompts"].iloc[0]))
            rk = (model, task, k, win, f"acc:{name}:random")
            if rk in est.index:
                r.update(random_mean=est.loc[rk].value, random_ci_low=est.loc[rk].ci_low,
                         random_ci_high=est.loc[rk].ci_high, random_std=seed_means.loc[rk, "std"])
            c = cmp[(cmp.model == model) & (cmp.task == task) & (cmp.k == k) & (cmp.family == "ablation")
                    & (cmp.condition == ("unablated" if name == "zero_shot" else name))]
            c = c[c.window == win] if name != "zero_shot" else c
            if len(c):
                c = c.iloc[0]
                sign = -1.0 if name == "zero_shot" else 1.0
                lo, hi = sorted((sign * c.effect_ci_low, sign * c.effect_ci_high))
                r.update(effect=sign * c.effect, effect_ci_low=lo, effect_ci_high=hi, p_value=c.p_value,
                         q_value=c.q_value, mde=c.mde, verdict=c.verdict)
            rows.append(r)
    return pd.DataFrame(rows)
