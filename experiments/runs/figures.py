"""The report's figures, drawn for the page and for papers alike: forest plots of effects with
their intervals, layer x head heatmaps on one colour scale per score with the significant heads
marked, and ``paper_style`` (integer layer axes with legible ticks at 30 layers, titles wrapped
instead of truncated, the caption as a subtitle). ``write_figures`` writes figures as static SVG /
PDF / PNG files through kaleido, which drives the Chromium the project installs
(``scripts/setup-browser.sh``); it never downloads a browser.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import textwrap
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import kaleido
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from probes.errors import WorkbenchError

MAX_LAYER_TICKS = 16
"""A layer axis labels at most this many layers (every second one at 30 layers)."""
TITLE_WIDTH = 90
"""Titles wrap at this many characters (plotly would cut them off at the figure's edge)."""
FORMATS = ("svg", "pdf", "png")
SIGNIFICANT = "circle"
NOT_SIGNIFICANT = "circle-open"
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
BOUNDED = {"previous_token", "induction", "duplicate_token", "prefix_matching", "ngram_2", "ngram_3", "ngram_4"}
"""Head scores that are attention mass in [0, 1]: their colour scale is [0, 1] on every model."""


BROWSERS = ("/usr/bin/chromium",)
"""Where the project's Chromium is (``scripts/setup-browser.sh``), before the PATH is searched."""
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")


class FiguresError(WorkbenchError):
    """Static figures cannot be written (no browser for kaleido, an unknown format, a failed render)."""


def wrap(text: str, width: int = TITLE_WIDTH) -> str:
    """``text`` broken into lines of at most ``width`` characters with plotly's ``<br>``."""
    if "<br>" in text or len(text) <= width:
        return text
    return "<br>".join(textwrap.wrap(text, width, break_on_hyphens=False))


def layer_ticks(n_layers: int) -> dict[str, Any]:
    """Axis settings for a layer axis of ``n_layers``: whole numbers only, every
    ``ceil(n / MAX_LAYER_TICKS)``-th layer labelled."""
    return dict(tickmode="linear", tick0=0, dtick=max(1, math.ceil(n_layers / MAX_LAYER_TICKS)), tickformat="d")


def _title_text(fig: go.Figure) -> str:
    return str(fig.layout.title.text or "") if fig.layout.title else ""


def paper_style(fig: go.Figure) -> go.Figure:
    """The figure as it goes on the page and into a paper: a wrapped title with room for its
    lines, integer ticks on every axis titled "layer" (and on a head axis), a white template."""
    title = _title_text(fig)
    lines = wrap(title).count("<br>") + 1 if title else 0
    sub = fig.layout.title.subtitle.text if fig.layout.title and fig.layout.title.subtitle else None
    top = 30 + 22 * lines + (22 * (str(sub).count("<br>") + 1) if sub else 0)
    fig.update_layout(template="plotly_white", font=dict(size=13), title=dict(text=wrap(title), x=0.01, xanchor="left"),
                      margin=dict(t=max(top, 40), l=fig.layout.margin.l or 70, r=fig.layout.margin.r or 30,
                                  b=fig.layout.margin.b or 60))
    for axis in ("xaxis", "yaxis"):
        ax = fig.layout[axis]
        name = str(ax.title.text or "").lower() if ax.title else ""
        if name in ("layer", "head") and ax.tickmode != "array":
            values = [v for t in fig.data for v in _values(t, axis[0]) if isinstance(v, (int, float, np.number))]
            n = int(max(values)) + 1 if values else 1
            fig.update_layout({axis: layer_ticks(n) if name == "layer" else dict(tickmode="linear", dtick=1, tick0=0,
                                                                                     tickformat="d")})
    return fig


def _values(trace: Any, axis: str) -> list[Any]:
    v = getattr(trace, axis, None)
    return [] if v is None else list(np.asarray(v).ravel())


def forest(rows: pd.DataFrame, title: str, xtitle: str, caption: str = "") -> go.Figure:
    """A forest plot: one row per ``label`` (top to bottom in order), each model's ``effect`` as a
    point with its interval [``ci_low``, ``ci_high``] as an error bar, filled where the verdict is
    significant (q < 0.05) and open otherwise; a line at 0 (no effect). Several models on one row
    sit side by side, one colour each."""
    labels = list(dict.fromkeys(rows["label"]))
    models = list(dict.fromkeys(rows["model"]))
    per_label = rows.groupby("label")["model"].nunique().to_dict()
    fig = go.Figure()
    for i, model in enumerate(models):
        part = rows[rows["model"] == model]
        eff = part["effect"].astype(float).to_numpy()
        pos = [labels.index(lab) + ((i - (len(models) - 1) / 2) * 0.7 / len(models) if per_label[lab] > 1 else 0.0)
               for lab in part["label"]]
        sig = (part["verdict"] == "significant").to_numpy()
        fig.add_trace(go.Scatter(
            x=eff.tolist(), y=pos, mode="markers", name=model,
            marker=dict(symbol=[SIGNIFICANT if s else NOT_SIGNIFICANT for s in sig], size=10,
                        color=COLOURS[i % len(COLOURS)], line=dict(width=2)),
            error_x=dict(type="data", symmetric=False, array=(part["ci_high"].astype(float).to_numpy() - eff).tolist(),
                         arrayminus=(eff - part["ci_low"].astype(float).to_numpy()).tolist(), thickness=1.5, width=4),
            customdata=np.stack([part["label"], part["words"], part.get("detail", part["label"])], axis=1),
            hovertemplate="%{customdata[0]} (%{customdata[2]}): %{x:.3g}<br>%{customdata[1]}<extra>" + model
                          + "</extra>"))
    fig.add_vline(x=0, line=dict(color="#555", width=1, dash="dot"))
    cap = caption or "Points: effect; bars: 95% CI; filled: significant (q < 0.05), open: not."
    fig.update_layout(title=dict(text=title, subtitle=dict(text=wrap(cap, TITLE_WIDTH + 20))), xaxis_title=xtitle,
                      yaxis=dict(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels,
                                 autorange="reversed", automargin=True, range=[len(labels) - 0.5, -0.5]),
                      height=170 + 30 * len(labels) * max(1.0, 0.6 * len(models)), showlegend=True,
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))
    return paper_style(fig)


