"""ICL vectors study: task vectors, function vectors, in-context vectors and label-word anchors on
one model and task, as tidy DataFrames with provenance.

Every accuracy row has the columns ``model, task, k, seed, method, condition, layer, lam, split,
accuracy, n_prompts`` where ``condition`` is one of ``CONDITIONS``:

- ``zero-shot``: the query alone (``PromptBatch.zero_shot`` of the ICL prompts);
- ``ICL``: the prompts with k demonstrations;
- ``with vector``: the zero-shot prompts with the method's vector injected;
- ``with random vector``: the same injection with a random vector of the same norm.

Three disjoint prompt sets (seeds ``seed``, ``seed+1``, ``seed+2``): ``extract`` (vectors are computed
from it), ``dev`` (the layer / lambda is chosen on it) and ``eval`` (reported). ``summary_table``
gives one row per method: zero-shot, ICL, with vector and with random vector on ``eval`` at the
layer/lambda chosen on ``dev``.

Statistics: ``run_study(...)["per_prompt"]`` holds every condition's 0/1 outcome per prompt
(``per_prompt_table``); ``vectors_stats`` pairs them on the eval prompts (vector vs random vector,
zero-shot and ICL; McNemar, BH per method). The anchors table has per-prompt rows too
(``prompt`` >= 0; the aggregates have ``prompt`` = -1) for ``anchors_stats``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch

from circuits import anchors, vectors
from experiments import tasks as registry
from experiments.tasks import classify, language, suite
from probes import stats
from probes.errors import WorkbenchError
from probes.hooked import HookedModel
from probes.prompt import PromptBatch, PromptBuilder, PromptError
from probes.readout import predictions, readout_logits
from probes.stats import StatsTables

CONDITIONS: tuple[str, ...] = ("zero-shot", "ICL", "with vector", "with random vector")
METHODS: tuple[str, ...] = ("task_vector", "function_vector", "icv")
LANGUAGE_TASKS: tuple[str, ...] = ("capitals", "sentiment", "antonyms")
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)


class StudyError(WorkbenchError):
    """Bad study input (unknown task, too few prompts, ...); the message names the fix."""


@dataclass
class StudyInfo:
    """Provenance carried by every row."""

    model: str
    task: str
    k: int
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, **kw: Any) -> dict[str, Any]:
        return {"model": self.model, "task": self.task, "k": self.k, "seed": self.seed, **kw}


# ---------------------------------------------------------------------- prompts
def toy_prompts(k: int, n_prompts: int, seed: int, vocab: int = 50, n_classes: int = 3,
                text_len: int = 2) -> PromptBatch:
    """A synthetic classification task for tiny models and tests: BOS, then k demonstrations
    ``x_i ':' y_i ';'`` and a query ``x_q ':'``. Inputs are ``text_len`` tokens from [10, vocab);
    the class is (first input token) mod n_classes; label tokens are 3..3+n_classes; BOS=1, ':'=2,
    ';'=0 (also the pad id, harmless under right padding)."""
    if vocab < 10 + n_classes or n_classes < 2:
        raise StudyError("toy_prompts needs vocab >= 10 + n_classes and n_classes >= 2")
    g = torch.Generator().manual_seed(seed)
    labels = list(range(3, 3 + n_classes))
    rows = []
    for _ in range(n_prompts):
        pb = PromptBuilder().add([1])
        for _ in range(k):
            x = torch.randint(10, vocab, (text_len,), generator=g).tolist()
            c = x[0] % n_classes
            pb.demo(x, 2, labels[c], cls=c).add([0])
        xq = torch.randint(10, vocab, (text_len,), generator=g).tolist()
        cq = xq[0] % n_classes
        pb.query(xq, 2)
        rows.append(pb.build(target=labels[cq], candidates=labels, query_class=cq, pad_id=0,
                             meta={"task": "toy", "k": k}))
    return PromptBatch.concat(rows)


def make_task_prompts(model: HookedModel, task: str, k: int, n_prompts: int, seed: int,
                      **opts: Any) -> PromptBatch:
    """Prompts for ``task``: "toy" (``toy_prompts``), "classify" (the zoo icl-classify task from
    ``experiments.tasks.classify``) or a word task for a pretrained tokenizer (``LANGUAGE_TASKS``,
    from ``experiments.tasks.language``)."""
    if n_prompts < 1:
        raise StudyError("n_prompts must be at least 1")
    if task == "toy":
        return toy_prompts(k, n_prompts, seed, vocab=int(model.cfg.d_vocab), **opts)
    if task == "classify":

        return classify.make_prompts(k, n_prompts, seed, **opts)

    if task in LANGUAGE_TASKS or task in language.DATASETS:
        task = f"language:{task}"
    if registry.is_text_task(task):
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise StudyError(f"task {task!r} needs a model with a tokenizer (a pretrained model such as smollm2-135m)")
        try:
            return registry.task_batch(task, k, n_prompts, seed, tokenizer=tok, **opts)
        except registry.TaskError as err:
            raise StudyError(str(err)) from None
    raise StudyError(f"unknown task {task!r}; use 'toy', 'classify', one of {LANGUAGE_TASKS}, "
                     f"language:DATASET, fv:NAME or file:PATH")


@dataclass
class PromptSets:
    extract: PromptBatch
    dev: PromptBatch
    eval: PromptBatch
    baseline_acc: dict[tuple[str, str], float] = field(default_factory=dict)
    """(split, condition) -> accuracy, filled once by ``baselines`` and shared by the methods."""
    baseline_correct: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(split, condition) -> per-prompt 0/1 outcomes behind ``baseline_acc``."""


