"""The Streamlit app, headless (streamlit.testing AppTest): every page runs, shows its figures and
tables, shows the library's numbers for the same inputs, and turns bad input into st.error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from iclwb_app import prompting, results_view, ui
from tests.app.test_app_logic import make_store

MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
TIMEOUT = 180


def app(results: Path | str = "") -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT)
    at.session_state["results_dir"] = str(results)
    return at


def n_charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metric(at: AppTest, label: str) -> float:
    return float(next(m for m in at.metric if m.label == label).value)


@pytest.fixture(scope="module")
def induction():
    from experiments.models.loading import load_model

    return load_model("induction-2l")


def library_label_mass(model, task: str, k: int, seed: int, layer: int, head: int) -> float:
    """Attention from the read-out to the label tokens, straight from probes/ and experiments.tasks."""
    from experiments.tasks import task_batch
    from probes.heads import attention_patterns

    batch = task_batch(task, k, 1, seed)
    pat = attention_patterns(model, batch.tokens)  # [L, B, H, q, k]
    return float(pat[layer, 0, head, int(batch.readout[0]), batch.label[0]].sum())


@pytest.mark.slow
def test_explorer_shows_library_numbers_and_head_buttons(induction):
    at = app().run()
    no_exception(at)
    assert n_charts(at) == 3  # head grid, attention pattern, read-out bars
    assert at.selectbox(key="explorer_model_select").value == "induction-2l"
    task, k = at.selectbox(key="ex_task").value, int(at.number_input(key="ex_k").value)
    assert task == "induction"
    assert metric(at, "read-out → labels") == pytest.approx(
        library_label_mass(induction, task, k, 0, 0, 0), abs=1e-4)
    at.button(key="ex_btn_1_2").click().run()
    no_exception(at)
    assert (at.session_state["ex_layer"], at.session_state["ex_head"]) == (1, 2)
    assert at.subheader[-1].value == "Head L1H2"
    assert metric(at, "read-out → labels") == pytest.approx(
        library_label_mass(induction, task, k, 0, 1, 2), abs=1e-4)
    # a new seed gives a new prompt, and the numbers follow the library
    at.number_input(key="ex_seed").set_value(5).run()
    no_exception(at)
    assert metric(at, "read-out → labels") == pytest.approx(
        library_label_mass(induction, task, k, 5, 1, 2), abs=1e-4)


@pytest.mark.slow
def test_explorer_bad_input_shows_errors_not_tracebacks():
    at = app().run()
    from experiments.models.loading import load_model

    task = at.selectbox(key="ex_task").value
    k_max = prompting.max_k(load_model("induction-2l"), task)
    assert at.number_input(key="ex_k").max == k_max  # 1 + k copies of a 20-token segment: no k > 2 fits n_ctx 64
    with pytest.raises(ValueError, match="context"):
        prompting.task_prompt(load_model("induction-2l"), task, k_max + 1)
    at.radio(key="ex_source").set_value("Typed prompt").run()
    at.text_area(key="ex_text").input("3 17 42 | 8 21 5 | 3 17").run()
    no_exception(at)
    assert not at.error and n_charts(at) == 3
    at.text_area(key="ex_text").input("3 17 banana").run()
    no_exception(at)
    assert any("not a token id" in e.value for e in at.error)
    at.text_area(key="ex_text").input(" ".join(["7"] * 80)).run()
    assert any("n_ctx" in e.value for e in at.error)
    at.selectbox(key="explorer_model_select").set_value(al_other()).run()
    at.text_input(key="explorer_model_other").input("no-such-model").run()
    no_exception(at)
    assert any("unknown model 'no-such-model'" in e.value for e in at.error)


def al_other() -> str:
    return ui.OTHER


@pytest.mark.slow
def test_head_scan_page_numbers_and_click_through(induction):
    from experiments.studies.scan import head_scan

    at = app().run()
    at.switch_page("views/2_head_scan.py").run()
    no_exception(at)
    scan = head_scan(induction, seed=0)
    assert n_charts(at) == len(scan)
    # the verdicts: the induction heads of induction-2l pass their test against the no-repeat null
    verdicts = at.dataframe[0].value
    top_ind = verdicts[verdicts["metric"] == "induction"].iloc[0]
    assert top_ind["layer"] == 1 and top_ind["verdict"] == "significant" and top_ind["ci_low"] < top_ind["value"]
    assert any("induction L1H" in m.value and "significant" in m.value for m in at.markdown)
    table = at.dataframe[1].value
    score = at.selectbox(key="scan_sort").value
    best = scan[score].scores.max().item()
    assert table[score].iloc[0] == pytest.approx(best, abs=1e-6)
    l, h, _ = scan[score].top(1)[0]
    assert table["head_id"].iloc[0] == f"L{l}H{h}"
    # sort by another score: the table follows
    other = [s for s in scan if s != score][0]
    at.selectbox(key="scan_sort").set_value(other).run()
    assert at.dataframe[1].value[other].iloc[0] == pytest.approx(scan[other].scores.max().item(), abs=1e-6)
    # click through to the explorer on a chosen head
    at.selectbox(key="scan_open_head").set_value("L1H1").run()
    at.button(key="scan_open").click().run()
    no_exception(at)
    assert at.title[0].value.endswith("Attention explorer")
    assert (at.session_state["ex_layer"], at.session_state["ex_head"]) == (1, 1)
    assert at.subheader[-1].value == "Head L1H1"


def test_results_page_filters_plots_and_downloads(tmp_path):
    root = make_store(tmp_path / "store")
    at = app(root).run()
    at.switch_page("views/5_results.py").run()
    no_exception(at)
    # the CI table beside the figure, then the rows
    assert n_charts(at) == 1 and len(at.dataframe) == 2
    assert len(at.dataframe[1].value) == len(results_view.load_results(root))
    at.multiselect(key="res_filter_model").set_value(["induction-2l"]).run()
    at.multiselect(key="res_filter_k").set_value([2]).run()
    at.selectbox(key="res_metric").set_value("accuracy").run()
    no_exception(at)
    ci = at.dataframe[0].value  # two seeds (0.2, 0.21): n = 2, bootstrap interval [0.2, 0.21]
    assert list(ci.columns) == ["model", "k", "n", "value", "ci_low", "ci_high"] and len(ci) == 1
    assert (ci["n"].iloc[0], ci["value"].iloc[0]) == (2, pytest.approx(0.205))
    assert (ci["ci_low"].iloc[0], ci["ci_high"].iloc[0]) == pytest.approx((0.2, 0.21))
    shown = at.dataframe[1].value
    assert set(shown["model"]) == {"induction-2l"} and set(shown["k"]) == {2}
    acc = shown[shown["metric"] == "accuracy"]["value"]
    assert sorted(acc) == pytest.approx([0.2, 0.21])
    assert at.get("download_button")


def test_results_page_empty_folder_is_a_message(tmp_path):
    at = app(tmp_path).run()
    at.switch_page("views/5_results.py").run()
    no_exception(at)
    assert any("no Parquet result files" in e.value for e in at.error)
    at.text_input(key="res_folder").input(str(tmp_path / "nope")).run()
    assert any("does not exist" in e.value for e in at.error)


def chart(at: AppTest, i: int):
    """The i-th plotly figure the page shows, decoded (plotly writes arrays base64-typed)."""
    import base64
    import json

    import plotly.graph_objects as go

    def decode(obj):
        if isinstance(obj, dict) and set(obj) >= {"dtype", "bdata"}:
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            return arr.reshape(obj["shape"]) if "shape" in obj else arr
        if isinstance(obj, dict):
            return {k: decode(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [decode(v) for v in obj]
        return obj

    return go.Figure(decode(json.loads(at.get("plotly_chart")[i].proto.spec)))


@pytest.mark.slow
def test_circuit_page_live_run_and_stored_sweep(induction, tmp_path):
    from circuits.icl_circuit import run_circuit
    from experiments.runs.config import Unit
    from experiments.runs.store import ResultsStore
    from probes.readout import model_accuracy

    at = app(tmp_path / "store").run()
    at.switch_page("views/3_circuit.py").run()
    at.selectbox(key="circ_model_select").set_value("induction-2l").run()
    at.selectbox(key="circ_task").set_value("kv-recall").run()
    at.number_input(key="circ_n").set_value(16).run()
    at.number_input(key="circ_seeds").set_value(2).run()
    no_exception(at)
    assert n_charts(at) == 6  # summarize, merge x2, retrieve M and C, ablations
    k = int(at.number_input(key="circ_k").value)
    accs = [model_accuracy(induction, prompting.task_batch(induction, "kv-recall", k, 16, s)) for s in (0, 1)]
    assert metric(at, "accuracy, unablated") == pytest.approx(np.mean(accs), abs=1e-4)
    abl = at.dataframe[0].value
    # two seeds of 16 prompts pool into one sample of 32, with intervals and verdicts
    assert {"xi_to_si", "yi_to_sq", "zero_shot"} <= set(abl["ablation"]) and (abl["n"] == 32).all()
    assert (abl["ci_low"] <= abl["acc_mean"]).all() and abl["verdict"].notna().any()
    bars = chart(at, 5).data
    assert [t.name for t in bars[:2]] == ["knockout", "random control"]

    # the same table stored by a sweep renders the same way
    table = run_circuit(induction, prompting.task_batch(induction, "kv-recall", 3, 8, 0), seed=0)
    table["model"], table["task"] = "induction-2l", "kv-recall"
    ResultsStore(tmp_path / "store").write_unit(
        Unit(model="induction-2l", task="kv-recall", k=3, seed=0, analysis="circuit"),
        table.drop(columns=["model", "task", "k", "seed"]), provenance={})
    at.radio(key="circ_source").set_value("Stored sweep").run()
    no_exception(at)
    assert n_charts(at) == 6
    unablated = table[table["metric"] == "acc:unablated"]["value"].iloc[0]
    assert metric(at, "accuracy, unablated") == pytest.approx(unablated, abs=1e-4)


@pytest.mark.slow
def test_icl_vs_gd_page_language_model_run(induction):
    from probes.readout import model_accuracy

    at = app().run()
    at.switch_page("views/4_icl_vs_gd.py").run()
    at.selectbox(key="gd_model_select").set_value("induction-2l").run()
    at.selectbox(key="gd_task").set_value("kv-recall").run()
    at.multiselect(key="gd_ks_lm").set_value([1, 2]).run()
    at.number_input(key="gd_n").set_value(4).run()
    at.number_input(key="gd_epochs").set_value(2).run()
    no_exception(at)
    assert n_charts(at) == 0 and at.button(key="gd_run")  # expensive: waits for Run
    at.button(key="gd_run").click().run()
    no_exception(at)
    assert n_charts(at) == 4  # accuracy, distributions, order sensitivity, SimAOU
    acc = model_accuracy(induction, prompting.task_batch(induction, "kv-recall", 2, 4, 0))
    assert metric(at, "acc_icl (k=2)") == pytest.approx(acc, abs=1e-4)
    names = [t.name for t in chart(at, 0).data]
    assert names == ["acc_zs", "acc_icl", "acc_gd"]


def test_icl_vs_gd_page_stored_sweep(tmp_path):
    root = make_store(tmp_path / "store")
    at = app(root).run()
    at.switch_page("views/4_icl_vs_gd.py").run()
    at.radio(key="gd_source").set_value("Stored sweep").run()
    at.selectbox(key="gd_st_model").set_value("induction-2l").run()
    at.multiselect(key="gd_st_metrics").set_value(["accuracy"]).run()
    no_exception(at)
    trace = chart(at, 0).data[0]
    assert list(trace.x) == [1, 2, 4]
    assert list(trace.y) == pytest.approx([0.1 * k + 0.005 for k in (1, 2, 4)])


def test_circuit_page_stored_sweep_shows_the_current_run_of_each_cell(tmp_path):
    """A store with a 128-prompt run and a later 32-prompt pilot of one circuit cell, plus a
    training-dynamics unit (whose `step` column once leaked into the pickers as model
    induction-2l, k 0): the page shows the 128-prompt run, says the pilot was left out, and offers
    only the circuit's model."""
    import pandas as pd

    from experiments.runs.config import Unit
    from tests.helpers import store_with_superseded

    store, _, _ = store_with_superseded(tmp_path / "store")
    store.write_unit(Unit("induction-2l", "", 0, 0, "dynamics"),
                     pd.DataFrame({"metric": ["induction"], "value": [0.5], "step": [10], "layer": [1], "head": [0]}),
                     {"computed_at": "2026-01-01"})
    at = app(store.root).run()
    at.switch_page("views/3_circuit.py").run()
    at.radio(key="circ_source").set_value("Stored sweep").run()
    no_exception(at)
    assert at.selectbox(key="circ_st_model").options == ["m"]
    assert at.selectbox(key="circ_st_k").options == ["4"]
    captions = " ".join(c.value for c in at.caption)
    assert "1 seed(s) × 128 prompts" in captions and "1 superseded run of the same cells left out" in captions
    assert metric(at, "accuracy, unablated") == pytest.approx(0.75)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_circuit_page_stored_sweep_on_the_shipped_store(model):
    """results/full holds two runs of every circuit cell: the page used to end in "several rows
    per ['seed', 'prompt']"; now it shows each cell's 128-prompt current run."""
    full = Path(__file__).resolve().parents[2] / "results" / "full"
    at = app(full).run()
    at.switch_page("views/3_circuit.py").run()
    at.radio(key="circ_source").set_value("Stored sweep").run()
    at.selectbox(key="circ_st_model").set_value(model).run()
    for task in at.selectbox(key="circ_st_task").options:
        at.selectbox(key="circ_st_task").set_value(task).run()
        no_exception(at)
        abl = at.dataframe[0].value
        assert (abl["n"] == 128).all(), (model, task)
