"""Evaluating many interventions at once (``circuits.interventions`` describes and compiles them).

``sweep(model, batch, interventions, metric, ...)`` evaluates each intervention separately, batched:
the prompt batch is replicated once per intervention and every intervention edits only its own
slice, in one forward per chunk. ``readout_forward`` stops at the unembedding's input and reads
the logits at the read-out positions only. Where a model allows it, a head-output (``hook_z``)
edit is evaluated from that head's layer on ("resuming at a head's output") instead of re-running
the layers before it.
"""

from __future__ import annotations

import contextlib
import math
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from circuits.interventions import (
    Edit,
    Intervention,
    InterventionError,
    capture_sites,
    compile_edits,
    intervene,
    make_hooks,
    seed_of,
    source_values,
    stack_edits,
    strict_hooks,
)
from probes.capture import StopForward
from probes.prompt import PromptBatch


# ---------------------------------------------------------------------- forwards
def readout_forward(model: Any, tokens: Tensor, readout: Tensor,
                    fwd_hooks: Sequence[tuple[str, Callable[..., Any]]] = (),
                    resid: Tensor | None = None, start_at_layer: int | None = None) -> Float[Tensor, "rows vocab"]:
    """Logits at the read-out positions only: the forward stops at the unembedding's input.

    With ``resid`` and ``start_at_layer`` the forward resumes from that layer's residual stream.
    """
    rows = torch.arange(tokens.shape[0])
    captured: dict[str, Tensor] = {}
    stop_name = "unembed.hook_in" if "unembed.hook_in" in model.hook_dict else None

    def grab(x: Tensor, hook: Any) -> None:
        captured["x"] = x[rows, readout.to(x.device)]
        raise StopForward

    hooks = list(fwd_hooks) + ([(stop_name, grab)] if stop_name else [])
    inp = tokens if resid is None else resid
    kw = {} if start_at_layer is None else {"start_at_layer": start_at_layer}
    with strict_hooks(), model.hooks(fwd_hooks=hooks), skipped_blocks(model, start_at_layer or 0):
        try:
            logits = model(inp, **kw)
        except StopForward:
            logits = None
    if logits is not None:
        return logits[rows, readout.to(logits.device)]
    return model.unembed(captured["x"][:, None, :])[:, 0]


_RESUME_MODE: "weakref.WeakKeyDictionary[Any, str | None]" = weakref.WeakKeyDictionary()


def can_resume(model: Any) -> bool:
    """Whether ``model(resid, start_at_layer=l)`` with the blocks below l skipped (``skipped_blocks``)
    reproduces the full forward (checked once per model, from layer 1 and from the middle layer)."""
    return _resume_mode(model) is not None


