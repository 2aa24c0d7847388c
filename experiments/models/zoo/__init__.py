"""The built-in model zoo: small models the project trains itself, from a seed, on synthetic ICL tasks.

Each zoo model lives in ``experiments/models/zoo/checkpoints/NAME/`` as two files:

- ``model.safetensors``: the weights (never pickled);
- ``card.json``: the model card: architecture and config, training task, seed, steps, wall time,
  final metrics, package versions, and a free-text description;
- optionally ``series/``: checkpoints taken during training (``iclwb zoo train NAME --checkpoints
  N``; ``experiments.models.zoo.series``), the last of which is the final model.

A zoo entry is a ``ZooSpec`` declared in one module of this package and listed in ``ZOO_MODULES``.
``iclwb zoo train NAME`` calls ``spec.train(seed=..., steps=...)``, which returns the trained
model and the card fields; ``save_checkpoint`` writes both. ``load_zoo_model`` rebuilds the
architecture from the card and loads the weights.

Architectures (``card["arch"]``):

- ``"bridge-native"``: ``TransformerBridge.boot_native(TransformerBridgeConfig(**card["config"]))``;
- ``"module:package.module:Class"``: a ``HookedRootModule`` subclass with ``Class.from_config(dict)``
  (the linear-regression models, which read vectors rather than tokens). Only the project's own
  classes listed in ``MODULE_ARCHS`` are accepted: a card never makes the loader import other code.

The card records the sha256 of ``model.safetensors`` (``weights_sha256``); ``load_zoo_model``
refuses a checkpoint whose bytes differ from it, and any checkpoint with non-finite weights.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from probes.errors import WorkbenchError
from probes.hooked import HookedModel
from probes.provenance import file_sha256, package_versions

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"

# name -> module that defines its ZooSpec in a module-level ``SPECS`` dict
ZOO_MODULES: dict[str, str] = {
    "induction-2l": "experiments.models.zoo.induction",
    "icll-dfa": "experiments.models.zoo.icll_dfa",
    "icl-classify": "experiments.models.zoo.classify",
    "linreg-lsa-1l": "experiments.models.zoo.linreg",
    "linreg-gpt": "experiments.models.zoo.linreg",
    "icl-transience": "experiments.models.zoo.transience",
}


MODULE_ARCHS: frozenset[str] = frozenset({
    "module:experiments.models.zoo.linreg:LinearSelfAttention",
    "module:experiments.models.zoo.linreg:LinRegGPT",
})
"""The ``module:`` architectures a card may name (the project's own model classes)."""


class CheckpointError(WorkbenchError):
    """A zoo checkpoint that is damaged, altered, or names an architecture outside the project."""


@dataclass
class TrainResult:
    """What a zoo trainer returns: the model and the card fields it measured."""

    model: HookedModel
    arch: str
    config: dict[str, Any]
    task: dict[str, Any]
    steps: int
    metrics: dict[str, Any]
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ZooSpec:
    name: str
    description: str
    train: Callable[..., TrainResult]  # train(seed: int, steps: int | None, progress: bool)
    default_seed: int = 0


def names() -> list[str]:
    return sorted(ZOO_MODULES)


def get_spec(name: str) -> ZooSpec:
    if name not in ZOO_MODULES:
        raise KeyError(f"unknown zoo model {name!r}; built-in models: {', '.join(names())}")
    module = importlib.import_module(ZOO_MODULES[name])
    return module.SPECS[name]


def checkpoint_path(name: str) -> Path:
    return CHECKPOINT_DIR / name


def read_card(name: str, root: Path | None = None) -> dict[str, Any]:
    path = (root or CHECKPOINT_DIR) / name / "card.json"
    if not path.exists():
        raise FileNotFoundError(
            f"zoo model {name!r} has no checkpoint at {path.parent}; train it with "
            f"`iclwb zoo train {name}`"
        )
    return json.loads(path.read_text())


def build_model(arch: str, config: dict[str, Any]) -> HookedModel:
    """Construct an (untrained) model of the given architecture."""
    if arch == "bridge-native":

        # transformer_lens costs 3.9 s to import (python -X importtime) and ``experiments`` imports
        # this module for every iclwb command: it is imported when a model is built.
        from transformer_lens.config import TransformerBridgeConfig  # noqa: PLC0415 (start-up)
        from transformer_lens.model_bridge.sources.native import boot  # noqa: PLC0415 (start-up)

        return boot(TransformerBridgeConfig(**config))  # what TransformerBridge.boot_native calls
    if arch.startswith("module:"):
        if arch not in MODULE_ARCHS:
            raise CheckpointError(
                f"zoo architecture {arch!r} is not one of the project's model classes "
                f"({', '.join(sorted(MODULE_ARCHS))}); the card was edited or comes from elsewhere: "
                f"restore it (git checkout) or retrain the model with `iclwb zoo train NAME`")
        module_name, cls_name = arch[len("module:") :].split(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        return cls.from_config(config)
    raise CheckpointError(f"unknown zoo architecture {arch!r} (expected 'bridge-native' or 'module:pkg.mod:Class')")


def save_checkpoint(name: str, result: TrainResult, seed: int, train_seconds: float,
                    root: Path | None = None) -> Path:
    """Write model.safetensors + card.json atomically enough (card written last)."""
    out = (root or CHECKPOINT_DIR) / name
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in result.model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    card = {
        "name": name,
        "arch": result.arch,
        "weights_sha256": file_sha256(out / "model.safetensors"),
        "config": result.config,
        "task": result.task,
        "seed": seed,
        "steps": result.steps,
        "train_seconds": round(train_seconds, 1),
        "metrics": result.metrics,
        "notes": result.notes,
        "versions": package_versions(),
        "trained_at": time.strftime("%Y-%m-%d"),
        **result.extra,
    }
    tmp = out / "card.json.tmp"
    tmp.write_text(json.dumps(card, indent=2, default=_json_default) + "\n")
    tmp.replace(out / "card.json")
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_zoo_model(name: str, root: Path | None = None, device: str | None = None) -> HookedModel:
    """Rebuild a zoo model from its card and load its safetensors weights (no unpickling).

    Refuses (``CheckpointError``) a checkpoint whose sha256 differs from its card's
    ``weights_sha256``, one that is not valid safetensors, and one with non-finite weights.
    """
    card = read_card(name, root)
    weights = (root or CHECKPOINT_DIR) / name / "model.safetensors"
    fix = (f"restore the shipped file (git checkout -- {weights}) or retrain it with "
           f"`iclwb zoo train {name}`")
    if not weights.is_file():
        raise CheckpointError(f"zoo model {name!r} has a card but no weights at {weights}; {fix}")
    want = card.get("weights_sha256")
    if want and file_sha256(weights) != want:
        raise CheckpointError(f"the weights of zoo model {name!r} ({weights}) do not match the "
                              f"sha256 recorded in its card: the file is damaged or was changed; {fix}")
    model = build_model(card["arch"], card["config"])
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"the weights of zoo model {name!r} ({weights}) are not a valid "
                              f"safetensors file ({err}); {fix}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"the weights of zoo model {name!r} hold NaN or infinite values "
                              f"(in {', '.join(bad[:3])}); {fix}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _is_buffer_only(model, k)]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint of {name!r} does not match its architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; retrain with `iclwb zoo train {name}`"
        )
    model.eval()
    if device:
        model.to(device)
    model.zoo_card = card
    return model


def _is_buffer_only(model: HookedModel, key: str) -> bool:
    return key in dict(model.named_buffers())
