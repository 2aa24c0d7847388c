"""The pages that serve a results store (Stored sweep, the default when the store holds units of
the page's analysis) show the findings page's numbers; and the figure fixes of the issue."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from iclwb_app import icl_gd_view, stored_view
from tests.app.test_app import app, metric, n_charts, no_exception

FULL = Path(__file__).resolve().parents[2] / "results" / "full"


@pytest.fixture(scope="module")
def full_frame():
    from experiments.runs.store import ResultsStore

    return ResultsStore(FULL, create=False).frame()


@pytest.mark.slow
def test_head_scan_page_defaults_to_the_stored_scan_with_the_findings_numbers(full_frame):
    from experiments.runs import findings

    at = app(FULL).run()
    at.switch_page("views/2_head_scan.py").run()
    no_exception(at)
    assert at.radio(key="scan_source").value == stored_view.STORED  # no live scan started
    at.selectbox(key="scan_st_model").set_value("smollm2-135m").run()
    no_exception(at)
    want = findings.induction_rows(full_frame[full_frame["model"] == "smollm2-135m"])
    lines = next(m.value for m in at.markdown if m.value.startswith("- **induction")).split("\n")
    assert len(lines) == len(want) == 5
    for line, (_, r) in zip(lines, want.iterrows()):
        assert line.startswith(f"- **induction {r['head']}**: {r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
    assert lines[0].startswith("- **induction L18H6**: 0.854")  # as docs/findings.md (the live scan said 0.862)
    assert n_charts(at) >= 7  # one heatmap per stored score


@pytest.mark.slow
def test_vectors_page_defaults_to_the_stored_unit_with_the_findings_numbers(full_frame):
    from experiments.runs import findings

    at = app(FULL).run()
    at.switch_page("views/6_ICL_Vectors.py").run()
    no_exception(at)
    assert at.radio(key="vec_source").value == stored_view.STORED
    at.selectbox(key="vec_st_model").set_value("smollm2-135m").run()
    task = at.selectbox(key="vec_st_task").options[0]
    at.selectbox(key="vec_st_task").set_value(task).run()
    no_exception(at)
    want = findings.vector_rows(full_frame)
    want = want[(want["model"] == "smollm2-135m") & (want["task"] == task)].set_index("method")
    shown = next(d.value for d in at.dataframe if "recovery" in d.value.columns).set_index("method")
    for method in want.index:
        assert metric(at, f"{method}: with vector") == pytest.approx(want.loc[method, "with vector"], abs=5e-4)
        assert shown.loc[method, "q_value"] == pytest.approx(want.loc[method, "q_value"])
        assert shown.loc[method, "verdict"] == want.loc[method, "verdict"]


def test_a_folder_without_units_of_the_page_keeps_the_live_default(tmp_path):
    from tests.app.test_app_logic import make_store  # icl_vs_gd units only

    root = make_store(tmp_path / "store")
    at = app(root).run()
    at.switch_page("views/4_icl_vs_gd.py").run()
    assert at.radio(key="gd_source").value == stored_view.STORED
    at.switch_page("views/2_head_scan.py").run()
    assert at.radio(key="scan_source").value == stored_view.LIVE


def test_kl_gets_its_own_axis_and_order_sensitivity_needs_two_orderings():
    rows = [dict(metric=m, k=k, value=v, prompt=p) for k in (1, 2) for p in range(4)
            for m, v in (("kl_icl_gd", 3.0 + p), ("topk_overlap", 0.5), ("order_std_icl", 0.1 * p))]
    df = pd.DataFrame(rows)
    fig = icl_gd_view.metrics_by_k_figure(df, ["kl_icl_gd", "topk_overlap"], "t")
    axes = {t.name: t.yaxis for t in fig.data}
    assert axes == {"kl_icl_gd": "y2", "topk_overlap": "y"} and fig.layout.yaxis2.title.text == "KL (nats)"
    assert {t.yaxis for t in icl_gd_view.metrics_by_k_figure(df, ["topk_overlap"], "t").data} == {"y"}
    kept, dropped = icl_gd_view.order_rows(df)
    assert set(kept["k"]) == {2} and dropped == [1] and set(kept["metric"]) == {"order_std_icl"}
    order = icl_gd_view.order_figure(df)
    assert [list(t.x) for t in order.data] == [["2"]]
    assert icl_gd_view.order_figure(df[df["k"] == 1]) is None
    # one stored spread per method and k (linear regression): no whisker over a bar of one value
    lin = pd.DataFrame({"method": ["gd1", "sgd", "gd1", "sgd"], "k": [2, 2, 4, 4], "order_std": [0.0, 0.09, 0.0, 0.3]})
    for t in icl_gd_view.order_figure(lin).data:
        assert list(t.error_y.array) == [0, 0] and list(t.error_y.arrayminus) == [0, 0]


def test_aie_heatmap_has_layer_0_on_top_like_every_heatmap():
    from experiments.studies import vectors_figures as vf
    from iclwb_app.attention_view import layer_head_heatmap

    aie = pd.DataFrame([dict(layer=l, head=h, aie=0.1 * l + h) for l in range(3) for h in range(2)])
    assert vf.aie_figure(aie).layout.yaxis.autorange == "reversed"
    import numpy as np

    assert layer_head_heatmap(np.zeros((3, 2)), "x").layout.yaxis.autorange == "reversed"


def test_stored_dynamics_unit_reads_back_as_the_dynamics_table():
    rows = pd.DataFrame({"analysis": "dynamics", "model": "induction-2l", "k": 0, "seed": 0, "unit_key": "u",
                         "metric": ["induction", "accuracy"], "value": [0.5, 0.8], "step": ["10", "20"],
                         "layer": [1.0, float("nan")], "head": [0.0, float("nan")], "position": [float("nan")] * 2,
                         "shots": [-1.0, 2.0]})
    df = stored_view.dynamics_frame(rows)
    assert df["step"].tolist() == [10, 20] and df["k"].tolist() == [-1, 2]
    assert df["layer"].tolist() == [1, -1] and "unit_key" not in df.columns and "ci_low" in df.columns


def test_stored_scan_heatmap_shows_each_top_head_as_the_findings_page_does(full_frame):
    """A head with per-prompt induction rows (the findings page's top 5) shows their mean in the
    heatmap too (L18H6 0.854, not the scan's own aggregate 0.862); every other head keeps its
    aggregate row, and every score keeps one value per head."""
    from experiments.runs import findings

    rows = full_frame[(full_frame["analysis"] == "head_scan") & (full_frame["model"] == "smollm2-135m")]
    frame = stored_view.scan_frame(rows)
    ind = frame[frame["score"] == "induction"].set_index(["layer", "head"])["value"]
    assert len(ind) == 30 * 9 and not ind.index.has_duplicates
    for r in findings.induction_rows(rows).to_dict("records"):
        layer, head = (int(x) for x in r["head"][1:].split("H"))
        assert ind.loc[(layer, head)] == pytest.approx(r["value"], abs=1e-9)
    agg = rows[(rows["metric"] == "induction") & (rows["prompt"] < 0)].set_index(["layer", "head"])["value"]
    others = [i for i in agg.index if (int(i[0]), int(i[1])) not in
              {tuple(int(x) for x in h[1:].split("H")) for h in findings.induction_rows(rows)["head"]}]
    assert all(ind.loc[(int(a), int(b))] == agg.loc[(a, b)] for a, b in others[:50])
    assert ind.loc[(18, 6)] == pytest.approx(0.854, abs=1e-3) and agg.loc[(18.0, 6.0)] == pytest.approx(0.862, abs=1e-3)