def _resume_mode(model: Any) -> str | None:
    """What a skipped block returns so that the model's block loop accepts it ("tensor": Hugging Face
    decoder layers; "tuple": the native source's blocks), or None if resuming does not reproduce the
    full forward either way."""
    if model not in _RESUME_MODE:
        _RESUME_MODE[model] = None
        L = int(model.cfg.n_layers)
        toks = torch.randint(0, int(model.cfg.d_vocab), (2, 6), generator=torch.Generator().manual_seed(0))
        for mode in ("tensor", "tuple") if L >= 2 else ():
            try:
                with torch.no_grad():
                    full = model(toks)
                    ok = True
                    for start in sorted({1, L // 2}):
                        mid = model(toks, stop_at_layer=start)
                        with _passed_through(model, start, mode):
                            res = model(mid, start_at_layer=start)
                        ok = ok and bool(torch.allclose(full, res, atol=1e-5, rtol=1e-4))
            except Exception:
                ok = False
            if ok:
                _RESUME_MODE[model] = mode
                break
    return _RESUME_MODE[model]


@contextlib.contextmanager
def skipped_blocks(model: Any, start: int) -> Iterator[None]:
    """Blocks below ``start`` pass their input through unchanged while the context is open, where
    ``can_resume`` found that this reproduces the full forward (else nothing changes).

    TransformerBridge's ``start_at_layer`` swaps the caller's residual stream in at block ``start``
    but still runs every block below it (on the embeddings, and throws that work away), so resuming
    saved nothing. With those blocks passed through, a resumed forward costs only the layers it
    computes.
    """
    mode = _resume_mode(model) if start > 0 else None
    if mode is None:
        yield
        return
    with _passed_through(model, start, mode):
        yield


@contextlib.contextmanager
def _passed_through(model: Any, start: int, mode: str) -> Iterator[None]:
    # the wrapped module is replaced, so the bridge block still runs its hooks around it
    inner = [getattr(b, "original_component", None) or b for b in list(getattr(model, "blocks", []))[:start]]
    saved = [m.__dict__.get("forward") for m in inner]
    skip = _pass_tensor if mode == "tensor" else _pass_tuple
    for m in inner:  # object.__setattr__: bridge components forward attribute writes to the HF module
        object.__setattr__(m, "forward", skip)
    try:
        yield
    finally:
        for m, prev in zip(inner, saved):
            if prev is None:
                object.__delattr__(m, "forward")
            else:
                object.__setattr__(m, "forward", prev)


def _pass_tensor(*args: Any, **kwargs: Any) -> Any:
    return args[0] if args else kwargs["hidden_states"]


def _pass_tuple(*args: Any, **kwargs: Any) -> Any:
    return (_pass_tensor(*args, **kwargs),)


Metric = Callable[[Float[Tensor, "batch vocab"], PromptBatch], Tensor]


def sweep(model: Any, batch: PromptBatch, interventions: Sequence[Intervention], metric: Metric,
          source: PromptBatch | None = None, reference: PromptBatch | None = None,
          max_rows: int = 512, share_prefix: bool = True) -> Tensor:
    """``metric`` under each intervention separately, batched along the batch axis.

    Returns ``torch.stack([metric(logits_i, batch) for each intervention i])``: the same numbers as
    looping ``intervene`` one intervention at a time. The batch is replicated once per intervention
    (at most ``max_rows`` rows per forward); with ``share_prefix`` interventions whose first layer is
    l resume from the shared unedited residual stream at layer l instead of recomputing layers < l.
    """
    if not interventions:
        raise InterventionError("sweep needs at least one intervention")
    batch = batch.require_rows("sweep").trim()
    B = batch.batch_size
    per_iv = [compile_edits(model, iv, batch) for iv in interventions]
    # head-output (hook_z) edits of one layer resume from that hook: see ``_tail_logits``
    tail_layer = [_z_edit_layer(es) for es in per_iv]
    if not (share_prefix and any(t is not None for t in tail_layer) and can_tail(model)):
        tail_layer = [None] * len(per_iv)
    tail_idx = [i for i, t in enumerate(tail_layer) if t is not None]
    rest = [i for i, t in enumerate(tail_layer) if t is None]
    clean, source_cache = _tail_captures(model, batch, source, [per_iv[i] for i in tail_idx],
                                         {t for t in tail_layer if t is not None})
    values = source_values(model, [e for es in per_iv for e in es], batch, source, reference,
                           seed=seed_of(list(interventions)), source_cache=source_cache)
    results: dict[int, Tensor] = {}
    per_chunk = max(1, max_rows // B)
    if tail_idx:
        W = _tail_weights(model)
        by_layer: dict[int, list[int]] = {}
        for i in tail_idx:
            by_layer.setdefault(int(tail_layer[i]), []).append(i)  # type: ignore[arg-type]
        with torch.no_grad():
            for l, items in sorted(by_layer.items()):
                for c in range(0, len(items), per_chunk):
                    chunk = items[c:c + per_chunk]
                    n = len(chunk)
                    ((_, edit),) = make_hooks(stack_edits(model, [per_iv[j] for j in chunk]), values, n)
                    logits = _tail_logits(model, W, l, clean[f"blocks.{l}.hook_resid_pre"],
                                          clean[f"blocks.{l}.attn.hook_z"], edit, n, batch.readout)
                    logits = einops.rearrange(logits, "(n b) v -> n b v", n=n)
                    for j, idx in enumerate(chunk):
                        results[idx] = metric(logits[j], batch)
    if not rest:
        return torch.stack([results[j] for j in range(len(interventions))])
    first = {i: min(interventions[i].layers) for i in rest}
    resume = share_prefix and any(f > 0 for f in first.values()) \
        and _prefix_pays(model, B, list(first.values()), max_rows) and can_resume(model)
    resid: dict[int, Tensor] = {}
    if resume:
        names = {f"blocks.{f}.hook_resid_pre" for f in set(first.values()) if f > 0}
        with torch.no_grad():
            resid = {int(n.split(".")[1]): v for n, v in capture_sites(model, batch.tokens, names).items()}
    order = sorted(rest, key=lambda i: first[i]) if resume else list(rest)
    i = 0
    while i < len(order):
        start_layer = first[order[i]] if resume else 0
        chunk = [order[i]]
        i += 1
        while i < len(order) and len(chunk) < per_chunk and (not resume or first[order[i]] == start_layer):
            chunk.append(order[i])
            i += 1
        n = len(chunk)
        hooks = make_hooks(stack_edits(model, [per_iv[j] for j in chunk]), values, n)
        readout = batch.readout.repeat(n)
        if start_layer > 0:
            r = resid[start_layer]
            logits = readout_forward(model, batch.tokens.repeat(n, 1), readout, hooks,
                                     resid=r.repeat((n,) + (1,) * (r.ndim - 1)), start_at_layer=start_layer)
        else:
            logits = readout_forward(model, batch.tokens.repeat(n, 1), readout, hooks)
        logits = einops.rearrange(logits, "(n b) v -> n b v", n=n)
        for j, idx in enumerate(chunk):
            results[idx] = metric(logits[j], batch)
    return torch.stack([results[j] for j in range(len(interventions))])


def _prefix_pays(model: Any, B: int, first: Sequence[int], max_rows: int,
                 overhead_rows: int = 8) -> bool:
    """Whether resuming from shared residual streams saves work, in row-layers computed.

    Each extra forward costs about ``overhead_rows`` rows' worth of work per layer (Python and
    kernel-launch overhead, measured on CPU bridges); sharing adds one capture forward and one
    forward per distinct first layer.
    """
    L = int(model.cfg.n_layers)
    per_chunk = max(1, max_rows // B)
    plain = len(first) * B * L + math.ceil(len(first) / per_chunk) * overhead_rows * L
    groups = {f: sum(1 for x in first if x == f) for f in set(first)}
    shared = B * L + overhead_rows * L + sum(
        n * B * (L - f) + math.ceil(n / per_chunk) * overhead_rows * (L - f) for f, n in groups.items())
    return shared < plain


def sweep_looped(model: Any, batch: PromptBatch, interventions: Sequence[Intervention], metric: Metric,
                 source: PromptBatch | None = None, reference: PromptBatch | None = None) -> Tensor:
    """The one-forward-per-intervention reference for ``sweep`` (same numbers, slower)."""
    batch = batch.trim()
    out = []
    for iv in interventions:
        with intervene(model, [iv], batch, source, reference):
            logits = model(batch.tokens)
        out.append(metric(logits[torch.arange(batch.batch_size), batch.readout], batch))
    return torch.stack(out)


def layer_window(n_layers: int, start: float = 0.0, end: float = 0.25) -> list[int]:
    """Layers floor(start*L) .. floor(end*L)-1 (Cho et al.'s window), at least one layer.

    For L=2 the default first quarter is empty by the paper's formula (floor(0.5) = 0), so the
    window is widened to layer 0 alone; the caller should report the layers actually used.
    """
    a, b = math.floor(start * n_layers), math.floor(end * n_layers)
    if b <= a:
        b = a + 1
    return list(range(a, min(b, n_layers)))


# ---------------------------------------------------------------------- resuming at a head's output
# An edit of hook_z at layer l leaves everything before it as in the clean run, and only the
# read-out position of the last layer reaches the metric. So a sweep of such edits starts from the
# clean run's resid_pre[l] and z[l] (captured once, together with the source run), recomputes
# attn_out[l] = z W_O + b_O with the edited z, block l's MLP, the middle layers at every position,
# and the last layer only for the read-out query. It uses the model's own layer norms, MLPs,
# final norm and unembedding and its W_Q/W_K/W_V/W_O; ``can_tail`` checks once per model that this
# reproduces the full forward (else the sweep runs whole forwards with hooks).
_TAIL_OK: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
_Z_HOOK = re.compile(r"blocks\.(\d+)\.attn\.hook_z")


def _z_edit_layer(edits: Sequence[Edit]) -> int | None:
    """The layer when every edit replaces hook_z of that one layer, else None."""
    hooks = {e.hook for e in edits}
    if len(hooks) != 1 or any(e.op != "replace" for e in edits):
        return None
    m = _Z_HOOK.fullmatch(next(iter(hooks)))
    return int(m.group(1)) if m else None


def _tail_captures(model: Any, batch: PromptBatch, source: PromptBatch | None,
                   edits: Sequence[list[Edit]], layers: set[int]) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Clean resid_pre/z at ``layers`` and the source run's patched hooks, in one forward if possible."""
    if not layers:
        return {}, None
    names = {f"blocks.{l}.hook_resid_pre" for l in layers} | {f"blocks.{l}.attn.hook_z" for l in layers}
    patched = {e.hook for es in edits for e in es if e.source == "patch"}
    B = batch.batch_size
    if patched and source is not None and source.tokens.shape == batch.tokens.shape:
        both = capture_sites(model, torch.cat([batch.tokens, source.tokens]), names | patched, stop_early=True)
        return {n: both[n][:B] for n in names}, {n: both[n][B:] for n in patched}
    return capture_sites(model, batch.tokens, names, stop_early=True), None


def _tail_weights(model: Any) -> dict[str, Any]:
    """Per-layer attention weights as [d_model, heads*d_head] matrices, and the score scale."""
    cfg = model.cfg
    H, dh = int(cfg.n_heads), int(cfg.d_head)
    w: dict[str, Any] = {}
    for name in ("Q", "K", "V"):
        W, b = getattr(model, f"W_{name}").detach(), getattr(model, f"b_{name}").detach()
        w[name] = [(einops.rearrange(W[l], "h d e -> d (h e)").contiguous(), b[l].reshape(-1))
                   for l in range(int(cfg.n_layers))]
    W_O, b_O = model.W_O.detach(), model.b_O.detach()
    w["O"] = [(einops.rearrange(W_O[l], "h e d -> (h e) d").contiguous(), b_O[l]) for l in range(int(cfg.n_layers))]
    s = float(getattr(cfg, "attn_scale", -1.0) or -1.0)
    w["scale"] = s if getattr(cfg, "use_attn_scale", True) and s > 0 else math.sqrt(dh)
    w["H"], w["dh"] = H, dh
    return w


def _block_mlp(model: Any, l: int, x: Tensor) -> Tensor:
    """x + MLP(ln2(x)) of block l (x unchanged for attention-only models)."""
    block = model.blocks[l]
    mlp = getattr(block, "mlp", None)
    if mlp is None or getattr(model.cfg, "attn_only", False):
        return x
    ln2 = getattr(block, "ln2", None)
    return x + mlp(ln2(x) if ln2 is not None else x)


def _attn_out(model: Any, W: dict[str, Any], l: int, x: Tensor, q_pos: Tensor) -> Tensor:
    """Attention output of layer l for the queries at ``q_pos`` [n, q] over keys at every position."""
    ln1 = getattr(model.blocks[l], "ln1", None)
    h = ln1(x) if ln1 is not None else x
    H = W["H"]
    hq = h.gather(1, q_pos[:, :, None].expand(-1, -1, h.shape[-1])) if q_pos.shape[1] != h.shape[1] else h
    q = einops.rearrange(hq @ W["Q"][l][0] + W["Q"][l][1], "n q (h e) -> n h q e", h=H)
    k = einops.rearrange(h @ W["K"][l][0] + W["K"][l][1], "n k (h e) -> n h e k", h=H)
    v = einops.rearrange(h @ W["V"][l][0] + W["V"][l][1], "n k (h e) -> n h k e", h=H)
    scores = (q @ k) / W["scale"]
    future = torch.arange(h.shape[1], device=h.device)[None, None, :] > q_pos[:, :, None]
    pattern = scores.masked_fill(future[:, None], float("-inf")).softmax(-1)
    z = einops.rearrange(pattern @ v, "n h q e -> n q (h e)")
    return z @ W["O"][l][0] + W["O"][l][1]


def _tail_logits(model: Any, W: dict[str, Any], l: int, resid_pre: Float[Tensor, "batch pos d_model"],
                 z: Float[Tensor, "batch pos head d_head"], edit: Callable[..., Tensor], n: int,
                 readout: Tensor) -> Float[Tensor, "rows vocab"]:
    """Read-out logits of ``n`` edited copies of the batch, resuming at layer l's hook_z."""
    L = int(model.cfg.n_layers)
    B, T = resid_pre.shape[:2]
    ro = readout.to(resid_pre.device).repeat(n)
    rows = torch.arange(n * B, device=resid_pre.device)
    ze = edit(z.repeat(n, 1, 1, 1), None)
    if l == L - 1:  # only the read-out position matters from here on
        x = resid_pre[torch.arange(B), readout].repeat(n, 1)[:, None]
        zr = einops.rearrange(ze[rows, ro], "n h e -> n 1 (h e)")
        x = _block_mlp(model, l, x + zr @ W["O"][l][0] + W["O"][l][1])
    else:
        x = resid_pre.repeat(n, 1, 1) + einops.rearrange(ze, "n t h e -> n t (h e)") @ W["O"][l][0] + W["O"][l][1]
        x = _block_mlp(model, l, x)
        all_pos = torch.arange(T, device=x.device)[None].expand(n * B, -1)
        for m in range(l + 1, L - 1):
            x = _block_mlp(model, m, x + _attn_out(model, W, m, x, all_pos))
        xr = x[rows, ro][:, None]
        x = _block_mlp(model, L - 1, xr + _attn_out(model, W, L - 1, x, ro[:, None]))
    ln_final = getattr(model, "ln_final", None)
    return model.unembed(ln_final(x) if ln_final is not None else x)[:, 0]


def can_tail(model: Any) -> bool:
    """Whether ``_tail_logits`` reproduces the model's read-out logits from every layer (checked once)."""
    if model in _TAIL_OK:
        return _TAIL_OK[model]
    ok = False
    cfg = model.cfg
    if str(getattr(cfg, "positional_embedding_type", "standard")) in ("standard", "shortformer") \
            and not getattr(cfg, "parallel_attn_mlp", False):
        try:
            L = int(cfg.n_layers)
            toks = torch.randint(0, int(cfg.d_vocab), (3, 7), generator=torch.Generator().manual_seed(0))
            readout = torch.tensor([6, 4, 2])
            names = {f"blocks.{l}.hook_resid_pre" for l in range(L)} | {f"blocks.{l}.attn.hook_z" for l in range(L)}
            dev = next(model.parameters()).device
            with torch.no_grad():
                full = model(toks.to(dev))[torch.arange(3), readout.to(dev)]
                cache = capture_sites(model, toks.to(dev), names)
                W = _tail_weights(model)
                ok = all(torch.allclose(
                    _tail_logits(model, W, l, cache[f"blocks.{l}.hook_resid_pre"], cache[f"blocks.{l}.attn.hook_z"],
                                 lambda x, hook: x, 1, readout), full, atol=1e-4, rtol=1e-3) for l in range(L))
        except Exception:
            ok = False
    _TAIL_OK[model] = ok
    return ok
