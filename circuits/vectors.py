"""ICL vectors: extract a vector from in-context prompts and steer zero-shot prompts with it.

Three methods from the literature, all as hooks on a TransformerBridge (or any model with the same
hook names), always applied through ``model.hooks(...)`` so they are removed even on exceptions.

Task vectors (Hendel et al. 2023)
    ``task_vector``: the residual stream at the read-out position s_q at layer L, read at
    ``blocks.{L}.hook_resid_post`` (the output of block L; ``site="resid_pre"`` reads its input),
    averaged over prompts with k demonstrations. ``readout_hooks(..., mode="replace")`` injects it
    by *replacing* that position's residual at that same hook in a zero-shot prompt.

Function vectors (Todd et al. 2023)
    ``mean_head_outputs``: the mean ``hook_z`` of every head at s_q over ICL prompts.
    ``head_aie``: each head's average indirect effect: the gain in P(target) (softmax over the full
    vocabulary at s_q) when that head's z at s_q is replaced by its mean, on prompts whose labels
    were shuffled (``PromptBatch.shuffle_labels``). Heads are patched batched along the batch axis.
    ``head_aie_attribution``: its first-order estimate for all heads from one backward pass (to
    pick candidates on big models). ``function_vector``: sum over the chosen heads of
    ``W_O[l, h] @ mean z[l, h]``; ``readout_hooks(..., mode="add")`` adds it to
    ``blocks.{L}.hook_resid_post`` at s_q.

In-context vectors (Liu et al. 2023)
    ``demo_pair_states``: for every demonstration, run ``[prefix] x_i s_i y_i`` alone and read the
    hidden state (``hook_resid_post`` of every layer) at s_i (the input x_i with its forerunner:
    "the query side") and at y_i ("the target side"); causal attention makes the s_i state equal
    to that of ``[prefix] x_i s_i`` alone. ``in_context_vector``: the first principal direction of
    the per-demonstration differences y - x, concatenated over layers (sign chosen to agree with
    their mean), returned per layer. ``icv_hooks`` applies the paper's normalised update
    ``x <- norm(norm(x) + lam * (1 + max(0, cos(x, -v))) * norm(v)) * ||x||`` at every position
    and every layer, by default on ``blocks.{l}.hook_mlp_out`` (as the authors' code wraps each
    MLP) when the model has MLPs, else on ``blocks.{l}.hook_resid_post``.

Controls: ``random_like`` draws a random direction with the same norm (per row for [layer, d]).
Zero-shot prompts for evaluation come from ``PromptBatch.zero_shot`` (same queries, no demonstrations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from einops import einsum, rearrange
from jaxtyping import Float, Int
from torch import Tensor

from probes.errors import WorkbenchError
from probes.hooked import HookedModel
from probes.prompt import PromptBatch, PromptError
from probes.readout import check_fits

FwdHook = tuple[str, Callable[..., Any]]
Site = Literal["resid_pre", "resid_post", "mlp_out", "attn_out"]
SITES: tuple[str, ...] = ("resid_pre", "resid_post", "mlp_out", "attn_out")


class VectorError(WorkbenchError):
    """Bad input to a vector method (layer out of range, wrong vector shape, ...)."""


# ---------------------------------------------------------------------- hook sites
def hook_name(layer: int, site: str = "resid_post") -> str:
    """The TransformerLens hook name of ``site`` in block ``layer``."""
    if site not in SITES:
        raise VectorError(f"unknown site {site!r}; use one of {SITES}")
    return f"blocks.{layer}.hook_{site}"


def _check_layer(model: HookedModel, layer: int) -> None:
    n = model.cfg.n_layers
    if not 0 <= int(layer) < n:
        raise VectorError(f"layer {layer} is out of range: this model has layers 0..{n - 1}")


def has_mlp(model: HookedModel) -> bool:
    return not bool(getattr(model.cfg, "attn_only", False))


@contextmanager
def injected(model: HookedModel, hooks: Sequence[FwdHook]) -> Iterator[torch.nn.Module]:
    """``with injected(model, hooks): model(...)``; hooks removed on exit, exceptions included."""
    with model.hooks(fwd_hooks=list(hooks)):
        yield model


def random_like(vector: Tensor, seed: int = 0) -> Tensor:
    """A random Gaussian direction with the same norm as ``vector`` (per row of the last axis)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(vector.shape, generator=g, dtype=torch.float32).to(vector)
    norm = vector.norm(dim=-1, keepdim=True)
    return r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12) * norm


