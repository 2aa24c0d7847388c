"""The analysis registry: what a sweep unit can compute.

An analysis is a function ``fn(model_name, task, k, seed, params) -> AnalysisResult``: a tidy
pandas table (one measurement per row, with at least the columns ``metric`` and ``value``; any
other columns are dimensions such as ``layer``, ``head``, ``step``, ``condition``) plus optional
tensor artefacts (attention maps, head-score tables) stored in safetensors beside the table.
The store adds the provenance columns; an analysis only measures.

Built in:

- ``head_scan``: every head score of ``experiments.studies.scan.head_scan`` (layer x head tables); no
  task or k. Each (score, layer, head) row carries its statistics (``experiments.studies.scan.scan_stats``:
  interval over prompts, null, p, q over the model's heads, verdict). Artefacts: each score
  table, its per-prompt values and its null's, and the attention maps of the scan's first prompt.
- ``circuit``: the summarize-merge-retrieve circuit with ablations (``circuits``), on a task at k.
- ``icl_vs_gd``: ICL against gradient descent on the same demonstrations
  (``experiments.studies.icl_vs_gd.compare_icl_gd``), on a task at k.
- ``dynamics``: a zoo model's training dynamics over its checkpoint series
  (``experiments.studies.dynamics.dynamics_table``); no task or k.

Register more with ``register(AnalysisSpec(...))`` in a module named by a config's ``imports``.
Models are loaded once per worker process (``get_model``), so a worker that runs many units of
one model loads it once.

Versions: a stored unit is current only while its analysis is the one that computed it. Every
unit records ``AnalysisSpec.fingerprint()`` (``analysis_version``: the spec's ``version``, and
``code_hash``: a hash of the analysis function's code and of the modules named in ``requires`` and
``code``); a unit whose version or code hash differs from the running code's is *stale*: ``iclwb
sweep status`` lists it and ``iclwb sweep run`` recomputes it. Bump ``version`` whenever what an
analysis measures changes (new or renamed metrics, new columns, a fixed bug) and the change is not
inside the hashed code, e.g. in a helper module it calls.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoTokenizer

from circuits.icl_circuit import run_circuit
from experiments import tasks
from experiments.models import pretrained, zoo
from experiments.models.loading import PRETRAINED_ALIASES, load_model
from experiments.models.zoo import series
from experiments.runs import modelinfo
from experiments.studies import icl_vs_gd as ivg
from experiments.studies import linreg_gd
from experiments.studies import vectors_study as vs
from experiments.studies.dynamics import dynamics_table
from experiments.studies.gd import GDConfig, best_finetune_lr
from experiments.studies.scan import head_scan, max_seg_len, scan_stats
from experiments.studies.tidy import tidy
from experiments.tasks import check_n_prompts
from probes.heads import attention_patterns, repeated_random_tokens


@dataclass
class AnalysisResult:
    table: pd.DataFrame
    tensors: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisSpec:
    """One registered analysis.

    ``version`` is part of what makes a stored unit current (see the module docstring): bump it
    (``version=2``, ...) in the same commit that changes what the analysis stores, e.g. when adding
    statistics columns; every stored unit of the analysis is then stale and the next ``iclwb sweep
    run`` recomputes it. Changes to the function itself or to the modules in ``requires`` and
    ``code`` are caught without a bump (``code_hash``; comments, docstrings and formatting do not
    count); changes anywhere else need the bump.
    """

    name: str
    fn: Callable[[str, str, int, int, dict[str, Any]], AnalysisResult | pd.DataFrame]
    params: dict[str, Any]
    """Allowed parameters and their defaults; a config value must have the default's type."""
    uses_task: bool = True
    uses_k: bool = True
    description: str = ""
    requires: tuple[str, ...] = ()
    """Modules this analysis needs; when one is missing the analysis is reported unavailable."""
    applies: Callable[[str, str], str | None] | None = None
    """(model, task) -> None when the analysis can run on them, else the reason why not."""
    check_params: Callable[[str, str, int, dict[str, Any]], str | None] | None = None
    """(model, task, k, resolved params) -> None when the values fit, else what is wrong; checked
    with the config, before any work (never loads a model)."""
    version: int | str = 1
    """Bump when what the analysis stores changes outside the hashed code (see the class docstring)."""
    code: tuple[str, ...] = ()
    """Further modules whose source is part of ``code_hash`` (beside ``fn`` and ``requires``)."""

    def fingerprint(self) -> dict[str, str]:
        """``{"analysis_version", "code_hash"}``: what a stored unit must match to be current."""
        return {"analysis_version": str(self.version),
                "code_hash": code_hash(self.fn, tuple(self.requires) + tuple(self.code))}

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.params)
        for key, val in given.items():
            if key not in self.params:
                allowed = ", ".join(sorted(self.params)) or "(none)"
                raise ValueError(f"unknown parameter {key!r} of analysis {self.name!r}; allowed: {allowed}")
            default = self.params[key]
            if default is not None and not _same_type(val, default):
                kind = type(default).__name__
                if isinstance(default, list) and default:
                    kind = f"a list of {type(default[0]).__name__}"
                raise ValueError(f"parameter {key!r} must be {kind} "
                                 f"(like its default {default!r}), got {type(val).__name__} {val!r}")
            if key == "precision" and val not in PRECISIONS:
                raise ValueError(f"parameter 'precision' must be one of {', '.join(PRECISIONS)}, got {val!r}")
            out[key] = val
        return out

    def unavailable(self) -> str | None:
        """None when every required module imports, else what is missing."""
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except ImportError as err:
                return f"needs {mod} ({err})"
        return None

    def check(self, model: str, task: str) -> str | None:
        why = self.unavailable()
        if why:
            return why
        return self.applies(model, task) if self.applies else None

    def run(self, model: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
        out = self.fn(model, task, k, seed, self.resolve_params(params))
        if isinstance(out, pd.DataFrame):
            out = AnalysisResult(out)
        missing = {"metric", "value"} - set(out.table.columns)
        if missing:
            raise ValueError(f"analysis {self.name!r} returned a table without columns {sorted(missing)}")
        return out


def _normalized_source(src: str) -> str:
    """The code of ``src`` without comments, docstrings and formatting (its AST), else the text."""
    try:
        tree = ast.parse(textwrap.dedent(src))
    except SyntaxError:  # e.g. a lambda's source line cut out of a larger expression
        return src
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@functools.lru_cache(maxsize=256)
def _module_code(name: str) -> str:
    """The normalized source of module ``name``, read from its file (without importing it)."""

    try:
        spec = importlib.util.find_spec(name)
        with open(spec.origin, encoding="utf-8") as f:  # type: ignore[union-attr]
            return _normalized_source(f.read())
    except (ImportError, AttributeError, TypeError, ValueError, OSError):
        return f"<unavailable {name}>"


def code_hash(fn: Callable, modules: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex digits) of ``fn``'s code and the named modules' code (see AnalysisSpec)."""
    try:
        own = _normalized_source(inspect.getsource(fn))
    except (OSError, TypeError):  # defined interactively: only its name is known
        own = f"<source unavailable {getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', fn)}>"
    h = hashlib.sha256(own.encode())
    for m in sorted(set(modules)):
        h.update(f"\0{m}\0".encode() + _module_code(m).encode())
    return h.hexdigest()[:16]


def _same_type(val: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(val, bool):
        return isinstance(val, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(val, (int, float))
    if isinstance(default, list):  # a non-empty default also fixes the type of the items
        return isinstance(val, list) and (not default or all(_same_type(v, default[0]) for v in val))
    return isinstance(val, type(default))


REGISTRY: dict[str, AnalysisSpec] = {}


def register(spec: AnalysisSpec) -> AnalysisSpec:
    REGISTRY[spec.name] = spec
    return spec


def analysis_names() -> list[str]:
    return sorted(REGISTRY)


def get_analysis(name: str) -> AnalysisSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown analysis {name!r}; allowed: {', '.join(analysis_names())}")
    return REGISTRY[name]


# ------------------------------------------------------------------------------------ model cache
PRECISIONS = ("float32", "bfloat16")
"""``precision`` parameter of the analyses: float32 (default) or bfloat16 (about 3x faster on CPUs
with AVX-512 BF16; trust it only where a pilot in both precisions agrees: ``bench/real_models.py``).
Every stored row carries the precision that produced it."""


def get_model(name: str, precision: str = "float32"):
    """The model, loaded once per process (two most recent kept), in ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return _get_model(name, precision)


@functools.lru_cache(maxsize=2)
def _get_model(name: str, precision: str):


    model = load_model(name)
    if precision != "float32":
        model.to(getattr(torch, precision))
    return model


def _with_precision(result: AnalysisResult, precision: str) -> AnalysisResult:
    result.table["precision"] = precision
    return result


def is_token_model(name: str) -> bool:
    """False for the zoo's vector-input models (linear regression), which have no token vocabulary."""

    if name in zoo.ZOO_MODULES:
        try:
            return zoo.read_card(name)["arch"] == "bridge-native"
        except FileNotFoundError:
            return True
    return True


def _call(fn: Callable, **kwargs: Any) -> Any:
    """Call ``fn`` with the keyword arguments it accepts (others' APIs grow options over time)."""
    sig = inspect.signature(fn)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in sig.parameters})


