"""What a sweep needs to know about a model or task *without loading it*: does the name exist,
its context length, how many demonstrations fit, and the checkpoint hash recorded as provenance."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from experiments import tasks
from experiments.models import pretrained, zoo
from experiments.models.loading import PRETRAINED_ALIASES
from experiments.runs.inputs import task_prompt_len
from probes.provenance import file_sha256

SMOLLM2_N_CTX = 8192
PRETRAINED_N_CTX = {"smollm2-135m": SMOLLM2_N_CTX, "gemma3-270m": 32768}


def builtin_names() -> list[str]:

    return zoo.names() + list(PRETRAINED_ALIASES)


def check_model_name(name: str) -> None:
    """Raise ValueError naming the allowed models when ``name`` cannot be loaded."""
    if name in zoo.ZOO_MODULES:
        if not (zoo.checkpoint_path(name) / "card.json").exists():
            raise ValueError(f"zoo model {name!r} has no checkpoint yet; train it with "
                             f"`iclwb zoo train {name}`")
        return
    if name in builtin_names():
        return
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ValueError(f"model directory {name!r} has no config.json (not a Hugging Face checkpoint)")
        return
    if name.count("/") == 1 and all(name.split("/")):

        if not (pretrained.hub_cached(name) or pretrained.hub_reachable()):
            raise ValueError(
                f"hub model {name!r} is not in the local Hugging Face cache and the hub is "
                f"unreachable; download it where the hub is reachable (huggingface-cli download "
                f"{name} --local-dir DIR) and name the folder DIR instead")
        return
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join(builtin_names())}, "
                     f"a local Hugging Face checkpoint directory, or a hub name 'org/name'")


def _config_int(name: str, zoo_keys: tuple[str, ...], hf_keys: tuple[str, ...],
                pretrained: dict[str, int]) -> int | None:
    """The first of ``zoo_keys`` in a zoo card's config, or of ``hf_keys`` in a checkpoint folder's
    config.json, without loading the model (None when unknown)."""
    if name in zoo.ZOO_MODULES:
        try:
            cfg = zoo.read_card(name).get("config", {})
        except FileNotFoundError:
            return None
        keys = zoo_keys
    elif name in pretrained:
        return pretrained[name]
    else:
        p = Path(name).expanduser() / "config.json"
        try:
            cfg = json.loads(p.read_text()) if p.exists() else {}
        except (OSError, ValueError):
            return None
        keys = hf_keys
    for key in keys:
        if isinstance(cfg, dict) and key in cfg:
            return int(cfg[key])
    return None


@functools.cache
def n_ctx(name: str) -> int | None:
    return _config_int(name, ("n_ctx", "max_points", "n_positions"),
                       ("n_ctx", "max_position_embeddings", "n_positions"), PRETRAINED_N_CTX)


PRETRAINED_N_LAYERS = {"smollm2-135m": 30, "gemma3-270m": 18}


@functools.cache
def n_layers(name: str) -> int | None:
    """Number of layers of ``name`` read from its card or config.json (None when unknown)."""
    return _config_int(name, ("n_layers",), ("num_hidden_layers", "n_layer", "n_layers"), PRETRAINED_N_LAYERS)


def task_names() -> list[str]:
    return tasks.names()


def prompt_len(model: str, task: str, k: int) -> int | None:
    """Longest k-shot prompt of ``task`` for ``model`` in tokens (None when it cannot be told
    without loading a model)."""

    return task_prompt_len(model, task, k)


def zoo_max_k(model: str) -> int | None:
    """The zoo's vector models declare the largest k they were built for (``max_k``)."""
    if model in zoo.ZOO_MODULES:
        try:
            cfg = zoo.read_card(model).get("config", {})
        except FileNotFoundError:
            return None
        if "max_k" in cfg:
            return int(cfg["max_k"])
    return None


def k_problem(model: str, task: str, k: int) -> str | None:
    """None when a k-shot prompt of ``task`` fits ``model``'s context, else what is wrong."""
    mk = zoo_max_k(model)
    if mk is not None:
        return None if k <= mk else (f"k={k} is larger than model {model!r} allows "
                                     f"(max_k={mk}); use k <= {mk}")
    ctx = n_ctx(model)
    if ctx is None or not task:
        return None
    try:
        n = prompt_len(model, task, k)
    except Exception:  # a task that cannot build k-shot prompts reports it when run
        return None
    if n is None or n <= ctx:
        return None
    lo, hi = 0, k  # largest fitting k, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            ok = (prompt_len(model, task, mid) or 0) <= ctx
        except Exception:
            ok = False
        lo, hi = (mid, hi) if ok else (lo, mid - 1)
    return (f"k={k} does not fit the context of model {model!r} on task {task!r}: its prompts "
            f"are {n} tokens, n_ctx={ctx}; at most k={lo} fits, use k <= {lo}")


# ------------------------------------------------------------------------------------ provenance
@functools.cache
def _cached_file_hash(path: str, mtime: float, size: int) -> str:
    return file_sha256(path)


def file_hash(path: Path) -> str:
    st = path.stat()
    return _cached_file_hash(str(path), st.st_mtime, st.st_size)


def weight_files(name: str) -> list[Path]:
    if name in zoo.ZOO_MODULES:
        return [zoo.checkpoint_path(name) / "model.safetensors"]
    if name in PRETRAINED_N_CTX:  # the weights load_model would load: hub snapshot or GGUF

        try:
            return pretrained.weight_files(name)
        except ValueError:  # no offline copy installed: nothing local to hash
            return []
    p = Path(name).expanduser()
    if p.is_dir():
        return sorted(list(p.glob("*.safetensors")) + list(p.glob("*.bin")) + list(p.glob("*.gguf")))
    return []


def weights_size(name: str) -> int:
    """Bytes of the model's checkpoint files (0 when unknown): a proxy for a unit's cost."""
    return sum(f.stat().st_size for f in weight_files(name) if f.exists())


def model_hash(name: str) -> str:
    """sha256 of the checkpoint file(s) the model is loaded from ("unknown" when not local)."""
    files = [f for f in weight_files(name) if f.exists()]
    if not files:
        return "unknown"
    if len(files) == 1:
        return file_hash(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(file_hash(f).encode())
    return h.hexdigest()


def describe(name: str) -> dict[str, Any]:
    return {"model": name, "n_ctx": n_ctx(name), "model_hash": model_hash(name)}


def git_commit(root: Path | None = None) -> str:
    """HEAD of the repository this package lives in, '+dirty' when the tracked tree differs."""

    root = root or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        if not head:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def host() -> str:
    return os.uname().nodename
