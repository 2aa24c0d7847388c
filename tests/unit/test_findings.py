"""The findings page shows one run per study cell: the one with the most prompts."""

from __future__ import annotations

import json

import pandas as pd

from experiments.runs.findings import largest_runs


def _unit(key: str, n: int, at: str, task: str = "fv:a", analysis: str = "circuit", **params) -> list[dict]:
    p = json.dumps({"n_prompts": n, **params})
    return [dict(unit_key=key, analysis=analysis, model="m", task=task, k=4, seed=0, params=p, computed_at=at,
                 metric="acc", prompt=i, value=float(i % 2)) for i in range(max(n, 1))]


def test_the_larger_run_of_a_cell_replaces_the_smaller_and_other_cells_stay():
    df = pd.DataFrame(_unit("small", 8, "2026-01-02") + _unit("big", 16, "2026-01-01")
                      + _unit("other-task", 8, "2026-01-01", task="fv:b")
                      + _unit("scan-old", 0, "2026-01-01", analysis="head_scan", induction_prompts=32)
                      + _unit("scan-new", 0, "2026-01-03", analysis="head_scan", induction_prompts=16))
    kept, dropped = largest_runs(df)
    assert set(kept.unit_key) == {"big", "other-task", "scan-old"}
    assert dropped == ["scan-new", "small"]
    assert len(kept[kept.unit_key == "big"]) == 16  # every row of a kept unit stays


def test_a_tie_keeps_the_latest_and_an_empty_frame_passes_through():
    df = pd.DataFrame(_unit("old", 8, "2026-01-01") + _unit("new", 8, "2026-01-05"))
    kept, dropped = largest_runs(df)
    assert set(kept.unit_key) == {"new"} and dropped == ["old"]
    empty = pd.DataFrame()
    assert largest_runs(empty) == (empty, [])


def test_numbers_that_round_to_zero_print_without_a_sign():
    from experiments.runs.findings import _fmt

    assert _fmt(-0.0) == "0.000" and _fmt(-0.0001) == "0.000" and _fmt(-0.0006) == "-0.001"
    assert _fmt(float("nan")) == "n/a" and _fmt(0.25, 2) == "0.25"
