"""Activation capture: chosen hook sites, at chosen roles of a PromptBatch, across many prompts.

``capture(model, batch, sites, roles)`` runs the model over ``batch`` in mini-batches and keeps,
for every requested site, only the rows at the requested role positions. The gather happens
*inside* the hook, so the full activation of a site is never retained: capturing the attention
rows of the read-out position costs ``[batch, heads, 1, pos]`` per layer instead of
``[batch, heads, pos, pos]``, and nothing of the sites not asked for is kept at all. Once every
requested hook has fired, the forward pass is stopped (later layers and the unembedding are not
computed; pass ``stop_early=False`` to run it to the end).

Sites are any TransformerLens hook name (``"blocks.3.attn.hook_pattern"``), a per-layer hook name
without its ``blocks.{l}.`` prefix (``"attn.hook_z"``, expanded over ``layers``), or a preset:

==================== ======================================= ================================
preset               hook                                    captured per (layer, head, role)
==================== ======================================= ================================
attention patterns   ``blocks.{l}.attn.hook_pattern``        ``[batch, n_q, n_k]`` rows
attention scores     ``blocks.{l}.attn.hook_attn_scores``    ``[batch, n_q, n_k]`` (pre-softmax)
head outputs         ``blocks.{l}.attn.hook_z``              ``[batch, n, d_head]``
head results         ``hook_z`` times ``W_O[l, h]``           ``[batch, n, d_model]``
residual stream      ``blocks.{l}.hook_resid_post``          ``[batch, n, d_model]`` (head None)
residual pre         ``blocks.{l}.hook_resid_pre``           ``[batch, n, d_model]``
attention outputs    ``blocks.{l}.hook_attn_out``            ``[batch, n, d_model]``
mlp outputs          ``blocks.{l}.hook_mlp_out``             ``[batch, n, d_model]``
==================== ======================================= ================================

Roles are the PromptBatch roles (``"readout"``, ``"forerunner"``, ``"label"``, ``"demo_text"``,
``"query_text"``, ``"demo"``, ``"query"``) or ``"all"`` (every position). A role holds ``n``
positions per prompt (padded; ``Capture.valid[role]`` masks the padding; ``Capture.positions``
gives the token positions). For attention sites ``key_role`` restricts the key axis the same
way (``None`` keeps every key position, padded to the batch's width).

The result, ``Capture``, is keyed by ``CaptureKey(site, layer, head, role)`` and is written to
disk as ``activations.safetensors`` plus ``index.json`` (see ``Capture.save``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.hook_points import HookPoint

from probes.errors import WorkbenchError
from probes.hooked import HookedModel
from probes.prompt import PromptBatch

PRESETS: dict[str, tuple[str, ...]] = {
    "attention patterns": ("attn.hook_pattern",),
    "attention scores": ("attn.hook_attn_scores",),
    "head outputs": ("attn.hook_z",),
    "head results": ("attn.head_result",),
    "residual stream": ("hook_resid_post",),
    "residual pre": ("hook_resid_pre",),
    "attention outputs": ("hook_attn_out",),
    "mlp outputs": ("hook_mlp_out",),
}
QK_SITES = ("attn.hook_pattern", "attn.hook_attn_scores")
HEAD_SITES = ("attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_result",
              "attn.head_result")
DERIVED = {"attn.head_result": "attn.hook_z"}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


class CaptureError(WorkbenchError):
    """A capture request that cannot be served; the message names the fix."""


class StopForward(Exception):
    """Raised inside a hook once every requested activation is in hand."""


@dataclass(frozen=True, order=True)
class CaptureKey:
    """One captured tensor: ``site`` is the hook name without ``blocks.{layer}.``."""

    site: str
    layer: int | None
    head: int | None
    role: str

    def tag(self) -> str:
        layer = "-" if self.layer is None else str(self.layer)
        head = "-" if self.head is None else str(self.head)
        return f"{self.site}|{layer}|{head}|{self.role}"

    @staticmethod
    def from_tag(tag: str) -> "CaptureKey":
        site, layer, head, role = tag.split("|")
        return CaptureKey(site, None if layer == "-" else int(layer),
                          None if head == "-" else int(head), role)


@dataclass
class Capture:
    """Captured activations keyed by (site, layer, head, role).

    ``data[key]`` has shape ``[batch, n, ...]`` where ``n`` indexes the role's positions
    (``positions[role]``: token positions, ``valid[role]``: which entries are real). For attention
    sites the last axis is keys: every position (``key_role is None``) or ``key_positions``.
    """

    data: dict[CaptureKey, Tensor]
    positions: dict[str, Int[Tensor, "batch n"]]
    valid: dict[str, Bool[Tensor, "batch n"]]
    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    key_role: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- access
    def __getitem__(self, key: CaptureKey | tuple) -> Tensor:
        if not isinstance(key, CaptureKey):
            key = CaptureKey(*key)
        if key not in self.data:
            raise KeyError(f"{key} was not captured; captured sites: {self.sites}, roles: "
                           f"{self.roles}, layers: {self.layers}")
        return self.data[key]

    def get(self, site: str, layer: int | None = None, head: int | None = None,
            role: str | None = None) -> Tensor:
        """The tensor at one key; ``role`` may be omitted when only one role was captured."""
        site = PRESETS.get(site, (site,))[0]
        if role is None:
            if len(self.roles) != 1:
                raise KeyError(f"several roles captured ({self.roles}); pass role=")
            role = self.roles[0]
        return self[CaptureKey(site, layer, head, role)]

    def stack(self, site: str, role: str, head: int | None = None) -> Tensor:
        """``[layer, batch, n, ...]`` for one site/role/head over the captured layers."""
        site = PRESETS.get(site, (site,))[0]
        layers = sorted({k.layer for k in self.data if k.site == site and k.role == role
                         and k.head == head and k.layer is not None})
        if not layers:
            raise KeyError(f"nothing captured for site={site!r} role={role!r} head={head}")
        return torch.stack([self.data[CaptureKey(site, l, head, role)] for l in layers])

    def heads(self, site: str, layer: int, role: str) -> Tensor:
        """``[head, batch, n, ...]`` for one per-head site at one layer."""
        site = PRESETS.get(site, (site,))[0]
        hs = sorted(k.head for k in self.data if k.site == site and k.layer == layer
                    and k.role == role and k.head is not None)
        if not hs:
            raise KeyError(f"no per-head entries for site={site!r} layer={layer} role={role!r}")
        return torch.stack([self.data[CaptureKey(site, layer, h, role)] for h in hs])

    @property
    def sites(self) -> list[str]:
        return sorted({k.site for k in self.data})

    @property
    def roles(self) -> list[str]:
        return sorted({k.role for k in self.data})

    @property
    def layers(self) -> list[int]:
        return sorted({k.layer for k in self.data if k.layer is not None})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.data.values())

    # ---------------------------------------------------------------- disk
    def save(self, path: str | Path) -> Path:
        """Write ``path/activations.safetensors`` and ``path/index.json``.

        The safetensors file holds one tensor per key (named ``act/<n>``), the role positions
        (``positions/<role>``, ``valid/<role>``), ``tokens`` and ``lengths``. ``index.json``
        maps every ``act/<n>`` to its site, layer, head, role, shape and dtype, and carries
        ``key_role`` and ``meta``.
        """

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Tensor] = {"tokens": self.tokens, "lengths": self.lengths}
        entries = []
        for i, (key, t) in enumerate(sorted(self.data.items(), key=lambda kv: _sort_key(kv[0]))):
            name = f"act/{i}"
            tensors[name] = t
            entries.append({"name": name, "site": key.site, "layer": key.layer,
                            "head": key.head, "role": key.role, "shape": list(t.shape),
                            "dtype": str(t.dtype).replace("torch.", "")})
        for role in self.positions:
            tensors[f"positions/{role}"] = self.positions[role]
            tensors[f"valid/{role}"] = self.valid[role]
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                  str(out / "activations.safetensors"))
        index = {"format": "iclwb-capture/1", "key_role": self.key_role,
                 "roles": list(self.positions), "entries": entries,
                 "meta": _jsonable(self.meta)}
        (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> "Capture":
        """Read a capture written by ``save``."""

        p = Path(path)
        if not (p / "index.json").exists():
            raise CaptureError(f"{p} holds no capture (no index.json); write one with Capture.save")
        index = json.loads((p / "index.json").read_text())
        tensors = load_file(str(p / "activations.safetensors"))
        data = {CaptureKey(e["site"], e["layer"], e["head"], e["role"]): tensors[e["name"]]
                for e in index["entries"]}
        roles = index["roles"]
        return cls(data=data,
                   positions={r: tensors[f"positions/{r}"] for r in roles},
                   valid={r: tensors[f"valid/{r}"] for r in roles},
                   tokens=tensors["tokens"], lengths=tensors["lengths"],
                   key_role=index["key_role"], meta=index["meta"])


def _sort_key(k: CaptureKey) -> tuple:
    return (k.site, -1 if k.layer is None else k.layer, -1 if k.head is None else k.head, k.role)


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, (str, int, float, bool)) or o is None:
        return o
    return str(o)


# -------------------------------------------------------------------- site resolution
@dataclass(frozen=True)
class _Site:
    site: str          # key site name (no blocks.{l}.)
    layer: int | None
    hook: str          # full hook name to attach to


def resolve_sites(model: Any, sites: str | Sequence[str],
                  layers: Iterable[int] | None = None) -> list[_Site]:
    """Expand presets / per-layer names / full hook names into concrete hooks."""
    if isinstance(sites, str):
        sites = [sites]
    hook_names = set(model.hook_dict)
    n_layers = int(model.cfg.n_layers)
    layer_list = list(range(n_layers)) if layers is None else [int(l) for l in layers]
    for l in layer_list:
        if not 0 <= l < n_layers:
            raise CaptureError(f"layer {l} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    out: list[_Site] = []
    for s in sites:
        for name in PRESETS.get(s, (s,)):
            m = _BLOCK_RE.match(name)
            if m:  # a full per-layer hook name
                if name not in hook_names and DERIVED.get(m.group(2)) is None:
                    raise CaptureError(_unknown(name))
                hook = f"blocks.{m.group(1)}.{DERIVED.get(m.group(2), m.group(2))}"
                out.append(_Site(m.group(2), int(m.group(1)), hook))
            elif name in hook_names:  # a global hook (hook_embed, ln_final.hook_normalized, ...)
                out.append(_Site(name, None, name))
            else:
                base = DERIVED.get(name, name)
                if f"blocks.0.{base}" not in hook_names:
                    raise CaptureError(_unknown(name))
                out.extend(_Site(name, l, f"blocks.{l}.{base}") for l in layer_list)
    if not out:
        raise CaptureError("no sites requested; pass a preset such as 'attention patterns' or a hook name")
    return list(dict.fromkeys(out))


def _unknown(name: str) -> str:
    return (f"unknown capture site {name!r}. Use a preset ({', '.join(PRESETS)}), a hook name "
            f"such as 'blocks.0.attn.hook_pattern', or a per-layer name such as 'attn.hook_z' "
            f"(see model.hook_dict for every hook).")


def role_positions(batch: PromptBatch, role: str) -> tuple[Int[Tensor, "batch n"], Bool[Tensor, "batch n"]]:
    """Padded positions of ``role`` in every prompt; ``"all"`` means every real position."""
    if role == "all":
        idx = torch.arange(batch.seq_len).expand(batch.batch_size, -1).clone()
        return idx, batch.attention_mask
    return batch.positions(role)


# -------------------------------------------------------------------- capture
def capture(
    model: Any,
    batch: PromptBatch,
    sites: str | Sequence[str] = "attention patterns",
    roles: str | Sequence[str] = "readout",
    *,
    layers: Iterable[int] | None = None,
    heads: Iterable[int] | None = None,
    key_role: str | None = None,
    batch_size: int = 8,
    progress: bool | None = None,
    stop_early: bool = True,
    dtype: torch.dtype | None = None,
) -> Capture:
    """Capture ``sites`` at the positions of ``roles`` over every prompt of ``batch``.

    Runs ``ceil(len(batch) / batch_size)`` forward passes under ``torch.no_grad`` with hooks that
    gather the role rows (and, for attention, the ``key_role`` columns) and drop the rest.
    ``heads`` restricts per-head sites to those heads. ``progress`` shows a tqdm bar (default:
    when there is more than one mini-batch). Hooks are removed even if the forward raises.
    """
    roles = [roles] if isinstance(roles, str) else list(dict.fromkeys(roles))
    resolved, head_list = _check_request(model, batch, sites, roles, layers, heads, batch_size)
    pos = {r: role_positions(batch, r) for r in roles}
    kpos = None if key_role is None else role_positions(batch, key_role)
    by_hook: dict[str, list[_Site]] = {}
    for s in resolved:
        by_hook.setdefault(s.hook, []).append(s)
    W_O = model.W_O.detach() if any(s.site in DERIVED for s in resolved) else None

    chunks: dict[CaptureKey, list[Tensor]] = {}
    batches = list(range(0, batch.batch_size, batch_size))
    show = len(batches) > 1 if progress is None else progress
    for start in tqdm(batches, disable=not show, desc="capture", unit="batch"):
        rows = torch.arange(start, min(start + batch_size, batch.batch_size))
        gather = _Gather(by_hook, {r: (p[rows], v[rows]) for r, (p, v) in pos.items()},
                         None if kpos is None else kpos[0][rows], int(model.cfg.n_heads), head_list, W_O,
                         chunks, dtype, stop_early)
        gather.run(model, batch.select(rows).trim())

    data = {}
    for key, parts in chunks.items():
        if key_role is None and key.site in QK_SITES:
            fill = float("-inf") if key.site == "attn.hook_attn_scores" else 0.0
            parts = [_pad_last(p, batch.seq_len, fill) for p in parts]
        data[key] = torch.cat(parts)
    positions = {r: p for r, (p, _) in pos.items()}
    valid = {r: v for r, (_, v) in pos.items()}
    if kpos is not None:
        positions[f"key:{key_role}"], valid[f"key:{key_role}"] = kpos
    return Capture(data=data, positions=positions, valid=valid, tokens=batch.tokens.clone(),
                   lengths=batch.lengths.clone(), key_role=key_role,
                   meta={"sites": [s.hook for s in resolved], "roles": roles,
                         "batch_size": batch_size, "batch_meta": batch.meta})


def _check_request(model: Any, batch: PromptBatch, sites: str | Sequence[str], roles: list[str],
                   layers: Iterable[int] | None, heads: Iterable[int] | None,
                   batch_size: int) -> tuple[list[_Site], list[int] | None]:
    """The resolved sites and head list of a capture request, or a CaptureError naming the fix."""
    if not roles:
        raise CaptureError("no roles requested; pass e.g. roles=['readout', 'label']")
    if batch_size < 1:
        raise CaptureError(f"batch_size must be >= 1, got {batch_size}")
    batch.require_rows("capture")
    batch.validate(n_ctx=getattr(model.cfg, "n_ctx", None))
    resolved = resolve_sites(model, sites, layers)
    n_heads = int(model.cfg.n_heads)
    head_list = None if heads is None else [int(h) for h in heads]
    if head_list is not None and any(not 0 <= h < n_heads for h in head_list):
        raise CaptureError(f"heads {head_list} out of range: the model has {n_heads} heads")
    return resolved, head_list


@dataclass
class _Gather:
    """The hooks of one mini-batch: keep the role rows of every site, stop once all have fired."""

    by_hook: dict[str, list[_Site]]
    sub_pos: dict[str, tuple[Tensor, Tensor]]
    sub_kpos: Tensor | None
    n_heads: int
    head_list: list[int] | None
    W_O: Tensor | None
    chunks: dict[CaptureKey, list[Tensor]]
    dtype: torch.dtype | None
    stop_early: bool
    fired: set[str] = field(default_factory=set)

    def hook_for(self, hook_name: str) -> Callable[..., None]:
        def hook(act: Tensor, hook: Any = None) -> None:
            for s in self.by_hook[hook_name]:
                for role, (idx, _) in self.sub_pos.items():
                    for key, val in _gather(s, act, idx, self.sub_kpos, self.n_heads, self.head_list, role, self.W_O):
                        self.chunks.setdefault(key, []).append(val if self.dtype is None else val.to(self.dtype))
            self.fired.add(hook_name)
            if self.stop_early and len(self.fired) == len(self.by_hook):
                raise StopForward
        return hook

    def run(self, model: Any, sub: PromptBatch) -> None:
        fwd = [(h, self.hook_for(h)) for h in self.by_hook]
        try:
            with torch.no_grad(), model.hooks(fwd_hooks=fwd):
                model(sub.tokens)
        except StopForward:
            pass
        except ValueError as err:
            if "Cannot add hook" in str(err):
                raise CaptureError(f"{err} (or capture 'head results': hook_z times W_O)") from err
            raise
        missing = set(self.by_hook) - self.fired
        if missing:
            raise CaptureError(
                f"hooks {sorted(missing)} never fired on this model (e.g. hook_result needs "
                f"cfg.use_attn_result); capture 'head results' (hook_z times W_O) instead"
            )


def _pad_last(t: Tensor, width: int, fill: float) -> Tensor:
    if t.shape[-1] == width:
        return t
    pad = torch.full((*t.shape[:-1], width - t.shape[-1]), fill, dtype=t.dtype)
    return torch.cat([t, pad], dim=-1)


def _gather(s: _Site, act: Tensor, idx: Int[Tensor, "b n"], kidx: Tensor | None, n_heads: int,
            head_list: list[int] | None, role: str, W_O: Tensor | None):
    """Yield (key, tensor) for one site at one role; copies only the gathered rows."""
    b, n = idx.shape
    if s.site in QK_SITES:  # [b, h, q, k] -> rows at idx -> [b, h, n, k]
        H, K = act.shape[1], act.shape[3]
        rows = act.gather(2, idx[:, None, :, None].expand(b, H, n, K))
        if kidx is not None:
            m = kidx.shape[1]
            rows = rows.gather(3, kidx[:, None, None, :].expand(b, H, n, m))
        for h in head_list if head_list is not None else range(H):
            yield CaptureKey(s.site, s.layer, h, role), rows[:, h].clone()
        return
    rest = act.shape[2:]
    g = act.gather(1, idx.reshape(b, n, *([1] * len(rest))).expand(b, n, *rest))
    if s.site in HEAD_SITES and g.dim() == 4:  # [b, n, h, d]
        for h in head_list if head_list is not None else range(g.shape[2]):
            val = g[:, :, h]
            if s.site in DERIVED:
                assert W_O is not None and s.layer is not None
                val = val @ W_O[s.layer, h]
            yield CaptureKey(s.site, s.layer, h, role), val.clone()
        return
    yield CaptureKey(s.site, s.layer, None, role), g


def hooks_left(model: HookedModel) -> int:
    """Number of forward/backward hooks attached to the model's HookPoints (0 when clean)."""

    return sum(len(m._forward_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_forward_pre_hooks", {}))
               for m in model.modules() if isinstance(m, HookPoint))


# -------------------------------------------------------------------- figures
def attention_figure(pattern: Float[Tensor, "q k"], q_labels: Sequence[str] | None = None,
                     k_labels: Sequence[str] | None = None, title: str = "attention"):
    """Heatmap of an attention pattern (rows: queries, columns: keys) with token labels."""

    pat = pattern.detach().float().cpu()
    if pat.dim() != 2:
        raise CaptureError(f"attention_figure needs a [q, k] matrix, got shape {tuple(pat.shape)}")
    nq, nk = pat.shape
    ql = [f"{i}:{t}" for i, t in enumerate(q_labels)] if q_labels is not None else [str(i) for i in range(nq)]
    kl = [f"{i}:{t}" for i, t in enumerate(k_labels)] if k_labels is not None else [str(i) for i in range(nk)]
    if len(ql) != nq or len(kl) != nk:
        raise CaptureError(f"label counts ({len(ql)}, {len(kl)}) do not match the pattern {nq}x{nk}")
    fig = go.Figure(go.Heatmap(z=pat.numpy(), x=kl, y=ql, colorscale="Blues", zmin=0,
                               hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="key", yaxis_title="query",
                      yaxis_autorange="reversed")
    return fig
