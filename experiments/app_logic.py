"""What the Streamlit app's pages compute: pure functions, reachable from unit tests and notebooks.

The app (``app/``) holds only UI code; every number it shows comes from a function here (or from
the lower layers these call), so ``tests/test_app_logic.py`` can check it without a browser.

Sections:

- models: what kind of model a name loads to, token labels, symbols;
- prompts: a task prompt (from ``experiments.tasks``, plus the built-in ``kv-recall``) or a typed
  prompt, as a one-row ``PromptBatch``;
- attention: patterns of one prompt, per-head summaries, and their plotly figures;
- head scan: tidy table, heatmaps and top-heads table of ``experiments.scan.head_scan``;
- results: read, filter and plot a results folder written by sweeps.
"""

from __future__ import annotations

import html
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float

from probes import stats
from probes.errors import ResourceLimitError, WorkbenchError, gib
from probes.prompt import PromptBatch, PromptBuilder, PromptError

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
FALLBACK_TASKS: tuple[str, ...] = ("kv-recall",)
MAX_PROMPT_CHARS = 20_000
MAX_VIEW_GB = 1.0
"""Default limit on the attention maps the explorer keeps for one prompt (GiB); override it with
``$ICLWB_APP_MAX_ATTENTION_GB``."""
MAX_RESULT_FILES = 20_000
MAX_RESULT_DIRS = 2_000
"""Bounds on the scan of a results folder (Parquet files found, folders walked)."""


class AppInputError(WorkbenchError):
    """Input the app cannot use (unknown task, bad token, empty results folder); says the fix."""


# ============================================================================ models
def model_kind(model: torch.nn.Module) -> str:
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


def model_summary(model: torch.nn.Module, name: str = "") -> dict[str, Any]:
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


def token_symbols(model: torch.nn.Module) -> list[str] | None:
    """A zoo model's printable vocabulary (``card["task"]["symbols"]`` or similar), if it has one."""
    card = getattr(model, "zoo_card", None) or {}
    for where in (card.get("task", {}), card, card.get("extra", {})):
        if not isinstance(where, dict):
            continue
        for key in ("symbols", "vocab_symbols", "token_names", "itos"):
            val = where.get(key)
            if isinstance(val, list) and val:
                return [str(s) for s in val]
    own = _card_task_name(model)
    reg = _tasks_registry()
    for name in getattr(reg, "TOKEN_TASKS", ()) if reg is not None and own else ():
        if own == name or own.startswith(name):
            mod = _task_module(name)
            if mod is not None and callable(getattr(mod, "token_names", None)):
                return [str(s) for s in mod.token_names()]
    return None


def token_labels(model: torch.nn.Module, tokens: Sequence[int]) -> list[str]:
    """A short printable label per token (decoded text, symbol, or the id)."""
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        return [tok.decode([int(t)]) for t in tokens]
    syms = token_symbols(model)
    if syms:
        return [syms[int(t)] if 0 <= int(t) < len(syms) else str(int(t)) for t in tokens]
    return [str(int(t)) for t in tokens]


# ============================================================================ prompts
def _tasks_registry() -> Any | None:
    try:
        return importlib.import_module("experiments.tasks")
    except ImportError:
        return None


def _task_module(name: str) -> Any | None:
    reg = _tasks_registry()
    if reg is None:
        return None
    try:
        return reg.get_task(name)
    except (ImportError, ValueError, AttributeError):  # a task still being written is skipped
        return None


def _card_task_name(model: torch.nn.Module) -> str:
    card = getattr(model, "zoo_card", None) or {}
    task = card.get("task", {})
    return str(task.get("name", "") if isinstance(task, dict) else task)


def _own_task_first(model: torch.nn.Module, names: list[str]) -> list[str]:
    own = _card_task_name(model)
    return sorted(names, key=lambda n: (not (own and (own == n or own.startswith(n))), names.index(n)))


def language_task_names() -> list[str]:
    """Text tasks for a model with a tokenizer: ``language:DATASET`` (sentiment, capitals, ...)
    then the standard suite ``fv:NAME`` (task files are typed in as ``file:PATH``)."""
    reg = _tasks_registry()
    if reg is not None and hasattr(reg, "catalog"):
        return [t for t in reg.catalog() if reg.is_text_task(t)]
    mod = _task_module("language")
    if mod is None:
        return []
    for attr in ("names", "task_names", "TASKS", "LANGUAGE_TASKS"):
        val = getattr(mod, attr, None)
        val = val() if callable(val) else val
        if isinstance(val, dict):
            return [f"language:{n}" for n in val]
        if isinstance(val, (list, tuple)):
            return [f"language:{n}" for n in val]
    return ["language"]


def available_tasks(model: torch.nn.Module) -> list[str]:
    """Tasks the explorer can build a prompt of for ``model``: the token tasks of
    ``experiments.tasks`` whose vocabulary fits the model (its own training task first) plus the
    built-in ``kv-recall``; for text models, the language tasks."""
    kind = model_kind(model)
    if kind == "vector":
        return []
    if kind == "text":
        return language_task_names()
    reg = _tasks_registry()
    vocab = int(model.cfg.d_vocab)
    names = []
    for name in getattr(reg, "TOKEN_TASKS", ()) if reg is not None else ():
        mod = _task_module(name)
        if mod is not None and int(getattr(mod, "VOCAB_SIZE", vocab)) <= vocab:
            names.append(name)
    return _own_task_first(model, names) + list(FALLBACK_TASKS)


def task_prompt(model: torch.nn.Module, task: str, k: int, seed: int = 0) -> PromptBatch:
    """One prompt of ``task`` with ``k`` demonstrations for ``model`` (deterministic in ``seed``)."""
    batch = task_batch(model, task, k, 1, seed).select([0]).trim()
    check_prompt_fits(model, batch)
    return batch


