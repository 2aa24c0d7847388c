"""ICL task generators: prompts whose right answer is known, for any number of demonstrations k.

Every task lives in one module of this package, listed in ``TASKS`` (name -> module path) and
imported lazily by ``get_task(name)``, so listing tasks costs nothing and a task's heavy
dependencies (a tokenizer, say) load only when it is used.

The contract for token tasks
----------------------------
Each token-task module defines

    make_prompts(k: int, n_prompts: int, seed: int, **options) -> probes.prompt.PromptBatch

- ``k`` is the number of demonstrations before the query (what "demonstration" means is defined
  per task in its module docstring; 0 is allowed wherever the task has a meaning for it);
- ``n_prompts`` rows, generated deterministically from ``seed`` (same arguments, same tokens);
- every role is filled: ``demo_text``, ``forerunner``, ``label`` for each of the k
  demonstrations, ``query_text``, ``readout`` (the last real token, where the prediction is
  read), ``target`` (the correct next token at the read-out), and, where the task has them,
  ``candidates`` (the label tokens the answer is scored over), ``demo_class``/``query_class``;
- ``batch.meta`` holds ``{"task": name, "k": k, ...}`` plus the task's options and, per task,
  extra per-row ground truth documented in the module;
- the vocabulary is the task's own (``VOCAB_SIZE`` / ``token_names()`` in the module) for the
  synthetic tasks; a model trained on the task must use ``d_vocab >= VOCAB_SIZE``.

Exceptions: ``language.make_prompts(tokenizer, dataset, k, n_prompts, seed, **options)`` takes the model's
tokenizer first (its prompts are text), and ``linreg`` builds real-vector batches of its own type
rather than token PromptBatches (see ``experiments.tasks.linreg``).

Tasks
-----
- ``induction``: a random segment repeated (and Olsson et al.'s BOS + 25 tokens x 4 variant);
- ``icll``: in-context language learning on random DFAs (Akyürek et al. 2024), with the
  in-context n-gram baselines and the DFA accuracy / L1 metrics;
- ``kv-recall``: key-value recall, for any token model (``vocab=`` the model's d_vocab);
- ``classify``: few-shot classification with an arbitrary class-to-label mapping per prompt
  (Chan et al. 2022; Reddy 2023), with flipped-label and no-demonstration variants;
- ``linreg``: in-context linear regression (Garg et al. 2022; von Oswald et al. 2023);
- ``language``: natural-language tasks for pretrained models (``language:DATASET``);
- ``fv:NAME``: the standard suite, the 39 datasets of Todd et al. (2024) (``experiments.tasks.suite``;
  same prompt machinery and role tags as ``language``);
- ``file:PATH``: your own task, a JSONL or CSV file (``experiments.tasks.taskfile``).

``catalog()`` lists every concrete task name (``induction``, ``language:sentiment``,
``fv:antonym``, ...); ``task_batch(task, k, n_prompts, seed, tokenizer=..., **options)`` is the one function
that turns any of them into a PromptBatch (the sweep, the app, the studies, the notebooks and the
scripts all call it).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from experiments.tasks import language, suite, taskfile
from experiments.tasks.base import (
    BYTES_PER_PROMPT,
    BYTES_PER_TOKEN,
    TaskError,
    check_n_prompts,
)

__all__ = ["BYTES_PER_PROMPT", "BYTES_PER_TOKEN", "TASKS", "TEXT_FAMILIES", "TOKEN_TASKS", "TaskError",
           "catalog", "check_n_prompts", "get_task", "is_text_task", "names", "split", "task_batch",
           "task_problem"]

TASKS: dict[str, str] = {
    "induction": "experiments.tasks.induction",
    "icll": "experiments.tasks.icll",
    "classify": "experiments.tasks.classify",
    "linreg": "experiments.tasks.linreg",
    "language": "experiments.tasks.language",
    "kv-recall": "experiments.tasks.kv_recall",
}

TOKEN_TASKS: tuple[str, ...] = ("induction", "icll", "classify", "kv-recall")
"""Tasks whose ``make_prompts(k, n_prompts, seed, **options)`` needs nothing else."""


def names() -> list[str]:
    """All registered task names."""
    return sorted(TASKS)


def get_task(name: str) -> ModuleType:
    """The module of task ``name`` (imported on first use)."""
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; registered tasks: {', '.join(names())}")
    return importlib.import_module(TASKS[name])


TEXT_FAMILIES: tuple[str, ...] = ("language", "fv", "file")
"""Task families whose prompts are text, built with the model's tokenizer (``FAMILY:NAME``)."""


