"""Interventions as data, applied by hooks that are always removed, batched along the batch axis.

An ``Intervention`` is a small serialisable description (kind, sites, layers, heads, roles,
params). Four kinds:

- ``"knockout"``: block attention from query-role positions to key-role positions (e.g. s_q <- y_i)
  in the chosen layers/heads. Blocked entries get weight 0 and the row is renormalised, which is
  exactly ``softmax`` of the pre-softmax scores with those entries set to -inf. The edit is made on
  ``hook_pattern`` because it is the one attention hook that sits *inside* the computation on every
  TransformerBridge (on native bridges ``hook_attn_scores`` fires post hoc and edits are discarded).
  A row whose every entry is blocked becomes all-zero (that position reads nothing).
  ``params["pairing"]`` says which query/key pairs count: ``"all"`` (every query-role position with
  every key-role position), ``"same_demo"`` (demo i's query role with demo i's key role; roles
  without a demo index pair with every demo), ``"demo_le"`` (demo j's query role with demo i's key
  role for i <= j, as Cho et al.'s s_i -> s_j).
- ``"random_knockout"``: the matched random control: for every (prompt, query position) row the
  same number of entries as the targeted knockout blocks, drawn uniformly among that row's allowed
  (causal, non-padding) entries, seeded by ``params["seed"]``.
- ``"ablate"``: replace a site's activation (default ``hook_z``, a head's output before W_O) at all
  positions or at chosen roles by zero, the mean over a reference batch (``params["mode"]``
  ``"zero" | "mean" | "resample"``); resample takes the same position of another prompt of the
  reference batch (a seeded derangement of rows).
- ``"patch"``: replace a site's activation by the same site in a source run (same token layout).

``intervene(model, interventions, batch, ...)`` applies a list of interventions together (context
manager). ``circuits.sweeps.sweep(model, batch, interventions, metric, ...)`` evaluates each
intervention separately, batched.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from probes.capture import StopForward
from probes.errors import WorkbenchError
from probes.prompt import PromptBatch

KINDS = ("knockout", "random_knockout", "ablate", "patch")
ABLATION_MODES = ("zero", "mean", "resample")
PAIRINGS = ("all", "same_demo", "demo_le")
# site -> (hook name template, layout). Layouts: "bthd" [b,pos,head,d_head]; "btd" [b,pos,d].
SITES: dict[str, tuple[str, str]] = {
    "z": ("blocks.{l}.attn.hook_z", "bthd"),
    "q": ("blocks.{l}.attn.hook_q", "bthd"),
    "k": ("blocks.{l}.attn.hook_k", "bthd"),
    "v": ("blocks.{l}.attn.hook_v", "bthd"),
    "attn_out": ("blocks.{l}.hook_attn_out", "btd"),
    "mlp_out": ("blocks.{l}.hook_mlp_out", "btd"),
    "resid_pre": ("blocks.{l}.hook_resid_pre", "btd"),
    "resid_mid": ("blocks.{l}.hook_resid_mid", "btd"),
    "resid_post": ("blocks.{l}.hook_resid_post", "btd"),
}
PATTERN_HOOK = "blocks.{l}.attn.hook_pattern"


class InterventionError(WorkbenchError):
    """An intervention that cannot be applied; the message names the problem and the fix."""


# ---------------------------------------------------------------------- the data
@dataclass(frozen=True)
class Intervention:
    """What to change: ``kind`` at ``sites`` in ``layers``/``heads`` at ``roles``, with ``params``.

    ``heads=None`` means every head. For knockouts ``roles == (query_role, key_role)``; for
    ablate/patch ``roles`` are the positions edited (empty: every position).
    """

    kind: str
    layers: tuple[int, ...]
    heads: tuple[int, ...] | None = None
    sites: tuple[str, ...] = ("z",)
    roles: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if self.heads is not None:
            object.__setattr__(self, "heads", tuple(int(x) for x in self.heads))
        object.__setattr__(self, "sites", tuple(self.sites))
        object.__setattr__(self, "roles", tuple(self.roles))
        if self.kind not in KINDS:
            raise InterventionError(f"unknown intervention kind {self.kind!r}; use one of {KINDS}")
        if not self.layers:
            raise InterventionError("an intervention needs at least one layer (layers=(0,), ...)")
        if self.kind in ("knockout", "random_knockout"):
            if len(self.roles) != 2:
                raise InterventionError(
                    f"a {self.kind} needs roles=(query_role, key_role), e.g. ('readout', 'label'); "
                    f"got {self.roles}"
                )
            pairing = self.params.get("pairing", "all")
            if pairing not in PAIRINGS:
                raise InterventionError(f"unknown pairing {pairing!r}; use one of {PAIRINGS}")
        else:
            for s in self.sites:
                if s not in SITES:
                    raise InterventionError(f"unknown site {s!r}; use one of {tuple(SITES)}")
                if SITES[s][1] == "btd" and self.heads is not None:
                    raise InterventionError(
                        f"site {s!r} has no head axis; pass heads=None (or use site 'z')"
                    )
            if self.kind == "ablate" and self.params.get("mode", "zero") not in ABLATION_MODES:
                raise InterventionError(
                    f"unknown ablation mode {self.params.get('mode')!r}; use one of {ABLATION_MODES}"
                )

    @property
    def name(self) -> str:
        if "name" in self.params:
            return str(self.params["name"])
        heads = "all" if self.heads is None else ",".join(map(str, self.heads))
        layers = ",".join(map(str, self.layers))
        if self.kind in ("knockout", "random_knockout"):
            return f"{self.kind}:{self.roles[0]}<-{self.roles[1]}@L{layers}H{heads}"
        mode = self.params.get("mode", "zero") if self.kind == "ablate" else "source"
        return f"{self.kind}[{mode}]:{'/'.join(self.sites)}@L{layers}H{heads}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["heads"] = None if self.heads is None else list(self.heads)
        d["sites"] = list(self.sites)
        d["roles"] = list(self.roles)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Intervention":
        return Intervention(
            kind=d["kind"], layers=tuple(d["layers"]),
            heads=None if d.get("heads") is None else tuple(d["heads"]),
            sites=tuple(d.get("sites", ("z",))), roles=tuple(d.get("roles", ())),
            params=dict(d.get("params", {})),
        )


def knockout(query_role: str, key_role: str, layers: Sequence[int], heads: Sequence[int] | None = None,
             pairing: str = "all", name: str | None = None) -> Intervention:
    """Block attention query_role <- key_role in ``layers``/``heads``."""
    params: dict[str, Any] = {"pairing": pairing}
    if name:
        params["name"] = name
    return Intervention("knockout", tuple(layers), None if heads is None else tuple(heads),
                        sites=("pattern",), roles=(query_role, key_role), params=params)


def random_control(iv: Intervention, seed: int = 0) -> Intervention:
    """The matched random knockout of a targeted knockout (same rows, same count, random keys)."""
    if iv.kind != "knockout":
        raise InterventionError("random_control takes a 'knockout' intervention")
    params = dict(iv.params, seed=int(seed))
    if "name" in params:
        params["name"] = f"{params['name']} (random)"
    return Intervention("random_knockout", iv.layers, iv.heads, iv.sites, iv.roles, params)


def ablate(layers: Sequence[int] | int, heads: Sequence[int] | int | None = None, mode: str = "zero",
           roles: Sequence[str] = (), site: str = "z", seed: int = 0) -> Intervention:
    """Ablate ``site`` (default a head's output hook_z) by zero / mean / resample."""
    layers = (layers,) if isinstance(layers, int) else tuple(layers)
    heads = (heads,) if isinstance(heads, int) else heads
    return Intervention("ablate", layers, None if heads is None else tuple(heads), (site,),
                        tuple(roles), {"mode": mode, "seed": int(seed)})


def patch(site: str, layers: Sequence[int] | int, heads: Sequence[int] | int | None = None,
          roles: Sequence[str] = ()) -> Intervention:
    """Patch ``site`` from the source run into the target run."""
    layers = (layers,) if isinstance(layers, int) else tuple(layers)
    heads = (heads,) if isinstance(heads, int) else heads
    return Intervention("patch", layers, None if heads is None else tuple(heads), (site,), tuple(roles))


def all_heads(n_layers: int, n_heads: int, kind: str = "ablate", mode: str = "zero",
              site: str = "z", roles: Sequence[str] = ()) -> list[Intervention]:
    """One intervention per (layer, head), layer-major: the usual sweep."""
    out = []
    for l in range(n_layers):
        for h in range(n_heads):
            out.append(ablate(l, h, mode, roles, site) if kind == "ablate" else patch(site, l, h, roles))
    return out


# ---------------------------------------------------------------------- position masks
def pair_mask(batch: PromptBatch, query_role: str, key_role: str,
              pairing: str = "all") -> Bool[Tensor, "batch q k"]:
    """Entries (query position, key position) blocked by a knockout, restricted to causal k <= q."""
    B, T = batch.tokens.shape
    demo_roles = ("demo_text", "forerunner", "label", "demo")
    if pairing == "all" or (query_role not in demo_roles and key_role not in demo_roles):
        m = batch.role_mask(query_role)[:, :, None] & batch.role_mask(key_role)[:, None, :]
    else:
        m = torch.zeros(B, T, T, dtype=torch.bool)
        K = batch.n_demos
        for j in range(K):
            qm = batch.role_mask(query_role, demo=j if query_role in demo_roles else None)
            if pairing == "same_demo":
                key_demos = [j]
            elif pairing == "demo_le":
                key_demos = list(range(j + 1))
            else:
                raise InterventionError(f"unknown pairing {pairing!r}; use one of {PAIRINGS}")
            for i in key_demos:
                km = batch.role_mask(key_role, demo=i if key_role in demo_roles else None)
                m |= qm[:, :, None] & km[:, None, :]
    return m & allowed_mask(batch)


def allowed_mask(batch: PromptBatch) -> Bool[Tensor, "batch q k"]:
    """Causal entries between real (non-padding) positions."""
    T = batch.seq_len
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    real = batch.attention_mask
    return causal[None] & real[:, :, None] & real[:, None, :]


def random_pair_mask(batch: PromptBatch, like: Bool[Tensor, "batch q k"], seed: int) -> Bool[Tensor, "batch q k"]:
    """Per row, as many random allowed entries as ``like`` blocks in that row."""
    allowed = allowed_mask(batch)
    g = torch.Generator().manual_seed(int(seed))
    r = torch.rand(like.shape, generator=g).masked_fill(~allowed, 2.0)
    ranks = r.argsort(-1).argsort(-1)
    n = like.sum(-1, keepdim=True)
    return (ranks < n) & allowed


def role_positions(batch: PromptBatch, roles: Sequence[str]) -> Bool[Tensor, "batch pos"]:
    """Union of the role masks (every position when ``roles`` is empty)."""
    if not roles:
        return torch.ones(batch.tokens.shape, dtype=torch.bool)
    m = torch.zeros(batch.tokens.shape, dtype=torch.bool)
    for r in roles:
        m |= batch.role_mask(r)
    return m


# ---------------------------------------------------------------------- compiling
@dataclass
class Edit:
    """One intervention's edit at one hook: ``mask`` over [batch, ...] and where values come from."""

    hook: str
    op: str  # "knockout" or "replace"
    mask: Tensor  # knockout: [B, H, T, T] blocked; replace bthd: [B, T, H, 1]; btd: [B, T, 1]
    source: str = ""  # replace: "zero" | "mean" | "resample" | "patch"


def _n_heads(model: Any) -> int:
    return int(model.cfg.n_heads)


def _head_mask(model: Any, heads: tuple[int, ...] | None) -> Bool[Tensor, " head"]:
    H = _n_heads(model)
    m = torch.zeros(H, dtype=torch.bool)
    if heads is None:
        m[:] = True
    else:
        for h in heads:
            if not 0 <= h < H:
                raise InterventionError(f"head {h} out of range: the model has {H} heads per layer")
            m[h] = True
    return m


def _check_layers(model: Any, layers: Sequence[int]) -> None:
    L = int(model.cfg.n_layers)
    for l in layers:
        if not 0 <= l < L:
            raise InterventionError(f"layer {l} out of range: the model has {L} layers (0..{L - 1})")


def compile_edits(model: Any, iv: Intervention, batch: PromptBatch) -> list[Edit]:
    """Turn one intervention into per-hook masks for ``batch``."""
    _check_layers(model, iv.layers)
    hm = _head_mask(model, iv.heads)
    edits: list[Edit] = []
    if iv.kind in ("knockout", "random_knockout"):
        pm = pair_mask(batch, iv.roles[0], iv.roles[1], iv.params.get("pairing", "all"))
        if iv.kind == "random_knockout":
            pm = random_pair_mask(batch, pm, iv.params.get("seed", 0))
        blocked = pm[:, None, :, :] & hm[None, :, None, None]
        for l in iv.layers:
            edits.append(Edit(PATTERN_HOOK.format(l=l), "knockout", blocked))
        return edits
    pos = role_positions(batch, iv.roles)
    source = iv.params.get("mode", "zero") if iv.kind == "ablate" else "patch"
    for site in iv.sites:
        template, layout = SITES[site]
        if layout == "bthd":
            mask = pos[:, :, None, None] & hm[None, None, :, None]
        else:
            mask = pos[:, :, None]
        for l in iv.layers:
            edits.append(Edit(template.format(l=l), "replace", mask, source))
    return edits


# ---------------------------------------------------------------------- source values
def capture_sites(model: Any, tokens: Tensor, names: set[str], stop_early: bool = False) -> dict[str, Tensor]:
    """Activations at hooks ``names`` of one forward; ``stop_early`` ends it once all have fired."""
    store: dict[str, Tensor] = {}

    def make(name: str) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:  # keyed by the requested (alias) name
            store[name] = x.detach().clone()
            if stop_early and len(store) == len(names):
                raise StopForward
        return hook

    with torch.no_grad(), model.hooks(fwd_hooks=[(n, make(n)) for n in sorted(names)]):
        try:
            model(tokens)
        except StopForward:
            pass
    return store


def source_values(model: Any, edits: Sequence[Edit], batch: PromptBatch,
                  source: PromptBatch | None = None, reference: PromptBatch | None = None,
                  seed: int = 0, source_cache: dict[str, Tensor] | None = None) -> dict[tuple[str, str], Tensor]:
    """Values that replace edits read: keyed (hook, source kind), shaped to broadcast over a [B,...] slice.

    ``source_cache`` holds source-run activations already captured (hook name -> tensor); only the
    hooks missing from it cost a forward on ``source``.
    """
    need: dict[str, set[str]] = {}
    for e in edits:
        if e.op == "replace" and e.source != "zero":
            need.setdefault(e.source, set()).add(e.hook)
    out: dict[tuple[str, str], Tensor] = {}
    if "patch" in need:
        if source is None:
            raise InterventionError("a 'patch' intervention needs source=PromptBatch (the run to copy from)")
        if source.tokens.shape != batch.tokens.shape:
            raise InterventionError(
                f"source tokens {tuple(source.tokens.shape)} and target tokens "
                f"{tuple(batch.tokens.shape)} differ in shape; patching copies position by position, "
                f"so build both batches with the same layout (same k and input lengths)"
            )
        have = dict(source_cache or {})
        missing = need["patch"] - set(have)
        if missing:
            have.update(capture_sites(model, source.tokens, missing))
        for name in need["patch"]:
            out[(name, "patch")] = have[name]
    ref = reference if reference is not None else batch
    if "mean" in need:
        acts = capture_sites(model, ref.tokens, need["mean"])
        real = ref.attention_mask
        for name, val in acts.items():
            w = real.to(val.dtype).reshape(real.shape + (1,) * (val.ndim - 2))
            mean = (val * w).sum((0, 1)) / w.sum((0, 1))
            out[(name, "mean")] = mean[None, None]
    if "resample" in need:
        if ref.seq_len < batch.seq_len:
            raise InterventionError(
                f"resample ablation needs reference prompts at least as long as the batch "
                f"({ref.seq_len} < {batch.seq_len}); pass a longer reference batch"
            )
        if ref is batch and ref.batch_size < 2:
            raise InterventionError(
                "resample ablation takes each activation from another prompt, but this batch has "
                "one prompt and no reference batch was given, so it would change nothing; pass "
                "reference=PromptBatch (other prompts of the same layout) or use mode='mean'/'zero'")
        acts = capture_sites(model, ref.tokens, need["resample"])
        g = torch.Generator().manual_seed(int(seed))
        R = ref.batch_size
        rows = torch.randint(0, R, (batch.batch_size,), generator=g)
        if ref is batch and R > 1:  # a derangement: never a row's own activation
            shift = torch.randint(1, R, (R,), generator=g)
            rows = (torch.arange(R) + shift) % R
        for name, val in acts.items():
            out[(name, "resample")] = val[rows, : batch.seq_len]
    return out


# ---------------------------------------------------------------------- hooks
def make_hooks(groups: dict[str, list[tuple[str, str, Tensor]]], values: dict[tuple[str, str], Tensor],
                n_rep: int) -> list[tuple[str, Callable[..., Tensor]]]:
    """One hook per hook name; each group entry is (op, source, stacked mask [n_rep, B, ...])."""
    hooks = []
    for name, entries in groups.items():
        def fn(x: Tensor, hook: Any, entries=entries, name=name) -> Tensor:
            xs = x.reshape((n_rep, -1) + tuple(x.shape[1:]))
            for op, src, mask in entries:
                if op == "knockout":
                    blocked = mask.to(xs.device)
                    kept = xs.masked_fill(blocked, 0.0)
                    touched = blocked.any(-1, keepdim=True)
                    denom = kept.sum(-1, keepdim=True)
                    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
                    xs = torch.where(touched, kept / safe, xs)
                else:
                    m = mask.to(xs.device)
                    if src == "zero":
                        xs = xs.masked_fill(m, 0.0)
                    else:
                        v = values[(name, src)].to(xs.device, xs.dtype)
                        T = xs.shape[2]
                        if v.ndim >= 3 and v.shape[1] != 1:
                            v = v[:, :T]
                        xs = torch.where(m, v.unsqueeze(0), xs)
            return xs.reshape(x.shape)
        hooks.append((name, fn))
    return hooks


def stack_edits(model: Any, per_iv: Sequence[list[Edit]]) -> dict[str, list[tuple[str, str, Tensor]]]:
    """Stack each intervention's masks along a leading replica axis (False where it does nothing)."""
    n = len(per_iv)
    keys: dict[tuple[str, str, str], list[tuple[int, Tensor]]] = {}
    for i, edits in enumerate(per_iv):
        for e in edits:
            keys.setdefault((e.hook, e.op, e.source), []).append((i, e.mask))
    groups: dict[str, list[tuple[str, str, Tensor]]] = {}
    for (hook, op, src), items in keys.items():
        shape = items[0][1].shape
        stacked = torch.zeros((n,) + tuple(shape), dtype=torch.bool)
        for i, m in items:
            stacked[i] |= m
        groups.setdefault(hook, []).append((op, src, stacked))
    return groups


@contextlib.contextmanager
def intervene(model: Any, interventions: Intervention | Sequence[Intervention], batch: PromptBatch,
              source: PromptBatch | None = None, reference: PromptBatch | None = None) -> Iterator[Any]:
    """Apply ``interventions`` together to every row of ``batch`` while inside the block.

    >>> with intervene(model, [knockout("readout", "label", layers=[0])], batch):
    ...     logits = model(batch.tokens)

    Hooks are removed on exit, also on exceptions.
    """
    ivs = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    batch.require_rows("intervene")
    edits = [compile_edits(model, iv, batch) for iv in ivs]
    values = source_values(model, [e for es in edits for e in es], batch, source, reference,
                           seed=seed_of(ivs))
    hooks: list[tuple[str, Callable[..., Tensor]]] = []
    for es in edits:  # each intervention its own hooks, applied in order
        hooks += make_hooks(stack_edits(model, [es]), values, 1)
    with strict_hooks(), model.hooks(fwd_hooks=hooks):
        yield model


def seed_of(ivs: Sequence[Intervention]) -> int:
    seeds = {iv.params.get("seed", 0) for iv in ivs if iv.kind == "ablate"}
    return int(next(iter(seeds))) if len(seeds) == 1 else 0


@contextlib.contextmanager
def strict_hooks() -> Iterator[None]:
    """Turn TransformerLens's 'edit is discarded' warning into an error: an edit must take effect."""

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*edit is discarded.*")
        try:
            yield
        except UserWarning as w:  # pragma: no cover - depends on the model's attention class
            raise InterventionError(
                f"this model computes attention outside the hook that was edited, so the edit "
                f"would be silently ignored ({w}); use a model whose attention exposes "
                f"hook_pattern inside the computation (TransformerBridge native or eager HF)"
            ) from None
