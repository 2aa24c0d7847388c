"""ICL vs GD: does in-context learning change the model's behaviour the way gradient descent on the
same demonstrations does? Linear-regression models against GD and baselines; language models
against a fine-tuned copy (distribution metrics, Rec2FTP, SimAOU, order sensitivity)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from experiments.models import zoo
from experiments.studies import icl_vs_gd, linreg_gd
from iclwb_app import icl_gd_view, model_info, prompting, results_view, stats_view, ui

ACC = ["acc_zs", "acc_icl", "acc_gd"]
DIST = ["kl_icl_gd", "kl_gd_icl", "tv_icl_gd", "topk_overlap", "rec2ftp"]
ORDER = ["order_std_icl", "order_std_gd", "order_std_sgd"]
KS = [1, 2, 4, 8, 16, 32]


@st.cache_data(max_entries=32, show_spinner=False)
def cached_linreg(model_name: str, ks: tuple[int, ...], n_tasks: int, seed: int, gd_steps: int):
    model = ui.get_model(model_name)
    comp, order = icl_gd_view.linreg_comparison(model, model_name, list(ks), n_tasks, seed, gd_steps)
    return comp, order, stats_view.linreg_stats(model, model_name, list(ks), n_tasks, seed, gd_steps).comparisons


@st.cache_data(max_entries=128, show_spinner=False)
def cached_lm(model_name: str, task: str, k: int, seed: int, n_prompts: int, epochs: int, lr: float,
              subset: str):
    return icl_gd_view.icl_gd_run(ui.get_model(model_name), model_name, task, k, seed, n_prompts, epochs, lr, subset)


def default_model() -> str:

    for name in ("linreg-lsa-1l", "icl-classify", "induction-2l"):
        if (zoo.checkpoint_path(name) / "card.json").exists():
            return name
    return "induction-2l"


def render_lm(df: pd.DataFrame) -> None:

    s = icl_vs_gd.summarize_lm(df)
    cols = st.columns(3)
    last = s.sort_values("k").iloc[-1]
    for c, m in zip(cols, ACC):
        if m in s.columns:
            c.metric(f"{m} (k={int(last['k'])})", f"{float(last[m]):.4f}")
    a1, a2 = st.columns(2)
    with a1:
        st.plotly_chart(icl_gd_view.metrics_by_k_figure(df, ACC, "Accuracy: zero-shot, ICL, GD", "accuracy"),
                        width="stretch", key="gd_acc")
    with a2:
        st.plotly_chart(icl_gd_view.metrics_by_k_figure(df, DIST, "ICL vs GD output distributions"),
                        width="stretch", key="gd_dist")
    b1, b2 = st.columns(2)
    with b1:
        order_fig = icl_gd_view.order_figure(df) if df["metric"].isin(ORDER).any() else None
        if order_fig is not None:
            st.plotly_chart(order_fig, width="stretch", key="gd_order")
        elif df["metric"].isin(ORDER).any():
            st.info("Order sensitivity needs k >= 2: with one demonstration there is one ordering.")
    with b2:
        if (df["metric"] == "simaou").any():
            st.plotly_chart(icl_vs_gd.fig_simaou(df), width="stretch", key="gd_simaou")
    st.dataframe(s, hide_index=True, width="stretch", key="gd_summary")
    if "prompt" in df.columns and (df["prompt"] >= 0).any():
        render_verdicts(stats_view.lm_gd_stats(df).comparisons)


def render_verdicts(cmp: pd.DataFrame) -> None:
    """Each paired comparison (same prompts or tasks) with its verdict, effect, 95% CI and BH q."""
    st.subheader("Verdicts")
    st.markdown("\n".join(f"- {line}" for line in stats_view.verdict_lines(
        cmp, lambda r: f"k={int(r['k'])}: {r['condition']} vs {r['control']}")) or "No paired comparisons.")
    st.caption("Paired on the same prompts (McNemar for accuracies, permutation otherwise); Benjamini-Hochberg "
               "q over the run; significant: q < 0.05; no effect detected: the interval lies within the MDE.")
    ui.stats_table(stats_view.stats_view(cmp), key="gd_verdicts")


def render_linreg(comp: pd.DataFrame, order: pd.DataFrame | None, verdicts: pd.DataFrame | None = None) -> None:

    last = comp.sort_values("k").iloc[-1]
    c1, c2, c3 = st.columns(3)
    c1.metric(f"preds_diff (k={int(last['k'])})", f"{float(last['preds_diff']):.4f}")
    c2.metric(f"sens_cos (k={int(last['k'])})", f"{float(last['sens_cos']):.4f}")
    c3.metric(f"err_model (k={int(last['k'])})", f"{float(last['err_model']):.4f}")
    a1, a2 = st.columns(2)
    with a1:
        st.plotly_chart(linreg_gd.fig_error_vs_k(comp), width="stretch", key="gd_err")
    with a2:
        st.plotly_chart(linreg_gd.fig_sensitivity(comp), width="stretch", key="gd_sens")
    order_fig = icl_gd_view.order_figure(order) if order is not None and not order.empty else None
    if order_fig is not None:
        st.plotly_chart(order_fig, width="stretch", key="gd_order")
    st.dataframe(comp, hide_index=True, width="stretch", key="gd_table")
    if verdicts is not None:
        render_verdicts(verdicts)


st.title("ICL vs GD")
st.caption("Error and accuracy against k for ICL, gradient descent on the same demonstrations and "
           "the baselines; sensitivity cosines; order sensitivity; output-distribution metrics.")
if not ui.module_available("experiments.studies.icl_vs_gd"):
    st.info("The ICL-vs-GD study (experiments.studies.icl_vs_gd) is not installed in this checkout.")
    st.stop()
GD_ANALYSES = [a for a in (ui.launch_db().distinct("analysis") if ui.launch_db() is not None else [])
               if "gd" in str(a).lower()] or ["icl_vs_gd"]
source, db = ui.source_picker("gd_source", GD_ANALYSES)

if source == "Stored sweep":
    folder = st.session_state.get("results_dir", "")
    st.caption(f"Results folder: {folder}")
    if db is None:
        db = ui.results_db(folder)  # says why the folder cannot be read
        st.stop()
    where = ui.analysis_filter(db, GD_ANALYSES)
    if not db.count(**where) or not {"metric", "value", "k", "model", "task"} <= set(db.columns):
        st.info(f"{folder} holds no ICL-vs-GD results yet; run `iclwb demo` or a sweep with the "
                f"ICL-vs-GD analysis, or use a live run.")
        st.stop()
    if results_view.superseded_note(db):
        st.caption(results_view.superseded_note(db))
    f1, f2 = st.columns(2)
    model_sel = f1.selectbox("Model", [str(m) for m in db.distinct("model", **where)], key="gd_st_model")
    task_sel = f2.selectbox("Task", [str(t) for t in db.distinct("task", **where, model=[model_sel])],
                            key="gd_st_task")
    df = db.frame(**where, model=[model_sel], task=[task_sel])
    metrics = sorted(df["metric"].astype(str).unique())
    default = [m for m in metrics if m in ACC or m.startswith("err_")] or metrics[:3]
    chosen = st.multiselect("Metrics", metrics, default=default, key="gd_st_metrics")
    st.plotly_chart(icl_gd_view.metrics_by_k_figure(df, chosen, f"{model_sel} · {task_sel}"), width="stretch",
                    key="gd_stored_fig")
    if "prompt" in df.columns and (pd.to_numeric(df["prompt"], errors="coerce") >= 0).any():
        render_verdicts(stats_view.lm_gd_stats(df).comparisons)
    else:
        st.info("These rows have no per-prompt values (stored before the statistics layer): no tests; "
                "recompute them with `iclwb sweep run`.")
    st.dataframe(df, hide_index=True, width="stretch", key="gd_stored_table")
    st.stop()

c1, c2 = st.columns([2, 3])
with c1:
    model_name = ui.model_picker("gd_model", default=default_model())
model = ui.load_or_error(model_name)
if model is None:
    st.stop()

if model_info.model_kind(model) == "vector":
    t1, t2, t3, t4 = st.columns(4)
    ks = t1.multiselect("k", KS, default=[1, 2, 4, 8], key="gd_ks")
    n_tasks = int(t2.number_input("Tasks per k", min_value=16, max_value=4096, value=128, key="gd_ntasks"))
    seed = int(t3.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="gd_seed"))
    gd_steps = int(t4.number_input("GD steps", min_value=1, max_value=100, value=1, key="gd_steps"))
    lin_key = (model_name, tuple(sorted(ks)), n_tasks, seed, gd_steps)
    ui.wait_for_run("gd_lin_done", lin_key, True, "Run ICL vs GD", "gd_lin_run",
                    note="Compares the model with GD and the baselines on every k; press Run.")
    try:
        comp, order, verdicts = ui.run_with_eta(lambda: cached_linreg(*lin_key),
                                                "Comparing the model with GD and the baselines…", "linreg_gd",
                                                n_tasks * sum(ks) * gd_steps)
        ui.mark_run("gd_lin_done", lin_key)
    except ui.EXPECTED_ERRORS as err:
        ui.show_error(err, "cannot run the comparison")
        st.stop()
    render_linreg(comp, order, verdicts)
    st.stop()

tasks = prompting.available_tasks(model)
if not tasks:
    st.error("No task fits this model.")
    st.stop()
t1, t2, t3, t4 = st.columns(4)
task = ui.task_picker(t1, prompting.circuit_tasks(model) or tasks, "gd_task", getattr(model, "tokenizer", None) is not None)
if task is None:
    st.stop()
ks = t2.multiselect("k", KS, default=[1, 2, 4], key="gd_ks_lm")
n_prompts = int(t3.number_input("Prompts", min_value=2, max_value=256, value=8, key="gd_n"))
n_seeds = int(t4.number_input("Seeds", min_value=1, max_value=5, value=1, key="gd_seeds_lm"))
g1, g2, g3 = st.columns(3)
subset = g1.selectbox("GD parameters", ["attn_kv", "all", "one_layer_wv"], key="gd_subset")
lr = float(g2.number_input("GD learning rate", min_value=1e-5, max_value=10.0, value=1e-2, format="%.4f",
                           key="gd_lr"))
epochs = int(g3.number_input("GD epochs", min_value=1, max_value=100, value=5, key="gd_epochs"))
run_key = (model_name, task, tuple(ks), n_prompts, n_seeds, subset, lr, epochs)
ui.wait_for_run("gd_done", run_key, True, "Run ICL vs GD", "gd_run",
                note="Fine-tunes a copy of the model on each prompt's demonstrations; press Run.")
if not ks:
    st.error("Pick at least one k.")
    st.stop()
parts = []
jobs = [(k, s) for s in range(n_seeds) for k in sorted(ks)]
bar = st.progress(0.0, text="Fine-tuning…")
try:
    for i, (k, s) in enumerate(jobs):
        def job(k: int = k, s: int = s) -> pd.DataFrame:
            return cached_lm(model_name, task, k, s, n_prompts, epochs, lr, subset)
        parts.append(ui.run_with_eta(job, f"k={k}, seed {s}: ICL and GD (job {i + 1} of {len(jobs)})…",
                                     "icl_vs_gd", n_prompts * epochs * k, done=i / len(jobs),
                                     share=1 / len(jobs), bar=bar))
except ui.EXPECTED_ERRORS as err:
    bar.empty()
    ui.show_error(err, "cannot run the comparison")
    st.stop()
bar.empty()
ui.mark_run("gd_done", run_key)
render_lm(pd.concat(parts, ignore_index=True))