def kv_recall_prompt(vocab: int, k: int, seed: int = 0) -> PromptBatch:
    """Key-value recall: k demonstrations ``a_i b_i v_i`` then a query ``a_j b_j`` whose answer
    is ``v_j`` (a repeated demonstration's value); solvable by an induction head.

    x_i = a_i (demonstration text), s_i = b_i (forerunner), y_i = v_i (label). Keys and values are
    distinct random tokens; candidates are the demonstration values.
    """
    if k < 1:
        raise AppInputError("kv-recall needs k >= 1 (the query repeats a demonstration's key)")
    if 3 * k > vocab:
        raise AppInputError(f"kv-recall with k={k} needs {3 * k} distinct tokens; the vocabulary "
                            f"has {vocab}: use a smaller k")
    g = torch.Generator().manual_seed(seed)
    toks = torch.randperm(vocab, generator=g)[: 3 * k].view(k, 3).tolist()
    j = int(torch.randint(k, (1,), generator=g))
    pb = PromptBuilder()
    for i, (a, b, v) in enumerate(toks):
        pb.demo([a], b, v, cls=i)
    pb.query([toks[j][0]], toks[j][1])
    return pb.build(target=toks[j][2], candidates=[t[2] for t in toks], query_class=j,
                    meta={"task": "kv-recall", "k": k, "seed": seed})


def parse_prompt(model: torch.nn.Module, text: str) -> PromptBatch:
    """A typed prompt as a one-row ``PromptBatch``.

    Token-id models: whitespace-separated token ids (or the model's symbols); ``|`` separates
    demonstrations. In each demonstration the last token is the label y_i, the one before it the
    forerunner s_i, the rest x_i; in the final segment the last token is the read-out s_q. Without
    ``|`` the whole list is the query: ``"5 9 12 5 9"``.

    Text models: one demonstration per line, ``input: label`` (the label must be one token); the
    last line is the query and ends with ``:``. A single line without ``:`` is read as plain text
    with its last token as the read-out.
    """
    if not text or not text.strip():
        raise PromptError("the prompt is empty: type a prompt or pick a task")
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(f"the prompt has {len(text)} characters; the app accepts at most "
                          f"{MAX_PROMPT_CHARS}")
    kind = model_kind(model)
    if kind == "vector":
        raise PromptError("this model reads real vectors, not tokens: typed prompts do not apply; "
                          "use the ICL vs GD page for it")
    batch = _parse_text_prompt(model, text) if kind == "text" else _parse_token_prompt(model, text)
    check_prompt_fits(model, batch)
    return batch


def _token_id(model: torch.nn.Module, piece: str) -> int:
    vocab = int(model.cfg.d_vocab)
    syms = token_symbols(model)
    if syms and piece in syms:
        return syms.index(piece)
    try:
        tid = int(piece)
    except ValueError:
        hint = f" or one of the symbols {syms[:12]}" if syms else ""
        raise PromptError(f"token {piece!r} is not a token id; type integers 0..{vocab - 1}{hint}, "
                          f"separated by spaces") from None
    if not 0 <= tid < vocab:
        raise PromptError(f"token id {tid} is outside the vocabulary (0..{vocab - 1})")
    return tid


def _parse_token_prompt(model: torch.nn.Module, text: str) -> PromptBatch:
    segments = [s.split() for s in text.strip().split("|")]
    if any(not s for s in segments):
        raise PromptError("an empty segment between '|' separators; remove the extra '|'")
    pb = PromptBuilder()
    for i, seg in enumerate(segments[:-1]):
        ids = [_token_id(model, p) for p in seg]
        if len(ids) < 2:
            raise PromptError(f"demonstration {i} ({' '.join(seg)!r}) needs at least a forerunner "
                              f"and a label token")
        pb.demo(ids[:-2], ids[-2], ids[-1])
    q = [_token_id(model, p) for p in segments[-1]]
    pb.query(q[:-1], q[-1])
    return pb.build(meta={"task": "typed"})


def _parse_text_prompt(model: torch.nn.Module, text: str) -> PromptBatch:
    from probes.prompt import single_token_id

    tok = model.tokenizer

    def enc(s: str) -> list[int]:
        return list(tok.encode(s, add_special_tokens=False))

    lines = [ln for ln in text.strip().split("\n") if ln.strip()]
    pb = PromptBuilder()
    bos = getattr(tok, "bos_token_id", None)
    if bos is not None:
        pb.add([bos])
    newline = enc("\n")
    structured = lines[-1].rstrip().endswith(":")
    if not structured:
        ids = enc(text.strip())
        if len(ids) < 1:
            raise PromptError("the prompt encodes to no tokens")
        pb.query(ids[:-1], ids[-1])
        return pb.build(pad_id=_pad_id(tok), meta={"task": "typed"})
    labels: list[int] = []
    for i, line in enumerate(lines[:-1]):
        if ":" not in line:
            raise PromptError(f"demonstration line {i + 1} ({line!r}) has no ':'; write it as "
                              f"'input: label'")
        x, y = line.rsplit(":", 1)
        if not y.strip():
            raise PromptError(f"demonstration line {i + 1} ({line!r}) has no label after ':'")
        lab = single_token_id(tok, " " + y.strip(), what="label")
        labels.append(lab)
        pb.demo(enc(x.rstrip()), enc(":"), lab)
        pb.add(newline)
    q = lines[-1].rstrip()[:-1]
    pb.query(enc(q.rstrip()), enc(":"))
    cands = sorted(set(labels)) or None
    return pb.build(candidates=cands, pad_id=_pad_id(tok), meta={"task": "typed"})


