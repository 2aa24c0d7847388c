"""What the analyses share: the per-process model cache, the precision, and the task hooks that
turn (model, task, k, seed) into a PromptBatch. Never imports ``modelinfo`` (which asks it for
prompt lengths)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from experiments import tasks
from experiments.models import pretrained, zoo
from experiments.models.loading import PRETRAINED_ALIASES, load_model
from experiments.runs.registry import PRECISIONS, AnalysisResult
from experiments.tasks import check_n_prompts


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


def with_precision(result: AnalysisResult, precision: str) -> AnalysisResult:
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


def call_accepted(fn: Callable, **kwargs: Any) -> Any:
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


def token_task_only(model: str, task: str) -> str | None:
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


def n_prompts_problem(n: int, k: int) -> str | None:
    try:
        check_n_prompts(n, 64 * (k + 1))
    except ValueError as err:
        return str(err)
    return None