def score_range(values: Iterable[float], metric: str) -> tuple[float, float]:
    """One score's colour scale: [0, 1] for attention mass, else from 0 (or the lowest value,
    if below) to the highest value over every model."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if metric in BOUNDED or (len(v) and v.min() >= 0 and v.max() <= 1 and metric.startswith("ngram")):
        return 0.0, 1.0
    if not len(v):
        return 0.0, 1.0
    return min(0.0, float(v.min())), max(float(v.max()), 1e-9)


def head_heatmap(df: pd.DataFrame, model: str, metric: str, zmin: float | None = 0.0, zmax: float | None = None,
                 marked: Sequence[tuple[int, int]] = (), title: str = "") -> go.Figure:
    """Layer x head heatmap of one head score (mean over seeds) with integer axes (layer 0 on top)
    and the heads in ``marked`` (e.g. above their null at q < 0.05) ringed. Give every model of
    one score the same ``zmin`` / ``zmax`` (``score_range``) so colours compare across models."""
    t = df.groupby(["layer", "head"])["value"].mean().unstack("head").sort_index()
    layers, heads = [int(x) for x in t.index], [int(x) for x in t.columns]
    fig = go.Figure(go.Heatmap(z=t.values, x=heads, y=layers, colorscale="Viridis", zmin=zmin, zmax=zmax,
                               colorbar=dict(title=dict(text=metric.replace("_", " "), side="right")),
                               hovertemplate="L%{y}H%{x}: %{z:.3f}<extra></extra>"))
    if len(marked):
        fig.add_trace(go.Scatter(x=[h for _, h in marked], y=[l for l, _ in marked], mode="markers",
                                 name="above its null (q < 0.05)", showlegend=True,
                                 marker=dict(symbol="circle-open", size=8, color="#ff2020", line=dict(width=2)),
                                 hovertemplate="L%{y}H%{x}: above its null<extra></extra>"))
    n_layers = max(layers) + 1 if layers else 1
    fig.update_layout(title=title or f"{model}: {metric.replace('_', ' ')} score by head", xaxis_title="head",
                      yaxis_title="layer", height=max(300, 18 * len(layers) + 150), width=None,
                      legend=dict(orientation="h", y=-0.15, x=0), margin=dict(l=70, r=20, b=70))
    fig.update_yaxes(range=[max(layers, default=0) + 0.5, min(layers, default=0) - 0.5], **layer_ticks(n_layers))
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=1 if len(heads) <= 16 else 2, tickformat="d",
                     range=[min(heads, default=0) - 0.5, max(heads, default=0) + 0.5])
    return paper_style(fig)


# ------------------------------------------------------------------------------- static files
def slug(name: str) -> str:
    """A figure or table name as a file name: ``circuit/m / classify / k=4`` -> ``circuit-m-classify-k4``."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("=", "")).strip("-._")
    return re.sub(r"-{2,}", "-", text) or "figure"