def prompt_sets(model: HookedModel, task: str, k: int, n_prompts: int, seed: int,
                n_extract: int | None = None, n_dev: int | None = None, **opts: Any) -> PromptSets:
    """Three disjoint prompt sets: extract (seed), dev (seed+1), eval (seed+2); ``n_prompts`` each
    unless ``n_extract`` / ``n_dev`` say otherwise."""
    if k < 1:
        raise StudyError("the ICL vector methods need demonstrations: use k >= 1")
    return PromptSets(
        extract=make_task_prompts(model, task, k, n_extract or n_prompts, seed, **opts),
        dev=make_task_prompts(model, task, k, n_dev or n_prompts, seed + 1, **opts),
        eval=make_task_prompts(model, task, k, n_prompts, seed + 2, **opts),
    )


# ---------------------------------------------------------------------- helpers
def _correct(model: HookedModel, batch: PromptBatch,
             make_hooks: Callable[[PromptBatch], Sequence[Any]] | None = None, bs: int = 32) -> list[float]:
    """Per prompt, 1.0 if the model's read-out prediction is the target else 0.0, in chunks of ``bs``
    rows; ``make_hooks(chunk)`` builds the hooks for each chunk (read-out hooks index rows, so they
    must be made per chunk)."""
    if batch.target is None or (batch.target < 0).any():
        raise PromptError("accuracy needs batch.target (the correct read-out token) on every row")
    out: list[float] = []
    for part in batch.batches(bs):
        hooks = make_hooks(part) if make_hooks is not None else ()
        with torch.no_grad():
            logits = readout_logits(model, part.trim(), hooks)
        assert part.target is not None  # checked for the whole batch above
        out += torch.eq(predictions(logits, part), part.target).float().tolist()
    return out


def _acc(model: HookedModel, batch: PromptBatch,
         make_hooks: Callable[[PromptBatch], Sequence[Any]] | None = None, bs: int = 32) -> float:
    """Accuracy in chunks of ``bs`` rows (the mean of ``_correct``)."""
    c = _correct(model, batch, make_hooks, bs)
    return sum(c) / len(c)


