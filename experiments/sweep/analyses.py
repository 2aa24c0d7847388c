"""The analysis registry: what a sweep unit can compute.

An analysis is a function ``fn(model_name, task, k, seed, params) -> AnalysisResult``: a tidy
pandas table (one measurement per row, with at least the columns ``metric`` and ``value``; any
other columns are dimensions such as ``layer``, ``head``, ``step``, ``condition``) plus optional
tensor artefacts (attention maps, head-score tables) stored in safetensors beside the table.
The store adds the provenance columns; an analysis only measures.

Built in:

- ``head_scan``: every head score of ``experiments.scan.head_scan`` (layer x head tables); no
  task or k. Artefacts: each score table, and the attention maps of the scan's first prompt.
- ``circuit``: the summarize-merge-retrieve circuit with ablations (``circuits``), on a task at k.
- ``icl_vs_gd``: ICL against gradient descent on the same demonstrations
  (``experiments.icl_vs_gd.compare_icl_gd``), on a task at k.

Register more with ``register(AnalysisSpec(...))`` in a module named by a config's ``imports``.
Models are loaded once per worker process (``get_model``), so a worker that runs many units of
one model loads it once.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd


@dataclass
class AnalysisResult:
    table: pd.DataFrame
    tensors: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisSpec:
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

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.params)
        for key, val in given.items():
            if key not in self.params:
                allowed = ", ".join(sorted(self.params)) or "(none)"
                raise ValueError(f"unknown parameter {key!r} of analysis {self.name!r}; allowed: {allowed}")
            default = self.params[key]
            if default is not None and not _same_type(val, default):
                raise ValueError(f"parameter {key!r} must be {type(default).__name__} "
                                 f"(like its default {default!r}), got {type(val).__name__} {val!r}")
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


def _same_type(val: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(val, bool):
        return isinstance(val, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(val, (int, float))
    if isinstance(default, list):
        return isinstance(val, list)
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
@functools.lru_cache(maxsize=2)
def get_model(name: str):
    """The model, loaded once per process (two most recent kept)."""
    from experiments.models import load_model

    return load_model(name)


def is_token_model(name: str) -> bool:
    """False for the zoo's vector-input models (linear regression), which have no token vocabulary."""
    from experiments import zoo

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
    from experiments import tasks

    if task not in getattr(tasks, "TOKEN_TASKS", ()) and _cached_tokenizer(model) is None:
        return None  # do not load a whole model just to validate a config
    batch = make_task_batch(model, task, k, seed=0, n_prompts=16)
    if batch is None:
        return None
    return int(batch.lengths.max()) if hasattr(batch, "lengths") else None


def make_task_batch(model: str, task: str, k: int, seed: int, n_prompts: int, **options: Any):
    """A PromptBatch of ``task`` at ``k`` for ``model`` (None for vector tasks such as linreg)."""
    from experiments import tasks

    if task == "linreg":
        return None
    if task == "language" or task not in getattr(tasks, "TOKEN_TASKS", ()):
        tok = tokenizer_of(model)
        if tok is None:
            return None
        return tasks.get_task(task).make_prompts(tok, k, n_prompts, seed, **options)
    return tasks.make_prompts(task, k, n_prompts, seed, **options)


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(model: str):
    """The tokenizer from a local folder (no model weights loaded), or None."""
    from pathlib import Path

    d = Path(model)
    if model == "smollm2-135m":
        try:
            from experiments import pretrained

            d = pretrained.cache_dir(model)
        except Exception:
            return None
    if d.is_dir() and ((d / "tokenizer.json").exists() or (d / "tokenizer_config.json").exists()):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(d))
    return None


def tokenizer_of(model: str):
    """The tokenizer of a pretrained model (from its folder where possible, else the model's)."""
    return _cached_tokenizer(model) or getattr(get_model(model), "tokenizer", None)


# ------------------------------------------------------------------------------------ head_scan
def _head_scan(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
    import torch

    from experiments.scan import head_scan
    from probes.heads import attention_patterns

    model = get_model(model_name)
    kwargs: dict[str, Any] = {"seed": seed}
    if params.get("seg_len"):
        kwargs["seg_len"] = params["seg_len"]
    for key in ("n_prompts", "batch"):
        if params.get("n_prompts"):
            kwargs[key] = params["n_prompts"]
    with torch.no_grad():
        scan = _call(head_scan, model=model, **kwargs)
    rows, tensors = [], {}
    example = None
    for score_name, hs in scan.items():
        scores = hs.scores.detach().float().cpu()
        tensors[f"scores/{score_name}"] = scores.contiguous()
        for layer in range(scores.shape[0]):
            for head in range(scores.shape[1]):
                rows.append({"metric": score_name, "layer": layer, "head": head,
                             "value": float(scores[layer, head])})
        if example is None and getattr(hs, "tokens", None) is not None and hs.tokens.ndim == 2:
            example = hs.tokens[:1]
    if example is not None and params.get("save_attention", True):
        with torch.no_grad():
            pat = attention_patterns(model, example)  # [L, 1, H, q, k]
        tensors["attention/example0"] = pat[:, 0].float().contiguous()
        tensors["attention/example0_tokens"] = example[0].contiguous()
    return AnalysisResult(pd.DataFrame(rows), tensors)


register(AnalysisSpec(
    name="head_scan", fn=_head_scan,
    params={"seg_len": 0, "n_prompts": 0, "save_attention": True},
    uses_task=False, uses_k=False,
    description="layer x head scores (previous-token, induction, ...) from experiments.scan.head_scan",
    requires=("experiments.scan",),
    applies=lambda m, t: None if is_token_model(m) else "it reads vectors, not tokens (no head scan)",
))