# ------------------------------------------------------------------------------------ task hooks
def task_prompt_len(model: str, task: str, k: int) -> int | None:
    """Token length of the longest k-shot prompt of ``task`` for ``model`` (None when unknown)."""

    base = split_task(task)[0]
    if base not in getattr(tasks, "TOKEN_TASKS", ()) and (
            not tasks.is_text_task(task) or _cached_tokenizer(model) is None):
        return None  # vector tasks have no tokens; never load a whole model to validate a config
    batch = make_task_batch(model, task, k, seed=0, n_prompts=16)
    if batch is None:
        return None
    return int(batch.lengths.max()) if hasattr(batch, "lengths") else None


def split_task(task: str) -> tuple[str, str]:
    """``"language:sentiment"`` -> ("language", "sentiment"); ``"classify"`` -> ("classify", "")."""

    return tasks.split(task)


def task_problem(task: str) -> str | None:
    """None when ``task`` names a registered task (``NAME``, ``language:DATASET``, ``fv:NAME``,
    ``file:PATH``), else why not."""

    return tasks.task_problem(task)


def make_task_batch(model: str, task: str, k: int, seed: int, n_prompts: int, **options: Any):
    """A PromptBatch of ``task`` at ``k`` for ``model`` (None for vector tasks such as linreg),
    through ``experiments.tasks.task_batch``."""

    if split_task(task)[0] == "linreg":
        return None
    tok = None
    if tasks.is_text_task(task):
        tok = tokenizer_of(model)
        if tok is None:
            return None
    batch = tasks.task_batch(task, k, n_prompts, seed, tokenizer=tok, **options)
    batch.meta.setdefault("model", model)
    return batch


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(model: str):
    """The tokenizer from a local folder (no model weights loaded), or None."""
    if model in PRETRAINED_ALIASES:
        try:

            return pretrained.load_tokenizer(model)
        except Exception:
            return None
    d = Path(model)
    if d.is_dir() and ((d / "tokenizer.json").exists() or (d / "tokenizer_config.json").exists()):

        return AutoTokenizer.from_pretrained(str(d))
    return None


