"""Circuit: the summarize -> merge -> retrieve measurements and the ablations beside their random
controls, from a live run or from a stored sweep."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from experiments.models import zoo
from iclwb_app import (
    attention_view,
    circuit_view,
    model_info,
    prompting,
    results_view,
    stats_view,
    ui,
)


@st.cache_data(max_entries=128, show_spinner=False)
def cached_circuit(model_name: str, task: str, k: int, n_prompts: int, seed: int,
                   window: tuple[float, float]):
    return circuit_view.circuit_run(ui.get_model(model_name), model_name, task, k, n_prompts, seed, window)


def default_model() -> str:

    return "icl-classify" if (zoo.checkpoint_path("icl-classify") / "card.json").exists() else "induction-2l"


def render(table) -> None:
    """The four steps of the circuit from one tidy table (any number of seeds)."""
    n_seeds = table["seed"].nunique() if "seed" in table.columns else 1
    n_prompts = int(table["n_prompts"].max()) if "n_prompts" in table.columns else 0
    st.caption(f"{n_seeds} seed(s) × {n_prompts} prompts, pooled · {results_view.CI_CAPTION}")
    st.subheader("1 · Summarize: centroid-probe accuracy by layer")
    st.plotly_chart(circuit_view.circuit_layer_figure(table, "summarize", title="centroid accuracy at x_q and s_q"),
                    width="stretch", key="circ_summarize")
    st.subheader("2 · Semantics merge: y_i → s_i")
    m1, m2 = st.columns(2)
    with m1:
        st.plotly_chart(circuit_view.circuit_layer_figure(table, "merge", ["n_heads:correct", "n_heads:wrong"],
                                                "heads with A[y_i→s_i] > 5/n"), width="stretch",
                        key="circ_merge_n")
    with m2:
        st.plotly_chart(circuit_view.circuit_layer_figure(table, "merge", ["copy_magnitude:correct", "copy_magnitude:wrong"],
                                                "copy magnitude"), width="stretch", key="circ_merge_mag")
    st.subheader("3 · Retrieve and copy: s_q → y_i per head")
    r1, r2 = st.columns(2)
    for col, metric, title in ((r1, "M", "induction magnitude M"), (r2, "C", "correctness C")):
        with col:
            try:
                matrix = circuit_view.circuit_head_matrix(table, metric, "retrieve")
                st.plotly_chart(attention_view.layer_head_heatmap(matrix, title),
                                width="stretch", key=f"circ_retrieve_{metric}")
            except model_info.AppInputError as err:
                st.info(str(err))
    best = table[(table["step"] == "retrieve") & table["metric"].isin(["best_head_p_target", "best_head_accuracy", "chance"])]
    if not best.empty:
        means = best.groupby("metric")["value"].mean()
        cols = st.columns(len(means))
        for c, (metric, value) in zip(cols, means.items()):
            c.metric(metric, f"{value:.3f}")
    st.subheader("4 · Ablations beside their random controls")
    abl = circuit_view.ablation_table(table)
    if abl.empty:
        st.info("No ablation rows in this table.")
        return
    un = abl[abl["ablation"] == "unablated"]
    if not un.empty:
        st.metric("accuracy, unablated", f"{float(un['acc_mean'].iloc[0]):.4f}")
    st.plotly_chart(circuit_view.ablation_figure(abl), width="stretch", key="circ_ablation")
    st.markdown("\n".join(f"- {line}" for line in stats_view.ablation_verdicts(abl)) or "No paired comparisons.")
    st.caption("Each knockout against its random control on the same prompts (McNemar), Benjamini-Hochberg "
               "q over the run's comparisons; significant: q < 0.05; no effect detected: the interval lies "
               "within the minimum detectable effect (MDE, 80% power); otherwise inconclusive.")
    ui.stats_table(stats_view.stats_view(abl), key="circ_ablation_table")


st.title("Circuit")
st.caption("Summarize → semantics merge → feature retrieval and copy (Cho et al. 2024), and what "
           "breaks when each edge is knocked out, against random knockouts of the same size.")
if not (ui.module_available("circuits.icl_circuit")):
    st.info("The circuit analysis (circuits.icl_circuit) is not installed in this checkout.")
    st.stop()
source, db = ui.source_picker("circ_source", ["circuit"])

if source == "Stored sweep":
    folder = st.session_state.get("results_dir", "")
    st.caption(f"Results folder: {folder} (change it on the Results page or with `iclwb app --results DIR`)")
    if db is None:
        db = ui.results_db(folder)  # says why the folder cannot be read
        st.stop()
    where = ui.analysis_filter(db, ["circuit"])
    if "step" not in db.columns or not db.count(**where):
        st.info(f"{folder} holds no circuit results yet; run `iclwb demo` or a sweep with the "
                f"circuit analysis, or use a live run.")
        st.stop()
    if results_view.superseded_note(db):
        st.caption(results_view.superseded_note(db))
    f1, f2, f3 = st.columns(3)
    model_sel = f1.selectbox("Model", [str(m) for m in db.distinct("model", **where)], key="circ_st_model")
    task_sel = f2.selectbox("Task", [str(t) for t in db.distinct("task", **where, model=[model_sel])],
                            key="circ_st_task")
    k_sel = f3.selectbox("k", db.distinct("k", **where, model=[model_sel], task=[task_sel]), key="circ_st_k")
    rows = ui.guarded(lambda: circuit_view.circuit_rows(db.frame(**where, model=[model_sel], task=[task_sel],
                                                                 k=[k_sel])),
                      "cannot read circuit rows from these results")
    if rows is None or rows.empty:
        st.info(f"{folder} holds no circuit rows for this cell.")
        st.stop()
    render(rows)
    st.stop()

c1, c2 = st.columns([2, 3])
with c1:
    model_name = ui.model_picker("circ_model", default=default_model())
model = ui.load_or_error(model_name)
if model is None:
    st.stop()
if model_info.model_kind(model) == "vector":
    st.info("This model reads real vectors: the circuit needs token prompts with labels.")
    st.stop()
tasks = prompting.circuit_tasks(model)
if not tasks:
    st.error("No task with a label set fits this model; the circuit needs candidate labels.")
    st.stop()
t1, t2, t3, t4 = st.columns(4)
task = ui.task_picker(t1, tasks, "circ_task", getattr(model, "tokenizer", None) is not None)
if task is None:
    st.stop()
k = int(t2.number_input("k", min_value=1, max_value=64, value=4, key="circ_k"))
n_prompts = int(t3.number_input("Prompts per seed", min_value=4, max_value=512, value=32, key="circ_n"))
n_seeds = int(t4.number_input("Seeds", min_value=1, max_value=10, value=3, key="circ_seeds"))
window = st.slider("Ablation window (fraction of layers)", 0.0, 1.0, (0.0, 0.25), step=0.05,
                   key="circ_window")
small = model_info.model_summary(model)["n_layers"] * model_info.model_summary(model)["n_heads"] <= 64
run_key = (model_name, task, k, n_prompts, n_seeds, window)
ui.wait_for_run("circ_done", run_key, not small, "Run the circuit", "circ_run")
parts = []
bar = st.progress(0.0, text="Running the circuit…")
try:
    for i, seed in enumerate(range(n_seeds)):
        def job(seed: int = seed) -> pd.DataFrame:
            return cached_circuit(model_name, task, k, n_prompts, seed, tuple(window))
        parts.append(ui.run_with_eta(job, f"Seed {seed + 1} of {n_seeds}…", "circuit",
                                     n_prompts * model_info.model_summary(model)["n_layers"], done=i / n_seeds,
                                     share=1 / n_seeds, bar=bar))
except ui.EXPECTED_ERRORS as err:
    bar.empty()
    ui.show_error(err, "cannot run the circuit")
    st.stop()
bar.empty()
ui.mark_run("circ_done", run_key)
render(pd.concat(parts, ignore_index=True))
