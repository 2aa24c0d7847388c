"""Representation probes for the "summarize" step: what the hidden state at a role encodes.

- ``role_states(model, batch, role)``: the residual stream at every layer (0 = embeddings,
  l = after block l-1, as Hugging Face ``hidden_states``) at the positions of ``role``, one row per
  (prompt, position), captured with ``probes.capture`` (nothing else is kept).
- Per-layer probes trained on one split of prompts and scored on another:
  ``CentroidProbe`` (class means, predict the nearest; Cho et al. C1) and ``LogisticProbe``
  (multinomial logistic regression, torch, L-BFGS from zero on standardised features:
  deterministic). ``probe_by_layer`` returns accuracy by layer; ``layer_probe`` does it all from
  two PromptBatches.
- ``knn_alignment``: kernel alignment of two representations of the same N items, the mean
  fraction of shared top-k cosine nearest neighbours (C1: KA = mean_n |topk(S1[n]) ∩ topk(S2[n])| / k,
  self-similarity excluded); ``kernel_alignment_by_layer`` per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor

from probes.capture import capture
from probes.errors import WorkbenchError
from probes.prompt import PromptBatch


class ProbeError(WorkbenchError):
    """A probe request that cannot be served; the message names the fix."""


# ---------------------------------------------------------------------- hidden states
@dataclass
class RoleStates:
    """Hidden states at one role: ``states[layer, i]`` belongs to prompt ``rows[i]``,
    ``slot[i]``-th position of the role (the demonstration index for forerunner/label)."""

    states: Float[Tensor, "layer n d"]
    rows: Int[Tensor, " n"]
    slot: Int[Tensor, " n"]
    positions: Int[Tensor, " n"]
    role: str


def role_states(model: Any, batch: PromptBatch, role: str = "readout", batch_size: int = 16,
                progress: bool | None = None) -> RoleStates:
    """Residual stream at ``role`` for layers 0..n_layers (0 = embedding output)."""
    L = int(model.cfg.n_layers)
    cap = capture(model, batch, ["blocks.0.hook_resid_pre", "hook_resid_post"], roles=role,
                  batch_size=batch_size, progress=progress)
    first = cap.get("hook_resid_pre", 0, None, role)
    stack = torch.stack([first] + [cap.get("hook_resid_post", l, None, role) for l in range(L)])
    valid = cap.valid[role]  # [b, n]
    b_idx, s_idx = valid.nonzero(as_tuple=True)
    return RoleStates(states=stack[:, b_idx, s_idx].float(), rows=b_idx, slot=s_idx,
                      positions=cap.positions[role][b_idx, s_idx], role=role)


def role_labels(batch: PromptBatch, rs: RoleStates) -> Int[Tensor, " n"]:
    """Default class labels for RoleStates: ``query_class`` at query roles, ``demo_class`` at
    demonstration roles (forerunner / label)."""
    if rs.role in ("readout", "query_text", "query"):
        if batch.query_class is None:
            raise ProbeError("the batch has no query_class; pass labels= to the probe")
        return batch.query_class[rs.rows]
    if rs.role in ("forerunner", "label"):
        if batch.demo_class is None:
            raise ProbeError("the batch has no demo_class; pass labels= to the probe")
        return batch.demo_class[rs.rows, rs.slot]
    raise ProbeError(f"no default labels for role {rs.role!r}; pass labels= (one per row)")


# ---------------------------------------------------------------------- probes
class CentroidProbe:
    """Nearest class mean (Euclidean), as the centroid classifier of Cho et al. (C1)."""

    def fit(self, X: Float[Tensor, "n d"], y: Int[Tensor, " n"]) -> "CentroidProbe":
        X, y = _check(X, y)
        self.classes = torch.unique(y)
        self.centroids = torch.stack([X[y == c].mean(0) for c in self.classes])
        return self

    def predict(self, X: Float[Tensor, "n d"]) -> Int[Tensor, " n"]:
        d = torch.cdist(X.double(), self.centroids.double())
        return self.classes[d.argmin(dim=1)]


class LogisticProbe:
    """Multinomial logistic regression with L2 penalty ``l2``, fit by L-BFGS from zero weights
    on features standardised with the training mean and std (deterministic)."""

    def __init__(self, l2: float = 1e-3, max_iter: int = 100):
        self.l2, self.max_iter = l2, max_iter

    def fit(self, X: Float[Tensor, "n d"], y: Int[Tensor, " n"]) -> "LogisticProbe":
        X, y = _check(X, y)
        X = X.double()
        self.classes = torch.unique(y)
        target = torch.searchsorted(self.classes, y)
        self.mu, self.sd = X.mean(0), X.std(0, unbiased=False).clamp(min=1e-8)
        Z = (X - self.mu) / self.sd
        W = torch.zeros(Z.shape[1], len(self.classes), dtype=torch.float64, requires_grad=True)
        b = torch.zeros(len(self.classes), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=self.max_iter,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(Z @ W + b, target) + self.l2 * (W * W).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self.W, self.b = W.detach(), b.detach()
        return self

    def predict(self, X: Float[Tensor, "n d"]) -> Int[Tensor, " n"]:
        Z = (X.double() - self.mu) / self.sd
        return self.classes[(Z @ self.W + self.b).argmax(dim=1)]


PROBES = {"centroid": CentroidProbe, "logistic": LogisticProbe}


def _check(X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if X.dim() != 2 or y.dim() != 1 or X.shape[0] != y.shape[0]:
        raise ProbeError(f"probe needs X [n, d] and y [n]; got {tuple(X.shape)} and {tuple(y.shape)}")
    if (y < 0).any():
        raise ProbeError("labels contain -1 (unknown class); drop those rows or pass labels=")
    if torch.unique(y).numel() < 2:
        raise ProbeError("probe needs at least two classes in the training split")
    return X, y.long()


def probe_accuracy(X_train: Tensor, y_train: Tensor, X_test: Tensor, y_test: Tensor,
                   kind: str = "centroid", **kw: Any) -> float:
    if kind not in PROBES:
        raise ProbeError(f"unknown probe {kind!r}; use one of {sorted(PROBES)}")
    probe = PROBES[kind](**kw).fit(X_train, y_train)
    return float((probe.predict(X_test) == y_test).float().mean())


def probe_by_layer(train: Float[Tensor, "layer n d"], y_train: Int[Tensor, " n"],
                   test: Float[Tensor, "layer m d"], y_test: Int[Tensor, " m"],
                   kind: str = "centroid", **kw: Any) -> Float[Tensor, " layer"]:
    """Accuracy of a probe trained on ``train[l]`` and scored on ``test[l]``, for every layer."""
    if train.shape[0] != test.shape[0]:
        raise ProbeError("train and test must have the same number of layers")
    return torch.tensor([probe_accuracy(train[l], y_train, test[l], y_test, kind, **kw)
                         for l in range(train.shape[0])])


@dataclass
class ProbeResult:
    accuracy: Float[Tensor, " layer"]
    kind: str
    role: str
    chance: float
    n_train: int
    n_test: int
    info: dict[str, Any] = field(default_factory=dict)

    def best_layer(self) -> int:
        return int(self.accuracy.argmax())


def layer_probe(model: Any, train_batch: PromptBatch, test_batch: PromptBatch,
                role: str = "readout", kind: str = "centroid",
                train_labels: Tensor | None = None, test_labels: Tensor | None = None,
                batch_size: int = 16) -> ProbeResult:
    """Train a ``kind`` probe per layer on ``train_batch`` states at ``role``; score on ``test_batch``.

    Labels default to the batches' query_class (query roles) or demo_class (demo roles).
    """
    tr = role_states(model, train_batch, role, batch_size=batch_size)
    te = role_states(model, test_batch, role, batch_size=batch_size)
    y_tr = role_labels(train_batch, tr) if train_labels is None else train_labels
    y_te = role_labels(test_batch, te) if test_labels is None else test_labels
    acc = probe_by_layer(tr.states, y_tr, te.states, y_te, kind)
    counts = torch.bincount(y_te[y_te >= 0])
    return ProbeResult(acc, kind, role, float(counts.max()) / float(counts.sum()),
                       int(len(y_tr)), int(len(y_te)))


# ---------------------------------------------------------------------- kernel alignment
def knn_alignment(A: Float[Tensor, "n d1"], B: Float[Tensor, "n d2"], k: int = 64) -> float:
    """Mean fraction of shared top-k cosine nearest neighbours of the same N items in A and B."""
    if A.shape[0] != B.shape[0]:
        raise ProbeError(f"A and B must describe the same items: {A.shape[0]} != {B.shape[0]} rows")
    n = A.shape[0]
    if not 1 <= k < n:
        raise ProbeError(f"k must lie in 1..{n - 1} for {n} items, got {k}")

    def topk(X: Tensor) -> Tensor:
        Xn = torch.nn.functional.normalize(X.double(), dim=1)
        S = Xn @ Xn.T
        S.fill_diagonal_(-float("inf"))  # S is a fresh tensor; the input is untouched
        return S.topk(k, dim=1).indices

    ia, ib = topk(A), topk(B)
    hit_a = torch.zeros(n, n, dtype=torch.bool).scatter_(1, ia, True)
    hit_b = torch.zeros(n, n, dtype=torch.bool).scatter_(1, ib, True)
    return float((hit_a & hit_b).sum(1).double().mean() / k)


def kernel_alignment_by_layer(states: Float[Tensor, "layer n d"],
                              reference: Float[Tensor, "n e"] | Float[Tensor, "layer n e"],
                              k: int = 64) -> Float[Tensor, " layer"]:
    """``knn_alignment`` of each layer's states with a reference (one matrix, or one per layer)."""
    refs = [reference] * states.shape[0] if reference.dim() == 2 else list(reference)
    if len(refs) != states.shape[0]:
        raise ProbeError("a per-layer reference needs as many layers as the states")
    return torch.tensor([knn_alignment(states[l], refs[l], k) for l in range(states.shape[0])])


def probe_figure(curves: dict[str, Sequence[float] | Tensor], title: str = "probe accuracy by layer",
                 chance: float | None = None, y_title: str = "accuracy"):
    """Line plot of per-layer curves (e.g. {"centroid": acc, "logistic": acc})."""

    fig = go.Figure()
    for name, ys in curves.items():
        ys = [float(v) for v in ys]
        fig.add_trace(go.Scatter(x=list(range(len(ys))), y=ys, mode="lines+markers", name=name))
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dot", annotation_text="chance")
    fig.update_layout(title=title, xaxis_title="layer (0 = embeddings)", yaxis_title=y_title)
    return fig
