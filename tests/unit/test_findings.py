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


def _ivg_unit(k: int, icl: list[int], gd: list[int]) -> list[dict]:
    rows = []
    for metric, vals in (("acc_icl", icl), ("acc_gd", gd), ("acc_zs", [0] * len(icl))):
        rows += [dict(analysis="icl_vs_gd", model="m", task="fv:a", k=k, seed=0, metric=metric, prompt=i,
                      value=float(v), n_prompts=len(icl)) for i, v in enumerate(vals)]
        rows.append(dict(analysis="icl_vs_gd", model="m", task="fv:a", k=k, seed=0, metric=metric, prompt=-1,
                         value=sum(vals) / len(vals), n_prompts=len(icl)))
    for metric in ("topk_overlap", "kl_icl_gd", "tv_icl_gd", "rec2ftp"):
        rows.append(dict(analysis="icl_vs_gd", model="m", task="fv:a", k=k, seed=0, metric=metric, prompt=-1,
                         value=0.5, n_prompts=len(icl)))
    return rows


def test_icl_vs_gd_rows_carry_a_verdict_that_follows_the_paired_test():
    """GD wrong on every prompt ICL gets right: significant; GD = ICL on 1000 prompts with 40
    discordant pairs each way: no effect detected, with the MDE the run could see."""
    from experiments.runs.effects import effect_rows, verdict_table
    from experiments.runs.findings import _ivg_md, ivg_rows
    from experiments.runs.tables import sig

    n = 1000
    far = _ivg_unit(2, [1] * n, [0] * n)
    same_icl = [1] * 500 + [0] * 500
    same_gd = [1] * 460 + [0] * 40 + [1] * 40 + [0] * 460  # 40 discordant pairs each way
    rows = ivg_rows(pd.DataFrame(far + _ivg_unit(4, same_icl, same_gd)))
    by_k = rows.set_index("k")
    assert by_k.loc[2, "verdict"] == "significant" and by_k.loc[2, "gd_minus_icl"] == -1.0
    assert by_k.loc[4, "verdict"].startswith("no effect detected (MDE = ")
    mde = float(by_k.loc[4, "verdict"].split("= ")[1].rstrip(")"))
    lo, hi = by_k.loc[4, "gd_minus_icl_ci"]
    assert -mde < lo <= 0 <= hi < mde
    # the verdict table: one row per k, the verdict first, then GD - ICL with its interval at 3 significant figures
    table = verdict_table(effect_rows(pd.DataFrame(far + _ivg_unit(4, same_icl, same_gd)))).set_index("claim")
    assert table.loc["fv:a, k=2: GD minus ICL accuracy", "result"].startswith(
        "significantly lower: -1.00 [-1.00, -0.989], q < 0.001, n=1000")
    assert table.loc["fv:a, k=4: GD minus ICL accuracy", "result"].startswith(
        f"no effect detected (MDE = {mde:.3f}): 0 [{sig(lo)}, {sig(hi)}]")
    # the agreement metrics stay in the section's table
    assert "| 0.500 | 0.500 | 0.500 |" in "\n".join(_ivg_md(rows))