def _pad_id(tok: Any) -> int:
    pid = getattr(tok, "pad_token_id", None)
    return int(pid) if pid is not None else 0


def check_prompt_fits(model: torch.nn.Module, batch: PromptBatch) -> None:
    """PromptError when the prompt is longer than the model's context."""
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is not None:
        batch.validate(n_ctx=int(n_ctx))


# ============================================================================ attention
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
    import os

    text = os.environ.get("ICLWB_APP_MAX_ATTENTION_GB", "")
    try:
        return int(float(text or MAX_VIEW_GB) * 2**30)
    except ValueError:
        raise AppInputError(f"ICLWB_APP_MAX_ATTENTION_GB={text!r} is not a number of GiB; set e.g. 2") from None


def check_view_memory(model: torch.nn.Module, n_tokens: int) -> None:
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


def prompt_view(model: torch.nn.Module, batch: PromptBatch) -> PromptView:
    """Run row 0 of ``batch`` and collect every head's attention pattern (a copy)."""
    from probes.heads import attention_patterns

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


# ============================================================================ head scan
def scan_frame(scan: dict[str, Any]) -> pd.DataFrame:
    """``head_scan`` output as a tidy table: score, layer, head, value."""
    rows = []
    for name, hs in scan.items():
        scores = hs.scores if hasattr(hs, "scores") else hs
        arr = torch.as_tensor(scores).detach().float().cpu().numpy()
        if arr.ndim != 2:
            continue
        for l in range(arr.shape[0]):
            for h in range(arr.shape[1]):
                rows.append((str(name), l, h, float(arr[l, h])))
    return pd.DataFrame(rows, columns=["score", "layer", "head", "value"])


def scan_matrix(df: pd.DataFrame, score: str) -> np.ndarray:
    """One score of a tidy scan table as a [layer, head] array."""
    sub = df[df["score"] == score]
    if sub.empty:
        raise AppInputError(f"no score {score!r} in the scan; scores: {sorted(df['score'].unique())}")
    L, H = int(sub["layer"].max()) + 1, int(sub["head"].max()) + 1
    out = np.full((L, H), np.nan)
    out[sub["layer"].to_numpy(), sub["head"].to_numpy()] = sub["value"].to_numpy()
    return out


def top_heads(df: pd.DataFrame, score: str | None = None, n: int = 10) -> pd.DataFrame:
    """Wide table, one row per head (L{l}H{h}) with every score, sorted by ``score`` descending."""
    wide = df.pivot_table(index=["layer", "head"], columns="score", values="value").reset_index()
    wide.columns.name = None
    wide.insert(0, "head_id", [f"L{l}H{h}" for l, h in zip(wide["layer"], wide["head"])])
    key = score or next((c for c in wide.columns if c not in ("head_id", "layer", "head")), None)
    if key is not None:
        wide = wide.sort_values(key, ascending=False, kind="stable")
    return wide.head(n).reset_index(drop=True)


def parse_head_id(head_id: str) -> tuple[int, int]:
    """``"L1H3"`` -> (1, 3)."""
    s = head_id.strip().upper()
    if not s.startswith("L") or "H" not in s:
        raise AppInputError(f"head {head_id!r} is not of the form L<layer>H<head>, e.g. L1H3")
    layer, head = s[1:].split("H", 1)
    return int(layer), int(head)


# ============================================================================ results store
def results_folder(folder: str | Path, root: str | Path | None = None) -> Path:
    """``folder`` resolved, when the app may read it: ``root`` (the results folder given at launch)
    or a folder inside it. Refused paths get the same message whether or not they exist."""
    if not str(folder).strip():
        raise AppInputError("no results folder given; run a sweep (`iclwb sweep run CONFIG`) or "
                            "`iclwb demo`, then pass its folder: `iclwb app --results DIR`")
    path = Path(folder).expanduser().resolve()
    if root is not None:
        top = Path(root).expanduser().resolve()
        if path != top and top not in path.parents:
            raise AppInputError(f"the app reads only the results folder it was started with ({top}) "
                                f"and folders inside it; to browse another, restart it with "
                                f"`iclwb app --results DIR`")
    return path


def result_files(path: Path) -> list[Path]:
    """The Parquet files under ``path``: a store's ``units/*.parquet``, else a bounded walk
    (at most ``MAX_RESULT_FILES`` files in ``MAX_RESULT_DIRS`` folders, symlinks not followed)."""
    import os

    if (path / "units").is_dir():
        files = sorted((path / "units").glob("*.parquet"))
        if len(files) > MAX_RESULT_FILES:
            raise AppInputError(f"{path} holds {len(files)} result files, more than the app reads "
                                f"({MAX_RESULT_FILES}); query it with `iclwb sweep results --sql`")
        return files
    files: list[Path] = []
    for n_dirs, (d, subdirs, names) in enumerate(os.walk(path), start=1):
        subdirs.sort()
        files += [Path(d) / f for f in sorted(names) if f.endswith(".parquet")]
        if n_dirs > MAX_RESULT_DIRS or len(files) > MAX_RESULT_FILES:
            raise AppInputError(f"{path} has more than {MAX_RESULT_DIRS} folders or {MAX_RESULT_FILES} "
                                f"Parquet files; pick the results folder of one study (a folder with units/)")
    return files


def results_signature(folder: str | Path, root: str | Path | None = None) -> tuple:
    """Changes whenever a result file is added or rewritten (a cache key); () when the folder
    cannot be read (``load_results`` then says why)."""
    try:
        path = results_folder(folder, root)
        if not path.is_dir():
            return ()
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in result_files(path))
    except (AppInputError, OSError):
        return ()


