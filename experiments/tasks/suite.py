"""The standard ICL task suite: the datasets of Todd et al. (2024), "Function Vectors in Large
Language Models" (ICLR 2024; https://github.com/ericwtodd/function_vectors, ``dataset_files/`` at
commit fb9eac7b), shipped unchanged as package data under ``experiments/tasks/data/
function_vectors/`` with their MIT licence notice (``LICENSE`` there; Copyright (c) 2023 Eric Todd).

27 abstractive tasks (the answer is not in the prompt: ``antonym``, ``country-capital``,
``english-french``, ``present-past``, ``singular-plural``, ``person-occupation``, ...) and 12
extractive ones (the answer is one of the three items listed in the input: ``choose_first_of_3``,
``alphabetically_first_3``, ``animal_v_object_3``, ...). Each is the task ``fv:NAME``, built by
``experiments.tasks.language.make_prompts`` exactly like the built-in language tasks (same
template machinery, the same role tags; see that module), so every analysis accepts it.

- Template: ``"{x}: {y}\\n"`` (``language.OPEN_TEMPLATE``) unless ``template=`` says otherwise.
- Classification: a dataset whose answers take at most ``MAX_CLASSES`` distinct values
  (``sentiment``: positive/negative; ``person-instrument``; ``person-sport``) is a classification
  task: classes are the sorted answers, ``candidates`` their first tokens, label sets
  ``natural`` / ``flipped`` (each class shown with the next class's label) / ``arbitrary``.
- Multi-token answers follow the rule of ``language.make_prompts`` (``multi_token="first"``):
  the answer is scored by its first token; an item is kept unless another answer of the dataset
  with different text starts with the same token (then first-token accuracy could not tell them
  apart). ``item_report`` counts, per task and tokenizer, how many items each rule keeps.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.tasks.base import TaskError
from experiments.tasks.text import OPEN_TEMPLATE, Dataset, answer_counts

DATA_DIR = Path(__file__).parent / "data" / "function_vectors"
SOURCE = ("Todd et al. (2024), Function Vectors in Large Language Models; "
          "github.com/ericwtodd/function_vectors (dataset_files/, commit fb9eac7b), MIT License")
PREFIX = "fv:"
MAX_CLASSES = 5
KINDS = ("abstractive", "extractive")


@functools.lru_cache(maxsize=1)
def _files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for kind in KINDS:
        for f in sorted((DATA_DIR / kind).glob("*.json")):
            out[f.stem] = f
    return out


def names(kind: str | None = None) -> list[str]:
    """Dataset names (without the ``fv:`` prefix), optionally of one kind."""
    return [n for n, f in _files().items() if kind is None or f.parent.name == kind]


def task_names(kind: str | None = None) -> list[str]:
    """The registry's task names: ``fv:NAME`` for every dataset."""
    return [PREFIX + n for n in names(kind)]


def kind_of(name: str) -> str:
    return _path(name).parent.name


def _path(name: str) -> Path:

    bare = name[len(PREFIX):] if name.startswith(PREFIX) else name
    files = _files()
    if bare not in files:
        raise TaskError(f"unknown suite task {name!r}; use fv:NAME with NAME one of {', '.join(files)}")
    return files[bare]


@functools.cache
def get_dataset(name: str) -> Any:
    """The ``language.Dataset`` of suite task ``name`` (``fv:antonym`` or ``antonym``)."""

    path = _path(name)
    pairs = [(str(d["input"]), str(d["output"])) for d in json.loads(path.read_text())]
    answers = sorted({y for _, y in pairs})
    desc = f"{path.parent.name} task {path.stem} ({SOURCE})"
    if len(answers) <= MAX_CLASSES:
        classes = tuple(answers)
        index = {c: i for i, c in enumerate(classes)}
        label_sets = {
            "natural": classes,
            "flipped": classes[1:] + classes[:1],
            "arbitrary": ("foo", "bar", "baz", "qux", "zap")[: len(classes)],
        }
        return Dataset(PREFIX + path.stem, desc, tuple((x, index[y]) for x, y in pairs), classes,
                       label_sets, template=OPEN_TEMPLATE)
    return Dataset(PREFIX + path.stem, desc, tuple(pairs), template=OPEN_TEMPLATE)


def item_report(tokenizer: Any, tasks: Iterable[str] | None = None, template: str | None = None,
                tokenizer_name: str = "") -> "Any":
    """Per task: items, answers that are one token, items kept by the first-token rule (the
    default) and by the single-token rule, for ``tokenizer`` (a pandas DataFrame)."""


    rows = []
    for name in (list(tasks) if tasks is not None else task_names()):
        ds = get_dataset(name)
        tab = answer_counts(tokenizer, ds, template)
        rows.append({"tokenizer": tokenizer_name, "task": ds.name, "kind": kind_of(ds.name),
                     "classification": ds.is_classification, **tab})
    return pd.DataFrame(rows)


__all__ = ["DATA_DIR", "SOURCE", "get_dataset", "item_report", "kind_of", "names", "task_names"]
