"""The head scan's tidy table, heatmaps and top-heads table (``experiments.studies.scan``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from iclwb_app.model_info import AppInputError


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
