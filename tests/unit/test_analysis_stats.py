"""Statistics of stored sweep analyses: what the head_scan and icl_vs_gd units keep is enough for
their ``*_stats`` functions, read back from a results store."""

from __future__ import annotations

import textwrap

import pytest

from experiments.runs import ResultsStore, loads_config, run_sweep


def _run(tmp_path, body: str):
    cfg = loads_config(textwrap.dedent(body))
    store = ResultsStore(tmp_path / "res")
    rep = run_sweep(cfg, store, progress=False)
    assert rep.ok, rep
    return cfg, store


@pytest.mark.slow
def test_stored_head_scan_carries_intervals_nulls_and_verdicts(tmp_path):
    from experiments.studies.scan import head_scan_stats, pooled_head_scan_stats

    cfg, store = _run(tmp_path, """
        name = "hs"
        seeds = [0, 1]
        [[grid]]
        models = ["induction-2l"]
        analyses = ["head_scan"]
        [grid.params.head_scan]
        save_attention = false
        """)
    df = store.frame(analysis="head_scan")
    # the per-head statistics rows are unit-level (prompt -1); per-prompt rows are only the
    # findings page's induction rows (metric "induction:prompt", "induction_null:prompt")
    assert (df.loc[~df["metric"].str.endswith(":prompt"), "prompt"] == -1).all()
    assert {"ci_low", "null_value", "q_value", "verdict"} <= set(df.columns)
    st = head_scan_stats(df[df.seed == 0])
    cmp = st.comparisons.set_index(["metric", "layer", "head"])
    # induction-2l: L0H2 is the previous-token head, every L1 head an induction head
    assert cmp.loc[("previous_token", 0, 2), "above_null"]
    assert all(cmp.loc[("induction", 1, h), "above_null"] for h in range(4))
    assert not any(cmp.loc[("induction", 0, h), "above_null"] for h in range(4))
    assert (cmp["n"] > 0).all() and cmp["q_value"].between(0, 1).all()
    assert len(cmp) == 4 * 2 * 4  # 4 scores with a null x 8 heads: one BH family
    est = st.estimates.set_index(["metric", "layer", "head"])
    assert est.loc[("induction", 1, 0), "ci_low"] > 0.5
    tensors = store.tensors(cfg.units()[0].key)
    assert tensors["per_prompt/induction"].shape == (16, 2, 4)
    assert tensors["null_per_prompt/induction"].shape == (16, 2, 4)
    # two seeds: a family each, or pooled from the stored per-prompt tensors
    assert set(head_scan_stats(df).comparisons["seed"]) == {0, 1}
    pooled = pooled_head_scan_stats(store).comparisons.set_index(["metric", "layer", "head"])
    single = cmp["n"].reindex(pooled.index)
    assert (pooled["n"] == 2 * single).all() and (pooled["seed"] == "0,1").all()  # 16 (10 prefix) per seed
    assert len(pooled) == len(cmp)
    assert (pooled["above_null"] == cmp["above_null"]).loc[("induction", slice(None), slice(None))].all()
    assert pooled.loc[("previous_token", 0, 2), "test"] == "paired permutation"
    both = df[(df.metric == "induction") & (df.layer == 1) & (df["head"] == 0)]["value"].mean()
    assert pooled.loc[("induction", 1, 0), "value"] == pytest.approx(both, abs=1e-5)


@pytest.mark.slow
def test_stored_linreg_icl_vs_gd_has_per_task_rows(tmp_path):
    from experiments.studies.icl_vs_gd import icl_vs_gd_stats

    _, store = _run(tmp_path, """
        name = "lr"
        seeds = [0, 1]
        [[grid]]
        models = ["linreg-lsa-1l"]
        tasks = ["linreg"]
        k = [10]
        analyses = ["icl_vs_gd"]
        [grid.params.icl_vs_gd]
        n_tasks = 64
        order_perms = 3
        """)
    df = store.frame(analysis="icl_vs_gd")
    agg = df[df["prompt"] < 0]
    assert {"err_model", "sens_cos", "order_std_model"} <= set(agg["metric"])
    st = icl_vs_gd_stats(df)
    cmp = st.comparisons.set_index(["condition", "control"])
    assert cmp.loc[("err_model", "err_least_squares"), "n"] == 128  # two seeds x 64 tasks, pooled
    assert ("order_std_model", "order_std_sgd") in cmp.index
    cos = st.estimates.set_index("metric").loc["sens_cos"]
    mean_of_units = agg[agg["metric"] == "sens_cos"]["value"].mean()
    assert cos["value"] == pytest.approx(mean_of_units, abs=1e-5)
    assert cos["ci_low"] <= cos["value"] <= cos["ci_high"]
