"""One truth per study cell: which stored unit is the *current* one.

A **cell** is what a finding is about: (analysis, model, task, k, seed, prompt format). Several
stored units can answer the same cell: a sized-down pilot and the full-size run, a run with other
parameters (say, other FV scales), a run by older code. Every reader of a store (``iclwb sweep
results`` and its ``--stats`` / ``--export``, ``iclwb power``, the report, the findings page, the
app, the DuckDB view ``current``) shows only the current unit of each cell, chosen here:

1. among the cell's sound units, those computed by the running code (same model checkpoint,
   analysis version and code hash: state ``done``) win over stale ones;
2. then the one with the most prompts (``n_prompts``, the head scan's ``induction_prompts``,
   linear regression's ``n_tasks``);
3. then the latest (``computed_at``).

A cell whose units are all stale still has a current unit (the best stale one), flagged
``stale`` so that readers say so: a stored result never silently outlives its code. The other
units are *superseded*: ``--all-runs`` shows them, ``iclwb sweep prune`` moves them to
``superseded/`` (never deletes).

The prompt format is part of the cell: units whose parameters differ in ``FORMAT_PARAMS``
(the prompt's first token and template) answer different cells, so both stay current.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CELL = ("analysis", "model", "task", "k", "seed")
FORMAT_PARAMS = ("prefix", "template")
"""Analysis parameters that set the prompt format: part of a cell's identity."""
SIZE_PARAMS = ("n_prompts", "induction_prompts", "n_tasks")
"""Parameters that count a unit's prompts (the largest one present is its size)."""


def unit_size(params: dict[str, Any] | str | None) -> float:
    """How many prompts a unit measured on, from its parameters (0 when none is named)."""
    try:
        p = json.loads(params) if isinstance(params, str) else dict(params or {})
    except (ValueError, TypeError):
        return 0.0
    sizes = [p.get(name) for name in SIZE_PARAMS]
    return float(max([s for s in sizes if isinstance(s, (int, float))] or [0]))


def prompt_format(params: dict[str, Any] | str | None) -> str:
    """The prompt-format part of a cell's identity, as canonical JSON ("{}" for the default)."""
    try:
        p = json.loads(params) if isinstance(params, str) else dict(params or {})
    except (ValueError, TypeError):
        p = {}
    return json.dumps({k: p[k] for k in FORMAT_PARAMS if k in p}, sort_keys=True)


@dataclass
class Selection:
    """The current unit of every cell of a store."""

    current: list[str] = field(default_factory=list)
    """Keys of the current units (one per cell)."""
    superseded: dict[str, str] = field(default_factory=dict)
    """Key -> why it is not current (names the unit shown instead)."""
    stale: dict[str, str] = field(default_factory=dict)
    """Current units that are stale (no unit of their cell matches the running code): key -> why."""
    cells: dict[str, tuple] = field(default_factory=dict)
    """Key -> its cell (analysis, model, task, k, seed, prompt format), for every sound unit."""

    def note(self) -> str | None:
        """One line for readers when stale units are shown (None when there are none)."""
        if not self.stale:
            return None
        why = sorted(set(self.stale.values()))
        return (f"{len(self.stale)} cell(s) are shown from stale units ({'; '.join(why[:3])}): their "
                f"code or model changed since; `iclwb sweep run CONFIG` recomputes them")


def select(units: list[dict[str, Any]]) -> Selection:
    """The current unit of each cell among ``units``: dicts with ``key``, ``unit`` (the Unit's
    dict: analysis, model, task, k, seed, params), ``state`` (``done`` | ``stale`` |
    ``unchecked``), ``reason`` and ``computed_at``. Damaged units must be left out beforehand."""
    by_cell: dict[tuple, list[dict[str, Any]]] = {}
    out = Selection()
    for u in units:
        d = u["unit"]
        cell = (d["analysis"], d["model"], d.get("task", ""), int(d.get("k", 0)), int(d.get("seed", 0)),
                prompt_format(d.get("params")))
        out.cells[u["key"]] = cell
        by_cell.setdefault(cell, []).append(u)
    for group in by_cell.values():
        ranked = sorted(group, key=lambda u: (u["state"] != "stale", unit_size(u["unit"].get("params")),
                                              str(u.get("computed_at") or ""), u["key"]), reverse=True)
        best = ranked[0]
        out.current.append(best["key"])
        if best["state"] == "stale":
            out.stale[best["key"]] = best.get("reason") or "stale"
        n_best = unit_size(best["unit"].get("params"))
        for other in ranked[1:]:
            if other["state"] == "stale" and best["state"] != "stale":
                why = f"stale ({other.get('reason') or 'older code'}); current unit {best['key']}"
            elif unit_size(other["unit"].get("params")) < n_best:
                why = (f"{unit_size(other['unit'].get('params')):.0f} prompts; current unit {best['key']} "
                       f"has {n_best:.0f}")
            elif other["unit"].get("params") != best["unit"].get("params"):
                why = f"an earlier run of the same size with other parameters; current unit {best['key']}"
            else:
                why = f"an earlier run of the same size; current unit {best['key']}"
            out.superseded[other["key"]] = why
    out.current.sort()
    return out