def _fixed(hooks: Sequence[Any]) -> Callable[[PromptBatch], Sequence[Any]]:
    """The same hooks for every part of a batch."""
    return lambda part: hooks


def _acc_row(model: HookedModel, batch: PromptBatch, make_hooks: Callable[[PromptBatch], Sequence[Any]] | None,
             /, **row: Any) -> dict[str, Any]:
    """An accuracy row: ``accuracy`` and ``n_prompts``, with the per-prompt outcomes under the
    private key ``correct`` (``run_study`` moves them to its ``per_prompt`` table)."""
    c = _correct(model, batch, make_hooks)
    return {**row, "accuracy": sum(c) / len(c), "n_prompts": len(c), "correct": c}


def baselines(model: HookedModel, sets: PromptSets, info: StudyInfo, method: str) -> list[dict]:
    rows = []
    for split in ("dev", "eval"):
        b = getattr(sets, split)
        for cond, batch in (("zero-shot", b.zero_shot()), ("ICL", b)):
            if (split, cond) not in sets.baseline_correct:
                sets.baseline_correct[(split, cond)] = _correct(model, batch)
            c = sets.baseline_correct[(split, cond)]
            sets.baseline_acc[(split, cond)] = sum(c) / len(c)
            rows.append(info.row(method=method, condition=cond, layer=math.nan, lam=math.nan, split=split,
                                 accuracy=sets.baseline_acc[(split, cond)], n_prompts=len(b), correct=c))
    return rows


def _sweep_readout(model: HookedModel, sets: PromptSets, info: StudyInfo, method: str,
                   vecs: dict[int, torch.Tensor], mode: Literal["replace", "add"], seed: int,
                   extra: dict | None = None, lam: float = math.nan) -> list[dict]:
    rows = []
    zs = {s: getattr(sets, s).zero_shot() for s in ("dev", "eval")}
    for layer, v in vecs.items():
        rand = vectors.random_like(v, seed=seed + 1000 + layer)
        for cond, vec in (("with vector", v), ("with random vector", rand)):
            for split, b in zs.items():
                if cond == "with random vector" and split == "dev":
                    continue  # the control is only reported, never used to choose
                def make(part: PromptBatch, layer: int = layer, vec: torch.Tensor = vec) -> list:
                    return vectors.readout_hooks(part, layer, vec, site="resid_post", mode=mode)
                rows.append(_acc_row(model, b, make, **info.row(method=method, condition=cond, layer=layer,
                                                                lam=lam, split=split,
                                                                vector_norm=float(v.norm()), **(extra or {}))))
    return rows