def tokenizer_of(model: str):
    """The tokenizer of a pretrained model (from its folder where possible, else the model's)."""
    return _cached_tokenizer(model) or getattr(get_model(model), "tokenizer", None)


# ------------------------------------------------------------------------------------ head_scan
def _head_scan(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:


    model = get_model(model_name, params["precision"])
    kwargs: dict[str, Any] = {"seed": seed}
    if params.get("seg_len"):
        kwargs["seg_len"] = params["seg_len"]
    for key in ("n_prompts", "batch"):
        if params.get("n_prompts"):
            kwargs[key] = params["n_prompts"]
    with torch.no_grad():
        scan = _call(head_scan, model=model, **kwargs)
    tensors = {}
    example = None
    for score_name, hs in scan.items():
        scores = hs.scores.detach().float().cpu()
        tensors[f"scores/{score_name}"] = scores.contiguous()
        if hs.per_prompt is not None:  # [prompt, layer, head]: small, kept for re-analysis
            tensors[f"per_prompt/{score_name}"] = hs.per_prompt.float().contiguous()
        if hs.null is not None:
            tensors[f"null_per_prompt/{score_name}"] = hs.null.per_prompt.float().contiguous()
        if example is None and getattr(hs, "tokens", None) is not None and hs.tokens.ndim == 2:
            example = hs.tokens[:1]
    per_prompt: list[dict[str, Any]] = []
    if params["induction_prompts"] and "induction" in scan:
        per_prompt = _induction_per_prompt(model, scan["induction"], params["induction_prompts"], seed,
                                      int(scan["induction"].info.get("seg_len", 20)))
    if example is not None and params.get("save_attention", True):
        with torch.no_grad():
            pat = attention_patterns(model, example)  # [L, 1, H, q, k]
        tensors["attention/example0"] = pat[:, 0].float().contiguous()
        tensors["attention/example0_tokens"] = example[0].contiguous()
    table = scan_stats(scan).assign(prompt=-1)  # per-head interval, null, p, q, verdict
    if per_prompt:
        table = pd.concat([table, pd.DataFrame(per_prompt)], ignore_index=True)
    return _with_precision(AnalysisResult(table, tensors), params["precision"])


def _induction_per_prompt(model: Any, scores: Any, n: int, seed: int, seg_len: int,
                          top: int = 5) -> list[dict[str, Any]]:
    """Per-prompt induction scores of the ``top`` heads of the scan, on fresh repeated random
    sequences (metric ``induction:prompt``) and on a null where the second half is a new random
    segment, so the induction target carries no signal (``induction_null:prompt``). One row per
    (prompt, head): what ``probes.stats.unpaired`` needs for an interval and a test."""


    vocab = int(model.cfg.d_vocab)
    toks = repeated_random_tokens(n, seg_len, vocab, seed=seed + 7001)
    null = toks.clone()
    null[:, seg_len:] = torch.randint(0, vocab, (n, seg_len), generator=torch.Generator().manual_seed(seed + 7002))
    T = toks.shape[1]
    mask = torch.zeros(T, T)
    q = torch.arange(seg_len, 2 * seg_len)
    mask[q, q - seg_len + 1] = 1.0
    heads = [(l, h) for l, h, _ in scores.top(top)]
    rows: list[dict[str, Any]] = []
    for metric, t in (("induction:prompt", toks), ("induction_null:prompt", null)):
        with torch.no_grad():
            _, cache = model.run_with_cache(t, names_filter=lambda name: name.endswith("hook_pattern"))
        for l, h in heads:
            pat = cache[f"blocks.{l}.attn.hook_pattern"][:, h].float()  # [b, q, k]
            per = (pat * mask).sum((-1, -2)) / len(q)
            rows += [{"metric": metric, "layer": l, "head": h, "prompt": b, "value": float(per[b])}
                     for b in range(n)]
    return rows


def _check_head_scan(model: str, task: str, k: int, params: dict[str, Any]) -> str | None:

    seg = params["seg_len"]
    ctx = modelinfo.n_ctx(model)
    if seg < 0 or (seg and ctx is not None and seg > max_seg_len(ctx)):
        top = f"1..{max_seg_len(ctx)}" if ctx is not None else ">= 1"
        return f"seg_len={seg}: the scan repeats a segment twice in the model's context; use {top}, or 0 for the default"
    if params["n_prompts"] < 0:
        return f"n_prompts={params['n_prompts']}: use n_prompts >= 1, or 0 for the default"
    return None


register(AnalysisSpec(
    name="head_scan", fn=_head_scan,
    params={"seg_len": 0, "n_prompts": 0, "save_attention": True, "induction_prompts": 32,
            "precision": "float32"},
    uses_task=False, uses_k=False,
    description="layer x head scores (previous-token, induction, ...) from experiments.studies.scan.head_scan, each "
                "with its interval over prompts and its test against a null (experiments.studies.scan.scan_stats)",
    requires=("experiments.studies.scan",),
    version=2,
    applies=lambda m, t: None if is_token_model(m) else "it reads vectors, not tokens (no head scan)",
    check_params=_check_head_scan,
))


def _token_task_only(model: str, task: str) -> str | None:
    if not is_token_model(model):
        return "it reads vectors, not tokens; use a token model"
    if split_task(task)[0] == "linreg":
        return "linreg prompts are vectors; use a token task (classify, icll, induction, language:...)"

    if tasks.is_text_task(task) and model in _zoo_names():
        return ("zoo models have their own synthetic vocabularies; text tasks (language:, fv:, "
                "file:) need a pretrained model")
    return None


def _zoo_names() -> list[str]:

    return list(zoo.ZOO_MODULES)


# ------------------------------------------------------------------------------------ dynamics
def _dynamics(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:


    df = dynamics_table(model_name, steps=params["steps"] or None, seed=seed,
                        n_prompts=params["n_prompts"])
    tensors = {}
    heads = df[df["layer"] >= 0]
    for (step, metric), t in heads.groupby(["step", "metric"]):
        grid = torch.full((int(t["layer"].max()) + 1, int(t["head"].max()) + 1), float("nan"))
        grid[torch.tensor(t["layer"].tolist()), torch.tensor(t["head"].tolist())] = torch.tensor(
            t["value"].tolist(), dtype=torch.float32)
        tensors[f"{step}/{metric}"] = grid
    # the store's own ``k`` column is the unit's k: the accuracy's number of shots is ``shots``
    return AnalysisResult(df.rename(columns={"k": "shots"}).reset_index(drop=True), tensors)


def _has_series(model: str, task: str) -> str | None:

    if model not in zoo.ZOO_MODULES:
        return f"{model!r} is not a zoo model; dynamics needs a zoo checkpoint series"
    if not series.has_series(model):
        return f"zoo model {model!r} has no checkpoint series; run `iclwb zoo train {model} --checkpoints 12`"
    return None


register(AnalysisSpec(
    name="dynamics", fn=_dynamics,
    params={"steps": [], "n_prompts": 64},
    uses_task=False, uses_k=False,
    description="per checkpoint of a zoo model: losses, ICL score, every head score, accuracy vs k "
                "(experiments.studies.dynamics)",
    requires=("experiments.studies.dynamics",),
    applies=_has_series,
))


# ------------------------------------------------------------------------------------ circuit
def _circuit(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:

    model = get_model(model_name, params["precision"])
    batch = make_task_batch(model_name, task, k, seed, params["n_prompts"])
    kwargs: dict[str, Any] = {"seed": seed, "window": tuple(params["window"])}
    if params["layers"]:
        kwargs["layers"] = list(params["layers"])
    if params["steps"]:
        kwargs["steps"] = tuple(params["steps"])
    df = run_circuit(model, batch, **kwargs)
    df = df.drop(columns=[c for c in ("model", "task", "k", "seed") if c in df.columns])
    return _with_precision(AnalysisResult(df.reset_index(drop=True),
                                          head_tables(df, model.cfg.n_layers, model.cfg.n_heads)),
                           params["precision"])


def head_tables(df: pd.DataFrame, n_layers: int, n_heads: int) -> dict[str, Any]:
    """Every per-head metric of a tidy table as a [layer, head] tensor named "step/metric"."""

    out = {}
    per_head = df[(df["layer"] >= 0) & (df["head"] >= 0)]
    if "prompt" in per_head:  # per-prompt rows are not head maps
        per_head = per_head[per_head["prompt"] < 0]
    for (step, metric), t in per_head.groupby(["step", "metric"]):
        if len(t) != n_layers * n_heads:
            continue
        grid = torch.full((n_layers, n_heads), float("nan"))
        li = torch.tensor(t["layer"].astype(int).tolist())
        hi = torch.tensor(t["head"].astype(int).tolist())
        grid[li, hi] = torch.tensor(t["value"].astype(float).tolist(), dtype=torch.float32)
        out[f"{step}/{metric}"] = grid
    return out


CIRCUIT_STEPS = ("summarize", "merge", "retrieve", "ablation")


def _n_prompts_problem(n: int, k: int) -> str | None:

    try:
        check_n_prompts(n, 64 * (k + 1))
    except ValueError as err:
        return str(err)
    return None


def _layers_problem(model: str, layers: list[int]) -> str | None:

    L = modelinfo.n_layers(model)
    bad = [l for l in layers if l < 0 or (L is not None and l >= L)]
    if bad:
        return f"layers {bad} out of range: model {model!r} has {L} layers (0..{(L or 1) - 1})"
    return None


def _check_circuit(model: str, task: str, k: int, params: dict[str, Any]) -> str | None:
    if k < 1:
        return f"k={k}: the circuit reads demonstrations (labels, forerunners); use k >= 1"
    lo, hi = (list(params["window"]) + [None, None])[:2]
    if len(params["window"]) != 2 or not (0 <= lo < hi <= 1):
        return f"window={params['window']!r}: give [start, end] fractions of the layers with 0 <= start < end <= 1"
    bad = [s for s in params["steps"] if s not in CIRCUIT_STEPS]
    if bad or not all(isinstance(s, str) for s in params["steps"]):
        return f"steps={params['steps']!r}: each step must be one of {', '.join(CIRCUIT_STEPS)}"
    if not all(isinstance(l, int) and not isinstance(l, bool) for l in params["layers"]):
        return f"layers={params['layers']!r}: give layer numbers (integers)"
    return _layers_problem(model, params["layers"]) or _n_prompts_problem(params["n_prompts"], k)


register(AnalysisSpec(
    name="circuit", fn=_circuit,
    params={"n_prompts": 32, "window": [0.0, 0.25], "layers": [], "steps": [], "precision": "float32"},
    uses_task=True, uses_k=True,
    description="summarize-merge-retrieve circuit with ablations and random controls (circuits.icl_circuit)",
    requires=("circuits.icl_circuit",),
    applies=lambda m, t: _token_task_only(m, t),
    check_params=_check_circuit,
))


# ------------------------------------------------------------------------------------ icl_vs_gd
def _icl_vs_gd(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:

    model = get_model(model_name, params["precision"])
    if not is_token_model(model_name):
        wide = linreg_gd.compare_linreg(model, ks=[k], n_tasks=params["n_tasks"], seed=seed,
                                  gd_steps=params["gd_steps"], name=model_name)
        id_cols = [c for c in ("model", "task", "k", "d", "seed", "n_tasks", "gd_steps") if c in wide.columns]
        long = tidy(wide, id_cols)
        parts = [long]
        if params["order_perms"]:
            order = linreg_gd.linreg_order_sensitivity(model, ks=[k], n_tasks=min(params["n_tasks"], 128),
                                                 n_perms=params["order_perms"], seed=seed,
                                                 gd_steps=params["gd_steps"], name=model_name)
            order = order.rename(columns={"order_std": "value"})
            order["metric"] = "order_std_" + order["method"].astype(str)
            parts.append(order)
        df = pd.concat(parts, ignore_index=True).assign(prompt=-1)
        per_task = linreg_gd.linreg_task_rows(model, k, n_tasks=params["n_tasks"], seed=seed, gd_steps=params["gd_steps"],
                                        n_perms=params["order_perms"], n_order_tasks=128)
        df = pd.concat([df, per_task.assign(n_tasks=params["n_tasks"])], ignore_index=True)
    else:



        batch = make_task_batch(model_name, task, k, seed, params["n_prompts"])
        gd = GDConfig(subset=params["subset"], lr=params["lr"], epochs=params["epochs"],
                      optimizer=params["optimizer"])
        search: dict[float, float] = {}
        if params["lr_grid"]:  # searched on held-out prompts (another seed), never the compared ones
            held = make_task_batch(model_name, task, k, seed + 10_000, params["lr_search_prompts"])
            best, search = best_finetune_lr(model, held, [float(x) for x in params["lr_grid"]], gd)
            gd = replace(gd, lr=best)
        df = _call(ivg.compare_icl_gd, model=model, prompts=batch, ks=[k], seeds=[seed], gd=gd,
                   n_prompts=params["n_prompts"], n_perms=params["order_perms"],
                   n_order_prompts=params["order_prompts"], model_name=model_name, task_name=task)
        if search:
            extra = [{"metric": "lr_search_query_ce", "value": ce, "layer": -1, "lr_candidate": lr}
                     for lr, ce in search.items()]
            df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True)
    df = df.drop(columns=[c for c in ("model", "task", "k", "seed") if c in df.columns])
    return _with_precision(AnalysisResult(df.reset_index(drop=True)), params["precision"])


def _ivg_applies(model: str, task: str) -> str | None:
    if not is_token_model(model):
        return None if split_task(task)[0] == "linreg" else f"model {model!r} is a linear-regression model: use task 'linreg'"
    return _token_task_only(model, task)


GD_SUBSETS = ("all", "attn_kv", "one_layer_wv")


def _check_icl_vs_gd(model: str, task: str, k: int, params: dict[str, Any]) -> str | None:
    if k < 1:
        return f"k={k}: gradient descent on the demonstrations needs at least one; use k >= 1"
    sub = params["subset"]
    if sub not in GD_SUBSETS and not sub.startswith("re:"):
        return f"subset={sub!r}: use one of {', '.join(GD_SUBSETS)} or 're:REGEX' over parameter names"
    for key, low in (("n_tasks", 1), ("gd_steps", 1), ("epochs", 1), ("order_perms", 0)):
        if params[key] < low:
            return f"{key}={params[key]}: use {key} >= {low}"
    if not params["lr"] > 0:
        return f"lr={params['lr']}: the learning rate must be > 0"
    return _n_prompts_problem(params["n_prompts"], k)


register(AnalysisSpec(
    name="icl_vs_gd", fn=_icl_vs_gd,
    params={"n_prompts": 16, "n_tasks": 256, "gd_steps": 1, "subset": "attn_kv", "lr": 1e-2,
            "epochs": 5, "order_perms": 4, "order_prompts": 4, "optimizer": "sgd", "lr_grid": [],
            "lr_search_prompts": 4, "precision": "float32"},
    uses_task=True, uses_k=True,
    description="ICL against gradient descent on the same demonstrations (experiments.studies.icl_vs_gd); "
                "per-prompt (per-task) rows for experiments.studies.icl_vs_gd.icl_vs_gd_stats",
    requires=("experiments.studies.icl_vs_gd", "experiments.studies.gd"),
    applies=_ivg_applies,
    version=2,
    check_params=_check_icl_vs_gd,
))


# ------------------------------------------------------------------------------------ vectors
def _vectors(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
    """Task / function / in-context vectors (``experiments.studies.vectors_study.run_study``): the long
    accuracy table (metric ``accuracy``: every method x condition x layer/lambda x split), the
    summary at the layer/lambda chosen on dev (metric ``summary``, one row per method and
    condition, on the eval prompts) and the function-vector head AIE (metric ``aie``)."""

    model = get_model(model_name, params["precision"])
    kwargs: dict[str, Any] = {"methods": tuple(params["methods"]), "n_heads": params["n_heads"],
                              "n_aie_prompts": params["n_aie_prompts"]}
    if params["layers"]:
        kwargs["layers"] = list(params["layers"])
    if params["n_dev"]:
        kwargs["n_dev"] = params["n_dev"]
    if params["n_exact"]:
        kwargs["n_exact"] = params["n_exact"]
    out = vs.run_study(model, model_name, task, k=k, n_prompts=params["n_prompts"], seed=seed, **kwargs)
    drop = ("model", "task", "k", "seed")
    parts = []
    if "accuracy" in out:
        acc = out["accuracy"].rename(columns={"accuracy": "value"})
        acc["metric"] = "accuracy"
        parts.append(acc)
    if "summary" in out:
        summ = out["summary"]
        for cond in vs.CONDITIONS:
            if cond in summ.columns:
                part = summ[["method", "layer", "lam", "n_prompts", cond]].rename(columns={cond: "value"})
                part["condition"], part["metric"], part["split"] = cond, "summary", "eval"
                parts.append(part)
    if "per_prompt" in out:  # 0/1 outcome per prompt: vectors_study.vectors_stats pairs them
        pp = out["per_prompt"].copy()
        pp["metric"] = "correct"
        parts.append(pp)
    if "aie" in out:
        aie = out["aie"].rename(columns={"aie": "value"})
        aie["metric"] = "aie"
        parts.append(aie)
    df = pd.concat(parts, ignore_index=True)
    df = df.drop(columns=[c for c in drop if c in df.columns])
    for col in ("layer", "lam"):
        if col in df.columns:
            df[col] = df[col].astype(float)
    return _with_precision(AnalysisResult(df.reset_index(drop=True)), params["precision"])


register(AnalysisSpec(
    name="vectors", fn=_vectors,
    params={"n_prompts": 32, "n_dev": 0, "methods": ["task_vector", "function_vector"],
            "n_heads": 10, "n_aie_prompts": 16, "n_exact": 0, "layers": [], "precision": "float32"},
    uses_task=True, uses_k=True,
    description="task / function / in-context vectors against zero-shot, ICL and a random vector "
                "(experiments.studies.vectors_study)",
    requires=("experiments.studies.vectors_study",),
    applies=lambda m, t: _token_task_only(m, t) or (
        None if split_task(t)[0] in ("classify", "language", "fv", "file")
        else "the vectors study runs on classify and text tasks (language:, fv:, file:)"),
))
