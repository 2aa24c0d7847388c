"""Hugging Face checkpoints: a local folder (checked before loading) or a hub name."""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path
from typing import Any

from probes.errors import WorkbenchError
from probes.hooked import HookedModel

# transformer_lens and transformers are imported where a checkpoint is loaded, not here: importing
# transformer_lens.model_bridge costs 3.9 s (measured with python -X importtime), and this module
# is imported by ``experiments`` itself, so every ``iclwb`` command (``iclwb --help`` included)
# would pay it.


class ModelLoadError(WorkbenchError):
    """A model spec that cannot be loaded; the message says what to do instead."""


@functools.lru_cache(maxsize=1)
def _official_hub_names() -> frozenset[str]:
    try:
        from transformer_lens.supported_models import _model_alias_map  # noqa: PLC0415 (start-up)

        names = set(_model_alias_map())
        names |= set(_model_alias_map().values())
        return frozenset(names)
    except Exception:  # pragma: no cover - depends on the TL version
        return frozenset()


def _is_hub_name(spec: str) -> bool:
    if spec.count("/") == 1 and all(spec.split("/")):
        return True
    return spec in _official_hub_names()


def load_hf_directory(path: Path, device: str | None = None, **kwargs: Any) -> HookedModel:
    """A local Hugging Face checkpoint folder, through ``TransformerBridge.boot_transformers``.

    The folder is checked first (``check_hf_directory``): a readable config.json naming a model
    type, and complete safetensors weights (pickled ``.bin``/``.pt`` files are never loaded).
    """
    check_hf_directory(path)
    from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415 (start-up, see top)

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
    from transformers import CONFIG_MAPPING  # noqa: PLC0415 (start-up, see top)

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


def load_hub_model(name: str, device: str | None = None, **kwargs: Any) -> HookedModel:
    """A hub model by name; a clear error when neither the hub nor its cache has it."""
    from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415 (start-up, see top)

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


