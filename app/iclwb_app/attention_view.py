"""Attention patterns of one prompt, per-head summaries and their plotly figures."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from iclwb_app.model_info import AppInputError, token_labels
from iclwb_app.prompting import check_prompt_fits
from probes.errors import ResourceLimitError, gib
from probes.heads import attention_patterns
from probes.hooked import HookedModel
from probes.prompt import PromptBatch

ROLE_COLOURS: dict[str, str] = {
    "demo_text": "#cfe2ff",
    "forerunner": "#ffe69c",
    "label": "#a3cfbb",
    "query_text": "#f1aeb5",
    "readout": "#e35d6a",
    "pad": "#e9ecef",
    "other": "#f8f9fa",
}
ROLE_NAMES: dict[str, str] = {
    "demo_text": "demonstration text x_i",
    "forerunner": "forerunner s_i",
    "label": "label y_i",
    "query_text": "query text x_q",
    "readout": "read-out s_q",
    "pad": "padding",
    "other": "other (BOS, separators)",
}
MAX_VIEW_GB = 1.0
"""Default limit on the attention maps the explorer keeps for one prompt (GiB); override it with
``$ICLWB_APP_MAX_ATTENTION_GB``."""


@dataclass
class PromptView:
    """One prompt as the explorer shows it: tokens, labels, roles and every head's pattern."""

    tokens: list[int]
    labels: list[str]
    roles: list[str]
    patterns: np.ndarray  # [layer, head, q, k]
    readout: int
    target: int

    @property
    def n_layers(self) -> int:
        return int(self.patterns.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.patterns.shape[1])


def view_limit_bytes() -> int:

    text = os.environ.get("ICLWB_APP_MAX_ATTENTION_GB", "")
    try:
        return int(float(text or MAX_VIEW_GB) * 2**30)
    except ValueError:
        raise AppInputError(f"ICLWB_APP_MAX_ATTENTION_GB={text!r} is not a number of GiB; set e.g. 2") from None


def check_view_memory(model: HookedModel, n_tokens: int) -> None:
    """ResourceLimitError, before the forward pass, when every head's attention map of an
    ``n_tokens`` prompt (float32, kept twice: tensor and array) exceeds ``view_limit_bytes()``."""
    heads = int(model.cfg.n_layers) * int(model.cfg.n_heads)
    need = 2 * 4 * heads * n_tokens ** 2
    limit = view_limit_bytes()
    if need > limit:
        fit = int((limit / (2 * 4 * heads)) ** 0.5)
        raise ResourceLimitError(
            f"this prompt has {n_tokens} tokens: the attention maps of its {heads} heads would need "
            f"about {gib(need)}, over the app's limit of {gib(limit)} ($ICLWB_APP_MAX_ATTENTION_GB); "
            f"shorten it to at most {fit} tokens")


def prompt_view(model: HookedModel, batch: PromptBatch) -> PromptView:
    """Run row 0 of ``batch`` and collect every head's attention pattern (a copy)."""

    row = batch.select([0]).trim()
    check_prompt_fits(model, row)
    check_view_memory(model, row.seq_len)
    with torch.no_grad():
        pat = attention_patterns(model, row.tokens)[:, 0]  # [L, H, q, k]
    toks = row.tokens[0].tolist()
    return PromptView(
        tokens=toks,
        labels=token_labels(model, toks),
        roles=row.role_of_positions()[0],
        patterns=pat.float().cpu().numpy(),
        readout=int(row.readout[0]),
        target=int(row.target[0]) if row.target is not None else -1,
    )


def top_predictions(model: HookedModel, batch: PromptBatch, k: int = 5) -> pd.DataFrame:
    """The model's ``k`` most probable next tokens at row 0's read-out: rank, token (label),
    token_id, probability (softmax over the whole vocabulary), and whether it is the target."""
    from probes.readout import readout_logits  # noqa: PLC0415

    row = batch.select([0]).trim()
    check_prompt_fits(model, row)
    with torch.no_grad():
        probs = torch.softmax(readout_logits(model, row)[0].float(), dim=-1)
    top = torch.topk(probs, min(k, probs.shape[-1]))
    ids = [int(i) for i in top.indices]
    target = int(row.target[0]) if row.target is not None else -1
    return pd.DataFrame({"rank": range(1, len(ids) + 1), "token": token_labels(model, ids), "token_id": ids,
                         "probability": [float(p) for p in top.values], "target": [i == target for i in ids]})


def readout_attention(view: PromptView, layer: int, head: int) -> np.ndarray:
    """Attention of head (layer, head) from the read-out position to every token: [pos]."""
    return view.patterns[layer, head, view.readout, : view.readout + 1]


def role_mass(view: PromptView, role: str) -> np.ndarray:
    """Per head, the attention mass from the read-out position onto tokens of ``role``: [L, H]."""
    mask = np.array([r == role for r in view.roles[: view.readout + 1]], dtype=np.float32)
    return np.einsum("lhk,k->lh", view.patterns[:, :, view.readout, : view.readout + 1], mask)


def previous_token_mass(view: PromptView) -> np.ndarray:
    """Per head, the mean attention A[i, i-1] over the prompt: [L, H]."""
    T = view.patterns.shape[-1]
    if T < 2:
        return np.zeros(view.patterns.shape[:2], dtype=np.float32)
    return np.diagonal(view.patterns, offset=-1, axis1=-2, axis2=-1).mean(-1)