def browser_path() -> str:
    """The Chromium kaleido drives: ``$BROWSER_PATH``, else Debian's ``/usr/bin/chromium``, else a
    chromium / chrome on the PATH. Raises ``FiguresError`` when there is none."""
    for cand in (os.environ.get("BROWSER_PATH"), *BROWSERS, *(shutil.which(n) for n in BROWSER_NAMES)):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FiguresError("no Chromium for kaleido to draw static figures with: run `bash scripts/setup-browser.sh` "
                       "(installs Debian's chromium) or set BROWSER_PATH to a Chrome/Chromium binary")


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """``"svg,pdf"`` -> ``["svg", "pdf"]``; an unknown format raises ``FiguresError``."""
    items = [f.strip().lower().lstrip(".") for f in (text.split(",") if isinstance(text, str) else text)]
    bad = [f for f in items if f and f not in FORMATS]
    if bad or not any(items):
        raise FiguresError(f"unknown figure format(s) {bad or items}: use some of {', '.join(FORMATS)}")
    return list(dict.fromkeys(f for f in items if f))


def write_figures(figures: dict[str, go.Figure], out: str | Path, formats: Sequence[str] = ("svg",),
                  width: int = 900, scale: float = 2.0) -> list[Path]:
    """Write each figure as ``out/<slug(name)>.<format>`` for every format, in one headless
    Chromium session (kaleido); returns the paths written."""
    fmts = parse_formats(formats)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs, paths = [], []
    for name, fig in figures.items():
        height = int(fig.layout.height or 500)
        for f in fmts:
            path = out / f"{slug(name)}.{f}"
            jobs.append({"fig": fig, "path": path, "opts": {"format": f, "width": width, "height": height,
                                                           "scale": scale if f == "png" else 1}})
            paths.append(path)
    if jobs:
        _render(jobs)
    missing = [p for p in paths if not p.exists() or p.stat().st_size == 0]
    if missing:
        raise FiguresError(f"kaleido wrote no file for {len(missing)} figure(s), e.g. {missing[0]}")
    return paths


def _render(jobs: list[dict[str, Any]]) -> None:
    path = browser_path()

    async def run() -> tuple[Exception, ...]:
        # headless, no sandbox (choreographer's defaults; the sandbox cannot run as root), no MathJax
        # (it would be fetched from a CDN), the plotly.js bundled with plotly.
        async with kaleido.Kaleido(n=min(2, len(jobs)), timeout=120, mathjax=False, path=path) as k:
            return tuple(await k.write_fig_from_object(jobs, cancel_on_error=False))

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["errors"] = asyncio.run(run())
        except Exception as err:  # noqa: BLE001  (reported below as one line)
            box["fail"] = err
    try:
        asyncio.get_running_loop()
        t = threading.Thread(target=target)  # inside a running loop (a notebook): a thread of its own
        t.start()
        t.join()
    except RuntimeError:
        target()
    if "fail" in box:
        raise FiguresError(f"kaleido could not draw the figures with {path}: {box['fail']}") from box["fail"]
    if box.get("errors"):
        raise FiguresError(f"kaleido failed on {len(box['errors'])} figure(s): {box['errors'][0]}")