def damaged_parquet(files: Sequence[Path]) -> list[Path]:
    """The files that are not readable Parquet (cut short, overwritten, not Parquet at all)."""
    import pyarrow.parquet as pq

    bad = []
    for f in files:
        try:
            pq.read_metadata(f)
        except Exception:  # pyarrow raises several types for a damaged file
            bad.append(f)
    return bad


def load_results(folder: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """Every result row under ``folder`` (Parquet files written by sweeps) as one DataFrame.

    With ``root`` only that folder and folders inside it may be read (``results_folder``). A sweep
    results store (``units/*.parquet``) is read with ``ResultsStore.frame``; any other folder of
    Parquet files is read with DuckDB (columns unioned by name). Damaged files are skipped and
    named in ``df.attrs["damaged"]``. Raises AppInputError when the folder is missing or refused,
    or holds no readable results.
    """
    path = results_folder(folder, root)
    if not path.is_dir():
        raise AppInputError(f"results folder {str(path)!r} does not exist; run `iclwb demo` or a "
                            f"sweep first, or pass the right folder with `iclwb app --results DIR`")
    files = result_files(path)
    if not files and (path / "units").is_dir():
        raise AppInputError(f"results folder {str(path)!r} holds no result rows yet; run "
                            f"`iclwb demo` or `iclwb sweep run CONFIG` to fill it")
    if not files:
        raise AppInputError(f"results folder {str(path)!r} holds no Parquet result files; run "
                            f"`iclwb demo` or `iclwb sweep run CONFIG` to fill it")
    import duckdb

    try:
        if (path / "units").is_dir():  # a results store checks its units and leaves out damaged ones
            df = _store_read(path)
            damaged = [f"units/{key}.parquet" for key in df.attrs.get("iclwb.skipped", {})]
        else:
            bad = damaged_parquet(files)
            damaged = [str(f.relative_to(path)) for f in bad]
            good = [str(f) for f in files if f not in bad]
            df = pd.DataFrame()
            if good:
                con = duckdb.connect()
                try:
                    df = con.execute("SELECT * FROM read_parquet(?, union_by_name=true)", [good]).df()
                finally:
                    con.close()
    except (duckdb.Error, OSError) as err:
        msg = " ".join(str(err).split())[:200]
        raise AppInputError(f"cannot read the results in {str(path)!r}: {msg}; the folder holds "
                            f"Parquet files that are not sweep results, or damaged ones: recompute "
                            f"or remove them") from None
    if df.empty and damaged:
        raise AppInputError(f"every result file in {str(path)!r} is damaged or not Parquet "
                            f"({', '.join(damaged[:3])}); recompute them (`iclwb sweep run CONFIG`) "
                            f"or remove them")
    if df.empty:
        raise AppInputError(f"results folder {str(path)!r} holds no result rows yet")
    df.attrs["damaged"] = damaged
    return df


def damaged_note(df: pd.DataFrame) -> str | None:
    """A one-line warning naming the damaged files ``load_results`` skipped (None if none)."""
    bad = df.attrs.get("damaged") or []
    if not bad:
        return None
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return (f"skipped {len(bad)} damaged result file{'s' if len(bad) > 1 else ''} "
            f"({', '.join(bad[:3])}{more}); `iclwb sweep run CONFIG` recomputes them")


def _store_read(path: Path) -> pd.DataFrame:
    """The rows of the sound units of a sweep results store (``experiments.sweep.store``); the
    damaged ones it left out are in ``df.attrs["iclwb.skipped"]``."""
    from experiments.sweep.store import ResultsStore

    return ResultsStore(path, create=False).frame()


FILTER_COLUMNS: tuple[str, ...] = ("model", "task", "k", "analysis")


def filter_options(df: pd.DataFrame) -> dict[str, list[Any]]:
    """The values a user can filter each of model, task, k, analysis by (columns present only)."""
    out = {}
    for col in FILTER_COLUMNS:
        if col in df.columns:
            out[col] = sorted(df[col].dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
    return out


def filter_results(df: pd.DataFrame, **selected: Sequence[Any] | None) -> pd.DataFrame:
    """Rows whose column values are in the selected lists (an empty or None list keeps all)."""
    mask = pd.Series(True, index=df.index)
    for col, values in selected.items():
        if values and col in df.columns:
            mask &= df[col].isin(list(values))
    return df[mask]


def metric_names(df: pd.DataFrame) -> list[str]:
    """Metrics a user can plot: the ``metric`` column's values (tidy) or the numeric columns."""
    if "metric" in df.columns and "value" in df.columns:
        return sorted(df["metric"].dropna().astype(str).unique().tolist())
    skip = set(FILTER_COLUMNS) | {"seed", "layer", "head", "wall_time", "wall_s"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]


def metric_series(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one metric with its value in a ``value`` column."""
    if "metric" in df.columns and "value" in df.columns:
        sub = df[df["metric"].astype(str) == metric].copy()
    elif metric in df.columns:
        sub = df.copy()
        sub["value"] = sub[metric]
    else:
        raise AppInputError(f"no metric {metric!r} in these results; metrics: {metric_names(df)}")
    sub["value"] = pd.to_numeric(sub["value"], errors="coerce")
    return sub.dropna(subset=["value"])


CI_CAPTION = "error bars: 95% CI over prompts (seeds pooled; over seeds where a table has no per-prompt rows)"
"""What the results page's error bars are (its caption)."""


def _ci_error(part: pd.DataFrame) -> dict:
    return stats.error_bars(part["value"], part["ci_low"], part["ci_high"])


def metric_figure(df: pd.DataFrame, metric: str, x: str = "k", color: str | None = "model",
                  level: float = stats.LEVEL) -> go.Figure:
    """Mean of ``metric`` against ``x`` with its ``level`` CI as error bars
    (``probes.stats.summarize_rows``: over prompts, seeds pooled, where the rows have per-prompt
    values; else over seeds), one line per ``color`` group; a bar chart when ``x`` is categorical."""
    sub = metric_series(df, metric)
    if x not in sub.columns:
        raise AppInputError(f"cannot plot against {x!r}: no such column")
    groups = [color] if color and color in sub.columns and color != x else []
    agg = stats.summarize_rows(sub, groups + [x], level)
    fig = go.Figure()
    numeric_x = pd.api.types.is_numeric_dtype(agg[x])
    for key, part in (agg.groupby(groups, dropna=False) if groups else [("all", agg)]):
        name = str(key[0] if isinstance(key, tuple) else key)
        part = part.sort_values(x)
        kw = dict(x=part[x], y=part["value"], name=name, error_y=_ci_error(part),
                  customdata=np.stack([part["n"], part["ci_low"], part["ci_high"]], axis=-1),
                  hovertemplate=f"{x}=%{{x}}<br>{metric}=%{{y:.4f}} [%{{customdata[1]:.4f}}, "
                  "%{customdata[2]:.4f}]<br>n=%{customdata[0]}<extra>" + name + "</extra>")
        fig.add_trace(go.Scatter(mode="lines+markers", **kw) if numeric_x else go.Bar(**kw))
    fig.update_layout(title=f"{metric} by {x} (error bars: {level:.0%} CI)", xaxis_title=x, yaxis_title=metric,
                      height=400, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def metric_ci_table(df: pd.DataFrame, metric: str, by: Sequence[str], level: float = stats.LEVEL) -> pd.DataFrame:
    """The table beside ``metric_figure``: ``by`` + n, value, ci_low, ci_high."""
    sub = metric_series(df, metric)
    return stats.summarize_rows(sub, [b for b in by if b in sub.columns], level)


def results_csv(df: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV bytes (what the download button serves)."""
    return df.to_csv(index=False).encode("utf-8")


def task_file(path: str) -> str:
    """``file:PATH`` for a user's JSONL/CSV task file, or an AppInputError naming the line and
    problem (``experiments.tasks.taskfile``)."""
    reg = _tasks_registry()
    name = path if path.startswith("file:") else f"file:{path}"
    why = reg.task_problem(name) if reg is not None else "the task registry is missing"
    if why:
        raise AppInputError(why)
    return name


# ============================================================================ circuit
def task_batch(model: torch.nn.Module, task: str, k: int, n_prompts: int, seed: int = 0) -> PromptBatch:
    """``n_prompts`` prompts of ``task`` at ``k`` for ``model`` (the explorer's prompt is row 0)."""
    if n_prompts < 1:
        raise AppInputError(f"n_prompts must be at least 1, got {n_prompts}")
    if k < 0:
        raise AppInputError(f"k must be at least 0, got {k}")
    if task == "kv-recall":
        rows = [kv_recall_prompt(int(model.cfg.d_vocab), k, seed * 100_003 + i) for i in range(n_prompts)]
        batch = PromptBatch.concat(rows)
        batch.meta.update(task="kv-recall", k=k, seed=seed)
        return batch
    reg = _tasks_registry()
    if reg is None:
        raise AppInputError("the task registry (experiments.tasks) is missing")
    if task == "language":
        task = "language:sentiment"
    if reg.is_text_task(task):
        if getattr(model, "tokenizer", None) is None:
            raise AppInputError(f"task {task!r} is text: it needs a model with a tokenizer "
                                f"(smollm2-135m, gemma3-270m)")
    elif task not in getattr(reg, "TOKEN_TASKS", ()):
        raise AppInputError(f"unknown task {task!r}; available for this model: "
                            f"{', '.join(available_tasks(model))}")
    try:
        return reg.task_batch(task, k, n_prompts, seed, tokenizer=getattr(model, "tokenizer", None))
    except reg.TaskError as err:
        raise AppInputError(str(err)) from None


def circuit_tasks(model: torch.nn.Module) -> list[str]:
    """Tasks with a label set (candidates), which the summarize-merge-retrieve circuit needs."""
    out = []
    reg = _tasks_registry()
    for task in available_tasks(model):
        if reg is not None and reg.is_text_task(task):  # decided by the dataset, no tokenizing
            try:
                if _task_module("language").get_dataset(task if ":" in task and not task.startswith(
                        "language:") else task.split(":", 1)[-1]).is_classification:
                    out.append(task)
            except Exception:
                pass
            continue
        try:
            b = task_batch(model, task, 1, 1, 0)
        except Exception:  # a task that cannot build a 1-shot prompt for this model is not offered
            continue
        if b.candidates is not None:
            out.append(task)
    own = _own_task_first(model, [t for t in out if t != "kv-recall"])
    own_matches = own[:1] if own and _card_task_name(model).startswith(own[0]) else []
    rest = [t for t in out if t not in own_matches and t != "kv-recall"]
    return own_matches + (["kv-recall"] if "kv-recall" in out else []) + rest


def circuit_run(model: torch.nn.Module, model_name: str, task: str, k: int, n_prompts: int,
                seed: int = 0, window: tuple[float, float] = (0.0, 0.25)) -> pd.DataFrame:
    """One seed of the summarize-merge-retrieve circuit (``circuits.icl_circuit.run_circuit``) on
    ``n_prompts`` prompts of ``task``: the tidy table (step, layer, head, metric, value, ...)."""
    from circuits.icl_circuit import run_circuit

    if k < 1:
        raise AppInputError("the circuit needs demonstrations: use k >= 1")
    batch = task_batch(model, task, k, n_prompts, seed)
    check_prompt_fits(model, batch)
    df = run_circuit(model, batch, seed=seed, window=window)
    df["model"] = model_name
    df["task"] = task
    return df


def circuit_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The circuit's rows among stored results (those with a ``step`` column that is set)."""
    if "step" not in df.columns:
        return df.iloc[0:0]
    out = df[df["step"].notna()].copy()
    for col in ("layer", "head"):
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce").fillna(-1).astype(int)
    return out


def circuit_layer_figure(table: pd.DataFrame, step: str, metrics: Sequence[str] | None = None,
                         title: str = "", level: float = stats.LEVEL) -> go.Figure:
    """Per-layer metrics of one circuit step (rows with head == -1): mean with its ``level`` CI over
    prompts (seeds pooled; over seeds where there are no per-prompt rows) as error bars."""
    sub = table[(table["step"] == step) & (table["layer"] >= 0) & (table["head"] == -1)]
    if metrics is not None:
        sub = sub[sub["metric"].isin(metrics)]
    fig = go.Figure()
    for metric, part in sub.groupby("metric", sort=False):
        agg = stats.summarize_rows(part, ["layer"], level).sort_values("layer")
        fig.add_trace(go.Scatter(x=agg["layer"], y=agg["value"], name=str(metric), mode="lines+markers",
                                 error_y=_ci_error(agg), customdata=agg["n"],
                                 hovertemplate="layer %{x}: %{y:.3f} (n %{customdata})"
                                               "<extra>" + str(metric) + "</extra>"))
    fig.update_layout(title=f"{title or step} (error bars: {level:.0%} CI)", xaxis_title="layer", height=340,
                      xaxis=dict(dtick=1), margin=dict(l=10, r=10, t=40, b=10))
    return fig


def circuit_head_matrix(table: pd.DataFrame, metric: str, step: str | None = None) -> np.ndarray:
    """A per-head circuit metric (e.g. retrieve ``M`` or ``C``) as a [layer, head] mean over seeds."""
    sub = table[(table["metric"] == metric) & (table["head"] >= 0) & (table["layer"] >= 0)]
    if step is not None:
        sub = sub[sub["step"] == step]
    if sub.empty:
        raise AppInputError(f"no per-head metric {metric!r} in this circuit table")
    mean = sub.groupby(["layer", "head"])["value"].mean().reset_index()
    out = np.full((int(mean["layer"].max()) + 1, int(mean["head"].max()) + 1), np.nan)
    out[mean["layer"].to_numpy(), mean["head"].to_numpy()] = mean["value"].to_numpy()
    return out


def ablation_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per ablation: accuracy mean/std over seeds beside its random control's
    (``circuits.icl_circuit.ablation_summary``)."""
    from circuits.icl_circuit import ablation_summary

    abl = table[table["step"] == "ablation"]
    if abl.empty:
        return pd.DataFrame()
    need = {"model": "", "task": "", "window": "", "n_prompts": 0}
    abl = abl.assign(**{c: v for c, v in need.items() if c not in abl.columns})
    return ablation_summary(abl)


def ablation_figure(abl: pd.DataFrame) -> go.Figure:
    """Each ablation's accuracy as a bar beside its random control's (error bars: 95% intervals
    over prompts, seeds pooled); the unablated and zero-shot accuracies as reference lines."""
    fig = go.Figure()
    knock = abl[~abl["ablation"].isin(["unablated", "zero_shot"])]
    for label, mean, lo, hi, colour in (("knockout", "acc_mean", "ci_low", "ci_high", "#d63384"),
                                        ("random control", "random_mean", "random_ci_low", "random_ci_high",
                                         "#adb5bd")):
        if mean not in knock.columns:
            continue
        err = None
        if lo in knock.columns and hi in knock.columns:
            err = dict(type="data", symmetric=False, array=(knock[hi] - knock[mean]).fillna(0.0).tolist(),
                       arrayminus=(knock[mean] - knock[lo]).fillna(0.0).tolist(), visible=True)
        fig.add_trace(go.Bar(x=knock["ablation"], y=knock[mean], name=label, marker_color=colour, error_y=err,
                             hovertemplate="%{x}: %{y:.3f}<extra>" + label + "</extra>"))
    for name, dash in (("unablated", "solid"), ("zero_shot", "dot")):
        row = abl[abl["ablation"] == name]
        if not row.empty:
            fig.add_hline(y=float(row["acc_mean"].iloc[0]), line_dash=dash,
                          annotation_text=f"{name} {float(row['acc_mean'].iloc[0]):.2f}")
    fig.update_layout(barmode="group", title="Ablations vs random controls (error bars: 95% CI over prompts)",
                      yaxis=dict(title="accuracy", range=[0, 1.05]), height=380,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


# ============================================================================ ICL vs GD
def linreg_comparison(model: Any, name: str, ks: Sequence[int], n_tasks: int = 128, seed: int = 0,
                      gd_steps: int = 1, gd_lr: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``experiments.icl_vs_gd``'s linear-regression comparison and order sensitivity, per k
    (GD's learning rate grid-searched per k unless ``gd_lr`` is given)."""
    from experiments import icl_vs_gd

    if not ks or min(ks) < 1:
        raise AppInputError("pick at least one k >= 1 (GD needs demonstrations)")
    d = getattr(getattr(model, "cfg", None), "d", None)
    comp = icl_vs_gd.compare_linreg(model, ks, d=d, n_tasks=n_tasks, seed=seed, gd_steps=gd_steps,
                                    gd_lr=gd_lr, name=name)
    order = icl_vs_gd.linreg_order_sensitivity(model, ks, d=d, n_tasks=min(n_tasks, 64), seed=seed,
                                               gd_steps=gd_steps, name=name)
    return comp, order


def icl_gd_run(model: torch.nn.Module, name: str, task: str, k: int, seed: int = 0,
               n_prompts: int = 8, epochs: int = 5, lr: float = 1e-2, subset: str = "attn_kv") -> pd.DataFrame:
    """``experiments.icl_vs_gd.compare_icl_gd`` for one k and seed on ``n_prompts`` prompts of
    ``task``: the tidy table (metric, value, layer, ...) with provenance."""
    from experiments.gd import GDConfig
    from experiments.icl_vs_gd import compare_icl_gd

    if k < 1:
        raise AppInputError("GD needs demonstrations: use k >= 1")
    gd = GDConfig(subset=subset, lr=lr, epochs=epochs)
    return compare_icl_gd(model, lambda k_, s_: task_batch(model, task, k_, n_prompts, s_), ks=[k],
                          seeds=[seed], gd=gd, n_prompts=n_prompts, model_name=name, task_name=task)


def metrics_by_k_figure(df: pd.DataFrame, metrics: Sequence[str], title: str,
                        yaxis_title: str = "", level: float = stats.LEVEL) -> go.Figure:
    """Tidy rows (k, metric, value; ``layer`` < 0 where present): each metric's mean against k with
    its ``level`` CI as error bars (``probes.stats.summarize_rows``: over prompts, seeds pooled,
    where per-prompt rows exist; else over seeds)."""
    sub = df[df["metric"].isin(list(metrics))]
    if "layer" in sub.columns:
        sub = sub[pd.to_numeric(sub["layer"], errors="coerce").fillna(-1) < 0]
    fig = go.Figure()
    for metric in metrics:
        part = sub[sub["metric"] == metric]
        if part.empty:
            continue
        agg = stats.summarize_rows(part, ["k"], level).sort_values("k")
        fig.add_trace(go.Scatter(x=agg["k"], y=agg["value"], name=metric, mode="lines+markers",
                                 error_y=_ci_error(agg), customdata=agg["n"],
                                 hovertemplate="k=%{x}: %{y:.3f} (n %{customdata})<extra>" + metric + "</extra>"))
    fig.update_layout(title=f"{title} (error bars: {level:.0%} CI)", xaxis_title="k (demonstrations)",
                      yaxis_title=yaxis_title, height=340, margin=dict(l=10, r=10, t=40, b=10))
    return fig


# ============================================================================ statistics (issue 13)
STAT_COLUMNS = ["model", "task", "k", "metric", "layer", "head", "method", "ablation", "window", "condition",
                "control", "n", "value", "acc_mean", "ci_low", "ci_high", "control_value", "random_mean", "null_value",
                "effect", "effect_ci_low", "effect_ci_high", "p_value", "q_value", "mde", "verdict"]
"""The columns the app's statistics tables show (where a table has them)."""


def stats_view(table: pd.DataFrame) -> pd.DataFrame:
    """A statistics table (``*_stats`` comparisons, ``ablation_summary``) cut to ``STAT_COLUMNS``."""
    return table[[c for c in STAT_COLUMNS if c in table.columns]].reset_index(drop=True)


def verdict_lines(cmp: pd.DataFrame, label: Callable[[Any], str], only: Callable[[Any], bool] | None = None) -> list[str]:
    """One sentence per comparison row: ``label(row)``, the verdict, the effect with its 95%
    interval, q and n (``probes.stats.describe``)."""
    from probes import stats

    out = []
    for _, r in cmp.iterrows():
        if only is not None and not only(r):
            continue
        if r.get("verdict", "") == "" or pd.isna(r.get("effect", np.nan)):
            continue
        out.append(stats.describe(r, label(r)))
    return out


def ablation_verdicts(abl: pd.DataFrame) -> list[str]:
    """The circuit's verdicts: ICL gain (unablated vs zero-shot) and each knockout vs its control."""
    def label(r: Any) -> str:
        if r["ablation"] == "unablated":
            return f"with demonstrations ({r['acc_mean']:.3f}) vs zero-shot"
        return (f"knockout {r['ablation']} (layers {r['window']}): {r['acc_mean']:.3f} vs "
                f"{r['random_mean']:.3f} for its random control")
    return verdict_lines(abl, label, only=lambda r: r["ablation"] != "zero_shot")


def head_scan_verdicts(scan: dict[str, Any], top: int = 3) -> pd.DataFrame:
    """Every head's score with its interval and its test against the score's null
    (``experiments.scan.scan_stats``), the ``top`` heads of each score with a null first."""
    from experiments.scan import scan_stats

    st_ = scan_stats(scan)
    tested = st_[st_["p_value"].notna()].sort_values(["metric", "value"], ascending=[True, False])
    return tested.groupby("metric", sort=False).head(top).reset_index(drop=True)


def lm_gd_stats(df: pd.DataFrame) -> Any:
    """``experiments.icl_vs_gd.icl_vs_gd_stats`` of a language-model ICL-vs-GD table."""
    from experiments.icl_vs_gd import icl_vs_gd_stats

    return icl_vs_gd_stats(df)


def linreg_stats(model: Any, name: str, ks: Sequence[int], n_tasks: int = 128, seed: int = 0,
                 gd_steps: int = 1) -> Any:
    """Per-task linear-regression rows on every k (``linreg_task_rows``) and their statistics."""
    from experiments import icl_vs_gd

    d = getattr(getattr(model, "cfg", None), "d", None)
    parts = [icl_vs_gd.linreg_task_rows(model, k, d=d, n_tasks=n_tasks, seed=seed, gd_steps=gd_steps).assign(k=k)
             for k in ks]
    per = pd.concat(parts, ignore_index=True).assign(model=name, task="linreg")
    return icl_vs_gd.icl_vs_gd_stats(per)


def vectors_verdict_stats(per_prompt: pd.DataFrame) -> Any:
    """``experiments.vectors_study.vectors_stats`` of a study's per-prompt table."""
    from experiments.vectors_study import vectors_stats

    return vectors_stats(per_prompt)


# ============================================================================ training dynamics
def dynamics_models() -> list[str]:
    """Zoo models that have a checkpoint series (``iclwb zoo train NAME --checkpoints N``)."""
    from experiments import zoo
    from experiments.zoo import series

    return [n for n in zoo.names() if series.has_series(n)]


def dynamics_head_matrix(df: pd.DataFrame, step: int, metric: str) -> np.ndarray:
    """The [layer, head] grid of one head score at one checkpoint of a dynamics table."""
    t = df[(df["step"] == step) & (df["metric"] == metric) & (df["layer"] >= 0)]
    if t.empty:
        raise KeyError(f"no {metric!r} head scores at step {step}")
    grid = np.full((int(t["layer"].max()) + 1, int(t["head"].max()) + 1), np.nan)
    grid[t["layer"].astype(int), t["head"].astype(int)] = t["value"].astype(float)
    return grid


def dynamics_head_metrics(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df[df["layer"] >= 0]["metric"]))


def _window(fig: go.Figure, window: tuple[int, int] | None, label: str = "phase change") -> None:
    if window is not None:
        fig.add_vrect(x0=window[0], x1=window[1], fillcolor="orange", opacity=0.2, line_width=0,
                      annotation_text=label, annotation_position="top left")


def dynamics_curves_figure(df: pd.DataFrame, metrics: Sequence[str], window: tuple[int, int] | None = None,
                           step: int | None = None, title: str = "Best head per score") -> go.Figure:
    """Per score, the best head's value against step (log axis) with its interval where known;
    the phase-change window shaded and the selected step marked."""
    from experiments.dynamics import head_curve

    fig = go.Figure()
    for metric in metrics:
        try:
            c = head_curve(df, metric)
        except KeyError:
            continue
        err = None
        if c["ci_high"].notna().any():
            err = dict(type="data", symmetric=False, array=(c["ci_high"] - c["value"]).fillna(0),
                       arrayminus=(c["value"] - c["ci_low"]).fillna(0))
        fig.add_trace(go.Scatter(x=c["step"], y=c["value"], name=metric, mode="lines+markers", error_y=err,
                                 text=[f"L{l}H{h}" for l, h in zip(c["layer"], c["head"])],
                                 hovertemplate="step %{x}: %{y:.3f} (%{text})<extra>" + metric + "</extra>"))
    _window(fig, window)
    if step is not None:
        fig.add_vline(x=step, line_dash="dot", line_color="gray")
    fig.update_layout(title=title, xaxis_type="log", xaxis_title="training step", yaxis_title="score",
                      height=360, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def dynamics_scalar_figure(df: pd.DataFrame, metrics: Sequence[str], window: tuple[int, int] | None = None,
                           title: str = "", yaxis_title: str = "") -> go.Figure:
    """Model-level metrics (no layer/head; one line per metric and k) against step, with intervals."""
    fig = go.Figure()
    sub = df[(df["layer"] < 0) & (df["position"] < 0) & df["metric"].isin(list(metrics))]
    for (metric, k), t in sub.groupby(["metric", "k"], sort=False):
        t = t.sort_values("step")
        err = None
        if t["ci_high"].notna().any():
            err = dict(type="data", symmetric=False, array=(t["ci_high"] - t["value"]).fillna(0),
                       arrayminus=(t["value"] - t["ci_low"]).fillna(0))
        name = metric if k < 0 else f"{metric} k={k}"
        fig.add_trace(go.Scatter(x=t["step"], y=t["value"], name=name, mode="lines+markers", error_y=err))
    _window(fig, window)
    fig.update_layout(title=title, xaxis_type="log", xaxis_title="training step", yaxis_title=yaxis_title,
                      height=340, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def training_loss_figure(curve: pd.DataFrame, window: tuple[int, int] | None = None,
                         smooth: int = 25) -> go.Figure:
    """Per-update training loss (thin) and its moving average, phase-change window shaded."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=curve["step"], y=curve["loss"], name="per update", mode="lines",
                             line=dict(width=1), opacity=0.35))
    sm = curve["loss"].rolling(smooth, center=True, min_periods=1).mean()
    fig.add_trace(go.Scatter(x=curve["step"], y=sm, name=f"moving average ({smooth})", mode="lines"))
    _window(fig, window)
    fig.update_layout(title="Training loss", xaxis_type="log", xaxis_title="training step",
                      yaxis_title="loss (nats)", height=320, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def loss_by_position_figure(df: pd.DataFrame, steps: Sequence[int]) -> go.Figure:
    """Per-token loss on repeated random sequences at the given checkpoints."""
    fig = go.Figure()
    for s in steps:
        t = df[(df["metric"] == "loss_by_position") & (df["step"] == s)].sort_values("position")
        fig.add_trace(go.Scatter(x=t["position"], y=t["value"], name=f"step {s}", mode="lines"))
    fig.update_layout(title="Loss by token index (repeated random sequences)", xaxis_title="token index",
                      yaxis_title="loss (nats)", height=320, margin=dict(l=10, r=10, t=40, b=10))
    return fig