HEAD_SUMMARIES: dict[str, Callable[[PromptView], np.ndarray]] = {
    "read-out → labels": lambda v: role_mass(v, "label"),
    "read-out → forerunners": lambda v: role_mass(v, "forerunner"),
    "read-out → query text": lambda v: role_mass(v, "query_text"),
    "previous-token": previous_token_mass,
}


def token_strip_html(labels: Sequence[str], roles: Sequence[str], highlight: int | None = None) -> str:
    """The prompt as coloured token chips (one colour per role), as HTML."""
    chips = []
    for i, (lab, role) in enumerate(zip(labels, roles)):
        text = html.escape(lab.replace("\n", "⏎")) or "&nbsp;"
        border = "2px solid #212529" if i == highlight else "1px solid #adb5bd"
        chips.append(
            f'<span title="{i}: {html.escape(ROLE_NAMES.get(role, role))}" style="background:'
            f'{ROLE_COLOURS.get(role, "#fff")};border:{border};border-radius:4px;padding:1px 4px;'
            f'margin:1px;display:inline-block;font-family:monospace;font-size:0.85em">{text}</span>'
        )
    legend = " ".join(
        f'<span style="background:{ROLE_COLOURS[r]};padding:1px 6px;border-radius:4px;'
        f'font-size:0.75em">{html.escape(ROLE_NAMES[r])}</span>'
        for r in ROLE_COLOURS if r in set(roles)
    )
    return f'<div style="line-height:1.9">{"".join(chips)}</div><div>{legend}</div>'


def _tick_labels(labels: Sequence[str]) -> list[str]:
    return [f"{i}:{lab.strip() or repr(lab)}"[:14] for i, lab in enumerate(labels)]


def attention_heatmap(view: PromptView, layer: int, head: int) -> go.Figure:
    """Head (layer, head)'s attention pattern; hover shows query and key tokens and roles."""
    pat = view.patterns[layer, head]
    T = pat.shape[0]
    ticks = _tick_labels(view.labels)
    custom = np.empty((T, T, 2), dtype=object)
    for q in range(T):
        for k in range(T):
            custom[q, k, 0] = f"{ticks[q]} ({view.roles[q]})"
            custom[q, k, 1] = f"{ticks[k]} ({view.roles[k]})"
    fig = go.Figure(go.Heatmap(
        z=pat, x=list(range(T)), y=list(range(T)), customdata=custom, colorscale="Blues",
        zmin=0.0, zmax=1.0,
        hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>attention %{z:.3f}"
                      "<extra></extra>",
    ))
    fig.update_layout(
        title=f"L{layer}H{head} attention pattern (rows: query, columns: key)",
        xaxis=dict(tickmode="array", tickvals=list(range(T)), ticktext=ticks, tickangle=-60,
                   title="key"),
        yaxis=dict(tickmode="array", tickvals=list(range(T)), ticktext=ticks, autorange="reversed",
                   title="query"),
        height=min(900, 250 + 14 * T), margin=dict(l=10, r=10, t=40, b=10),
    )
    return fig


def readout_bar(view: PromptView, layer: int, head: int) -> go.Figure:
    """Bar chart of the read-out position's attention over the tokens, coloured by role."""
    row = readout_attention(view, layer, head)
    n = len(row)
    ticks = _tick_labels(view.labels[:n])
    fig = go.Figure(go.Bar(
        x=list(range(n)), y=row, marker_color=[ROLE_COLOURS.get(r, "#999") for r in view.roles[:n]],
        marker_line=dict(color="#495057", width=0.5),
        customdata=[[ticks[i], view.roles[i]] for i in range(n)],
        hovertemplate="%{customdata[0]} (%{customdata[1]})<br>attention %{y:.3f}<extra></extra>",
    ))
    fig.update_layout(
        title=f"L{layer}H{head}: attention from the read-out position",
        xaxis=dict(tickmode="array", tickvals=list(range(n)), ticktext=ticks, tickangle=-60),
        yaxis=dict(title="attention", range=[0, 1]), height=320, margin=dict(l=10, r=10, t=40, b=10),
    )
    return fig


def layer_head_heatmap(values: np.ndarray, title: str, selected: tuple[int, int] | None = None,
                       colorscale: str = "Viridis") -> go.Figure:
    """A layer x head grid of one score (rows: layers, columns: heads)."""
    L, H = values.shape
    fig = go.Figure(go.Heatmap(
        z=values, x=[f"H{h}" for h in range(H)], y=[f"L{l}" for l in range(L)], colorscale=colorscale,
        hovertemplate="%{y}%{x}: %{z:.3f}<extra></extra>",
        text=[["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in values],
        texttemplate="%{text}" if L * H <= 64 else None,
    ))
    if selected is not None:
        fig.add_shape(type="rect", x0=selected[1] - 0.5, x1=selected[1] + 0.5, y0=selected[0] - 0.5,
                      y1=selected[0] + 0.5, line=dict(color="red", width=3))
    fig.update_layout(title=title, yaxis=dict(autorange="reversed"),
                      height=max(220, 60 + 28 * L), margin=dict(l=10, r=10, t=40, b=10))
    return fig
