"""What kind of model a name loads to, its summary and its token labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiments import tasks
from probes.errors import WorkbenchError
from probes.hooked import HookedModel


class AppInputError(WorkbenchError):
    """Input the app cannot use (unknown task, bad token, empty results folder); says the fix."""


def model_kind(model: HookedModel) -> str:
    """``"text"`` (has a tokenizer), ``"tokens"`` (token ids, no tokenizer) or ``"vector"``.

    Vector models (the linear-regression zoo) read real vectors, not token ids.
    """
    cfg = getattr(model, "cfg", None)
    if getattr(model, "tokenizer", None) is not None:
        return "text"
    if cfg is None or getattr(cfg, "d_vocab", None) in (None, 0, -1):
        return "vector"
    card = getattr(model, "zoo_card", None) or {}
    if str(card.get("arch", "")).startswith("module:"):
        return "vector"
    return "tokens"


def model_summary(model: HookedModel, name: str = "") -> dict[str, Any]:
    """The numbers the app shows about a model (layers, heads, context, vocabulary, kind)."""
    cfg = getattr(model, "cfg", None)
    return {
        "name": name,
        "kind": model_kind(model),
        "n_layers": int(getattr(cfg, "n_layers", 0) or 0),
        "n_heads": int(getattr(cfg, "n_heads", 0) or 0),
        "n_ctx": int(getattr(cfg, "n_ctx", 0) or 0),
        "d_vocab": int(getattr(cfg, "d_vocab", 0) or 0),
    }


def token_symbols(model: HookedModel) -> list[str] | None:
    """A zoo model's printable vocabulary (``card["task"]["symbols"]`` or similar), if it has one."""
    card = getattr(model, "zoo_card", None) or {}
    for where in (card.get("task", {}), card, card.get("extra", {})):
        if not isinstance(where, dict):
            continue
        for key in ("symbols", "vocab_symbols", "token_names", "itos"):
            val = where.get(key)
            if isinstance(val, list) and val:
                return [str(s) for s in val]
    own = card_task_name(model)
    for name in tasks.TOKEN_TASKS if own else ():
        if own == name or own.startswith(name):
            mod = tasks.get_task(name)
            if callable(getattr(mod, "token_names", None)):
                return [str(s) for s in mod.token_names()]
    return None


def card_task_name(model: HookedModel) -> str:
    """The task a zoo model was trained on (its card's ``task.name``), or ""."""
    card = getattr(model, "zoo_card", None) or {}
    task = card.get("task", {})
    return str(task.get("name", "") if isinstance(task, dict) else task)


def token_labels(model: HookedModel, tokens: Sequence[int]) -> list[str]:
    """A short printable label per token (decoded text, symbol, or the id)."""
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        return [tok.decode([int(t)]) for t in tokens]
    syms = token_symbols(model)
    if syms:
        return [syms[int(t)] if 0 <= int(t) < len(syms) else str(int(t)) for t in tokens]
    return [str(int(t)) for t in tokens]