def split(task: str) -> tuple[str, str]:
    """``"language:sentiment"`` -> ("language", "sentiment"); ``"classify"`` -> ("classify", "")."""
    base, _, option = task.partition(":")
    return base, option


def is_text_task(task: str) -> bool:
    """True for tasks whose prompts need a tokenizer (language, fv and file tasks)."""
    return split(task)[0] in TEXT_FAMILIES


def catalog(include_language: bool = True) -> list[str]:
    """Every concrete task name: the token tasks, ``linreg``, ``language:DATASET`` and ``fv:NAME``
    (task files are named by their path, ``file:PATH``)."""

    out = list(TOKEN_TASKS) + ["linreg"]
    if include_language:

        out += [f"language:{d}" for d in language.DATASETS]
    return out + suite.task_names()


def task_problem(task: str) -> str | None:
    """None when ``task`` names a task (without building prompts), else what is wrong with it."""
    base, option = split(task)
    allowed = (", ".join(names()) + " (language:DATASET, fv:NAME for the standard suite, "
               "file:PATH for your own JSONL/CSV file)")
    if base == "fv":

        if option not in suite.names():
            return f"unknown suite task {task!r}; fv:NAME with NAME one of {', '.join(suite.names())}"
        return None
    if base == "file":

        try:
            taskfile.load(option)
        except TaskError as err:
            return str(err)
        return None
    if base not in TASKS:
        return f"unknown task {task!r}; allowed: {allowed}"
    if base == "language":

        if option not in language.DATASETS:
            return (f"the language task needs a dataset: language:DATASET with DATASET one of "
                    f"{', '.join(sorted(language.DATASETS))}")
    elif option:
        return f"task {base!r} takes no ':{option}' option; allowed: {allowed}"
    return None


def task_batch(task: str, k: int, n_prompts: int, seed: int = 0, tokenizer: Any = None,
               **options: Any):
    """The one path from a task name to prompts: a PromptBatch of ``task`` with ``k``
    demonstrations, ``n_prompts`` rows, deterministic in ``seed``.

    ``task``: a token task (``induction``, ``icll``, ``classify``: ``options`` go to its
    ``make_prompts``), ``language:DATASET``, ``fv:NAME`` or ``file:PATH`` (text tasks: need the
    model's ``tokenizer``; ``options`` are ``language.make_prompts``'s: label_set, template,
    multi_token, ...), or ``linreg`` (its own LinRegBatch). ``batch.meta["task_name"]`` is
    ``task``.
    """
    why = task_problem(task)
    if why:
        raise TaskError(why)
    base, option = split(task)
    if base in TEXT_FAMILIES:
        if tokenizer is None:
            raise TaskError(f"task {task!r} is text: it needs the model's tokenizer (a pretrained "
                            f"model such as smollm2-135m or gemma3-270m)")
        dataset = option if base == "language" else task
        batch = get_task("language").make_prompts(tokenizer, dataset=dataset, k=k,
                                                  n_prompts=n_prompts, seed=seed, **options)
    else:
        batch = get_task(base).make_prompts(k, n_prompts, seed, **options)
    meta = getattr(batch, "meta", None)
    if isinstance(meta, dict):
        meta["task_name"] = task
    return batch