# ---------------------------------------------------------------------- prompt transforms
# ---------------------------------------------------------------------- capture
def capture(model: HookedModel, tokens: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """Detached copies of the activations at ``names`` (hooks removed afterwards)."""
    out: dict[str, Tensor] = {}

    def make(name: str) -> Callable[..., None]:
        def keep(act: Tensor, hook: Any) -> None:
            out[name] = act.detach().clone()
        return keep

    with torch.no_grad(), model.hooks(fwd_hooks=[(n, make(n)) for n in names]):
        model(tokens)
    return out


def readout_residuals(model: HookedModel, batch: PromptBatch, layers: Sequence[int] | None = None,
                      site: str = "resid_post") -> Float[Tensor, "layer batch d_model"]:
    """The residual stream at each row's read-out position, at ``hook_{site}`` of each layer."""
    check_fits(model, batch)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    for l in layers:
        _check_layer(model, l)
    names = [hook_name(l, site) for l in layers]
    acts = capture(model, batch.trim().tokens, names)
    rows = torch.arange(batch.batch_size)
    return torch.stack([acts[n][rows, batch.readout] for n in names])


# ---------------------------------------------------------------------- task vectors
def task_vector(model: HookedModel, batch: PromptBatch, layers: Sequence[int] | None = None,
                site: str = "resid_post") -> Float[Tensor, "layer d_model"]:
    """Hendel et al.'s task vector: the read-out residual at each layer, averaged over prompts."""
    return readout_residuals(model, batch, layers, site).mean(1)


def readout_hooks(batch: PromptBatch, layer: int, vector: Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"],
                  site: str = "resid_post", mode: Literal["replace", "add"] = "replace",
                  scale: float = 1.0) -> list[FwdHook]:
    """Hooks that replace (task vectors) or add to (function vectors) the activation at
    ``hook_{site}`` of ``layer`` at each row's read-out position. ``vector`` is one [d_model]
    vector for every row or one per row ([batch, d_model])."""
    if mode not in ("replace", "add"):
        raise VectorError(f"mode must be 'replace' or 'add', got {mode!r}")
    readout = batch.readout.clone()
    vec = vector.detach()
    if vec.ndim == 2 and vec.shape[0] != batch.batch_size:
        raise VectorError(f"a per-row vector needs {batch.batch_size} rows, got {vec.shape[0]}")

    def hook(act: Tensor, hook: Any) -> Tensor:
        if act.shape[-1] != vec.shape[-1]:
            raise VectorError(f"vector has size {vec.shape[-1]} but the model's d_model is {act.shape[-1]}")
        act = act.clone()
        rows = torch.arange(act.shape[0])
        v = vec.to(act.dtype).to(act.device)
        if mode == "replace":
            act[rows, readout] = v.expand(act.shape[0], -1) if v.ndim == 1 else v
        else:
            act[rows, readout] = act[rows, readout] + scale * v
        return act

    return [(hook_name(layer, site), hook)]


# ---------------------------------------------------------------------- function vectors
def mean_head_outputs(model: HookedModel, batch: PromptBatch) -> Float[Tensor, "layer head d_head"]:
    """Mean ``hook_z`` of every head at the read-out position over the prompts of ``batch``."""
    return readout_head_z(model, batch).mean(1)


def readout_head_z(model: HookedModel, batch: PromptBatch) -> Float[Tensor, "layer batch head d_head"]:
    check_fits(model, batch)
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    acts = capture(model, batch.trim().tokens, names)
    rows = torch.arange(batch.batch_size)
    return torch.stack([acts[n][rows, batch.readout] for n in names])


def target_prob(logits: Float[Tensor, "batch vocab"], batch: PromptBatch) -> Float[Tensor, " batch"]:
    """P(target) under the full-vocabulary softmax at the read-out position."""
    if batch.target is None or (batch.target < 0).any():
        raise PromptError("this method needs batch.target (the correct read-out token) on every row")
    return logits.float().softmax(-1).gather(1, batch.target[:, None]).squeeze(1)


def _readout_logits(model: HookedModel, tokens: Tensor, readout: Tensor) -> Tensor:
    logits = model(tokens)
    return logits[torch.arange(tokens.shape[0]), readout]


def head_aie(model: HookedModel, batch: PromptBatch, mean_z: Float[Tensor, "layer head d_head"],
             heads: Sequence[tuple[int, int]] | None = None, chunk: int = 256) -> Float[Tensor, "layer head"]:
    """Average indirect effect of each head: mean over rows of P(target | z[l,h] at s_q set to
    ``mean_z[l,h]``) - P(target | unpatched), on ``batch`` (typically label-shuffled prompts).

    ``heads`` restricts the computation (others are NaN). Patched copies of the batch are stacked
    along the batch axis (``chunk`` rows per forward), so this equals the one-head-at-a-time loop.
    """
    check_fits(model, batch)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    heads = [(l, h) for l in range(L) for h in range(H)] if heads is None else [(int(l), int(h)) for l, h in heads]
    batch = batch.trim()
    B = batch.batch_size
    out = torch.full((L, H), float("nan"))
    with torch.no_grad():
        base = target_prob(_readout_logits(model, batch.tokens, batch.readout), batch)
        per = max(1, chunk // B)
        for start in range(0, len(heads), per):
            group = heads[start : start + per]
            n = len(group)
            tokens = batch.tokens.repeat(n, 1)
            readout = batch.readout.repeat(n)
            row_layer = torch.tensor([l for l, _ in group]).repeat_interleave(B)
            row_head = torch.tensor([h for _, h in group]).repeat_interleave(B)

            def make(layer: int) -> Callable[..., Tensor]:
                def hook(z: Tensor, hook: Any) -> Tensor:
                    rows = (row_layer == layer).nonzero().flatten()
                    if len(rows) == 0:
                        return z
                    z = z.clone()
                    z[rows, readout[rows], row_head[rows]] = mean_z[layer, row_head[rows]].to(z.dtype)
                    return z
                return hook

            layers_used = sorted({l for l, _ in group})
            hooks = [(f"blocks.{l}.attn.hook_z", make(l)) for l in layers_used]
            with model.hooks(fwd_hooks=hooks):
                logits = _readout_logits(model, tokens, readout)
            tgt = batch.target.repeat(n)  # type: ignore[union-attr]
            p = logits.float().softmax(-1).gather(1, tgt[:, None]).reshape(n, B)
            for j, (l, h) in enumerate(group):
                out[l, h] = (p[j] - base).mean()
    return out


def head_aie_attribution(model: HookedModel, batch: PromptBatch,
                         mean_z: Float[Tensor, "layer head d_head"]) -> Float[Tensor, "layer head"]:
    """First-order estimate of ``head_aie`` for every head from one forward and one backward:
    mean over rows of (mean_z - z) . dP(target)/dz at s_q."""
    check_fits(model, batch)
    batch = batch.trim()
    L = model.cfg.n_layers
    store: dict[int, Tensor] = {}

    def make(layer: int) -> Callable[..., Tensor]:
        def hook(z: Tensor, hook: Any) -> Tensor:
            store[layer] = z
            return z
        return hook

    with torch.enable_grad(), model.hooks(fwd_hooks=[(f"blocks.{l}.attn.hook_z", make(l)) for l in range(L)]):
        logits = _readout_logits(model, batch.tokens, batch.readout)
        # gradients w.r.t. the activations only: no weight gradients are computed or stored
        grads = torch.autograd.grad(target_prob(logits, batch).sum(), [store[l] for l in range(L)])
    rows = torch.arange(batch.batch_size)
    out = []
    for l in range(L):
        z = store[l].detach()[rows, batch.readout]  # [batch, head, d_head]
        g = grads[l][rows, batch.readout]
        out.append(einsum(mean_z[l][None] - z, g, "b h d, b h d -> b h").mean(0))
    return torch.stack(out)


def top_heads(scores: Float[Tensor, "layer head"], n: int = 10) -> list[tuple[int, int]]:
    """The ``n`` heads with the largest scores (NaN last)."""
    flat = torch.nan_to_num(scores.flatten(), nan=float("-inf"))
    idx = flat.argsort(descending=True)[:n]
    H = scores.shape[1]
    return [(int(i) // H, int(i) % H) for i in idx if torch.isfinite(flat[i])]


def function_vector(model: HookedModel, mean_z: Float[Tensor, "layer head d_head"],
                    heads: Sequence[tuple[int, int]],
                    gain: Float[Tensor, "layer d_model"] | None = None) -> Float[Tensor, " d_model"]:
    """Todd et al.'s function vector: sum over ``heads`` of ``W_O[l, h] @ mean_z[l, h]``, each
    times ``gain[l]`` where the model normalises the attention output before the residual stream
    (``post_attention_gain``; Gemma 2/3), so that the vector lives in the residual stream."""
    if not heads:
        raise VectorError("a function vector needs at least one head")
    W_O = model.W_O.detach()
    out = torch.zeros(W_O.shape[-1], dtype=W_O.dtype)
    for l, h in heads:
        head_out = einsum(mean_z[l, h].to(W_O.dtype), W_O[l, h], "d, d m -> m")
        out = out + (head_out if gain is None else head_out * gain[l].to(W_O.dtype))
    return out


def post_attention_gain(model: HookedModel, batch: PromptBatch) -> Float[Tensor, "layer d_model"] | None:
    """Per layer, the post-attention norm (``blocks.{l}.ln1_post``: Gemma 2/3 RMS-normalise the
    attention output before adding it to the residual stream) linearised at the read-out of
    ``batch``: its weight over the attention output's mean RMS there. A head's output ``W_O z`` enters
    the residual stream times this gain (exactly, for one prompt and all heads of a layer). None
    for models without such a norm, whose heads add ``W_O z`` directly."""
    if not hasattr(model.blocks[0], "ln1_post"):
        return None
    L = model.cfg.n_layers
    names = [f"blocks.{l}.ln1_post.hook_{k}" for l in range(L) for k in ("normalized", "out", "scale")]
    acts = capture(model, batch.trim().tokens, names)
    rows = torch.arange(batch.batch_size)
    gains = []
    for l in range(L):
        normed, out, scale = (acts[f"blocks.{l}.ln1_post.hook_{k}"][rows, batch.readout].double()
                              for k in ("normalized", "out", "scale"))
        weight = (out * normed).sum(0) / (normed * normed).sum(0).clamp_min(1e-30)  # out = normed * weight
        gains.append(weight / scale.mean())
    return torch.stack(gains).float()


# ---------------------------------------------------------------------- in-context vectors
def _demo_sequences(batch: PromptBatch) -> tuple[Int[Tensor, "n pos"], Int[Tensor, " n"], Int[Tensor, " n"]]:
    """Every demonstration as its own right-padded sequence ``[prefix] x_i s_i y_i``, with the
    positions of s_i and y_i in it."""
    seqs: list[list[int]] = []
    xs: list[int] = []
    ys: list[int] = []
    for b in range(batch.batch_size):
        toks = batch.tokens[b].tolist()
        if batch.n_demos == 0 or batch.forerunner[b, 0] < 0:
            continue
        prefix = toks[: int(batch.demo_text[b, 0, 0])]
        for i in range(batch.n_demos):
            if batch.forerunner[b, i] < 0:
                continue
            s = int(batch.demo_text[b, i, 0])
            f, y = int(batch.forerunner[b, i]), int(batch.label[b, i])
            seq = prefix + toks[s : y + 1]
            seqs.append(seq)
            xs.append(len(prefix) + f - s)
            ys.append(len(prefix) + y - s)
    if not seqs:
        raise VectorError("an in-context vector needs prompts with at least one demonstration (k >= 1)")
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), batch.pad_id, dtype=torch.long)
    for i, seq in enumerate(seqs):
        tokens[i, : len(seq)] = torch.tensor(seq)
    return tokens, torch.tensor(xs), torch.tensor(ys)


def demo_pair_states(model: HookedModel, batch: PromptBatch, site: str = "resid_post",
                     chunk: int = 64) -> tuple[Float[Tensor, "n layer d_model"], Float[Tensor, "n layer d_model"]]:
    """Hidden states (``hook_{site}`` of every layer) at s_i and at y_i of every demonstration,
    each demonstration run alone (see the module docstring)."""
    tokens, xs, ys = _demo_sequences(batch)
    names = [hook_name(l, site) for l in range(model.cfg.n_layers)]
    hx, hy = [], []
    for start in range(0, len(tokens), chunk):
        sl = slice(start, start + chunk)
        acts = capture(model, tokens[sl], names)
        rows = torch.arange(len(tokens[sl]))
        hx.append(torch.stack([acts[n][rows, xs[sl]] for n in names], 1))
        hy.append(torch.stack([acts[n][rows, ys[sl]] for n in names], 1))
    return torch.cat(hx), torch.cat(hy)


def in_context_vector(hx: Float[Tensor, "n layer d_model"],
                      hy: Float[Tensor, "n layer d_model"]) -> Float[Tensor, "layer d_model"]:
    """Liu et al.'s ICV: the first principal direction of the differences ``hy - hx`` (flattened
    over layers, centred), with its sign chosen so it agrees with their mean. Unit norm overall."""
    diffs = rearrange((hy - hx).float(), "n l d -> n (l d)")
    mean = diffs.mean(0)
    if diffs.shape[0] < 2:
        direction = mean / mean.norm().clamp_min(1e-12)
    else:
        _, _, V = torch.pca_lowrank(diffs, q=1, center=True, niter=6)
        direction = V[:, 0]
        if torch.dot(direction, mean) < 0:
            direction = -direction
    return rearrange(direction, "(l d) -> l d", l=hx.shape[1])


def icv_update(x: Float[Tensor, "... d"], v: Float[Tensor, " d"], lam: float) -> Float[Tensor, "... d"]:
    """The paper's update ``norm(norm(x) + lam (1 + max(0, cos(x, -v))) norm(v)) * ||x||``:
    steer the direction of x towards v, keeping the norm of x. ``lam = 0`` returns x."""
    if lam == 0:
        return x
    xf = x.float()
    vf = v.float().to(x.device)
    x_norm = xf.norm(dim=-1, keepdim=True)
    x_hat = xf / x_norm.clamp_min(1e-12)
    v_hat = vf / vf.norm().clamp_min(1e-12)
    cos_neg = -(x_hat @ v_hat)[..., None]
    boost = 1.0 + cos_neg.clamp_min(0.0)
    y = x_hat + lam * boost * v_hat
    return (y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12) * x_norm).to(x.dtype)


def icv_hooks(model: HookedModel, icv: Float[Tensor, "layer d_model"], lam: float,
              site: str | None = None, layers: Sequence[int] | None = None) -> list[FwdHook]:
    """Hooks applying ``icv_update`` with ``icv[l]`` at every position of ``hook_{site}`` of every
    layer (default site: ``mlp_out`` when the model has MLPs, else ``resid_post``)."""
    site = site or ("mlp_out" if has_mlp(model) else "resid_post")
    if site == "mlp_out" and not has_mlp(model):
        raise VectorError("this model is attention-only: it has no hook_mlp_out; use site='resid_post'")
    if icv.shape[0] != model.cfg.n_layers:
        raise VectorError(f"icv has {icv.shape[0]} layers, the model {model.cfg.n_layers}")
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)

    def make(layer: int) -> Callable[..., Tensor]:
        v = icv[layer].detach()

        def hook(act: Tensor, hook: Any) -> Tensor:
            return icv_update(act, v, lam)
        return hook

    return [(hook_name(l, site), make(l)) for l in layers]
