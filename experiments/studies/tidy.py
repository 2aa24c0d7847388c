"""The tidy output format the studies share: one row per (model, task, k, seed, metric) with a
``value`` and provenance columns."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from probes.provenance import package_versions


def tidy(df: pd.DataFrame, id_cols: Sequence[str], provenance: dict[str, Any] | None = None) -> pd.DataFrame:
    """Wide -> long (``metric``, ``value``) with provenance columns added."""
    value_cols = [c for c in df.columns if c not in id_cols and pd.api.types.is_numeric_dtype(df[c])]
    long = df.melt(id_vars=list(id_cols), value_vars=value_cols, var_name="metric", value_name="value")
    for key, val in (provenance or {}).items():
        long[key] = val
    return long


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """``config_hash`` (of the comparison's settings) and package versions, for every row."""

    blob = json.dumps(config, sort_keys=True, default=str)
    versions = package_versions()
    return {"config_hash": hashlib.sha1(blob.encode()).hexdigest()[:12],
            "torch_version": versions.get("torch", ""),
            "tl_version": versions.get("transformer-lens", "")}


def model_name(model: Any) -> str:
    """A model's name for table rows: its zoo card's name, its .name, or its class."""
    card = getattr(model, "zoo_card", None)
    if card:
        return str(card.get("name"))
    return str(getattr(model, "name", None) or type(model).__name__)