# ---------------------------------------------------------------------- methods
def task_vector_study(model: HookedModel, sets: PromptSets, info: StudyInfo,
                      layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Task vectors from ``sets.extract`` (read at blocks.{L}.hook_resid_post at s_q), injected by
    replacement at the same hook and position of the zero-shot prompts; a sweep over layers."""
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    tv = vectors.task_vector(model, sets.extract, layers, site="resid_post")
    vecs = {l: tv[i] for i, l in enumerate(layers)}
    rows = baselines(model, sets, info, "task_vector")
    rows += _sweep_readout(model, sets, info, "task_vector", vecs, "replace", info.seed)
    return pd.DataFrame(rows)


def function_vector_study(model: HookedModel, sets: PromptSets, info: StudyInfo, n_heads: int = 10,
                          layers: Sequence[int] | None = None, n_aie_prompts: int = 16,
                          exact_budget: int = 1024, n_exact: int | None = None,
                          shuffle_seed: int = 0, scales: Sequence[float] = (1.0,)
                          ) -> tuple[pd.DataFrame, torch.Tensor]:
    """Function vectors: mean z at s_q over ``sets.extract``; AIE of each head on label-shuffled
    extract prompts (exact for every head when heads x prompts <= ``exact_budget``, else exact on
    the top 3 * n_heads by ``head_aie_attribution``); FV from the top ``n_heads``; added at
    blocks.{L}.hook_resid_post at s_q of the zero-shot prompts, for each L in ``layers``
    (``n_exact``: exact AIE only on that many attribution-ranked candidates, default 3 * n_heads
    when the budget is exceeded).
    ``scales``: the FV is added times each scale (its ``lam``; the random control has the scaled
    norm), and the (layer, scale) is chosen on dev like the layer. Todd et al. add it at scale 1 to
    6B+ models; small models may need more. The default (1,) leaves ``lam`` empty, as before.
    Returns the accuracy table and the [layer, head] AIE (NaN where not computed exactly)."""
    if not scales or any(not (math.isfinite(x) and x > 0) for x in scales):
        raise StudyError(f"function-vector scales must be positive numbers, got {list(scales)}")
    mean_z = vectors.mean_head_outputs(model, sets.extract)
    shuffled = sets.extract.select(slice(0, n_aie_prompts)).shuffle_labels(seed=shuffle_seed)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if n_exact is None and L * H * len(shuffled) <= exact_budget:
        aie = vectors.head_aie(model, shuffled, mean_z)
        how = "exact"
    else:
        approx = vectors.head_aie_attribution(model, shuffled, mean_z)
        cand = vectors.top_heads(approx, n_exact or 3 * n_heads)
        aie = vectors.head_aie(model, shuffled, mean_z, heads=cand)
        how = "attribution+exact"
    heads = vectors.top_heads(aie, n_heads)
    fv = vectors.function_vector(model, mean_z, heads, vectors.post_attention_gain(model, sets.extract))
    layers = list(range(L)) if layers is None else list(layers)
    rows = baselines(model, sets, info, "function_vector")
    extra = {"heads": ";".join(f"L{l}H{h}" for l, h in heads), "aie": how}
    for x in scales:
        lam = math.nan if tuple(scales) == (1.0,) else float(x)
        rows += _sweep_readout(model, sets, info, "function_vector", {l: fv * x for l in layers}, "add",
                               info.seed, extra=extra, lam=lam)
    return pd.DataFrame(rows), aie


def icv_study(model: HookedModel, sets: PromptSets, info: StudyInfo,
              lambdas: Sequence[float] = DEFAULT_LAMBDAS, site: str | None = None) -> pd.DataFrame:
    """In-context vectors from the demonstrations of ``sets.extract``; the normalised update at
    every layer and position of the zero-shot prompts (site: ``icv_hooks`` default), per lambda."""
    hx, hy = vectors.demo_pair_states(model, sets.extract)
    icv = vectors.in_context_vector(hx, hy)
    rand = vectors.random_like(icv, seed=info.seed + 2000)
    site = site or ("mlp_out" if vectors.has_mlp(model) else "resid_post")
    rows = baselines(model, sets, info, "icv")
    for split in ("dev", "eval"):
        zs = getattr(sets, split).zero_shot()
        for lam in lambdas:
            for cond, vec in (("with vector", icv), ("with random vector", rand)):
                if cond == "with random vector" and split == "dev":
                    continue
                hooks = vectors.icv_hooks(model, vec, lam, site=site)
                rows.append(_acc_row(model, zs, _fixed(hooks), **info.row(
                    method="icv", condition=cond, layer=math.nan, lam=float(lam), split=split, site=site)))
    return pd.DataFrame(rows)


def anchors_study(model: HookedModel, batch: PromptBatch, info: StudyInfo,
                  per_prompt: bool = True) -> pd.DataFrame:
    """Label-word flows by layer: mean and std over prompts of S_wp, S_pq, S_ww (``prompt`` = -1)
    and, with ``per_prompt``, each prompt's value (``prompt`` = 0..n-1) for ``anchors_stats``."""
    f = anchors.anchor_flows(model, batch)  # [layer, batch, 3]
    rows = []
    for l in range(f.shape[0]):
        for i, name in enumerate(anchors.FLOWS):
            vals = f[l, :, i]
            rows.append(info.row(method="anchors", layer=l, flow=name, value=float(vals.mean()),
                                 std=float(vals.std()) if len(vals) > 1 else 0.0, n_prompts=len(batch),
                                 prompt=-1))
            if per_prompt:
                rows += [info.row(method="anchors", layer=l, flow=name, value=float(v), std=math.nan,
                                  n_prompts=len(batch), prompt=b) for b, v in enumerate(vals.tolist())]
    return pd.DataFrame(rows)


ANCHOR_PAIRS: tuple[tuple[str, str], ...] = (("S_wp", "S_ww"), ("S_pq", "S_ww"), ("S_pq", "S_wp"))
"""The flow comparisons of Wang et al., at every layer, paired on the same prompts: text -> label
words against the rest (their shallow-layer claim: S_wp > S_ww), label words -> read-out against
the rest (deep layers: S_pq > S_ww), and the two label-word flows against each other."""


def anchors_stats(table: pd.DataFrame, level: float = 0.95, alpha: float = 0.05) -> "StatsTables":
    """Intervals and paired tests for label-word flows (``anchors_study`` / ``run_study(...)["anchors"]``
    rows, seeds and runs concatenated; seeds pool into the prompt sample).

    Returns ``probes.stats.StatsTables``: ``estimates`` with ``model, task, k, layer, flow`` +
    ``n, value, ci_low, ci_high`` (BCa bootstrap over prompts); ``comparisons`` with ``model,
    task, k, layer, condition, control`` + ``CMP_COLUMNS`` for ``ANCHOR_PAIRS`` at every layer
    (paired permutation test; effect = condition - control), q-values Benjamini-Hochberg over one
    (model, task, k): every layer and pair.
    """

    per = stats.with_unit_columns(table)
    by = ["model", "task", "k"]
    est = stats.summarize(per.assign(binary=False), [*by, "layer", "flow"], level=level, binary="binary")
    parts = []
    for key, run in per.groupby(by, sort=False):
        c = stats.compare(run, ANCHOR_PAIRS, by=["layer"], condition="flow", level=level, alpha=alpha)
        parts.append(c.rename(columns={"flow": "condition"}).assign(**dict(zip(by, key))))
    cols = [*by, "layer", "condition", "control", *stats.CMP_COLUMNS]
    cmp = pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
    return stats.StatsTables(est, cmp)


# ---------------------------------------------------------------------- tables
def _dev_best(g: pd.DataFrame) -> pd.Series | None:
    """The dev row of "with vector" with the best accuracy (its layer / lambda is the one reported)."""
    dev = g[(g.split == "dev") & (g.condition == "with vector") & ~(g.lam == 0)]  # lam 0 = zero-shot
    return None if dev.empty else dev.loc[dev.accuracy.idxmax()]


def _at(ev: pd.DataFrame, best: pd.Series) -> pd.DataFrame:
    """The rows of ``ev`` at ``best``'s layer and lambda, and the zero-shot and ICL rows (which
    have neither)."""
    base = ev.condition.isin(["zero-shot", "ICL"])
    sel = ev[(ev.layer == best.layer) | (ev.layer.isna() & pd.isna(best.layer)) | base]
    if not pd.isna(best.lam):
        sel = sel[(sel.lam == best.lam) | sel.condition.isin(["zero-shot", "ICL"])]
    return sel


def per_prompt_table(acc: pd.DataFrame) -> pd.DataFrame:
    """The accuracy rows' per-prompt outcomes (their ``correct`` lists) as one row per prompt:
    the row's columns with ``prompt`` (0..n-1, index in its split's batch) and ``value`` (1.0 if
    correct) in place of ``accuracy`` and ``correct``."""
    if "correct" not in acc.columns:
        raise StudyError("these accuracy rows carry no per-prompt outcomes; recompute them with run_study")
    long = acc.drop(columns=["accuracy"]).explode("correct").rename(columns={"correct": "value"})
    long["prompt"] = long.groupby(level=0).cumcount()
    return long.reset_index(drop=True).astype({"value": float})


VECTOR_PAIRS: tuple[tuple[str, str], ...] = (
    ("with vector", "with random vector"), ("with vector", "zero-shot"), ("with vector", "ICL"),
    ("ICL", "zero-shot"))
"""The comparisons of one method (condition, control), paired on the same eval prompts."""


def vectors_stats(per_prompt: pd.DataFrame, level: float = 0.95, alpha: float = 0.05) -> "StatsTables":
    """Intervals and paired tests for ICL vectors (``run_study(...)["per_prompt"]``, seeds and runs
    concatenated).

    Per (model, task, k, seed, method) the layer / lambda is chosen on the dev prompts (best
    "with vector" accuracy, as ``summary_table``); then on the eval prompts every condition at that
    choice is paired on (seed, prompt) and seeds pool. Returns ``probes.stats.StatsTables``:

    - ``estimates``: ``model, task, k, method, condition`` + ``n, value, ci_low, ci_high``
      (eval accuracy, Wilson interval);
    - ``comparisons``: ``model, task, k, method, condition, control`` + ``CMP_COLUMNS`` (McNemar
      on the per-prompt outcomes; ``mde`` at 80% power), for ``VECTOR_PAIRS``: the vector against
      a random vector of the same norm, against zero-shot and against ICL, and ICL against
      zero-shot. q-values are Benjamini-Hochberg over one (model, task, k, method).
    Also ``chosen`` columns ``layers`` / ``lams`` on the comparisons: the choice per seed.
    """

    per = stats.with_unit_columns(per_prompt)
    keys = ["model", "task", "k", "seed", "method"]
    acc = per.groupby([*keys, "condition", "layer", "lam", "split"], dropna=False, sort=False)["value"].mean()
    acc = acc.rename("accuracy").reset_index()
    picked = []
    choice: dict[tuple, str] = {}
    for key, g in acc.groupby(keys, sort=False):
        best = _dev_best(g)
        if best is None:
            continue
        run = per[(per[keys] == pd.Series(dict(zip(keys, key)))).all(axis=1) & (per.split == "eval")]
        picked.append(_at(run, best))
        choice[key] = ", ".join(f"{name}={v:g}" for name, v in (("layer", best.layer), ("lam", best.lam))
                                if not pd.isna(v))
    by = ["model", "task", "k", "method"]
    if not picked:
        return stats.StatsTables(pd.DataFrame(columns=[*by, "condition", *stats.EST_COLUMNS]),
                                 pd.DataFrame(columns=[*by, "condition", "control", *stats.CMP_COLUMNS]))
    ev = pd.concat(picked, ignore_index=True)
    est = stats.summarize(ev, [*by, "condition"], level=level)
    parts = []
    for key, run in ev.groupby(by, sort=False):
        c = stats.compare(run, VECTOR_PAIRS, condition="condition", level=level, alpha=alpha)
        chosen = "; ".join(f"seed {s}: {v}" for (m, t, k, s, meth), v in choice.items()
                           if (m, t, k, meth) == key)
        parts.append(c.assign(**dict(zip(by, key)), chosen=chosen))
    cmp = pd.concat(parts, ignore_index=True)
    return stats.StatsTables(est, cmp[[*by, "condition", "control", *stats.CMP_COLUMNS, "chosen"]])


def summary_table(acc: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, task, method): eval accuracy for each condition, with the vector's
    layer / lambda chosen by the best dev accuracy of "with vector"."""
    out = []
    if "prompt" in acc.columns:
        acc = acc[acc["prompt"] < 0]
    for key, g in acc.groupby(["model", "task", "k", "seed", "method"], sort=False):
        best = _dev_best(g)
        if best is None:
            continue
        ev = g[g.split == "eval"]
        sel = _at(ev, best)
        row = dict(zip(["model", "task", "k", "seed", "method"], key))
        row["layer"] = best.layer
        row["lam"] = best.lam
        for cond in CONDITIONS:
            vals = ev[ev.condition == cond] if cond in ("zero-shot", "ICL") else sel[sel.condition == cond]
            row[cond] = float(vals.accuracy.iloc[0]) if len(vals) else math.nan
        row["n_prompts"] = int(ev.n_prompts.iloc[0])
        out.append(row)
    return pd.DataFrame(out)


def run_study(model: HookedModel, model_name: str, task: str, k: int = 4, n_prompts: int = 32,
              seed: int = 0, methods: Sequence[str] = METHODS + ("anchors",), n_heads: int = 10,
              lambdas: Sequence[float] = DEFAULT_LAMBDAS, layers: Sequence[int] | None = None,
              n_dev: int | None = None, n_aie_prompts: int = 16, n_exact: int | None = None,
              n_anchor_prompts: int | None = None, progress: Any = None,
              fv_scales: Sequence[float] = (1.0,), **task_opts: Any) -> dict[str, pd.DataFrame]:
    """Every requested method on one model and task. Returns {"accuracy": long table of every
    condition (``prompt`` = -1), "per_prompt": the same conditions per prompt (``per_prompt_table``;
    feed it to ``vectors_stats``), "summary": ``summary_table``, "anchors": flows by layer (and per
    prompt; ``anchors_stats``), "aie": head AIE}.
    ``progress(fraction, text)`` is called between methods when given (the app's progress bar)."""
    unknown = set(methods) - set(METHODS + ("anchors",))
    if unknown:
        raise StudyError(f"unknown methods {sorted(unknown)}; use any of {METHODS + ('anchors',)}")
    info = StudyInfo(model_name, task, k, seed)
    sets = prompt_sets(model, task, k, n_prompts, seed, n_dev=n_dev, **task_opts)
    step = [0]

    def tick(text: str) -> None:
        if progress is not None:
            progress(step[0] / max(1, len(methods)), text)
        step[0] += 1
    frames, out = [], {}
    if "task_vector" in methods:
        tick("task vectors")
        frames.append(task_vector_study(model, sets, info, layers))
    if "function_vector" in methods:
        tick("function vectors")
        fv, aie = function_vector_study(model, sets, info, n_heads=n_heads, layers=layers,
                                        n_aie_prompts=n_aie_prompts, n_exact=n_exact, scales=fv_scales)
        frames.append(fv)
        out["aie"] = pd.DataFrame([info.row(method="function_vector", layer=l, head=h, aie=float(aie[l, h]))
                                   for l in range(aie.shape[0]) for h in range(aie.shape[1])])
    if "icv" in methods:
        tick("in-context vectors")
        frames.append(icv_study(model, sets, info, lambdas))
    if frames:
        acc = pd.concat(frames, ignore_index=True)
        out["per_prompt"] = per_prompt_table(acc)
        acc = acc.drop(columns="correct").assign(prompt=-1)
        out["accuracy"] = acc
        out["summary"] = summary_table(acc)
    if "anchors" in methods:
        tick("label-word anchors")
        ev = sets.eval if n_anchor_prompts is None else sets.eval.select(slice(0, n_anchor_prompts))
        out["anchors"] = anchors_study(model, ev, info)
    if progress is not None:
        progress(1.0, "done")
    return out


# ---------------------------------------------------------------------- tasks
def tasks_for(model: HookedModel) -> list[str]:
    """The tasks this study can run on ``model``: word tasks for a model with a tokenizer,
    ``classify`` for a model whose vocabulary covers it (the icl-classify zoo model), else ``toy``."""
    if getattr(model, "tokenizer", None) is not None:
        return list(LANGUAGE_TASKS) + suite.task_names()
    vocab = int(model.cfg.d_vocab)
    return (["classify"] if vocab >= int(classify.VOCAB_SIZE) else []) + (["toy"] if vocab >= 13 else [])
